"""``crossfid db``: create/upgrade the schema, status, URL, reader roles, stop the embedded server."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from crossfid.cli.render import out, warn

app = typer.Typer(help="The database: create/upgrade, status, URL, reader roles.", no_args_is_help=True)


@app.command("init")
def init() -> None:
    """Create the schema or upgrade it to the newest revision; create or refresh the read-only role."""
    from crossfid.db import migrate
    from crossfid.db.readonly import READER_ROLE, secure_database
    from crossfid.runtime import database
    from crossfid.runtime.paths import DataDirs

    target = database.target()
    engine = database.engine(migrate=False)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    after = migrate.current_revision(engine)
    engine.dispose()
    setup = secure_database(target.libpq_url, DataDirs.from_settings().reader_passfile)
    where = "embedded server" if target.embedded else target.redacted
    if before == after:
        out.print(f"database on {where} is up to date (revision {after})")
    else:
        out.print(f"database on {where} migrated {before or 'empty'} → {after}")
    out.print(f"read-only role {READER_ROLE} {'created' if setup.created else 'refreshed'}", highlight=False)
    for note in setup.notes:
        warn(note)


@app.command("status")
def status() -> None:
    """Server, URL (password hidden), schema revision and row counts per table."""
    from crossfid.db.status import collect_status
    from crossfid.runtime import database

    target = database.target()
    engine = database.engine(migrate=False)
    try:
        found = collect_status(engine, target)
    finally:
        engine.dispose()
    out.print(f"[bold]server[/]    {found.server}, PostgreSQL {found.server_version}")
    out.print(f"[bold]url[/]       {found.url}")
    out.print(f"[bold]database[/]  {found.database}")
    if found.revision is None:
        out.print(f"[bold]schema[/]    [yellow]not initialised[/] (head is {found.head}): run `crossfid db init`")
    elif found.up_to_date:
        out.print(f"[bold]schema[/]    revision {found.revision} (head)")
    else:
        behind = f"revision {found.revision}, head is {found.head}"
        out.print(f"[bold]schema[/]    [yellow]{behind}[/]: run `crossfid db init`")
    if found.row_counts:
        table = Table("table", "rows", title="row counts")
        for name, count in found.row_counts.items():
            table.add_row(name, f"{count:,}")
        out.print(table)


@app.command("url")
def url(
    show_password: Annotated[bool, typer.Option(help="Print the password instead of ***.")] = False,
) -> None:
    """Print the libpq URL of the database, e.g. for ``psql "$(crossfid db url)"``."""
    from crossfid.runtime.database import target

    where = target()
    print(where.libpq_url if show_password else where.redacted)


@app.command("grant-reader")
def grant_reader(
    name: Annotated[str, typer.Argument(help="Role name (lower-case letters, digits, _).")],
    password: Annotated[
        bool,
        typer.Option("--password", help="Prompt for a login password (needed on password-auth servers)."),
    ] = False,
) -> None:
    """Make NAME a read-only login (a member of crossfid_reader): created, or stripped of every other right."""
    from crossfid.db.readonly import grant_reader as grant
    from crossfid.runtime.database import target

    secret = typer.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    where = target()
    created, stripped = grant(where.libpq_url, name, secret)
    if stripped:
        out.print(f"role {name}: removed {', '.join(stripped)}", highlight=False, soft_wrap=True)
    out.print(f"role {name} {'created' if created else 'updated'}: read-only access to {where.url.database}")


@app.command("stop")
def stop() -> None:
    """Stop the embedded PostgreSQL server (it restarts on the next command)."""
    from crossfid.config import Settings
    from crossfid.db.embedded import stop_server
    from crossfid.errors import StateError

    settings = Settings.from_env()
    if not settings.embedded:
        raise StateError("CROSSFID_DATABASE_URL is set: crossfid does not manage that server")
    stopped = stop_server(settings.home)
    out.print("embedded server stopped" if stopped else "embedded server was not running")
