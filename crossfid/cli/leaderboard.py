"""``crossfid leaderboard refresh|show|html``: benchmarks of every registered model and the leaderboard."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from crossfid.cli.options import Format, Scheduler, Workers, values
from crossfid.cli.render import Column, OutputFormat, out, progress, records_rows, render

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
    scored: Annotated[
        list[str] | None,
        typer.Option(
            help="Scored set of a thermodynamic benchmark, BENCHMARK=test|all (the study's: formation-energy=all, "
            "decomposition-energy=test)."
        ),
    ] = None,
    source_fidelity: Annotated[
        list[str] | None,
        typer.Option(help="Source fidelity of the forgetting benchmark (repeatable; default GGA and GGA+U)."),
    ] = None,
    peers: Annotated[
        bool, typer.Option("--peers/--no-peers", help="Benchmark the peer models (SevenNet, calculators) too.")
    ] = True,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Run exactly the (model × benchmark) pairs that are missing or stale; a no-op when all are fresh.

    The models: chgnet's base models, crossfid's fine-tunes and the peers (SevenNet-0, SevenNet-MF-0 in its
    R2SCAN modality, registered calculators; `--no-peers` leaves them out).

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
    chosen: dict[str, str] = {}
    for item in values(scored):
        name, _, part = item.partition("=")
        if part not in ("test", "all") or not name:
            raise typer.BadParameter(f"{item!r}: expected BENCHMARK=test or BENCHMARK=all", param_hint="--scored")
        chosen[name] = part
    suite = default_benchmarks(
        settings,
        [c.strip() for c in crystals.split(",")] if crystals else None,
        chosen or None,
        values(source_fidelity) or None,
    )
    interval = parse_interval(every) if every else None

    def once():
        engine = make_engine()
        try:
            with dask_client(workers, scheduler) as client:
                out.print(f"dask dashboard: {client.dashboard_link}", highlight=False)
                target = split if split is not None else newest_frozen_split(engine)
                with progress() as steps:
                    summary = refresh(
                        engine,
                        target,
                        benchmarks=suite,
                        only=benchmark,
                        models=model,
                        client=client,
                        progress=steps.reporter(count="{done}/{total}"),
                        peers=peers,
                    )
        finally:
            engine.dispose()
        for line in summary.verified:
            out.print(f"verified: {line}", highlight=False, soft_wrap=True)
        for name, bench, run_id in summary.ran:
            out.print(f"ran {bench} on {name} (benchmark run {run_id})", highlight=False)
        for bench, why in summary.skipped:
            out.print(f"[dim]skipped {bench}: {escape(why)}[/]", highlight=False, soft_wrap=True)
        out.print(f"{len(summary.ran)} ran, {len(summary.fresh)} already fresh, {len(summary.failed)} failed")
        for name, bench, error in summary.failed:
            out.print(f"[red]failed:[/] {bench} on {name}: {error}", highlight=False, soft_wrap=True)
        return summary

    if interval is None:
        if once().failed:
            raise typer.Exit(1)
        return
    run_every(interval, once, announce=lambda message: out.print(message, highlight=False))


@app.command("show")
def show(fmt: Format = OutputFormat.table) -> None:
    """The leaderboard, best composite score first."""
    from crossfid.benchmarks.leaderboard import labeller_note, origin_label, read_leaderboard, show_columns, show_legend
    from crossfid.runtime.database import engine as make_engine
    from crossfid.vocabulary import METHOD_LABELS

    engine = make_engine()
    try:
        fields, records = read_leaderboard(engine)
    finally:
        engine.dispose()

    def cell(row, key: str) -> str:
        if key == "origin":
            return origin_label(row)
        return number(METHOD_LABELS.get(row[key], row[key]) if key == "method" else row.get(key))

    columns = [
        Column(
            name,
            header,
            justify="left" if name in ("model", "origin", "method") else "right",
            no_wrap=name != "method",
            overflow="fold",
            value=lambda r, key=name: cell(r, key),
        )
        for name, header in show_columns()
    ]
    note = labeller_note(records)
    render(
        fields,
        records_rows(fields, records),
        fmt,
        columns=columns,
        title="leaderboard (--format csv|json for every column)",
        footer=f"[dim]{show_legend()}[/]" + (f"\n{escape(note)}" if note else ""),
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
