"""The AtomRefs shipped inside the ``chgnet`` package, as named reference AtomRefs.

* ``chgnet-0.3.0``: the composition model of ``CHGNet.load()`` (v0.3.0, fitted on
  MPtrj: GGA/GGA+U with MP2020 corrections).
* ``chgnet-r2scan``: the composition model of ``CHGNet.load(model_name="r2scan")``
  (the published transfer model, AtomRef refitted on MP-r2SCAN).

The values are read from the loaded models themselves (``composition_model.fc``),
so they are exactly what those models add to their GNN output. Nothing is
downloaded: both models are files inside the wheel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackageAtomRef:
    name: str
    model_name: str | None  # argument of CHGNet.load (None = the default v0.3.0)
    composition_model: str  # chgnet's name of the data the AtomRef was fitted on
    fidelities: tuple[str, ...]
    description: str


PACKAGE_ATOMREFS: dict[str, PackageAtomRef] = {
    ref.name: ref
    for ref in (
        PackageAtomRef(
            "chgnet-0.3.0",
            None,
            "MPtrj",
            ("GGA", "GGA+U"),
            "CHGNet v0.3.0 composition model (MPtrj, GGA/GGA+U, MP2020-corrected energies)",
        ),
        PackageAtomRef(
            "chgnet-r2scan",
            "r2scan",
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


@functools.cache
def load_chgnet(model_name: str | None):
    """A shipped CHGNet model (cached per process; ``None`` is v0.3.0)."""
    import contextlib
    import io

    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet.load prints its banner even with verbose=False
        if model_name is None:
            return CHGNet.load(verbose=False)
        return CHGNet.load(model_name=model_name, verbose=False)


def package_atomref_values(name: str) -> np.ndarray:
    """The 94 AtomRef energies (eV/atom) of a shipped model, read from the model's composition model."""
    try:
        ref = PACKAGE_ATOMREFS[name]
    except KeyError:
        known = ", ".join(PACKAGE_ATOMREFS)
        raise KeyError(f"no AtomRef {name!r} ships with chgnet; known: {known}") from None
    model = load_chgnet(ref.model_name)
    composition_model = model.composition_model
    if not getattr(composition_model, "is_intensive", True):
        raise ValueError(f"{name}: the composition model is extensive; crossfid expects energies per atom")
    return composition_model.fc.weight.detach().cpu().double().numpy().ravel().copy()


def chgnet_version() -> str:
    from importlib.metadata import version

    return version("chgnet")
