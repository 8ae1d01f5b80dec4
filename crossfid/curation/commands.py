"""``crossfid curate``: the curation rules on Dask, one decision per frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def curate(
    fidelity: Annotated[
        list[str], typer.Option("--fidelity", "-f", help="Fidelities curated together, e.g. r2SCAN or GGA,GGA+U.")
    ],
    materials: Annotated[list[str] | None, typer.Option(help="Only these material ids (comma-separated).")] = None,
    chemsys: Annotated[list[str] | None, typer.Option(help="Only these chemical systems, e.g. Fe-O.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler (default: CROSSFID_DASK_SCHEDULER).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes of the local cluster.")] = 2,
    dedupe: Annotated[str, typer.Option(help="fast (default) or reference (the plain procedure).")] = "fast",
    config: Annotated[
        Path | None, typer.Option(help="JSON file with rule thresholds (defaults: docs/curation.md).", exists=True)
    ] = None,
    freeze: Annotated[
        str | None, typer.Option(help="Freeze the accepted frames as a new version of this dataset.")
    ] = None,
) -> None:
    """Apply the MPtrj curation rules; every frame gets a recorded decision."""
    from crossfid.curation.config import CurationConfig
    from crossfid.curation.pipeline import make_client, run_curation
    from crossfid.db.engine import make_engine, resolve_target
    from crossfid.db.migrate import upgrade
    from crossfid.ingest.fidelity import fidelity_from_label

    if dedupe not in ("fast", "reference"):
        raise ValueError("--dedupe must be 'fast' or 'reference'")
    fidelities = [fidelity_from_label(f) for value in fidelity for f in value.split(",") if f.strip()]
    split = lambda values: [v.strip() for value in values or [] for v in value.split(",") if v.strip()]  # noqa: E731
    cfg = CurationConfig.from_dict(json.loads(config.read_text())) if config else CurationConfig()
    target = resolve_target()
    engine = make_engine(target)
    upgrade(engine)
    client, cluster = make_client(scheduler, workers)
    try:
        console.print(f"dask dashboard: {client.dashboard_link}")
        columns = [
            TextColumn("[bold]curating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("materials"),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            bar = progress.add_task("curate", total=None)
            summary = run_curation(
                engine,
                target.libpq_url,
                fidelities,
                client=client,
                materials=split(materials),
                chemsys=split(chemsys),
                config=cfg,
                dedupe=dedupe,
                progress=lambda done, total: progress.update(bar, completed=done, total=total),
            )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    table = Table("decision", "rule", "frames", title=f"curation run {summary.run_id} ({', '.join(fidelities)})")
    for (rule, accepted), count in summary.by_rule.items():
        table.add_row("accepted" if accepted else "[red]rejected[/]", rule, f"{count:,}")
    console.print(table)
    stats = summary.dedupe
    console.print(
        f"{summary.materials} materials, {summary.frames:,} frames, {summary.accepted:,} accepted; "
        f"StructureMatcher: {stats.fit_calls:,} fits, {stats.skipped:,} comparisons decided without one"
    )
    if freeze:
        from crossfid.curation.datasets import freeze_dataset

        info = freeze_dataset(engine, summary.run_id, freeze)
        console.print(
            f"dataset {info.name} version {info.version}: {info.n_frames:,} frames, {info.n_materials} materials, "
            f"{info.n_elements} elements, content hash {info.content_hash}"
        )
    else:
        console.print(f"freeze it with: crossfid dataset freeze --run {summary.run_id} --name NAME")
