"""The loader: exact round trip, idempotence, quarantine, and crash safety."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from support import synthetic

from crossfid.db.models import Frame as FrameRow
from crossfid.db.models import IngestRun, Quarantine, RawDocument, ReferenceEntry, Task
from crossfid.ingest.loader import ingest
from crossfid.ingest.records import Refusal, validate_frame


def test_round_trip_is_exact(engine):
    bundles = synthetic.corpus(3)
    summary = ingest(engine, "synthetic", "test", bundles, arguments={"what": "round trip"})
    assert (summary.tasks_added, summary.frames_added, summary.references_added) == (3, 9, 3)
    assert summary.quarantined == 0 and summary.raw_documents_added == 3
    with Session(engine) as session:
        for b in bundles:
            task = session.scalars(select(Task).where(Task.external_id == b.tasks[0].external_id)).one()
            assert task.fidelity == "GGA+U" and task.hubbards == {"Fe": 5.3} and task.is_hubbard
            assert task.material.external_id == b.material.external_id and task.material.chemsys == "Fe-O"
            rows = session.scalars(select(FrameRow).where(FrameRow.task_id == task.id).order_by(FrameRow.ionic_step))
            for row, f in zip(rows, b.tasks[0].frames, strict=True):
                assert row.energy == f.energy and row.corrected_energy == f.corrected_energy
                assert np.array_equal(np.reshape(row.lattice, (3, 3)), f.lattice)
                assert np.array_equal(np.reshape(row.frac_coords, (-1, 3)), f.frac_coords)
                assert np.array_equal(np.reshape(row.forces, (-1, 3)), f.forces)
                assert np.array_equal(np.reshape(row.stress, (3, 3)), f.stress)
                assert np.array_equal(row.magmoms, f.magmoms)
                assert row.atomic_numbers == f.atomic_numbers.tolist()
                assert row.content_hash == f.content_hash()
                assert row.max_force == pytest.approx(np.linalg.norm(f.forces, axis=1).max())
                assert row.energy_per_atom == pytest.approx(f.energy / f.n_atoms)
            ref = session.scalars(select(ReferenceEntry).where(ReferenceEntry.material_id == task.material_id)).one()
            assert ref.task_id == task.id and ref.energy_per_atom == b.references[0].energy_per_atom
            raw = session.get(RawDocument, task.raw_document_id)
            assert raw.sha256 == b.raw.sha256
        run = session.get(IngestRun, summary.ingest_run_id)
        assert run.status == "completed" and run.n_frames_added == 9 and run.arguments == {"what": "round trip"}


def test_reingest_adds_nothing(engine):
    ingest(engine, "synthetic", "test", synthetic.corpus(5))
    again = ingest(engine, "synthetic", "test", synthetic.corpus(5))
    assert (again.tasks_added, again.frames_added, again.references_added, again.raw_documents_added) == (0, 0, 0, 0)
    assert again.tasks_already_present == 5 and again.references_already_present == 5
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM frames")).scalar_one() == 15


def test_bad_records_are_quarantined_and_good_ones_kept(engine):
    good = synthetic.corpus(4)
    nan_frame = synthetic.bundle(10)
    nan_frame.tasks[0].frames[1] = replace(nan_frame.tasks[0].frames[1], energy=math.nan)
    wrong_forces = synthetic.bundle(11)
    wrong_forces.tasks[0].frames[0] = replace(wrong_forces.tasks[0].frames[0], forces=np.zeros((3, 3)))
    bad_fidelity = synthetic.bundle(12)
    bad_fidelity.tasks[0] = replace(bad_fidelity.tasks[0], fidelity="HFCus")
    records = [*good[:2], nan_frame, synthetic.refusal(1), wrong_forces, bad_fidelity, *good[2:]]
    summary = ingest(engine, "synthetic", "test", records)
    assert summary.quarantined == 4
    assert summary.tasks_added == 6  # 4 good + the two tasks that lost one frame each
    assert summary.frames_added == 4 * 3 + 2 + 2
    with Session(engine) as session:
        reasons = dict(session.execute(select(Quarantine.location, Quarantine.reason)).all())
    assert reasons == {
        "synthetic#10 task task-10 ionic step 1": "energy is not finite (nan)",
        "synthetic#bad-1": "malformed JSON",
        "synthetic#11 task task-11 ionic step 0": "forces has shape (3, 3), expected (4, 3)",
        "synthetic#12 task task-12": "unknown fidelity 'HFCus'",
    }
    again = ingest(engine, "synthetic", "test", records)  # quarantine rows are not duplicated either
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM quarantine")).scalar_one() == 4
    assert again.tasks_added == 0


def test_database_refusal_quarantines_only_that_record(engine):
    """A record that passes validation but breaks a database rule does not sink its batch."""
    with engine.begin() as conn:  # a rule only the database knows (validation rejects n_electronic_steps=-1 now)
        conn.execute(text("ALTER TABLE frames ADD CONSTRAINT ck_test_frames CHECK (n_electronic_steps <> 7)"))
    good = synthetic.corpus(3)
    clash = synthetic.bundle(20)
    clash.tasks[0].frames[2] = replace(clash.tasks[0].frames[2], n_electronic_steps=7)
    assert all(f.n_electronic_steps != 7 for b in good for f in b.tasks[0].frames)
    summary = ingest(engine, "synthetic", "test", [good[0], clash, good[1], good[2]])
    assert summary.tasks_added == 3 and summary.quarantined == 1
    reason = next(iter(summary.quarantine_reasons))
    assert reason.startswith("database refused the record") and "ck_test_frames" in reason


def test_refusals_only(engine):
    summary = ingest(engine, "synthetic", "test", [Refusal("f.json", "truncated gzip file", raw_text="\x00abc")])
    assert summary.quarantined == 1 and summary.tasks_added == 0


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from crossfid.db.engine import make_engine
    from crossfid.ingest.loader import ingest
    from support import synthetic

    def slow():
        for i in range({n}):
            if i >= {batch}:
                time.sleep(0.05)  # slow enough to be killed in the middle
            yield synthetic.bundle(i, n_frames=5)

    ingest(make_engine({url!r}), "synthetic", "test", slow(), batch_records={batch})
    """
)


def test_kill_9_mid_ingest_leaves_no_partial_task_and_rerun_completes(engine, database_url, tmp_path):
    n, batch = 60, 10
    script = tmp_path / "ingest.py"
    script.write_text(CRASH_SCRIPT.format(tests=str(Path(__file__).parents[1]), n=n, batch=batch, url=database_url))
    process = subprocess.Popen([sys.executable, str(script)], env={**os.environ})
    deadline = time.monotonic() + 120
    with psycopg.connect(database_url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM tasks").fetchone()[0] < batch:
            assert process.poll() is None, "ingest finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait()
        tasks, frames = conn.execute("SELECT count(*), (SELECT count(*) FROM frames) FROM tasks").fetchone()
        assert 0 < tasks < n
        partial = conn.execute(
            "SELECT count(*) FROM tasks t WHERE (SELECT count(*) FROM frames f WHERE f.task_id = t.id) <> 5"
        ).fetchone()[0]
        assert partial == 0 and frames == 5 * tasks

    summary = ingest(engine, "synthetic", "test", (synthetic.bundle(i, n_frames=5) for i in range(n)))
    assert summary.tasks_added == n - tasks and summary.tasks_already_present == tasks
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*), (SELECT count(*) FROM frames) FROM tasks").fetchone() == (n, 5 * n)
        statuses = dict(conn.execute("SELECT status, count(*) FROM ingest_runs GROUP BY 1").fetchall())
    assert statuses == {"running": 1, "completed": 1}  # the killed run says it never finished


def test_columnar_fast_path_stores_exactly_what_the_per_frame_path_stores(engine, monkeypatch):
    import crossfid.ingest.loader as loader
    from crossfid.ingest.columnar import frame_block

    def varied(i: int):
        b = synthetic.bundle(i, n_frames=6)
        frames = b.tasks[0].frames
        frames[1] = replace(frames[1], forces=None, magmoms=None)  # missing labels on some frames
        frames[2] = replace(frames[2], energy=None, corrected_energy=None, stress=[1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
        frames[3] = replace(frames[3], n_electronic_steps=None, scf_converged=False)
        frames[4] = replace(frames[4], scf_converged=None)
        return b

    fast, slow = varied(1), varied(2)
    slow.tasks[0].frames = [replace(f) for f in fast.tasks[0].frames]  # identical frames, other task
    block = frame_block(fast.tasks[0].frames)
    assert block is not None
    assert block.content_hash == [validate_frame(f).content_hash() for f in fast.tasks[0].frames]

    ingest(engine, "synthetic", "test", [fast])
    monkeypatch.setattr(loader, "frame_block", lambda frames: None)
    ingest(engine, "synthetic", "test", [slow])
    columns = (
        "ionic_step, n_atoms, lattice, atomic_numbers, frac_coords, energy, corrected_energy, forces, stress, "
        "magmoms, n_electronic_steps, scf_converged, content_hash, volume, energy_per_atom, max_force"
    )
    with engine.connect() as conn:
        rows = {
            task: conn.execute(
                text(
                    f"SELECT {columns} FROM frames f JOIN tasks t ON t.id = f.task_id "
                    "WHERE t.external_id = :task ORDER BY ionic_step"
                ),
                {"task": task},
            ).all()
            for task in ("task-1", "task-2")
        }
    assert len(rows["task-1"]) == 6 and rows["task-1"] == rows["task-2"]


def test_concurrent_writers_share_materials_without_losing_anything(engine):
    """Batches written in parallel transactions may insert the same material at the same time."""
    bundles = []
    for i in range(40):
        b = synthetic.bundle(i, n_frames=2)
        b.material = replace(b.material, external_id=f"mp-shared-{i % 5}")
        b.references = []
        bundles.append(b)
    summary = ingest(engine, "synthetic", "test", bundles, batch_records=1, writers=2)
    assert (summary.tasks_added, summary.frames_added, summary.quarantined) == (40, 80, 0)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM materials")).scalar_one() == 5
        assert conn.execute(text("SELECT count(DISTINCT material_id) FROM tasks")).scalar_one() == 5
