"""The test-rmse benchmark: root-mean-square energy and force errors on a split's test frames.

The RMSE weighs large errors more than the MAE of ``test-mae`` does, so a model with
rare bad predictions stands out. Same frames and the same predictions as ``test-mae``
(shared within a refresh); energies meV/atom, forces meV/Å over force components;
frames without a label do not count.
"""

from __future__ import annotations

import numpy as np

from crossfid.benchmarks.registry import Context, MetricSpec, Prepared
from crossfid.benchmarks.store import ItemResult, Metric
from crossfid.benchmarks.suite import TestSetMae
from crossfid.db.models import ModelRow


def rmse(errors: list[np.ndarray], scale: float) -> tuple[float | None, int]:
    """Root mean square of all finite values of ``errors`` times ``scale``, and how many there were."""
    values = np.concatenate([np.ravel(e) for e in errors]) if errors else np.zeros(0)
    values = values[np.isfinite(values)]
    return (float(scale * np.sqrt(np.mean(values**2))) if values.size else None), int(values.size)


class TestSetRmse(TestSetMae):
    """Energy and force RMSE on the test frames (the test-mae benchmark's data and predictions)."""

    __test__ = False  # not a pytest test class
    name = "test-rmse"
    version = 1
    metrics = (
        MetricSpec("energy_rmse", "meV/atom", column="test_energy_rmse", page=True),
        MetricSpec("force_rmse", "meV/Å", column="test_force_rmse", page=True),
    )

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        energy, force = [], []
        for frame, pred in zip(prepared.payload, self.predictions(ctx, model, prepared), strict=True):
            energy.append(np.array([frame.energy_per_atom - float(pred["e"])]))
            if frame.forces is not None:
                force.append(np.asarray(frame.forces, dtype=float).ravel() - pred["f"].ravel())
        metrics = []
        for spec, errors in zip(self.metrics, (energy, force), strict=True):
            value, n = rmse(errors, 1000.0)
            metrics.append(Metric(spec.name, value, spec.unit, n))
        return metrics, []  # per-frame errors are test-mae's items
