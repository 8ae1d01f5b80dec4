"""Shared fixtures: real PostgreSQL servers and an isolated database per test.

Servers: the embedded server (started once per session in a fresh temporary
``CROSSFID_HOME``), and also the server named by ``CROSSFID_TEST_DATABASE_URL``
when that is set (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``). Every
database fixture is parametrised over the available servers, so each such test
runs once per server. Each test gets its own freshly created database, dropped
afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from crossfid.db import migrate
from crossfid.db.embedded import ensure_server, stop_server
from crossfid.db.engine import make_engine

EXTERNAL_URL = os.environ.get("CROSSFID_TEST_DATABASE_URL", "").strip()
SERVERS = ["embedded", *(["external"] if EXTERNAL_URL else [])]

#: environment variables that would leak the developer's own configuration into tests
_ISOLATED_ENV = (
    "CROSSFID_DATABASE_URL",
    "CROSSFID_HOME",
    "CROSSFID_DASK_SCHEDULER",
    "MP_API_KEY",
    "CROSSFID_DEBUG",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "crossfid-home-unused"))


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """CROSSFID_HOME of the session's embedded server (started here, stopped at the end)."""
    home = tmp_path_factory.mktemp("home")
    ensure_server(home)
    yield home
    stop_server(home)


@pytest.fixture(scope="session", params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    """libpq URL of a maintenance database on one of the test servers."""
    if request.param == "embedded":
        home = request.getfixturevalue("embedded_home")
        return ensure_server(home).libpq_url("postgres")
    return EXTERNAL_URL


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """libpq URL of a new, empty database, dropped after the test."""
    name = f"crossfid_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_engine(database_url: str) -> Iterator[Engine]:
    """Engine on a new database without any schema."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:
    """Engine on a new database migrated to head."""
    migrate.upgrade(empty_engine)
    return empty_engine


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory):
    """A small demo corpus with high flaw rates (CHGNet relaxations; generated once per session)."""
    from crossfid.demo.generator import DemoSettings, FlawRates, generate_demo_corpus

    settings = DemoSettings(
        max_steps=10,
        static_rate=0.5,
        flaws=FlawRates(
            final_energy_mismatch=0.5, high_energy=0.5, scf_unconverged=0.15, missing_forces=0.15, near_duplicate=0.2
        ),
    )
    path = tmp_path_factory.mktemp("demo-corpus") / "corpus.jsonl.gz"
    return generate_demo_corpus(path, n_materials=5, seed=11, settings=settings)


@pytest.fixture
def demo_engine(engine, demo_corpus):
    """A migrated database holding the small demo corpus."""
    from crossfid.ingest.demo import read_demo_corpus
    from crossfid.ingest.loader import ingest

    summary = ingest(engine, "demo", "demo", read_demo_corpus(demo_corpus.path))
    assert summary.quarantined == 0
    return engine


@pytest.fixture(scope="session")
def r2scan_corpus(tmp_path_factory: pytest.TempPathFactory):
    """A small flawless r2SCAN-only demo corpus (10 materials, short relaxations), generated once per session."""
    from crossfid.demo.generator import DemoSettings, FlawRates, generate_demo_corpus

    settings = DemoSettings(
        max_steps=4,
        elemental_phases=False,
        labeller="chgnet",
        static_rate=0.0,
        single_fidelity_fraction=0.0,
        flaws=FlawRates(
            final_energy_mismatch=0.0, high_energy=0.0, scf_unconverged=0.0, missing_forces=0.0, near_duplicate=0.0
        ),
    )
    path = tmp_path_factory.mktemp("r2scan-corpus") / "corpus.jsonl.gz"
    return generate_demo_corpus(path, n_materials=10, seed=3, fidelities=("r2SCAN",), settings=settings)


@pytest.fixture(scope="session")
def dask_client():
    """A real Dask LocalCluster with one worker process, shared by the session."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def invoke(database_url, monkeypatch):
    """``invoke("ingest", "vasp", DIR)``: the ``crossfid`` command line in-process, on this test's database."""
    from typer.testing import CliRunner

    from crossfid.cli import app

    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args))

    return run
