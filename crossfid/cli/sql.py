"""``crossfid sql``: one read-only query as the crossfid_reader role."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from crossfid.cli.options import Format
from crossfid.cli.render import OutputFormat, err, render, warn
from crossfid.db.readonly import DEFAULT_TIMEOUT_S, MIN_TIMEOUT_S

#: rows printed unless --max-rows says otherwise
MAX_ROWS = 1000


def _timeout_option(value: float) -> float:
    from crossfid.db.readonly import timeout_ms

    try:
        timeout_ms(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return value


def sql(
    query: Annotated[str, typer.Argument(help="One SQL statement; '-' reads it from standard input.")],
    fmt: Format = OutputFormat.table,
    timeout: Annotated[
        float,
        typer.Option(
            help=f"Statement timeout in seconds (at least {MIN_TIMEOUT_S}; 0 means no limit).",
            callback=_timeout_option,
        ),
    ] = DEFAULT_TIMEOUT_S,
    max_rows: Annotated[int, typer.Option(help="Print at most this many rows (0: all).", min=0)] = MAX_ROWS,
) -> None:
    """Run one read-only query as the crossfid_reader role (READ ONLY transaction, statement timeout)."""
    from crossfid.db.readonly import run_as_reader
    from crossfid.runtime.database import target
    from crossfid.runtime.paths import DataDirs

    if query == "-":
        query = sys.stdin.read()
    result, setup = run_as_reader(
        target().libpq_url,
        DataDirs.from_settings().reader_passfile,
        query,
        timeout_s=timeout,
        max_rows=max_rows or None,
    )
    for note in setup.notes if setup else ():
        warn(note)
    n = len(result.rows)
    render(result.columns, result.rows, fmt, footer=f"{n} row{'s' if n != 1 else ''}")
    if result.truncated:
        err.print(f"[yellow]output truncated to {max_rows} rows (--max-rows 0 for all)[/]")
