"""What a training run recorded, read back for figures: its curve and its first-epoch gradient ranges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from crossfid.db.models import TrainingEpoch, TrainingGradient, TrainingRun
from crossfid.errors import NotFoundError


@dataclass(frozen=True)
class RunHistory:
    """Energy MAEs per epoch (meV/atom) and |gradient| records of the first epoch of one run."""

    run_id: int
    method: str
    epochs: list[int]
    train_energy_mae: list[float | None]
    val_energy_mae: list[float | None]
    gradients: list[dict]  # step, fraction, layer, abs_min, abs_max, abs_mean

    @property
    def label(self) -> str:
        return f"run {self.run_id}: {self.method}"


def load_histories(engine: Engine, run_ids: Sequence[int]) -> list[RunHistory]:
    """The histories of the given runs, in the order asked (unknown ids are an error)."""
    out = []
    with Session(engine) as session:
        for run_id in run_ids:
            run = session.get(TrainingRun, int(run_id))
            if run is None:
                raise NotFoundError(f"no training run {run_id}")
            epochs = session.scalars(
                select(TrainingEpoch).where(TrainingEpoch.run_id == run.id).order_by(TrainingEpoch.epoch)
            ).all()
            grads = session.scalars(
                select(TrainingGradient)
                .where(TrainingGradient.run_id == run.id)
                .order_by(TrainingGradient.epoch, TrainingGradient.step, TrainingGradient.layer)
            ).all()
            out.append(
                RunHistory(
                    run_id=run.id,
                    method=run.method,
                    epochs=[e.epoch for e in epochs],
                    train_energy_mae=[e.train_energy_mae for e in epochs],
                    val_energy_mae=[e.val_energy_mae for e in epochs],
                    gradients=[
                        {
                            "step": g.step,
                            "fraction": g.fraction,
                            "layer": g.layer,
                            "abs_min": g.abs_min,
                            "abs_max": g.abs_max,
                            "abs_mean": g.abs_mean,
                        }
                        for g in grads
                    ],
                )
            )
    return out


def run_table(engine: Engine) -> tuple[list[str], list[tuple]]:
    """Every training run (by id): method, data, status, epochs and test MAEs of the best weights.

    Returns column names and rows; the MAEs are rounded (meV/atom and meV/Å to 0.1, GPa and μB to 0.001).
    """
    query = text(
        "SELECT id, method, dataset, split_id, subset_size, base_model, atomref, status, epochs_completed, epochs, "
        "round(test_energy_mae::numeric, 1) AS test_e, round(test_force_mae::numeric, 1) AS test_f, "
        "round(test_stress_mae::numeric, 3) AS test_s, round(test_magmom_mae::numeric, 3) AS test_m "
        "FROM v_training_runs ORDER BY id"
    )
    with engine.connect() as conn:
        result = conn.execute(query)
        return list(result.keys()), [tuple(row) for row in result]


def load_run(engine: Engine, run_id: int) -> tuple[TrainingRun, list[TrainingEpoch]]:
    """A training run's row and its epochs in order (detached from the session); unknown ids are an error."""
    with Session(engine, expire_on_commit=False) as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise NotFoundError(f"no training run {run_id}")
        epochs = session.scalars(
            select(TrainingEpoch).where(TrainingEpoch.run_id == run_id).order_by(TrainingEpoch.epoch)
        ).all()
        return run, list(epochs)
