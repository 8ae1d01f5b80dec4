"""Embed the numbers a figure shows as JSON in its PNG, and read them back.

The JSON is stored in a PNG text chunk under the key :data:`DATA_KEY`, so a figure can be checked against
the values in the database without re-deriving anything from pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DATA_KEY = "crossfid:data"


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types: numpy scalars/arrays to floats/lists, NaN and ±inf to None."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [to_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    raise TypeError(f"cannot store {type(value).__name__} in figure data")


def save_with_data(fig: Figure, path: str | Path, data: dict, *, dpi: float = 150) -> Path:
    """Save ``fig`` as PNG at ``path`` (parent dirs created) with ``data`` as JSON under ``crossfid:data``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(data), allow_nan=False, ensure_ascii=False)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # headless Agg canvas on this figure only; no global backend switch
    fig.savefig(path, format="png", dpi=dpi, metadata={DATA_KEY: text})
    return path


def read_data(path: str | Path) -> dict:
    """Return the JSON data embedded by :func:`save_with_data` in the PNG at ``path``."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise ValueError(f"{path} is not a PNG file (format {image.format})")
        text = image.text.get(DATA_KEY)
    if text is None:
        raise ValueError(f"{path} carries no crossfid figure data (no {DATA_KEY!r} text chunk)")
    return json.loads(text)
