"""Scatter of energies of the same materials at two fidelities, before and after AtomRef referencing.

Left panel: raw total energies (with least-squares line); right panel: referenced energies ``E - c·E_ref``
(with y = x). Both have marginal histograms and the Pearson r. All energies are in eV/atom.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec
from scipy import stats

from crossfid.plots.pngdata import save_with_data, to_jsonable

REFERENCED_TITLE = "referenced energy (E − c·E_ref)"


def _as_energies(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of energies (eV/atom), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} contains non-finite values (NaN or inf) at indices {np.flatnonzero(~np.isfinite(arr))}"
        )
    return arr


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of ``x`` and ``y``; NaN when either is constant (r undefined)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def _limits(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = 0.05 * (hi - lo) if hi > lo else max(0.05 * abs(lo), 0.01)
    return lo - pad, hi + pad


def _draw_panel(
    fig: Figure, spec: SubplotSpec, x: np.ndarray, y: np.ndarray, r: float, *, panel: str, title: str
) -> Axes:
    """Scatter of y vs x with marginal histograms in ``spec``; returns the main axes."""
    grid = spec.subgridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05)
    ax = fig.add_subplot(grid[1, 0], label=f"scatter_{panel}")
    ax_top = fig.add_subplot(grid[0, 0], sharex=ax, label=f"hist_x_{panel}")
    ax_right = fig.add_subplot(grid[1, 1], sharey=ax, label=f"hist_y_{panel}")

    if panel == "referenced":  # same scale on both axes so y = x is the diagonal
        xlim = ylim = _limits(np.concatenate([x, y]))
    else:
        xlim, ylim = _limits(x), _limits(y)
    ax.scatter(x, y, s=14, alpha=0.7, edgecolors="none", label="materials")

    lo, hi = max(xlim[0], ylim[0]), min(xlim[1], ylim[1])
    if lo < hi:  # y = x only where the diagonal crosses the data window
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    if panel == "raw" and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        ax.plot(
            xlim,
            slope * np.asarray(xlim) + intercept,
            color="C3",
            lw=1.2,
            label=f"lsq: y = {slope:.3f}x {intercept:+.3f}",
        )
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)

    bins = int(np.clip(np.sqrt(x.size), 5, 40))
    ax_top.hist(x, bins=bins, color="C0", alpha=0.7)
    ax_right.hist(y, bins=bins, color="C0", alpha=0.7, orientation="horizontal")
    ax_top.tick_params(labelbottom=False)
    ax_right.tick_params(labelleft=False)
    ax_top.set_ylabel("count", fontsize=8)
    ax_top.set_title(title, loc="left")
    ax_right.set_xlabel("count", fontsize=8)

    r_text = "Pearson r = n/a (constant input)" if np.isnan(r) else f"Pearson r = {r:.4f}"
    ax.text(0.03, 0.97, f"{r_text}\nn = {x.size}", transform=ax.transAxes, va="top", ha="left", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    return ax


def build_energy_scatter_figure(
    *,
    source: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    source_referenced: Sequence[float] | np.ndarray,
    target_referenced: Sequence[float] | np.ndarray,
    source_label: str,
    target_label: str,
    material_ids: Sequence[str] | None = None,
    title: str | None = None,
) -> tuple[Figure, dict]:
    """Build the raw/referenced scatter figure (eV/atom) and the data dict it shows; raises ValueError on bad input."""
    arrays = {
        "source": _as_energies("source", source),
        "target": _as_energies("target", target),
        "source_referenced": _as_energies("source_referenced", source_referenced),
        "target_referenced": _as_energies("target_referenced", target_referenced),
    }
    lengths = {name: arr.size for name, arr in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"energy arrays must have equal lengths, got {lengths}")
    n = lengths["source"]
    if n < 2:
        raise ValueError(f"need at least 2 materials for a scatter, got {n}")
    if material_ids is not None:
        material_ids = [str(m) for m in material_ids]
        if len(material_ids) != n:
            raise ValueError(f"material_ids has {len(material_ids)} entries, expected {n}")

    pearson_raw = _pearson(arrays["source"], arrays["target"])
    pearson_ref = _pearson(arrays["source_referenced"], arrays["target_referenced"])

    fig = Figure(figsize=(13, 6), layout="constrained")
    FigureCanvasAgg(fig)
    outer = fig.add_gridspec(1, 2)
    ax_raw = _draw_panel(
        fig, outer[0], arrays["source"], arrays["target"], pearson_raw, panel="raw", title="raw total energy"
    )
    ax_raw.set_xlabel(f"{source_label} total energy (eV/atom)")
    ax_raw.set_ylabel(f"{target_label} total energy (eV/atom)")
    ax_ref = _draw_panel(
        fig,
        outer[1],
        arrays["source_referenced"],
        arrays["target_referenced"],
        pearson_ref,
        panel="referenced",
        title=REFERENCED_TITLE,
    )
    ax_ref.set_xlabel(f"{source_label} E − c·E_ref (eV/atom)")
    ax_ref.set_ylabel(f"{target_label} E − c·E_ref (eV/atom)")
    if title:
        fig.suptitle(title)

    data = {
        "kind": "energy_scatter",
        "source_label": source_label,
        "target_label": target_label,
        "n": n,
        "material_ids": material_ids,
        **{name: arr.tolist() for name, arr in arrays.items()},
        "pearson_raw": pearson_raw,
        "pearson_referenced": pearson_ref,
    }
    return fig, to_jsonable(data)


def plot_energy_scatter(
    path: str | Path,
    *,
    source: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    source_referenced: Sequence[float] | np.ndarray,
    target_referenced: Sequence[float] | np.ndarray,
    source_label: str,
    target_label: str,
    material_ids: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write the raw/referenced energy scatter (eV/atom) as PNG with its data embedded; returns the path."""
    fig, data = build_energy_scatter_figure(
        source=source,
        target=target,
        source_referenced=source_referenced,
        target_referenced=target_referenced,
        source_label=source_label,
        target_label=target_label,
        material_ids=material_ids,
        title=title,
    )
    return save_with_data(fig, path, data)
