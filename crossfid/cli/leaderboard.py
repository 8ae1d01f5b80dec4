"""``crossfid leaderboard refresh|show|html``: benchmarks of every registered model and the leaderboard."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crossfid.cli.options import Format, Scheduler, Workers
from crossfid.cli.render import Column, OutputFormat, out, records_rows, render

app = typer.Typer(
    help="Benchmarks of every registered model and the leaderboard (refresh, show, html).", no_args_is_help=True
)


def number(value) -> str:
    """A leaderboard number: three decimals below 10, one above; — for none."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


@app.command("refresh")
def refresh_command(
    split: Annotated[
        str | None, typer.Option(help="Benchmark data: split id or DATASET[:VERSION] (default: the newest split).")
    ] = None,
    benchmark: Annotated[list[str] | None, typer.Option("--benchmark", "-b", help="Only these benchmarks.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Only these models.")] = None,
    crystals: Annotated[
        str | None, typer.Option(help="Density benchmark on these crystal ids only (comma-separated).")
    ] = None,
    fmax: Annotated[float, typer.Option(help="Relaxation force criterion, eV/Å.")] = 0.03,
    steps: Annotated[int, typer.Option(help="Relaxation step limit.")] = 500,
    every: Annotated[str | None, typer.Option(help="Keep running: refresh now and then every INTERVAL (6h).")] = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Run exactly the (model × benchmark) pairs that are missing or stale; a no-op when all are fresh.

    The split and its dataset are first verified against their stored content hashes (as `crossfid dataset
    verify` does); a mismatch refuses the refresh with an error and exit status 1.
    """
    from crossfid.benchmarks.leaderboard import parse_interval, refresh, run_every
    from crossfid.benchmarks.registry import default_benchmarks
    from crossfid.benchmarks.relax_jobs import RelaxSettings
    from crossfid.benchmarks.store import newest_frozen_split
    from crossfid.runtime.dask import dask_client
    from crossfid.runtime.database import engine as make_engine

    settings = RelaxSettings(fmax=fmax, steps=steps)
    suite = default_benchmarks(settings, [c.strip() for c in crystals.split(",")] if crystals else None)
    interval = parse_interval(every) if every else None

    def once() -> None:
        engine = make_engine()
        try:
            with dask_client(workers, scheduler) as client:
                out.print(f"dask dashboard: {client.dashboard_link}", highlight=False)
                target = split if split is not None else newest_frozen_split(engine)
                columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
                with Progress(*columns, console=out, disable=not out.is_terminal) as progress:
                    bars: dict[str, int] = {}

                    def report(label: str, done: int, total: int) -> None:
                        if label not in bars:
                            bars[label] = progress.add_task(label, total=total)
                        progress.update(bars[label], completed=done, total=total)

                    summary = refresh(
                        engine, target, benchmarks=suite, only=benchmark, models=model, client=client, progress=report
                    )
        finally:
            engine.dispose()
        for line in summary.verified:
            out.print(f"verified: {line}", highlight=False, soft_wrap=True)
        for name, bench, run_id in summary.ran:
            out.print(f"ran {bench} on {name} (benchmark run {run_id})", highlight=False)
        out.print(f"{len(summary.ran)} ran, {len(summary.fresh)} already fresh, {len(summary.failed)} failed")
        for name, bench, error in summary.failed:
            out.print(f"[red]failed:[/] {bench} on {name}: {error}", highlight=False, soft_wrap=True)

    if interval is None:
        once()
        return
    run_every(interval, once, announce=lambda message: out.print(message, highlight=False))


@app.command("show")
def show(fmt: Format = OutputFormat.table) -> None:
    """The leaderboard, best composite score first."""
    from crossfid.benchmarks.leaderboard import read_leaderboard, show_columns, show_legend
    from crossfid.runtime.database import engine as make_engine
    from crossfid.vocabulary import METHOD_LABELS

    engine = make_engine()
    try:
        fields, records = read_leaderboard(engine)
    finally:
        engine.dispose()
    columns = [
        Column(
            name,
            header,
            justify="left" if name in ("model", "method") else "right",
            no_wrap=name != "method",
            overflow="fold",
            value=lambda r, key=name: number(METHOD_LABELS.get(r[key], r[key]) if key == "method" else r.get(key)),
        )
        for name, header in show_columns()
    ]
    render(
        fields,
        records_rows(fields, records),
        fmt,
        columns=columns,
        title="leaderboard (--format csv|json for every column)",
        footer=f"[dim]{show_legend()}[/]",
    )


@app.command("html")
def html(
    page: Annotated[Path, typer.Argument(metavar="OUT", help="The page to write, e.g. leaderboard.html.")],
) -> None:
    """A self-contained static page: the sortable table and per-model figures."""
    from crossfid.benchmarks.page import build_page
    from crossfid.runtime.database import engine as make_engine

    engine = make_engine()
    try:
        path = build_page(engine, page)
    finally:
        engine.dispose()
    out.print(f"wrote {path} ({dt.datetime.now().astimezone():%Y-%m-%d %H:%M})", highlight=False)
