"""Training hyperparameters of a CHGNet fine-tuning run (defaults: the study's settings).

Huber loss (delta 0.1) with energy:force:stress:magmom weights 3:1:0.1:1, batch
size 64, Adam, learning rate 1e-3 decayed by a cosine over every optimiser step
of all 50 epochs down to 1e-5. Every instance is validated when it is created,
so a bad value fails where it is written, not hours into a run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from crossfid.errors import InputError

#: optimiser names accepted (torch.optim classes; SGD with momentum 0.9, AdamW with weight decay 0.01, as chgnet)
OPTIMIZERS: tuple[str, ...] = ("Adam", "AdamW", "RAdam", "SGD")
#: loss criteria of chgnet's CombinedLoss
LOSSES: tuple[str, ...] = ("Huber", "MSE", "MAE")
#: all training targets in canonical order: energy, forces, stress, magnetic moments
ALL_TARGETS = "efsm"

_INTEGERS = ("epochs", "batch_size", "seed", "gradient_samples")
_FLOATS = (
    "learning_rate",
    "final_learning_rate",
    "huber_delta",
    "energy_weight",
    "force_weight",
    "stress_weight",
    "magmom_weight",
)


class HyperparameterError(InputError):
    """A hyperparameter that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Hyperparameters:
    """Settings of one training run; rates are per optimiser step, weights multiply chgnet's per-target losses."""

    epochs: int = 50
    batch_size: int = 64  # structures per optimiser step
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-5  # cosine decay from learning_rate to this over all steps of all epochs
    optimizer: str = "Adam"
    loss: str = "Huber"  # chgnet CombinedLoss criterion: Huber, MSE, MAE
    huber_delta: float = 0.1  # in the label units (eV/atom, eV/Å, GPa, μB)
    energy_weight: float = 3.0  # the study's 3:1:0.1:1
    force_weight: float = 1.0
    stress_weight: float = 0.1
    magmom_weight: float = 1.0
    targets: str = "efsm"  # any of e, f, s, m; e required; stored in canonical order
    seed: int = 0  # torch/numpy/python seeds and per-epoch shuffle order
    gradient_samples: int = 10  # gradient statistics this many times during the first epoch (every tenth)

    def __post_init__(self) -> None:
        for name in _INTEGERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise HyperparameterError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        for name in _FLOATS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise HyperparameterError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "targets", canonical_targets(self.targets))
        self._check_ranges()

    def _check_ranges(self) -> None:
        positive = ("epochs", "batch_size", "learning_rate", "final_learning_rate", "huber_delta", "energy_weight")
        for name in positive:
            if getattr(self, name) <= 0:
                raise HyperparameterError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("force_weight", "stress_weight", "magmom_weight", "seed", "gradient_samples"):
            if getattr(self, name) < 0:
                raise HyperparameterError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.final_learning_rate > self.learning_rate:
            raise HyperparameterError(
                f"final_learning_rate ({self.final_learning_rate:g}) must not exceed learning_rate "
                f"({self.learning_rate:g})"
            )
        if self.optimizer not in OPTIMIZERS:
            raise HyperparameterError(f"unknown optimizer {self.optimizer!r}; one of {', '.join(OPTIMIZERS)}")
        if self.loss not in LOSSES:
            raise HyperparameterError(f"unknown loss {self.loss!r}; one of {', '.join(LOSSES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, every field included."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hyperparameters:
        """From a dict such as :meth:`to_dict` wrote; missing keys take defaults, unknown keys are refused."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise HyperparameterError(f"unknown hyperparameter(s) {', '.join(unknown)}; known: {known}")
        return cls(**d)

    def with_overrides(self, **kw: Any) -> Hyperparameters:
        """A copy with some fields replaced (validated like any new instance)."""
        return self.from_dict(self.to_dict() | kw)


def canonical_targets(targets: Any) -> str:
    """``"fe"`` → ``"ef"``; refuses repeats, unknown letters and a missing ``e``."""
    if not isinstance(targets, str):
        raise HyperparameterError(f"targets must be a string such as 'efsm', got {targets!r}")
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown or len(set(targets)) != len(targets) or "e" not in targets:
        raise HyperparameterError(
            f"targets must be distinct letters of {ALL_TARGETS!r} including 'e' (energy), got {targets!r}"
        )
    return "".join(t for t in ALL_TARGETS if t in targets)
