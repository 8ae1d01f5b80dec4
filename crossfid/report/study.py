"""Everything the study reports for one split, read from the database into plain dataclasses.

:func:`collect_study` is the one reader; the renderers (:mod:`crossfid.report.html`,
:mod:`crossfid.report.markdown`) and the figures (:mod:`crossfid.report.figures`) only see
its :class:`StudyReport`. What it reads:

* the study's runs: the newest completed training run of each method on the split's whole
  training part (runs on nested subsets are scaling-law points), their per-epoch energy MAEs
  and first-epoch gradient records;
* the models: each such run's best weights, and the models not trained here (chgnet's shipped
  models, peers) that have a completed benchmark run on the split;
* test MAEs per model: the newest completed ``test-mae`` benchmark run on the split, else the
  training run's own test metrics;
* the newest cross-fidelity correlation (``correlation`` or ``transferability``) and element
  importance analyses whose target is the dataset's fidelities;
* per model, the newest completed ``density``, ``formation-energy`` and ``decomposition-energy``
  runs on the split with their items;
* the newest scaling-law run of each method on any split of the same dataset.

A section without data is named in :attr:`StudyReport.missing` with the command that makes it.
Units: energy MAEs meV/atom, force MAEs meV/Å, stress GPa, magmoms μB, formation and
decomposition energies eV/atom, densities g/cm³, sizes in frames.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from crossfid.benchmarks.scaling_runs import NAME as SCALING_LAW
from crossfid.benchmarks.store import metrics_of
from crossfid.curation.split_store import resolve_split
from crossfid.db.models import (
    AtomRefRow,
    BenchmarkItem,
    BenchmarkRun,
    CrossFidelityAnalysis,
    Dataset,
    ModelRow,
    Split,
    TrainingRun,
)
from crossfid.referencing.pairs import label
from crossfid.training.history import RunHistory, load_histories
from crossfid.vocabulary import METHOD_NAMES

#: the test-set MAEs of the study's table: metric name → unit
TEST_METRICS: dict[str, str] = {"energy_mae": "meV/atom", "force_mae": "meV/Å", "stress_mae": "GPa", "magmom_mae": "μB"}
#: the per-model benchmarks the report shows (besides test-mae), in order
ITEM_BENCHMARKS: tuple[str, ...] = ("density", "formation-energy", "decomposition-energy")
#: the sections of the report, in order
SECTIONS: tuple[str, ...] = (
    "test-mae",
    "training",
    "gradients",
    "correlation",
    "importance",
    "density",
    "formation-energy",
    "decomposition-energy",
    "scaling-law",
)
#: the source fidelities the hints propose for the cross-fidelity analyses (the study's)
SOURCE_FIDELITIES = "GGA,GGA+U"


@dataclass(frozen=True)
class StudyModel:
    """A model of the report: a training run's best weights, or a model not trained here (``method`` is its role)."""

    name: str
    sha256: str
    method: str
    kind: str
    run_id: int | None
    created_at: dt.datetime


@dataclass(frozen=True)
class TestMaeRow:
    """Test-set MAEs of one model (meV/atom, meV/Å, GPa, μB; None when not measured) and where they come from.

    ``source`` is ``benchmark`` (a ``test-mae`` benchmark run, ``source_id`` its id) or ``training``
    (the training run's own test metrics, ``source_id`` the run id).
    """

    __test__ = False  # not a pytest test class

    model: StudyModel
    values: dict[str, float | None]
    n: int | None
    source: str
    source_id: int
    ran_at: dt.datetime | None


@dataclass(frozen=True)
class TrainingRunInfo:
    """A training run of the report with the hashes it was trained from."""

    run_id: int
    method: str
    model: str | None
    epochs_completed: int
    best_epoch: int | None
    best_val_energy_mae: float | None
    dataset_hash: str
    split_hash: str
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class Correlation:
    """Pearson (and Spearman) of two fidelities' energies per atom over shared materials, raw and referenced.

    Energies in eV/atom; ``*_referenced``: ``E − c·E_ref`` with each side's AtomRef.
    """

    analysis_id: int
    kind: str
    created_at: dt.datetime
    source_label: str
    target_label: str
    n_materials: int
    input_hash: str
    raw_pearson: float | None
    referenced_pearson: float | None
    raw_spearman: float | None
    referenced_spearman: float | None
    source_atomref: str | None
    target_atomref: str | None
    material_ids: list[str]
    source_energy: list[float]
    target_energy: list[float]
    source_referenced: list[float]
    target_referenced: list[float]
    notes: list[str]


@dataclass(frozen=True)
class Importance:
    """Element importance for the formation-energy difference source − target, per corrections variant.

    ``variants``: variant (``none``, ``mp2020``) → element → normalised importance; ``ranking``: variant →
    (element, importance) best first; ``r2``: variant → the tree's R².
    """

    analysis_id: int
    created_at: dt.datetime
    source_label: str
    target_label: str
    n_materials: int
    input_hash: str
    variants: dict[str, dict[str, float]]
    ranking: dict[str, list[tuple[str, float]]]
    r2: dict[str, float | None]
    notes: list[str]


@dataclass(frozen=True)
class ModelBenchmark:
    """One model's newest completed run of a per-model benchmark on the split, with its successful items.

    ``items``: item id → result (density: experimental, predicted g/cm³ and their ratio; formation and
    decomposition: ``dft`` and ``model`` eV/atom).
    """

    benchmark: str
    model: StudyModel
    run_id: int
    version: int
    finished_at: dt.datetime | None
    data_hash: str
    metrics: dict[str, float | None]
    items: dict[str, dict[str, Any]]
    n_items: int
    n_failed: int


@dataclass(frozen=True)
class ScalingMethod:
    """The newest scaling-law run of one method: its points, fits and crossovers.

    ``points``: (size frames, validation energy MAE meV/atom, validation force MAE meV/Å, training run id);
    ``fits``: quantity → {slope, intercept, r2} (None: too few sizes); ``crossovers``: (quantity, other
    method) → frames where the lines cross (None: not within range); ``limits``: the same keys → the
    largest size a crossover is reported at, when the run recorded one.
    """

    method: str
    run_id: int
    split_id: int | None
    finished_at: dt.datetime | None
    data_hash: str
    min_size: int | None
    points: list[tuple[int, float | None, float | None, int]]
    fits: dict[str, dict[str, float | None] | None]
    crossovers: dict[tuple[str, str], float | None]
    limits: dict[tuple[str, str], float | None]


@dataclass(frozen=True)
class StudyReport:
    """The study for one split, as stored; ``missing``: section → why it has no data and the command to run."""

    split_ref: str
    split_id: int
    split_hash: str | None
    split_seed: int
    split_ratios: list[float]
    dataset: str
    dataset_hash: str | None
    fidelities: list[str]
    energy_label: str | None
    n_frames: int
    n_materials: int
    sources: list[str]
    surrogate: bool
    generated_at: dt.datetime
    models: list[StudyModel]
    test_maes: list[TestMaeRow]
    training_runs: list[TrainingRunInfo]
    histories: list[RunHistory]
    correlation: Correlation | None
    importance: Importance | None
    benchmarks: dict[str, list[ModelBenchmark]]
    scaling: list[ScalingMethod]
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def fidelity_label(self) -> str:
        return label(self.fidelities)

    def benchmark_runs(self) -> list[ModelBenchmark]:
        """Every per-model benchmark run the report shows, in section order."""
        return [run for name in ITEM_BENCHMARKS for run in self.benchmarks.get(name, [])]


# --------------------------------------------------------------------------- reading


def _method_order(method: str) -> tuple[int, str]:
    return (METHOD_NAMES.index(method) + 1 if method in METHOD_NAMES else 0, method)


def _newest_per_method(rows: list) -> list:
    """The first row of each ``method`` in ``rows`` (ordered newest first)."""
    return list({row.method: row for row in reversed(rows)}.values())


def _study_runs(session: Session, split_id: int) -> list[TrainingRun]:
    """The newest completed run of each method on the split's whole training part, in the study's method order."""
    runs = session.scalars(
        select(TrainingRun)
        .where(
            TrainingRun.split_id == split_id,
            TrainingRun.subset_size.is_(None),
            TrainingRun.status == "completed",
        )
        .order_by(TrainingRun.finished_at.desc().nulls_last(), TrainingRun.id.desc())
    ).all()
    return sorted(_newest_per_method(runs), key=lambda r: _method_order(r.method))


def _study_model(row: ModelRow, method: str) -> StudyModel:
    return StudyModel(row.name, row.sha256, method, row.kind, row.run_id, row.created_at)


def _models(session: Session, split_id: int, runs: list[TrainingRun]) -> list[StudyModel]:
    """Models not trained here that were benchmarked on the split, then each study run's best weights."""
    untrained = session.scalars(
        select(ModelRow)
        .where(
            ModelRow.run_id.is_(None),
            ModelRow.id.in_(
                select(BenchmarkRun.model_id).where(
                    BenchmarkRun.split_id == split_id, BenchmarkRun.status == "completed"
                )
            ),
        )
        .order_by(ModelRow.id)
    ).all()
    labellers = {
        name
        for names in session.scalars(select(BenchmarkRun.labelled_by).where(BenchmarkRun.split_id == split_id))
        for name in names or ()
    }
    roles = {row.name: "pretrained" if row.role == "base" else row.role for row in untrained}
    # a model that labelled the benchmarked data has zero error by construction: the table says so
    models = [_study_model(row, roles[row.name] + " · labeller" * (row.name in labellers)) for row in untrained]
    for run in runs:
        best = session.scalars(
            select(ModelRow).where(ModelRow.run_id == run.id, ModelRow.role == "best").order_by(ModelRow.id.desc())
        ).first()
        if best is not None:
            models.append(_study_model(best, run.method))
    return models


def _newest_run(session: Session, benchmark: str, split_id: int, model_name: str) -> BenchmarkRun | None:
    return session.scalars(
        select(BenchmarkRun)
        .join(ModelRow, ModelRow.id == BenchmarkRun.model_id)
        .where(
            ModelRow.name == model_name,
            BenchmarkRun.benchmark == benchmark,
            BenchmarkRun.split_id == split_id,
            BenchmarkRun.status == "completed",
        )
        .order_by(BenchmarkRun.finished_at.desc().nulls_last(), BenchmarkRun.id.desc())
        .limit(1)
    ).one_or_none()


def _test_maes(
    session: Session, split_id: int, models: list[StudyModel], runs: dict[int, TrainingRun]
) -> list[TestMaeRow]:
    rows = []
    for model in models:
        bench = _newest_run(session, "test-mae", split_id, model.name)
        if bench is not None:
            metrics = metrics_of(session, bench.id)
            energy = metrics.get("energy_mae")
            rows.append(
                TestMaeRow(
                    model=model,
                    values={name: (metrics[name].value if name in metrics else None) for name in TEST_METRICS},
                    n=None if energy is None else energy.n,
                    source="benchmark",
                    source_id=bench.id,
                    ran_at=bench.finished_at,
                )
            )
            continue
        run = runs.get(model.run_id) if model.run_id is not None else None
        if run is not None and run.test_metrics:
            rows.append(
                TestMaeRow(
                    model=model,
                    values={name: run.test_metrics.get(name) for name in TEST_METRICS},
                    n=run.test_metrics.get("n_structures"),
                    source="training",
                    source_id=run.id,
                    ran_at=run.finished_at,
                )
            )
    return rows


def _model_benchmarks(session: Session, split_id: int, models: list[StudyModel]) -> dict[str, list[ModelBenchmark]]:
    out: dict[str, list[ModelBenchmark]] = {}
    for name in ITEM_BENCHMARKS:
        found = []
        for model in models:
            run = _newest_run(session, name, split_id, model.name)
            if run is None:
                continue
            items = session.scalars(
                select(BenchmarkItem).where(BenchmarkItem.run_id == run.id).order_by(BenchmarkItem.item)
            ).all()
            found.append(
                ModelBenchmark(
                    benchmark=name,
                    model=model,
                    run_id=run.id,
                    version=run.version,
                    finished_at=run.finished_at,
                    data_hash=run.data_hash,
                    metrics={m.name: m.value for m in metrics_of(session, run.id).values()},
                    items={i.item: dict(i.result) for i in items if i.ok},
                    n_items=len(items),
                    n_failed=sum(not i.ok for i in items),
                )
            )
        out[name] = found
    return out


def _atomref_name(session: Session, atomref_id: int | None) -> str | None:
    if atomref_id is None:
        return None
    row = session.get(AtomRefRow, atomref_id)
    return None if row is None else row.name


def _newest_analysis(session: Session, kinds: tuple[str, ...], fidelities: list[str]) -> CrossFidelityAnalysis | None:
    return session.scalars(
        select(CrossFidelityAnalysis)
        .where(CrossFidelityAnalysis.kind.in_(kinds), CrossFidelityAnalysis.target_fidelities == list(fidelities))
        .order_by(CrossFidelityAnalysis.created_at.desc(), CrossFidelityAnalysis.id.desc())
        .limit(1)
    ).one_or_none()


def _correlation(session: Session, fidelities: list[str]) -> Correlation | None:
    row = _newest_analysis(session, ("correlation", "transferability"), fidelities)
    if row is None:
        return None
    result = row.result
    corr = result.get("correlation", {}) if row.kind == "transferability" else result
    raw, referenced = corr.get("raw", {}), corr.get("referenced", {})
    return Correlation(
        analysis_id=row.id,
        kind=row.kind,
        created_at=row.created_at,
        source_label=label(row.source_fidelities),
        target_label=label(row.target_fidelities),
        n_materials=row.n_materials,
        input_hash=row.input_hash,
        raw_pearson=raw.get("pearson"),
        referenced_pearson=referenced.get("pearson"),
        raw_spearman=raw.get("spearman"),
        referenced_spearman=referenced.get("spearman"),
        source_atomref=_atomref_name(session, row.source_atomref_id),
        target_atomref=_atomref_name(session, row.target_atomref_id),
        material_ids=list(corr.get("material_ids", [])),
        source_energy=list(corr.get("source_energy", [])),
        target_energy=list(corr.get("target_energy", [])),
        source_referenced=list(corr.get("source_referenced", [])),
        target_referenced=list(corr.get("target_referenced", [])),
        notes=list(result.get("notes", [])),
    )


def _importance(session: Session, fidelities: list[str]) -> Importance | None:
    row = _newest_analysis(session, ("importance",), fidelities)
    if row is None:
        return None
    variants, ranking, r2 = {}, {}, {}
    for variant, values in row.result.get("variants", {}).items():
        normalised = values.get("normalised")
        if not normalised:
            continue
        variants[variant] = {str(k): float(v) for k, v in normalised.items()}
        ranking[variant] = [(str(s), float(v)) for s, v in values.get("ranking", [])]
        r2[variant] = values.get("r2")
    return Importance(
        analysis_id=row.id,
        created_at=row.created_at,
        source_label=label(row.source_fidelities),
        target_label=label(row.target_fidelities),
        n_materials=row.n_materials,
        input_hash=row.input_hash,
        variants=variants,
        ranking=ranking,
        r2=r2,
        notes=list(row.result.get("notes", [])),
    )


def _scaling(session: Session, dataset_id: int) -> list[ScalingMethod]:
    """The newest completed scaling-law run of each method on any split of the dataset."""
    runs = session.scalars(
        select(BenchmarkRun)
        .where(
            BenchmarkRun.benchmark == SCALING_LAW,
            BenchmarkRun.status == "completed",
            BenchmarkRun.split_id.in_(select(Split.id).where(Split.dataset_id == dataset_id)),
        )
        .order_by(BenchmarkRun.finished_at.desc().nulls_last(), BenchmarkRun.id.desc())
    ).all()
    out = []
    for run in sorted(_newest_per_method(runs), key=lambda r: _method_order(r.method or "")):
        metrics = {m.name: m.value for m in metrics_of(session, run.id).values()}
        fits: dict[str, dict[str, float | None] | None] = {}
        for quantity in ("energy", "force"):
            slope = metrics.get(f"{quantity}_slope")
            fits[quantity] = (
                None if slope is None else {k: metrics.get(f"{quantity}_{k}") for k in ("slope", "intercept", "r2")}
            )
        crossovers, limits = {}, {}
        for name, value in metrics.items():
            head, _, other = name.partition(":")
            quantity, _, what = head.partition("_")
            if what == "crossover":
                crossovers[(quantity, other)] = value
            elif what == "crossover_limit":
                limits[(quantity, other)] = value
        points = [
            (int(p["size"]), p.get("val_energy_mae"), p.get("val_force_mae"), int(p["run_id"]))
            for p in sorted(run.data.get("points", []), key=lambda p: p["size"])
        ]
        out.append(
            ScalingMethod(
                method=run.method or "",
                run_id=run.id,
                split_id=run.split_id,
                finished_at=run.finished_at,
                data_hash=run.data_hash,
                min_size=run.parameters.get("min_size"),
                points=points,
                fits=fits,
                crossovers=dict(sorted(crossovers.items())),
                limits=limits,
            )
        )
    return out


_SOURCES = text(
    """
    SELECT s.name, bool_or(coalesce(t.input_parameters->>'label_source', '') ILIKE '%surrogate%')
    FROM dataset_frames df
    JOIN frames f ON f.id = df.frame_id
    JOIN tasks t ON t.id = f.task_id
    JOIN sources s ON s.id = t.source_id
    WHERE df.dataset_id = :dataset
    GROUP BY s.name ORDER BY s.name
    """
)


def _missing(report: dict[str, Any], ref: str, dataset: str) -> dict[str, str]:
    """Each section without data, and the command that makes it."""
    train = f"not run: crossfid train --split {ref} --method tl-refit-atomref"
    refresh = f"not run: crossfid leaderboard refresh --split {ref} --benchmark"
    fidelities = ",".join(report["fidelities"])
    missing = {}
    if not report["test_maes"]:
        missing["test-mae"] = f"{train} (or crossfid leaderboard refresh --split {ref} --benchmark test-mae)"
    if not report["histories"]:
        missing["training"] = train
    if not any(h.gradients for h in report["histories"]):
        missing["gradients"] = train if not report["histories"] else "the training runs recorded no gradients"
    if report["correlation"] is None:
        missing["correlation"] = (
            f"not run: crossfid analyze transferability --source {SOURCE_FIDELITIES} --target {ref}"
        )
    if report["importance"] is None or not report["importance"].variants:
        missing["importance"] = (
            f"not run: crossfid analyze importance --source {SOURCE_FIDELITIES} --target {fidelities}"
        )
    for name in ITEM_BENCHMARKS:
        if not report["benchmarks"].get(name):
            missing[name] = f"{refresh} {name}"
    if not report["scaling"]:
        missing["scaling-law"] = (
            f"not run: crossfid benchmark scaling-law --split {dataset}@SEED --method scratch "
            "--method tl-refit-atomref --sizes N1,N2,N3 (on a split made with `crossfid dataset split --subsets`)"
        )
    return missing


def collect_study(engine: Engine, split: str | int) -> StudyReport:
    """The study of ``split`` (id or ``DATASET[:VERSION][/STRATEGY][@SEED]``) as stored; an unknown split is an
    error (:class:`crossfid.curation.splits.SplitError`)."""
    with Session(engine) as session:
        split_row = resolve_split(session, split)
        dataset = session.get(Dataset, split_row.dataset_id)
        runs = _study_runs(session, split_row.id)
        models = _models(session, split_row.id, runs)
        by_id = {run.id: run for run in runs}
        test_maes = _test_maes(session, split_row.id, models, by_id)
        best = {m.run_id: m.name for m in models if m.run_id is not None}
        training_runs = [
            TrainingRunInfo(
                run_id=run.id,
                method=run.method,
                model=best.get(run.id),
                epochs_completed=run.epochs_completed,
                best_epoch=run.best_epoch,
                best_val_energy_mae=run.best_val_energy_mae,
                dataset_hash=run.dataset_hash,
                split_hash=run.split_hash,
                finished_at=run.finished_at,
            )
            for run in runs
        ]
        sources = session.execute(_SOURCES, {"dataset": dataset.id}).all()
        data: dict[str, Any] = {
            "fidelities": list(dataset.fidelities),
            "test_maes": test_maes,
            "correlation": _correlation(session, list(dataset.fidelities)),
            "importance": _importance(session, list(dataset.fidelities)),
            "benchmarks": _model_benchmarks(session, split_row.id, models),
            "scaling": _scaling(session, dataset.id),
        }
        header = {
            "split_ref": str(split),
            "split_id": split_row.id,
            "split_hash": split_row.content_hash,
            "split_seed": split_row.seed,
            "split_ratios": list(split_row.ratios),
            "dataset": f"{dataset.name}:{dataset.version}",
            "dataset_hash": dataset.content_hash,
            "energy_label": dataset.energy_label,
            "n_frames": dataset.n_frames,
            "n_materials": dataset.n_materials,
        }
    histories = load_histories(engine, [run.id for run in runs])
    data["histories"] = histories
    return StudyReport(
        **header,
        sources=[name for name, _ in sources],
        surrogate=any(name == "demo" or surrogate for name, surrogate in sources),
        generated_at=dt.datetime.now(dt.UTC),
        models=models,
        training_runs=training_runs,
        missing=_missing(data, str(split), dataset.name),
        **data,
    )
