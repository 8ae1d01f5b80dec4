"""Scaling law: validation MAE vs training-set size, a straight line in log-log.

The study (``SCIENCE.md``, "Reported results") fits ``log10(MAE) = intercept +
slope · log10(size)`` for training sizes above 1000 frames: energy slope −0.615
from scratch (R² 0.994) vs −0.301 with transfer learning (R² 0.964); force −0.394
vs −0.134. Extrapolated, scratch training catches up with transfer at ~720k frames
(energy) and ~317k (force): :func:`crossover`. A crossing is reported only within
a plausible extrapolation of the fitted sizes (:func:`reported_crossover`,
:data:`MAX_EXTRAPOLATION`, :data:`MAX_CROSSOVER_FRAMES`): lines fitted over
40-160 frames that meet at 10^123 frames predict nothing. MAE units are whatever
the input uses (meV/atom, meV/Å); sizes are frame counts.
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

#: a crossover is reported only up to this factor beyond the largest size either fit used: a power law fitted
#: over a range is no evidence three decades beyond it (the study's ~720k frames is 3.8× its 190,560)
MAX_EXTRAPOLATION = 1000.0
#: and never beyond this many frames: ~10× the largest DFT training sets there are (OMat24, ~1.1e8 frames)
MAX_CROSSOVER_FRAMES = 1e9


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


@dataclass(frozen=True)
class Crossover:
    """Where two fitted lines meet, and whether that is within the range a crossover is reported in.

    ``size``: frames where the lines meet ahead of the data (:func:`crossover`; None: parallel or diverging);
    ``limit``: the largest size reported, ``min(MAX_CROSSOVER_FRAMES, MAX_EXTRAPOLATION · largest fitted size)``.
    """

    size: float | None
    limit: float

    @property
    def within_range(self) -> bool:
        return self.size is not None and self.size <= self.limit

    @property
    def reported(self) -> float | None:
        """The crossover size when within range, else None (frames)."""
        return self.size if self.within_range else None

    def describe(self) -> str:
        """``lines cross at 720,000 frames`` or ``no crossover within range (≤ 160,000 frames)``."""
        if self.within_range:
            return f"lines cross at {self.size:,.0f} frames"
        return f"no crossover within range (≤ {self.limit:,.0f} frames)"

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.reported, "limit": self.limit, "within_range": self.within_range}


def crossover_limit(a: ScalingFit, b: ScalingFit) -> float:
    """The largest crossover size reported for two fits, frames (see :data:`MAX_EXTRAPOLATION`)."""
    largest = max(max(a.sizes_used), max(b.sizes_used))
    return float(min(MAX_CROSSOVER_FRAMES, MAX_EXTRAPOLATION * largest))


def reported_crossover(a: ScalingFit, b: ScalingFit) -> Crossover:
    """:func:`crossover` of two fits with the range it is reported in (:func:`crossover_limit`)."""
    return Crossover(crossover(a, b), crossover_limit(a, b))
