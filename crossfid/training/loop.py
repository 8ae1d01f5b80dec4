"""A training loop for CHGNet on top of chgnet's model and ``CombinedLoss`` (not chgnet's ``Trainer``).

Data are :data:`Item` pairs ``(CrystalGraph, labels)`` with labels as chgnet's
``collate_graphs`` expects: ``e`` energy (eV/atom, scalar), ``f`` forces (eV/Å,
``[n_atoms, 3]``), ``s`` stress (GPa, ``[3, 3]``, the model's sign convention),
``m`` magnetic moments (μB, ``[n_atoms]``, or ``None`` when unknown).

The loop has no database or file access: the caller persists through the
callbacks (``on_epoch`` for rows and checkpoints, ``on_gradients`` for the
gradient statistics of the study's Fig. 3a) and asks it to stop with
``should_stop``. A run is resumable: the caller saves the model weights and
:meth:`TrainState.state_dict` after an epoch, and the resumed run reproduces the
uninterrupted one (the shuffle order of epoch *k* depends only on ``(seed, k)``).

Metrics are chgnet's ``CombinedLoss`` MAEs, averaged over batches weighted by
their sizes (so the mean |error| over all labelled components,
:func:`crossfid.training.metrics.reported_mae`), in meV/atom (energy), meV/Å (forces),
GPa (stress) and μB (magmoms).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from chgnet.data.dataset import collate_graphs
from chgnet.graph import CrystalGraph
from chgnet.trainer.trainer import CombinedLoss
from torch import Tensor

from crossfid.errors import InputError, StateError
from crossfid.training.hyperparameters import Hyperparameters, canonical_targets
from crossfid.training.metrics import QUANTITIES, reported_mae

if TYPE_CHECKING:
    from chgnet.model import CHGNet

#: (graph, per-structure labels as chgnet's ``collate_graphs`` expects)
Item = tuple[CrystalGraph, dict[str, Tensor | None]]

#: named layers whose gradient magnitude range is recorded (the study's Fig. 3a), label → CHGNet
#: v0.3.0 parameter (one weight tensor per layer: the first linear map of the core MLP of a
#: convolution); "AtomRef" is an addition, recorded only when the method trains it
GRADIENT_LAYERS: dict[str, str] = {
    "atom embedding": "atom_embedding.embedding.weight",
    "bond embedding": "bond_embedding.weight",
    "angle embedding": "angle_embedding.weight",
    "first atom convolution": "atom_conv_layers.0.twoBody_atom.mlp_core.layers.0.weight",
    "last atom convolution": "atom_conv_layers.3.twoBody_atom.mlp_core.layers.0.weight",
    "first bond convolution": "bond_conv_layers.0.twoBody_bond.mlp_core.layers.0.weight",
    "last bond convolution": "bond_conv_layers.2.twoBody_bond.mlp_core.layers.0.weight",
    "first readout MLP layer": "mlp.layers.0.weight",
    "AtomRef": "composition_model.fc.weight",
}


class TrainingError(StateError, ValueError):
    """Training cannot go on: bad inputs or requests, a state that does not fit the run, or a diverged model.

    A :class:`crossfid.errors.StateError` (so a ``RuntimeError``) and a ``ValueError``, as the loop and
    the run orchestration raised before they shared this class.
    """


class DeviceError(InputError):
    """A device that does not exist on this machine."""


@dataclass(frozen=True)
class PartMetrics:
    """Mean errors over one part of the data; ``None`` for targets not trained/evaluated (or without labels)."""

    energy_mae: float | None  # meV/atom
    force_mae: float | None  # meV/Å
    stress_mae: float | None  # GPa
    magmom_mae: float | None  # μB
    loss: float | None  # CombinedLoss value (weighted sum of criteria), structure-weighted mean
    n_structures: int


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch; times in seconds, ``seconds = compute + val + other`` (callbacks excluded)."""

    epoch: int  # 1-based
    train: PartMetrics
    val: PartMetrics | None
    learning_rate: float  # after the epoch's last scheduler step
    seconds: float  # the whole epoch: training, gradient statistics, validation
    compute_seconds: float  # training forward + loss + backward + optimiser and scheduler steps
    other_seconds: float  # batching, moving to the device, metrics, gradient statistics and their callback
    val_seconds: float = 0.0  # evaluation of the validation part


@dataclass(frozen=True)
class GradientRecord:
    """The range of |gradient| of one named parameter at one optimiser step (before the step)."""

    epoch: int
    step: int  # optimiser step within the epoch, 1-based
    fraction: float  # step / steps per epoch
    layer: str  # label in GRADIENT_LAYERS
    parameter: str
    abs_min: float
    abs_max: float
    abs_mean: float


@dataclass
class TrainState:
    """Everything a run needs to go on besides the data: model, optimiser, scheduler, progress.

    ``best_val_energy_mae`` (meV/atom) is the validation energy MAE, or the
    training one when there is no validation part. ``rng_states`` are the
    global RNG states captured at the end of the last epoch.
    """

    model: CHGNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0  # completed epochs
    best_val_energy_mae: float | None = None
    best_epoch: int | None = None
    rng_states: dict[str, Any] | None = None

    @classmethod
    def create(cls, model: CHGNet, hp: Hyperparameters, n_train: int) -> TrainState:
        """A fresh state for training ``model`` on ``n_train`` structures (load a checkpoint into it to resume)."""
        optimizer, scheduler = make_optimizer_and_scheduler(model, hp, steps_per_epoch(n_train, hp.batch_size))
        return cls(model, optimizer, scheduler)

    @classmethod
    def from_state_dict(cls, model: CHGNet, hp: Hyperparameters, n_train: int, d: dict[str, Any]) -> TrainState:
        """:meth:`create` then :meth:`load_state_dict`: the state to resume from a checkpoint (model weights loaded)."""
        state = cls.create(model, hp, n_train)
        state.load_state_dict(d)
        return state

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, scheduler, progress and RNG states (tensors and plain values: ``torch.load(weights_only=True)``
        reads it). The model weights are not included: save them beside it."""
        return {
            "epoch": self.epoch,
            "best_val_energy_mae": self.best_val_energy_mae,
            "best_epoch": self.best_epoch,
            "trainable": _trainable_names(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng_states if self.rng_states is not None else capture_rng_states(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` into a state made by :meth:`create` for a model with the saved weights."""
        trainable = _trainable_names(self.model)
        if list(d["trainable"]) != trainable:
            extra = sorted(set(trainable) - set(d["trainable"]))
            missing = sorted(set(d["trainable"]) - set(trainable))
            raise TrainingError(
                "the checkpoint was trained with other trainable parameters (set the model up with the same "
                f"method); now trainable but not then: {extra or 'none'}; then but not now: {missing or 'none'}"
            )
        self.optimizer.load_state_dict(d["optimizer"])
        self.scheduler.load_state_dict(d["scheduler"])
        self.epoch = int(d["epoch"])
        self.best_val_energy_mae = d["best_val_energy_mae"]
        self.best_epoch = d["best_epoch"]
        self.rng_states = d["rng"]


def resolve_device(name: str) -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; a named device must exist here."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = name.split(":", 1)[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was asked for but torch sees no CUDA GPU here; use 'cpu' or 'auto'")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name!r} was asked for but MPS is not available here; use 'cpu' or 'auto'")
    if kind not in {"cpu", "cuda", "mps"}:
        raise DeviceError(f"unknown device {name!r}; one of auto, cpu, cuda, cuda:N, mps")
    return name


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    """Optimiser steps per epoch (the last batch may be smaller)."""
    return math.ceil(n_items / batch_size)


def make_optimizer_and_scheduler(
    model: CHGNet, hp: Hyperparameters, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """Optimiser over the ``requires_grad`` parameters; cosine decay to ``final_learning_rate``, stepped per batch."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise TrainingError("the model has no trainable parameter")
    if hp.optimizer == "SGD":
        optimizer = torch.optim.SGD(parameters, hp.learning_rate, momentum=0.9)
    else:
        optimizer = getattr(torch.optim, hp.optimizer)(parameters, hp.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=hp.epochs * steps_per_epoch, eta_min=hp.final_learning_rate
    )
    return optimizer, scheduler


def make_loss(hp: Hyperparameters, targets: str | None = None) -> CombinedLoss:
    """chgnet's CombinedLoss with the run's criterion and weights; labels may be missing (NaN/None)."""
    return CombinedLoss(
        target_str=canonical_targets(targets or hp.targets),
        criterion=hp.loss,
        energy_loss_ratio=hp.energy_weight,
        force_loss_ratio=hp.force_weight,
        stress_loss_ratio=hp.stress_weight,
        mag_loss_ratio=hp.magmom_weight,
        delta=hp.huber_delta,
        allow_missing_labels=True,
    )


def batches(
    items: Sequence[Item], batch_size: int, *, shuffle: bool, rng: np.random.Generator | None = None
) -> Iterator[tuple[list[CrystalGraph], dict[str, Any]]]:
    """Batches collated by chgnet's ``collate_graphs``, in a permutation drawn from ``rng`` when shuffling."""
    if shuffle and rng is None:
        raise ValueError("shuffling needs an rng")
    order = rng.permutation(len(items)) if shuffle else np.arange(len(items))
    for start in range(0, len(items), batch_size):
        yield collate_graphs([items[i] for i in order[start : start + batch_size]])


def evaluate(
    model: CHGNet,
    items: Sequence[Item],
    targets: str | None,
    hp: Hyperparameters,
    device: str | torch.device = "cpu",
) -> PartMetrics:
    """Errors of ``model`` on ``items`` (``targets`` None: the run's); in eval mode, no weights change.

    Energies alone are computed without autograd; forces and stress are energy
    derivatives, so they need it (as in chgnet's ``Trainer._validate``).
    """
    if not isinstance(hp, Hyperparameters):
        raise TypeError(f"evaluate(model, items, targets, hp, device): hp must be Hyperparameters, got {hp!r}")
    targets = canonical_targets(targets or hp.targets)
    _check_items(items, targets)
    device = torch.device(device)
    criterion = make_loss(hp, targets)
    meter = _Meter(targets)
    was_training = model.training
    model.eval()
    try:
        for graphs, labels in batches(items, hp.batch_size, shuffle=False):
            graphs, labels = _to_device(graphs, labels, device, targets)
            with torch.set_grad_enabled("f" in targets or "s" in targets):
                prediction = model(graphs, task=targets)
            with torch.no_grad():
                meter.add(criterion(labels, _detach(prediction)), len(graphs))
    finally:
        model.train(was_training)
    return meter.result()


def train(
    model: CHGNet,
    train_items: Sequence[Item],
    val_items: Sequence[Item] | None,
    hp: Hyperparameters,
    *,
    device: str | torch.device = "cpu",
    state: TrainState | None = None,
    on_epoch: Callable[[EpochResult, TrainState], None] | None = None,
    on_gradients: Callable[[list[GradientRecord]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainState:
    """Train ``model`` (``requires_grad`` flags as its method set them) for epochs ``state.epoch + 1 .. hp.epochs``.

    After each epoch the best-so-far fields are updated, then ``on_epoch`` is
    called (the caller writes a "best" checkpoint when ``best_epoch == epoch``),
    then ``should_stop``: when it returns True the loop returns early. A NaN
    energy error raises :class:`TrainingError` after ``on_epoch``.
    """
    if not train_items:
        raise TrainingError("no training structures")
    _check_items(train_items, hp.targets)
    if val_items:
        _check_items(val_items, hp.targets)
    device = torch.device(device)
    n_steps = steps_per_epoch(len(train_items), hp.batch_size)
    model.to(device)
    if state is None:
        state = TrainState.create(model, hp, len(train_items))
    _check_state(state, model, hp.epochs * n_steps)
    _move_optimizer_state(state.optimizer, device)
    if state.rng_states is None:
        _seed_everything(hp.seed)
    else:
        restore_rng_states(state.rng_states)
    criterion = make_loss(hp)
    for epoch in range(state.epoch + 1, hp.epochs + 1):
        result = _run_epoch(state, train_items, val_items, hp, criterion, epoch, device, on_gradients)
        state.epoch = epoch
        _update_best(state, result)
        state.rng_states = capture_rng_states()
        if on_epoch is not None:
            on_epoch(result, state)
        _check_finite(result)
        if should_stop is not None and should_stop():
            break
    return state


def gradient_sample_steps(n_steps: int, samples: int) -> list[int]:
    """``samples`` evenly spaced steps of ``1..n_steps`` ending at the last (fewer if the epoch has fewer steps)."""
    return sorted({-(-k * n_steps // samples) for k in range(1, samples + 1)}) if samples else []


def gradient_records(model: CHGNet, epoch: int, step: int, n_steps: int) -> list[GradientRecord]:
    """min/max/mean |grad| of every GRADIENT_LAYERS parameter that is trainable and has a gradient."""
    parameters = dict(model.named_parameters())
    records = []
    for layer, name in GRADIENT_LAYERS.items():
        parameter = parameters.get(name)
        if parameter is None or not parameter.requires_grad or parameter.grad is None:
            continue
        magnitude = parameter.grad.detach().abs()
        low, high, mean = torch.stack([magnitude.min(), magnitude.max(), magnitude.mean()]).tolist()
        records.append(GradientRecord(epoch, step, step / n_steps, layer, name, low, high, mean))
    return records


def capture_rng_states() -> dict[str, Any]:
    """The torch (and CUDA), numpy and python global RNG states, as tensors and plain values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position)}
        | {"has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64)}
        | {"gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the global RNGs to states from :func:`capture_rng_states`."""
    torch.set_rng_state(states["torch"].cpu())
    n = states["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


# ---------------------------------------------------------------------------------------------- internals


def _run_epoch(
    state: TrainState,
    train_items: Sequence[Item],
    val_items: Sequence[Item] | None,
    hp: Hyperparameters,
    criterion: CombinedLoss,
    epoch: int,
    device: torch.device,
    on_gradients: Callable[[list[GradientRecord]], None] | None,
) -> EpochResult:
    start = time.perf_counter()
    train_metrics, compute = _train_epoch(state, train_items, hp, criterion, epoch, device, on_gradients)
    val_start = time.perf_counter()
    val = evaluate(state.model, val_items, hp.targets, hp, device) if val_items else None
    end = time.perf_counter()
    seconds, val_seconds = end - start, end - val_start
    return EpochResult(
        epoch=epoch,
        train=train_metrics,
        val=val,
        learning_rate=state.optimizer.param_groups[0]["lr"],
        seconds=seconds,
        compute_seconds=compute,
        other_seconds=seconds - compute - val_seconds,
        val_seconds=val_seconds,
    )


def _train_epoch(
    state: TrainState,
    items: Sequence[Item],
    hp: Hyperparameters,
    criterion: CombinedLoss,
    epoch: int,
    device: torch.device,
    on_gradients: Callable[[list[GradientRecord]], None] | None,
) -> tuple[PartMetrics, float]:
    """One pass over shuffled ``items``; returns the metrics and the compute seconds."""
    model, targets = state.model, hp.targets
    n_steps = steps_per_epoch(len(items), hp.batch_size)
    sampled = set(gradient_sample_steps(n_steps, hp.gradient_samples)) if epoch == 1 and on_gradients else set()
    meter, compute = _Meter(targets), 0.0
    model.train()
    rng = np.random.default_rng([hp.seed, epoch])
    for step, (graphs, labels) in enumerate(batches(items, hp.batch_size, shuffle=True, rng=rng), start=1):
        graphs, labels = _to_device(graphs, labels, device, targets)
        tick = _clock(device)
        out = criterion(labels, model(graphs, task=targets))
        state.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        compute += _clock(device) - tick
        if step in sampled:
            on_gradients(gradient_records(model, epoch, step, n_steps))
        tick = _clock(device)
        state.optimizer.step()
        state.scheduler.step()
        compute += _clock(device) - tick
        meter.add(out, len(graphs))
    return meter.result(), compute


class _Meter:
    """Size-weighted means of CombinedLoss outputs over batches."""

    def __init__(self, targets: str) -> None:
        self.targets = targets
        self.sums = dict.fromkeys(targets, 0.0)
        self.sizes = dict.fromkeys(targets, 0)
        self.loss = 0.0
        self.n_structures = 0

    def add(self, out: dict[str, Any], n_structures: int) -> None:
        self.loss += _value(out["loss"]) * n_structures
        self.n_structures += n_structures
        for key in self.targets:
            size = int(out[f"{key}_MAE_size"])
            if size:  # a batch without magmom labels has size 0
                self.sums[key] += _value(out[f"{key}_MAE"]) * size
                self.sizes[key] += size

    def result(self) -> PartMetrics:
        maes = {
            QUANTITIES[key].name: reported_mae(key, self.sums.get(key, 0.0), self.sizes.get(key, 0)) for key in "efsm"
        }
        loss = self.loss / self.n_structures if self.n_structures else None
        return PartMetrics(**maes, loss=loss, n_structures=self.n_structures)


def _value(x: Any) -> float:
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def _to_device(
    graphs: list[CrystalGraph], labels: dict[str, Any], device: torch.device, targets: str
) -> tuple[list[CrystalGraph], dict[str, Any]]:
    """Graphs and labels on ``device``; positions get fresh autograd leaves (the caller's graphs are not touched)."""
    moved = []
    for graph in graphs:
        g = graph.to(device)  # a new CrystalGraph (sharing tensors on the same device)
        g.atom_frac_coord = g.atom_frac_coord.detach().requires_grad_("f" in targets)
        g.lattice = g.lattice.detach()  # stress comes from chgnet's strain leaf, not from the lattice
        moved.append(g)
    return moved, {key: _move(value, device) for key, value in labels.items()}


def _move(value: Any, device: torch.device) -> Any:
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, list):
        return [None if v is None else v.to(device) for v in value]
    raise TypeError(f"labels are tensors or lists of tensors, got {type(value).__name__}")


def _detach(prediction: dict[str, Any]) -> dict[str, Any]:
    return {
        key: [v.detach() for v in value] if isinstance(value, list | tuple) else value.detach()
        for key, value in prediction.items()
    }


def _clock(device: torch.device) -> float:
    """perf_counter after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _check_items(items: Sequence[Item], targets: str) -> None:
    for index, (graph, labels) in enumerate(items):
        missing = [t for t in targets if t not in labels]
        if missing or not isinstance(graph, CrystalGraph):
            what = f"labels {', '.join(missing)}" if missing else f"a CrystalGraph (got {type(graph).__name__})"
            raise TrainingError(f"item {index} has no {what}; targets are {targets!r}")


def _check_state(state: TrainState, model: CHGNet, total_steps: int) -> None:
    if state.model is not model:
        raise TrainingError("state.model is not the model being trained")
    t_max = getattr(state.scheduler, "T_max", total_steps)
    if t_max != total_steps:
        raise TrainingError(
            f"the training state was made for {t_max} optimiser steps, this run has {total_steps} "
            "(epochs × steps per epoch); resume with the same epochs, batch size and training set"
        )


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Optimiser moments onto the parameters' device (a loaded state sits where the model was when loading)."""
    for per_parameter in optimizer.state.values():
        for key, value in per_parameter.items():
            if torch.is_tensor(value) and key != "step":  # Adam keeps its step count on the CPU
                per_parameter[key] = value.to(device)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _update_best(state: TrainState, result: EpochResult) -> None:
    error = (result.val or result.train).energy_mae
    if error is not None and not math.isnan(error) and (state.best_epoch is None or error < state.best_val_energy_mae):
        state.best_val_energy_mae, state.best_epoch = error, result.epoch


def _check_finite(result: EpochResult) -> None:
    for part, metrics in (("training", result.train), ("validation", result.val)):
        if metrics is not None and metrics.energy_mae is not None and math.isnan(metrics.energy_mae):
            raise TrainingError(f"the {part} energy error is NaN at epoch {result.epoch}: training diverged")


def _trainable_names(model: CHGNet) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]
