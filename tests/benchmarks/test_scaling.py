"""Scaling-law crossovers: reported only within a plausible extrapolation of the fitted sizes (no database)."""

from __future__ import annotations

import json

import pytest

from crossfid.benchmarks.scaling import (
    MAX_CROSSOVER_FRAMES,
    MAX_EXTRAPOLATION,
    crossover_limit,
    fit_scaling_law,
    reported_crossover,
)


def line(sizes, slope: float, through: tuple[float, float]):
    """A fit of exact points on ``MAE = mae0 · (size / size0)**slope``."""
    size0, mae0 = through
    return fit_scaling_law(sizes, [mae0 * (s / size0) ** slope for s in sizes], min_size=0)


def test_a_crossing_within_range_is_reported():
    sizes = [2000, 5000, 20_000]
    scratch = line(sizes, -0.6, (50_000, 10.0))  # both lines pass through 10 meV/atom at 50k frames
    transfer = line(sizes, -0.3, (50_000, 10.0))
    cross = reported_crossover(scratch, transfer)
    assert cross.limit == MAX_EXTRAPOLATION * 20_000
    assert cross.within_range and cross.reported == pytest.approx(50_000, rel=1e-9)
    assert cross.describe() == "lines cross at 50,000 frames"
    assert json.loads(json.dumps(cross.to_dict()))["size"] == pytest.approx(50_000)


def test_a_crossing_far_beyond_the_fitted_sizes_is_not_reported():
    sizes = [40, 80, 160]  # the demo's sizes: nearly parallel lines meet absurdly far away
    a = line(sizes, -0.31, (40, 30.0))  # the steeper line starts higher: it catches up after ~1e19 frames
    b = line(sizes, -0.30, (40, 20.0))
    cross = reported_crossover(a, b)
    assert cross.size is not None and cross.size > 1e15  # the lines do meet, far beyond anything
    assert not cross.within_range and cross.reported is None
    assert cross.limit == 160_000
    assert cross.describe() == "no crossover within range (≤ 160,000 frames)"
    assert cross.to_dict() == {"size": None, "limit": 160_000, "within_range": False}


def test_the_relative_limit_binds_below_the_absolute_one():
    sizes = [2000, 20_000]
    a, b = line(sizes, -0.6, (1e8, 1.0)), line(sizes, -0.3, (1e8, 1.0))  # meet at 1e8 < 1e9, 5000× beyond
    cross = reported_crossover(a, b)
    assert cross.size == pytest.approx(1e8, rel=1e-9)
    assert not cross.within_range and cross.limit == 2e7


def test_the_absolute_limit_binds_for_large_fitted_sizes():
    sizes = [1e6, 1e7]
    a, b = line(sizes, -0.6, (5e9, 1.0)), line(sizes, -0.3, (5e9, 1.0))
    assert crossover_limit(a, b) == MAX_CROSSOVER_FRAMES
    cross = reported_crossover(a, b)
    assert cross.size == pytest.approx(5e9, rel=1e-9) and cross.reported is None
    inside = reported_crossover(line(sizes, -0.6, (5e8, 1.0)), line(sizes, -0.3, (5e8, 1.0)))
    assert inside.reported == pytest.approx(5e8, rel=1e-9)


def test_parallel_and_diverging_lines_have_no_crossover():
    sizes = [2000, 20_000]
    a = line(sizes, -0.5, (2000, 100.0))
    parallel = line(sizes, -0.5, (2000, 50.0))
    diverging = line(sizes, -0.2, (200, 100.0 * (200 / 2000) ** -0.5))  # met at 200 frames, before the data
    for other in (parallel, diverging):
        cross = reported_crossover(a, other)
        assert cross.size is None and not cross.within_range
        assert cross.describe() == "no crossover within range (≤ 20,000,000 frames)"


def test_the_study_crossovers_are_within_range():
    """The study's ~720k frames (energy) lies 3.8× beyond its largest training set of 190,560 frames."""
    sizes = [2000, 10_000, 50_000, 190_560]
    scratch, transfer = line(sizes, -0.615, (720_000, 15.0)), line(sizes, -0.301, (720_000, 15.0))
    assert reported_crossover(scratch, transfer).reported == pytest.approx(720_000, rel=1e-6)
