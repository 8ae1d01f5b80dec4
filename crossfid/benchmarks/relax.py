"""One structural relaxation with an interatomic potential, never raising for a bad structure.

The study's relaxation protocol (``SCIENCE.md``, "Reported results"): FIRE with
ASE's ``FrechetCellFilter`` (cell and positions), ``fmax`` 0.03 eV/Å, through
:meth:`crossfid.potentials.base.Potential.relax`; this module judges the outcome.
With the cell filter, ``fmax`` also bounds the virial per atom, so residual
stresses of 0.1-0.4 GPa remain at convergence (``CHGNET_NOTES.md``, pitfall 9).

Outcomes (:class:`RelaxResult`):

* ``ok`` — finished with finite energy and positions and no isolated atom;
  ``converged`` says whether the force criterion was met within ``steps``
  (not converging is *not* a failure);
* ``failure == "diverged"`` — non-finite input, energy, cell or positions, or an
  exception inside the optimiser (its text in ``message``);
* ``failure == "isolated atom"`` — an atom ends more than ``max_nn_distance``
  (6 Å in the study) from its nearest neighbour: the study's failed relaxation.

Lengths Å, energies eV/atom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from crossfid.potentials.base import Potential

#: :attr:`RelaxResult.failure` values
FAILURE_DIVERGED = "diverged"
FAILURE_ISOLATED = "isolated atom"

#: the study's failed-relaxation criterion (Å)
MAX_NN_DISTANCE = 6.0


def _structure(structure: Any):
    """A pymatgen Structure from a Structure or its ``as_dict()``."""
    from pymatgen.core import Structure

    if isinstance(structure, Structure):
        return structure
    if isinstance(structure, Mapping):
        return Structure.from_dict(dict(structure))
    raise TypeError(f"expected a pymatgen Structure or its as_dict(), got {type(structure).__name__}")


def _finite_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class RelaxResult:
    """Outcome of :func:`relax_structure`.

    ``energy_per_atom``: final model energy (eV/atom), None when diverged.
    ``structure``: final ``Structure.as_dict()`` (with a ``magmom`` site property), None when diverged.
    ``n_steps``: optimiser steps taken (0 when the optimiser raised or never ran).
    ``max_nn_distance``: largest nearest-neighbour distance over the atoms of the final structure (Å).
    ``failure``: None, ``"diverged"`` or ``"isolated atom"``; ``message``: details of a failure.
    """

    ok: bool
    energy_per_atom: float | None
    structure: dict | None
    n_steps: int
    converged: bool
    max_nn_distance: float | None
    failure: str | None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain Python (non-finite floats become None)."""
        return {
            "ok": self.ok,
            "energy_per_atom": _finite_float(self.energy_per_atom),
            "structure": self.structure,
            "n_steps": int(self.n_steps),
            "converged": self.converged,
            "max_nn_distance": _finite_float(self.max_nn_distance),
            "failure": self.failure,
            "message": self.message,
        }


def _diverged(message: str, n_steps: int = 0) -> RelaxResult:
    return RelaxResult(
        ok=False,
        energy_per_atom=None,
        structure=None,
        n_steps=n_steps,
        converged=False,
        max_nn_distance=None,
        failure=FAILURE_DIVERGED,
        message=message,
    )


def _is_finite_structure(structure) -> bool:
    return bool(np.isfinite(structure.lattice.matrix).all() and np.isfinite(structure.frac_coords).all())


def nearest_neighbour_distances(structure: Any, radius: float | None = None) -> np.ndarray:
    """Distance (Å) from each atom to its nearest neighbour, periodic images included; shape (n_atoms,).

    ``radius`` given: neighbours are searched within it (pymatgen's neighbour list)
    and an atom with none gets ``inf`` (i.e. "more than ``radius``"). ``radius``
    None: exact distances — atoms with no neighbour within 6 Å are searched again
    within the shortest lattice-vector length, where at least their own periodic
    image lies. Raises ValueError for non-finite lattices or coordinates.
    """
    s = _structure(structure)
    if not _is_finite_structure(s):
        raise ValueError("the structure has a non-finite lattice or coordinates")
    n = len(s)
    if n == 0:
        return np.zeros(0)
    r = float(MAX_NN_DISTANCE if radius is None else radius)
    if not r > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    nearest = np.full(n, np.inf)
    centres, _, _, distances = s.get_neighbor_list(r)
    keep = distances > 1e-8  # an atom is not its own neighbour
    np.minimum.at(nearest, centres[keep], distances[keep])
    if radius is None:
        wider = float(np.min(s.lattice.abc)) * (1 + 1e-6) + 1e-6
        for i in np.flatnonzero(~np.isfinite(nearest)):
            d = [nb.nn_distance for nb in s.get_neighbors(s[int(i)], wider) if nb.nn_distance > 1e-8]
            nearest[i] = min(d) if d else np.inf
    return nearest


def strained(structure: Any, strain: float):
    """A copy with every lattice vector scaled by ``1 + strain`` (``-0.10``: 10% shorter), fractional coords kept."""
    from pymatgen.core import Lattice, Structure

    s = _structure(structure)
    if not strain > -1:
        raise ValueError(f"strain must be greater than -1, got {strain}")
    return Structure(
        Lattice(s.lattice.matrix * (1.0 + float(strain))),
        s.species_and_occu,
        s.frac_coords,
        site_properties=s.site_properties,
    )


def relax_structure(
    potential: Potential,
    structure: Any,
    *,
    fmax: float = 0.03,
    steps: int = 500,
    relax_cell: bool = True,
    max_nn_distance: float = MAX_NN_DISTANCE,
) -> RelaxResult:
    """Relax ``structure`` (a Structure or its ``as_dict()``) with ``potential``; never raises for bad input.

    :meth:`crossfid.potentials.base.Potential.relax` (FIRE, with ``FrechetCellFilter``
    when ``relax_cell``; ``fmax`` eV/Å, which with the cell filter also bounds the virial
    per atom). ``converged``: the optimiser's own criterion on the degrees of freedom it
    moved. Isolated atoms are allowed during the run, so they reach the
    ``max_nn_distance`` check instead of an exception.
    """
    try:
        s = _structure(structure)
    except Exception as exc:  # a bad structure is reported, not raised
        return _diverged(f"invalid structure: {type(exc).__name__}: {exc}")
    if len(s) == 0:
        return _diverged("invalid structure: no atoms")
    if not _is_finite_structure(s):
        return _diverged("non-finite lattice or positions in the input structure")

    try:
        relaxation = potential.relax(s, fmax=fmax, steps=steps, relax_cell=relax_cell)
        final = relaxation.final_structure
        energy = float(relaxation.energies[-1]) / len(final)
        n_steps = relaxation.n_steps
        forces = relaxation.optimised_forces
    except Exception as exc:  # anything inside the optimiser is a divergence
        return _diverged(f"{type(exc).__name__}: {exc}")

    if not (math.isfinite(energy) and _is_finite_structure(final) and np.isfinite(forces).all()):
        return _diverged("non-finite energy, forces, cell or positions after relaxation", n_steps)
    converged = relaxation.converged(fmax)
    nn = nearest_neighbour_distances(final)
    largest = float(nn.max())
    isolated = largest > max_nn_distance
    return RelaxResult(
        ok=not isolated,
        energy_per_atom=energy,
        structure=final.as_dict(),
        n_steps=n_steps,
        converged=converged,
        max_nn_distance=largest,
        failure=FAILURE_ISOLATED if isolated else None,
        message=(
            f"atom {int(np.argmax(nn))} is {largest:.2f} Å from its nearest neighbour (limit {max_nn_distance} Å)"
            if isolated
            else None
        ),
    )
