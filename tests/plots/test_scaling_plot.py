"""The scaling-law figure marks crossovers within range only (no database)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from crossfid.benchmarks.scaling import fit_scaling_law, reported_crossover
from crossfid.plots.pngdata import read_data
from crossfid.plots.scaling import plot_scaling_law

SIZES = [2000, 5000, 20_000]


def _method(name: str, slope: float, through: tuple[float, float]):
    size0, mae0 = through
    maes = [mae0 * (s / size0) ** slope for s in SIZES]
    points = [SimpleNamespace(method=name, size=s, val_energy_mae=m) for s, m in zip(SIZES, maes, strict=True)]
    return points, {"energy": fit_scaling_law(SIZES, maes, min_size=0)}


def test_only_crossovers_within_range_are_drawn(tmp_path: Path) -> None:
    methods = {
        "scratch": _method("scratch", -0.6, (50_000, 10.0)),
        "transfer": _method("transfer", -0.3, (50_000, 10.0)),  # meets scratch at 50k frames: within range
        "slow": _method("slow", -0.59, (2000, 40.0)),  # meets scratch ~1e77 frames away: out of range
    }
    points = [p for pts, _ in methods.values() for p in pts]
    fits = {name: fit for name, (_, fit) in methods.items()}
    crossovers = {
        ("scratch", "transfer", "energy"): reported_crossover(fits["scratch"]["energy"], fits["transfer"]["energy"]),
        ("scratch", "slow", "energy"): reported_crossover(fits["scratch"]["energy"], fits["slow"]["energy"]),
        ("transfer", "slow", "energy"): None,
    }
    far = crossovers[("scratch", "slow", "energy")]
    assert far.size is not None and far.size > 1e9 and not far.within_range

    data = read_data(plot_scaling_law(tmp_path / "scaling.png", points, fits, crossovers))
    assert [(c["a"], c["b"]) for c in data["crossovers"]] == [("scratch", "transfer")]
    assert data["crossovers"][0]["size"] == pytest.approx(50_000)
    assert data["crossovers"][0]["val_energy_mae"] == pytest.approx(10.0)
    assert data["x_limits"][1] < 1e6  # nothing reaches towards the far crossing

    plain = read_data(plot_scaling_law(tmp_path / "plain.png", points, fits))
    assert plain["crossovers"] == [] and set(plain["methods"]) == set(methods)
