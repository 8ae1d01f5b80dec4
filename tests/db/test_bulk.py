"""copy_insert against a real PostgreSQL (the ``engine`` fixture: a fresh, migrated database)."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import psycopg
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from crossfid.db import bulk
from crossfid.db.bulk import BulkResult, copy_insert, staging_name
from crossfid.db.models import Frame, Material, Quarantine, Source, Task

FRAME_COLUMNS = [
    "task_id",
    "ionic_step",
    "n_atoms",
    "lattice",
    "atomic_numbers",
    "frac_coords",
    "energy",
    "forces",
    "stress",
    "magmoms",
    "n_electronic_steps",
    "scf_converged",
    "content_hash",
]


def make_frame(task_id: int, step: int, n_atoms: int = 4, rng: random.Random | None = None) -> dict:
    """A valid synthetic frame (Å, eV, eV/Å, GPa, μB)."""
    rng = rng or random.Random(step)
    a = 4.0 + rng.random()
    lattice = [a, 0.1 * rng.random(), 0.0, 0.0, a + 0.5, 0.0, 0.2 * rng.random(), 0.0, a + 1.0]
    frame = {
        "task_id": task_id,
        "ionic_step": step,
        "n_atoms": n_atoms,
        "lattice": lattice,
        "atomic_numbers": [rng.randint(1, 94) for _ in range(n_atoms)],
        "frac_coords": [rng.random() for _ in range(3 * n_atoms)],
        "energy": -5.0 * n_atoms + rng.gauss(0.0, 0.5),
        "forces": [rng.gauss(0.0, 0.3) for _ in range(3 * n_atoms)],
        "stress": [rng.gauss(0.0, 2.0) for _ in range(9)],
        "magmoms": [rng.uniform(-2.0, 2.0) for _ in range(n_atoms)],
        "n_electronic_steps": rng.randint(5, 40),
        "scf_converged": True,
    }
    frame["content_hash"] = hashlib.sha256(repr(sorted(frame.items())).encode()).hexdigest()
    return frame


@pytest.fixture
def task_id(engine) -> int:
    with engine.begin() as conn:
        source_id = conn.execute(insert(Source).values(name="test", kind="demo").returning(Source.id)).scalar()
        material_id = conn.execute(
            insert(Material)
            .values(external_id="mp-149", formula="Si", chemsys="Si", elements=["Si"])
            .returning(Material.id)
        ).scalar()
        return conn.execute(
            insert(Task)
            .values(
                material_id=material_id,
                source_id=source_id,
                external_id="task-1",
                fidelity="GGA",
                run_type="GGA",
                task_type="relax",
            )
            .returning(Task.id)
        ).scalar()


def count_frames(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Frame)).scalar_one()


@pytest.fixture(params=["binary", "text"])
def copy_format(request, monkeypatch) -> str:
    """Run a test with the binary COPY and again with the text COPY fallback."""
    if request.param == "text":  # as if some column type had no binary dumper
        monkeypatch.setattr(bulk, "_has_binary_dumper", lambda pg, oid: False)
    return request.param


def test_round_trip_and_generated_columns(engine, task_id, copy_format):
    frames = [make_frame(task_id, step) for step in range(20)]
    with engine.begin() as conn:
        result = copy_insert(conn, Frame, frames, FRAME_COLUMNS)
    assert result == BulkResult(n_input=20, n_inserted=20, returned_rows=[])

    with engine.connect() as conn:
        stored = {f.ionic_step: f for f in conn.execute(select(Frame).order_by(Frame.ionic_step))}
    assert sorted(stored) == list(range(20))
    for frame in frames:
        row = stored[frame["ionic_step"]]
        for name in FRAME_COLUMNS:  # floats survive the COPY exactly
            assert getattr(row, name) == frame[name], name
        assert row.energy_per_atom == pytest.approx(frame["energy"] / frame["n_atoms"], rel=1e-15)
        forces = np.reshape(frame["forces"], (-1, 3))
        assert row.max_force == pytest.approx(np.linalg.norm(forces, axis=1).max(), rel=1e-12)
        assert row.volume == pytest.approx(abs(np.linalg.det(np.reshape(frame["lattice"], (3, 3)))))


def test_reinsert_is_idempotent(engine, task_id):
    frames = [make_frame(task_id, step) for step in range(10)]
    with engine.begin() as conn:
        assert copy_insert(conn, "frames", frames, FRAME_COLUMNS).n_inserted == 10
    with engine.begin() as conn:
        again = copy_insert(conn, "frames", frames, FRAME_COLUMNS, conflict_columns=["task_id", "ionic_step"])
    assert (again.n_input, again.n_inserted, again.n_already_present) == (10, 0, 10)

    overlapping = [make_frame(task_id, step) for step in range(5, 15)]
    with engine.begin() as conn:
        partial = copy_insert(conn, Frame, overlapping, FRAME_COLUMNS, conflict_columns=["task_id", "ionic_step"])
    assert (partial.n_inserted, partial.n_already_present) == (5, 5)
    assert count_frames(engine) == 15


def test_bad_row_raises_and_leaves_table_unchanged(engine, task_id):
    with engine.begin() as conn:
        copy_insert(conn, Frame, [make_frame(task_id, 0)], FRAME_COLUMNS)
    batch = [make_frame(task_id, step) for step in range(1, 6)]
    batch[2]["forces"] = batch[2]["forces"][:-1]  # 3n - 1 components
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        copy_insert(conn, Frame, batch, FRAME_COLUMNS)
    assert isinstance(caught.value.orig, psycopg.errors.CheckViolation)
    assert "ck_frames_forces_shape" in str(caught.value)
    assert count_frames(engine) == 1


def test_conflict_error_mode_raises_on_duplicates(engine, task_id):
    frames = [make_frame(task_id, step) for step in range(3)]
    with engine.begin() as conn:
        copy_insert(conn, Frame, frames, FRAME_COLUMNS, conflict="error")
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        copy_insert(conn, Frame, frames[:1], FRAME_COLUMNS, conflict="error")
    assert isinstance(caught.value.orig, psycopg.errors.UniqueViolation)


def test_returning_gives_new_ids(engine, task_id):
    frames = [make_frame(task_id, step) for step in range(8)]
    with engine.begin() as conn:
        first = copy_insert(conn, Frame, frames[:5], FRAME_COLUMNS, returning=["id", "ionic_step"])
        second = copy_insert(conn, Frame, frames, FRAME_COLUMNS, returning=["id", "ionic_step"])
    assert sorted(step for _, step in first.returned_rows) == [0, 1, 2, 3, 4]
    assert sorted(step for _, step in second.returned_rows) == [5, 6, 7]  # only the new ones
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Frame.ionic_step, Frame.id)).all())
    assert {step: id_ for id_, step in first.returned_rows + second.returned_rows} == stored


def test_tuples_numpy_and_session(engine, task_id):
    from sqlalchemy.orm import Session

    frame = make_frame(task_id, 0)
    array_columns = ("lattice", "atomic_numbers", "frac_coords", "forces", "stress", "magmoms")
    row = tuple(np.asarray(frame[c]) if c in array_columns else frame[c] for c in FRAME_COLUMNS)
    with Session(engine) as session:
        result = copy_insert(session, Frame, [row], FRAME_COLUMNS, returning=["max_force"])
        session.commit()
    assert result.n_inserted == 1
    assert math.isfinite(result.returned_rows[0][0])
    with engine.connect() as conn:
        assert conn.execute(select(Frame.forces)).scalar_one() == frame["forces"]


def test_autocommit_connection_and_open_connection(engine, task_id):
    frames = [make_frame(task_id, step) for step in range(4)]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert copy_insert(conn, Frame, frames[:2], FRAME_COLUMNS).n_inserted == 2
    with engine.connect() as conn:  # no transaction yet: copy_insert begins one, the caller commits
        assert copy_insert(conn, Frame, frames, FRAME_COLUMNS).n_inserted == 2
        conn.commit()
    assert count_frames(engine) == 4


def test_json_columns_are_wrapped(engine, task_id, copy_format):
    with engine.begin() as conn:
        source_id = conn.execute(select(Source.id)).scalar_one()
        rows = [
            {"source_id": source_id, "location": "a", "reason": "bad", "raw_document": {"k": [1, 2]}},
            {"source_id": source_id, "location": "b", "reason": "bad", "raw_document": [1, "x"]},
            {"source_id": source_id, "location": "c", "reason": "bad", "raw_document": None},
        ]
        for i, row in enumerate(rows):
            row["fingerprint"] = hashlib.sha256(str(i).encode()).hexdigest()
        columns = ["source_id", "location", "reason", "raw_document", "fingerprint"]
        assert copy_insert(conn, Quarantine, rows, columns).n_inserted == 3
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Quarantine.location, Quarantine.raw_document)).all())
    assert stored == {"a": {"k": [1, 2]}, "b": [1, "x"], "c": None}


def test_argument_checks(engine, task_id):
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="generated"):
            copy_insert(conn, Frame, [], [*FRAME_COLUMNS, "max_force"])
        with pytest.raises(ValueError, match="no column"):
            copy_insert(conn, Frame, [], ["task_id", "nope"])
        with pytest.raises(ValueError, match="conflict"):
            copy_insert(conn, Frame, [], FRAME_COLUMNS, conflict="update")
    frame = make_frame(task_id, 0)
    del frame["content_hash"]
    with pytest.raises(KeyError, match="content_hash"), engine.begin() as conn:
        copy_insert(conn, Frame, [frame], FRAME_COLUMNS)
    assert count_frames(engine) == 0


def test_empty_input(engine, task_id):
    with engine.begin() as conn:
        assert copy_insert(conn, Frame, iter([]), FRAME_COLUMNS) == BulkResult(0, 0, [])
    assert count_frames(engine) == 0


def test_staging_names_are_unique():
    assert len({staging_name() for _ in range(1000)}) == 1000
    with pytest.raises(ValueError):
        staging_name("x" * 60)


@pytest.mark.parametrize("bad", ["nul\x00", "surrogate\ud800"], ids=["nul", "surrogate"])
def test_unstorable_text_is_a_data_error(engine, task_id, copy_format, bad):
    """Whether psycopg or the server refuses the string, the caller gets sqlalchemy's DataError."""
    with engine.connect() as conn:
        source_id = conn.execute(select(Source.id)).scalar_one()
    row = {"source_id": source_id, "location": bad, "reason": "bad", "fingerprint": "0" * 64}
    with pytest.raises(DataError) as caught, engine.begin() as conn:
        copy_insert(conn, Quarantine, [row], list(row))
    assert isinstance(caught.value.orig, psycopg.DataError)
    with engine.connect() as conn:  # nothing written, and the pooled connection still works
        assert conn.execute(select(func.count()).select_from(Quarantine)).scalar_one() == 0


@pytest.mark.parametrize("column, value", [("n_electronic_steps", 2**40), ("ionic_step", -(2**31) - 1)])
def test_out_of_range_integer_is_a_data_error_not_truncated(engine, task_id, copy_format, column, value):
    frame = make_frame(task_id, 0)
    frame[column] = value  # binary COPY into an int4 column would keep only the low 32 bits
    with pytest.raises(DataError, match="out of range"), engine.begin() as conn:
        copy_insert(conn, Frame, [frame], FRAME_COLUMNS)
    assert count_frames(engine) == 0


def test_lost_connection_is_invalidated_for_the_pool(engine, task_id, database_url):
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        with pytest.raises(DBAPIError) as caught:
            copy_insert(conn, Frame, [make_frame(task_id, 0)], FRAME_COLUMNS)
        assert caught.value.connection_invalidated and conn.invalidated
    with engine.connect() as conn:  # the pool reconnects
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
        assert copy_insert(conn, Frame, [make_frame(task_id, 0)], FRAME_COLUMNS).n_inserted == 1
        conn.commit()
    assert count_frames(engine) == 1
