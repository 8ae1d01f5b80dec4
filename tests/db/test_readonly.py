"""Least privilege on every read path: ``crossfid sql``, the crossfid_reader role and granted readers.

Every attack is tried on each test server (the embedded one, and the one named by
``CROSSFID_TEST_DATABASE_URL``, where the test connection is a superuser: exactly
the setting in which a READ ONLY transaction alone does not stop host access).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from crossfid.cli import app
from crossfid.db.readonly import READER_ROLE, ReaderUnavailable, grant_reader, run_read_only, timeout_ms

#: (name, statement) pairs that must all be refused; {marker} is a path that must never be written
ATTACKS = [
    ("copy-to-program", "COPY (SELECT 1) TO PROGRAM 'touch {marker}'"),
    ("copy-to-file", "COPY (SELECT 1) TO '{marker}'"),
    ("copy-from-file", "COPY fidelities FROM '/etc/hostname'"),
    ("read-file", "SELECT pg_read_file('/etc/hostname')"),
    ("read-binary-file", "SELECT pg_read_binary_file('/etc/hostname')"),
    ("list-dir", "SELECT pg_ls_dir('.')"),
    ("terminate-backend", "SELECT pg_terminate_backend({victim})"),
    ("cancel-backend", "SELECT pg_cancel_backend({victim})"),
    ("reload-conf", "SELECT pg_reload_conf()"),
    ("lock-table", "LOCK TABLE frames IN ACCESS EXCLUSIVE MODE"),
    ("reindex", "REINDEX TABLE frames"),
    ("authid", "SELECT rolname, rolpassword FROM pg_authid"),
    ("lo-from-bytea", "SELECT lo_from_bytea(0, '\\x00'::bytea)"),
    ("lo-create", "SELECT lo_create(0)"),
    ("lo-import", "SELECT lo_import('/etc/hostname')"),
    ("temp-table", "CREATE TEMP TABLE sneaky AS SELECT 1 AS i"),
    ("set-config-role", "SELECT set_config('role', 'postgres', true), pg_read_file('/etc/hostname')"),
    ("set-config-session", "SELECT set_config('session_authorization', 'postgres', true), pg_ls_dir('.')"),
    ("do-set-role", "DO $$ BEGIN SET ROLE postgres; PERFORM pg_reload_conf(); END $$"),
    ("insert", "INSERT INTO sources (name, kind) VALUES ('x', 'y')"),
    ("alter-system", "ALTER SYSTEM SET work_mem = '1TB'"),
    ("create-extension", "CREATE EXTENSION IF NOT EXISTS dblink"),
]


@pytest.fixture
def cli(database_url, monkeypatch, tmp_path):
    """``crossfid`` on the test database after ``crossfid db init``."""
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    invoke("db", "init")
    return invoke


@pytest.fixture
def victim(database_url):
    """An application connection whose backend the attacks try to kill; it must survive."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn, conn.info.backend_pid


def _statement(template: str, marker: Path, pid: int) -> str:
    return template.format(marker=marker, victim=pid)


@pytest.mark.parametrize(("name", "template"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_crossfid_sql_refuses(cli, victim, tmp_path, name, template):
    conn, pid = victim
    marker = tmp_path / f"{name}.out"
    result = cli("sql", _statement(template, marker, pid), ok=False)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, psycopg.Error | RuntimeError), result.exception
    assert not marker.exists()
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the victim backend lives


def test_crossfid_sql_runs_as_the_unprivileged_reader(cli, database_url):
    result = cli("sql", "SELECT current_user AS cu, session_user AS su", "--format", "json")
    assert json.loads(result.output) == [{"cu": READER_ROLE, "su": READER_ROLE}]
    with psycopg.connect(database_url) as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit "
            "FROM pg_roles WHERE rolname = %s",
            (READER_ROLE,),
        ).fetchone()
        assert attributes == (False, False, False, False, False, False)
        members_of = conn.execute(
            "SELECT count(*) FROM pg_auth_members WHERE member = %s::regrole", (READER_ROLE,)
        ).fetchone()[0]
        assert members_of == 0
        # SELECT on every table and view of the schema, nothing else
        rows = conn.execute(
            "SELECT c.relname, has_table_privilege(%(r)s, c.oid, 'SELECT'), "
            "has_table_privilege(%(r)s, c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER') "
            "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v')",
            {"r": READER_ROLE},
        ).fetchall()
    assert rows and all(select and not write for _, select, write in rows), rows


def test_crossfid_sql_refuses_a_privileged_session(database_url):
    """The guard of ``crossfid sql``: a superuser login (the test connection) is refused outright."""
    with psycopg.connect(database_url) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    if not superuser:
        pytest.skip("the test server's login is not a superuser")
    with pytest.raises(ReaderUnavailable, match="privileged"):
        run_read_only(database_url, "SELECT 1", require_unprivileged=True)


def test_refusals_are_one_line(cli, database_url, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CROSSFID_DATABASE_URL": database_url, "CROSSFID_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "crossfid.cli", "sql", "SELECT pg_read_file('/etc/hostname')"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: permission denied for function pg_read_file"]


# --------------------------------------------------------------------------- granted readers


@pytest.fixture
def make_role(database_url):
    """Create login roles for a test (cluster-wide, so uniquely named) and drop them afterwards."""
    made: list[str] = []

    def create(options: str = "") -> str:
        role = f"analyst_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN " + options).format(sql.Identifier(role)))
        made.append(role)
        return role

    yield create
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in made:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _as(database_url: str, role: str) -> str:
    return make_url(database_url).set(username=role, password=None).render_as_string(hide_password=False)


@pytest.mark.parametrize(("name", "template"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_granted_reader_refused_even_in_a_read_write_transaction(
    cli, database_url, make_role, victim, tmp_path, name, template
):
    role = make_role()
    cli("db", "grant-reader", role)
    _, pid = victim
    marker = tmp_path / f"{name}.out"
    with psycopg.connect(_as(database_url, role)) as conn:
        conn.execute("SET TRANSACTION READ WRITE")  # the reader's default is read-only; it can change that
        with pytest.raises(psycopg.Error):
            conn.execute(_statement(template, marker, pid))
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM fidelities").fetchone()[0] > 0
    assert not marker.exists()


def test_grant_reader_strips_an_existing_roles_rights(cli, database_url, make_role):
    role = make_role("CREATEDB CREATEROLE")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT INSERT, DELETE, SELECT ON frames, sources TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT pg_read_server_files TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    output = cli("db", "grant-reader", role).output
    for stripped in ("CREATEDB", "CREATEROLE", "DELETE on tables", "INSERT on tables", "pg_read_server_files"):
        assert stripped in output, output
    assert "updated: read-only access" in output
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone() == (False, False)
        assert not conn.execute("SELECT has_table_privilege(%s, 'frames', 'INSERT')", (role,)).fetchone()[0]
        assert not conn.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (role,)).fetchone()[0]
    with psycopg.connect(_as(database_url, role), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        assert conn.execute("SELECT count(*) FROM frames").fetchone() == (0,)
        for statement in (
            "INSERT INTO sources (name, kind) VALUES ('x', 'y')",
            "DELETE FROM frames",
            "SELECT pg_read_file('/etc/hostname')",
            "SELECT lo_from_bytea(0, 'x')",
            "CREATE TABLE public.sneaky (i int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert "updated" in cli("db", "grant-reader", role).output  # idempotent, nothing left to strip
    assert "removed" not in cli("db", "grant-reader", role).output


def test_grant_reader_refuses_superusers_and_owners(cli, database_url, make_role):
    with psycopg.connect(database_url) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    if superuser:
        with pytest.raises(ValueError, match="superuser"):
            grant_reader(database_url, make_role("SUPERUSER"))
    owner = make_role()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE owned_by_analyst (i int)"))
        conn.execute(sql.SQL("ALTER TABLE owned_by_analyst OWNER TO {}").format(sql.Identifier(owner)))
    result = cli("db", "grant-reader", owner, ok=False)
    assert result.exit_code == 1 and "owns" in str(result.exception)
    with pytest.raises(ValueError, match="crossfid's own"):
        grant_reader(database_url, READER_ROLE)


# --------------------------------------------------------------------------- --timeout and output


def test_timeout_below_a_millisecond_is_a_usage_error(cli):
    for bad in ("0.0001", "-1", "nan"):
        result = cli("sql", "SELECT 1", "--timeout", bad, ok=False)
        assert result.exit_code == 2, (bad, result.output)
    assert cli("sql", "SELECT 1", "--timeout", "0").exit_code == 0  # 0: no limit, as --help says
    assert cli("sql", "SELECT 1", "--timeout", "0.001").exit_code == 0
    assert timeout_ms(0) == 0 and timeout_ms(0.001) == 1 and timeout_ms(2.5) == 2500
    with pytest.raises(ValueError):
        timeout_ms(0.0004)


def test_timeout_stops_a_long_query(cli):
    result = cli("sql", "SELECT pg_sleep(5)", "--timeout", "0.05", ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, psycopg.errors.QueryCanceled)


def test_types_without_a_client_loader_print_as_text(cli):
    query = "SELECT point(1, 2) AS p, 'a & b'::tsquery AS q, '(0,1)'::tid AS t, '\\x0aff'::bytea AS b"
    table = cli("sql", query).output
    for text in ("(1,2)", "'a' & 'b'", "(0,1)", "\\x0aff"):
        assert text in table
    assert "b'\\x" not in table  # never Python's bytes repr
    assert cli("sql", query, "--format", "csv").output.splitlines()[1] == "\"(1,2)\",'a' & 'b',\"(0,1)\",\\x0aff"
    assert json.loads(cli("sql", query, "--format", "json").output) == [
        {"p": "(1,2)", "q": "'a' & 'b'", "t": "(0,1)", "b": "\\x0aff"}
    ]
