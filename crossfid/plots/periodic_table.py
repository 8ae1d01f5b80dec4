"""Periodic-table heatmap of per-element values (e.g. normalised feature importance), H..Pu.

Implemented here on a plain ``matplotlib.figure.Figure`` using pymatgen's ``Element`` row/group data, rather than
``pymatgen.util.plotting.periodic_table_heatmap``: that function draws through pyplot global state
(``plt.subplots``/``plt.text``/``plt.gcf``, so not thread-safe and not renderable into our own Figure), covers all
118 elements, and by default tries pymatviz (not installed) and logs an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pymatgen.core import Element

from crossfid.plots.pngdata import save_with_data

MAX_Z = 94  # H..Pu
MISSING_COLOR = "#d9d9d9"
CMAP = "YlOrRd"


def cell_position(element: Element) -> tuple[float, int]:
    """(row, column), 0-based, of ``element``'s cell; lanthanides/actinides go below the table (rows 7.5/8.5)."""
    if element.is_lanthanoid or element.is_actinoid:
        first = 57 if element.is_lanthanoid else 89
        return (7.5 if element.is_lanthanoid else 8.5), 2 + element.Z - first
    return element.row - 1, element.group - 1


def _validate(importance: Mapping[str, float]) -> dict[str, float]:
    if not importance:
        raise ValueError("importance mapping is empty")
    values: dict[Element, float] = {}
    for symbol, value in importance.items():
        try:
            element = Element(str(symbol))
        except ValueError:
            raise ValueError(f"unknown element symbol {symbol!r}") from None
        if element.Z > MAX_Z:
            raise ValueError(f"element {element.symbol} (Z={element.Z}) is beyond Pu; the table covers H..Pu")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"importance of {element.symbol} must be a number, got {value!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"importance of {element.symbol} must be finite and >= 0, got {value}")
        values[element] = value
    return {el.symbol: values[el] for el in sorted(values, key=lambda e: e.Z)}


def build_element_importance_figure(
    importance: Mapping[str, float], *, title: str | None = None, label: str = "normalised importance"
) -> tuple[Figure, dict]:
    """Build the heatmap (one labelled cell per element H..Pu, missing ones grey) and the data dict it shows."""
    values = _validate(importance)
    vmax = max(values.values())
    norm = Normalize(vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
    mappable = ScalarMappable(norm=norm, cmap=CMAP)

    fig = Figure(figsize=(13, 7), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="ptable")
    for z in range(1, MAX_Z + 1):
        element = Element.from_Z(z)
        row, col = cell_position(element)
        value = values.get(element.symbol)
        face = MISSING_COLOR if value is None else mappable.to_rgba(value)
        ax.add_patch(Rectangle((col, row), 0.95, 0.95, facecolor=face, edgecolor="white", label=element.symbol))
        dark = value is not None and norm(value) > 0.6  # dark end of YlOrRd: white text
        color = "white" if dark else ("#555555" if value is None else "black")
        ax.text(col + 0.475, row + 0.38, element.symbol, ha="center", va="center", fontsize=11, color=color)
        if value is not None:
            ax.text(col + 0.475, row + 0.72, f"{value:.2g}", ha="center", va="center", fontsize=7, color=color)
    for row, text in ((5, "57–71"), (6, "89–94")):  # placeholders for the f-block in group 3
        ax.text(2.475, row + 0.475, text, ha="center", va="center", fontsize=7, color="#555555")
    ax.set_xlim(-0.1, 18.05)
    ax.set_ylim(9.55, -0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.colorbar(mappable, ax=ax, label=label, shrink=0.7)
    if title:
        ax.set_title(title)
    data = {"kind": "element_importance", "title": title, "importance": values}
    return fig, data


def plot_element_importance(
    path: str | Path, importance: Mapping[str, float], *, title: str | None = None, label: str = "normalised importance"
) -> Path:
    """Write the periodic-table heatmap of ``importance`` (symbol -> value >= 0) as PNG with data embedded."""
    fig, data = build_element_importance_figure(importance, title=title, label=label)
    return save_with_data(fig, path, data)
