"""The benchmark registry: each benchmark's name, version, metrics (unit, direction, leaderboard column,
composite-score normalisation), how it prepares its data and runs, and its page figures.

A benchmark is a subclass of :class:`Benchmark` in a module of its own (or of
:mod:`crossfid.benchmarks.suite`) plus one line in :data:`REGISTERED`; the
leaderboard refresh, the ``leaderboard`` view's columns, ``leaderboard show``
and the static page all take their lists from here (recipe: docs/architecture.md,
"Adding a benchmark"). The view is rebuilt from the ``leaderboard_columns`` table
that migrations fill with a frozen copy of :func:`leaderboard_columns`; a test
requires the two to agree, so a new column, rank or composite term needs a migration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from sqlalchemy.orm import Session

from crossfid.benchmarks.relax_jobs import RelaxSettings, relax_many
from crossfid.benchmarks.store import ItemResult, Metric
from crossfid.db.models import ModelRow
from crossfid.errors import InputError
from crossfid.hashing import json_digest
from crossfid.training.registry import model_spec

#: the registered benchmarks, in leaderboard order, as ``module:class``
REGISTERED: tuple[str, ...] = (
    "crossfid.benchmarks.suite:TestSetMae",
    "crossfid.benchmarks.suite:FormationEnergy",
    "crossfid.benchmarks.suite:DecompositionEnergy",
    "crossfid.benchmarks.suite:Density",
    "crossfid.benchmarks.testset_rmse:TestSetRmse",
    "crossfid.benchmarks.forgetting:Forgetting",
)


class BenchmarkError(InputError):
    """Benchmark data that cannot be prepared (e.g. a split without a test part), or an unknown benchmark."""


class NotApplicable(BenchmarkError):
    """The benchmark does not apply to this split's data (e.g. forgetting on a split without source-fidelity
    frames): a refresh skips it and says why, rather than failing."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric a benchmark reports (``benchmark_metrics.name``) and how the leaderboard shows it.

    ``better``: ``lower``/``higher`` is better, None when neither (a ratio whose ideal is 1).
    ``column``: its column of the ``leaderboard`` view (None: stored, not on the board);
    ``ranked``: the view also ranks models by it; ``scale``: it enters the composite score as
    ``value / scale`` (a typical error of a foundation potential, in ``unit``);
    ``header``/``legend``: its short header and meaning in ``leaderboard show`` (None: not shown there);
    ``page``: a column of the static page.
    """

    name: str
    unit: str
    better: Literal["lower", "higher"] | None = "lower"
    column: str | None = None
    ranked: bool = False
    scale: float | None = None
    header: str | None = None
    legend: str | None = None
    page: bool = False


@dataclass(frozen=True)
class Prepared:
    """Benchmark data of one split: its hash, a description, what ``run`` needs, and the models (crossfid names)
    that labelled the data (:func:`crossfid.benchmarks.store.labellers`; a model of these is the board's labeller)."""

    data_hash: str
    data: dict[str, Any]
    payload: Any = None
    labelled_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Options:
    """What the command line can set for a refresh: relaxation settings, the density benchmark's crystals,
    the scored set of the thermodynamic benchmarks (benchmark name → ``test`` or ``all``) and the source
    fidelities of the forgetting benchmark."""

    relax: RelaxSettings | None = None
    crystals: list[str] | None = None
    scored: dict[str, str] | None = None
    source_fidelities: list[str] | None = None


@dataclass
class Context:
    """What a benchmark run may use: the engine, a Dask client, progress, the refresh's relaxation cache, and
    ``memo`` for other results that benchmarks of one refresh share (e.g. a model's test-set predictions)."""

    engine: Any
    client: Any | None = None
    progress: Callable[[str, int, int], None] | None = None
    relaxations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)

    def relax(self, model: ModelRow, label: str, structures: list[tuple[str, dict]], settings: RelaxSettings):
        """Relax structures with a model, reusing this refresh's earlier relaxations of the same items."""
        settings_key = json_digest(settings.__dict__)
        todo = [(i, s) for i, s in structures if (model.sha256, settings_key, i) not in self.relaxations]
        if todo:
            progress = None if self.progress is None else (lambda done, total: self.progress(label, done, total))
            done = relax_many(model_spec(model), todo, settings, client=self.client, progress=progress)
            for item, result in done.items():
                self.relaxations[(model.sha256, settings_key, item)] = result
        return {i: self.relaxations[(model.sha256, settings_key, i)] for i, _ in structures}


class Benchmark:
    """A benchmark: class attributes say what it is, the methods compute it.

    ``version`` is bumped when the definition changes, which makes every stored result of it
    stale. ``prepare`` reads the benchmark data of a split and hashes it; ``run`` turns a model
    into :class:`~crossfid.benchmarks.store.Metric` values (named as in ``metrics``) and per-item
    results; ``figures`` writes the page's figures of a model from its stored results.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()

    @classmethod
    def from_options(cls, options: Options) -> Benchmark:
        return cls()

    def parameters(self) -> dict[str, Any]:
        return {}

    def prepare(self, session: Session, split_id: int) -> Prepared:
        raise NotImplementedError

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        raise NotImplementedError

    @classmethod
    def figures(cls, session: Session, model: ModelRow, folder: Path) -> dict[str, Path]:
        return {}


_REGISTRY: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Add a benchmark class to the registry (after those registered before it); refuses a second one of a name."""
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"benchmark {cls.name!r} is registered already ({known.__module__}.{known.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def registered() -> dict[str, type[Benchmark]]:
    """The registered benchmark classes by name: :data:`REGISTERED` first, in its order."""
    for entry in REGISTERED:
        module, _, name = entry.partition(":")
        register(getattr(importlib.import_module(module), name))
    return dict(_REGISTRY)


def default_benchmarks(
    relax: RelaxSettings | None = None,
    crystals: list[str] | None = None,
    scored: dict[str, str] | None = None,
    source_fidelities: list[str] | None = None,
) -> dict[str, Benchmark]:
    """The leaderboard's benchmarks, by name, with the command line's settings."""
    options = Options(relax, crystals, scored, source_fidelities)
    return {name: cls.from_options(options) for name, cls in registered().items()}


# --------------------------------------------------------------------------- the leaderboard's columns

#: columns of the ``leaderboard`` view before the metric columns
BOARD_COLUMNS: tuple[str, ...] = (
    "model_id",
    "model",
    "kind",
    "family",
    "origin",
    "labeller",
    "fidelities",
    "base_model",
    "method",
    "training_data_hash",
    "training_size",
    "sha256",
)


@dataclass(frozen=True)
class BoardColumn:
    """A metric column of the ``leaderboard`` view: the benchmark and metric it pivots, and its spec."""

    benchmark: str
    spec: MetricSpec

    def frozen(self) -> tuple[str, str, str, str, str | None, bool, float | None]:
        """The row of ``leaderboard_columns`` (without the position) that a migration writes."""
        s = self.spec
        return (s.column, self.benchmark, s.name, s.unit, s.better, s.ranked, s.scale)


def board_columns() -> list[BoardColumn]:
    """Every metric column of the leaderboard view, in view order."""
    return [BoardColumn(b.name, m) for b in registered().values() for m in b.metrics if m.column is not None]


def leaderboard_columns() -> list[tuple[str, str, str, str, str | None, bool, float | None]]:
    """The rows ``leaderboard_columns`` must hold, in position order: (column, benchmark, metric, unit, better,
    ranked, scale). Paste into a migration when this changes (``python -c`` it)."""
    return [c.frozen() for c in board_columns()]


def composite_terms() -> str:
    """The composite score's normalisation in words, e.g. ``test_energy_mae/30 meV/atom, ...``."""
    return ", ".join(f"{c.spec.column}/{c.spec.scale:g} {c.spec.unit}" for c in board_columns() if c.spec.scale)
