"""The ``crossfid`` command (typer + rich).

Errors are printed as one line (``error: ...``) and exit with status 1; pass
``--debug`` (or set ``CROSSFID_DEBUG=1``) for the full traceback. Exit statuses are
:class:`crossfid.exit_codes.ExitCode` (the README's table). Heavy libraries
are imported inside the commands that need them, so ``crossfid --help`` is quick.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import crossfid
from crossfid.benchmarks.commands import benchmark_app, leaderboard_app
from crossfid.curation.commands import curate
from crossfid.curation.dataset_commands import dataset_app
from crossfid.exit_codes import ExitCode
from crossfid.ingest.commands import ingest_app
from crossfid.referencing.commands import analyze_app, atomref_app
from crossfid.training.commands import plots_app, runs_app, train

app = typer.Typer(
    name="crossfid",
    help="Multi-fidelity DFT data → curated, versioned training sets → CHGNet fine-tuning → benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database: create/upgrade, status, URL, reader roles.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ingest_app, name="ingest")
app.command("curate")(curate)
app.add_typer(dataset_app, name="dataset")
app.add_typer(atomref_app, name="atomref")
app.add_typer(analyze_app, name="analyze")
app.command("train")(train)
app.add_typer(runs_app, name="runs")
app.add_typer(plots_app, name="plots")
app.add_typer(leaderboard_app, name="leaderboard")
app.add_typer(benchmark_app, name="benchmark")

out = Console()
err = Console(stderr=True)


class _State:
    debug: bool = os.environ.get("CROSSFID_DEBUG", "") not in ("", "0")


state = _State()


def _version(value: bool) -> None:
    if value:
        out.print(f"crossfid {crossfid.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if debug:
        state.debug = True


def _connect():
    """Resolve the target database (starting the embedded server if needed) and make an engine."""
    from crossfid.db.engine import make_engine, resolve_target

    target = resolve_target()
    return target, make_engine(target)


# --------------------------------------------------------------------------- db


@db_app.command("init")
def db_init() -> None:
    """Create the schema or upgrade it to the newest revision; create or refresh the read-only role."""
    from crossfid.config import Settings
    from crossfid.db import migrate
    from crossfid.db.readonly import READER_ROLE, secure_database

    target, engine = _connect()
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    after = migrate.current_revision(engine)
    engine.dispose()
    setup = secure_database(target.libpq_url, Settings.from_env().home)
    where = "embedded server" if target.embedded else target.redacted
    if before == after:
        out.print(f"database on {where} is up to date (revision {after})")
    else:
        out.print(f"database on {where} migrated {before or 'empty'} → {after}")
    out.print(f"read-only role {READER_ROLE} {'created' if setup.created else 'refreshed'}", highlight=False)
    for note in setup.notes:
        err.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)


@db_app.command("status")
def db_status() -> None:
    """Server, URL (password hidden), schema revision and row counts per table."""
    from crossfid.db.status import collect_status

    target, engine = _connect()
    status = collect_status(engine, target)
    engine.dispose()
    out.print(f"[bold]server[/]    {status.server}, PostgreSQL {status.server_version}")
    out.print(f"[bold]url[/]       {status.url}")
    out.print(f"[bold]database[/]  {status.database}")
    if status.revision is None:
        out.print(f"[bold]schema[/]    [yellow]not initialised[/] (head is {status.head}): run `crossfid db init`")
    elif status.up_to_date:
        out.print(f"[bold]schema[/]    revision {status.revision} (head)")
    else:
        behind = f"revision {status.revision}, head is {status.head}"
        out.print(f"[bold]schema[/]    [yellow]{behind}[/]: run `crossfid db init`")
    if status.row_counts:
        table = Table("table", "rows", title="row counts")
        for name, count in status.row_counts.items():
            table.add_row(name, f"{count:,}")
        out.print(table)


@db_app.command("url")
def db_url(
    show_password: Annotated[bool, typer.Option(help="Print the password instead of ***.")] = False,
) -> None:
    """Print the libpq URL of the database, e.g. for ``psql "$(crossfid db url)"``."""
    target, _ = _connect()
    print(target.libpq_url if show_password else target.redacted)


@db_app.command("grant-reader")
def db_grant_reader(
    name: Annotated[str, typer.Argument(help="Role name (lower-case letters, digits, _).")],
    password: Annotated[
        bool,
        typer.Option("--password", help="Prompt for a login password (needed on password-auth servers)."),
    ] = False,
) -> None:
    """Make NAME a read-only login (a member of crossfid_reader): created, or stripped of every other right."""
    from crossfid.db.readonly import grant_reader

    secret = typer.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    target, _ = _connect()
    created, stripped = grant_reader(target.libpq_url, name, secret)
    if stripped:
        out.print(f"role {name}: removed {', '.join(stripped)}", highlight=False, soft_wrap=True)
    out.print(f"role {name} {'created' if created else 'updated'}: read-only access to {target.url.database}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server (it restarts on the next command)."""
    from crossfid.config import Settings
    from crossfid.db.embedded import stop_server

    settings = Settings.from_env()
    if not settings.embedded:
        raise RuntimeError("CROSSFID_DATABASE_URL is set: crossfid does not manage that server")
    stopped = stop_server(settings.home)
    out.print("embedded server stopped" if stopped else "embedded server was not running")


# --------------------------------------------------------------------------- sql


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _timeout_option(value: float) -> float:
    from crossfid.db.readonly import timeout_ms

    try:
        timeout_ms(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return value


def _cell(value: object) -> str:
    """A value as text for a table or CSV cell (bytea as PostgreSQL's hex form)."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


@app.command("sql")
def sql_command(
    query: Annotated[str, typer.Argument(help="One SQL statement; '-' reads it from standard input.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
    timeout: Annotated[
        float,
        typer.Option(help="Statement timeout in seconds (at least 0.001; 0 means no limit).", callback=_timeout_option),
    ] = 60.0,
    max_rows: Annotated[int, typer.Option(help="Print at most this many rows (0: all).", min=0)] = 1000,
) -> None:
    """Run one read-only query as the crossfid_reader role (READ ONLY transaction, statement timeout)."""
    from crossfid.config import Settings
    from crossfid.db.readonly import run_as_reader

    if query == "-":
        query = sys.stdin.read()
    target, _ = _connect()
    result, setup = run_as_reader(
        target.libpq_url, Settings.from_env().home, query, timeout_s=timeout, max_rows=max_rows or None
    )
    for note in setup.notes if setup else ():
        err.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows([_cell(v) for v in row] for row in result.rows)
    elif fmt is OutputFormat.json:
        records = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        print(json.dumps(records, default=_cell, indent=1))
    else:
        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*(escape(_cell(v)) for v in row))
        out.print(table)
        out.print(f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}")
    if result.truncated:
        err.print(f"[yellow]output truncated to {max_rows} rows (--max-rows 0 for all)[/]")


# --------------------------------------------------------------------------- entry point


def one_line(exc: BaseException) -> str:
    """A one-line description of an error, from the database's own message when there is one."""
    inner = getattr(exc, "orig", None) or exc
    diag = getattr(inner, "diag", None)
    message = getattr(diag, "message_primary", None) or str(inner) or type(inner).__name__
    first = message.strip().splitlines()[0] if message.strip() else type(inner).__name__
    return first


def main() -> None:
    import warnings

    from crossfid.benchmarks.relax_jobs import CHGNET_STRESS_WARNING

    warnings.filterwarnings("ignore", message=CHGNET_STRESS_WARNING)
    try:
        app()
    except Exception as exc:  # one clear line instead of a traceback
        if state.debug:
            raise
        err.print(f"[red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(ExitCode.ERROR)


if __name__ == "__main__":
    main()
