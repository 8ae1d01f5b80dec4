"""The ``crossfid`` command against real servers: db init/status/url, sql, grant-reader."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from crossfid.cli import app
from crossfid.db.migrate import head_revision
from crossfid.db.readonly import ReadOnlyViolation, grant_reader, run_read_only

SECRET = "mp-api-key-that-must-never-show-9f3b2c"


@pytest.fixture
def cli(database_url, monkeypatch):
    """Invoke the command on the test database, with an API key in the environment."""
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    monkeypatch.setenv("MP_API_KEY", SECRET)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(app, list(args))
        assert SECRET not in result.output
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    invoke("db", "init")
    return invoke


def test_db_init_is_idempotent_and_status_reports_head(cli):
    assert "up to date" in cli("db", "init").output
    status = cli("db", "status").output
    assert "external" in status  # reached through CROSSFID_DATABASE_URL
    assert f"revision {head_revision()} (head)" in status
    for table in ("frames", "tasks", "materials", "quarantine", "fidelities"):
        assert table in status


def test_db_url_hides_password(cli, monkeypatch, database_url):
    with_password = make_url(database_url).set(password="hunter2").render_as_string(hide_password=False)
    monkeypatch.setenv("CROSSFID_DATABASE_URL", with_password)
    printed = cli("db", "url").output.strip()
    assert "hunter2" not in printed and "***" in printed
    assert printed.startswith("postgresql://")


def test_sql_returns_rows_in_every_format(cli):
    query = "SELECT name, hubbard FROM fidelities WHERE name IN ('GGA', 'GGA+U') ORDER BY name"
    table = cli("sql", query).output
    assert "GGA+U" in table and "2 rows" in table
    csv_out = cli("sql", query, "--format", "csv").output.splitlines()
    assert csv_out == ["name,hubbard", "GGA,False", "GGA+U,True"]
    records = json.loads(cli("sql", query, "--format", "json").output)
    assert records == [{"name": "GGA", "hubbard": False}, {"name": "GGA+U", "hubbard": True}]


def test_sql_refuses_writes(cli, database_url):
    result = cli("sql", "INSERT INTO sources (name, kind) VALUES ('x', 'y')", ok=False)
    assert result.exit_code != 0
    assert isinstance(result.exception, ReadOnlyViolation)
    with pytest.raises(ReadOnlyViolation):  # no escaping the transaction with a second statement
        run_read_only(database_url, "SELECT 1; COMMIT; INSERT INTO sources (name, kind) VALUES ('x', 'y')")
    with pytest.raises(ReadOnlyViolation):
        run_read_only(database_url, "CREATE TABLE sneaky (i int)")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM sources").fetchone() == (0,)


def test_sql_statement_timeout(database_url):
    with pytest.raises(psycopg.errors.QueryCanceled):
        run_read_only(database_url, "SELECT pg_sleep(5)", timeout_s=0.2)


def test_sql_truncates_to_max_rows(database_url):
    result = run_read_only(database_url, "SELECT generate_series(1, 50) AS i", max_rows=10)
    assert len(result.rows) == 10 and result.truncated


@pytest.fixture
def reader_role(database_url):
    role = f"reader_{make_url(database_url).database[-12:]}"
    yield role
    with psycopg.connect(database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_reader_role_can_read_but_not_write(cli, database_url, reader_role):
    assert "created" in cli("db", "grant-reader", reader_role).output
    assert "updated" in cli("db", "grant-reader", reader_role).output  # idempotent
    as_reader = make_url(database_url).set(username=reader_role, password=None)
    with psycopg.connect(as_reader.render_as_string(hide_password=False), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM fidelities").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM v_frames").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO sources (name, kind) VALUES ('x', 'y')")
        conn.execute("SET default_transaction_read_only = off")  # even then, no privilege to write
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO sources (name, kind) VALUES ('x', 'y')")


def test_grant_reader_refuses_bad_names(database_url):
    with pytest.raises(ValueError):
        grant_reader(database_url, "Robert'); DROP TABLE frames;--")


def test_status_on_the_embedded_default(embedded_home, monkeypatch):
    """No URL: the command uses the embedded server in CROSSFID_HOME."""
    monkeypatch.setenv("CROSSFID_HOME", str(embedded_home))
    monkeypatch.setenv("MP_API_KEY", SECRET)
    runner = CliRunner()
    assert runner.invoke(app, ["db", "init"]).exit_code == 0
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 0, result.output
    assert "embedded" in result.output and "(head)" in result.output
    assert SECRET not in result.output
    url = runner.invoke(app, ["db", "url"]).output.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("crossfid",)


def test_errors_are_one_line_without_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CROSSFID_DATABASE_URL": "mysql://u@h/db", "MP_API_KEY": SECRET}
    command = [sys.executable, "-m", "crossfid.cli", "db", "status"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: crossfid needs PostgreSQL; got a 'mysql' URL"]
    assert "Traceback" not in result.stderr and SECRET not in result.stdout + result.stderr
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], env=env, capture_output=True, text=True)
    assert "Traceback" in debug.stderr


def _command_paths(group, prefix=()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path
        if hasattr(command, "commands"):  # a group (typer's own click or the real one)
            yield from _command_paths(command, path)


def test_every_command_has_help_that_renders():
    import typer.main

    root = typer.main.get_command(app)
    paths = list(_command_paths(root))
    assert ("atomref", "fit") in paths and ("analyze", "transferability") in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output, result.exception)
        assert "Usage" in result.output


def test_errors_with_brackets_print_as_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path))
    monkeypatch.setenv("CROSSFID_DATABASE_URL", "mysql://nobody@localhost/[/x]")
    result = subprocess.run(
        [sys.executable, "-m", "crossfid.cli", "sql", "SELECT 1"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_only_deliberate_database_and_file_errors_are_one_line(monkeypatch, capsys):
    import crossfid.cli as cli_module
    from crossfid.errors import InputError, IntegrityError, NotFoundError, StateError

    for exc in (InputError("x"), NotFoundError("x"), StateError("x"), IntegrityError("x"), OSError("x")):
        assert cli_module.reported(exc)
    assert cli_module.reported(psycopg.errors.QueryCanceled("x"))
    assert isinstance(InputError("x"), ValueError) and isinstance(NotFoundError("x"), LookupError)
    for exc in (KeyError("x"), ValueError("x"), ZeroDivisionError(), AttributeError("x")):
        assert not cli_module.reported(exc)

    def raising(exc):
        def app():
            raise exc

        return app

    monkeypatch.setattr(cli_module.state, "debug", False)
    monkeypatch.setattr(cli_module, "app", raising(NotFoundError("no dataset 'x'")))
    with pytest.raises(SystemExit) as exited:
        cli_module.main()
    assert exited.value.code == 1 and capsys.readouterr().err.strip() == "error: no dataset 'x'"
    monkeypatch.setattr(cli_module, "app", raising(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli_module.main()
