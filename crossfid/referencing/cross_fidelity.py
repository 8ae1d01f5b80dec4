"""Cross-fidelity analysis: why GGA/GGA+U and r2SCAN energies do not mix naively.

Pure functions (numpy arrays in, frozen dataclasses out) reproducing the analysis
of the cross-functional transfer-learning study (``SCIENCE.md``, "Why fidelities
do not mix naively"):

* :func:`correlation`, :func:`referenced_correlation`: Pearson/Spearman of raw
  total energies and of energies with each fidelity's own AtomRef subtracted
  (study: 0.0917 raw vs 0.9250 referenced, GGA/GGA+U vs r2SCAN on MP);
* :func:`shift_statistics`: the per-material shift ``target − source`` overall
  and by element;
* :func:`element_importance`: a decision tree on composition fractions ranking
  the elements that drive the formation-energy difference between fidelities;
* :func:`formation_energies`, :func:`elemental_references`: formation energies
  from elemental reference energies; :func:`formation_against_elements`: the same,
  leaving out (and listing) materials with an element that has no elemental entry;
* :func:`transferability_report`: the numbers above condensed into a decision
  (does the target need its own AtomRef before fine-tuning?) and a verdict.

Compositions are ``(n, 94)`` composition-fraction matrices in CHGNet's convention
(:mod:`crossfid.referencing.composition`; rows sum to 1). Energies and shifts are
eV/atom throughout. Every result has ``to_dict()`` giving JSON-ready plain Python
(NaN becomes ``None``, arrays become lists).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from crossfid.referencing.atomref import reference_energies
from crossfid.referencing.composition import N_ELEMENTS, SYMBOLS, column_of

#: typical energy accuracy of a foundation interatomic potential (eV/atom), the yardstick of the report
MODEL_ACCURACY = 0.030

#: referencing is also called for when it raises the Pearson correlation by more than this
CORRELATION_MARGIN = 0.05

_ROW_SUM_TOL = 1e-6


# ---------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """JSON-ready plain Python: numpy scalars/arrays to float/int/list, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _composition(composition: Any) -> np.ndarray:
    """A validated (n, 94) composition-fraction matrix (finite, non-negative, rows summing to 1)."""
    c = np.asarray(composition, dtype=float)
    if c.ndim != 2 or c.shape[1] != N_ELEMENTS:
        raise ValueError(f"a composition matrix has shape (n, {N_ELEMENTS}), got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("composition fractions must be finite")
    if (c < 0).any():
        raise ValueError("composition fractions must be non-negative")
    sums = c.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if bad.size:
        raise ValueError(
            f"composition rows must be fractions summing to 1 (row {int(bad[0])} sums to {sums[bad[0]]:.6g})"
        )
    return c


def _vector(values: Any, n: int, name: str, *, finite: bool = True) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must be a vector of length {n}, got shape {v.shape}")
    if finite and not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite")
    return v


def _values94(values: Any, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.shape != (N_ELEMENTS,):
        raise ValueError(f"{name} must have {N_ELEMENTS} per-element values, got shape {v.shape}")
    return v


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=float)
    array.setflags(write=False)
    return array


# ---------------------------------------------------------------------------- correlation


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of two samples of size ``n`` (NaN when an input is constant)."""

    pearson: float
    spearman: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return _plain({"pearson": self.pearson, "spearman": self.spearman, "n": self.n})


def correlation(x: Any, y: Any) -> Correlation:
    """Pearson and Spearman correlation of ``x`` and ``y`` (scipy.stats).

    Needs two finite vectors of the same length ``n >= 3`` (ValueError otherwise).
    A constant input has no defined correlation: both coefficients are NaN (scipy's
    ``ConstantInputWarning`` is silenced).
    """
    xv = np.asarray(x, dtype=float)
    if xv.ndim != 1:
        raise ValueError(f"x must be a vector, got shape {xv.shape}")
    yv = _vector(y, xv.shape[0], "y")
    if not np.isfinite(xv).all():
        raise ValueError("x must be finite")
    n = int(xv.shape[0])
    if n < 3:
        raise ValueError(f"a correlation needs at least 3 pairs, got {n}")
    if np.ptp(xv) == 0 or np.ptp(yv) == 0:
        return Correlation(pearson=math.nan, spearman=math.nan, n=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        pearson = float(stats.pearsonr(xv, yv).statistic)
        spearman = float(stats.spearmanr(xv, yv).statistic)
    return Correlation(pearson=pearson, spearman=spearman, n=n)


@dataclass(frozen=True)
class CrossFidelityCorrelation:
    """Correlation of two fidelities' energies, raw and after each fidelity's AtomRef is subtracted (eV/atom)."""

    raw: Correlation
    referenced: Correlation
    n: int
    source_referenced: np.ndarray = field(repr=False, compare=False)  # (n,) E_source − c·E_elem,source
    target_referenced: np.ndarray = field(repr=False, compare=False)  # (n,) E_target − c·E_elem,target

    @property
    def referenced_difference(self) -> np.ndarray:
        """``target_referenced − source_referenced`` (eV/atom): what fine-tuning has to learn."""
        return self.target_referenced - self.source_referenced

    def to_dict(self) -> dict[str, Any]:
        return _plain(
            {
                "raw": self.raw.to_dict(),
                "referenced": self.referenced.to_dict(),
                "n": self.n,
                "source_referenced": self.source_referenced,
                "target_referenced": self.target_referenced,
            }
        )


def referenced_correlation(
    composition: Any, source: Any, target: Any, source_atomref: Any, target_atomref: Any
) -> CrossFidelityCorrelation:
    """Correlate two fidelities' energies per atom (eV/atom) raw and referenced.

    ``composition``: (n, 94) fractions of the shared materials; ``source``,
    ``target``: (n,) energies per atom; ``*_atomref``: (94,) each fidelity's own
    AtomRef values (eV/atom). Referenced energy = ``E − composition @ atomref``
    (:func:`crossfid.referencing.atomref.reference_energies`; raises ValueError if
    a material contains an element whose AtomRef value is NaN).
    """
    c = _composition(composition)
    n = c.shape[0]
    src = _vector(source, n, "source")
    tgt = _vector(target, n, "target")
    src_ref = src - reference_energies(c, _values94(source_atomref, "source_atomref"))
    tgt_ref = tgt - reference_energies(c, _values94(target_atomref, "target_atomref"))
    return CrossFidelityCorrelation(
        raw=correlation(src, tgt),
        referenced=correlation(src_ref, tgt_ref),
        n=n,
        source_referenced=_readonly(src_ref),
        target_referenced=_readonly(tgt_ref),
    )


# ---------------------------------------------------------------------------- shifts


@dataclass(frozen=True)
class ShiftSummary:
    """Distribution of the shift ``target − source`` (eV/atom) over all materials; std is ddof=0."""

    n: int
    mean: float
    std: float
    median: float
    min: float
    max: float
    mean_abs: float
    p05: float
    p25: float
    p75: float
    p95: float

    def to_dict(self) -> dict[str, Any]:
        return _plain({f: getattr(self, f) for f in self.__dataclass_fields__})


@dataclass(frozen=True)
class ElementShift:
    """Shift ``target − source`` (eV/atom) over the materials containing one element; std is ddof=0."""

    symbol: str
    n: int
    mean: float
    std: float
    median: float
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return _plain({f: getattr(self, f) for f in self.__dataclass_fields__})


@dataclass(frozen=True)
class ShiftStatistics:
    """Shift ``target − source`` (eV/atom): overall and per element present, elements sorted by mean shift."""

    overall: ShiftSummary
    by_element: tuple[ElementShift, ...]
    min_count: int

    def element(self, symbol: str) -> ElementShift:
        """The statistics of one element (KeyError if it has fewer than ``min_count`` materials)."""
        for item in self.by_element:
            if item.symbol == symbol:
                return item
        raise KeyError(symbol)

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "by_element": [item.to_dict() for item in self.by_element],
            "min_count": self.min_count,
        }


def shift_statistics(composition: Any, source: Any, target: Any, *, min_count: int = 1) -> ShiftStatistics:
    """Statistics of the per-material shift ``target − source`` (eV/atom).

    Overall: n, mean, population std, median, min, max, mean |shift| and the 5/25/75/95th
    percentiles. By element: every element present (fraction > 0) in at least
    ``min_count`` materials, with n, mean, std, median, min, max over those
    materials; sorted by mean shift (ties by atomic number).
    """
    c = _composition(composition)
    n = c.shape[0]
    if n == 0:
        raise ValueError("shift statistics need at least one material")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    shift = _vector(target, n, "target") - _vector(source, n, "source")
    p05, p25, p75, p95 = np.percentile(shift, [5, 25, 75, 95])
    overall = ShiftSummary(
        n=n,
        mean=float(shift.mean()),
        std=float(shift.std()),
        median=float(np.median(shift)),
        min=float(shift.min()),
        max=float(shift.max()),
        mean_abs=float(np.abs(shift).mean()),
        p05=float(p05),
        p25=float(p25),
        p75=float(p75),
        p95=float(p95),
    )
    per_element: list[ElementShift] = []
    for j in np.flatnonzero((c > 0).sum(axis=0) >= min_count):
        s = shift[c[:, j] > 0]
        per_element.append(
            ElementShift(
                symbol=SYMBOLS[j],
                n=int(s.size),
                mean=float(s.mean()),
                std=float(s.std()),
                median=float(np.median(s)),
                min=float(s.min()),
                max=float(s.max()),
            )
        )
    per_element.sort(key=lambda item: (item.mean, column_of(item.symbol)))
    return ShiftStatistics(overall=overall, by_element=tuple(per_element), min_count=int(min_count))


# ---------------------------------------------------------------------------- element importance


@dataclass(frozen=True)
class ElementImportance:
    """Decision-tree importance of each element present for the difference between fidelities.

    ``raw``: ``feature_importances_`` by symbol (sums to 1, or all 0 when the tree
    has no split). ``normalised``: raw / ``atom_counts`` of the element, rescaled to
    sum to 1 (all 0 stays 0). ``r2``: R² of the tree on its training data (NaN when
    the difference is constant). Symbols in atomic-number order.
    """

    symbols: tuple[str, ...]
    raw: dict[str, float]
    normalised: dict[str, float]
    atom_counts: dict[str, float]
    r2: float
    n: int
    depth: int
    n_leaves: int
    parameters: dict[str, Any]

    def ranking(self) -> list[tuple[str, float]]:
        """``(symbol, normalised importance)`` of the elements with non-zero importance, most important first."""
        order = sorted(
            (s for s in self.symbols if self.raw[s] > 0),
            key=lambda s: (-self.normalised[s], -self.raw[s], column_of(s)),
        )
        return [(s, self.normalised[s]) for s in order]

    def to_dict(self) -> dict[str, Any]:
        return _plain(
            {
                "symbols": list(self.symbols),
                "raw": self.raw,
                "normalised": self.normalised,
                "atom_counts": self.atom_counts,
                "ranking": [[s, v] for s, v in self.ranking()],
                "r2": self.r2,
                "n": self.n,
                "depth": self.depth,
                "n_leaves": self.n_leaves,
                "parameters": self.parameters,
            }
        )


def _atom_counts(
    composition: np.ndarray, present: np.ndarray, atom_counts: np.ndarray | Mapping[str, float] | None
) -> np.ndarray:
    """Atoms of each present element in the data (see :func:`element_importance`)."""
    symbols = [SYMBOLS[j] for j in present]
    if atom_counts is None:
        counts = (composition[:, present] > 0).sum(axis=0).astype(float)
    elif isinstance(atom_counts, Mapping):
        missing = [s for s in symbols if s not in atom_counts]
        if missing:
            raise ValueError(f"atom_counts has no count for {', '.join(missing)}")
        counts = np.array([float(atom_counts[s]) for s in symbols])
    else:
        array = np.asarray(atom_counts, dtype=float)
        if array.shape != composition.shape:
            raise ValueError(f"atom_counts must have the composition's shape {composition.shape}, got {array.shape}")
        counts = array[:, present].sum(axis=0)
    if not np.isfinite(counts).all() or (counts <= 0).any():
        bad = [s for s, k in zip(symbols, counts, strict=True) if not (np.isfinite(k) and k > 0)]
        raise ValueError(f"elements present in the data need a positive atom count: {', '.join(bad)}")
    return counts


def element_importance(
    composition: Any,
    difference: Any,
    *,
    atom_counts: np.ndarray | Mapping[str, float] | None = None,
    random_state: int | None = 0,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
) -> ElementImportance:
    """Rank elements by how much they drive the difference between fidelities.

    Fits ``sklearn.tree.DecisionTreeRegressor`` on the composition fractions of
    the elements present (``composition`` (n, 94), columns mapped back to symbols)
    to predict ``difference`` (n,), e.g. the formation-energy difference
    GGA/GGA+U − r2SCAN (eV/atom).

    Normalisation: an element's importance is divided by its atom count in the
    data (so ubiquitous elements such as O are not favoured merely by frequency),
    then the values are rescaled to sum to 1. ``atom_counts`` is an (n, 94) array
    of atoms per structure (summed over rows), or a mapping symbol → total atoms;
    ``None`` counts the materials containing the element.

    An element the tree never splits on has importance exactly 0; so an element
    whose presence does not change the difference gets 0 unless its fractions
    separate the data exactly as well as a relevant element at some node (a genuine
    tie, broken by ``random_state``). A constant ``difference`` gives a tree with no
    split: all importances 0 and ``r2`` NaN.
    """
    from sklearn.tree import DecisionTreeRegressor

    c = _composition(composition)
    n = c.shape[0]
    if n == 0:
        raise ValueError("element importance needs at least one material")
    y = _vector(difference, n, "difference")
    present = np.flatnonzero(c.any(axis=0))
    symbols = tuple(SYMBOLS[j] for j in present)
    counts = _atom_counts(c, present, atom_counts)
    parameters = {"random_state": random_state, "max_depth": max_depth, "min_samples_leaf": min_samples_leaf}

    x = c[:, present]
    tree = DecisionTreeRegressor(**parameters).fit(x, y)
    constant = bool(np.ptp(y) == 0)
    if constant:
        raw = np.zeros(len(symbols))
        r2 = math.nan
    else:
        raw = np.nan_to_num(np.asarray(tree.feature_importances_, dtype=float), nan=0.0)
        r2 = float(tree.score(x, y))
    per_atom = np.where(raw > 0, raw / counts, 0.0)
    total = per_atom.sum()
    normalised = per_atom / total if total > 0 else np.zeros_like(per_atom)
    return ElementImportance(
        symbols=symbols,
        raw={s: float(v) for s, v in zip(symbols, raw, strict=True)},
        normalised={s: float(v) for s, v in zip(symbols, normalised, strict=True)},
        atom_counts={s: float(v) for s, v in zip(symbols, counts, strict=True)},
        r2=r2,
        n=n,
        depth=int(tree.get_depth()),
        n_leaves=int(tree.get_n_leaves()),
        parameters=parameters,
    )


# ---------------------------------------------------------------------------- formation energies


def formation_energies(composition: Any, energy_per_atom: Any, elemental_energies: Any) -> np.ndarray:
    """Formation energy per atom ``E_f = E − composition @ μ`` (eV/atom), shape (n,).

    ``elemental_energies`` μ (94,) holds elemental reference energies (eV/atom),
    NaN where unknown; a material containing an element with unknown μ (or with a
    NaN energy) gets NaN.
    """
    c = _composition(composition)
    e = _vector(energy_per_atom, c.shape[0], "energy_per_atom", finite=False)
    mu = _values94(elemental_energies, "elemental_energies")
    unknown = np.isnan(mu)
    result = e - c[:, ~unknown] @ mu[~unknown]
    result[(c[:, unknown] > 0).any(axis=1)] = np.nan
    return result


def elemental_references(composition: Any, energy_per_atom: Any) -> np.ndarray:
    """Elemental reference energies μ (94,) in eV/atom from the data.

    μ_el is the lowest energy per atom among the single-element rows of that
    element (its ground-state polymorph in the data); NaN where the data has no
    finite single-element energy of the element.
    """
    c = _composition(composition)
    e = _vector(energy_per_atom, c.shape[0], "energy_per_atom", finite=False)
    single = ((c > 0).sum(axis=1) == 1) & np.isfinite(e)
    mu = np.full(N_ELEMENTS, np.inf)
    np.minimum.at(mu, np.argmax(c[single], axis=1), e[single])
    mu[np.isinf(mu)] = np.nan
    return mu


@dataclass(frozen=True)
class ElementalFormation:
    """Formation energies (eV/atom) against true elemental reference entries only.

    ``formation``: (n,) ``E − composition @ μ``, NaN for a material left out; ``lacking``: per
    material, its elements without an elemental reference (empty when it was kept);
    ``references``: μ by symbol (eV/atom) of the elements that have one.
    """

    formation: np.ndarray = field(repr=False)
    lacking: tuple[tuple[str, ...], ...]
    references: dict[str, float]

    @property
    def kept(self) -> np.ndarray:
        """(n,) True where the material has a reference for every element (and a finite formation energy)."""
        return np.isfinite(self.formation)

    @property
    def n_left_out(self) -> int:
        return int((~self.kept).sum())

    def left_out_by_element(self) -> dict[str, int]:
        """Element → materials left out because it has no elemental reference, in atomic-number order."""
        counts: dict[str, int] = {}
        for symbols in self.lacking:
            for symbol in symbols:
                counts[symbol] = counts.get(symbol, 0) + 1
        return {s: counts[s] for s in sorted(counts, key=_element_order)}


def formation_against_elements(
    composition: Any, energy_per_atom: Any, elemental_composition: Any, elemental_energy: Any
) -> ElementalFormation:
    """Formation energies (eV/atom) of materials against elemental references from ``elemental_*`` data.

    μ of an element is the lowest finite energy per atom among the single-element rows of the
    elemental data (:func:`elemental_references`; a ground-state solid or a diatomic gas, as
    stored). A material with an element that has no such row is left out (NaN, and its elements
    are listed in ``lacking``): no fitted constant such as an AtomRef value ever stands in for a
    missing reference state (they are not ground-state energies: GGA O −8.39 in CHGNet's AtomRef
    against about −4.9 eV/atom for O₂).
    """
    c = _composition(composition)
    e = _vector(energy_per_atom, c.shape[0], "energy_per_atom", finite=False)
    elemental_c = np.asarray(elemental_composition, dtype=float)
    mu = elemental_references(elemental_c, elemental_energy) if elemental_c.size else np.full(N_ELEMENTS, np.nan)
    formation = formation_energies(c, e, mu)
    absent = np.isnan(mu)
    lacking = tuple(tuple(SYMBOLS[j] for j in np.flatnonzero((row > 0) & absent)) for row in c)
    references = {SYMBOLS[j]: float(mu[j]) for j in np.flatnonzero(~absent)}
    return ElementalFormation(formation=_readonly(formation), lacking=lacking, references=references)


# ---------------------------------------------------------------------------- transferability


def _energy_text(value: float) -> str:
    """An energy per atom for prose: eV/atom above 0.1 eV, meV/atom below."""
    if not math.isfinite(value):
        return "an undefined amount"
    magnitude = abs(value)
    if magnitude >= 1.0:
        return f"{value:.1f} eV/atom"
    if magnitude >= 0.1:
        return f"{value:.2f} eV/atom"
    if magnitude >= 0.01:
        return f"{value * 1000:.0f} meV/atom"
    return f"{value * 1000:.1f} meV/atom"


def _ratio_text(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "an undefined multiple of"
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def _corr_text(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "undefined (constant energies)"


def _element_order(symbol: str) -> tuple[int, str]:
    try:
        return column_of(symbol), symbol
    except ValueError:
        return N_ELEMENTS, symbol


@dataclass(frozen=True)
class TransferabilityReport:
    """Can a model trained on ``source`` energies be fine-tuned on ``target`` ones as they are?

    Energies eV/atom. ``mean_abs_shift``: mean |target − source| of raw energies;
    ``referenced_std`` / ``referenced_mae``: spread of the referenced difference
    ``target_ref − source_ref`` about its mean; ratios are relative to
    ``model_accuracy``. ``needs_referencing`` follows the rule of
    :func:`transferability_report`; ``reasons`` says which criterion fired.
    """

    source_label: str
    target_label: str
    n: int
    raw_pearson: float
    raw_spearman: float
    referenced_pearson: float
    referenced_spearman: float
    mean_abs_shift: float
    shift_to_accuracy: float
    referenced_std: float
    referenced_mae: float
    referenced_mae_to_accuracy: float
    model_accuracy: float
    correlation_margin: float
    absent_elements: tuple[str, ...]
    needs_referencing: bool
    reasons: tuple[str, ...]
    verdict: str

    def lines(self) -> list[str]:
        """Human-readable summary, one item per line."""
        acc = self.model_accuracy
        out = [
            f"Transferability {self.source_label} → {self.target_label} ({self.n} shared materials)",
            f"  Pearson raw / referenced:   {_corr_text(self.raw_pearson)} / {_corr_text(self.referenced_pearson)}",
            f"  Spearman raw / referenced:  {_corr_text(self.raw_spearman)} / {_corr_text(self.referenced_spearman)}",
            f"  mean |shift|:               {_energy_text(self.mean_abs_shift)}"
            f" ({_ratio_text(self.shift_to_accuracy)} the {_energy_text(acc)} model accuracy)",
            f"  referenced difference:      std {_energy_text(self.referenced_std)},"
            f" MAE {_energy_text(self.referenced_mae)} about its mean",
            f"  elements absent from {self.source_label}: "
            + (", ".join(self.absent_elements) if self.absent_elements else "none"),
            f"  needs referencing:          {'yes' if self.needs_referencing else 'no'}"
            + (f" ({'; '.join(self.reasons)})" if self.reasons else ""),
            "",
            self.verdict,
        ]
        return out

    def to_text(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return _plain({f: getattr(self, f) for f in self.__dataclass_fields__})


def transferability_report(
    *,
    source_label: str,
    target_label: str,
    correlation: CrossFidelityCorrelation,
    shifts: ShiftStatistics,
    source_elements: set[str],
    target_elements: set[str],
    model_accuracy: float = MODEL_ACCURACY,
    correlation_margin: float = CORRELATION_MARGIN,
) -> TransferabilityReport:
    """Condense the cross-fidelity analysis into a decision and a verdict for a materials scientist.

    ``correlation`` (:func:`referenced_correlation`) and ``shifts``
    (:func:`shift_statistics` of the raw energies) must describe the same
    materials. ``model_accuracy`` (eV/atom) is the accuracy of the foundation
    potential, ~30 meV/atom.

    Rule: ``needs_referencing`` is True when either

    * the mean |shift| of raw energies exceeds ``model_accuracy`` — the model would
      otherwise spend its fine-tuning learning a gauge offset larger than its own
      error (even a constant offset is best absorbed by refitting the AtomRef), or
    * subtracting each fidelity's AtomRef raises the Pearson correlation by more
      than ``correlation_margin`` — the shift is composition dependent, i.e. a
      per-element reference effect the AtomRef, not the GNN, should carry.

    A NaN correlation (constant energies) counts as no gain.
    """
    if model_accuracy <= 0 or not math.isfinite(model_accuracy):
        raise ValueError(f"model_accuracy must be a positive energy per atom, got {model_accuracy}")
    if shifts.overall.n != correlation.n:
        raise ValueError(
            f"shifts describe {shifts.overall.n} materials but the correlation {correlation.n}: use the same materials"
        )
    raw, ref = correlation.raw, correlation.referenced
    mean_abs = shifts.overall.mean_abs
    ratio = mean_abs / model_accuracy
    diff = correlation.referenced_difference
    centred = diff - diff.mean()
    ref_std = float(centred.std())
    ref_mae = float(np.abs(centred).mean())
    gain = ref.pearson - raw.pearson
    absent = tuple(sorted(set(target_elements) - set(source_elements), key=_element_order))

    reasons: list[str] = []
    if mean_abs > model_accuracy:
        reasons.append(
            f"mean |shift| {_energy_text(mean_abs)} exceeds the {_energy_text(model_accuracy)} model accuracy"
        )
    if math.isfinite(gain) and gain > correlation_margin:
        reasons.append(f"referencing raises the Pearson correlation by {gain:.2f} (> {correlation_margin:.2f})")
    needs = bool(reasons)

    src, tgt = source_label, target_label
    acc = _energy_text(model_accuracy)
    sentences = [
        f"Raw total energies of {src} and {tgt} differ by {_energy_text(mean_abs)} on average, "
        f"{_ratio_text(ratio)} the ~{acc} accuracy of a foundation potential; their Pearson correlation is "
        f"{_corr_text(raw.pearson)} raw and {_corr_text(ref.pearson)} after each fidelity's AtomRef is subtracted "
        f"({correlation.n} shared materials)."
    ]
    if needs:
        sentences.append(
            f"Refit the AtomRef on the {tgt} training data and swap it in, frozen, before fine-tuning "
            f"(method 4), so the network learns only the physical {src}→{tgt} difference instead of a gauge shift."
        )
    else:
        sentences.append(
            f"The shift is within the model accuracy and referencing gains little correlation, so fine-tuning on "
            f"{tgt} can keep the existing AtomRef."
        )
    if ref_mae > model_accuracy:
        tail = (
            f"above the ~{acc} model accuracy, so beyond the per-element reference the fidelities differ in "
            f"physics that fine-tuning has to learn."
        )
    else:
        tail = f"within the ~{acc} model accuracy, so the fidelities differ mostly by a per-element reference."
    sentences.append(
        f"After referencing, the remaining {tgt} − {src} difference scatters by {_energy_text(ref_std)} "
        f"(MAE {_energy_text(ref_mae)} about its mean), {tail}"
    )
    if absent:
        listed = ", ".join(absent)
        sentences.append(
            f"{len(absent)} element{'s' if len(absent) != 1 else ''} of the {tgt} data never "
            f"occur{'s' if len(absent) == 1 else ''} in the {src} data ({listed}): the pretrained model has not "
            f"seen {'them' if len(absent) != 1 else 'it'}, so expect larger errors there."
        )

    return TransferabilityReport(
        source_label=src,
        target_label=tgt,
        n=correlation.n,
        raw_pearson=raw.pearson,
        raw_spearman=raw.spearman,
        referenced_pearson=ref.pearson,
        referenced_spearman=ref.spearman,
        mean_abs_shift=mean_abs,
        shift_to_accuracy=ratio,
        referenced_std=ref_std,
        referenced_mae=ref_mae,
        referenced_mae_to_accuracy=ref_mae / model_accuracy,
        model_accuracy=model_accuracy,
        correlation_margin=correlation_margin,
        absent_elements=absent,
        needs_referencing=needs,
        reasons=tuple(reasons),
        verdict=" ".join(sentences),
    )
