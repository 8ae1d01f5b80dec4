"""``crossfid atomref`` and ``crossfid analyze``: AtomRef fits and cross-fidelity analyses.

Errors are raised as exceptions; ``crossfid.cli.main`` prints them as one line.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from crossfid.dbconnect import migrated_engine

atomref_app = typer.Typer(
    help="Per-element reference energies (AtomRef): fit on a split, list, show, compare.", no_args_is_help=True
)
analyze_app = typer.Typer(
    help="Cross-fidelity analysis: correlation, shifts, element importance, transferability.", no_args_is_help=True
)
console = Console()


class Weight(StrEnum):
    frame = "frame"
    material = "material"


class Corrections(StrEnum):
    none = "none"
    mp2020 = "mp2020"
    both = "both"


def _fidelities(value: str) -> list[str]:
    from crossfid.ingest.fidelity import fidelity_from_label

    names = [fidelity_from_label(v.strip()) for v in value.split(",") if v.strip()]
    if not names:
        raise typer.BadParameter("give at least one fidelity, e.g. GGA,GGA+U")
    return names


def _mev(value: float | None) -> str:
    return "—" if value is None else f"{1000 * value:.1f} meV/atom"


def _line(label: str, value: object) -> None:
    console.print(f"[bold]{label:<16}[/] {value}", highlight=False, soft_wrap=True)


def _elements_text(symbols) -> str:
    return f"{len(symbols)}: {' '.join(symbols)}" if symbols else "none"


# --------------------------------------------------------------------------- atomref


@atomref_app.command("fit")
def fit(
    split: Annotated[str, typer.Argument(help="Split: id or DATASET[:VERSION]\\[/STRATEGY]\\[@SEED].")],
    part: Annotated[str, typer.Option(help="Part of the split to fit on.")] = "train",
    weight: Annotated[
        Weight, typer.Option(help="frame: every frame counts once; material: every material weighs the same.")
    ] = Weight.frame,
    fill_from: Annotated[
        str | None, typer.Option(help="AtomRef whose values are given to elements absent from the data.")
    ] = None,
    prior: Annotated[
        str | None, typer.Option(help="AtomRef that element energies the data cannot separate are pulled towards.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the stored AtomRef (default: from the split).")] = None,
) -> None:
    """Fit per-element reference energies on a split's training part (least squares, SVD) and store them."""
    from crossfid.referencing.store import fit_split_atomref

    engine = migrated_engine()
    try:
        ref, created = fit_split_atomref(
            engine, split, part=part, weighting=weight.value, fill_from=fill_from, prior=prior, name=name
        )
    finally:
        engine.dispose()
    verb = "fitted" if created else "exists:"
    console.print(f"{verb} AtomRef [bold]{ref.name}[/] (id {ref.id})", highlight=False)
    _print_atomref(ref)


def _print_atomref(ref) -> None:
    _line("kind", ref.kind)
    _line("fidelities", ", ".join(ref.fidelities))
    if ref.dataset:
        _line("fitted on", f"{ref.dataset}, split {ref.split_id}, {ref.part} part, {ref.weighting}-weighted")
    if ref.n_frames is not None:
        _line("data", f"{ref.n_frames:,} frames of {ref.n_materials:,} materials, rank {ref.rank}")
        _line("fit MAE", f"{_mev(ref.mae)} (RMSE {_mev(ref.rmse)}, max {_mev(ref.max_abs_error)})")
    _line("elements", _elements_text(ref.elements))
    unfilled = [s for s in ref.absent if s not in set(ref.filled)]
    if ref.kind == "package" and unfilled:
        _line("not fitted", f"{_elements_text(unfilled)} (≈0 eV/atom in the model: not in its training data)")
    elif unfilled:
        _line("absent", f"{len(unfilled)} elements have no value (NULL): applying the AtomRef to them is an error")
    if ref.unidentifiable:
        prior = ref.provenance.get("prior")
        how = f"values closest to the prior {prior}" if prior else "minimum-norm values"
        _line("unidentifiable", f"{' '.join(ref.unidentifiable)}: only their combination is fixed by the data ({how})")
    if ref.filled:
        source = ref.provenance.get("fill_from") or "the fill AtomRef"
        _line("filled", f"{_elements_text(ref.filled)} (from {source})")
    _line("values hash", ref.values_hash)


@atomref_app.command("list")
def list_command() -> None:
    """List stored AtomRefs (chgnet's shipped ones are registered on first use)."""
    from sqlalchemy.orm import Session

    from crossfid.referencing.store import ensure_package_atomrefs, list_atomrefs

    engine = migrated_engine()
    try:
        with Session(engine) as session, session.begin():
            ensure_package_atomrefs(session)
            refs = list_atomrefs(session)
    finally:
        engine.dispose()
    table = Table(title="AtomRefs (fit MAE in meV/atom)")
    table.add_column("id", no_wrap=True)
    table.add_column("name", overflow="fold", min_width=16)
    table.add_column("kind", no_wrap=True)
    table.add_column("fidelities")
    table.add_column("fitted on")
    table.add_column("MAE", no_wrap=True)
    for ref in refs:
        data = "" if ref.n_frames is None else f"{ref.n_frames:,} frames, {ref.n_materials:,} materials"
        table.add_row(
            str(ref.id),
            ref.name,
            ref.kind,
            ",".join(ref.fidelities),
            data,
            "" if ref.mae is None else f"{1000 * ref.mae:.1f}",
        )
    console.print(table)


@atomref_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="AtomRef id or name (e.g. chgnet-r2scan).")],
    compare: Annotated[str | None, typer.Option(help="Another AtomRef to print the difference to.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Show an AtomRef's per-element energies (eV/atom), optionally next to another's."""
    import numpy as np
    from sqlalchemy.orm import Session

    from crossfid.referencing.atomref import values_by_element
    from crossfid.referencing.store import resolve_atomref

    engine = migrated_engine()
    try:
        with Session(engine) as session, session.begin():
            one = resolve_atomref(session, ref)
            other = resolve_atomref(session, compare) if compare else None
    finally:
        engine.dispose()
    if fmt == "json":
        payload = {"name": one.name, "id": one.id, "energies": values_by_element(one.values)}
        if other is not None:
            payload["compare"] = {"name": other.name, "energies": values_by_element(other.values)}
        print(json.dumps(payload, indent=1))
        return
    console.print(f"AtomRef [bold]{one.name}[/] (id {one.id})", highlight=False)
    _print_atomref(one)
    columns = ["element", f"{one.name} (eV/atom)"]
    if other is not None:
        columns += [f"{other.name} (eV/atom)", "difference (eV/atom)"]
    table = Table(*columns)
    from crossfid.referencing.composition import SYMBOLS

    for j, symbol in enumerate(SYMBOLS):
        a = one.values[j]
        if not np.isfinite(a) and (other is None or not np.isfinite(other.values[j])):
            continue
        cells = [symbol, "—" if not np.isfinite(a) else f"{a:.4f}"]
        if other is not None:
            b = other.values[j]
            cells += ["—" if not np.isfinite(b) else f"{b:.4f}", f"{a - b:+.4f}" if np.isfinite(a - b) else "—"]
        table.add_row(*cells)
    console.print(table)


# --------------------------------------------------------------------------- analyze


_SOURCE = Annotated[str, typer.Option("--source", "-s", help="Source fidelity set, e.g. GGA,GGA+U.")]
_TARGET = Annotated[str, typer.Option("--target", "-t", help="Target fidelity set, e.g. r2SCAN.")]
_SOURCE_REF = Annotated[str, typer.Option(help="Source AtomRef: auto, fit, or a stored name/id (e.g. chgnet-0.3.0).")]
_TARGET_REF = Annotated[str, typer.Option(help="Target AtomRef: auto, fit, or a stored name/id (e.g. chgnet-r2scan).")]
_DATASET = Annotated[str | None, typer.Option(help="Only the materials of this dataset (NAME[:VERSION] or id).")]
_OUT = Annotated[Path | None, typer.Option(help="Directory for figures (default $CROSSFID_HOME/figures).")]


def _print_notes(outcome) -> None:
    for note in outcome.notes:
        console.print(f"[dim]{note}[/]", highlight=False, soft_wrap=True)
    for name, path in outcome.figures.items():
        _line(name, path)
    console.print(f"[dim]stored as cross_fidelity_analyses id {outcome.id}[/]", highlight=False)


def _corr(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@analyze_app.command("correlation")
def correlation(
    source: _SOURCE,
    target: _TARGET,
    source_atomref: _SOURCE_REF = "auto",
    target_atomref: _TARGET_REF = "auto",
    dataset: _DATASET = None,
    out: _OUT = None,
) -> None:
    """Pearson/Spearman of energies per atom over shared materials, raw and after each fidelity's AtomRef."""
    from crossfid.referencing.analyses import run_correlation

    engine = migrated_engine()
    try:
        outcome = run_correlation(
            engine,
            _fidelities(source),
            _fidelities(target),
            source_atomref=source_atomref,
            target_atomref=target_atomref,
            dataset=dataset,
            out_dir=out,
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
    console.print(table)
    _print_notes(outcome)


@analyze_app.command("shifts")
def shifts(
    source: _SOURCE,
    target: _TARGET,
    dataset: _DATASET = None,
    min_count: Annotated[int, typer.Option(help="Only elements present in at least this many materials.")] = 1,
) -> None:
    """Distribution of the per-material energy shift target − source (eV/atom), overall and by element."""
    from crossfid.referencing.analyses import run_shifts

    engine = migrated_engine()
    try:
        outcome = run_shifts(engine, _fidelities(source), _fidelities(target), dataset=dataset, min_count=min_count)
    finally:
        engine.dispose()
    o = outcome.result["overall"]
    console.print(
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
    console.print(table)
    _print_notes(outcome)


@analyze_app.command("importance")
def importance(
    source: _SOURCE,
    target: _TARGET,
    corrections: Annotated[
        Corrections, typer.Option(help="MP GGA/GGA+U corrections on the source energies: none, mp2020 or both.")
    ] = Corrections.both,
    source_atomref: _SOURCE_REF = "auto",
    target_atomref: _TARGET_REF = "auto",
    dataset: _DATASET = None,
    max_depth: Annotated[int | None, typer.Option(help="Depth limit of the decision tree.")] = None,
    seed: Annotated[int, typer.Option(help="random_state of the decision tree.")] = 0,
    top: Annotated[int, typer.Option(help="Print this many elements.")] = 15,
    out: _OUT = None,
) -> None:
    """Element importance (decision tree) for the formation-energy difference source − target."""
    from crossfid.referencing.analyses import run_importance

    engine = migrated_engine()
    try:
        outcome = run_importance(
            engine,
            _fidelities(source),
            _fidelities(target),
            corrections=corrections.value,
            source_atomref=source_atomref,
            target_atomref=target_atomref,
            dataset=dataset,
            max_depth=max_depth,
            random_state=seed,
            out_dir=out,
        )
    finally:
        engine.dispose()
    for variant, values in outcome.result["variants"].items():
        title = f"{outcome.source_label} − {outcome.target_label}, corrections: {variant}"
        if "error" in values:
            console.print(f"[yellow]{title}: {values['error']}[/]", highlight=False)
            continue
        table = Table("element", "normalised importance", "raw importance", title=title)
        for symbol, value in values["ranking"][:top]:
            table.add_row(symbol, f"{value:.4f}", f"{values['raw'][symbol]:.4f}")
        console.print(table)
        if values["left_out"]:
            console.print(f"[yellow]{len(values['left_out'])} materials could not be corrected and were left out[/]")
    _print_notes(outcome)


@analyze_app.command("transferability")
def transferability(
    source: _SOURCE,
    target: Annotated[str, typer.Option("--target", "-t", help="Target split: id or DATASET[:VERSION]...")],
    source_atomref: _SOURCE_REF = "auto",
    target_atomref: _TARGET_REF = "auto",
    accuracy: Annotated[float, typer.Option(help="Typical model accuracy, meV/atom.")] = 30.0,
    out: _OUT = None,
) -> None:
    """Is energy referencing needed to fine-tune a source-fidelity model on the target dataset? A plain verdict."""
    from crossfid.referencing.analyses import run_transferability

    engine = migrated_engine()
    try:
        outcome = run_transferability(
            engine,
            _fidelities(source),
            target,
            source_atomref=source_atomref,
            target_atomref=target_atomref,
            model_accuracy=accuracy / 1000.0,
            out_dir=out,
        )
    finally:
        engine.dispose()
    console.print(outcome.report.to_text(), highlight=False, soft_wrap=True)
    _print_notes(outcome)
