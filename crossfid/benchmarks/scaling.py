"""Scaling law: validation MAE vs training-set size, a straight line in log-log.

The study (``SCIENCE.md``, "Reported results") fits ``log10(MAE) = intercept +
slope · log10(size)`` for training sizes above 1000 frames: energy slope −0.615
from scratch (R² 0.994) vs −0.301 with transfer learning (R² 0.964); force −0.394
vs −0.134. Extrapolated, scratch training catches up with transfer at ~720k frames
(energy) and ~317k (force): :func:`crossover`. MAE units are whatever the input
uses (meV/atom, meV/Å); sizes are frame counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the study fits sizes above this many frames
MIN_SIZE = 1000

_PARALLEL = 1e-12


@dataclass(frozen=True)
class ScalingFit:
    """``log10(MAE) = intercept + slope · log10(size)`` fitted by least squares over ``n`` sizes.

    ``r2``: coefficient of determination in log-log space (1 for an exact fit, e.g. two points);
    ``sizes_used``: the sizes above ``min_size`` that entered the fit, ascending.
    """

    slope: float
    intercept: float
    r2: float
    n: int
    sizes_used: tuple[float, ...]
    min_size: float = MIN_SIZE

    def predict(self, size: Any) -> Any:
        """MAE on the fitted line at ``size`` (scalar or array, same units as the fitted MAEs)."""
        value = 10.0 ** (self.intercept + self.slope * np.log10(np.asarray(size, dtype=float)))
        return float(value) if np.ndim(value) == 0 else value

    def to_dict(self) -> dict[str, Any]:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "r2": self.r2 if math.isfinite(self.r2) else None,
            "n": self.n,
            "sizes_used": list(self.sizes_used),
            "min_size": self.min_size,
        }


def fit_scaling_law(sizes: Sequence[float], maes: Sequence[float], *, min_size: float = MIN_SIZE) -> ScalingFit:
    """Fit a power law ``MAE = 10**intercept · size**slope`` to the points with ``size > min_size``.

    Needs positive finite sizes and MAEs of equal length, and at least two
    distinct sizes above ``min_size`` (ValueError otherwise).
    """
    x = np.asarray(sizes, dtype=float).ravel()
    y = np.asarray(maes, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"sizes and maes differ in length: {x.size} vs {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any() or (y <= 0).any():
        raise ValueError("sizes and MAEs must be positive and finite")
    keep = x > min_size
    x, y = x[keep], y[keep]
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError(f"a scaling fit needs at least 2 distinct sizes above {min_size}, got {x.size} point(s)")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    lx, ly = np.log10(x), np.log10(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (intercept + slope * lx)
    total = ((ly - ly.mean()) ** 2).sum()
    exact = np.allclose(residual, 0.0, rtol=0.0, atol=1e-12)  # always so for two points
    r2 = 1.0 if exact else 1.0 - float((residual**2).sum()) / float(total)
    return ScalingFit(
        slope=float(slope),
        intercept=float(intercept),
        r2=float(r2),
        n=int(x.size),
        sizes_used=tuple(float(v) for v in x),
        min_size=float(min_size),
    )


def crossover(a: ScalingFit, b: ScalingFit) -> float | None:
    """Training size where the two fitted lines cross (same MAE), or None.

    None when the lines are parallel or cross below the smallest size either fit
    used (they only diverge over and beyond the data). The crossing may lie
    within the data or beyond it (an extrapolation, as the study's ~720k frames).
    """
    if abs(a.slope - b.slope) < _PARALLEL:
        return None
    log_size = (b.intercept - a.intercept) / (a.slope - b.slope)
    if not math.isfinite(log_size) or log_size > 308:
        return None
    size = 10.0**log_size
    first = min(min(a.sizes_used), min(b.sizes_used))
    return float(size) if size >= first else None
