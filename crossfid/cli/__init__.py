"""The ``crossfid`` command (typer + rich): one module per command group.

Deliberate errors (:class:`crossfid.errors.CrossfidError`), database errors and file errors are printed as one
line (``error: ...``) with exit status 1; anything else is a bug and shows its traceback. ``--debug`` (or
``CROSSFID_DEBUG=1``) shows the traceback of every error. Exit statuses are :class:`crossfid.exit_codes.ExitCode`
(the README's table). Heavy libraries are imported inside the commands, so ``crossfid --help`` is quick.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

import crossfid
from crossfid.cli import (
    analyze,
    atomref,
    benchmark,
    curate,
    dataset,
    db,
    ingest,
    leaderboard,
    models,
    report,
    sql,
    train,
)
from crossfid.cli.render import err, out
from crossfid.errors import CrossfidError
from crossfid.exit_codes import ExitCode

app = typer.Typer(
    name="crossfid",
    help="Multi-fidelity DFT data → curated, versioned training sets → CHGNet fine-tuning → benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(ingest.app, name="ingest")
app.command("curate")(curate.curate)
app.add_typer(dataset.app, name="dataset")
app.add_typer(atomref.app, name="atomref")
app.add_typer(analyze.app, name="analyze")
app.command("train")(train.train)
app.add_typer(train.runs_app, name="runs")
app.add_typer(train.plots_app, name="plots")
app.add_typer(models.app, name="models")
app.add_typer(leaderboard.app, name="leaderboard")
app.add_typer(benchmark.app, name="benchmark")
app.add_typer(report.app, name="report")
app.command("sql")(sql.sql)


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


def reported(exc: BaseException) -> bool:
    """Whether ``exc`` is printed as one line: a crossfid error, a database error or a file error."""
    if isinstance(exc, CrossfidError | OSError):
        return True
    if "sqlalchemy" in sys.modules:  # loaded whenever one of its errors can exist
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            return True
    if "psycopg" in sys.modules:
        import psycopg

        if isinstance(exc, psycopg.Error):
            return True
    return False


def one_line(exc: BaseException) -> str:
    """A one-line description of an error, from the database's own message when there is one."""
    inner = getattr(exc, "orig", None) or exc
    diag = getattr(inner, "diag", None)
    message = getattr(diag, "message_primary", None) or str(inner) or type(inner).__name__
    first = message.strip().splitlines()[0] if message.strip() else type(inner).__name__
    return first


def main() -> None:
    """The ``crossfid`` entry point."""
    from crossfid.potentials.base import potential_class

    potential_class().filter_warnings()
    try:
        app()
    except Exception as exc:
        if state.debug or not reported(exc):
            raise
        err.print(f"[red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(ExitCode.ERROR)
