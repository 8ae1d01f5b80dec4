"""``crossfid leaderboard refresh|show|html``: benchmarks of every registered model and the leaderboard.

Errors are raised as exceptions; ``crossfid.cli.main`` prints them as one line.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crossfid.dbconnect import migrated_engine

leaderboard_app = typer.Typer(
    help="Benchmarks of every registered model and the leaderboard (refresh, show, html).", no_args_is_help=True
)
console = Console()


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _default_split(engine) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        split_id = conn.execute(text("SELECT max(id) FROM splits WHERE frozen")).scalar_one()
    if split_id is None:
        raise ValueError("there is no frozen split to benchmark on: create one with `crossfid dataset split`")
    return split_id


@leaderboard_app.command("refresh")
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
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (default: CROSSFID_DASK_SCHEDULER).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Workers of the local Dask cluster.")] = None,
) -> None:
    """Run exactly the (model × benchmark) pairs that are missing or stale; a no-op when all are fresh.

    The split and its dataset are first verified against their stored content hashes (as `crossfid dataset
    verify` does); a mismatch refuses the refresh with an error and exit status 1.
    """
    from crossfid.benchmarks.leaderboard import parse_interval, refresh, run_every
    from crossfid.benchmarks.relax_jobs import RelaxSettings
    from crossfid.benchmarks.suite import default_benchmarks
    from crossfid.curation.pipeline import make_client

    settings = RelaxSettings(fmax=fmax, steps=steps)
    suite = default_benchmarks(settings, [c.strip() for c in crystals.split(",")] if crystals else None)
    interval = parse_interval(every) if every else None

    def once() -> None:
        engine = migrated_engine()
        client, cluster = make_client(scheduler, workers)
        try:
            console.print(f"dask dashboard: {client.dashboard_link}", highlight=False)
            target = split if split is not None else _default_split(engine)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
                bars: dict[str, int] = {}

                def report(label: str, done: int, total: int) -> None:
                    if label not in bars:
                        bars[label] = progress.add_task(label, total=total)
                    progress.update(bars[label], completed=done, total=total)

                summary = refresh(
                    engine, target, benchmarks=suite, only=benchmark, models=model, client=client, progress=report
                )
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
            engine.dispose()
        for line in summary.verified:
            console.print(f"verified: {line}", highlight=False, soft_wrap=True)
        for name, bench, run_id in summary.ran:
            console.print(f"ran {bench} on {name} (benchmark run {run_id})", highlight=False)
        console.print(f"{len(summary.ran)} ran, {len(summary.fresh)} already fresh, {len(summary.failed)} failed")
        for name, bench, error in summary.failed:
            console.print(f"[red]failed:[/] {bench} on {name}: {error}", highlight=False, soft_wrap=True)

    if interval is None:
        once()
        return
    run_every(interval, once, announce=lambda message: console.print(message, highlight=False))


@leaderboard_app.command("show")
def show(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, csv (all columns) or json (all columns).")] = (
        Format.table
    ),
) -> None:
    """The leaderboard, best composite score first."""
    from crossfid.benchmarks.leaderboard import SHOW_COLUMNS, SHOW_LEGEND, read_leaderboard

    engine = migrated_engine()
    try:
        columns, rows = read_leaderboard(engine)
    finally:
        engine.dispose()
    if fmt is Format.json:
        print(json.dumps(rows, default=str, indent=1))
        return
    if fmt is Format.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table(title="leaderboard (--format csv|json for every column)")
    for name, header in SHOW_COLUMNS:
        justify = "left" if name in ("model", "method") else "right"
        table.add_column(header, no_wrap=name != "method", overflow="fold", justify=justify)
    for row in rows:
        row = {**row, "method": METHOD_LABELS.get(row["method"], row["method"])}
        table.add_row(*(_cell(row.get(name)) for name, _ in SHOW_COLUMNS))
    console.print(table)
    console.print(f"[dim]{SHOW_LEGEND}[/]", highlight=False)


#: the study's numbering of the methods, so the table fits a terminal
METHOD_LABELS = {
    "pretrained": "base",
    "scratch": "m1",
    "tl-trainable-atomref": "m2",
    "tl-frozen-atomref": "m3",
    "tl-refit-atomref": "m4",
}


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


@leaderboard_app.command("html")
def html(out: Annotated[Path, typer.Argument(help="The page to write, e.g. leaderboard.html.")]) -> None:
    """A self-contained static page: the sortable table and per-model figures."""
    from crossfid.benchmarks.page import build_page

    engine = migrated_engine()
    try:
        path = build_page(engine, out)
    finally:
        engine.dispose()
    console.print(f"wrote {path} ({dt.datetime.now().astimezone():%Y-%m-%d %H:%M})", highlight=False)


benchmark_app = typer.Typer(help="Benchmarks of training methods rather than models: the scaling law.")


@benchmark_app.command("scaling-law")
def scaling_law(
    split: Annotated[str, typer.Option(help="Split with nested training subsets (`dataset split --subsets`).")],
    method: Annotated[list[str], typer.Option("--method", "-m", help="Methods to compare (repeat).")],
    sizes: Annotated[str, typer.Option(help="Training sizes, comma-separated, e.g. 100,300,1000,3000.")],
    epochs: Annotated[int, typer.Option(help="Epochs per run.")] = 50,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    min_size: Annotated[int, typer.Option(help="Fit only sizes above this (the study: 1000).")] = 1000,
    base: Annotated[str, typer.Option(help="Base model.")] = "chgnet-0.3.0",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Write the scaling-law figure here (PNG).")] = None,
) -> None:
    """Validation MAE against training size per method: log-log fits, R² and where the lines cross."""
    from crossfid.benchmarks.scaling_runs import fit_and_store, scaling_points
    from crossfid.training.hyperparameters import Hyperparameters

    size_list = sorted({int(s) for s in sizes.split(",") if s.strip()})
    hp = Hyperparameters().with_overrides(epochs=epochs, batch_size=batch_size)
    engine = migrated_engine()
    try:
        points = scaling_points(engine, split, method, size_list, hp, base=base, device=device)
        result = fit_and_store(engine, split, points, min_size=min_size)
    finally:
        engine.dispose()
    table = Table("method", "size", "run", "val E meV/atom", "val F meV/Å", title="scaling points")
    for p in points:
        table.add_row(p.method, str(p.size), str(p.run_id), _cell(p.val_energy_mae), _cell(p.val_force_mae))
    console.print(table)
    for name, fits in result["fits"].items():
        for quantity, fit in fits.items():
            text_fit = (
                "too few sizes above --min-size"
                if fit is None
                else (f"slope {fit.slope:.3f}, intercept {fit.intercept:.3f}, R² {fit.r2:.3f} over {fit.n} sizes")
            )
            console.print(f"{name} {quantity}: {text_fit}", highlight=False)
    for (a, b, quantity), size in result["crossovers"].items():
        where = "no crossing ahead" if size is None else (f"{size:,.0f} frames" if size < 1e9 else f"{size:.2e} frames")
        console.print(f"{a} vs {b} ({quantity}): lines cross at {where}", highlight=False)
    if out is not None:
        from crossfid.plots.scaling import plot_scaling_law

        console.print(f"wrote {plot_scaling_law(out, points, result['fits'])}", highlight=False)
