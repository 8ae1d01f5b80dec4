"""``crossfid analyze``: cross-fidelity correlation, energy shifts, element importance, transferability."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crossfid.cli.options import fidelities
from crossfid.cli.render import line, out

app = typer.Typer(
    help="Cross-fidelity analysis: correlation, shifts, element importance, transferability.", no_args_is_help=True
)


class Corrections(StrEnum):
    none = "none"
    mp2020 = "mp2020"
    both = "both"


Source = Annotated[str, typer.Option("--source", "-s", help="Source fidelity set, e.g. GGA,GGA+U.")]
Target = Annotated[str, typer.Option("--target", "-t", help="Target fidelity set, e.g. r2SCAN.")]
SourceRef = Annotated[str, typer.Option(help="Source AtomRef: auto, fit, or a stored name/id (e.g. chgnet-0.3.0).")]
TargetRef = Annotated[str, typer.Option(help="Target AtomRef: auto, fit, or a stored name/id (e.g. chgnet-r2scan).")]
Dataset = Annotated[str | None, typer.Option(help="Only the materials of this dataset (NAME[:VERSION] or id).")]
FigureDir = Annotated[
    Path | None, typer.Option("--out", help="Directory for figures (default $CROSSFID_HOME/figures).")
]


def _set(value: str) -> list[str]:
    names = fidelities(value)
    if not names:
        raise typer.BadParameter("give at least one fidelity, e.g. GGA,GGA+U")
    return names


def _engine():
    from crossfid.runtime.database import engine

    return engine()


def _print_notes(outcome) -> None:
    for note in outcome.notes:
        out.print(f"[dim]{note}[/]", highlight=False, soft_wrap=True)
    for name, path in outcome.figures.items():
        line(name, path, width=16)
    out.print(f"[dim]stored as cross_fidelity_analyses id {outcome.id}[/]", highlight=False)


def _corr(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@app.command("correlation")
def correlation(
    source: Source,
    target: Target,
    source_atomref: SourceRef = "auto",
    target_atomref: TargetRef = "auto",
    dataset: Dataset = None,
    out_dir: FigureDir = None,
) -> None:
    """Pearson/Spearman of energies per atom over shared materials, raw and after each fidelity's AtomRef."""
    from crossfid.referencing.analysis_runs import run_correlation

    engine = _engine()
    try:
        outcome = run_correlation(
            engine,
            _set(source),
            _set(target),
            source_atomref=source_atomref,
            target_atomref=target_atomref,
            dataset=dataset,
            out_dir=out_dir,
        )
    finally:
        engine.dispose()
    r = outcome.result
    title = f"{outcome.source_label} vs {outcome.target_label}"
    table = Table("energies", "Pearson", "Spearman", "materials", title=title)
    table.add_row("raw", _corr(r["raw"]["pearson"]), _corr(r["raw"]["spearman"]), str(outcome.n_materials))
    table.add_row(
        "referenced (E − c·E_ref)",
        _corr(r["referenced"]["pearson"]),
        _corr(r["referenced"]["spearman"]),
        str(outcome.n_materials),
    )
    out.print(table)
    _print_notes(outcome)


@app.command("shifts")
def shifts(
    source: Source,
    target: Target,
    dataset: Dataset = None,
    min_count: Annotated[int, typer.Option(help="Only elements present in at least this many materials.")] = 1,
) -> None:
    """Distribution of the per-material energy shift target − source (eV/atom), overall and by element."""
    from crossfid.referencing.analysis_runs import run_shifts

    engine = _engine()
    try:
        outcome = run_shifts(engine, _set(source), _set(target), dataset=dataset, min_count=min_count)
    finally:
        engine.dispose()
    o = outcome.result["overall"]
    out.print(
        f"shift {outcome.target_label} − {outcome.source_label} over {o['n']} materials: mean {o['mean']:+.3f}, "
        f"std {o['std']:.3f}, median {o['median']:+.3f}, range {o['min']:+.3f} … {o['max']:+.3f} eV/atom",
        highlight=False,
    )
    table = Table("element", "materials", "mean", "std", "min", "max", title="by element present (eV/atom)")
    for item in outcome.result["by_element"]:
        table.add_row(
            item["symbol"],
            str(item["n"]),
            f"{item['mean']:+.3f}",
            f"{item['std']:.3f}",
            f"{item['min']:+.3f}",
            f"{item['max']:+.3f}",
        )
    out.print(table)
    _print_notes(outcome)


@app.command("importance")
def importance(
    source: Source,
    target: Target,
    corrections: Annotated[
        Corrections, typer.Option(help="MP GGA/GGA+U corrections on the source energies: none, mp2020 or both.")
    ] = Corrections.both,
    dataset: Dataset = None,
    max_depth: Annotated[int | None, typer.Option(help="Depth limit of the decision tree.")] = None,
    seed: Annotated[int, typer.Option(help="random_state of the decision tree.")] = 0,
    top: Annotated[int, typer.Option(help="Print this many elements.")] = 15,
    out_dir: FigureDir = None,
) -> None:
    """Element importance (decision tree) for the formation-energy difference source − target.

    Formation energies are taken against elemental reference entries only: materials with an element that has
    none at either side are left out and counted (never filled in with fitted AtomRef constants).
    """
    from crossfid.referencing.analysis_runs import run_importance

    engine = _engine()
    try:
        outcome = run_importance(
            engine,
            _set(source),
            _set(target),
            corrections=corrections.value,
            dataset=dataset,
            max_depth=max_depth,
            random_state=seed,
            out_dir=out_dir,
        )
    finally:
        engine.dispose()
    for variant, values in outcome.result["variants"].items():
        title = f"{outcome.source_label} − {outcome.target_label}, corrections: {variant}"
        if "error" in values:
            out.print(f"[yellow]{title}: {values['error']}[/]", highlight=False)
            continue
        table = Table("element", "normalised importance", "raw importance", title=title)
        for symbol, value in values["ranking"][:top]:
            table.add_row(symbol, f"{value:.4f}", f"{values['raw'][symbol]:.4f}")
        out.print(table)
        if values["left_out"]:
            out.print(f"[yellow]{len(values['left_out'])} materials could not be corrected and were left out[/]")
    _print_notes(outcome)


@app.command("transferability")
def transferability(
    source: Source,
    target: Annotated[str, typer.Option("--target", "-t", help="Target split: id or DATASET[:VERSION]...")],
    source_atomref: SourceRef = "auto",
    target_atomref: TargetRef = "auto",
    accuracy: Annotated[float, typer.Option(help="Typical model accuracy, meV/atom.")] = 30.0,
    out_dir: FigureDir = None,
) -> None:
    """Is energy referencing needed to fine-tune a source-fidelity model on the target dataset? A plain verdict."""
    from crossfid.referencing.analysis_runs import run_transferability

    engine = _engine()
    try:
        outcome = run_transferability(
            engine,
            _set(source),
            target,
            source_atomref=source_atomref,
            target_atomref=target_atomref,
            model_accuracy=accuracy / 1000.0,
            out_dir=out_dir,
        )
    finally:
        engine.dispose()
    out.print(outcome.report.to_text(), highlight=False, soft_wrap=True)
    _print_notes(outcome)
