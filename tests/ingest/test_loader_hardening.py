"""The loader under hostile input and a flaky database: one bad record never costs a good one.

* text PostgreSQL cannot store (NUL, lone surrogates) in any stored string: that record alone is
  quarantined, escaped; good records before and after it in the same batch are stored;
* the same task id twice with different content (in one batch, in one bundle, across batches,
  across runs): the stored task, its frames and its raw document come from one record, the other is
  quarantined as a conflict naming the stored task; identical repeats are "already present";
* transient errors (lock timeout, a killed connection) while a failed batch is retried record by
  record are retried on a fresh connection and never quarantine the record.

All against the real database fixtures of conftest.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import psycopg
import pytest
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from support import synthetic

import crossfid.ingest.loader as loader
from crossfid.ingest.loader import IngestSummary, escape_text, ingest, transient_kind
from crossfid.ingest.records import Bundle, RawDocument, Refusal
from crossfid.ingest.runner import print_summary

NUL, SURROGATE = "\x00", "\ud800"
BAD = {"nul": NUL, "surrogate": SURROGATE}


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(loader, "RETRY_DELAYS", (0.01, 0.02, 0.05, 0.1))


@pytest.fixture(params=["validated", "unvalidated"])
def validation(request, monkeypatch) -> str:
    """Run a test with the real validation, and again with a validation that lets everything through.

    The loader must be safe regardless of what reaches it (records.validate_bundle refuses bad text
    early; with it bypassed, the loader's own checks are what keeps the run alive).
    """
    if request.param == "unvalidated":
        monkeypatch.setattr(loader, "validate_bundle", lambda bundle, checked_frames=frozenset(): (bundle, []))
    return request.param


# --------------------------------------------------------------------------- helpers


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def stored_task(engine, external_id: str) -> dict:
    """The stored task's id, material, raw document sha256 and frame content hashes (by ionic step)."""
    (task_id, material, sha), *more = rows(
        engine,
        "SELECT t.id, m.external_id, r.sha256 FROM tasks t JOIN materials m ON m.id = t.material_id "
        "LEFT JOIN raw_documents r ON r.id = t.raw_document_id WHERE t.external_id = :task",
        task=external_id,
    )
    assert not more
    hashes = rows(engine, "SELECT content_hash FROM frames WHERE task_id = :id ORDER BY ionic_step", id=task_id)
    energies = rows(engine, "SELECT energy FROM frames WHERE task_id = :id ORDER BY ionic_step", id=task_id)
    return {
        "id": task_id,
        "material": material,
        "raw": sha,
        "hashes": [h for (h,) in hashes],
        "energies": [e for (e,) in energies],
    }


def content_of(bundle: Bundle, task_index: int = 0) -> dict:
    task = bundle.tasks[task_index]
    return {
        "material": bundle.material.external_id,
        "raw": bundle.raw.sha256,
        "hashes": [f.content_hash() for f in task.frames],
        "energies": [f.energy for f in task.frames],
    }


def assert_from(engine, external_id: str, bundle: Bundle, task_index: int = 0) -> dict:
    """The stored task, its frames and its raw document all come from ``bundle``."""
    stored = stored_task(engine, external_id)
    expected = content_of(bundle, task_index)
    assert {k: stored[k] for k in expected} == expected
    return stored


def other_content(i: int) -> Bundle:
    """Task ``task-{i}`` of material ``mp-{1000+i}`` again, with other frames and another raw document."""
    return synthetic.bundle(i, seed=7)


def conflicts(engine) -> list[tuple[str, str, dict]]:
    return rows(engine, "SELECT location, reason, raw_document FROM quarantine WHERE reason LIKE 'conflicts with %'")


# --------------------------------------------------------------------------- item 6: text PostgreSQL cannot store


def hostile_bundles(char: str, start: int) -> dict[str, Bundle]:
    """One bundle per kind of stored string, each with ``char`` in that string (and valid otherwise)."""

    def bundle(k: int) -> Bundle:
        b = synthetic.bundle(start + k)
        b.location = f"hostile#{start + k}"
        return b

    cases: dict[str, Bundle] = {}
    fields = [
        "task id",
        "material id",
        "formula",
        "element",
        "run type",
        "source run type",
        "code",
        "code version",
        "input parameter value",
        "input parameter key",
        "nested input parameter",
        "hubbards key",
        "reference entry id",
        "reference correction scheme",
        "reference structure",
    ]
    for k, name in enumerate(fields):
        b = bundle(k)
        task, ref = b.tasks[0], b.references[0]
        if name == "task id":
            b.tasks[0] = replace(task, external_id=f"task-{char}-{start + k}")
            b.references[0] = replace(ref, task_external_id=b.tasks[0].external_id)
        elif name == "material id":
            b.material = replace(b.material, external_id=f"mp-{char}{start + k}")
        elif name == "formula":
            b.material = replace(b.material, formula=f"Fe{char}O")
        elif name == "element":
            b.material = replace(b.material, elements=("Fe", f"O{char}"))
        elif name == "run type":
            b.tasks[0] = replace(task, run_type=f"PBE{char}+U")
        elif name == "source run type":
            b.tasks[0] = replace(task, source_run_type=f"GGA{char}")
        elif name == "code":
            b.tasks[0] = replace(task, code=f"VASP{char}")
        elif name == "code version":
            b.tasks[0] = replace(task, code_version=f"6.4{char}")
        elif name == "input parameter value":
            b.tasks[0] = replace(task, input_parameters={**task.input_parameters, "SYSTEM": f"Fe{char}O"})
        elif name == "input parameter key":
            b.tasks[0] = replace(task, input_parameters={**task.input_parameters, f"NELM{char}": 60})
        elif name == "nested input parameter":
            b.tasks[0] = replace(task, input_parameters={**task.input_parameters, "POTCAR": [{"symbol": f"Fe{char}"}]})
        elif name == "hubbards key":
            b.tasks[0] = replace(task, hubbards={f"Fe{char}": 5.3})
        elif name == "reference entry id":
            b.references[0] = replace(ref, entry_id=f"mp-1-{char}")
        elif name == "reference correction scheme":
            b.references[0] = replace(ref, correction_scheme=f"MP2020{char}")
        elif name == "reference structure":
            b.references[0] = replace(ref, structure={"@class": f"Structure{char}", f"k{char}": [1, 2]})
        cases[name] = b
    return cases


def storable_oddities(char: str, start: int) -> list[Bundle]:
    """Bundles with ``char`` only where it can be kept: raw document bytes and JSON, locations (escaped)."""
    raw_bytes = synthetic.bundle(start)
    raw_bytes.raw = RawDocument(
        content=b"header\x00\xff\xfe binary " + char.encode("utf-8", "surrogatepass"),
        format="bin",
        location=f"odd#{start}",
    )
    raw_json = synthetic.bundle(start + 1)
    raw_json.raw = RawDocument.from_json({f"key{char}": f"value{char}", "frames": [1.0]}, f"odd#{start + 1}")
    raw_location = synthetic.bundle(start + 2)
    raw_location.raw = replace(raw_location.raw, location=f"calcs/{char}/vasprun.xml")
    return [raw_bytes, raw_json, raw_location]


#: hostile cases where records.validate_bundle refuses only the reference entry (its task is kept)
REFERENCE_FIELDS = ("reference entry id", "reference correction scheme", "reference structure")


@pytest.mark.parametrize("char", list(BAD), ids=list(BAD))
def test_unstorable_text_quarantines_only_that_record(engine, validation, char):
    bad = BAD[char]
    hostile = hostile_bundles(bad, start=100)
    odd = storable_oddities(bad, start=300)
    good = [synthetic.bundle(i) for i in range(6)]
    cases = list(hostile.values())
    records = [good[0], good[1], *cases[:7], good[2], good[3], *cases[7:], *odd, good[4], good[5]]

    summary = ingest(engine, "hostile", "test", records, batch_records=10_000)  # everything in one batch

    # every good record (and the storable oddities) is stored whole, with its own frames and raw document
    for b in [*good, *odd]:
        assert_from(engine, b.tasks[0].external_id, b)
    stored_location = scalar(engine, "SELECT location FROM raw_documents WHERE sha256 = :s", s=odd[2].raw.sha256)
    assert stored_location == f"calcs/\\u{ord(bad):04x}/vasprun.xml"
    # nothing else, except (with the real validation) the tasks of records that lost only a reference entry
    kept = {hostile[name].tasks[0].external_id for name in REFERENCE_FIELDS} if validation == "validated" else set()
    stored_ids = {i for (i,) in rows(engine, "SELECT external_id FROM tasks")}
    assert stored_ids == {b.tasks[0].external_id for b in [*good, *odd]} | kept
    assert summary.tasks_added == len(stored_ids) and summary.frames_added == 3 * len(stored_ids)

    # each hostile record is quarantined, with the bad text escaped; nothing else is
    quarantine = rows(engine, "SELECT location, reason, raw_text, raw_document::text FROM quarantine")
    code = f"\\u{ord(bad):04x}"
    for name, b in hostile.items():
        mine = [q for q in quarantine if q[0].startswith(b.location + " ") or q[0] == b.location]
        assert mine, name
        for _, reason, _, _ in mine:
            assert ("NUL character" if char == "nul" else "lone surrogate") in reason, (name, reason)
            assert code in reason, (name, reason)
    assert summary.quarantined == len(quarantine)
    assert all(q[0].startswith("hostile#") for q in quarantine)
    for location, reason, raw_text, raw_document in quarantine:
        for value in (location, reason, raw_text or "", raw_document or ""):
            assert NUL not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    assert scalar(engine, "SELECT status FROM ingest_runs WHERE id = :id", id=summary.ingest_run_id) == "completed"

    again = ingest(engine, "hostile", "test", records)  # idempotent, quarantine included
    assert (again.tasks_added, again.frames_added) == (0, 0)
    assert scalar(engine, "SELECT count(*) FROM quarantine") == len(quarantine)


@pytest.mark.parametrize("char", list(BAD), ids=list(BAD))
def test_unstorable_refusals_are_escaped_by_the_loader(engine, char):
    """Refusals reach the loader with bad text in every field (set after construction): still quarantined."""
    bad = BAD[char]
    refusal = Refusal("placeholder", "placeholder")
    refusal.location = f"file{bad}.json#3"
    refusal.reason = f"unknown element {bad!s}"
    refusal.raw_text = f"{{'x': '{bad}'}}"
    refusal.raw_document = {f"key{bad}": [f"value{bad}", {"inner": bad}], "number": float("nan")}
    empty = Refusal("placeholder", "placeholder")
    empty.location, empty.reason = "empty.json", ""  # would break the reason_not_empty CHECK
    good = synthetic.corpus(2)
    summary = ingest(engine, "hostile", "test", [good[0], refusal, empty, good[1]])
    assert (summary.tasks_added, summary.quarantined) == (2, 2)
    code = f"\\u{ord(bad):04x}"
    location, reason, raw_text, raw_document = rows(
        engine, "SELECT location, reason, raw_text, raw_document FROM quarantine WHERE location LIKE 'file%'"
    )[0]
    assert (location, reason, raw_text) == (f"file{code}.json#3", f"unknown element {code}", f"{{'x': '{code}'}}")
    assert raw_document == {f"key{code}": [f"value{code}", {"inner": code}], "number": "nan"}
    assert rows(engine, "SELECT reason FROM quarantine WHERE location = 'empty.json'") == [("(no reason given)",)]


def test_unstorable_run_provenance_is_escaped(engine):
    """Source name, description, arguments and the error of a failed run are stored escaped."""
    arguments = {"file": f"calcs/{NUL}/x.json", f"key{SURROGATE}": [SURROGATE]}
    summary = ingest(engine, f"src{NUL}", "test", synthetic.corpus(1), arguments=arguments, description=SURROGATE)
    assert summary.tasks_added == 1
    assert rows(engine, "SELECT name, description FROM sources") == [("src\\u0000", "\\ud800")]
    assert rows(engine, "SELECT arguments FROM ingest_runs") == [
        ({"file": "calcs/\\u0000/x.json", "key\\ud800": ["\\ud800"]},)
    ]

    def broken():
        yield synthetic.bundle(1)
        raise ValueError(f"cannot read {NUL}{SURROGATE}")

    with pytest.raises(ValueError, match="cannot read"):  # the source's own error, not a database error
        ingest(engine, f"src{NUL}", "test", broken())
    [(status, error)] = rows(engine, "SELECT status, error FROM ingest_runs WHERE status <> 'completed'")
    assert status == "failed" and error == "ValueError: cannot read \\u0000\\ud800"


def test_escape_text():
    assert escape_text("plain é") == "plain é"
    assert escape_text("a\x00b\ud800c") == "a\\u0000b\\ud800c"
    assert escape_text("\udfff") == "\\udfff"


# --------------------------------------------------------------------------- item 8: one identity, one record


def test_duplicate_task_with_other_content_in_one_batch(engine):
    first, second = synthetic.bundle(1), other_content(1)
    assert content_of(first) != content_of(second)
    before, after = synthetic.bundle(0), synthetic.bundle(2)
    summary = ingest(engine, "dup", "test", [before, first, after, second], batch_records=100)

    stored = assert_from(engine, "task-1", first)  # task, frames and raw document of the FIRST record
    assert_from(engine, "task-0", before) and assert_from(engine, "task-2", after)
    assert (summary.tasks_added, summary.tasks_already_present, summary.conflicts, summary.quarantined) == (3, 0, 1, 1)
    [(location, reason, described)] = conflicts(engine)
    assert location == "synthetic#1 task task-1"
    assert "'task-1'" in reason and f"tasks.id {stored['id']}" in reason
    assert "raw document" in reason and "frames (3 stored, 3 here, 3 differ)" in reason
    assert described["conflict"]["stored_task_id"] == stored["id"]
    assert described["raw_document_sha256"] == second.raw.sha256
    # the conflicting record's raw document is kept (content-addressed), linked from no task
    assert scalar(engine, "SELECT count(*) FROM raw_documents WHERE sha256 = :s", s=second.raw.sha256) == 1
    # its reference entry (made from the conflicting task) was not stored against the stored task
    refs = rows(engine, "SELECT energy_per_atom, task_id FROM reference_entries WHERE task_id = :id", id=stored["id"])
    assert refs == [(first.references[0].energy_per_atom, stored["id"])]


def test_duplicate_task_with_other_content_in_one_bundle(engine):
    """Two tasks of one id in one bundle: the old loader linked the first, COPYed the frames of the last."""
    b = synthetic.bundle(1)
    other = other_content(1).tasks[0]
    b.tasks.append(other)
    summary = ingest(engine, "dup", "test", [synthetic.bundle(0), b, synthetic.bundle(2)])
    stored = assert_from(engine, "task-1", b, task_index=0)
    assert summary.tasks_added == 3 and summary.conflicts == 1
    [(_, reason, _)] = conflicts(engine)
    assert f"tasks.id {stored['id']}" in reason and "frames" in reason and "raw document" not in reason


def test_duplicate_task_with_other_content_across_runs(engine):
    first, second = synthetic.bundle(1), other_content(1)
    first.references = []  # the second record brings a reference entry made from its (conflicting) task
    one = ingest(engine, "dup", "test", [synthetic.bundle(0), first])
    assert one.tasks_added == 2
    stored = assert_from(engine, "task-1", first)

    two = ingest(engine, "dup", "test", [synthetic.bundle(2), second, synthetic.bundle(3)])
    assert (two.tasks_added, two.tasks_already_present, two.conflicts, two.quarantined) == (2, 0, 1, 1)
    assert assert_from(engine, "task-1", first) == stored  # unchanged: nothing merged
    [(_, reason, described)] = conflicts(engine)
    assert f"conflicts with stored task 'task-1' (tasks.id {stored['id']})" in reason
    assert described["conflict"]["stored_raw_document_sha256"] == first.raw.sha256
    assert described["reference_entries"] == ["GGA+U"]
    assert rows(
        engine,
        "SELECT count(*) FROM reference_entries r JOIN materials m ON m.id = r.material_id "
        "WHERE m.external_id = 'mp-1001'",
    ) == [(0,)]

    three = ingest(engine, "dup", "test", [second])  # the same conflict again: reported, not duplicated
    assert (three.conflicts, three.tasks_added) == (1, 0)
    assert len(conflicts(engine)) == 1
    four = ingest(engine, "dup", "test", [first])  # the stored record itself: already present
    assert (four.tasks_already_present, four.quarantined) == (1, 0)


@pytest.mark.parametrize("what", ["frames", "raw document", "material"])
def test_one_difference_is_enough_for_a_conflict(engine, what):
    first = synthetic.bundle(1)
    second = synthetic.bundle(1)
    if what == "frames":  # same raw document (e.g. converted again by fixed code), other frames
        second.tasks[0].frames[2] = replace(second.tasks[0].frames[2], energy=second.tasks[0].frames[2].energy + 1)
    elif what == "raw document":
        second.raw = RawDocument.from_json({"id": 1, "note": "re-downloaded"}, "synthetic#1")
    else:
        second.material = replace(second.material, external_id="mp-other")
    ingest(engine, "dup", "test", [first])
    summary = ingest(engine, "dup", "test", [second])
    assert (summary.conflicts, summary.tasks_already_present) == (1, 0)
    assert_from(engine, "task-1", first)
    [(_, reason, _)] = conflicts(engine)
    assert f"different {what}" in reason


def test_duplicates_in_concurrent_batches(engine):
    """Batches written in parallel: whichever record is stored, the task is whole and one is a conflict."""
    firsts = [synthetic.bundle(i) for i in range(8)]
    seconds = [other_content(i) for i in range(8)]
    records = [r for pair in zip(firsts, seconds, strict=True) for r in pair]
    summary = ingest(engine, "dup", "test", records, batch_records=1, writers=2)
    assert (summary.tasks_added, summary.conflicts, summary.quarantined) == (8, 8, 8)
    for i in range(8):
        stored = stored_task(engine, f"task-{i}")
        winner = next(b for b in (firsts[i], seconds[i]) if b.raw.sha256 == stored["raw"])
        assert_from(engine, f"task-{i}", winner)
    assert len(conflicts(engine)) == 8


def test_identical_duplicates_are_already_present(engine):
    a, a_again, a_in_bundle = synthetic.bundle(1), synthetic.bundle(1), synthetic.bundle(1)
    a_in_bundle.tasks.append(synthetic.bundle(1).tasks[0])
    summary = ingest(engine, "dup", "test", [a, synthetic.bundle(2), a_again, a_in_bundle])
    assert (summary.tasks_added, summary.tasks_already_present, summary.quarantined) == (2, 3, 0)
    assert_from(engine, "task-1", a)
    again = ingest(engine, "dup", "test", [a, synthetic.bundle(2), a_again])
    assert (again.tasks_added, again.tasks_already_present, again.quarantined, again.frames_added) == (0, 3, 0, 0)
    assert scalar(engine, "SELECT count(*) FROM frames") == 6


# --------------------------------------------------------------------------- item 10f: transient errors


def test_transient_kind():
    errors = psycopg.errors
    assert transient_kind(errors.DeadlockDetected("x")) == "lock"
    assert transient_kind(errors.SerializationFailure("x")) == "lock"
    assert transient_kind(errors.LockNotAvailable("x")) == "lock"
    assert transient_kind(errors.QueryCanceled("x")) == "lock"
    assert transient_kind(errors.AdminShutdown("x")) == "connection"
    assert transient_kind(errors.TooManyConnections("x")) == "connection"
    assert transient_kind(psycopg.OperationalError("server closed the connection unexpectedly")) == "connection"
    for data_error in (
        errors.CheckViolation("x"),
        errors.UniqueViolation("x"),
        errors.ProgramLimitExceeded("index row size exceeds maximum"),  # an OperationalError, but about the data
        errors.CharacterNotInRepertoire("x"),
        psycopg.DataError("x"),
        ValueError("x"),
    ):
        assert transient_kind(data_error) is None, data_error
    wrapped = DBAPIError.instance("COPY", None, errors.DeadlockDetected("x"), psycopg.Error)
    assert transient_kind(wrapped) == "lock"
    lost = DBAPIError.instance("COPY", None, psycopg.DataError("x"), psycopg.Error, connection_invalidated=True)
    assert transient_kind(lost) == "connection"


@pytest.fixture
def one_by_one(engine):
    """Records [task-0, clash, task-2, task-3] whose batch fails on a rule only the database knows."""
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE tasks ADD CONSTRAINT ck_test_clash CHECK (external_id <> 'task-20')"))
    return [synthetic.bundle(0), synthetic.bundle(20), synthetic.bundle(2), synthetic.bundle(3)]


def flaky_write(monkeypatch, target: str, before_attempt):
    """Patch the loader's one-transaction write: before each write of the single record ``target``,
    call ``before_attempt(conn, attempt)`` (attempt 1, 2, ...). Returns the list of attempts seen."""
    real = loader._write_batch
    attempts: list[int] = []

    def write(conn, source_id, run_id, prepared, source_name):
        ids = [t.external_id for b in prepared.bundles for t in b.tasks]
        if ids == [target]:
            attempts.append(len(attempts) + 1)
            before_attempt(conn, attempts[-1])
        return real(conn, source_id, run_id, prepared, source_name)

    monkeypatch.setattr(loader, "_write_batch", write)
    return attempts


def assert_clash_only_quarantined(engine, summary: IngestSummary, records: list[Bundle]):
    assert (summary.tasks_added, summary.quarantined) == (3, 1)
    [reason] = summary.quarantine_reasons
    assert reason.startswith("database refused the record") and "ck_test_clash" in reason
    for b in records:
        if b.tasks[0].external_id != "task-20":
            assert_from(engine, b.tasks[0].external_id, b)
    assert scalar(engine, "SELECT count(*) FROM quarantine") == 1


def test_lock_timeout_during_the_one_by_one_retry_is_retried(engine, database_url, one_by_one, monkeypatch):
    blocker = psycopg.connect(database_url)

    def before(conn, attempt):
        if attempt == 1:  # another session holds a lock that blocks inserting tasks; we do not wait for it
            blocker.execute("LOCK TABLE tasks IN SHARE MODE")
            conn.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")
        else:
            blocker.rollback()

    attempts = flaky_write(monkeypatch, "task-2", before)
    try:
        summary = ingest(engine, "flaky", "test", one_by_one, batch_records=100)
    finally:
        blocker.close()
    assert attempts == [1, 2]  # failed once on the lock, then written
    assert_clash_only_quarantined(engine, summary, one_by_one)


def test_killed_connection_during_the_one_by_one_retry_reconnects(engine, database_url, one_by_one, monkeypatch):
    pids: list[int] = []

    def before(conn, attempt):
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        pids.append(pid)
        if attempt == 1:
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])

    attempts = flaky_write(monkeypatch, "task-2", before)
    summary = ingest(engine, "flaky", "test", one_by_one, batch_records=100)
    assert attempts == [1, 2] and pids[0] != pids[1]  # the retry ran on a new connection
    assert_clash_only_quarantined(engine, summary, one_by_one)


def test_killed_connection_during_a_batch_is_retried_not_split(engine, database_url, monkeypatch):
    real = loader._write_batch
    calls: list[int] = []

    def write(conn, source_id, run_id, prepared, source_name):
        calls.append(len(prepared.bundles))
        if len(calls) == 1:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        return real(conn, source_id, run_id, prepared, source_name)

    monkeypatch.setattr(loader, "_write_batch", write)
    bundles = synthetic.corpus(5)
    summary = ingest(engine, "flaky", "test", bundles, batch_records=100)
    assert calls == [5, 5]  # the whole batch again, not record by record
    assert (summary.tasks_added, summary.quarantined) == (5, 0)


def test_persistent_lock_fails_the_run_without_quarantining(engine, database_url, one_by_one, monkeypatch):
    blocker = psycopg.connect(database_url)
    blocker.execute("SELECT 1")  # opens the transaction the lock is taken in

    def before(conn, attempt):
        if attempt == 1:
            blocker.execute("LOCK TABLE tasks IN SHARE MODE")
        conn.exec_driver_sql("SET LOCAL lock_timeout = '20ms'")

    attempts = flaky_write(monkeypatch, "task-2", before)
    try:
        with pytest.raises(DBAPIError) as caught:
            ingest(engine, "flaky", "test", one_by_one, batch_records=100)
    finally:
        blocker.close()
    assert isinstance(caught.value.orig, psycopg.errors.LockNotAvailable)
    assert len(attempts) == len(loader.RETRY_DELAYS) + 1  # bounded
    run = rows(engine, "SELECT status, error FROM ingest_runs")
    assert run[0][0] == "failed" and "LockNotAvailable" in run[0][1]
    reasons = [r for (r,) in rows(engine, "SELECT reason FROM quarantine")]
    assert all("ck_test_clash" in r for r in reasons)  # task-2 was not blamed
    assert scalar(engine, "SELECT count(*) FROM tasks WHERE external_id = 'task-0'") == 1  # kept


def test_a_record_that_cannot_be_prepared_is_quarantined_alone(engine, monkeypatch):
    real = loader.frame_block

    def fragile(frames):
        if any(f.energy is not None and f.energy > 0 for f in frames):
            raise RuntimeError("unexpected input")
        return real(frames)

    monkeypatch.setattr(loader, "frame_block", fragile)
    odd = synthetic.bundle(5)
    odd.tasks[0].frames[0] = replace(odd.tasks[0].frames[0], energy=1.0)
    summary = ingest(engine, "fragile", "test", [synthetic.bundle(0), odd, synthetic.bundle(1)])
    assert (summary.tasks_added, summary.quarantined) == (2, 1)
    [reason] = summary.quarantine_reasons
    assert reason == "could not be stored: RuntimeError: unexpected input"


def test_summary_shows_reasons_as_plain_text():
    summary = IngestSummary(1, "src [bold]", quarantined=2, conflicts=1)
    summary.quarantine_reasons = {"unknown fidelity '[/x]' \x1b[31m": 1, "conflicts with stored task": 1}
    console = Console(record=True, width=200)
    print_summary(summary, console)  # rich markup in a reason used to raise MarkupError
    output = console.export_text()
    assert "unknown fidelity '[/x]'" in output and "\x1b" not in output
    assert "of which conflicting duplicates" in output


def test_frames_stay_with_their_task_when_a_duplicate_has_another_atom_count(engine):
    """The per-frame path (no columnar block) keeps the right record's frames too."""
    first = synthetic.bundle(1)
    second = synthetic.bundle(1, n_atoms=6)
    second.tasks[0].frames[1] = replace(
        second.tasks[0].frames[1],
        atomic_numbers=np.array([26, 8, 26, 8, 26], dtype=np.int16),
        frac_coords=np.zeros((5, 3)) + 0.1,
        forces=np.zeros((5, 3)),
        magmoms=np.zeros(5),
    )  # mixed atom counts: no columnar block for this task
    ingest(engine, "dup", "test", [second, first])
    stored = assert_from(engine, "task-1", second)
    assert len(stored["hashes"]) == 3
    [(_, reason, _)] = conflicts(engine)
    assert f"tasks.id {stored['id']}" in reason
