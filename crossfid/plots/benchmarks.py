"""Benchmark figures for the leaderboard page: energy parity and density-ratio histograms (data embedded)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossfid.plots.pngdata import save_with_data, to_jsonable


def plot_energy_parity(path: str | Path, dft: Sequence[float], model: Sequence[float], *, title: str) -> Path:
    """Predicted vs DFT energy per atom (eV/atom) of test frames, with y = x."""
    x, y = np.asarray(dft, dtype=float), np.asarray(model, dtype=float)
    if x.size == 0 or x.shape != y.shape:
        raise ValueError("parity plot needs equal, non-empty arrays")
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="parity")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.scatter(x, y, s=8, alpha=0.7)
    ax.set_xlabel("DFT energy (eV/atom)")
    ax.set_ylabel("model energy (eV/atom)")
    ax.set_title(title, fontsize="medium")
    return save_with_data(fig, path, to_jsonable({"kind": "energy_parity", "dft": x, "model": y}))


def plot_density_ratios(path: str | Path, ratios: Sequence[float], *, title: str) -> Path:
    """Histogram of experimental/predicted density ratios, with ratio 1 marked."""
    r = np.asarray(ratios, dtype=float)
    if r.size == 0:
        raise ValueError("no density ratios to plot")
    fig = Figure(figsize=(4.5, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="ratios")
    ax.hist(r, bins=min(20, max(5, r.size // 2)))
    ax.axvline(1.0, color="k", ls="--", lw=1)
    ax.set_xlabel("density ratio experimental / predicted")
    ax.set_ylabel("crystals")
    ax.set_title(title, fontsize="medium")
    return save_with_data(fig, path, to_jsonable({"kind": "density_ratios", "ratios": r}))
