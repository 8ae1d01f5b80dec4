"""The transfer methods of the study as model set-ups: which weights start where, which are trainable.

The methods are defined once, in :data:`crossfid.vocabulary.TRAINING_METHODS`
(name, the study's label and three flags); this module turns a method's flags into
a model. The study's four:

1. ``scratch``: random GNN weights (the base model's architecture), AtomRef set to
   the target fit and frozen.
2. ``tl-trainable-atomref``: the base model as it is; GNN and its (source) AtomRef trainable.
3. ``tl-frozen-atomref``: the base model; its source AtomRef frozen, GNN trainable.
4. ``tl-refit-atomref``: the base model with its AtomRef replaced by the target fit,
   frozen; GNN trainable (the study's recommended method).

A target AtomRef must have a value for every element: a NaN weight would turn
every prediction into NaN (0 × NaN is NaN), so absent elements are refused here
with their names; fill them when fitting (``crossfid atomref fit --fill-from``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossfid.errors import InputError
from crossfid.potentials.base import Potential
from crossfid.vocabulary import TRAINING_METHODS, TrainingMethod

#: the method registry: name → its definition in :data:`crossfid.vocabulary.TRAINING_METHODS`
METHODS: dict[str, TrainingMethod] = {m.name: m for m in TRAINING_METHODS}
#: the methods that need the target AtomRef
NEEDS_TARGET_ATOMREF = frozenset(m.name for m in TRAINING_METHODS if m.target_atomref)


class MethodError(InputError):
    """An unknown method, or a target AtomRef that cannot be put into a model."""


def _set_atomref(potential: Potential, values: np.ndarray) -> None:
    """Check the target AtomRef (eV/atom, every element present) and write it into the potential's model."""
    from crossfid.referencing.composition import N_ELEMENTS, SYMBOLS

    array = np.asarray(values, dtype=float).ravel()
    if array.shape != (N_ELEMENTS,):
        raise MethodError(f"an AtomRef has {N_ELEMENTS} values, got {array.size}")
    missing = [SYMBOLS[j] for j in np.flatnonzero(~np.isfinite(array))]
    if missing:
        raise MethodError(
            f"the target AtomRef has no value for {', '.join(missing)}; refit it with --fill-from "
            "(e.g. chgnet-r2scan) so that every element a model may see has one"
        )
    potential.set_atomref(array)


def set_up_model(method: str, base: Potential, target_atomref: np.ndarray | None = None, *, seed: int = 0) -> Any:
    """The base potential's native model (a CHGNet) prepared for ``method``: weights, AtomRef, ``requires_grad``.

    ``base`` is not modified (transfer methods get a deep copy).
    ``target_atomref``: the 94 target-fidelity AtomRef energies (eV/atom), required
    by ``scratch`` and ``tl-refit-atomref``.
    """
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    spec = METHODS[method]
    if spec.target_atomref and target_atomref is None:
        raise MethodError(f"method {method} needs the target AtomRef")
    potential = base.new_untrained(seed) if spec.from_scratch else base.copy()
    for parameter in potential.model.parameters():
        parameter.requires_grad_(True)
    if spec.target_atomref:
        _set_atomref(potential, target_atomref)
    if not spec.atomref_trainable:
        for parameter in potential.atomref_parameters():
            parameter.requires_grad_(False)
    return potential.model


def trainable_parameter_names(model: Any) -> list[str]:
    """Names of the parameters an optimiser should update."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]
