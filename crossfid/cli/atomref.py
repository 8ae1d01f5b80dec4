"""``crossfid atomref``: per-element reference energies fitted on splits, listed, shown and compared."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from crossfid.cli.options import Format, SplitArgument
from crossfid.cli.render import Column, OutputFormat, line, out, render

app = typer.Typer(
    help="Per-element reference energies (AtomRef): fit on a split, list, show, compare.", no_args_is_help=True
)


class Weight(StrEnum):
    frame = "frame"
    material = "material"


def _engine():
    from crossfid.runtime.database import engine

    return engine()


def mev(value: float | None) -> str:
    """eV/atom as meV/atom text."""
    return "—" if value is None else f"{1000 * value:.1f} meV/atom"


def _line(label: str, value: object) -> None:
    line(label, value, width=16)


def _elements_text(symbols) -> str:
    return f"{len(symbols)}: {' '.join(symbols)}" if symbols else "none"


@app.command("fit")
def fit(
    split: SplitArgument,
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
    prior_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Also pull every element towards --prior, as this many rows of the pure element "
            "(frames, or materials with --weight material); 0: only inseparable ones. "
            "crossfid train's own fits pull towards the shipped AtomRef (docs/referencing.md).",
        ),
    ] = 0.0,
    name: Annotated[str | None, typer.Option(help="Name of the stored AtomRef (default: from the split).")] = None,
) -> None:
    """Fit per-element reference energies on a split's training part (least squares, SVD) and store them."""
    from crossfid.referencing.store import fit_split_atomref

    engine = _engine()
    try:
        ref, created = fit_split_atomref(
            engine,
            split,
            part=part,
            weighting=weight.value,
            fill_from=fill_from,
            prior=prior,
            prior_weight=prior_weight,
            name=name,
        )
    finally:
        engine.dispose()
    verb = "fitted" if created else "exists:"
    out.print(f"{verb} AtomRef [bold]{ref.name}[/] (id {ref.id})", highlight=False)
    _print_atomref(ref)


def _print_atomref(ref) -> None:
    _line("kind", ref.kind)
    _line("fidelities", ", ".join(ref.fidelities))
    if ref.dataset:
        _line("fitted on", f"{ref.dataset}, split {ref.split_id}, {ref.part} part, {ref.weighting}-weighted")
    if ref.n_frames is not None:
        _line("data", f"{ref.n_frames:,} frames of {ref.n_materials:,} materials, rank {ref.rank}")
        _line("fit MAE", f"{mev(ref.mae)} (RMSE {mev(ref.rmse)}, max {mev(ref.max_abs_error)})")
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
    if ref.provenance.get("prior_weight"):
        _line("prior", f"{ref.provenance['prior']}, weight {ref.provenance['prior_weight']:g} rows of each element")
    if ref.filled:
        source = ref.provenance.get("fill_from") or "the fill AtomRef"
        _line("filled", f"{_elements_text(ref.filled)} (from {source})")
    _line("values hash", ref.values_hash)


_LIST_FIELDS = ("id", "name", "kind", "fidelities", "n_frames", "n_materials", "mae_mev")
_LIST_COLUMNS = (
    Column("id", no_wrap=True),
    Column("name", overflow="fold", min_width=16),
    Column("kind", no_wrap=True),
    Column("fidelities", value=lambda r: ",".join(r["fidelities"])),
    Column(
        "n_frames",
        "fitted on",
        value=lambda r: "" if r["n_frames"] is None else f"{r['n_frames']:,} frames, {r['n_materials']:,} materials",
    ),
    Column("mae_mev", "MAE", no_wrap=True, value=lambda r: "" if r["mae_mev"] is None else f"{r['mae_mev']:.1f}"),
)


@app.command("list")
def list_command(fmt: Format = OutputFormat.table) -> None:
    """List stored AtomRefs (chgnet's shipped ones are registered on first use)."""
    from crossfid.referencing.store import list_all_atomrefs

    engine = _engine()
    try:
        refs = list_all_atomrefs(engine)
    finally:
        engine.dispose()
    rows = [
        (
            r.id,
            r.name,
            r.kind,
            list(r.fidelities),
            r.n_frames,
            r.n_materials,
            None if r.mae is None else 1000 * r.mae,
        )
        for r in refs
    ]
    render(_LIST_FIELDS, rows, fmt, columns=_LIST_COLUMNS, title="AtomRefs (fit MAE in meV/atom)")


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="AtomRef id or name (e.g. chgnet-r2scan).")],
    compare: Annotated[str | None, typer.Option(help="Another AtomRef to print the difference to.")] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="table; json: the energies by element; csv: the table's rows.")
    ] = OutputFormat.table,
) -> None:
    """Show an AtomRef's per-element energies (eV/atom), optionally next to another's."""
    import json

    import numpy as np

    from crossfid.referencing.atomref import values_by_element
    from crossfid.referencing.composition import SYMBOLS
    from crossfid.referencing.store import load_atomrefs

    engine = _engine()
    try:
        one, *rest = load_atomrefs(engine, ref, *([compare] if compare else []))
    finally:
        engine.dispose()
    other = rest[0] if rest else None
    if fmt is OutputFormat.json:
        payload = {"name": one.name, "id": one.id, "energies": values_by_element(one.values)}
        if other is not None:
            payload["compare"] = {"name": other.name, "energies": values_by_element(other.values)}
        print(json.dumps(payload, indent=1))
        return
    fields = ["element", f"{one.name} (eV/atom)"]
    if other is not None:
        fields += [f"{other.name} (eV/atom)", "difference (eV/atom)"]

    def energy(value: float, template: str = "{:.4f}") -> str:
        return template.format(value) if np.isfinite(value) else "—"

    rows = []
    for j, symbol in enumerate(SYMBOLS):
        a = one.values[j]
        if not np.isfinite(a) and (other is None or not np.isfinite(other.values[j])):
            continue
        cells = [symbol, energy(a)]
        if other is not None:
            b = other.values[j]
            cells += [energy(b), energy(a - b, "{:+.4f}")]
        rows.append(cells)
    if fmt is OutputFormat.table:
        out.print(f"AtomRef [bold]{one.name}[/] (id {one.id})", highlight=False)
        _print_atomref(one)
    render(fields, rows, fmt)
