"""Training runs from database splits: set up, train with per-epoch rows, checkpoint, resume, test, register.

A run is a ``training_runs`` row written before the first step. As each epoch
ends, its metrics go to ``training_epochs`` and the full training state (weights,
optimiser, scheduler, random generators) to ``<checkpoint_dir>/last.pt``; the
best-validation weights go to ``best.pt``. A run killed part-way is continued by
:func:`resume_run` from ``last.pt``: epoch rows are keyed by (run, epoch) and
written with ``ON CONFLICT DO NOTHING``, so they continue without duplicates. At
the end the best weights are evaluated on the test part and both weight files
are registered in ``models``.

AtomRef of the model: methods 2 and 3 keep the base model's (the shipped AtomRef
of its composition model); methods 1 and 4 use the target AtomRef (default: the
split's train-part fit with chgnet's shipped AtomRef of the target fidelity as its
prior and fill: element energies the data determines come from the data alone;
combinations it cannot separate are pulled towards, and absent elements taken
from, the shipped values). Elements that neither has a value for take the base
model's value, and the run's warnings list them: they occur in none of the
split's frames, so they do not affect training or its test MAEs.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

import crossfid
from crossfid.curation.split_store import resolve_split
from crossfid.db.models import Dataset, SplitMember, SplitSubset, TrainingEpoch, TrainingGradient, TrainingRun
from crossfid.hashing import sha256_file
from crossfid.potentials.base import load_potential
from crossfid.potentials.chgnet import chgnet_version
from crossfid.referencing.atomref import DEFAULT_PRIOR_WEIGHT
from crossfid.referencing.composition import SYMBOLS
from crossfid.referencing.package_atomrefs import package_atomref_for
from crossfid.referencing.store import StoredAtomRef, fit_split_atomref, resolve_atomref
from crossfid.runtime.paths import DataDirs
from crossfid.runtime.signals import stop_on_signals
from crossfid.training.data import available_targets, frame_targets, load_split_frames, validate_frames
from crossfid.training.graph_cache import GraphCache
from crossfid.training.hyperparameters import Hyperparameters
from crossfid.training.loop import (
    EpochResult,
    GradientRecord,
    TrainingError,
    TrainState,
    evaluate,
    resolve_device,
    train,
)
from crossfid.training.methods import NEEDS_TARGET_ATOMREF, set_up_model
from crossfid.training.registry import (
    model_spec,
    register_trained_model,
    resolve_model,
    save_weights,
)


@dataclass(frozen=True)
class TrainRequest:
    """What ``crossfid train`` asks for."""

    split: str | int
    method: str
    base: str | int = "chgnet-0.3.0"
    atomref: str | int | None = None  # target AtomRef for methods 1 and 4 (default: the split's filled fit)
    train_size: int | None = None  # a nested training subset of the split
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    device: str = "auto"


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    status: str
    epochs_completed: int
    best_epoch: int | None
    test_metrics: dict[str, Any] | None
    models: dict[str, int]  # role → model id
    graph_cache: dict[str, Any]
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------- AtomRef of the model


def model_atomref(
    session: Session, method: str, base_atomref: StoredAtomRef, split_id: int, fidelities: list[str], ref
) -> tuple[StoredAtomRef, np.ndarray, list[str]]:
    """The AtomRef row a run records, the 94 values put into the model, and warnings about them."""
    if method not in NEEDS_TARGET_ATOMREF:
        return base_atomref, base_atomref.values, []
    if ref is not None:
        target = resolve_atomref(session, ref)
    else:
        shipped = package_atomref_for(fidelities)
        target, _ = fit_split_atomref(
            session.get_bind(), split_id, fill_from=shipped, prior=shipped, prior_weight=DEFAULT_PRIOR_WEIGHT
        )
        target = resolve_atomref(session, target.id)
    values = target.values.copy()
    missing = np.flatnonzero(np.isnan(values))
    warnings = []
    if missing.size:
        values[missing] = base_atomref.values[missing]
        names = " ".join(SYMBOLS[j] for j in missing)
        warnings.append(
            f"AtomRef {target.name} has no value for {names}: the base model's values are used for them "
            "(they occur in no frame of the split)"
        )
    return target, values, warnings


# --------------------------------------------------------------------------- data


@dataclass
class _Data:
    train: list
    val: list
    test: list
    targets: str
    warnings: list[str]
    cache: dict[str, Any]


def _load_data(session: Session, split_id: int, subset_size: int | None, model: Any, hp: Hyperparameters) -> _Data:
    parts = {
        "train": load_split_frames(session, split_id, "train", subset_size=subset_size),
        "val": load_split_frames(session, split_id, "val"),
        "test": load_split_frames(session, split_id, "test"),
    }
    if not parts["train"]:
        raise TrainingError(f"split {split_id} has no training frames")
    problems = [f"{part}: {reason}" for part, frames in parts.items() for reason in validate_frames(frames)]
    if problems:
        raise TrainingError(f"{len(problems)} frames cannot be trained on: " + "; ".join(problems[:5]))
    targets, warnings = available_targets(parts["train"], hp.targets)
    cache = GraphCache(DataDirs.from_settings().graph_cache, model.graph_converter)
    items = {
        part: list(zip(cache.graphs(frames), (frame_targets(f, targets) for f in frames), strict=True))
        for part, frames in parts.items()
    }
    stats = {
        "key": cache.key,
        "hits": cache.hits,
        "misses": cache.misses,
        "convert_seconds": round(cache.convert_seconds, 3),
        "load_seconds": round(cache.load_seconds, 3),
    }
    return _Data(items["train"], items["val"], items["test"], targets, warnings, stats)


# --------------------------------------------------------------------------- database writes


def _write_epoch(engine: Engine, run_id: int, result: EpochResult, state: TrainState) -> None:
    def part(prefix: str, metrics) -> dict[str, Any]:
        if metrics is None:
            return {}
        return {
            f"{prefix}_energy_mae": metrics.energy_mae,
            f"{prefix}_force_mae": metrics.force_mae,
            f"{prefix}_stress_mae": metrics.stress_mae,
            f"{prefix}_magmom_mae": metrics.magmom_mae,
            f"{prefix}_loss": metrics.loss,
        }

    row = {
        "run_id": run_id,
        "epoch": result.epoch,
        **part("train", result.train),
        **part("val", result.val),
        "learning_rate": result.learning_rate,
        "seconds": result.seconds,
        "compute_seconds": result.compute_seconds,
        "val_seconds": result.val_seconds,
        "other_seconds": result.other_seconds,
    }
    with engine.begin() as conn:
        conn.execute(insert(TrainingEpoch).values(**row).on_conflict_do_nothing())
        conn.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(
                epochs_completed=result.epoch,
                best_epoch=state.best_epoch,
                best_val_energy_mae=state.best_val_energy_mae,
            )
        )


def _write_gradients(engine: Engine, run_id: int, records: list[GradientRecord]) -> None:
    rows = [
        {
            "run_id": run_id,
            "epoch": r.epoch,
            "step": r.step,
            "layer": r.layer,
            "parameter": r.parameter,
            "fraction": r.fraction,
            "abs_min": r.abs_min,
            "abs_max": r.abs_max,
            "abs_mean": r.abs_mean,
        }
        for r in records
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(TrainingGradient).values(rows).on_conflict_do_nothing())


def _set_status(engine: Engine, run_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(**values))


# --------------------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, model: Any, state: TrainState) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"model": model.state_dict(), "train_state": state.state_dict()}, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the run


def start_run(engine: Engine, request: TrainRequest) -> int:
    """Create the ``training_runs`` row for a request (data, AtomRef and settings resolved) and return its id."""
    hp = request.hyperparameters
    device = resolve_device(request.device)
    with Session(engine) as session, session.begin():
        split = resolve_split(session, request.split)
        if split.content_hash is None:
            raise TrainingError(f"split {split.id} is not frozen")
        dataset = session.get(Dataset, split.dataset_id)
        base = resolve_model(session, request.base)
        if base.role == "peer":
            raise TrainingError(f"{base.name} is a peer model: peers are benchmarked, not fine-tuned")
        base_atomref = resolve_atomref(session, base.atomref_id) if base.atomref_id else None
        if base_atomref is None:
            raise TrainingError(f"base model {base.name} has no registered AtomRef")
        atomref, _, warnings = model_atomref(
            session, request.method, base_atomref, split.id, list(dataset.fidelities), request.atomref
        )
        subset_hash = None
        if request.train_size is not None:
            subset = session.get(SplitSubset, (split.id, request.train_size))
            if subset is None:
                raise TrainingError(f"split {split.id} has no training subset of {request.train_size} frames")
            subset_hash = subset.content_hash
        counts = _part_counts(session, split.id)
        if request.train_size is not None:
            counts["train"] = request.train_size
        if counts["train"] == 0:
            raise TrainingError(f"split {split.id} has no training frames")
        run = TrainingRun(
            method=request.method,
            base_model_id=base.id,
            split_id=split.id,
            split_hash=split.content_hash,
            dataset_hash=dataset.content_hash,
            subset_size=request.train_size,
            subset_hash=subset_hash,
            atomref_id=atomref.id,
            fidelities=list(dataset.fidelities),
            hyperparameters=hp.to_dict(),
            targets=hp.targets,
            warnings=warnings,
            device=device,
            seed=hp.seed,
            n_train=counts["train"],
            n_val=counts["val"],
            n_test=counts["test"],
            checkpoint_dir="",
            versions={"crossfid": crossfid.__version__, "chgnet": chgnet_version(), **_torch_versions()},
            host=platform.node(),
        )
        session.add(run)
        session.flush()
        run.checkpoint_dir = str(DataDirs.from_settings().runs / f"run-{run.id}")
        return run.id


def _part_counts(session: Session, split_id: int) -> dict[str, int]:
    rows = session.execute(
        select(SplitMember.part, func.count()).where(SplitMember.split_id == split_id).group_by(SplitMember.part)
    ).all()
    return {"train": 0, "val": 0, "test": 0} | {part: n for part, n in rows}


def _torch_versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__, "cuda": str(torch.version.cuda)}


def run_training(
    engine: Engine, run_id: int, *, resume: bool = False, on_epoch: Callable[[EpochResult], None] | None = None
) -> RunSummary:
    """Train (or continue) the run ``run_id`` to its last epoch, then test and register its weights.

    ``on_epoch(result)`` is called after each epoch is stored (e.g. to report progress).
    """
    import torch

    with Session(engine) as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise TrainingError(f"no training run {run_id}")
        if run.status == "completed":
            raise TrainingError(f"run {run_id} is already completed")
        if not resume and run.epochs_completed:
            raise TrainingError(f"run {run_id} has {run.epochs_completed} epochs: resume it instead")
        hp = Hyperparameters.from_dict(run.hyperparameters)
        base = resolve_model(session, run.base_model_id)
        base_atomref = resolve_atomref(session, base.atomref_id)
        atomref_ref = None if run.method not in NEEDS_TARGET_ATOMREF else run.atomref_id
        _, values, _ = model_atomref(session, run.method, base_atomref, run.split_id, run.fidelities, atomref_ref)
        model = set_up_model(run.method, load_potential(model_spec(base)), values, seed=hp.seed)
        data = _load_data(session, run.split_id, run.subset_size, model, hp)
        method, device, checkpoint_dir = run.method, run.device, Path(run.checkpoint_dir)
        fidelities, atomref_id = list(run.fidelities), run.atomref_id
        warnings = list(dict.fromkeys([*run.warnings, *data.warnings]))
    model = model.to(device)
    state = None
    last = checkpoint_dir / "last.pt"
    if resume and last.exists():
        saved = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        state = TrainState.from_state_dict(model, hp, len(data.train), saved["train_state"])
    _set_status(engine, run_id, status="running", warnings=warnings, graph_cache=data.cache, targets=data.targets)

    def epoch_done(result: EpochResult, current: TrainState) -> None:
        # the row first: a crash before the checkpoint repeats the epoch, whose row is then already there
        _write_epoch(engine, run_id, result, current)
        if current.best_epoch == result.epoch:
            save_weights(model, checkpoint_dir / "best.pt", {"run_id": run_id, "epoch": result.epoch})
        _save_checkpoint(last, model, current)
        if on_epoch is not None:
            on_epoch(result)

    stop = threading.Event()
    restore = stop_on_signals(stop)
    should_stop = stop.is_set
    try:
        state = train(
            model,
            data.train,
            data.val,
            hp.with_overrides(targets=data.targets),
            device=device,
            state=state,
            on_epoch=epoch_done,
            on_gradients=lambda records: _write_gradients(engine, run_id, records),
            should_stop=should_stop,
        )
    except BaseException as exc:
        _set_status(engine, run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        restore()
    if state.epoch < hp.epochs:
        _set_status(engine, run_id, status="interrupted")
        return _summary(engine, run_id, {})
    return _finish(engine, run_id, model, state, data, hp, method, fidelities, atomref_id, checkpoint_dir, device)


def _finish(
    engine, run_id, model, state, data, hp, method, fidelities, atomref_id, checkpoint_dir, device
) -> RunSummary:
    import torch

    last_sha = save_weights(model, checkpoint_dir / "last-weights.pt", {"run_id": run_id, "epoch": state.epoch})
    best_path = checkpoint_dir / "best.pt"
    best = torch.load(best_path, map_location=device, weights_only=False)
    model.load_state_dict(best["model"]["state_dict"])
    test = evaluate(model, data.test, data.targets, hp, device) if data.test else None
    test_metrics = None if test is None else _metrics_dict(test)
    models = {}
    with Session(engine) as session, session.begin():
        for role, path, sha, epoch in (
            ("best", best_path, sha256_file(best_path), state.best_epoch),
            ("last", checkpoint_dir / "last-weights.pt", last_sha, state.epoch),
        ):
            row = register_trained_model(
                session,
                name=f"run-{run_id}-{role}",
                path=path,
                sha256=sha,
                run_id=run_id,
                role=role,
                epoch=epoch,
                fidelities=fidelities,
                atomref_id=atomref_id,
                n_parameters=int(sum(p.numel() for p in model.parameters())),
                provenance={"method": method, "test_metrics": test_metrics if role == "best" else None},
            )
            models[role] = row.id
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(status="completed", test_metrics=test_metrics, finished_at=dt.datetime.now(dt.UTC))
        )
    return _summary(engine, run_id, models)


def _metrics_dict(metrics) -> dict[str, Any]:
    return {
        "energy_mae": metrics.energy_mae,
        "force_mae": metrics.force_mae,
        "stress_mae": metrics.stress_mae,
        "magmom_mae": metrics.magmom_mae,
        "n_structures": metrics.n_structures,
        "units": {"energy_mae": "meV/atom", "force_mae": "meV/Å", "stress_mae": "GPa", "magmom_mae": "μB"},
    }


def _summary(engine: Engine, run_id: int, models: dict[str, int]) -> RunSummary:
    with Session(engine) as session:
        run = session.get(TrainingRun, run_id)
        return RunSummary(
            run_id=run.id,
            status=run.status,
            epochs_completed=run.epochs_completed,
            best_epoch=run.best_epoch,
            test_metrics=run.test_metrics,
            models=models,
            graph_cache=dict(run.graph_cache or {}),
            warnings=tuple(run.warnings),
        )


def train_split(
    engine: Engine, request: TrainRequest, *, on_epoch: Callable[[EpochResult], None] | None = None
) -> RunSummary:
    """Start a run for ``request`` and train it to the end (``on_epoch`` as :func:`run_training`)."""
    return run_training(engine, start_run(engine, request), on_epoch=on_epoch)


def resume_run(engine: Engine, run_id: int, *, on_epoch: Callable[[EpochResult], None] | None = None) -> RunSummary:
    """Continue an interrupted or killed run from its last checkpoint (``on_epoch`` as :func:`run_training`)."""
    return run_training(engine, run_id, resume=True, on_epoch=on_epoch)
