"""The one loader every source feeds: canonical records → database, in batches.

For each batch of records, in ONE transaction:

1. raw documents (content-addressed; ``ON CONFLICT (sha256) DO NOTHING``),
2. materials (``ON CONFLICT (external_id) DO NOTHING``),
3. tasks (``ON CONFLICT (source_id, external_id) DO NOTHING RETURNING id``): a task
   that already exists was written whole, with its frames, by an earlier
   transaction, so it and its frames are skipped and counted as already present,
4. frames of the tasks created in step 3, COPYed straight into ``frames`` (they
   cannot conflict: their tasks are new),
5. reference entries (``ON CONFLICT (material_id, fidelity) DO NOTHING``),
6. quarantine rows (``ON CONFLICT (fingerprint) DO NOTHING``),
7. the ingest run's counters.

A task and all its frames are therefore committed together or not at all: an
ingest killed part-way (even ``kill -9``) leaves no partial task, and running it
again adds exactly what is missing. If a batch fails in the database (a record
that passed validation but breaks a constraint), it is retried record by record
and the offending record is quarantined with the database's message; the run goes on.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

import crossfid
from crossfid.db import pgbinary
from crossfid.db.bulk import copy_encoded, copy_insert
from crossfid.db.models import Frame as FrameRow
from crossfid.db.models import IngestRun, Source
from crossfid.ingest.columnar import FrameBlock, encode_block, frame_block
from crossfid.ingest.records import Bundle, RawDocument, Record, Refusal, jsonable, validate_bundle

log = logging.getLogger(__name__)

#: a batch is written when it holds this many frames (or BATCH_RECORDS records)
BATCH_FRAMES = 5_000
BATCH_RECORDS = 1_000

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
    """What one ingest run did (counts of database rows)."""

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
    error) if the records iterator itself raises.
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


#: errors after which the same batch is simply tried again
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def _write_batch_safely(
    engine: Engine,
    source_id: int,
    run_id: int,
    source_name: str,
    batch: list[Record],
    prepared: _Prepared | Future[_Prepared],
) -> _BatchCounts:
    """Write a batch in one transaction; on a database error, retry record by record."""
    if isinstance(prepared, Future):
        prepared = prepared.result()
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                return _write_batch(conn, source_id, run_id, prepared, source_name)
        except DBAPIError as exc:
            if isinstance(exc.orig, _TRANSIENT) and attempt < 2:
                log.info("retrying a batch after %s", type(exc.orig).__name__)
                continue
            error = exc
            break
    if len(batch) == 1:
        record = batch[0]
        reason = f"database refused the record: {_db_message(error)}"
        log.warning("quarantining %s: %s", record.location, reason)
        refusal = Refusal(record.location, reason, raw_document=_describe(record))
        with engine.begin() as conn:
            return _write_batch(conn, source_id, run_id, _prepare([refusal]), source_name)
    total = _BatchCounts()
    for record in batch:
        total += _write_batch_safely(engine, source_id, run_id, source_name, [record], _prepare([record]))
    return total


def _db_message(exc: DBAPIError) -> str:
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    constraint = getattr(diag, "constraint_name", None)
    message = primary or str(exc.orig).splitlines()[0]
    return f"{message} ({constraint})" if constraint else message


def _describe(record: Record) -> Any:
    if isinstance(record, Refusal):
        return record.raw_document
    return {"material": record.material.external_id, "tasks": [t.external_id for t in record.tasks]}


# --------------------------------------------------------------------------- one batch


@dataclass
class _Prepared:
    """A batch after the CPU work: valid bundles, refusals, columnar frames, compressed raw documents."""

    bundles: list[Bundle]
    refusals: list[Refusal]
    blocks: dict[tuple[str, str], FrameBlock]  # (material, task) → columnar frames
    raw: dict[str, tuple[RawDocument, bytes]]  # sha256 → (document, gzip bytes)


def _prepare(batch: list[Record]) -> _Prepared:
    """Validate, stack, hash and compress a batch (pure; runs in the prefetch thread)."""
    prepared = _Prepared(bundles=[], refusals=[], blocks={}, raw={})
    for record in batch:
        if isinstance(record, Refusal):
            prepared.refusals.append(record)
            continue
        checked = set()
        for task in record.tasks:
            block = frame_block(task.frames)
            if block is not None:
                prepared.blocks[record.material.external_id, task.external_id] = block
                checked.add(task.external_id)
        cleaned, refused = validate_bundle(record, checked_frames=frozenset(checked))
        prepared.refusals.extend(refused)
        if cleaned is not None:
            prepared.bundles.append(cleaned)
            if cleaned.raw is not None and cleaned.raw.sha256 not in prepared.raw:
                prepared.raw[cleaned.raw.sha256] = (cleaned.raw, cleaned.raw.compressed())
    return prepared


def _write_batch(conn: Connection, source_id: int, run_id: int, prepared: _Prepared, source_name: str) -> _BatchCounts:
    counts = _BatchCounts()
    bundles, refusals, blocks = prepared.bundles, prepared.refusals, prepared.blocks
    raw_ids = _write_raw_documents(conn, source_id, run_id, prepared.raw, counts)
    material_ids = _write_materials(conn, bundles)
    new_tasks = _write_tasks(conn, source_id, run_id, bundles, raw_ids, material_ids, counts)
    _write_frames(conn, new_tasks, blocks, counts)
    _write_references(conn, source_id, run_id, bundles, material_ids, counts)
    _write_quarantine(conn, source_id, run_id, refusals, counts, source_name)
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


def _write_tasks(
    conn: Connection,
    source_id: int,
    run_id: int,
    bundles: list[Bundle],
    raw_ids: dict[str, int],
    material_ids: dict[str, int],
    counts: _BatchCounts,
) -> list[tuple[int, str, Any]]:
    """Insert tasks; return (task id, material external id, Task record) for the ones that are new."""
    first: dict[str, tuple[Bundle, Any]] = {}
    for bundle in bundles:
        for task in bundle.tasks:
            if task.external_id in first:
                counts.tasks_already_present += 1  # the same task twice in one input
                continue
            first[task.external_id] = (bundle, task)
    if not first:
        return []
    rows = []
    for external_id, (bundle, task) in sorted(first.items()):
        rows.append(
            (
                material_ids[bundle.material.external_id],
                source_id,
                external_id,
                run_id,
                raw_ids.get(bundle.raw.sha256) if bundle.raw is not None else None,
                task.fidelity,
                task.run_type,
                task.source_run_type,
                task.task_type,
                jsonable(task.input_parameters or {}),
                task.hubbards or None,
                bool(task.hubbards),
                task.code,
                task.code_version,
                task.completed_at,
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
    ]
    result = copy_insert(
        conn, "tasks", rows, columns, conflict_columns=["source_id", "external_id"], returning=["id", "external_id"]
    )
    counts.tasks_added += result.n_inserted
    counts.tasks_already_present += result.n_already_present
    return [
        (task_id, first[external_id][0].material.external_id, first[external_id][1])
        for task_id, external_id in result.returned_rows
    ]


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
    new_tasks: list[tuple[int, str, Any]],
    blocks: dict[tuple[str, str], FrameBlock],
    counts: _BatchCounts,
) -> None:
    """COPY the frames of new tasks: columnar blocks where possible, frame by frame otherwise."""

    def chunks() -> Iterator[bytes]:
        for task_id, material, task in new_tasks:
            block = blocks.get((material, task.external_id))
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
    counts: _BatchCounts,
) -> None:
    entries = {}
    for bundle in bundles:
        for entry in bundle.references:
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
            jsonable(entry.structure) if entry.structure is not None else None,
            entry.correction_scheme,
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
    ]
    result = copy_insert(conn, "reference_entries", rows, columns, conflict_columns=["material_id", "fidelity"])
    counts.references_added += result.n_inserted
    counts.references_already_present += result.n_already_present


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
        fingerprint = refusal.fingerprint(source_name)
        raw_text = refusal.raw_text.replace("\x00", "") if refusal.raw_text else refusal.raw_text
        raw_document = jsonable(refusal.raw_document) if refusal.raw_document is not None else None
        rows[fingerprint] = (source_id, run_id, refusal.location, refusal.reason, raw_text, raw_document, fingerprint)
        counts.reasons[refusal.reason] = counts.reasons.get(refusal.reason, 0) + 1
    columns = ["source_id", "ingest_run_id", "location", "reason", "raw_text", "raw_document", "fingerprint"]
    copy_insert(conn, "quarantine", [rows[k] for k in sorted(rows)], columns, conflict_columns=["fingerprint"])
    counts.quarantined += len(refusals)


# --------------------------------------------------------------------------- run bookkeeping


def _ensure_source(engine: Engine, name: str, kind: str, description: str | None) -> int:
    with engine.begin() as conn:
        conn.execute(
            pg_insert(Source)
            .values(name=name, kind=kind, description=description)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return conn.execute(select(Source.id).where(Source.name == name)).scalar_one()


def _start_run(engine: Engine, source_id: int, arguments: dict[str, Any]) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(IngestRun)
            .values(
                source_id=source_id,
                arguments=jsonable(arguments),
                crossfid_version=crossfid.__version__,
                hostname=socket.gethostname(),
            )
            .returning(IngestRun.id)
        ).scalar_one()


def _finish_run(engine: Engine, run_id: int, status: str, error: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(IngestRun).where(IngestRun.id == run_id).values(status=status, error=error, finished_at=func.now())
        )
