"""The report's tables and wording, once for both renderers (HTML and Markdown).

A :class:`Table` is headers and rows of :class:`Cell`: the text shown, the full-precision number
(``value``, HTML ``data-value``) and a tooltip (``title``, e.g. a full hash behind its short form).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from crossfid.report.study import ITEM_BENCHMARKS, TEST_METRICS, StudyReport
from crossfid.vocabulary import METHOD_LABELS, PRETRAINED

#: characters of a hash shown in tables (the full hash is in the tooltip and the provenance section)
SHORT_HASH = 12
#: decimals of a number shown in a table, by unit
DECIMALS = {"meV/atom": 2, "meV/Å": 2, "GPa": 3, "μB": 3, "g/cm³": 3, "ratio": 3, "fraction": 3, "": 3}
#: shown for a value that is None or not finite
EMPTY = "—"

SECTION_TITLES = {
    "test-mae": "Test-set errors per method",
    "training": "Validation energy MAE per epoch",
    "gradients": "First-epoch gradient ranges",
    "correlation": "Raw vs referenced energies",
    "importance": "Element importance",
    "density": "Density ratios",
    "formation-energy": "Formation energy",
    "decomposition-energy": "Decomposition energy",
    "scaling-law": "Scaling law",
}

SURROGATE_NOTE = (
    "Demo data: the labels of this dataset come from a surrogate model (its tasks' label_source says which), "
    "not from DFT; the numbers show that the pipeline works, not the study's physics."
)


@dataclass(frozen=True)
class Cell:
    """One table cell: ``text`` shown, ``value`` the number behind it (None for text), ``title`` a tooltip."""

    text: str
    value: float | int | None = None
    title: str | None = None


@dataclass(frozen=True)
class Table:
    """A titled table; ``key`` names it in the HTML (``data-table``)."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)


def number(value: float | int | None, unit: str = "") -> Cell:
    """A number with the decimals of its unit (``g`` notation for very small or large magnitudes)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return Cell(EMPTY)
    if isinstance(value, int) and not isinstance(value, bool):
        return Cell(str(value), value)
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return Cell(f"{value:.3g}", value, repr(value))
    return Cell(f"{value:.{DECIMALS.get(unit, 3)}f}", value, repr(value))


def digest(value: str | None) -> Cell:
    """A hash in short form, the full one in the tooltip."""
    if not value:
        return Cell(EMPTY)
    return Cell(value[:SHORT_HASH], title=value)


def when(moment: dt.datetime | None) -> str:
    """A time as ISO 8601 in UTC, to the second."""
    if moment is None:
        return EMPTY
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def method_label(method: str) -> str:
    """``tl-refit-atomref (m4)``; models not trained here keep their role (``pretrained``, ``peer``)."""
    short = METHOD_LABELS.get(method)
    return f"{method} ({short})" if short and method != PRETRAINED else method


def _text(value: object) -> Cell:
    return Cell(EMPTY if value is None else str(value))


# --------------------------------------------------------------------------- the tables


def mae_table(report: StudyReport) -> Table:
    headers = [
        "method",
        "model",
        "sha256",
        *(f"{name.split('_')[0]} MAE ({unit})" for name, unit in TEST_METRICS.items()),
    ]
    rows = [
        [
            Cell(method_label(row.model.method)),
            Cell(row.model.name),
            digest(row.model.sha256),
            *(number(row.values.get(name), unit) for name, unit in TEST_METRICS.items()),
            number(row.n),
            Cell(f"{row.source} run {row.source_id}"),
            Cell(when(row.ran_at)),
        ]
        for row in report.test_maes
    ]
    return Table("test-mae", "Test-set MAEs", [*headers, "test frames", "from", "ran"], rows)


def training_table(report: StudyReport) -> Table:
    rows = [
        [
            number(run.run_id),
            Cell(method_label(run.method)),
            _text(run.model),
            number(run.epochs_completed),
            number(run.best_epoch),
            number(run.best_val_energy_mae, "meV/atom"),
            Cell(when(run.finished_at)),
        ]
        for run in report.training_runs
    ]
    headers = ["training run", "method", "best model", "epochs", "best epoch", "best val energy MAE (meV/atom)", "ran"]
    return Table("training", "Training runs", headers, rows)


def gradient_table(report: StudyReport) -> Table:
    """Per layer and run: the smallest and largest |gradient| of the first epoch, and their mean."""
    from crossfid.plots.training import gradient_ranges

    runs = [h for h in report.histories if h.gradients]
    ranges = {h.run_id: gradient_ranges(h) for h in runs}
    layers = list(dict.fromkeys(layer for r in ranges.values() for layer in r))
    rows = []
    for layer in layers:
        row = [Cell(layer)]
        for history in runs:
            r = ranges[history.run_id].get(layer)
            if r is None:
                row.append(Cell(EMPTY))
            else:
                row.append(
                    Cell(
                        f"{r['abs_min']:.2g} – {r['abs_max']:.2g} (mean {r['abs_mean']:.2g})",
                        r["abs_max"],
                        f"min {r['abs_min']!r}, max {r['abs_max']!r}, mean {r['abs_mean']!r}",
                    )
                )
        rows.append(row)
    headers = ["layer", *(f"run {h.run_id}: {method_label(h.method)}" for h in runs)]
    return Table("gradients", "|gradient| in the first epoch: min – max (mean)", headers, rows)


def correlation_table(report: StudyReport) -> Table:
    corr = report.correlation
    rows = [
        [Cell("Pearson r"), number(corr.raw_pearson, "ratio"), number(corr.referenced_pearson, "ratio")],
        [Cell("Spearman ρ"), number(corr.raw_spearman, "ratio"), number(corr.referenced_spearman, "ratio")],
        [Cell("shared materials"), number(corr.n_materials), number(corr.n_materials)],
    ]
    title = f"{corr.source_label} vs {corr.target_label} energies per atom (analysis {corr.analysis_id})"
    return Table("correlation", title, ["", "raw", "referenced"], rows)


def importance_table(report: StudyReport, top: int = 10) -> Table:
    imp = report.importance
    variants = list(imp.ranking)
    rows = []
    for rank in range(min(top, max((len(v) for v in imp.ranking.values()), default=0))):
        row = [number(rank + 1)]
        for variant in variants:
            ranking = imp.ranking[variant]
            if rank < len(ranking):
                element, value = ranking[rank]
                row.append(Cell(f"{element} {value:.3f}", value, repr(value)))
            else:
                row.append(Cell(EMPTY))
        rows.append(row)
    headers = ["rank", *(f"{'MP2020 corrections' if v == 'mp2020' else 'no corrections'}" for v in variants)]
    title = (
        f"Most important elements for the {imp.source_label} − {imp.target_label} formation-energy difference "
        f"(analysis {imp.analysis_id})"
    )
    return Table("importance", title, headers, rows)


def _run_cells(run) -> list[Cell]:
    return [Cell(f"{run.model.name}"), digest(run.model.sha256)]


def benchmark_table(report: StudyReport, name: str) -> Table:
    runs = report.benchmarks.get(name, [])
    if name == "density":
        metrics = [
            ("density_mae", "g/cm³", "density MAE (g/cm³)"),
            ("ratio_mean", "ratio", "mean ratio"),
            ("ratio_median", "ratio", "median ratio"),
            ("fraction_less_dense", "fraction", "less dense"),
        ]
    elif name == "formation-energy":
        metrics = [("formation_mae", "meV/atom", "formation MAE (meV/atom)")]
    else:
        metrics = [
            ("decomposition_mae", "meV/atom", "decomposition MAE (meV/atom)"),
            ("f1", "fraction", "F1"),
            ("precision", "fraction", "precision"),
            ("recall", "fraction", "recall"),
        ]
    rows = [
        [
            *_run_cells(run),
            *(number(run.metrics.get(metric), unit) for metric, unit, _ in metrics),
            Cell(f"{run.n_items - run.n_failed}/{run.n_items}"),
            Cell(f"benchmark run {run.run_id}"),
            Cell(when(run.finished_at)),
        ]
        for run in runs
    ]
    headers = ["model", "sha256", *(header for _, _, header in metrics), "items ok", "from", "ran"]
    return Table(name, SECTION_TITLES[name], headers, rows)


def scaling_tables(report: StudyReport) -> tuple[Table, Table]:
    fits, crossings = [], []
    for method in report.scaling:
        for quantity, fit in method.fits.items():
            unit = "meV/atom" if quantity == "energy" else "meV/Å"
            sizes = ", ".join(str(size) for size, *_ in method.points)
            if fit is None:
                fits.append(
                    [
                        Cell(method.method),
                        Cell(f"{quantity} ({unit})"),
                        Cell("too few sizes"),
                        Cell(EMPTY),
                        Cell(EMPTY),
                        Cell(sizes),
                        Cell(f"benchmark run {method.run_id}"),
                    ]
                )
                continue
            fits.append(
                [
                    Cell(method.method),
                    Cell(f"{quantity} ({unit})"),
                    number(fit.get("slope"), "ratio"),
                    number(fit.get("intercept"), "ratio"),
                    number(fit.get("r2"), "ratio"),
                    Cell(sizes),
                    Cell(f"benchmark run {method.run_id}"),
                ]
            )
        for (quantity, other), size in method.crossovers.items():
            limit = method.limits.get((quantity, other))
            shown = number(round(size) if size is not None else None)
            if size is None:
                shown = Cell("none within range")
            crossings.append(
                [
                    Cell(method.method),
                    Cell(other),
                    Cell(quantity),
                    shown,
                    number(None if limit is None else round(limit)),
                ]
            )
    fit_table = Table(
        "scaling-fits",
        "log10(MAE) = intercept + slope · log10(frames)",
        ["method", "quantity", "slope", "intercept", "R²", "sizes (frames)", "from"],
        fits,
    )
    cross_table = Table(
        "crossovers",
        "Training size where the two methods' lines cross (frames)",
        ["method", "vs", "quantity", "crossover (frames)", "reported up to (frames)"],
        crossings,
    )
    return fit_table, cross_table


def provenance_tables(report: StudyReport) -> list[Table]:
    """Full hashes and run ids of everything the report shows."""
    data = Table(
        "provenance-data",
        "Data",
        ["what", "id", "content hash (SHA-256)"],
        [
            [Cell(f"dataset {report.dataset}"), Cell(", ".join(report.fidelities)), Cell(report.dataset_hash or EMPTY)],
            [
                Cell(f"split {report.split_ref}"),
                Cell(f"split {report.split_id}, seed {report.split_seed}, ratios {report.split_ratios}"),
                Cell(report.split_hash or EMPTY),
            ],
        ],
    )
    models = Table(
        "provenance-models",
        "Models",
        ["model", "method", "kind", "training run", "weights SHA-256"],
        [
            [Cell(m.name), Cell(method_label(m.method)), Cell(m.kind), _text(m.run_id), Cell(m.sha256)]
            for m in report.models
        ],
    )
    runs = [
        [
            Cell(f"training run {r.run_id}"),
            Cell(method_label(r.method)),
            Cell(when(r.finished_at)),
            Cell(f"dataset {r.dataset_hash}; split {r.split_hash}"),
        ]
        for r in report.training_runs
    ]
    runs += [
        [
            Cell(f"benchmark run {row.source_id}"),
            Cell(f"test-mae of {row.model.name}"),
            Cell(when(row.ran_at)),
            Cell(f"model {row.model.sha256}"),
        ]
        for row in report.test_maes
        if row.source == "benchmark"
    ]
    runs += [
        [
            Cell(f"benchmark run {run.run_id}"),
            Cell(f"{run.benchmark} v{run.version} of {run.model.name}"),
            Cell(when(run.finished_at)),
            Cell(f"model {run.model.sha256}; data {run.data_hash}"),
        ]
        for run in report.benchmark_runs()
    ]
    runs += [
        [
            Cell(f"benchmark run {m.run_id}"),
            Cell(f"scaling-law of {m.method} (split {m.split_id})"),
            Cell(when(m.finished_at)),
            Cell(f"data {m.data_hash}"),
        ]
        for m in report.scaling
    ]
    for analysis in (report.correlation, report.importance):
        if analysis is not None:
            kind = getattr(analysis, "kind", "importance")
            runs.append(
                [
                    Cell(f"analysis {analysis.analysis_id}"),
                    Cell(f"{kind}: {analysis.source_label} → {analysis.target_label}"),
                    Cell(when(analysis.created_at)),
                    Cell(f"input {analysis.input_hash}"),
                ]
            )
    return [data, models, Table("provenance-runs", "Runs", ["run", "what", "ran", "hashes"], runs)]


def section_tables(report: StudyReport, section: str) -> list[Table]:
    """The tables of one section that has data (none for a missing one)."""
    if section in report.missing:
        return []
    if section == "test-mae":
        return [mae_table(report)]
    if section == "training":
        return [training_table(report)]
    if section == "gradients":
        return [gradient_table(report)]
    if section == "correlation":
        return [correlation_table(report)]
    if section == "importance":
        return [importance_table(report)]
    if section in ITEM_BENCHMARKS:
        return [benchmark_table(report, section)]
    if section == "scaling-law":
        return list(scaling_tables(report))
    return []
