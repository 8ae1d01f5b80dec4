"""Formation and decomposition energies, and stability classification, model vs DFT.

The study (``SCIENCE.md``, "Reported results") compares convex hulls built from
model-relaxed energies with r2SCAN DFT hulls (decomposition-energy MAE, method 4:
23.66 meV/atom) and formation energies (method 4: 29.38 meV/atom). Pure functions:

* :func:`formation_energies_by_id` — ``E_f = E − Σ x_el μ_el`` (eV/atom) with
  μ the lowest elemental energy per atom in the same data (each fidelity or model
  uses its own elemental references), via
  :func:`crossfid.referencing.cross_fidelity.elemental_references` and
  :func:`~crossfid.referencing.cross_fidelity.formation_energies`;
* :func:`elemental_minima` — those μ by element symbol (which elements have a reference);
* :func:`formation_energy_mae` — MAE (meV/atom) over the materials both sides know;
* :func:`decomposition_energies` — pymatgen ``PhaseDiagram`` per chemical system;
* :func:`decomposition_metrics` — MAE and precision/recall/F1 of the "stable" class;
* :func:`formation_truth`, :func:`decomposition_truth` — the DFT values of a scored set
  (:class:`Truth`), from every entry of the fidelity and nothing else, so no model changes them;
* :func:`score_formation`, :func:`score_decomposition` — a model's values on that set
  (:class:`ModelScore`) with its failures counted: a failed relaxation, or an element whose
  elemental entries all failed to relax (the model has no reference state for it, so every
  scored material containing it is a failure of that model, never dropped).

The study's scored sets (:data:`SCORED_SETS`): decomposition energies on the test materials
(hulls from all materials), formation energies on all materials.

Entries are ``(id, formula, energy_per_atom)`` triples (formula or any pymatgen
composition string; energy eV/atom). Metrics are reported in meV/atom.
"""

from __future__ import annotations

import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np

from crossfid.referencing.composition import SYMBOLS, fractions_from_formula
from crossfid.referencing.cross_fidelity import elemental_references, formation_energies

Entry = tuple[str, str, float]


def _plain_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _checked_entries(entries: Iterable[Entry]) -> list[tuple[str, str, float]]:
    checked: list[tuple[str, str, float]] = []
    seen: set[str] = set()
    for item in entries:
        try:
            material_id, formula, energy = item
        except (TypeError, ValueError):
            raise ValueError(f"an entry is (id, formula, energy_per_atom), got {item!r}") from None
        material_id = str(material_id)
        if material_id in seen:
            raise ValueError(f"duplicate entry id {material_id!r}")
        seen.add(material_id)
        checked.append((material_id, str(formula), float(energy)))
    return checked


# ---------------------------------------------------------------------------- formation energies


def _compositions(checked: list[tuple[str, str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Composition fractions (n, 94) and energies per atom (n,) of checked entries."""
    composition = np.vstack([fractions_from_formula(formula) for _, formula, _ in checked])
    return composition, np.array([e for _, _, e in checked], dtype=float)


def formation_energies_by_id(entries: Iterable[Entry]) -> dict[str, float]:
    """Formation energy per atom (eV/atom) of every entry, keyed by id.

    Elemental references μ are the lowest finite energy per atom among the
    single-element entries of each element (:func:`elemental_references`); a
    material containing an element without one, or with a non-finite energy, gets NaN.
    """
    checked = _checked_entries(entries)
    if not checked:
        return {}
    composition, energy = _compositions(checked)
    e_f = formation_energies(composition, energy, elemental_references(composition, energy))
    return {material_id: float(value) for (material_id, _, _), value in zip(checked, e_f, strict=True)}


def elemental_minima(entries: Iterable[Entry]) -> dict[str, float]:
    """The elemental references μ (eV/atom) of :func:`formation_energies_by_id`, by element symbol.

    Only elements with a finite single-element entry appear: a material with an element
    missing here has no formation energy.
    """
    checked = _checked_entries(entries)
    if not checked:
        return {}
    mu = elemental_references(*_compositions(checked))
    return {SYMBOLS[j]: float(mu[j]) for j in np.flatnonzero(np.isfinite(mu))}


def _paired(model: Any, dft: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Aligned finite pairs (by key for two mappings, by position otherwise) and the number left out."""
    model = model.values if isinstance(model, DecompositionEnergies) else model
    dft = dft.values if isinstance(dft, DecompositionEnergies) else dft
    if isinstance(model, Mapping) and isinstance(dft, Mapping):
        keys = sorted(set(model) | set(dft), key=str)
        m = np.array([float(model.get(k, math.nan)) for k in keys], dtype=float)
        d = np.array([float(dft.get(k, math.nan)) for k in keys], dtype=float)
    elif isinstance(model, Mapping) or isinstance(dft, Mapping):
        raise TypeError("pass two mappings (aligned by id) or two sequences (aligned by position)")
    else:
        m = np.asarray(model, dtype=float).ravel()
        d = np.asarray(dft, dtype=float).ravel()
        if m.shape != d.shape:
            raise ValueError(f"model and DFT values differ in length: {m.size} vs {d.size}")
    both = np.isfinite(m) & np.isfinite(d)
    return m[both], d[both], int((~both).sum())


def formation_energy_mae(model_e_f: Any, dft_e_f: Any) -> dict[str, Any]:
    """MAE of formation energies, model vs DFT.

    Inputs in eV/atom: two mappings id → E_f (aligned by id) or two equal-length
    sequences. Pairs where either side is missing or NaN are left out and counted.
    Returns ``{"mae": meV/atom (None when no pair), "n": pairs used, "n_missing": pairs left out,
    "unit": "meV/atom"}``.
    """
    m, d, n_missing = _paired(model_e_f, dft_e_f)
    mae = float(np.abs(m - d).mean() * 1000.0) if m.size else math.nan
    return {"mae": _plain_float(mae), "n": int(m.size), "n_missing": n_missing, "unit": "meV/atom"}


# ---------------------------------------------------------------------------- decomposition energies


@dataclass(frozen=True)
class DecompositionEnergies:
    """Decomposition energies (eV/atom) by entry id; NaN where one could not be computed.

    ``values``: id → e_d for every entry (negative: stable, distance below the hull
    of the other compositions; positive: energy above the hull); ``missing``: id →
    reason for every NaN. Reads like a dict of ``values`` (``e_d[id]``, ``in``,
    iteration, ``len``, ``keys()``, ``items()``) and can be passed to
    :func:`decomposition_metrics` as it is.
    """

    values: dict[str, float]
    missing: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def keys(self) -> KeysView[str]:
        return self.values.keys()

    def items(self) -> ItemsView[str, float]:
        return self.values.items()

    def finite(self) -> dict[str, float]:
        """The ids with a finite decomposition energy."""
        return {k: v for k, v in self.values.items() if math.isfinite(v)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": {k: _plain_float(v) for k, v in self.values.items()},
            "missing": dict(self.missing),
            "unit": "eV/atom",
        }


def _subsystems(elements: frozenset[str]) -> Iterator[frozenset[str]]:
    ordered = sorted(elements)
    for k in range(1, len(ordered) + 1):
        for combo in combinations(ordered, k):
            yield frozenset(combo)


def decomposition_energies(entries: Sequence[Entry], only: Iterable[str] | None = None) -> DecompositionEnergies:
    """Decomposition energy (eV/atom) of every entry, from one pymatgen ``PhaseDiagram`` per chemical system.

    ``only``: compute the values of these ids alone (the hulls are still built from every
    entry); the other entries are left out of ``values`` and ``missing``.

    A material's hull is built from the ``ComputedEntry`` objects of every entry
    whose elements are a subset of its own (``energy = energy_per_atom × atoms in
    the formula``). Each element of the system needs a finite elemental entry,
    otherwise the value is NaN and ``missing[id]`` says which element lacks one;
    entries with a non-finite energy are NaN too and are left out of every hull.

    Value: ``PhaseDiagram.get_decomp_and_phase_separation_energy(entry)[1]``
    (pymatgen 2024-2026 API) for entries on the hull — the energy relative to the
    hull of the *other* compositions, ≤ 0 (Bartel et al., npj Comput. Mater. 6, 97
    (2020)); stable elements get 0. For entries off the hull it is the energy above
    the hull, ``PhaseDiagram.get_e_above_hull(entry)`` ≥ 0. That is what
    pymatgen's function returns too, except for an unstable polymorph of a stable
    composition, where it excludes the stable polymorph and can return a negative
    value (the polymorph would be counted stable); the energy above the hull is
    used there.
    """
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    checked = _checked_entries(entries)
    energies: dict[str, float] = {}
    missing: dict[str, str] = {}
    by_system: dict[frozenset[str], list[tuple[str, Any]]] = {}
    elemental: set[str] = set()
    for material_id, formula, energy in checked:
        energies[material_id] = math.nan
        try:
            composition = Composition(formula)
            if composition.num_atoms <= 0:
                raise ValueError("empty composition")
        except Exception as exc:  # pymatgen raises several types for bad formulas
            missing[material_id] = f"invalid composition {formula!r}: {exc}"
            continue
        if not math.isfinite(energy):
            missing[material_id] = "non-finite energy"
            continue
        entry = ComputedEntry(composition, energy * composition.num_atoms, entry_id=material_id)
        system = frozenset(el.symbol for el in composition.elements)
        by_system.setdefault(system, []).append((material_id, entry))
        if len(system) == 1:
            elemental |= system

    wanted = None if only is None else {str(i) for i in only}
    if wanted is not None:
        energies = {k: v for k, v in energies.items() if k in wanted}
        missing = {k: v for k, v in missing.items() if k in wanted}
    for system, everyone in by_system.items():
        members = everyone if wanted is None else [(m, e) for m, e in everyone if m in wanted]
        if not members:
            continue
        name = "-".join(sorted(system))
        lacking = sorted(system - elemental)
        if lacking:
            reason = f"no elemental entry for {', '.join(lacking)} in the chemical system {name}"
            for material_id, _ in members:
                missing[material_id] = reason
            continue
        hull_entries = [entry for sub in _subsystems(system) for _, entry in by_system.get(sub, [])]
        try:
            diagram = PhaseDiagram(hull_entries)
            stable = {id(e) for e in diagram.stable_entries}
            for material_id, entry in members:
                if id(entry) in stable:
                    value = min(float(diagram.get_decomp_and_phase_separation_energy(entry)[1]), 0.0)
                else:
                    value = max(float(diagram.get_e_above_hull(entry)), 0.0)
                energies[material_id] = value
        except Exception as exc:  # a hull that cannot be built is reported, not raised
            for material_id, _ in members:
                energies[material_id] = math.nan
                missing[material_id] = f"phase diagram of {name} failed: {type(exc).__name__}: {exc}"
    return DecompositionEnergies(values=energies, missing=missing)


# ---------------------------------------------------------------------------- classification metrics


@dataclass(frozen=True)
class DecompositionMetrics:
    """Model vs DFT decomposition energies: MAE (meV/atom) and the "stable" class (e_d ≤ threshold).

    Counts are over the ``n`` ids with finite values on both sides (``n_missing``
    left out); precision, recall and F1 are NaN when undefined (no predicted or
    no true stable material).
    """

    mae: float
    n: int
    precision: float
    recall: float
    f1: float
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int
    stable_threshold: float
    n_missing: int

    @property
    def confusion(self) -> tuple[int, int, int, int]:
        """``(true_positive, false_positive, false_negative, true_negative)`` of the "stable" class."""
        return self.true_positive, self.false_positive, self.false_negative, self.true_negative

    @property
    def accuracy(self) -> float:
        return _ratio(self.true_positive + self.true_negative, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mae": _plain_float(self.mae),
            "unit": "meV/atom",
            "n": self.n,
            "precision": _plain_float(self.precision),
            "recall": _plain_float(self.recall),
            "f1": _plain_float(self.f1),
            "accuracy": _plain_float(self.accuracy),
            "confusion": {
                "true_positive": self.true_positive,
                "false_positive": self.false_positive,
                "false_negative": self.false_negative,
                "true_negative": self.true_negative,
            },
            "stable_threshold": self.stable_threshold,
            "n_missing": self.n_missing,
        }


def decomposition_metrics(
    model_ed: Mapping[str, float] | DecompositionEnergies,
    dft_ed: Mapping[str, float] | DecompositionEnergies,
    stable_threshold: float = 0.0,
) -> DecompositionMetrics:
    """Compare decomposition energies (eV/atom, id → value) of a model with DFT's.

    Ids present in both with finite values are compared; "stable" means
    ``e_d ≤ stable_threshold`` (eV/atom), the positive class of precision, recall and F1.
    """
    m, d, n_missing = _paired(model_ed, dft_ed)
    pred = m <= stable_threshold
    true = d <= stable_threshold
    tp = int((pred & true).sum())
    fp = int((pred & ~true).sum())
    fn = int((~pred & true).sum())
    tn = int((~pred & ~true).sum())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return DecompositionMetrics(
        mae=float(np.abs(m - d).mean() * 1000.0) if m.size else math.nan,
        n=int(m.size),
        precision=precision,
        recall=recall,
        f1=f1,
        true_positive=tp,
        false_positive=fp,
        false_negative=fn,
        true_negative=tn,
        stable_threshold=float(stable_threshold),
        n_missing=n_missing,
    )


# ---------------------------------------------------------------------------- the study's scoring

#: which materials a thermodynamic benchmark scores: the split's test materials, or every material of the fidelity
SCORED_SETS: tuple[str, ...] = ("test", "all")

#: reason of a scored material without an entry of the benchmark's fidelity
NO_ENTRY = "no reference entry with a structure at this fidelity"


@dataclass(frozen=True)
class Truth:
    """DFT reference values (eV/atom) of a scored set, computed from the DFT entries alone, once per data.

    ``scored``: the scored material ids, in order; ``values``: id → DFT value for those that
    have one; ``missing``: id → why not (no entry, no elemental reference, ...). No model
    enters here: a model's failures never change these values.
    """

    quantity: str
    scored: tuple[str, ...]
    values: dict[str, float]
    missing: dict[str, str]
    lacking: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id → its elements without an elemental entry

    @property
    def n_missing(self) -> int:
        return len(self.missing)

    def missing_elements(self) -> list[str]:
        """The elements of scored materials that have no elemental entry, sorted: what the data lacks."""
        return sorted({el for els in self.lacking.values() for el in els}, key=_element_key)


def _element_key(symbol: str) -> tuple[int, str]:
    return (SYMBOLS.index(symbol), symbol) if symbol in SYMBOLS else (len(SYMBOLS), symbol)


@lru_cache(maxsize=65536)
def _elements_of(formula: str) -> frozenset[str]:
    from pymatgen.core import Composition

    return frozenset(el.symbol for el in Composition(formula).elements)


def needed_entries(entries: Sequence[Entry], scored: Iterable[str]) -> list[str]:
    """Ids of the entries a scored set needs (to relax, and for its hulls): every entry whose elements are a
    subset of a scored material's elements (its own entry, its elemental phases, its hull's competitors)."""
    checked = _checked_entries(entries)
    formula = {i: f for i, f, _ in checked}
    systems = {_elements_of(formula[i]) for i in scored if i in formula}
    within = {sub for system in systems for sub in _subsystems(system)}
    return [i for i, f, _ in checked if _elements_of(f) in within]


def formation_truth(entries: Sequence[Entry], scored: Sequence[str]) -> Truth:
    """DFT formation energies (eV/atom) of the scored ids, against the lowest elemental entry of each element
    among ``entries`` (all of the fidelity's entries, whatever split part)."""
    checked = _checked_entries(entries)
    formula = {i: f for i, f, _ in checked}
    scored = list(dict.fromkeys(scored))
    e_f = formation_energies_by_id(checked)
    mu = elemental_minima(checked)
    values, missing, lacking = {}, {}, _lacking(formula, scored, set(mu))
    for material_id in scored:
        if material_id not in formula:
            missing[material_id] = NO_ENTRY
        elif material_id in lacking:
            missing[material_id] = f"no elemental reference entry for {', '.join(lacking[material_id])}"
        elif not math.isfinite(e_f[material_id]):
            missing[material_id] = "non-finite energy"
        else:
            values[material_id] = e_f[material_id]
    return Truth("formation energy", tuple(scored), values, missing, lacking)


def _lacking(formula: Mapping[str, str], scored: Iterable[str], elemental: set[str]) -> dict[str, tuple[str, ...]]:
    """Scored id → its elements without a (finite) elemental entry, for the ids that have some."""
    out = {}
    for material_id in scored:
        if material_id in formula:
            absent = sorted(_elements_of(formula[material_id]) - elemental, key=_element_key)
            if absent:
                out[material_id] = tuple(absent)
    return out


def decomposition_truth(entries: Sequence[Entry], scored: Sequence[str]) -> Truth:
    """DFT decomposition energies (eV/atom) of the scored ids, from hulls of ALL ``entries`` (every material of
    the fidelity, whatever split part), scored on ``scored`` only (the study: test materials)."""
    checked = _checked_entries(entries)
    known = {i for i, _, _ in checked}
    scored = list(dict.fromkeys(scored))
    e_d = decomposition_energies(checked, only=[i for i in scored if i in known])
    formula = {i: f for i, f, _ in checked}
    values, missing = {}, {}
    lacking = _lacking(formula, scored, set(elemental_minima(checked)))
    for material_id in scored:
        value = e_d.values.get(material_id, math.nan)
        if material_id not in known:
            missing[material_id] = NO_ENTRY
        elif math.isfinite(value):
            values[material_id] = value
        else:
            missing[material_id] = e_d.missing.get(material_id, "no decomposition energy")
    return Truth("decomposition energy", tuple(scored), values, missing, lacking)


@dataclass(frozen=True)
class ModelScore:
    """A model's values (eV/atom) on the scored materials that have a DFT value, and its failures.

    ``failures``: id → why the model has no value (its own relaxation failed, or every elemental
    phase of one of the material's elements failed to relax with it: the model then has no
    reference state for that element and its hull of the system cannot be built). Failures are
    counted, never dropped: ``failed_share`` = failures / scored materials with a DFT value.
    """

    truth: Truth
    values: dict[str, float]
    failures: dict[str, str]

    @property
    def n_scored(self) -> int:
        """Scored materials with a DFT value: the denominator of ``failed_share``."""
        return len(self.truth.values)

    @property
    def failed_share(self) -> float:
        """Share of the scored materials with a DFT value that the model could not score (NaN when none)."""
        return _ratio(len(self.failures), self.n_scored)


def _model_side(
    entries: Sequence[Entry], model_energies: Mapping[str, float]
) -> tuple[list[tuple[str, str, float]], dict[str, str]]:
    checked = _checked_entries(entries)
    side = [(i, f, float(model_energies[i])) for i, f, _ in checked if math.isfinite(model_energies.get(i, math.nan))]
    return side, {i: f for i, f, _ in checked}


def _no_model_element(element: str, formula: Mapping[str, str], failures: Mapping[str, str]) -> str:
    failed = sorted(i for i in failures if formula.get(i) is not None and _elements_of(formula[i]) == {element})
    listed = "; ".join(f"{i}: {failures[i]}" for i in failed[:3]) + (" ..." if len(failed) > 3 else "")
    return f"no model reference state for {element}: every elemental {element} entry failed to relax ({listed})"


def _failure(
    material_id: str,
    formula: Mapping[str, str],
    model_elements: set[str],
    failures: Mapping[str, str],
) -> str | None:
    """Why the model cannot score a material (None: it can): its own relaxation, or an element without a model
    reference state because all its elemental relaxations failed."""
    if material_id in failures:
        return f"relaxation failed: {failures[material_id]}"
    lacking = sorted(_elements_of(formula[material_id]) - model_elements, key=_element_key)
    if lacking:
        return "; ".join(_no_model_element(el, formula, failures) for el in lacking)
    return None


def score_formation(
    entries: Sequence[Entry], model_energies: Mapping[str, float], failures: Mapping[str, str], truth: Truth
) -> ModelScore:
    """A model's formation energies (eV/atom) on the scored materials with a DFT value.

    ``model_energies``: id → model energy per atom after relaxation (eV/atom) of the entries it
    relaxed; ``failures``: id → reason for those whose relaxation failed. The model's elemental
    references are its own lowest energies among the elemental entries that relaxed.
    """
    side, formula = _model_side(entries, model_energies)
    mu = elemental_minima(side)
    e_f = formation_energies_by_id(side)
    values, failed = {}, {}
    for material_id in truth.values:
        reason = _failure(material_id, formula, set(mu), failures)
        if reason is None and not math.isfinite(e_f.get(material_id, math.nan)):
            reason = "relaxation failed: no model energy"
        if reason is None:
            values[material_id] = e_f[material_id]
        else:
            failed[material_id] = reason
    return ModelScore(truth, values, failed)


def score_decomposition(
    entries: Sequence[Entry], model_energies: Mapping[str, float], failures: Mapping[str, str], truth: Truth
) -> ModelScore:
    """A model's decomposition energies (eV/atom) on the scored materials with a DFT value.

    The model's hulls are built from its relaxed energies of every entry that relaxed (an entry
    whose relaxation failed is missing from the model's hull, and counted by the caller); a
    system whose elements lack a relaxed elemental entry has no model hull, so its scored
    materials are failures of the model.
    """
    side, formula = _model_side(entries, model_energies)
    elemental = {next(iter(_elements_of(f))) for _, f, _ in side if len(_elements_of(f)) == 1}
    relaxed = {i for i, _, _ in side}
    candidates = [m for m in truth.values if m in relaxed]
    e_d = decomposition_energies(side, only=candidates)
    values, failed = {}, {}
    for material_id in truth.values:
        reason = _failure(material_id, formula, elemental, failures)
        value = e_d.values.get(material_id, math.nan)
        if reason is None and not math.isfinite(value):
            reason = e_d.missing.get(material_id, "relaxation failed: no model energy")
        if reason is None:
            values[material_id] = value
        else:
            failed[material_id] = reason
    return ModelScore(truth, values, failed)
