"""Settings read from the environment.

| variable                  | meaning                                                    |
|---------------------------|------------------------------------------------------------|
| ``CROSSFID_DATABASE_URL`` | any PostgreSQL URL; unset means the embedded server        |
| ``CROSSFID_HOME``         | data directory (layout: :class:`crossfid.runtime.paths.DataDirs`) |
| ``CROSSFID_DASK_SCHEDULER`` | address of a running Dask scheduler (``tcp://host:8786``) |
| ``MP_API_KEY``            | Materials Project API key; never logged, printed or stored |
| ``CROSSFID_MAX_JSON_DEPTH`` | JSON nesting limit of ingested records (default 64)      |
| ``CROSSFID_MAX_RECORD_BYTES`` | size limit of one ingested record (default 256MiB)     |
| ``CROSSFID_MAX_DECOMPRESSED_BYTES`` | cap on what a compressed input expands to (default 8GiB) |

The three ingestion limits are read by :class:`crossfid.ingest.sourceio.Limits`
(docs/ingestion.md, "Limits").

Settings are read when asked for (``Settings.from_env()``), not at import time,
so a test or a long-lived process can change the environment between calls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from crossfid.errors import StateError


class Secret:
    """A string that never shows itself in ``str``, ``repr`` or f-strings.

    Call :meth:`reveal` at the single place the value is really needed (the HTTP
    client), so that logging a settings object cannot leak the key.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # pickling would carry the key to Dask workers or files
        raise TypeError("a Secret cannot be pickled; read it from the environment where needed")


def default_home() -> Path:
    """Default data directory: the user's data dir (``~/.local/share/crossfid`` on Linux)."""
    return Path(platformdirs.user_data_dir("crossfid", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Process settings; build with :meth:`from_env`."""

    home: Path
    database_url: str | None = None
    dask_scheduler: str | None = None
    mp_api_key: Secret | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = env.get("CROSSFID_HOME") or ""
        key = env.get("MP_API_KEY") or ""
        return cls(
            home=Path(home).expanduser().resolve() if home else default_home(),
            database_url=(env.get("CROSSFID_DATABASE_URL") or "").strip() or None,
            dask_scheduler=(env.get("CROSSFID_DASK_SCHEDULER") or "").strip() or None,
            mp_api_key=Secret(key.strip()) if key.strip() else None,
        )

    @property
    def embedded(self) -> bool:
        """True when crossfid runs its own PostgreSQL server in :attr:`home`."""
        return self.database_url is None

    def require_mp_api_key(self) -> Secret:
        """The Materials Project API key, or a clear error saying how to set it."""
        if not self.mp_api_key:
            raise StateError(
                "MP_API_KEY is not set: export your Materials Project API key "
                "(https://next-gen.materialsproject.org/api) as MP_API_KEY"
            )
        return self.mp_api_key
