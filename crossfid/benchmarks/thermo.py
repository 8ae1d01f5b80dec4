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
* :func:`decomposition_metrics` — MAE and precision/recall/F1 of the "stable" class.

Entries are ``(id, formula, energy_per_atom)`` triples (formula or any pymatgen
composition string; energy eV/atom). Metrics are reported in meV/atom.
"""

from __future__ import annotations

import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence
from dataclasses import dataclass, field
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


def decomposition_energies(entries: Sequence[Entry]) -> DecompositionEnergies:
    """Decomposition energy (eV/atom) of every entry, from one pymatgen ``PhaseDiagram`` per chemical system.

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

    for system, members in by_system.items():
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
