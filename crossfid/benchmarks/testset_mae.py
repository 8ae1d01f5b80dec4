"""The test-mae benchmark: a model's errors on a split's test frames, overall and per element.

Energies meV/atom, forces meV/Å (over force components), stresses GPa (over the
9 tensor components), magmoms μB (|m|, as chgnet predicts them). Frames without
a label for a quantity do not count for it. Per-element energy MAE: the mean
|error| of the frames that contain the element.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossfid.benchmarks.store import ItemResult, Metric
from crossfid.referencing.composition import SYMBOLS
from crossfid.training.data import LabelledFrame

VERSION = 1


def predict(model: Any, graphs: Sequence[Any], batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    """chgnet's own ``predict_graph`` (task efsm) for each graph: e eV/atom, f eV/Å, s GPa, m μB."""
    if not graphs:
        return []
    out = model.predict_graph(list(graphs), task="efsm", batch_size=batch_size)
    out = [out] if isinstance(out, dict) else out
    return [{k: np.asarray(v, dtype=float) for k, v in p.items() if k in "efsm"} for p in out]


def _abs_errors(label: np.ndarray | None, pred: np.ndarray) -> np.ndarray:
    if label is None:
        return np.zeros(0)
    err = np.abs(np.asarray(label, dtype=float).ravel() - pred.ravel())
    return err[np.isfinite(err)]


def testset_metrics(
    frames: Sequence[LabelledFrame], predictions: Sequence[dict[str, np.ndarray]]
) -> tuple[list[Metric], list[ItemResult]]:
    """MAEs of predictions against the frames' labels, and one item per frame with its errors."""
    errors: dict[str, list[np.ndarray]] = {"e": [], "f": [], "s": [], "m": []}
    per_element: dict[str, list[float]] = defaultdict(list)
    items = []
    for frame, pred in zip(frames, predictions, strict=True):
        e_err = abs(frame.energy_per_atom - float(pred["e"])) if np.isfinite(frame.energy_per_atom) else None
        f_err = _abs_errors(frame.forces, pred["f"])
        s_err = _abs_errors(frame.stress, pred["s"])
        m_err = _abs_errors(None if frame.magmoms is None else np.abs(frame.magmoms), pred["m"])
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
                    "force_mae": float(1000 * f_err.mean()) if f_err.size else None,
                },
            )
        )

    def mae(key: str, scale: float) -> tuple[float | None, int]:
        values = np.concatenate(errors[key]) if errors[key] else np.zeros(0)
        return (float(scale * values.mean()) if values.size else None), int(values.size)

    metrics = []
    for key, name, unit, scale in (
        ("e", "energy_mae", "meV/atom", 1000.0),
        ("f", "force_mae", "meV/Å", 1000.0),
        ("s", "stress_mae", "GPa", 1.0),
        ("m", "magmom_mae", "μB", 1.0),
    ):
        value, n = mae(key, scale)
        metrics.append(Metric(name, value, unit, n))
    for symbol in sorted(per_element, key=SYMBOLS.index):
        values = per_element[symbol]
        metrics.append(Metric(f"energy_mae:{symbol}", float(1000 * np.mean(values)), "meV/atom", len(values)))
    return metrics, items
