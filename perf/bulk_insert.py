"""Bulk-insert benchmark: SQLAlchemy ORM ``add_all`` versus ``crossfid.db.bulk.copy_insert``.

Usage::

    python perf/bulk_insert.py [--frames N] [--atoms K] [--seed S]

Runs on a throwaway embedded server in a temporary directory, or, when
``CROSSFID_DATABASE_URL`` is set, in a temporary database created on that server
and dropped afterwards. The same synthetic frames (random but valid: positive
cell volume, atomic numbers 1..94, forces 3n, stress 9, magmoms n) are inserted
into two tasks, once through the ORM and once through ``copy_insert``; then
``copy_insert`` is repeated to show that re-loading inserts nothing. Prints the
timings; no assertion depends on them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from crossfid.db import migrate
from crossfid.db.bulk import copy_insert
from crossfid.db.embedded import ensure_server, stop_server
from crossfid.db.engine import make_engine, normalize_url, redact
from crossfid.db.models import Frame, Material, Source, Task
from crossfid.hashing import sha256_text

#: columns written by both methods (generated columns are computed by PostgreSQL)
FRAME_COLUMNS = (
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
)

#: what is compared between the ORM-loaded and the COPY-loaded task
COMPARED = (
    Frame.ionic_step,
    Frame.content_hash,
    Frame.lattice,
    Frame.atomic_numbers,
    Frame.frac_coords,
    Frame.forces,
    Frame.stress,
    Frame.magmoms,
    Frame.volume,
    Frame.energy_per_atom,
    Frame.max_force,
)


def synthetic_frames(n_frames: int, n_atoms: int, seed: int) -> list[dict[str, Any]]:
    """Random but valid frames without ``task_id``: Å, eV, eV/Å, GPa, μB."""
    rng = random.Random(seed)
    frames = []
    for step in range(n_frames):
        # diagonally dominant cell: lengths 3-12 Å, small shear, so det > 0
        lattice = [rng.uniform(3.0, 12.0) if i % 4 == 0 else rng.uniform(-0.3, 0.3) for i in range(9)]
        atomic_numbers = [rng.randint(1, 94) for _ in range(n_atoms)]
        frac_coords = [rng.random() for _ in range(3 * n_atoms)]
        energy = -n_atoms * rng.uniform(3.0, 8.0)
        forces = [rng.gauss(0.0, 0.5) for _ in range(3 * n_atoms)]
        stress = [rng.gauss(0.0, 3.0) for _ in range(9)]
        magmoms = [rng.uniform(-3.0, 3.0) for _ in range(n_atoms)]
        content = repr((lattice, atomic_numbers, frac_coords, energy, forces, stress, magmoms))
        frames.append(
            {
                "ionic_step": step,
                "n_atoms": n_atoms,
                "lattice": lattice,
                "atomic_numbers": atomic_numbers,
                "frac_coords": frac_coords,
                "energy": energy,
                "forces": forces,
                "stress": stress,
                "magmoms": magmoms,
                "n_electronic_steps": rng.randint(5, 60),
                "scf_converged": True,
                "content_hash": sha256_text(content),
            }
        )
    return frames


def create_parents(engine: Engine) -> dict[str, int]:
    """One source and material, and a task per method (plus one for warming up); their ids."""
    with Session(engine) as session:
        source = Source(name="perf", kind="synthetic", description="bulk-insert benchmark")
        material = Material(external_id="perf-1", formula="SiO2", chemsys="O-Si", elements=["O", "Si"])
        tasks = {
            name: Task(
                material=material,
                source_id=0,  # set below, once the source has an id
                external_id=f"perf-{name}",
                fidelity="GGA",
                run_type="GGA",
                task_type="relax",
            )
            for name in ("warmup", "orm", "copy")
        }
        session.add(source)
        session.flush()
        for task in tasks.values():
            task.source_id = source.id
        session.add_all(tasks.values())
        session.commit()
        return {name: task.id for name, task in tasks.items()}


def orm_insert(engine: Engine, task_id: int, frames: list[dict[str, Any]]) -> float:
    """Baseline: ORM objects, ``session.add_all`` and commit; seconds."""
    start = time.perf_counter()
    with Session(engine) as session:
        session.add_all([Frame(task_id=task_id, **frame) for frame in frames])
        session.commit()
    return time.perf_counter() - start


def bulk_insert(engine: Engine, task_id: int, frames: list[dict[str, Any]]) -> tuple[float, int, int]:
    """``copy_insert`` in one transaction; (seconds, rows in, rows inserted)."""
    start = time.perf_counter()
    with engine.begin() as conn:
        result = copy_insert(
            conn,
            Frame,
            ({**frame, "task_id": task_id} for frame in frames),
            FRAME_COLUMNS,
            conflict_columns=("task_id", "ionic_step"),
        )
    return time.perf_counter() - start, result.n_input, result.n_inserted


def stored(engine: Engine, task_id: int) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        query = select(*COMPARED).where(Frame.task_id == task_id).order_by(Frame.ionic_step)
        return [tuple(row) for row in conn.execute(query)]


def run(engine: Engine, n_frames: int, n_atoms: int, seed: int, where: str) -> None:
    migrate.upgrade(engine)
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SHOW server_version").scalar()
    tasks = create_parents(engine)
    frames = synthetic_frames(n_frames, n_atoms, seed)

    # warm both paths up (connections, mapper configuration, statement caches)
    warmup = frames[:50]
    orm_insert(engine, tasks["warmup"], warmup)
    bulk_insert(engine, tasks["warmup"], [{**f, "ionic_step": f["ionic_step"] + 50} for f in warmup])

    orm_seconds = orm_insert(engine, tasks["orm"], frames)
    copy_seconds, n_input, n_inserted = bulk_insert(engine, tasks["copy"], frames)
    again_seconds, again_input, again_inserted = bulk_insert(engine, tasks["copy"], frames)

    orm_rows, copy_rows = stored(engine, tasks["orm"]), stored(engine, tasks["copy"])
    if not (len(orm_rows) == len(copy_rows) == n_inserted == n_input == n_frames):
        raise SystemExit(f"row counts differ: ORM {len(orm_rows)}, COPY {len(copy_rows)}, input {n_frames}")
    if orm_rows != copy_rows:
        raise SystemExit("the ORM and COPY paths stored different frames")
    if again_inserted != 0 or again_input != n_frames:
        raise SystemExit(f"re-running copy_insert inserted {again_inserted} rows; expected 0")

    print("crossfid bulk-insert benchmark")
    print(f"  database : {where}")
    print(f"  server   : PostgreSQL {version}")
    print(f"  frames   : {n_frames} frames × {n_atoms} atoms (seed {seed}), after a 50-frame warm-up")
    print()
    print(f"  {'method':<34}{'rows':>8}{'seconds':>10}{'frames/s':>12}")
    for label, rows, seconds in (
        ("ORM session.add_all + commit", len(orm_rows), orm_seconds),
        ("copy_insert (COPY + INSERT)", n_inserted, copy_seconds),
    ):
        print(f"  {label:<34}{rows:>8}{seconds:>10.3f}{rows / seconds:>12,.0f}")
    print(
        f"  {'copy_insert again (idempotent)':<34}{again_inserted:>8}{again_seconds:>10.3f}"
        f"{'':>12}  ({again_input - again_inserted} already present)"
    )
    print()
    print(f"  both paths stored identical frames ({len(orm_rows)} rows compared, generated columns included)")
    print(f"  COPY speed-up vs ORM: {orm_seconds / copy_seconds:.1f}×")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=5000, help="frames per method (default 5000)")
    parser.add_argument("--atoms", type=int, default=8, help="atoms per frame (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.atoms < 1:
        parser.error("--frames and --atoms must be positive")

    database = f"crossfid_perf_{uuid.uuid4().hex[:12]}"
    external = os.environ.get("CROSSFID_DATABASE_URL", "").strip()
    home: Path | None = None
    if external:
        server_url = normalize_url(external)
        admin_url = server_url.set(drivername="postgresql").render_as_string(hide_password=False)
        url = server_url.set(database=database)
        where = f"temporary database {database} on {redact(server_url)}"
    else:
        home = Path(tempfile.mkdtemp(prefix="crossfid-perf-"))
        server = ensure_server(home)
        admin_url = server.libpq_url("postgres")
        url = normalize_url(server.url(database))
        where = f"throwaway embedded server in {home}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        engine = make_engine(url)
        try:
            run(engine, args.frames, args.atoms, args.seed, where)
        finally:
            engine.dispose()
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    finally:
        if home is not None:
            stop_server(home)
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
