"""The test-mae benchmark: a model's errors on a split's test frames, overall and per element.

MAEs as :mod:`crossfid.training.metrics` defines them (the same as training and validation):
energies meV/atom, forces meV/Å (over force components), stresses GPa (over the 9 tensor
components), magmoms μB (|m|, as chgnet predicts them). Frames without a label for a quantity
do not count for it; a model that predicts no magnetic moments (``m`` None) has no magmom metric.
Per-element energy MAE: the mean |error| of the frames that contain the element.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from crossfid.benchmarks.store import ItemResult, Metric
from crossfid.referencing.composition import SYMBOLS
from crossfid.training.data import LabelledFrame
from crossfid.training.metrics import QUANTITIES, reported_mae

VERSION = 1


def _abs_errors(label: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    if label is None or pred is None:
        return np.zeros(0)
    err = np.abs(np.asarray(label, dtype=float).ravel() - pred.ravel())
    return err[np.isfinite(err)]


def testset_metrics(
    frames: Sequence[LabelledFrame], predictions: Sequence[dict[str, np.ndarray]]
) -> tuple[list[Metric], list[ItemResult]]:
    """MAEs of predictions against the frames' labels, and one item per frame with its errors."""
    errors: dict[str, list[np.ndarray]] = {"e": [], "f": [], "s": [], "m": []}
    predicts_magmoms = any(pred.get("m") is not None for pred in predictions)
    per_element: dict[str, list[float]] = defaultdict(list)
    items = []
    for frame, pred in zip(frames, predictions, strict=True):
        e_err = abs(frame.energy_per_atom - float(pred["e"])) if np.isfinite(frame.energy_per_atom) else None
        f_err = _abs_errors(frame.forces, pred["f"])
        s_err = _abs_errors(frame.stress, pred["s"])
        m_err = _abs_errors(None if frame.magmoms is None else np.abs(frame.magmoms), pred.get("m"))
        if e_err is not None:
            errors["e"].append(np.array([e_err]))
            for z in set(frame.atomic_numbers.tolist()):
                per_element[SYMBOLS[z - 1]].append(e_err)
        errors["f"].append(f_err)
        errors["s"].append(s_err)
        errors["m"].append(m_err)
        items.append(
            ItemResult(
                item=frame.content_hash,
                ok=True,
                result={
                    "material": frame.material,
                    "energy_per_atom": float(frame.energy_per_atom),
                    "energy_error": None if e_err is None else 1000 * e_err,
                    "predicted_energy_per_atom": float(pred["e"]),
                    "force_mae": reported_mae("f", f_err.sum(), f_err.size),
                },
            )
        )

    metrics = []
    for key, quantity in QUANTITIES.items():
        if key == "m" and not predicts_magmoms:
            continue
        values = np.concatenate(errors[key]) if errors[key] else np.zeros(0)
        metrics.append(Metric(quantity.name, reported_mae(key, values.sum(), values.size), quantity.unit, values.size))
    energy = QUANTITIES["e"]
    for symbol in sorted(per_element, key=SYMBOLS.index):
        values = per_element[symbol]
        value = reported_mae("e", np.sum(values), len(values))
        metrics.append(Metric(f"{energy.name}:{symbol}", value, energy.unit, len(values)))
    return metrics, items
