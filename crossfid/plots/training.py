"""Training figures: energy-MAE curves of several runs (the study's Fig. 3b/3c) and first-epoch gradient ranges
(Fig. 3a). Each PNG carries the numbers it shows (:mod:`crossfid.plots.pngdata`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossfid.errors import InputError
from crossfid.plots.pngdata import save_with_data, to_jsonable


def build_training_curves_figure(histories: Sequence) -> tuple[Figure, dict]:
    """Validation (solid) and training (dashed) energy MAE per epoch, meV/atom, log scale; one colour per run."""
    if not histories:
        raise InputError("no runs to plot")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="curves")
    data = {"kind": "training_curves", "runs": []}
    for i, history in enumerate(histories):
        colour = f"C{i % 10}"
        for values, style, part in ((history.val_energy_mae, "-", "val"), (history.train_energy_mae, "--", "train")):
            points = [(e, v) for e, v in zip(history.epochs, values, strict=True) if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, color=colour, marker="o", ms=3, label=f"{history.label} ({part})")
        data["runs"].append(
            {
                "run_id": history.run_id,
                "method": history.method,
                "epochs": history.epochs,
                "train_energy_mae": history.train_energy_mae,
                "val_energy_mae": history.val_energy_mae,
            }
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy MAE (meV/atom)")
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return fig, to_jsonable(data)


def plot_training_curves(path: str | Path, histories: Sequence) -> Path:
    fig, data = build_training_curves_figure(histories)
    return save_with_data(fig, path, data)


def gradient_ranges(history) -> dict[str, dict[str, float]]:
    """Per layer: the smallest and largest |gradient| over the first epoch's samples, and their mean |gradient|."""
    out: dict[str, dict[str, float]] = {}
    for layer in dict.fromkeys(g["layer"] for g in history.gradients):
        rows = [g for g in history.gradients if g["layer"] == layer]
        out[layer] = {
            "abs_min": min(g["abs_min"] for g in rows),
            "abs_max": max(g["abs_max"] for g in rows),
            "abs_mean": float(np.mean([g["abs_mean"] for g in rows])),
        }
    return out


def build_gradient_ranges_figure(histories: Sequence) -> tuple[Figure, dict]:
    """For each named layer, a bar from the smallest to the largest |gradient| of each run, mean marked; log scale."""
    ranges = {h.run_id: gradient_ranges(h) for h in histories}
    layers = list(dict.fromkeys(layer for r in ranges.values() for layer in r))
    if not layers:
        raise InputError("the runs recorded no gradient statistics")
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="gradients")
    width = 0.8 / max(len(histories), 1)
    for i, history in enumerate(histories):
        x = np.arange(len(layers)) - 0.4 + width * (i + 0.5)
        r = ranges[history.run_id]
        lows = [r[layer]["abs_min"] if layer in r else np.nan for layer in layers]
        highs = [r[layer]["abs_max"] if layer in r else np.nan for layer in layers]
        means = [r[layer]["abs_mean"] if layer in r else np.nan for layer in layers]
        floor = np.nanmin([v for v in lows if v > 0] or [1e-12])
        lows = [max(v, floor) for v in lows]  # log axis: zero gradients are drawn at the smallest non-zero one
        ax.vlines(x, lows, highs, color=f"C{i % 10}", lw=6, alpha=0.6, label=history.label)
        ax.plot(x, means, "k_", ms=10)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel("|gradient| in the first epoch")
    ax.legend(fontsize="small")
    data = {"kind": "gradient_ranges", "layers": layers, "runs": {str(k): v for k, v in ranges.items()}}
    return fig, to_jsonable(data)


def plot_gradient_ranges(path: str | Path, histories: Sequence) -> Path:
    fig, data = build_gradient_ranges_figure(histories)
    return save_with_data(fig, path, data)
