"""Cross-fidelity analyses run on the database and stored with their figures.

Each function reads reference entries (:mod:`crossfid.referencing.pairs`), calls
the pure functions of :mod:`crossfid.referencing.cross_fidelity`, writes one
``cross_fidelity_analyses`` row (what was compared, with which AtomRefs, the
numbers, the figure files) and returns it.

Which AtomRef is "each fidelity's own" (``--source-atomref`` / ``--target-atomref``):

* a stored AtomRef by name or id (e.g. ``chgnet-0.3.0``, or a split fit);
* ``fit``: fitted here on all reference entries of that fidelity set (stored as
  an ``entries`` AtomRef, keyed by its input, so it is fitted once);
* ``auto`` (default): ``fit`` when the fit is well determined (at least twice as
  many materials as identified element energies), otherwise the AtomRef shipped
  with chgnet for that fidelity. A fit with about one material per element
  reproduces every energy exactly and would make the referenced correlation
  meaningless; the note in the result says which was used and why.

Element importance uses no AtomRef: formation energies are referenced to true
elemental entries only, and materials without them are left out and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import crossfid
from crossfid.curation.datasets import resolve_dataset
from crossfid.curation.split_store import resolve_split
from crossfid.db.models import CrossFidelityAnalysis, Dataset
from crossfid.errors import InputError
from crossfid.hashing import json_digest
from crossfid.referencing import cross_fidelity
from crossfid.referencing.atomref import fit_atomref
from crossfid.referencing.corrections import CorrectionInput, mp2020_corrections
from crossfid.referencing.package_atomrefs import package_atomref_for
from crossfid.referencing.pairs import (
    FidelityEntries,
    PairedEntries,
    entries_composition,
    label,
    load_entries,
    pair_entries,
)
from crossfid.referencing.store import (
    StoredAtomRef,
    fit_split_atomref,
    resolve_atomref,
    store_entries_fit,
)
from crossfid.runtime.paths import DataDirs

#: a fit on reference entries is trusted for "auto" when materials ≥ this × identified element energies
WELL_DETERMINED_RATIO = 2.0


class AnalysisError(InputError):
    """Not enough shared materials, or an AtomRef that cannot be applied to them."""


@dataclass(frozen=True)
class AnalysisOutcome:
    """A stored analysis: its row id, numbers, figure files and the AtomRefs it used."""

    id: int
    kind: str
    source_label: str
    target_label: str
    n_materials: int
    result: dict[str, Any]
    figures: dict[str, str] = field(default_factory=dict)
    source_atomref: StoredAtomRef | None = None
    target_atomref: StoredAtomRef | None = None
    notes: tuple[str, ...] = ()
    report: cross_fidelity.TransferabilityReport | None = None


# --------------------------------------------------------------------------- AtomRef choice


def choose_atomref(
    session: Session,
    choice: str | int,
    fidelities: Sequence[str],
    entries: FidelityEntries,
    dataset: Dataset | None = None,
) -> tuple[StoredAtomRef, str]:
    """The AtomRef that stands for a fidelity set's own reference energies, and a note on why it was chosen."""
    text = str(choice).strip()
    if text not in ("auto", "fit"):
        ref = resolve_atomref(session, text)
        return ref, f"{label(fidelities)}: AtomRef {ref.name} (as asked)"
    if len(entries.material_ids) == 0:
        raise AnalysisError(f"no reference entries at {label(fidelities)} to fit an AtomRef on")
    composition = entries_composition(entries)
    fit = fit_atomref(composition, entries.label, groups=entries.material_ids)
    determined = fit.n_materials >= WELL_DETERMINED_RATIO * max(fit.rank, 1)
    package = package_atomref_for(fidelities)
    if text == "auto" and not determined and package is not None:
        ref = resolve_atomref(session, package)
        note = (
            f"{label(fidelities)}: AtomRef {ref.name} (shipped with chgnet); a fit on the {fit.n_materials} "
            f"materials would identify {fit.rank} element energies, too few materials to leave a meaningful residual"
        )
        return ref, note
    input_hash = _entries_hash(entries)
    stored = store_entries_fit(
        session,
        fit,
        fidelities=fidelities,
        input_hash=input_hash,
        dataset=dataset,
        provenance={"energy_label": "reference-entry energy per atom, corrected when stored, else uncorrected"},
    )
    note = f"{label(fidelities)}: AtomRef {stored.name} fitted on {fit.n_materials} reference entries (rank {fit.rank})"
    if not determined:
        note += "; poorly determined (fewer than 2 materials per element energy)"
    return stored, note


def _entries_hash(entries: FidelityEntries) -> str:
    """SHA-256 of the entries an AtomRef fit reads (material, fidelity, energy label at full precision)."""
    payload = [
        [m, f, repr(float(e))] for m, f, e in zip(entries.material_ids, entries.fidelity, entries.label, strict=True)
    ]
    return json_digest(payload)


# --------------------------------------------------------------------------- shared steps


def _dataset(session: Session, ref: str | int | None) -> Dataset | None:
    return None if ref is None else resolve_dataset(session, ref)


def _pairs(session: Session, source: Sequence[str], target: Sequence[str], dataset: Dataset | None):
    dataset_id = None if dataset is None else dataset.id
    src = load_entries(session, source, dataset_id)
    tgt = load_entries(session, target, dataset_id)
    pairs = pair_entries(src, tgt, label(source), label(target))
    if pairs.n < 3:
        where = f" in dataset {dataset.name}:{dataset.version}" if dataset else ""
        raise AnalysisError(
            f"only {pairs.n} materials{where} have reference entries at both {label(source)} and {label(target)}: "
            "an analysis needs at least 3"
        )
    return src, tgt, pairs


def _referenced(pairs: PairedEntries, source_ref: StoredAtomRef, target_ref: StoredAtomRef):
    try:
        return cross_fidelity.referenced_correlation(
            pairs.composition, pairs.source.label, pairs.target.label, source_ref.values, target_ref.values
        )
    except ValueError as exc:
        raise AnalysisError(f"cannot reference the shared materials: {exc}") from exc


def _store(
    session: Session,
    *,
    kind: str,
    source: Sequence[str],
    target: Sequence[str],
    pairs: PairedEntries,
    result: dict[str, Any],
    parameters: dict[str, Any],
    dataset: Dataset | None = None,
    split_id: int | None = None,
    source_ref: StoredAtomRef | None = None,
    target_ref: StoredAtomRef | None = None,
    corrections: str = "none",
) -> CrossFidelityAnalysis:
    row = CrossFidelityAnalysis(
        kind=kind,
        source_fidelities=list(source),
        target_fidelities=list(target),
        dataset_id=None if dataset is None else dataset.id,
        split_id=split_id,
        source_atomref_id=None if source_ref is None else source_ref.id,
        target_atomref_id=None if target_ref is None else target_ref.id,
        corrections=corrections,
        n_materials=pairs.n,
        input_hash=pairs.input_hash(),
        parameters=parameters,
        result=result,
        figures={},
        crossfid_version=crossfid.__version__,
    )
    session.add(row)
    session.flush()
    return row


def _scatter(row: CrossFidelityAnalysis, pairs: PairedEntries, corr, out_dir: Path) -> dict[str, str]:
    from crossfid.plots.energy_scatter import plot_energy_scatter

    path = out_dir / f"analysis-{row.id}-{row.kind}-energy-scatter.png"
    plot_energy_scatter(
        path,
        source=pairs.source.label,
        target=pairs.target.label,
        source_referenced=corr.source_referenced,
        target_referenced=corr.target_referenced,
        source_label=pairs.source_label,
        target_label=pairs.target_label,
        material_ids=pairs.material_ids,
        title=f"{pairs.source_label} vs {pairs.target_label}: {pairs.n} shared materials",
    )
    return {"energy_scatter": str(path)}


def _correlation_result(pairs: PairedEntries, corr, notes: list[str]) -> dict[str, Any]:
    result = corr.to_dict()
    result.update(
        material_ids=pairs.material_ids,
        source_energy=pairs.source.label.tolist(),
        target_energy=pairs.target.label.tolist(),
        notes=notes,
    )
    return result


# --------------------------------------------------------------------------- the analyses


def run_correlation(
    engine: Engine,
    source: Sequence[str],
    target: Sequence[str],
    *,
    source_atomref: str | int = "auto",
    target_atomref: str | int = "auto",
    dataset: str | int | None = None,
    out_dir: Path | None = None,
    plot: bool = True,
) -> AnalysisOutcome:
    """Pearson and Spearman of energies per atom of two fidelities over shared materials, raw and referenced."""
    out_dir = out_dir or DataDirs.from_settings().figures
    with Session(engine) as session, session.begin():
        ds = _dataset(session, dataset)
        src, tgt, pairs = _pairs(session, source, target, ds)
        s_ref, s_note = choose_atomref(session, source_atomref, source, src, ds)
        t_ref, t_note = choose_atomref(session, target_atomref, target, tgt, ds)
        corr = _referenced(pairs, s_ref, t_ref)
        notes = [s_note, t_note]
        row = _store(
            session,
            kind="correlation",
            source=source,
            target=target,
            pairs=pairs,
            dataset=ds,
            source_ref=s_ref,
            target_ref=t_ref,
            result=_correlation_result(pairs, corr, notes),
            parameters={"source_atomref": str(source_atomref), "target_atomref": str(target_atomref)},
        )
        if plot:
            row.figures = _scatter(row, pairs, corr, out_dir)
        return _outcome(row, pairs, s_ref, t_ref, notes)


def run_shifts(
    engine: Engine,
    source: Sequence[str],
    target: Sequence[str],
    *,
    dataset: str | int | None = None,
    min_count: int = 1,
) -> AnalysisOutcome:
    """Distribution of the per-material shift target − source (eV/atom), overall and by element present."""
    with Session(engine) as session, session.begin():
        ds = _dataset(session, dataset)
        _, _, pairs = _pairs(session, source, target, ds)
        stats = cross_fidelity.shift_statistics(
            pairs.composition, pairs.source.label, pairs.target.label, min_count=min_count
        )
        result = stats.to_dict() | {"material_ids": pairs.material_ids}
        row = _store(
            session,
            kind="shifts",
            source=source,
            target=target,
            pairs=pairs,
            dataset=ds,
            result=result,
            parameters={"min_count": min_count},
        )
        return _outcome(row, pairs)


def _corrected_source(pairs: PairedEntries) -> tuple[np.ndarray, dict[str, str]]:
    """Source energies with MP's GGA/GGA+U corrections: stored corrected energies, else pymatgen's MP2020.

    Returns the energies (NaN where no correction could be made) and the reason per material left out.
    """
    energies = pairs.source.corrected.copy()
    todo = [i for i in range(pairs.n) if not np.isfinite(energies[i])]
    inputs = [
        CorrectionInput(
            identifier=pairs.material_ids[i],
            structure=pairs.source.structures[i],
            energy_per_atom=float(pairs.source.energy[i]),
            run_type=pairs.source.fidelity[i],
            hubbards=pairs.source.hubbards[i],
        )
        for i in todo
    ]
    reasons: dict[str, str] = {}
    for i, corrected in zip(todo, mp2020_corrections(inputs), strict=True):
        if corrected.ok:
            energies[i] = corrected.corrected_energy_per_atom
        else:
            reasons[pairs.material_ids[i]] = corrected.reason or "not corrected"
    return energies, reasons


def _formation(composition: np.ndarray, energy: np.ndarray, entries: FidelityEntries):
    """Formation energies per atom (eV/atom) against the same fidelity set's elemental reference entries.

    μ of an element is the lowest uncorrected energy per atom of its elemental entries at that
    fidelity set; a material with an element that has none is left out (NaN), never referenced
    to a fitted AtomRef value (:func:`crossfid.referencing.cross_fidelity.formation_against_elements`).
    """
    return cross_fidelity.formation_against_elements(composition, energy, entries_composition(entries), entries.energy)


def _left_out(
    pairs: PairedEntries, sides: dict[str, cross_fidelity.ElementalFormation]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Materials with an elemental reference for every element on both sides, and a record of the others."""
    keep = np.logical_and.reduce([side.kept for side in sides.values()])
    materials = {
        m: {name: list(side.lacking[i]) for name, side in sides.items() if side.lacking[i]}
        for i, m in enumerate(pairs.material_ids)
        if not keep[i]
    }
    record = {
        "n": int((~keep).sum()),
        "of": pairs.n,
        "by_element": {name: side.left_out_by_element() for name, side in sides.items()},
        "materials": materials,
    }
    return keep, record


def _lacking_text(record: dict[str, Any]) -> str:
    parts = [f"{', '.join(counts)} at {name}" for name, counts in record["by_element"].items() if counts]
    return "; ".join(parts) or "none"


def run_importance(
    engine: Engine,
    source: Sequence[str],
    target: Sequence[str],
    *,
    corrections: str = "both",
    source_atomref: str | int = "auto",
    target_atomref: str | int = "auto",
    dataset: str | int | None = None,
    max_depth: int | None = None,
    random_state: int = 0,
    out_dir: Path | None = None,
    plot: bool = True,
) -> AnalysisOutcome:
    """Element importance for the formation-energy difference source − target (the study's Fig. 1c/1d).

    ``corrections``: ``none`` (uncorrected source energies), ``mp2020`` (MP's
    GGA/GGA+U corrections on the source: stored corrected energies, else pymatgen's
    MaterialsProject2020Compatibility) or ``both`` (two results side by side).

    Formation energies use true elemental references only: each fidelity set's elemental entries,
    all of them (``dataset`` limits the materials compared, not the reference states). Shared
    materials with an element lacking one on either side are left out and recorded
    (``result.left_out_no_elemental_reference``: how many, by element, which); fewer than 3
    compounds left is an :class:`AnalysisError` naming the missing elements. AtomRefs play no part:
    ``source_atomref``/``target_atomref`` other than ``auto`` are refused.
    """
    if corrections not in ("none", "mp2020", "both"):
        raise AnalysisError(f"unknown corrections {corrections!r} (none, mp2020 or both)")
    for side, choice in (("source", source_atomref), ("target", target_atomref)):
        if str(choice).strip() != "auto":
            raise AnalysisError(
                f"element importance uses elemental reference entries, never AtomRef values: "
                f"drop the {side} AtomRef ({choice})"
            )
    out_dir = out_dir or DataDirs.from_settings().figures
    variants = ["none", "mp2020"] if corrections == "both" else [corrections]
    with Session(engine) as session, session.begin():
        ds = _dataset(session, dataset)
        src, tgt, pairs = _pairs(session, source, target, ds)
        source_label, target_label = label(source), label(target)
        # reference states from every entry of each fidelity set: --dataset limits the materials compared only
        src_all, tgt_all = (src, tgt) if ds is None else (load_entries(session, source), load_entries(session, target))
        target_f = _formation(pairs.composition, pairs.target.label, tgt_all)
        source_f = _formation(pairs.composition, pairs.source.energy, src_all)
        keep, record = _left_out(pairs, {source_label: source_f, target_label: target_f})
        compounds = int((keep & ((pairs.composition > 0).sum(axis=1) > 1)).sum())
        if compounds < 3:  # an element's own phases have formation energies ≈ 0 on both sides: nothing to rank
            raise AnalysisError(
                f"only {compounds} of the {pairs.n} materials shared by {source_label} and {target_label} are "
                f"compounds with an elemental reference entry for every element on both sides (none for "
                f"{_lacking_text(record)}): element importance needs at least 3"
            )
        notes = [
            f"formation energies against elemental reference entries only (each element's lowest energy per "
            f"atom at the same fidelity set); {record['n']} of {pairs.n} shared materials left out for lack of one "
            f"({_lacking_text(record)})"
        ]
        result: dict[str, Any] = {
            "notes": notes,
            "variants": {},
            "left_out_no_elemental_reference": record,
            "elemental_references": {source_label: source_f.references, target_label: target_f.references},
        }
        for variant in variants:
            energy, left_out = (pairs.source.energy, {}) if variant == "none" else _corrected_source(pairs)
            use = keep & np.isfinite(energy)
            if use.sum() < 3:
                result["variants"][variant] = {
                    "error": "fewer than 3 materials with elemental references could be corrected",
                    "left_out": left_out,
                }
                continue
            difference = _formation(pairs.composition[use], energy[use], src_all).formation - target_f.formation[use]
            importance = cross_fidelity.element_importance(
                pairs.composition[use],
                difference,
                atom_counts=pairs.atom_counts()[use],
                max_depth=max_depth,
                random_state=random_state,
            )
            result["variants"][variant] = importance.to_dict() | {
                "material_ids": [m for m, k in zip(pairs.material_ids, use, strict=True) if k],
                "difference": difference.tolist(),
                "left_out": left_out,
                "n_left_out_no_elemental_reference": record["n"],
            }
        row = _store(
            session,
            kind="importance",
            source=source,
            target=target,
            pairs=pairs,
            dataset=ds,
            corrections=corrections,
            result=result,
            parameters={"max_depth": max_depth, "random_state": random_state, "corrections": corrections},
        )
        if plot:
            row.figures = _importance_figures(row, result, pairs, out_dir)
        return _outcome(row, pairs, notes=notes)


def _importance_figures(row, result: dict[str, Any], pairs: PairedEntries, out_dir: Path) -> dict[str, str]:
    from crossfid.plots.periodic_table import plot_element_importance

    figures = {}
    for variant, values in result["variants"].items():
        normalised = values.get("normalised")
        if not normalised:
            continue
        path = out_dir / f"analysis-{row.id}-importance-{variant}.png"
        title = f"{pairs.source_label} − {pairs.target_label} formation energy: element importance"
        title += " (MP2020 corrections)" if variant == "mp2020" else " (no corrections)"
        plot_element_importance(path, normalised, title=title)
        figures[f"importance_{variant}"] = str(path)
    return figures


def run_transferability(
    engine: Engine,
    source: Sequence[str],
    split: str | int,
    *,
    source_atomref: str | int = "auto",
    target_atomref: str | int = "auto",
    model_accuracy: float = cross_fidelity.MODEL_ACCURACY,
    out_dir: Path | None = None,
    plot: bool = True,
) -> AnalysisOutcome:
    """Report on a planned transfer from a source fidelity to a target dataset (via one of its splits).

    Defaults: the source AtomRef is the one shipped with chgnet for the source
    fidelity (the base model a transfer starts from), falling back to ``auto``;
    the target AtomRef is the split's default fit (train part, frame-weighted),
    fitted now if it does not exist yet. When that fit is poorly determined
    (fewer than two materials per element energy) the correlation uses chgnet's
    shipped AtomRef of the target fidelity instead, and the note says so.
    """
    out_dir = out_dir or DataDirs.from_settings().figures
    with Session(engine) as session:
        split_id = resolve_split(session, split).id
    # the default fit of the split (frame-weighted, no fill, no prior): fitted once, then found by its key
    target_fit = fit_split_atomref(engine, split_id)[0] if str(target_atomref) == "auto" else None
    with Session(engine) as session, session.begin():
        split_row = resolve_split(session, split_id)
        ds = session.get(Dataset, split_row.dataset_id)
        target = list(ds.fidelities)
        src, tgt, pairs = _pairs(session, source, target, ds)
        all_source = load_entries(session, source)
        package = package_atomref_for(source)
        if str(source_atomref) == "auto" and package is not None:
            s_ref = resolve_atomref(session, package)
            s_note = f"{label(source)}: AtomRef {s_ref.name}, the base model's, which a transfer starts from"
        else:
            s_ref, s_note = choose_atomref(session, source_atomref, source, all_source)
        if target_fit is not None:
            t_ref, t_note = _split_atomref_or_package(session, target_fit, target)
        else:
            t_ref, t_note = choose_atomref(session, target_atomref, target, tgt, ds)
        corr = _referenced(pairs, s_ref, t_ref)
        shifts = cross_fidelity.shift_statistics(pairs.composition, pairs.source.label, pairs.target.label)
        source_elements = {el for f in all_source.formulas for el in _elements(f)}
        report = cross_fidelity.transferability_report(
            source_label=label(source),
            target_label=label(target),
            correlation=corr,
            shifts=shifts,
            source_elements=source_elements,
            target_elements=set(ds.elements),
            model_accuracy=model_accuracy,
        )
        notes = [f"target dataset {ds.name}:{ds.version}, split {split_id}", s_note, t_note]
        result = report.to_dict() | {
            "raw": corr.raw.to_dict(),
            "referenced": corr.referenced.to_dict(),
            "shifts": shifts.to_dict(),
            "correlation": _correlation_result(pairs, corr, notes),
            "notes": notes,
        }
        row = _store(
            session,
            kind="transferability",
            source=source,
            target=target,
            pairs=pairs,
            dataset=ds,
            split_id=split_id,
            source_ref=s_ref,
            target_ref=t_ref,
            result=result,
            parameters={"model_accuracy": model_accuracy, "split": split_id},
        )
        if plot:
            row.figures = _scatter(row, pairs, corr, out_dir)
        return _outcome(row, pairs, s_ref, t_ref, notes, report)


def _split_atomref_or_package(
    session: Session, fit: StoredAtomRef, fidelities: Sequence[str]
) -> tuple[StoredAtomRef, str]:
    """The split's AtomRef when it is well determined, else chgnet's shipped one for the fidelity (with a note)."""
    rank = max(fit.rank or 1, 1)
    package = package_atomref_for(fidelities)
    if (fit.n_materials or 0) >= WELL_DETERMINED_RATIO * rank or package is None:
        return fit, f"{label(fidelities)}: AtomRef {fit.name} fitted on the split's train part"
    ref = resolve_atomref(session, package)
    note = (
        f"{label(fidelities)}: AtomRef {ref.name} (shipped with chgnet) for the correlation; the split's AtomRef "
        f"{fit.name} identifies {fit.rank} element energies from {fit.n_materials} materials, too few to leave a "
        "meaningful residual on them (it is still the one to train with)"
    )
    return ref, note


def _elements(formula: str) -> set[str]:
    from pymatgen.core import Composition

    return {el.symbol for el in Composition(formula).elements}


def _outcome(row, pairs, s_ref=None, t_ref=None, notes=(), report=None) -> AnalysisOutcome:
    return AnalysisOutcome(
        id=row.id,
        kind=row.kind,
        source_label=pairs.source_label,
        target_label=pairs.target_label,
        n_materials=pairs.n,
        result=row.result,
        figures=dict(row.figures or {}),
        source_atomref=s_ref,
        target_atomref=t_ref,
        notes=tuple(notes),
        report=report,
    )


def get_analysis(engine: Engine, analysis_id: int) -> CrossFidelityAnalysis:
    """A stored analysis row, detached from its session."""
    with Session(engine) as session:
        row = session.get(CrossFidelityAnalysis, analysis_id)
        if row is None:
            raise AnalysisError(f"no cross-fidelity analysis with id {analysis_id}")
        session.expunge(row)
        return row
