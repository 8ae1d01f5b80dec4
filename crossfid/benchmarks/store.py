"""Benchmark runs in the database: keys, start, per-item results, metrics, completion.

A run's ``key`` (:func:`crossfid.hashing.benchmark_run_key`) is the SHA-256 of what it
computes: benchmark name and version, the model's weights hash (or the method, for scaling laws), the benchmark data's
hash and the parameters. A completed run with the current key is the fresh
result for its cell; a partial unique index allows at most one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

import crossfid
from crossfid.db.models import BenchmarkItem, BenchmarkMetric, BenchmarkRun


@dataclass(frozen=True)
class Metric:
    """One reported number; ``value`` None when there was nothing to average over."""

    name: str
    value: float | None
    unit: str
    n: int


@dataclass(frozen=True)
class ItemResult:
    """The outcome for one structure or material."""

    item: str
    ok: bool
    failure: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def completed_run(session: Session, key: str) -> BenchmarkRun | None:
    return session.scalars(
        select(BenchmarkRun).where(BenchmarkRun.key == key, BenchmarkRun.status == "completed")
    ).one_or_none()


def start_run(
    engine: Engine,
    *,
    benchmark: str,
    version: int,
    key: str,
    data_hash: str,
    data: dict[str, Any],
    parameters: dict[str, Any],
    model_id: int | None = None,
    model_sha256: str | None = None,
    method: str | None = None,
    split_id: int | None = None,
    labelled_by: Iterable[str] = (),
) -> int:
    with Session(engine) as session, session.begin():
        row = BenchmarkRun(
            labelled_by=sorted(set(labelled_by)),
            benchmark=benchmark,
            version=version,
            model_id=model_id,
            model_sha256=model_sha256,
            method=method,
            split_id=split_id,
            data_hash=data_hash,
            data=data,
            parameters=parameters,
            key=key,
            crossfid_version=crossfid.__version__,
        )
        session.add(row)
        session.flush()
        return row.id


def finish_run(engine: Engine, run_id: int, metrics: Iterable[Metric], items: Iterable[ItemResult]) -> None:
    """Write items and metrics and mark the run completed, in one transaction."""
    items = list(items)
    metrics = list(metrics)
    with engine.begin() as conn:
        if items:
            conn.execute(
                insert(BenchmarkItem)
                .values(
                    [
                        {"run_id": run_id, "item": i.item, "ok": i.ok, "failure": i.failure, "result": i.result}
                        for i in items
                    ]
                )
                .on_conflict_do_nothing()
            )
        if metrics:
            conn.execute(
                insert(BenchmarkMetric)
                .values(
                    [{"run_id": run_id, "name": m.name, "value": m.value, "unit": m.unit, "n": m.n} for m in metrics]
                )
                .on_conflict_do_nothing()
            )
        conn.execute(
            update(BenchmarkRun)
            .where(BenchmarkRun.id == run_id)
            .values(
                status="completed",
                n_structures=len(items),
                n_failed=sum(not i.ok for i in items),
                finished_at=dt.datetime.now(dt.UTC),
            )
        )


def fail_run(engine: Engine, run_id: int, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(BenchmarkRun)
            .where(BenchmarkRun.id == run_id)
            .values(status="failed", error=error[:2000], finished_at=dt.datetime.now(dt.UTC))
        )


def metrics_of(session: Session, run_id: int) -> dict[str, BenchmarkMetric]:
    rows = session.scalars(select(BenchmarkMetric).where(BenchmarkMetric.run_id == run_id)).all()
    return {row.name: row for row in rows}


def latest_items(session: Session, model_id: int, benchmark: str) -> list[BenchmarkItem]:
    """The successful items of a model's newest completed run of ``benchmark`` (none without one)."""
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


_LABELLERS_SQL = text(
    """
    SELECT DISTINCT t.input_parameters ->> 'label_model'
    FROM tasks t
    WHERE t.fidelity = ANY(:fidelities) AND t.input_parameters ? 'label_model'
      AND t.material_id IN (SELECT material_id FROM split_members WHERE split_id = :split AND part = ANY(:parts))
    """
)


def labellers(session: Session, split_id: int, fidelities: Iterable[str], parts: Iterable[str]) -> tuple[str, ...]:
    """The models (crossfid names) that labelled the tasks at ``fidelities`` of the split's materials in ``parts``:
    each task's ``input_parameters.label_model`` (recorded by generated corpora; absent for DFT)."""
    rows = session.execute(
        _LABELLERS_SQL, {"fidelities": list(fidelities), "split": split_id, "parts": list(parts)}
    ).scalars()
    return tuple(sorted(r for r in rows if r))


def newest_frozen_split(engine: Engine) -> int:
    """The id of the newest frozen split: what benchmarks run on unless told otherwise."""
    from crossfid.errors import NotFoundError

    with engine.connect() as conn:
        split_id = conn.execute(text("SELECT max(id) FROM splits WHERE frozen")).scalar_one()
    if split_id is None:
        raise NotFoundError("there is no frozen split to benchmark on: create one with `crossfid dataset split`")
    return split_id
