"""The runtime package: Dask clients with one meaning of ``--workers``, the data-directory layout, the database."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from dask.distributed import LocalCluster
from sqlalchemy import inspect

from crossfid.config import Settings
from crossfid.db.embedded import running_server
from crossfid.db.migrate import current_revision, head_revision
from crossfid.errors import InputError
from crossfid.runtime import database
from crossfid.runtime.dask import dask_client, default_workers
from crossfid.runtime.paths import DataDirs
from crossfid.runtime.signals import stop_on_signals


def test_workers_zero_runs_in_this_process():
    with dask_client(0) as client:
        assert client.submit(os.getpid).result() == os.getpid()
        assert len(client.scheduler_info()["workers"]) == 1
        cluster = client.cluster
    assert client.status == "closed" and cluster.status.name == "closed"


def test_workers_n_starts_n_single_threaded_processes():
    with dask_client(1) as client:
        assert client.submit(os.getpid).result() != os.getpid()
        workers = client.scheduler_info()["workers"].values()
        assert [w["nthreads"] for w in workers] == [1]
        cluster = client.cluster
    assert client.status == "closed" and cluster.status.name == "closed"


def test_default_workers_and_negative_workers():
    assert default_workers() == min(2, os.cpu_count() or 1)
    with pytest.raises(InputError, match="--workers"), dask_client(-1):
        pass
    assert issubclass(InputError, ValueError)


@pytest.fixture(scope="module")
def running_cluster():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster


def test_scheduler_address_wins_over_workers(running_cluster):
    with dask_client(5, scheduler=running_cluster.scheduler_address) as client:
        assert client.scheduler.address == running_cluster.scheduler_address
        assert client.submit(sum, [1, 2]).result() == 3
    assert client.status == "closed"
    assert running_cluster.status.name == "running"  # not ours to close


def test_scheduler_from_the_environment(running_cluster, monkeypatch):
    monkeypatch.setenv("CROSSFID_DASK_SCHEDULER", running_cluster.scheduler_address)
    with dask_client(0) as client:
        assert client.scheduler.address == running_cluster.scheduler_address
    assert running_cluster.status.name == "running"


def test_data_dirs_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    dirs = DataDirs.from_settings()
    home = (tmp_path / "home").resolve()
    assert dirs.home == home
    assert dirs.pgdata == home / "pgdata"
    assert dirs.pgserver_lock == home / "pgserver.lock"
    assert dirs.runs == home / "runs"
    assert dirs.graph_cache == home / "cache" / "graphs"
    assert dirs.figures == home / "figures"
    assert dirs.demo == home / "demo"
    assert DataDirs.from_settings(Settings(home=Path("/data/x"))).graph_cache == Path("/data/x/cache/graphs")
    assert not home.exists()  # naming a folder creates nothing


def test_engine_migrates_a_fresh_database(database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    assert not database.target().embedded
    raw = database.engine(migrate=False)
    try:
        assert current_revision(raw) is None and not inspect(raw).get_table_names()
    finally:
        raw.dispose()
    migrated = database.engine()
    try:
        assert current_revision(migrated) == head_revision()
        assert "frames" in inspect(migrated).get_table_names()
    finally:
        migrated.dispose()


def test_target_is_the_embedded_server_without_a_url(embedded_home, monkeypatch):
    monkeypatch.setenv("CROSSFID_HOME", str(embedded_home))
    target = database.target()
    assert target.embedded
    assert target.url.query["host"] == str(running_server(embedded_home).socket_dir)
    assert target.url.get_backend_name() == "postgresql" and target.url.database == "crossfid"


def test_stop_on_signals_sets_the_event_and_restores():
    import signal

    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    restore = stop_on_signals(stop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before
