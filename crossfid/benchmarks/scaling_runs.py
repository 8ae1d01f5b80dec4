"""The scaling-law benchmark: train methods at nested training sizes of one split, fit log-log lines, store them.

For each method and size, the run that trained it is reused when one exists
(same split, method, base model, size and hyperparameters, completed), otherwise
it is trained. The best validation MAEs of the runs are fitted as
``log10(MAE) = intercept + slope · log10(size)`` over sizes above ``min_size``;
with two or more methods, the sizes where their lines cross are extrapolated,
within the range :func:`crossfid.benchmarks.scaling.reported_crossover` allows.
The result is one ``benchmark_runs`` row per method (subject: the method) with
the slope, intercept and R² of energy and force, and per other method the
crossover (None when there is none within range) and the range's limit (frames).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crossfid.benchmarks.store import Metric, finish_run, start_run
from crossfid.curation.split_store import resolve_split
from crossfid.db.models import SplitSubset, TrainingEpoch, TrainingRun
from crossfid.errors import InputError
from crossfid.hashing import benchmark_run_key, json_digest
from crossfid.training.hyperparameters import Hyperparameters
from crossfid.training.loop import EpochResult
from crossfid.training.runs import TrainRequest, run_training
from crossfid.training.runs import start_run as start_training

NAME = "scaling-law"
VERSION = 2  # 2: crossovers only within range, with their limit


@dataclass(frozen=True)
class ScalingPoint:
    method: str
    size: int
    run_id: int
    val_energy_mae: float | None  # meV/atom, best epoch
    val_force_mae: float | None  # meV/Å, at the best epoch


def _existing_run(session: Session, split_id: int, method: str, base_model_id: int, size: int, hp: Hyperparameters):
    return session.scalars(
        select(TrainingRun)
        .where(
            TrainingRun.split_id == split_id,
            TrainingRun.method == method,
            TrainingRun.base_model_id == base_model_id,
            TrainingRun.subset_size == size,
            TrainingRun.status == "completed",
            TrainingRun.hyperparameters == hp.to_dict(),
        )
        .order_by(TrainingRun.id.desc())
        .limit(1)
    ).one_or_none()


def _point(session: Session, run: TrainingRun) -> ScalingPoint:
    best = session.scalars(
        select(TrainingEpoch).where(TrainingEpoch.run_id == run.id, TrainingEpoch.epoch == run.best_epoch)
    ).one_or_none()
    return ScalingPoint(
        run.method,
        run.subset_size,
        run.id,
        None if best is None else best.val_energy_mae,
        None if best is None else best.val_force_mae,
    )


def scaling_points(
    engine: Engine,
    split: str | int,
    methods: Sequence[str],
    sizes: Sequence[int],
    hp: Hyperparameters,
    *,
    base: str = "chgnet-0.3.0",
    device: str = "auto",
    training: Callable[[str, int, int], Callable[[EpochResult], None]] | None = None,
) -> list[ScalingPoint]:
    """One point per (method, size): the completed run that trained it, trained now when there is none.

    ``training(method, size, run_id)``: the ``on_epoch`` callback of a new run (e.g. one that reports its epochs).
    """
    from crossfid.training.registry import resolve_model

    with Session(engine) as session, session.begin():
        split_id = resolve_split(session, split).id
        available = set(session.scalars(select(SplitSubset.size).where(SplitSubset.split_id == split_id)))
        missing = sorted(set(sizes) - available)
        if missing:
            raise InputError(
                f"split {split_id} has no nested training subsets of sizes {missing}; it has {sorted(available)} "
                "(subsets are made with `crossfid dataset split --subsets`)"
            )
        base_id = resolve_model(session, base).id
    points = []
    for method in methods:
        for size in sorted(sizes):
            with Session(engine) as session:
                run = _existing_run(session, split_id, method, base_id, size, hp)
                run_id = None if run is None else run.id
            if run_id is None:
                request = TrainRequest(
                    split=split_id, method=method, base=base, train_size=size, hyperparameters=hp, device=device
                )
                run_id = start_training(engine, request)
                run_training(engine, run_id, on_epoch=None if training is None else training(method, size, run_id))
            with Session(engine) as session:
                points.append(_point(session, session.get(TrainingRun, run_id)))
    return points


def fit_and_store(engine: Engine, split: str | int, points: list[ScalingPoint], *, min_size: int) -> dict[str, Any]:
    """Fit energy and force lines per method, store one benchmark run per method, return the fits and crossovers.

    ``crossovers``: ``{(method a, method b, quantity): Crossover | None}`` (None: a method has no fit).
    """
    from crossfid.benchmarks.scaling import MAX_CROSSOVER_FRAMES, MAX_EXTRAPOLATION, fit_scaling_law, reported_crossover

    with Session(engine) as session:
        split_row = resolve_split(session, split)
        split_id, split_hash = split_row.id, split_row.content_hash
    fits: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(p.method for p in points):
        mine = [p for p in points if p.method == method]
        fits[method] = {}
        for quantity, attr in (("energy", "val_energy_mae"), ("force", "val_force_mae")):
            usable = [(p.size, getattr(p, attr)) for p in mine if getattr(p, attr) is not None]
            try:
                fits[method][quantity] = fit_scaling_law(
                    [s for s, _ in usable], [v for _, v in usable], min_size=min_size
                )
            except ValueError:
                fits[method][quantity] = None
    crossings = {}
    methods = list(fits)
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            for quantity in ("energy", "force"):
                fa, fb = fits[a][quantity], fits[b][quantity]
                crossings[(a, b, quantity)] = None if fa is None or fb is None else reported_crossover(fa, fb)
    for method in methods:
        data = {"split_id": split_id, "points": [p.__dict__ for p in points if p.method == method]}
        data_hash = json_digest({"split": split_hash, "points": data["points"]})
        parameters = {
            "min_size": min_size,
            "max_extrapolation": MAX_EXTRAPOLATION,
            "max_crossover_frames": MAX_CROSSOVER_FRAMES,
        }
        key = benchmark_run_key(NAME, VERSION, method, data_hash, parameters)
        run_id = start_run(
            engine,
            benchmark=NAME,
            version=VERSION,
            key=key,
            data_hash=data_hash,
            data=data,
            parameters=parameters,
            method=method,
            split_id=split_id,
        )
        metrics = []
        for quantity in ("energy", "force"):
            fit = fits[method][quantity]
            n = 0 if fit is None else fit.n
            metrics += [
                Metric(f"{quantity}_slope", None if fit is None else fit.slope, "log-log", n),
                Metric(f"{quantity}_intercept", None if fit is None else fit.intercept, "log10", n),
                Metric(f"{quantity}_r2", None if fit is None else fit.r2, "", n),
            ]
        for (a, b, quantity), cross in crossings.items():
            if method in (a, b):
                other = b if method == a else a
                metrics += [
                    Metric(f"{quantity}_crossover:{other}", None if cross is None else cross.reported, "frames", 2),
                    Metric(f"{quantity}_crossover_limit:{other}", None if cross is None else cross.limit, "frames", 2),
                ]
        _finish_unique(engine, run_id, key, metrics)
    return {"fits": fits, "crossovers": crossings}


def _finish_unique(engine: Engine, run_id: int, key: str, metrics: list[Metric]) -> None:
    """Complete the run, or drop it when a completed run with the same key exists (same points, same fit)."""
    from sqlalchemy import delete

    from crossfid.benchmarks.store import completed_run
    from crossfid.db.models import BenchmarkRun

    with Session(engine) as session:
        done = completed_run(session, key)
    if done is not None:
        with engine.begin() as conn:
            conn.execute(delete(BenchmarkRun).where(BenchmarkRun.id == run_id))
        return
    finish_run(engine, run_id, metrics, [])
