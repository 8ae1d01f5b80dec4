"""Public VASP directories (chgnet's and emmet's test runs, in ../shared/data/real) through ``crossfid ingest vasp``."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from crossfid.cli import app

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"

pytestmark = pytest.mark.skipif(
    not (REAL / "vasp_dirs").is_dir(), reason=f"the public records folder {REAL} is absent (a fresh clone has none)"
)


def test_every_self_consistent_frame_of_the_real_vasp_runs_is_stored(database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["ingest", "vasp", str(REAL / "vasp_dirs")])
    assert result.exit_code == 3, result.output  # some directories are refused, with their reasons
    with psycopg.connect(database_url) as conn:
        tasks, frames = conn.execute("SELECT count(*), (SELECT count(*) FROM frames) FROM tasks").fetchone()
        reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM quarantine"))
        strongest = conn.execute("SELECT max(max_force) FROM frames").fetchone()[0]
    assert (tasks, frames) == (5, 58)
    assert [r.split(":")[0] for r in reasons] == [
        "functional 'LDA' is not a supported fidelity",
        "functional 'revPBE+PADE' is not a supported fidelity",
        "non-self-consistent run (ICHARG = 11)",
    ]
    assert strongest > 1e4  # a badly started relaxation's first step is real output, stored as it is
