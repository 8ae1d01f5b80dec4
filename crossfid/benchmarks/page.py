"""The static leaderboard page: the view's rows plus, per model, its training curve and its benchmarks' figures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crossfid.benchmarks.leaderboard import labeller_note, origin_label, page_columns, read_leaderboard
from crossfid.benchmarks.registry import composite_terms, registered
from crossfid.db.models import BenchmarkRun, ModelRow


def model_figures(engine: Engine, model: ModelRow, folder: Path) -> dict[str, Path]:
    """Figures of one model that its stored results allow (missing ones are simply absent): its training curve,
    then each registered benchmark's figures."""
    from crossfid.plots.training import plot_training_curves
    from crossfid.training.history import load_histories

    figures: dict[str, Path] = {}
    slug = model.name.replace("/", "_")
    if model.run_id is not None:
        figures["training curve"] = plot_training_curves(
            folder / f"{slug}-curve.png", load_histories(engine, [model.run_id])
        )
    with Session(engine) as session:
        for benchmark in registered().values():
            figures.update(benchmark.figures(session, model, folder))
    return figures


def scaling_figure(engine: Engine, folder: Path) -> Path | None:
    """The scaling-law figure of the newest scaling-law benchmark of each method, if there are any."""
    from types import SimpleNamespace

    from crossfid.benchmarks.scaling_runs import NAME
    from crossfid.benchmarks.store import metrics_of
    from crossfid.plots.scaling import plot_scaling_law

    points, fits = [], {}
    with Session(engine) as session:
        runs = session.scalars(
            select(BenchmarkRun)
            .where(BenchmarkRun.benchmark == NAME, BenchmarkRun.status == "completed")
            .order_by(BenchmarkRun.method, BenchmarkRun.finished_at.desc(), BenchmarkRun.id.desc())
            .distinct(BenchmarkRun.method)
        ).all()
        for run in runs:
            points += [SimpleNamespace(**p) for p in run.data.get("points", [])]
            m = metrics_of(session, run.id)
            slope, intercept, r2 = (m.get(f"energy_{k}") for k in ("slope", "intercept", "r2"))
            usable = slope is not None and slope.value is not None
            fit = SimpleNamespace(slope=slope.value, intercept=intercept.value, r2=r2.value) if usable else None
            fits[run.method] = {"energy": fit}
    if not points:
        return None
    return plot_scaling_law(folder / "scaling-law.png", points, fits)


def build_page(engine: Engine, out: Path) -> Path:
    """Write the leaderboard page to ``out`` (figures are embedded; their PNGs are kept beside it)."""
    from crossfid.benchmarks.html import ModelDetail, write_leaderboard_html

    columns, rows = read_leaderboard(engine)
    folder = out.parent / f"{out.stem}-figures"
    details: dict[str, Any] = {}
    with Session(engine) as session:
        models = {m.name: m for m in session.scalars(select(ModelRow)).all()}
        for m in models.values():
            session.expunge(m)
    for row in rows:
        model = models[row["model"]]
        details[row["model"]] = ModelDetail(name=row["model"], figures=model_figures(engine, model, folder))
    scaling = scaling_figure(engine, folder)
    if scaling is not None:
        details["scaling law (all methods)"] = ModelDetail(
            name="scaling law (all methods)", figures={"scaling law": scaling}
        )
    shown = [name for name, _ in page_columns()]
    headers = [f"{name} ({unit})" if unit else name for name, unit in page_columns()]
    table_rows = [
        dict(zip(headers, (origin_label(row) if name == "origin" else row.get(name) for name in shown), strict=True))
        for row in rows
    ]
    labelled = labeller_note(rows)
    return write_leaderboard_html(
        out,
        headers,
        table_rows,
        title="crossfid leaderboard",
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        details=details,
        notes=[
            f"Lower is better for every error; composite score: mean of {composite_terms()} over the benchmarks "
            "a model has.",
            "Origin: crossfid (its own fine-tunes), base (the shipped models it fine-tunes), peer (other model "
            "families and calculators, benchmarked for comparison). forgetting_*: errors on the source fidelity's "
            "test frames (energy after per-element referencing).",
            *([labelled] if labelled else []),
            f"Columns of the view not shown here: {', '.join(c for c in columns if c not in shown)}.",
        ],
    )
