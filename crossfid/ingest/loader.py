"""The one loader every source feeds: canonical records → database, in batches.

For each batch of records, in ONE transaction:

1. raw documents (content-addressed; ``ON CONFLICT (sha256) DO NOTHING``),
2. materials (``ON CONFLICT (external_id) DO NOTHING``),
3. tasks (``ON CONFLICT (source_id, external_id) DO NOTHING RETURNING id``),
4. frames of the tasks created in step 3, COPYed straight into ``frames`` (they
   cannot conflict: their tasks are new),
5. reference entries (``ON CONFLICT (material_id, fidelity) DO NOTHING``),
6. quarantine rows (``ON CONFLICT (fingerprint) DO NOTHING``),
7. the ingest run's counters.

A task and all its frames are therefore committed together or not at all: an
ingest killed part-way (even ``kill -9``) leaves no partial task, and running it
again adds exactly what is missing.

**One identity, one record.** A task is identified by (source, task external id).
The first record of a task that reaches the database is stored: the task row, its
frames and its raw document always come from that one record. A later record with
the same identity (later in the same batch, in another batch, or in another run)
is compared with what is stored: same material, same raw document SHA-256 and the
same frames (ionic step, content hash) → counted as already present; anything
different → quarantined as a *conflict* whose reason names the stored task (its
external id and ``tasks.id``). Nothing is merged and nothing is dropped silently.
(With ``writers > 1``, two batches that hold the same task race: either record may
be the one stored, and the other is the conflict.)

**Text PostgreSQL cannot store.** ``text`` and ``jsonb`` refuse NUL characters and
lone UTF-16 surrogates. :func:`~crossfid.ingest.records.validate_bundle` refuses
them first; whatever still reaches the loader is checked again after conversion
to JSON: a record with either in any string that would be stored (material id,
formula, elements, task id, run type, code, input parameters and their keys,
Hubbard keys, reference entry fields and structure) is quarantined alone, with the
offending text escaped (:func:`escape_text`), and its raw document bytes are kept
in ``raw_documents`` (bytea holds anything). Locations (of a record, of a raw
document) are informational and are escaped, not refused. Every quarantine row
is escaped the same way, so writing it never fails because of its content.

**Errors.** If a batch fails in the database, the failure is classified
(:func:`transient_kind`): connection and lock errors (lost connection, admin
shutdown, deadlock, serialization failure, lock not available, statement
cancelled) are retried with backoff on a fresh connection (:data:`RETRY_DELAYS`);
anything else is a data error, after which the batch is retried record by record
and the record that still fails is quarantined with the database's message.
Transient errors during that one-by-one retry are retried the same way and never
quarantine a record; when they persist, the run fails (and a rerun adds what is
missing).
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

import crossfid
from crossfid.db import pgbinary
from crossfid.db.bulk import copy_encoded, copy_insert
from crossfid.db.models import Frame as FrameRow
from crossfid.db.models import IngestRun, Source
from crossfid.ingest.columnar import FrameBlock, encode_block, frame_block
from crossfid.ingest.records import (
    Bundle,
    RawDocument,
    Record,
    Refusal,
    Task,
    escape_text,
    escape_unstorable,
    has_unstorable_text,
    jsonable,
    unstorable_text_reason,
    validate_bundle,
)
from crossfid.vocabulary import FIDELITY_NAMES

log = logging.getLogger(__name__)

#: a batch is written when it holds this many frames (or BATCH_RECORDS records)
BATCH_FRAMES = 5_000
BATCH_RECORDS = 1_000

#: pauses (seconds, ±50 % jitter) before the retries of a transaction after a transient error;
#: ``len(RETRY_DELAYS) + 1`` attempts in all (about 10 s of waiting, enough for a server restart)
RETRY_DELAYS: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 6.0)

FRAME_COLUMNS = (
    "task_id",
    "ionic_step",
    "n_atoms",
    "lattice",
    "atomic_numbers",
    "frac_coords",
    "energy",
    "corrected_energy",
    "forces",
    "stress",
    "magmoms",
    "n_electronic_steps",
    "scf_converged",
    "content_hash",
)


@dataclass
class IngestSummary:
    """What one ingest run did (counts of database rows).

    ``conflicts`` counts records quarantined because a task with the same identity
    but different content is stored; they are included in ``quarantined``.
    """

    ingest_run_id: int
    source: str
    records: int = 0
    tasks_added: int = 0
    frames_added: int = 0
    references_added: int = 0
    raw_documents_added: int = 0
    tasks_already_present: int = 0
    references_already_present: int = 0
    quarantined: int = 0
    conflicts: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def already_present(self) -> int:
        return self.tasks_already_present + self.references_already_present

    def add(self, other: _BatchCounts) -> None:
        for name, value in vars(other).items():
            if name == "reasons":
                _merge_counts(self.quarantine_reasons, value)
            else:
                setattr(self, name, getattr(self, name) + value)


def _merge_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for key, count in other.items():
        into[key] = into.get(key, 0) + count


@dataclass
class _BatchCounts:
    tasks_added: int = 0
    frames_added: int = 0
    references_added: int = 0
    raw_documents_added: int = 0
    tasks_already_present: int = 0
    references_already_present: int = 0
    quarantined: int = 0
    conflicts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def __iadd__(self, other: _BatchCounts) -> _BatchCounts:
        for name, value in vars(other).items():
            if name == "reasons":
                _merge_counts(self.reasons, value)
            else:
                setattr(self, name, getattr(self, name) + value)
        return self


ProgressCallback = Callable[[IngestSummary], None]


def ingest(
    engine: Engine,
    source_name: str,
    source_kind: str,
    records: Iterable[Record],
    *,
    arguments: dict[str, Any] | None = None,
    description: str | None = None,
    progress: ProgressCallback | None = None,
    batch_frames: int = BATCH_FRAMES,
    batch_records: int = BATCH_RECORDS,
    writers: int = 2,
) -> IngestSummary:
    """Load ``records`` from one source; return the summary.

    ``arguments`` is stored on the ingest run (what was asked; never put secrets
    in it). The run row is marked completed at the end, or failed (with the
    error) if the records iterator itself raises or the database stays unusable.
    """
    source_id = _ensure_source(engine, source_name, source_kind, description)
    run_id = _start_run(engine, source_id, arguments or {})
    summary = IngestSummary(ingest_run_id=run_id, source=source_name)

    def collect(batch: list[Record], written: Future[_BatchCounts]) -> None:
        summary.records += len(batch)
        summary.add(written.result())
        if progress is not None:
            progress(summary)

    try:
        # Batch k+1 is validated, hashed and compressed in a helper thread (numpy, hashlib and
        # zlib work mostly outside the GIL) while earlier batches are written by `writers`
        # threads, each in its own connection and transaction. Every batch holds whole tasks,
        # so concurrent transactions never split a task; rows are inserted in key order, so
        # they cannot deadlock on each other's unique keys.
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossfid-prepare") as preparer,
            ThreadPoolExecutor(max_workers=writers, thread_name_prefix="crossfid-write") as writer,
        ):
            in_flight: deque[tuple[list[Record], Future[_BatchCounts]]] = deque()
            for batch in _batches(records, batch_frames, batch_records):
                prepared = preparer.submit(_prepare, batch)
                in_flight.append(
                    (batch, writer.submit(_write_batch_safely, engine, source_id, run_id, source_name, batch, prepared))
                )
                while len(in_flight) > writers:
                    collect(*in_flight.popleft())
            while in_flight:
                collect(*in_flight.popleft())
    except BaseException as exc:
        _finish_run(engine, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _finish_run(engine, run_id, "completed", None)
    return summary


# --------------------------------------------------------------------------- batching


def _batches(records: Iterable[Record], max_frames: int, max_records: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    frames = 0
    for record in records:
        batch.append(record)
        if isinstance(record, Bundle):
            frames += sum(len(task.frames) for task in record.tasks)
        if frames >= max_frames or len(batch) >= max_records:
            yield batch
            batch, frames = [], 0
    if batch:
        yield batch


# --------------------------------------------------------------------------- transient errors and retries

#: SQLSTATEs of lock and scheduling conflicts: retried; a batch that keeps hitting them is split
_LOCK_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout, pg_cancel_backend)
    }
)
#: SQLSTATEs (and classes) that mean the connection or the server is (temporarily) unusable
_CONNECTION_STATES = frozenset(
    {
        "40003",  # statement_completion_unknown
        "25P03",  # idle_in_transaction_session_timeout (the server closed the session)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "57P05",  # idle_session_timeout
    }
)
_CONNECTION_CLASSES = ("08", "53", "58")  # connection exception, insufficient resources, system error


def transient_kind(error: BaseException) -> str | None:
    """``"lock"`` or ``"connection"`` when ``error`` is a transient database error, else None.

    Transient errors say nothing about the data being written: lock and scheduling
    conflicts (deadlock, serialization failure, lock or statement timeout) and a
    lost or refused connection (no SQLSTATE, class 08, admin or crash shutdown,
    too many connections, disk full...). Everything else (``DataError``,
    ``IntegrityError``, ``ProgramLimitExceeded``, ...) is a property of the data.
    """
    if isinstance(error, sa_exc.TimeoutError):  # no free connection in the pool
        return "connection"
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return "connection"
        error = error.orig
    if not isinstance(error, psycopg.Error):
        return None
    state = error.sqlstate
    if state is None:
        # raised by psycopg itself: a lost connection is an OperationalError/InterfaceError without SQLSTATE
        return "connection" if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError) else None
    if state in _LOCK_STATES:
        return "lock"
    if state in _CONNECTION_STATES or state[:2] in _CONNECTION_CLASSES:
        return "connection"
    return None


_T = TypeVar("_T")


def _in_transaction(engine: Engine, work: Callable[[Connection], _T], what: str) -> _T:
    """``work(conn)`` in one transaction; transient errors are retried on a fresh connection.

    Waits ``RETRY_DELAYS`` (with jitter) between attempts; a connection that failed
    is invalidated so that the pool opens a new one. Raises the last error when
    the attempts are used up, and any non-transient error at once.
    """
    for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
        conn = None
        try:
            conn = engine.connect()
            with conn.begin():
                return work(conn)
        except Exception as exc:
            kind = transient_kind(exc)
            if kind is None or delay is None:
                raise
            if conn is not None and (kind == "connection" or _broken(conn)):
                with suppress(Exception):  # so that the pool opens a new connection for the next attempt
                    conn.invalidate()
            pause = delay * (0.5 + random.random())
            log.warning("%s: %s (attempt %d), retrying in %.1f s", what, _error_line(exc), attempt, pause)
            time.sleep(pause)
        finally:
            if conn is not None:
                conn.close()
    raise AssertionError("unreachable")


def _broken(conn: Connection) -> bool:
    try:
        return bool(conn.invalidated or conn.connection.driver_connection.closed)
    except Exception:
        return True


def _error_line(error: BaseException) -> str:
    orig = error.orig if isinstance(error, DBAPIError) else error
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


# --------------------------------------------------------------------------- writing a batch safely


def _write_batch_safely(
    engine: Engine,
    source_id: int,
    run_id: int,
    source_name: str,
    batch: list[Record],
    prepared: _Prepared | Future[_Prepared] | None = None,
) -> _BatchCounts:
    """Write a batch in one transaction; after a data error, retry record by record.

    Transient errors are retried (:func:`_in_transaction`). A single record that
    the database still refuses is quarantined with the database's message; a
    batch that keeps hitting lock conflicts is split too. A connection that stays
    unusable raises, and so fails the run: nothing is quarantined for it.
    """
    try:
        if isinstance(prepared, Future):
            prepared = prepared.result()
        elif prepared is None:
            prepared = _prepare(batch)
        ready = prepared
        return _in_transaction(
            engine, lambda conn: _write_batch(conn, source_id, run_id, ready, source_name), "writing a batch"
        )
    except Exception as exc:
        kind = transient_kind(exc)
        if kind == "connection" or (kind is not None and len(batch) == 1):
            raise
        error = exc
    if len(batch) > 1:
        log.info("a batch of %d records failed (%s); writing them one by one", len(batch), _error_line(error))
        total = _BatchCounts()
        for record in batch:
            total += _write_batch_safely(engine, source_id, run_id, source_name, [record])
        return total
    return _quarantine_refused(
        engine, source_id, run_id, source_name, batch[0], error, prepared if isinstance(prepared, _Prepared) else None
    )


def _quarantine_refused(
    engine: Engine,
    source_id: int,
    run_id: int,
    source_name: str,
    record: Record,
    error: Exception,
    prepared: _Prepared | None,
) -> _BatchCounts:
    """Quarantine one record that could not be written, keeping its raw document and other refusals."""
    if isinstance(error, DBAPIError):
        reason = f"database refused the record: {_db_message(error)}"
    else:
        reason = f"could not be stored: {_error_line(error)}"
    location = str(getattr(record, "location", f"<{type(record).__name__}>"))
    log.warning("quarantining %s: %s", escape_text(location), escape_text(reason))
    refusal = Refusal(location, reason, raw_document=_describe(record))
    if isinstance(record, Bundle) and prepared is not None:  # with its own refusals and its raw document
        full = _Prepared(bundles=[], refusals=[*prepared.refusals, refusal], raw=dict(prepared.raw))
    else:
        full = _Prepared(bundles=[], refusals=[refusal])
    attempts = [full, _Prepared(bundles=[], refusals=[Refusal(location, reason)])]
    for index, attempt in enumerate(attempts):
        try:
            return _in_transaction(
                engine,
                lambda conn, attempt=attempt: _write_batch(conn, source_id, run_id, attempt, source_name),
                "writing to quarantine",
            )
        except Exception as exc:
            if transient_kind(exc) is not None or index == len(attempts) - 1:
                raise
            log.error("could not quarantine %s with details (%s); storing the reason alone", escape_text(location), exc)
    raise AssertionError("unreachable")


def _db_message(exc: DBAPIError) -> str:
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    constraint = getattr(diag, "constraint_name", None)
    message = primary or (str(exc.orig).splitlines() or [type(exc.orig).__name__])[0]
    return f"{message} ({constraint})" if constraint else message


def _describe(record: Record) -> Any:
    """What the quarantine keeps of a record it could not store (the raw document itself goes to raw_documents)."""
    if isinstance(record, Refusal):
        return record.raw_document
    try:
        described: dict[str, Any] = {
            "material": record.material.external_id,
            "tasks": [t.external_id for t in record.tasks],
        }
        if record.raw is not None:
            described["raw_document"] = {
                "sha256": record.raw.sha256,
                "format": record.raw.format,
                "location": record.raw.location,
                "size_bytes": len(record.raw.content),
            }
    except Exception:  # not a well-formed bundle: keep what can be shown of it
        return {"record": escape_text(repr(record)[:10_000])}
    return described


# --------------------------------------------------------------------------- text PostgreSQL refuses


def _safe_json(value: Any) -> Any:
    """A JSONB-safe copy of ``value``: :func:`jsonable`, then every key and string escaped."""
    if value is None:
        return None
    try:
        return escape_unstorable(jsonable(value))
    except Exception:  # cyclic, too deep, or an object whose conversion raises
        try:
            text = ascii(value)
        except Exception:
            text = f"<{type(value).__name__}>"
        return {"unrepresentable": text[:100_000]}


# --------------------------------------------------------------------------- one batch


@dataclass
class _Prepared:
    """A batch after the CPU work: valid bundles, refusals, columnar frames, compressed raw documents."""

    bundles: list[Bundle]
    refusals: list[Refusal]
    blocks: dict[int, FrameBlock] = field(default_factory=dict)  # id(task of `bundles`) → columnar frames
    raw: dict[str, tuple[RawDocument, bytes]] = field(default_factory=dict)  # sha256 → (document, gzip bytes)
    raw_sha: dict[int, str] = field(default_factory=dict)  # id(bundle of `bundles`) → its raw document's sha256


def _prepare(batch: list[Record]) -> _Prepared:
    """Validate, stack, hash and compress a batch (pure; runs in the prefetch thread)."""
    prepared = _Prepared(bundles=[], refusals=[])
    for record in batch:
        if isinstance(record, Refusal):
            prepared.refusals.append(record)
            continue
        for part in _split_repeated_tasks(record):
            _prepare_bundle(part, prepared)
    return prepared


def _split_repeated_tasks(bundle: Bundle) -> list[Bundle]:
    """The bundle, then one single-task bundle per task repeating a task id seen earlier in it.

    So that validation, columnar frames and the loader's bookkeeping, all keyed by
    task id within a bundle, never mix two tasks of the same id; the repeats then
    meet the first one as duplicates (see :func:`_write_tasks`).
    """
    seen: set[Any] = set()
    first: list[Task] = []
    repeats: list[Task] = []
    for task in bundle.tasks:
        (repeats if task.external_id in seen else first).append(task)
        seen.add(task.external_id)
    if not repeats:
        return [bundle]
    return [replace(bundle, tasks=first), *(replace(bundle, tasks=[task], references=[]) for task in repeats)]


def _prepare_bundle(bundle: Bundle, prepared: _Prepared) -> None:
    blocks: dict[Any, FrameBlock] = {}
    for task in bundle.tasks:
        block = frame_block(task.frames)
        if block is not None:
            blocks[task.external_id] = block
    cleaned, refused = validate_bundle(bundle, checked_frames=frozenset(blocks))
    prepared.refusals.extend(refused)
    if cleaned is None:
        return
    # JSON-ready copies (what will be sent) of the JSONB values, so that they are checked as stored
    cleaned = _copy(
        cleaned,
        tasks=[
            _copy(task, input_parameters=jsonable(task.input_parameters or {}), hubbards=jsonable(task.hubbards))
            for task in cleaned.tasks
        ],
        references=[_copy(entry, structure=jsonable(entry.structure)) for entry in cleaned.references],
    )
    raw = cleaned.raw
    if raw is not None and (has_unstorable_text(str(raw.location)) or has_unstorable_text(str(raw.format))):
        # where the document came from is informational (a file name need not be UTF-8): escaped, not refused
        raw = cleaned.raw = _copy(raw, format=escape_text(str(raw.format)), location=escape_text(str(raw.location)))
    reason = unstorable_text_reason(cleaned)
    if reason is not None:
        prepared.refusals.append(Refusal(cleaned.location, reason, raw_document=_describe(cleaned)))
        if raw is not None:  # the bytes are storable: keep the original record next to its quarantine row
            prepared.raw.setdefault(raw.sha256, (raw, raw.compressed()))
        return
    prepared.bundles.append(cleaned)
    for task in cleaned.tasks:
        block = blocks.get(task.external_id)
        if block is not None:
            prepared.blocks[id(task)] = block
    if raw is not None:
        sha = raw.sha256
        prepared.raw_sha[id(cleaned)] = sha
        if sha not in prepared.raw:
            prepared.raw[sha] = (raw, raw.compressed())


def _copy(obj: _T, **changes: Any) -> _T:
    """A shallow copy of a record dataclass with some fields changed (``dataclasses.replace`` without ``__init__``)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__, **changes)
    return new


def _write_batch(conn: Connection, source_id: int, run_id: int, prepared: _Prepared, source_name: str) -> _BatchCounts:
    counts = _BatchCounts()
    bundles = prepared.bundles
    raw_ids = _write_raw_documents(conn, source_id, run_id, prepared.raw, counts)
    _write_fidelities(conn, bundles)
    material_ids = _write_materials(conn, bundles)
    new_tasks, conflicts = _write_tasks(conn, source_id, run_id, prepared, raw_ids, material_ids, counts)
    _write_frames(conn, new_tasks, prepared.blocks, counts)
    refused_tasks = {(id(bundle), task.external_id) for bundle, task, _ in conflicts}
    _write_references(conn, source_id, run_id, bundles, material_ids, refused_tasks, counts)
    counts.conflicts += len(conflicts)
    _write_quarantine(
        conn, source_id, run_id, [*prepared.refusals, *(refusal for _, _, refusal in conflicts)], counts, source_name
    )
    conn.execute(
        update(IngestRun)
        .where(IngestRun.id == run_id)
        .values(
            n_tasks_added=IngestRun.n_tasks_added + counts.tasks_added,
            n_frames_added=IngestRun.n_frames_added + counts.frames_added,
            n_reference_entries_added=IngestRun.n_reference_entries_added + counts.references_added,
            n_already_present=IngestRun.n_already_present
            + counts.tasks_already_present
            + counts.references_already_present,
            n_quarantined=IngestRun.n_quarantined + counts.quarantined,
        )
    )
    return counts


def _write_raw_documents(
    conn: Connection, source_id: int, run_id: int, docs: dict[str, tuple[RawDocument, bytes]], counts: _BatchCounts
) -> dict[str, int]:
    if not docs:
        return {}
    rows = (
        (sha, source_id, run_id, doc.format, "gzip", len(doc.content), compressed, doc.location)
        for sha, (doc, compressed) in sorted(docs.items())
    )
    columns = ["sha256", "source_id", "ingest_run_id", "format", "compression", "size_bytes", "content", "location"]
    result = copy_insert(conn, "raw_documents", rows, columns, conflict_columns=["sha256"])
    counts.raw_documents_added += result.n_inserted
    found = conn.exec_driver_sql(
        "SELECT sha256, id FROM raw_documents WHERE sha256 = ANY(%(shas)s)", {"shas": list(docs)}
    )
    return dict(found.all())


def _write_fidelities(conn: Connection, bundles: list[Bundle]) -> None:
    """Insert the ``fidelities`` row of every composed fidelity of the batch that is not stored yet."""
    names = {task.fidelity for bundle in bundles for task in bundle.tasks}
    names |= {entry.fidelity for bundle in bundles for entry in bundle.references}
    names -= set(FIDELITY_NAMES)  # seeded by the migrations
    if not names:
        return
    from crossfid.vocabulary import fidelity_spec

    rows = []
    for name in sorted(names):
        spec = fidelity_spec(name)  # validate_bundle refused names without one
        rows.append(
            (
                spec.name,
                spec.family,
                spec.hubbard,
                spec.dispersion,
                spec.description,
                spec.functional,
                spec.exact_exchange,
                spec.screening,
                jsonable(spec.parameters) if spec.parameters is not None else None,
            )
        )
    columns = [
        "name",
        "family",
        "hubbard",
        "dispersion",
        "description",
        "functional",
        "exact_exchange",
        "screening",
        "parameters",
    ]
    copy_insert(conn, "fidelities", rows, columns, conflict_columns=["name"])


def _write_materials(conn: Connection, bundles: list[Bundle]) -> dict[str, int]:
    materials = {b.material.external_id: b.material for b in bundles}
    if not materials:
        return {}
    rows = ((m.external_id, m.formula, m.chemsys, list(m.elements)) for _, m in sorted(materials.items()))
    copy_insert(
        conn, "materials", rows, ["external_id", "formula", "chemsys", "elements"], conflict_columns=["external_id"]
    )
    found = conn.exec_driver_sql(
        "SELECT external_id, id FROM materials WHERE external_id = ANY(%(ids)s)", {"ids": list(materials)}
    )
    return dict(found.all())


@dataclass(frozen=True)
class _Content:
    """What must agree for two records of one task to be the same: material, raw document, frames.

    Frames are compared as text, in ionic-step order: the steps joined by commas and
    their content hashes concatenated, exactly as PostgreSQL's ``string_agg`` gives them.
    """

    material: str
    raw_sha256: str | None
    steps: str
    hashes: str

    def frames(self) -> dict[int, str]:
        steps = [int(step) for step in self.steps.split(",")] if self.steps else []
        return {step: self.hashes[64 * i : 64 * (i + 1)] for i, step in enumerate(steps)}


def _content(prepared: _Prepared, bundle: Bundle, task: Task) -> _Content:
    block = prepared.blocks.get(id(task))
    if block is not None:
        steps, hashes = block.ionic_step.tolist(), block.content_hash
    else:
        steps, hashes = [int(f.ionic_step) for f in task.frames], [f.content_hash() for f in task.frames]
    if steps != sorted(steps):  # frames are nearly always in ionic order already
        order = sorted(range(len(steps)), key=steps.__getitem__)
        steps, hashes = [steps[i] for i in order], [hashes[i] for i in order]
    raw_sha256 = prepared.raw_sha.get(id(bundle))
    return _Content(bundle.material.external_id, raw_sha256, ",".join(map(str, steps)), "".join(hashes))


def _stored_content(conn: Connection, source_id: int, external_ids: list[str]) -> dict[str, tuple[int, _Content]]:
    """(tasks.id, content) of the stored tasks of ``source_id`` with these external ids."""
    found = conn.exec_driver_sql(
        """
        SELECT t.external_id, t.id, m.external_id, r.sha256, f.steps, f.hashes
          FROM tasks t
          JOIN materials m ON m.id = t.material_id
          LEFT JOIN raw_documents r ON r.id = t.raw_document_id
          CROSS JOIN LATERAL (
                SELECT string_agg(ionic_step::text, ',' ORDER BY ionic_step) AS steps,
                       string_agg(content_hash, '' ORDER BY ionic_step) AS hashes
                  FROM frames WHERE task_id = t.id
               ) f
         WHERE t.source_id = %(source)s AND t.external_id = ANY(%(ids)s)
        """,
        {"source": source_id, "ids": external_ids},
    )
    return {
        external_id: (task_id, _Content(material, sha, steps or "", hashes or ""))
        for external_id, task_id, material, sha, steps, hashes in found
    }


def _conflict(bundle: Bundle, task: Task, task_id: int, stored: _Content, mine: _Content) -> Refusal:
    """The quarantine entry of a record whose task differs from the stored task of the same identity."""
    differences = []
    if stored.material != mine.material:
        differences.append(f"material ({stored.material} stored, {mine.material} here)")
    if stored.raw_sha256 != mine.raw_sha256:
        differences.append(f"raw document (sha256 {_short(stored.raw_sha256)} stored, {_short(mine.raw_sha256)} here)")
    old, new = stored.frames(), mine.frames()
    if old != new:
        changed = sum(old.get(step) != digest for step, digest in new.items()) + len(old.keys() - new.keys())
        differences.append(f"frames ({len(old)} stored, {len(new)} here, {changed} differ)")
    reason = (
        f"conflicts with stored task {task.external_id!r} (tasks.id {task_id}): "
        f"same source and task id, different {', '.join(differences)}"
    )
    described = {
        "conflict": {
            "stored_task_id": task_id,
            "external_id": task.external_id,
            "stored_material": stored.material,
            "stored_raw_document_sha256": stored.raw_sha256,
            "stored_n_frames": len(old),
        },
        "material": mine.material,
        "task": task.external_id,
        "raw_document_sha256": mine.raw_sha256,
        "n_frames": len(new),
        "reference_entries": [e.fidelity for e in bundle.references if e.task_external_id == task.external_id],
    }
    return Refusal(f"{bundle.location} task {task.external_id}", reason, raw_document=described)


def _short(sha: str | None) -> str:
    return "none" if sha is None else sha[:12]


def _write_tasks(
    conn: Connection,
    source_id: int,
    run_id: int,
    prepared: _Prepared,
    raw_ids: dict[str, int],
    material_ids: dict[str, int],
    counts: _BatchCounts,
) -> tuple[list[tuple[int, Task]], list[tuple[Bundle, Task, Refusal]]]:
    """Insert tasks; return the new ones as (task id, Task) and the conflicts as (bundle, task, refusal).

    The first record of each task id in the batch is inserted. Records whose task
    is stored already (by an earlier run, a concurrent batch, or earlier in this
    batch) are compared with it: same content → already present, else a conflict.
    """
    first: dict[str, tuple[Bundle, Task]] = {}
    repeats: list[tuple[Bundle, Task]] = []
    for bundle in prepared.bundles:
        for task in bundle.tasks:
            if task.external_id in first:
                repeats.append((bundle, task))  # the same task twice in one batch
            else:
                first[task.external_id] = (bundle, task)
    if not first:
        return [], []
    rows = []
    for external_id, (bundle, task) in sorted(first.items()):
        sha = prepared.raw_sha.get(id(bundle))
        rows.append(
            (
                material_ids[bundle.material.external_id],
                source_id,
                external_id,
                run_id,
                raw_ids.get(sha) if sha is not None else None,
                task.fidelity,
                task.run_type,
                task.source_run_type,
                task.task_type,
                task.input_parameters,  # made JSON-ready by _prepare
                task.hubbards or None,
                bool(task.hubbards),
                task.code,
                task.code_version,
                task.completed_at,
                task.material_rule,
                task.final_frame_only,
                task.energy_quantity,
            )
        )
    columns = [
        "material_id",
        "source_id",
        "external_id",
        "ingest_run_id",
        "raw_document_id",
        "fidelity",
        "run_type",
        "source_run_type",
        "task_type",
        "input_parameters",
        "hubbards",
        "is_hubbard",
        "code",
        "code_version",
        "completed_at",
        "material_rule",
        "final_frame_only",
        "energy_quantity",
    ]
    result = copy_insert(
        conn, "tasks", rows, columns, conflict_columns=["source_id", "external_id"], returning=["id", "external_id"]
    )
    counts.tasks_added += result.n_inserted
    created = {external_id: task_id for task_id, external_id in result.returned_rows}
    new_tasks = [(task_id, first[external_id][1]) for task_id, external_id in result.returned_rows]

    # the tasks that were not inserted are stored already: compare, as for the repeats within the batch
    reference: dict[str, tuple[int, _Content]] = {}
    present = [external_id for external_id in first if external_id not in created]
    if present:
        reference = _stored_content(conn, source_id, present)
        missing = [external_id for external_id in present if external_id not in reference]
        if missing:  # skipped by ON CONFLICT, yet not visible: changed under us, so write the batch again
            raise psycopg.errors.SerializationFailure(f"tasks {missing[:5]} were neither inserted nor found")
    conflicts: list[tuple[Bundle, Task, Refusal]] = []

    def compare(bundle: Bundle, task: Task) -> None:
        task_id, stored = reference[task.external_id]
        mine = _content(prepared, bundle, task)
        if mine == stored:
            counts.tasks_already_present += 1
        else:
            conflicts.append((bundle, task, _conflict(bundle, task, task_id, stored, mine)))

    for external_id in present:
        compare(*first[external_id])
    for bundle, task in repeats:
        if task.external_id not in reference:  # its first record was inserted just now
            first_bundle, first_task = first[task.external_id]
            reference[task.external_id] = (created[task.external_id], _content(prepared, first_bundle, first_task))
        compare(bundle, task)
    return new_tasks, conflicts


_FRAME_ENCODERS = (
    pgbinary.int8,  # task_id
    pgbinary.int4,  # ionic_step
    pgbinary.int4,  # n_atoms
    pgbinary.float8_array,  # lattice
    pgbinary.int2_array,  # atomic_numbers
    pgbinary.float8_array,  # frac_coords
    pgbinary.float8,  # energy
    pgbinary.float8,  # corrected_energy
    pgbinary.float8_array,  # forces
    pgbinary.float8_array,  # stress
    pgbinary.float8_array,  # magmoms
    pgbinary.int4,  # n_electronic_steps
    pgbinary.boolean,  # scf_converged
    pgbinary.text,  # content_hash
)


def _frame_row(task_id: int, frame: Any) -> tuple:
    return (
        task_id,
        frame.ionic_step,
        frame.n_atoms,
        frame.lattice,
        frame.atomic_numbers,
        frame.frac_coords,
        frame.energy,
        frame.corrected_energy,
        frame.forces,
        frame.stress,
        frame.magmoms,
        frame.n_electronic_steps,
        frame.scf_converged,
        frame.content_hash(),
    )


def _write_frames(
    conn: Connection,
    new_tasks: list[tuple[int, Task]],
    blocks: dict[int, FrameBlock],
    counts: _BatchCounts,
) -> None:
    """COPY the frames of new tasks: columnar blocks where possible, frame by frame otherwise."""

    def chunks() -> Iterator[bytes]:
        for task_id, task in new_tasks:
            block = blocks.get(id(task))
            if block is not None:
                counts.frames_added += block.n_frames
                yield encode_block(block, task_id)
            else:
                counts.frames_added += len(task.frames)
                rows = (_frame_row(task_id, frame) for frame in task.frames)
                yield from pgbinary.encode_rows(rows, _FRAME_ENCODERS)

    if new_tasks:
        copy_encoded(conn, FrameRow.__table__, FRAME_COLUMNS, chunks())


def _write_references(
    conn: Connection,
    source_id: int,
    run_id: int,
    bundles: list[Bundle],
    material_ids: dict[str, int],
    refused_tasks: set[tuple[int, str]],
    counts: _BatchCounts,
) -> None:
    """Insert reference entries, except those made from a task of the same record that was a conflict."""
    entries = {}
    for bundle in bundles:
        for entry in bundle.references:
            if entry.task_external_id and (id(bundle), entry.task_external_id) in refused_tasks:
                continue  # described in the conflict's quarantine row
            key = (bundle.material.external_id, entry.fidelity)
            if key in entries:
                counts.references_already_present += 1
                continue
            entries[key] = entry
    if not entries:
        return
    task_refs = sorted({e.task_external_id for e in entries.values() if e.task_external_id})
    task_ids: dict[str, int] = {}
    if task_refs:
        found = conn.exec_driver_sql(
            "SELECT external_id, id FROM tasks WHERE source_id = %(source)s AND external_id = ANY(%(ids)s)",
            {"source": source_id, "ids": task_refs},
        )
        task_ids = dict(found.all())
    rows = (
        (
            material_ids[material],
            entry.fidelity,
            source_id,
            task_ids.get(entry.task_external_id) if entry.task_external_id else None,
            run_id,
            entry.entry_id,
            entry.energy_per_atom,
            entry.corrected_energy_per_atom,
            entry.formation_energy_per_atom,
            entry.energy_above_hull,
            entry.n_atoms,
            entry.structure,  # made JSON-ready by _prepare
            entry.correction_scheme,
            entry.energy_quantity,
        )
        for (material, _), entry in sorted(entries.items(), key=lambda kv: (material_ids[kv[0][0]], kv[0][1]))
    )
    columns = [
        "material_id",
        "fidelity",
        "source_id",
        "task_id",
        "ingest_run_id",
        "entry_id",
        "energy_per_atom",
        "corrected_energy_per_atom",
        "formation_energy_per_atom",
        "energy_above_hull",
        "n_atoms",
        "structure",
        "correction_scheme",
        "energy_quantity",
    ]
    result = copy_insert(conn, "reference_entries", rows, columns, conflict_columns=["material_id", "fidelity"])
    counts.references_added += result.n_inserted
    counts.references_already_present += result.n_already_present


def _quarantine_row(
    refusal: Refusal, source_id: int, run_id: int, source_name: str
) -> tuple[str, tuple[Any, ...], str]:
    """(fingerprint, row, reason) of a refusal, with every string escaped so that PostgreSQL accepts it."""
    location = escape_text(str(refusal.location)) if refusal.location is not None else ""
    reason = escape_text(str(refusal.reason)) if refusal.reason else "(no reason given)"
    raw_text = None if refusal.raw_text is None else escape_text(str(refusal.raw_text))
    raw_document = _safe_json(refusal.raw_document)
    try:
        fingerprint = refusal.fingerprint(source_name)  # of the original, as before: re-runs find their rows
    except Exception:
        fingerprint = Refusal(location, reason, raw_text, raw_document).fingerprint(escape_text(str(source_name)))
    return fingerprint, (source_id, run_id, location, reason, raw_text, raw_document, fingerprint), reason


def _write_quarantine(
    conn: Connection,
    source_id: int,
    run_id: int,
    refusals: list[Refusal],
    counts: _BatchCounts,
    source_name: str,
) -> None:
    if not refusals:
        return
    rows = {}
    for refusal in refusals:
        fingerprint, row, reason = _quarantine_row(refusal, source_id, run_id, source_name)
        rows[fingerprint] = row
        counts.reasons[reason] = counts.reasons.get(reason, 0) + 1
    columns = ["source_id", "ingest_run_id", "location", "reason", "raw_text", "raw_document", "fingerprint"]
    copy_insert(conn, "quarantine", [rows[k] for k in sorted(rows)], columns, conflict_columns=["fingerprint"])
    counts.quarantined += len(refusals)


# --------------------------------------------------------------------------- run bookkeeping


def _ensure_source(engine: Engine, name: str, kind: str, description: str | None) -> int:
    name, kind = escape_text(name), escape_text(kind)
    description = None if description is None else escape_text(description)

    def work(conn: Connection) -> int:
        conn.execute(
            pg_insert(Source)
            .values(name=name, kind=kind, description=description)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return conn.execute(select(Source.id).where(Source.name == name)).scalar_one()

    return _in_transaction(engine, work, "registering the source")


def _start_run(engine: Engine, source_id: int, arguments: Mapping[str, Any]) -> int:
    def work(conn: Connection) -> int:
        return conn.execute(
            insert(IngestRun)
            .values(
                source_id=source_id,
                arguments=_safe_json(dict(arguments)),
                crossfid_version=crossfid.__version__,
                hostname=socket.gethostname(),
            )
            .returning(IngestRun.id)
        ).scalar_one()

    return _in_transaction(engine, work, "starting the ingest run")


def _finish_run(engine: Engine, run_id: int, status: str, error: str | None) -> None:
    error = None if error is None else escape_text(error)

    def work(conn: Connection) -> None:
        conn.execute(
            update(IngestRun).where(IngestRun.id == run_id).values(status=status, error=error, finished_at=func.now())
        )

    try:
        _in_transaction(engine, work, "finishing the ingest run")
    except Exception:
        if status == "completed":
            raise
        log.exception("could not mark ingest run %d as %s", run_id, status)  # keep the original error
