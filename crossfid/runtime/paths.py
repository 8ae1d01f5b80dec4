"""The data-directory layout under ``$CROSSFID_HOME`` (one place names every folder crossfid writes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crossfid.config import Settings


@dataclass(frozen=True)
class DataDirs:
    """Folders under :attr:`home`; nothing is created until a caller writes there."""

    home: Path

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> DataDirs:
        """The layout of ``settings.home`` (default: read from the environment now)."""
        return cls((settings or Settings.from_env()).home)

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.home / "pgdata"

    @property
    def pgserver_lock(self) -> Path:
        """File locked while the embedded server starts or stops."""
        return self.home / "pgserver.lock"

    @property
    def reader_passfile(self) -> Path:
        """libpq password file of the read-only role ``crossfid sql`` logs in as (mode 0600)."""
        return self.home / "reader.pgpass"

    @property
    def runs(self) -> Path:
        """Training-run checkpoints and weights, one folder per run."""
        return self.home / "runs"

    @property
    def graph_cache(self) -> Path:
        """Cached CHGNet crystal graphs."""
        return self.home / "cache" / "graphs"

    @property
    def figures(self) -> Path:
        """Figures of cross-fidelity analyses."""
        return self.home / "figures"

    @property
    def demo(self) -> Path:
        """Generated demo corpora."""
        return self.home / "demo"
