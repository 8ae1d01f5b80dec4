"""The embedded server: starts from nothing, is reused, survives concurrent starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossfid.db.embedded import running_server, stop_server
from crossfid.db.migrate import head_revision
from crossfid.runtime.paths import DataDirs


def crossfid(home: Path, *args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFID_") and k != "MP_API_KEY"}
    env["CROSSFID_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "crossfid.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    return stdout


def postmaster_pid(home: Path) -> int:
    return int((DataDirs(home).pgdata / "postmaster.pid").read_text().splitlines()[0])


@pytest.fixture
def fresh_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fresh")
    yield home
    stop_server(home)


def test_starts_from_nothing_then_is_reused_by_another_process(fresh_home):
    assert running_server(fresh_home) is None
    assert f"migrated empty → {head_revision()}" in finish(crossfid(fresh_home, "db", "init"))
    first = postmaster_pid(fresh_home)
    assert running_server(fresh_home).pid == first  # it outlives the process that started it

    assert f"revision {head_revision()} (head)" in finish(crossfid(fresh_home, "db", "status"))
    assert postmaster_pid(fresh_home) == first  # reused, not restarted

    assert "stopped" in finish(crossfid(fresh_home, "db", "stop"))
    assert running_server(fresh_home) is None
    assert "(head)" in finish(crossfid(fresh_home, "db", "status"))  # restarts with its data
    assert postmaster_pid(fresh_home) != first


def test_two_processes_starting_at_once(fresh_home):
    processes = [crossfid(fresh_home, "db", "init") for _ in range(3)]
    outputs = [finish(p) for p in processes]
    assert sum(f"migrated empty → {head_revision()}" in out for out in outputs) >= 1
    server = running_server(fresh_home)
    assert server is not None and server.pid == postmaster_pid(fresh_home)
    assert "(head)" in finish(crossfid(fresh_home, "db", "status"))
