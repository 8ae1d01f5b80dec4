"""The scaling-law figure: validation energy MAE against training size, log-log, with the fitted lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossfid.plots.pngdata import save_with_data, to_jsonable

#: the fitted lines reach this factor beyond the largest size (further when a crossover lies beyond)
LINE_REACH = 10.0


def plot_scaling_law(path: str | Path, points, fits: dict, crossovers: dict | None = None) -> Path:
    """Points (meV/atom vs frames) per method and each method's energy fit over its fitted sizes.

    ``crossovers``: ``{(method a, method b, quantity): Crossover | None}``; the energy ones within range are
    marked where the lines meet (lines reach them), the others are not drawn.
    """
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="scaling")
    marked = [
        (a, b, c)
        for (a, b, quantity), c in (crossovers or {}).items()
        if quantity == "energy" and c is not None and c.within_range
    ]
    data = {"kind": "scaling_law", "methods": {}, "crossovers": []}
    for i, method in enumerate(dict.fromkeys(p.method for p in points)):
        mine = [p for p in points if p.method == method and p.val_energy_mae is not None]
        sizes = [p.size for p in mine]
        maes = [p.val_energy_mae for p in mine]
        ax.loglog(sizes, maes, "o", color=f"C{i}", label=method)
        fit = (fits.get(method) or {}).get("energy")
        if fit is not None and mine:
            reach = max([max(sizes) * LINE_REACH, *(c.size for a, b, c in marked if method in (a, b))])
            xs = np.geomspace(min(sizes), reach, 50)
            ax.loglog(xs, 10 ** (fit.intercept + fit.slope * np.log10(xs)), "-", color=f"C{i}", alpha=0.6)
        data["methods"][method] = {
            "sizes": sizes,
            "val_energy_mae": maes,
            "fit": None if fit is None else {"slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2},
        }
    for a, b, c in marked:
        fit = fits[a]["energy"]
        mae = 10 ** (fit.intercept + fit.slope * np.log10(c.size))
        ax.axvline(c.size, color="0.5", linestyle=":", linewidth=1)
        ax.loglog([c.size], [mae], "x", color="k", label=f"{a} = {b} at {c.size:,.0f}")
        data["crossovers"].append({"a": a, "b": b, "size": c.size, "val_energy_mae": float(mae), "limit": c.limit})
    ax.set_xlabel("training frames")
    ax.set_ylabel("validation energy MAE (meV/atom)")
    ax.legend(fontsize="small")
    data["x_limits"] = list(ax.get_xlim())
    return save_with_data(fig, path, to_jsonable(data))
