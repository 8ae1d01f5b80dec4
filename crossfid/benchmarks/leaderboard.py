"""The leaderboard: refresh what is missing or stale, read the ``leaderboard`` view, refresh on a schedule.

The models: chgnet's shipped base models, crossfid's own fine-tunes and, unless left out, the peers
(:data:`BOARD_PEERS` and every registered calculator). A model that labelled the benchmark data
(``benchmark_runs.labelled_by``) is the board's *labeller*: shown, not ranked, no composite score.

``refresh`` runs exactly the (registered model × benchmark) pairs whose current
key (benchmark version, model weights, benchmark data, parameters) has no
completed run. It holds a PostgreSQL advisory lock for its whole duration, so a
second refresh started meanwhile waits and then finds nothing to do. A pair
that fails is recorded as a failed run with its error and the others go on.
Before any benchmark, the split and its dataset are verified against their stored
content hashes (:func:`crossfid.curation.verify.require_verified_split`); a mismatch
refuses the whole refresh with a :class:`crossfid.curation.verify.VerificationError`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from crossfid.benchmarks.registry import BenchmarkError, Context, NotApplicable, board_columns, default_benchmarks
from crossfid.benchmarks.store import completed_run, fail_run, finish_run, start_run
from crossfid.curation.split_store import resolve_split
from crossfid.curation.verify import require_verified_split
from crossfid.db.models import ModelRow, TrainingRun
from crossfid.errors import InputError
from crossfid.hashing import benchmark_run_key
from crossfid.potentials.chgnet import SHIPPED_MODELS
from crossfid.runtime.signals import stop_on_signals
from crossfid.training.registry import ensure_package_model, ensure_peer_model, peer_names
from crossfid.vocabulary import METHOD_LABELS, PRETRAINED

log = logging.getLogger(__name__)

#: pg_advisory_lock key of the leaderboard refresh ("crossfid-leaderboard")
REFRESH_LOCK_KEY = 0x63665F6C64627264


@dataclass
class RefreshSummary:
    ran: list[tuple[str, str, int]] = field(default_factory=list)  # (model, benchmark, run id)
    fresh: list[tuple[str, str, int]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (model, benchmark, error)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (benchmark, why it does not apply)
    verified: list[str] = field(default_factory=list)  # OK lines of the dataset, split and subsets benchmarked on


#: the shipped peer models every refresh registers and benchmarks (unless peers are left out)
BOARD_PEERS: tuple[str, ...] = ("sevennet-0", "sevennet-mf-0-r2scan")


def leaderboard_models(session: Session, *, peers: bool = False) -> list[ModelRow]:
    """The models on the leaderboard: chgnet's shipped base models, the best weights of every run trained on a
    split's whole training part (runs on nested subsets are scaling-law points, not candidates) and, with
    ``peers``, :data:`BOARD_PEERS` (registered here) and every other registered peer (calculators)."""
    for name in SHIPPED_MODELS:
        ensure_package_model(session, name)
    if peers:
        for name in BOARD_PEERS:
            ensure_peer_model(session, name)
    on_subset = select(TrainingRun.id).where(TrainingRun.subset_size.is_not(None))
    query = (
        select(ModelRow)
        .where(ModelRow.role.in_(("base", "best", "peer") if peers else ("base", "best")))
        .where(ModelRow.run_id.is_(None) | ModelRow.run_id.not_in(on_subset))
        .order_by(ModelRow.id)
    )
    return list(session.scalars(query).all())


def refresh(
    engine: Engine,
    split: str | int,
    *,
    benchmarks: dict[str, Any] | None = None,
    only: list[str] | None = None,
    models: list[str] | None = None,
    client: Any | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    peers: bool = False,
) -> RefreshSummary:
    """Run every missing or stale (model × benchmark) pair on ``split``'s benchmark data; idempotent.
    ``peers``: the peer models too (:func:`leaderboard_models`; the command line's default)."""
    suite = benchmarks or default_benchmarks()
    if only:
        unknown = sorted(set(only) - set(suite))
        if unknown:
            raise BenchmarkError(f"unknown benchmarks {', '.join(unknown)}; known: {', '.join(suite)}")
        suite = {name: suite[name] for name in only}
    summary = RefreshSummary()
    with engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": REFRESH_LOCK_KEY})
        lock.commit()
        try:
            _refresh_locked(engine, split, suite, models, client, progress, summary, peers)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": REFRESH_LOCK_KEY})
            lock.commit()
    return summary


def _refresh_locked(engine, split, suite, model_names, client, progress, summary: RefreshSummary, peers) -> None:
    with Session(engine) as session:
        split_id = resolve_split(session, split).id
    # the benchmark data come from this split and its dataset: recompute their hashes from the stored frames
    # first, and refuse (VerificationError) when frozen data were changed behind the database's back
    summary.verified = require_verified_split(engine, split_id).lines()
    with Session(engine) as session, session.begin():
        if peers:  # a shipped peer asked for by name (e.g. sevennet-mf-0-pbe) is registered on first use
            for name in sorted(set(model_names or ()) & set(peer_names())):
                ensure_peer_model(session, name)
        rows = leaderboard_models(session, peers=peers)
        if model_names:
            rows = [r for r in rows if r.name in set(model_names)]
        for row in rows:
            session.expunge(row)
    ctx = Context(engine=engine, client=client, progress=progress)
    for benchmark in suite.values():
        with Session(engine) as session:
            try:
                prepared = benchmark.prepare(session, split_id)
            except NotApplicable as exc:
                summary.skipped.append((benchmark.name, str(exc)))
                continue
            except Exception as exc:
                for row in rows:
                    summary.failed.append((row.name, benchmark.name, f"cannot prepare data: {exc}"))
                continue
        parameters = benchmark.parameters()
        for row in rows:
            key = benchmark_run_key(benchmark.name, benchmark.version, row.sha256, prepared.data_hash, parameters)
            with Session(engine) as session:
                done = completed_run(session, key)
            if done is not None:
                summary.fresh.append((row.name, benchmark.name, done.id))
                continue
            run_id = start_run(
                engine,
                benchmark=benchmark.name,
                version=benchmark.version,
                key=key,
                data_hash=prepared.data_hash,
                data=prepared.data,
                parameters=parameters,
                model_id=row.id,
                model_sha256=row.sha256,
                split_id=split_id,
                labelled_by=prepared.labelled_by,
            )
            try:
                metrics, items = benchmark.run(ctx, row, prepared)
                finish_run(engine, run_id, metrics, items)
                summary.ran.append((row.name, benchmark.name, run_id))
            except Exception as exc:  # one failing pair never stops the others
                log.warning("%s on %s failed: %s", benchmark.name, row.name, exc)
                fail_run(engine, run_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
                summary.failed.append((row.name, benchmark.name, f"{type(exc).__name__}: {exc}"))


# --------------------------------------------------------------------------- reading


#: units shown as no unit in headers
_DIMENSIONLESS = frozenset({"fraction", "ratio", "count"})


def page_columns() -> list[tuple[str, str]]:
    """Columns of the static page: (view column, unit), the metric ones from the benchmark registry."""
    metrics = [(c.spec.column, "" if c.spec.unit in _DIMENSIONLESS else c.spec.unit) for c in board_columns()]
    shown = [m for m, c in zip(metrics, board_columns(), strict=True) if c.spec.page]
    return [
        ("model", ""),
        ("origin", ""),
        ("method", ""),
        ("training_size", "frames"),
        *shown,
        ("composite_score", ""),
    ]


def show_columns() -> list[tuple[str, str]]:
    """Columns of ``leaderboard show``: (view column, short header); :func:`show_legend` says what they are."""
    metrics = [(c.spec.column, c.spec.header) for c in board_columns() if c.spec.header]
    return [("model", "model"), ("origin", "origin"), ("method", "method"), *metrics, ("composite_score", "score")]


def origin_label(row: dict[str, Any]) -> str:
    """What a board row is: ``crossfid`` (its own fine-tune), ``base`` or ``peer``, ``· labeller`` when the model
    labelled the benchmark data (then unranked)."""
    origin = row.get("origin") or ""
    return f"{origin} · labeller" if row.get("labeller") else origin


def labeller_note(rows: list[dict[str, Any]]) -> str | None:
    """A sentence naming the board's labellers (a surrogate for DFT), None when no model labelled the data."""
    names = [r["model"] for r in rows if r.get("labeller")]
    if not names:
        return None
    return (
        f"The benchmark data were labelled by {', '.join(names)} (a surrogate, not DFT): "
        f"{'it is' if len(names) == 1 else 'they are'} shown as labeller, without ranks or a composite score."
    )


def show_legend() -> str:
    """The legend of ``leaderboard show``: each short header with its meaning and unit, and the method labels."""
    shown = [c.spec for c in board_columns() if c.spec.header]
    parts = [f"{m.header} {m.legend}" + ("" if m.unit in _DIMENSIONLESS else f" {m.unit}") for m in shown]
    higher = [m.header for m in shown if m.better == "higher"]
    labels = ", ".join(f"{label} {name}" for name, label in METHOD_LABELS.items() if name != PRETRAINED)
    return (
        f"{'; '.join(parts)}; score: composite (fixed normalisation). Lower is better"
        + (f", except {', '.join(higher)}" if higher else "")
        + f". Methods: {METHOD_LABELS[PRETRAINED]} (not trained by crossfid), {labels}. "
        "Origin: crossfid (its own fine-tunes), "
        "base (the shipped models it fine-tunes), peer (other families, calculators); a labeller labelled the "
        "benchmark data and is not ranked."
    )


def read_leaderboard(engine: Engine) -> tuple[list[str], list[dict[str, Any]]]:
    """All columns of the ``leaderboard`` view, best composite score first (models without one, then labellers,
    last)."""
    with engine.connect() as conn:
        result = conn.execute(text("SELECT * FROM leaderboard ORDER BY labeller, composite_score NULLS LAST, model"))
        columns = list(result.keys())
        return columns, [dict(zip(columns, row, strict=True)) for row in result]


# --------------------------------------------------------------------------- schedule


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_interval(value: str) -> dt.timedelta:
    """``"6h"``, ``"30m"``, ``"90s"``, ``"1d"`` → a timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise InputError(f"invalid interval {value!r}: use a number and s, m, h or d (e.g. 6h)")
    amount, unit = float(match[1]), match[2]
    seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds <= 0:
        raise InputError("the interval must be positive")
    return dt.timedelta(seconds=seconds)


def run_every(
    interval: dt.timedelta,
    job: Callable[[], Any],
    *,
    stop: threading.Event | None = None,
    announce: Callable[[str], None] = log.info,
    max_runs: int | None = None,
) -> int:
    """Run ``job`` now and then every ``interval`` until SIGTERM/SIGINT (or ``stop``); returns the number of runs.

    A failing job is logged and the schedule goes on. Signals end the wait at once
    and let a running job finish first.
    """
    stop = stop or threading.Event()
    restore = stop_on_signals(stop)
    runs = 0
    try:
        while not stop.is_set():
            try:
                job()
            except Exception as exc:  # the schedule outlives one failing refresh
                announce(f"refresh failed: {type(exc).__name__}: {exc}")
            runs += 1
            if max_runs is not None and runs >= max_runs:
                break
            next_run = dt.datetime.now(dt.UTC) + interval
            announce(f"next refresh at {next_run.isoformat(timespec='seconds')}")
            stop.wait(interval.total_seconds())
        announce("scheduler stopped")
    finally:
        restore()
    return runs
