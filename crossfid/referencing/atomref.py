"""AtomRef: per-element reference energies fitted by least squares (Eq. 2 of the study), and their application.

Energy per atom is split as ``E = c · E_elem + E_GNN`` where ``c`` is the
composition-fraction row (94 elements, :mod:`crossfid.referencing.composition`)
and ``E_elem`` the per-element reference energies (eV/atom). This module holds
the one definition of the fit and of the referenced energy ``E − c · E_elem``;
training and analysis both call it.

The fit
    ``min_x ‖W^½ (A x − y)‖²`` over the columns of the elements that occur in the
    data, solved with :func:`numpy.linalg.lstsq` (SVD, no normal equations, so an
    ill-conditioned or rank-deficient ``A`` gives the minimum-norm solution rather
    than garbage). ``W`` is the identity (``weighting="frame"``) or gives every
    material the same total weight (``weighting="material"``: each frame weighs
    ``1 / frames of its material``), so long trajectories do not dominate.

Elements the data cannot determine
    * *absent* (never in the data): their value is NaN, never a silent 0; applying
      the AtomRef to a composition that contains one raises :class:`AtomRefError`.
      ``fill`` may supply values for them from another AtomRef (e.g. chgnet's
      shipped one for the same fidelity); the filled elements are listed.
    * *unidentifiable* (present, but only in fixed ratios with others, e.g. Na and
      Cl when NaCl is the only compound of either): the data fixes only their
      combination. The fit returns the solution closest to ``prior`` (minimum norm
      of ``x − prior``; ``prior`` defaults to 0) and lists them; predictions on
      compositions spanned by the data are exact either way.
    * *poorly determined* (present in few materials, or always in small fractions):
      least squares alone lets them swing by eV (on 34 demo materials, Ti came out
      at −23.4 eV/atom against −14.5 in the AtomRef chgnet fitted on MP's r2SCAN
      data). ``prior_weight`` λ > 0 adds, for every fitted element, the row
      ``√λ (x_j − prior_j) = 0``: the prior counts as λ rows of the pure element
      (frames with frame weighting, materials with material weighting). A
      well-sampled element moves by O(λ / its rows) from the least-squares value;
      with MP-sized data and λ = 100 the change is below the fit's noise.
      Rank, condition number and unidentifiable elements describe the data alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from crossfid.errors import InputError
from crossfid.hashing import atomref_values_hash
from crossfid.referencing.composition import N_ELEMENTS, SYMBOLS

Weighting = Literal["frame", "material"]
SOLVER = "numpy.linalg.lstsq (SVD, minimum norm of x - prior; optional ridge towards the prior)"
#: the prior's weight (rows of the pure element) of the fits made for training when no AtomRef is given
DEFAULT_PRIOR_WEIGHT = 100.0

#: a nullspace component larger than this (relative) marks an element as unidentifiable
_NULLSPACE_TOL = 1e-8


class AtomRefError(InputError):
    """An AtomRef cannot be fitted or applied as asked (bad shapes, absent elements, ...)."""


@dataclass(frozen=True)
class AtomRefFit:
    """A fitted AtomRef with its statistics (energies eV/atom)."""

    values: np.ndarray  # (94,) eV/atom; NaN for absent elements that were not filled
    elements: tuple[str, ...]  # elements present in the data (fitted)
    absent: tuple[str, ...]  # elements not in the data
    unidentifiable: tuple[str, ...]  # present, but not separable from others by the data
    filled: tuple[str, ...]  # absent elements whose value came from ``fill``
    weighting: Weighting
    n_rows: int
    n_materials: int
    rank: int
    mae: float  # mean |residual| over rows, eV/atom
    rmse: float  # eV/atom
    max_abs_error: float  # eV/atom
    weighted_mae: float  # mean |residual| with the fit's weights, eV/atom
    condition_number: float  # of the weighted design matrix over its identified subspace
    solver: str = SOLVER
    per_element_mae: dict[str, float] = field(default_factory=dict)  # MAE of rows containing the element

    @property
    def values_hash(self) -> str:
        return atomref_values_hash(self.values)

    def statistics(self) -> dict[str, Any]:
        """JSON-ready fit statistics (eV/atom)."""
        return {
            "n_rows": self.n_rows,
            "n_materials": self.n_materials,
            "rank": self.rank,
            "mae": self.mae,
            "rmse": self.rmse,
            "max_abs_error": self.max_abs_error,
            "weighted_mae": self.weighted_mae,
            "condition_number": _finite_or_none(self.condition_number),
            "per_element_mae": self.per_element_mae,
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def values_to_list(values: np.ndarray) -> list[float | None]:
    """The 94 values for storage: NaN becomes None (SQL NULL)."""
    return [None if not np.isfinite(v) else float(v) for v in _as_values(values)]


def values_from_list(values: Sequence[float | None]) -> np.ndarray:
    """The 94 values from storage: None becomes NaN."""
    return _as_values([np.nan if v is None else float(v) for v in values])


def _as_values(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.shape != (N_ELEMENTS,):
        raise AtomRefError(f"an AtomRef has {N_ELEMENTS} values, got {array.size}")
    return array


def _as_composition(composition: Any) -> np.ndarray:
    matrix = np.asarray(composition, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != N_ELEMENTS:
        raise AtomRefError(f"a composition matrix has shape (n, {N_ELEMENTS}), got {matrix.shape}")
    return matrix


def material_weights(groups: Sequence[Any]) -> np.ndarray:
    """Row weights giving every group (material) the same total weight: 1 / rows of the group."""
    labels = np.asarray([str(g) for g in groups])
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def fit_atomref(
    composition: Any,
    energy_per_atom: Any,
    *,
    groups: Sequence[Any] | None = None,
    weighting: Weighting = "frame",
    prior: Any | None = None,
    prior_weight: float = 0.0,
    fill: Any | None = None,
) -> AtomRefFit:
    """Fit per-element reference energies to energies per atom (eV/atom) by weighted least squares.

    ``composition``: (n, 94) composition fractions; ``energy_per_atom``: (n,) eV/atom;
    ``groups``: the material of each row (required for ``weighting="material"``,
    and used to count materials); ``prior``: (94,) values that unidentifiable
    combinations are pulled towards (NaN entries count as 0); ``prior_weight``:
    rows of the pure element the prior counts as for every fitted element (0: it
    only settles unidentifiable combinations; needs ``prior``); ``fill``: (94,)
    values given to absent elements (NaN entries stay NaN).
    """
    a = _as_composition(composition)
    y = np.asarray(energy_per_atom, dtype=float).ravel()
    if a.shape[0] != y.shape[0]:
        raise AtomRefError(f"{a.shape[0]} compositions but {y.shape[0]} energies")
    if a.shape[0] == 0:
        raise AtomRefError("cannot fit an AtomRef to no data")
    if not (np.isfinite(a).all() and np.isfinite(y).all()):
        raise AtomRefError("compositions and energies must be finite")
    if groups is not None and len(groups) != a.shape[0]:
        raise AtomRefError(f"{a.shape[0]} rows but {len(groups)} group labels")
    if not (np.isfinite(prior_weight) and prior_weight >= 0):
        raise AtomRefError(f"prior_weight must be a finite number >= 0, got {prior_weight}")
    if prior_weight and prior is None:
        raise AtomRefError("prior_weight needs a prior to pull towards")
    if weighting == "material":
        if groups is None:
            raise AtomRefError("weighting='material' needs the material of every row (groups)")
        w = material_weights(groups)
    elif weighting == "frame":
        w = np.ones(a.shape[0])
    else:
        raise AtomRefError(f"unknown weighting {weighting!r} (frame or material)")

    present = a.any(axis=0)
    cols = np.flatnonzero(present)
    x0 = np.zeros(N_ELEMENTS) if prior is None else np.nan_to_num(_as_values(prior), nan=0.0)
    sw = np.sqrt(w)[:, None]
    design = a[:, cols] * sw
    rhs = (y - a[:, cols] @ x0[cols]) * sw[:, 0]
    delta, _, rank, singular = np.linalg.lstsq(design, rhs, rcond=None)
    if prior_weight:
        ridge = np.sqrt(prior_weight) * np.eye(cols.size)
        delta = np.linalg.lstsq(np.vstack([design, ridge]), np.concatenate([rhs, np.zeros(cols.size)]), rcond=None)[0]

    values = np.full(N_ELEMENTS, np.nan)
    values[cols] = x0[cols] + delta
    unidentifiable = _unidentifiable(design, rank, cols)
    filled: list[str] = []
    if fill is not None:
        fill_values = _as_values(fill)
        for j in np.flatnonzero(~present & np.isfinite(fill_values)):
            values[j] = fill_values[j]
            filled.append(SYMBOLS[j])

    residual = y - a[:, cols] @ values[cols]
    abs_res = np.abs(residual)
    kept = singular[:rank]
    condition = float(kept[0] / kept[-1]) if rank else float("inf")
    per_element = {SYMBOLS[j]: float(abs_res[a[:, j] > 0].mean()) for j in cols}
    return AtomRefFit(
        values=values,
        elements=tuple(SYMBOLS[j] for j in cols),
        absent=tuple(SYMBOLS[j] for j in np.flatnonzero(~present)),
        unidentifiable=unidentifiable,
        filled=tuple(filled),
        weighting=weighting,
        n_rows=int(a.shape[0]),
        n_materials=int(len(set(map(str, groups)))) if groups is not None else int(a.shape[0]),
        rank=int(rank),
        mae=float(abs_res.mean()),
        rmse=float(np.sqrt(np.mean(residual**2))),
        max_abs_error=float(abs_res.max()),
        weighted_mae=float(np.sum(w * abs_res) / np.sum(w)),
        condition_number=condition,
        per_element_mae=per_element,
    )


def _unidentifiable(design: np.ndarray, rank: int, cols: np.ndarray) -> tuple[str, ...]:
    """Elements with a component in the nullspace of the design matrix (their value is not fixed by the data)."""
    if rank >= design.shape[1]:
        return ()
    _, _, vt = np.linalg.svd(design, full_matrices=True)
    null = vt[rank:]
    weight = np.linalg.norm(null, axis=0)
    return tuple(SYMBOLS[cols[k]] for k in np.flatnonzero(weight > _NULLSPACE_TOL))


def reference_energies(composition: Any, values: Any) -> np.ndarray:
    """The AtomRef part ``c · E_elem`` of each composition's energy (eV/atom).

    Raises :class:`AtomRefError` naming the elements when a composition contains
    an element the AtomRef has no value for (NaN), instead of treating it as 0.
    """
    c = _as_composition(composition)
    v = _as_values(values)
    missing = np.isnan(v)
    used_missing = (c[:, missing] > 0).any(axis=0)
    if used_missing.any():
        symbols = [SYMBOLS[j] for j in np.flatnonzero(missing)[used_missing]]
        raise AtomRefError(f"the AtomRef has no value for {', '.join(symbols)} (absent from its fit data)")
    return c[:, ~missing] @ v[~missing]


def referenced_energies(energy_per_atom: Any, composition: Any, values: Any) -> np.ndarray:
    """Referenced energy per atom ``E − c · E_elem`` (eV/atom): what the GNN has to learn."""
    e = np.asarray(energy_per_atom, dtype=float).ravel()
    ref = reference_energies(composition, values)
    if ref.shape != e.shape:
        raise AtomRefError(f"{ref.shape[0]} compositions but {e.shape[0]} energies")
    return e - ref


def values_by_element(values: Any) -> dict[str, float | None]:
    """``{"H": -3.44, ..., "Pu": None}``: the values keyed by symbol (None where absent)."""
    return dict(zip(SYMBOLS, values_to_list(values), strict=True))
