"""The AtomRefs shipped inside the ``chgnet`` package, as named reference AtomRefs.

* ``chgnet-0.3.0``: the composition model of ``CHGNet.load()`` (v0.3.0, fitted on
  MPtrj: GGA/GGA+U with MP2020 corrections).
* ``chgnet-r2scan``: the composition model of ``CHGNet.load(model_name="r2scan")``
  (the published transfer model, AtomRef refitted on MP-r2SCAN).

The values are read from the loaded models themselves
(:meth:`crossfid.potentials.base.Potential.atomref`), so they are exactly what those
models add to their GNN output. Each AtomRef has the name of the shipped model it
comes from (:data:`crossfid.potentials.chgnet.SHIPPED_MODELS`). Nothing is
downloaded: both models are files inside the wheel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossfid.potentials.base import load_potential


@dataclass(frozen=True)
class PackageAtomRef:
    name: str  # also the name of the shipped model (crossfid.potentials.chgnet.SHIPPED_MODELS)
    composition_model: str  # chgnet's name of the data the AtomRef was fitted on
    fidelities: tuple[str, ...]
    description: str


PACKAGE_ATOMREFS: dict[str, PackageAtomRef] = {
    ref.name: ref
    for ref in (
        PackageAtomRef(
            "chgnet-0.3.0",
            "MPtrj",
            ("GGA", "GGA+U"),
            "CHGNet v0.3.0 composition model (MPtrj, GGA/GGA+U, MP2020-corrected energies)",
        ),
        PackageAtomRef(
            "chgnet-r2scan",
            "MP-r2SCAN",
            ("r2SCAN",),
            "CHGNet r2scan composition model (MP-r2SCAN, the published method-4 transfer model)",
        ),
    )
}

#: the package AtomRef to compare with, per fidelity
PACKAGE_ATOMREF_FOR_FIDELITY = {fid: ref.name for ref in PACKAGE_ATOMREFS.values() for fid in ref.fidelities}


def package_atomref_for(fidelities) -> str | None:
    """The shipped AtomRef of the first fidelity in the set that has one (``["GGA", "GGA+U"]`` → chgnet-0.3.0)."""
    return next((PACKAGE_ATOMREF_FOR_FIDELITY[f] for f in fidelities if f in PACKAGE_ATOMREF_FOR_FIDELITY), None)


def package_atomref_values(name: str) -> np.ndarray:
    """The 94 AtomRef energies (eV/atom) of a shipped model, read from the model's composition model."""
    try:
        ref = PACKAGE_ATOMREFS[name]
    except KeyError:
        known = ", ".join(PACKAGE_ATOMREFS)
        raise KeyError(f"no AtomRef {name!r} ships with chgnet; known: {known}") from None
    return load_potential(ref.name).atomref()
