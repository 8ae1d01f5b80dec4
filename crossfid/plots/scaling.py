"""The scaling-law figure: validation energy MAE against training size, log-log, with the fitted lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossfid.plots.pngdata import save_with_data, to_jsonable


def plot_scaling_law(path: str | Path, points, fits: dict) -> Path:
    """Points (meV/atom vs frames) per method and each method's energy fit over its fitted sizes."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="scaling")
    data = {"kind": "scaling_law", "methods": {}}
    for i, method in enumerate(dict.fromkeys(p.method for p in points)):
        mine = [p for p in points if p.method == method and p.val_energy_mae is not None]
        sizes = [p.size for p in mine]
        maes = [p.val_energy_mae for p in mine]
        ax.loglog(sizes, maes, "o", color=f"C{i}", label=method)
        fit = (fits.get(method) or {}).get("energy")
        if fit is not None and mine:
            xs = np.geomspace(min(sizes), max(sizes) * 10, 50)
            ax.loglog(xs, 10 ** (fit.intercept + fit.slope * np.log10(xs)), "-", color=f"C{i}", alpha=0.6)
        data["methods"][method] = {
            "sizes": sizes,
            "val_energy_mae": maes,
            "fit": None if fit is None else {"slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2},
        }
    ax.set_xlabel("training frames")
    ax.set_ylabel("validation energy MAE (meV/atom)")
    ax.legend(fontsize="small")
    return save_with_data(fig, path, to_jsonable(data))
