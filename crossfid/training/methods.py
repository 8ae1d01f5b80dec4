"""The four transfer methods of the study as model set-ups: which weights start where, which are trainable.

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

METHODS: tuple[str, ...] = ("scratch", "tl-trainable-atomref", "tl-frozen-atomref", "tl-refit-atomref")
#: the methods that need the target AtomRef
NEEDS_TARGET_ATOMREF = frozenset({"scratch", "tl-refit-atomref"})


class MethodError(ValueError):
    """An unknown method, or a target AtomRef that cannot be put into a model."""


def _set_atomref(model: Any, values: np.ndarray) -> None:
    import torch

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
    weight = model.composition_model.fc.weight
    with torch.no_grad():
        weight.copy_(torch.as_tensor(array, dtype=weight.dtype).view_as(weight))
    model.composition_model.fitted = True


def set_up_model(method: str, base_model: Any, target_atomref: np.ndarray | None = None, *, seed: int = 0) -> Any:
    """A CHGNet model prepared for ``method``: starting weights, AtomRef and ``requires_grad`` flags.

    ``base_model`` is not modified (transfer methods get a deep copy).
    ``target_atomref``: the 94 target-fidelity AtomRef energies (eV/atom), required
    by ``scratch`` and ``tl-refit-atomref``.
    """
    import contextlib
    import copy
    import io

    import torch
    from chgnet.model import CHGNet

    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    if method in NEEDS_TARGET_ATOMREF and target_atomref is None:
        raise MethodError(f"method {method} needs the target AtomRef")
    if method == "scratch":
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet() prints a banner
            model = CHGNet(**base_model.todict()["model_args"])
    else:
        model = copy.deepcopy(base_model)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if method in NEEDS_TARGET_ATOMREF:
        _set_atomref(model, target_atomref)
    if method != "tl-trainable-atomref":
        for parameter in model.composition_model.parameters():
            parameter.requires_grad_(False)
    return model


def trainable_parameter_names(model: Any) -> list[str]:
    """Names of the parameters an optimiser should update."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]
