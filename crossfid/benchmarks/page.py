"""The static leaderboard page: the view's rows plus, per model, its training curve, parity and density figures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crossfid.benchmarks.leaderboard import PAGE_COLUMNS, read_leaderboard
from crossfid.db.models import BenchmarkItem, BenchmarkRun, ModelRow


def _latest_items(session: Session, model_id: int, benchmark: str) -> list[BenchmarkItem]:
    run_id = session.scalar(
        select(BenchmarkRun.id)
        .where(
            BenchmarkRun.model_id == model_id, BenchmarkRun.benchmark == benchmark, BenchmarkRun.status == "completed"
        )
        .order_by(BenchmarkRun.finished_at.desc(), BenchmarkRun.id.desc())
        .limit(1)
    )
    if run_id is None:
        return []
    return list(session.scalars(select(BenchmarkItem).where(BenchmarkItem.run_id == run_id, BenchmarkItem.ok)).all())


def model_figures(engine: Engine, model: ModelRow, folder: Path) -> dict[str, Path]:
    """Figures of one model that its stored results allow (missing ones are simply absent)."""
    from crossfid.plots.benchmarks import plot_density_ratios, plot_energy_parity
    from crossfid.plots.training import plot_training_curves
    from crossfid.training.history import load_histories

    figures: dict[str, Path] = {}
    slug = model.name.replace("/", "_")
    if model.run_id is not None:
        figures["training curve"] = plot_training_curves(
            folder / f"{slug}-curve.png", load_histories(engine, [model.run_id])
        )
    with Session(engine) as session:
        parity = _latest_items(session, model.id, "test-mae")
        density = _latest_items(session, model.id, "density")
    pairs = [
        (i.result["energy_per_atom"], i.result["predicted_energy_per_atom"])
        for i in parity
        if "energy_per_atom" in i.result
    ]
    if pairs:
        dft, pred = zip(*pairs, strict=True)
        figures["test-set energy parity"] = plot_energy_parity(
            folder / f"{slug}-parity.png", dft, pred, title=model.name
        )
    ratios = [i.result["ratio"] for i in density if "ratio" in i.result]
    if ratios:
        figures["density ratios"] = plot_density_ratios(folder / f"{slug}-density.png", ratios, title=model.name)
    return figures


def scaling_figure(engine: Engine, folder: Path) -> Path | None:
    """The scaling-law figure of the newest scaling-law benchmark of each method, if there are any."""
    from types import SimpleNamespace

    from crossfid.benchmarks.store import metrics_of
    from crossfid.plots.scaling import plot_scaling_law

    points, fits = [], {}
    with Session(engine) as session:
        runs = session.scalars(
            select(BenchmarkRun)
            .where(BenchmarkRun.benchmark == "scaling-law", BenchmarkRun.status == "completed")
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
    shown = [name for name, _ in PAGE_COLUMNS]
    headers = [f"{name} ({unit})" if unit else name for name, unit in PAGE_COLUMNS]
    table_rows = [dict(zip(headers, (row.get(name) for name in shown), strict=True)) for row in rows]
    return write_leaderboard_html(
        out,
        headers,
        table_rows,
        title="crossfid leaderboard",
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        details=details,
        notes=[
            "Lower is better for every error; composite score: mean of energy/30, force/50, formation/50, "
            "decomposition/50 (meV) and density/0.3 (g/cm³) over the benchmarks a model has.",
            f"Columns of the view not shown here: {', '.join(c for c in columns if c not in shown)}.",
        ],
    )
