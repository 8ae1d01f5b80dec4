"""``crossfid curate``: the curation rules on Dask, one decision per frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crossfid.cli.options import ENERGY_LABEL_HELP, EnergyLabel, Scheduler, Workers, fidelities, values
from crossfid.cli.render import out, progress

#: ``--dedupe`` modes: the fast procedure and the plain reference one
DEDUPE_MODES = ("fast", "reference")


def curate(
    fidelity: Annotated[
        list[str], typer.Option("--fidelity", "-f", help="Fidelities curated together, e.g. r2SCAN or GGA,GGA+U.")
    ],
    materials: Annotated[list[str] | None, typer.Option(help="Only these material ids (comma-separated).")] = None,
    chemsys: Annotated[list[str] | None, typer.Option(help="Only these chemical systems, e.g. Fe-O.")] = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    dedupe: Annotated[str, typer.Option(help=f"{' or '.join(DEDUPE_MODES)} (the plain procedure).")] = DEDUPE_MODES[0],
    config: Annotated[
        Path | None, typer.Option(help="JSON file with rule thresholds (defaults: docs/curation.md).", exists=True)
    ] = None,
    freeze: Annotated[
        str | None, typer.Option(help="Freeze the accepted frames as a new version of this dataset.")
    ] = None,
    energy_label: Annotated[
        EnergyLabel | None, typer.Option("--energy-label", "-e", help=f"With --freeze: {ENERGY_LABEL_HELP}")
    ] = None,
) -> None:
    """Apply the MPtrj curation rules; every frame gets a recorded decision."""
    from crossfid.curation.config import CurationConfig
    from crossfid.curation.pipeline import run_curation
    from crossfid.errors import InputError
    from crossfid.runtime import database
    from crossfid.runtime.dask import dask_client

    if freeze and energy_label is None:
        raise typer.BadParameter("--freeze needs --energy-label (uncorrected or mp2020)", param_hint="--energy-label")
    if dedupe not in DEDUPE_MODES:
        raise InputError(f"--dedupe must be {' or '.join(repr(m) for m in DEDUPE_MODES)}")
    chosen = fidelities(fidelity)
    cfg = CurationConfig.from_dict(json.loads(config.read_text())) if config else CurationConfig()
    target = database.target()
    engine = database.engine()
    with dask_client(workers, scheduler) as client:
        out.print(f"dask dashboard: {client.dashboard_link}")
        with progress() as steps:
            summary = run_curation(
                engine,
                target.libpq_url,
                chosen,
                client=client,
                materials=values(materials),
                chemsys=values(chemsys),
                config=cfg,
                dedupe=dedupe,
                progress=steps.step(f"curate {','.join(chosen)}", count="{done}/{total} materials"),
            )
    table = Table("decision", "rule", "frames", title=f"curation run {summary.run_id} ({', '.join(chosen)})")
    for (rule, accepted), count in summary.by_rule.items():
        table.add_row("accepted" if accepted else "[red]rejected[/]", rule, f"{count:,}")
    out.print(table)
    stats = summary.dedupe
    out.print(
        f"{summary.materials} materials, {summary.frames:,} frames, {summary.accepted:,} accepted; "
        f"StructureMatcher: {stats.fit_calls:,} fits, {stats.skipped:,} comparisons decided without one"
    )
    if freeze:
        from crossfid.curation.datasets import freeze_dataset

        info = freeze_dataset(engine, summary.run_id, freeze, energy_label=energy_label.value)
        out.print(
            f"dataset {info.name} version {info.version} ({info.energy_label} energies): {info.n_frames:,} frames, "
            f"{info.n_materials} materials, "
            f"{info.n_elements} elements, content hash {info.content_hash}"
        )
    else:
        out.print(f"freeze it with: crossfid dataset freeze --run {summary.run_id} --name NAME --energy-label LABEL")
    engine.dispose()
