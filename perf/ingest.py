"""Loader throughput against plain ORM inserts of the same frames, in one run.

    python perf/ingest.py [--frames 20000] [--atoms 10] [--frames-per-task 20]

Both paths start from the same canonical records (``crossfid.ingest.records``)
and write to fresh databases on a throwaway embedded server (or on the server of
``CROSSFID_DATABASE_URL``):

* baseline: SQLAlchemy ORM — Material, Task and Frame objects, ``session.add_all``,
  one commit;
* crossfid: ``crossfid.ingest.loader.ingest`` — validation, content hashes, raw
  documents, COPY in task-atomic batches.

Prints frames/s of each and the ratio. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import synthetic  # noqa: E402

from crossfid.config import Settings  # noqa: E402
from crossfid.db import migrate  # noqa: E402
from crossfid.db.embedded import ensure_server, stop_server  # noqa: E402
from crossfid.db.engine import make_engine  # noqa: E402
from crossfid.db.models import Frame, Material, Source, Task  # noqa: E402
from crossfid.ingest.loader import ingest  # noqa: E402


def orm_baseline(engine, bundles) -> int:
    """Plain ORM: one object per row, add_all, commit."""
    with Session(engine) as session:
        source = Source(name="perf-orm", kind="perf")
        session.add(source)
        session.flush()
        objects = []
        for bundle in bundles:
            m = bundle.material
            material = Material(
                external_id=m.external_id, formula=m.formula, chemsys=m.chemsys, elements=list(m.elements)
            )
            for t in bundle.tasks:
                task = Task(
                    material=material,
                    source_id=source.id,
                    external_id=t.external_id,
                    fidelity=t.fidelity,
                    run_type=t.run_type,
                    task_type=t.task_type,
                    input_parameters=t.input_parameters,
                    hubbards={k: v for k, v in (t.hubbards or {}).items() if v} or None,
                    is_hubbard=bool(t.hubbards and any(t.hubbards.values())),
                )
                for f in t.frames:
                    task.frames.append(
                        Frame(
                            ionic_step=f.ionic_step,
                            n_atoms=f.n_atoms,
                            lattice=f.lattice,
                            atomic_numbers=f.atomic_numbers.tolist(),
                            frac_coords=f.frac_coords,
                            energy=f.energy,
                            corrected_energy=f.corrected_energy,
                            forces=f.forces,
                            stress=f.stress,
                            magmoms=f.magmoms,
                            n_electronic_steps=f.n_electronic_steps,
                            scf_converged=f.scf_converged,
                            content_hash=f.content_hash(),
                        )
                    )
                objects.append(task)
            objects.append(material)
        session.add_all(objects)
        session.commit()
    return sum(len(t.frames) for b in bundles for t in b.tasks)


def fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"crossfid_perf_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(make_engine(url))
    return name, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--atoms", type=int, default=10)
    parser.add_argument("--frames-per-task", type=int, default=20)
    args = parser.parse_args()

    settings = Settings.from_env()
    home = None
    if settings.database_url:
        admin_url = settings.database_url
        where = "server from CROSSFID_DATABASE_URL"
    else:
        home = Path(tempfile.mkdtemp(prefix="crossfid-perf-"))
        admin_url = ensure_server(home).libpq_url("postgres")
        where = f"throwaway embedded server in {home}"
    created: list[str] = []
    try:
        n_tasks = max(1, args.frames // args.frames_per_task)
        bundles = [synthetic.bundle(i, n_frames=args.frames_per_task, n_atoms=args.atoms) for i in range(n_tasks)]
        n_frames = n_tasks * args.frames_per_task
        # warm up both paths (imports, connection pools, plan caches) on a small separate set
        for runner in (orm_baseline, lambda e, b: ingest(e, "perf-loader", "perf", b).frames_added):
            name, url = fresh_database(admin_url)
            created.append(name)
            runner(make_engine(url), [synthetic.bundle(10**6 + i, n_frames=5, n_atoms=args.atoms) for i in range(10)])

        name, url = fresh_database(admin_url)
        created.append(name)
        start = time.perf_counter()
        orm_frames = orm_baseline(make_engine(url), bundles)
        orm_seconds = time.perf_counter() - start

        name, url = fresh_database(admin_url)
        created.append(name)
        engine = make_engine(url)
        start = time.perf_counter()
        summary = ingest(engine, "perf-loader", "perf", bundles)
        loader_seconds = time.perf_counter() - start
        start = time.perf_counter()
        again = ingest(engine, "perf-loader", "perf", bundles)
        rerun_seconds = time.perf_counter() - start
        if summary.frames_added != orm_frames or orm_frames != n_frames or again.frames_added:
            raise SystemExit(
                f"row counts differ: orm {orm_frames}, loader {summary.frames_added}, rerun {again.frames_added}"
            )

        print("crossfid loader benchmark")
        print(f"  database : {where}")
        print(f"  input    : {n_tasks} tasks × {args.frames_per_task} frames × {args.atoms} atoms = {n_frames} frames")
        print()
        print(f"  {'method':44s} {'seconds':>8s} {'frames/s':>10s}")
        print(f"  {'ORM session.add_all + commit (baseline)':44s} {orm_seconds:8.2f} {n_frames / orm_seconds:10,.0f}")
        print(
            f"  {'crossfid loader (validate, hash, COPY)':44s} {loader_seconds:8.2f} {n_frames / loader_seconds:10,.0f}"
        )
        print(f"  {'crossfid loader, re-run (all present)':44s} {rerun_seconds:8.2f} {n_frames / rerun_seconds:10,.0f}")
        print()
        print(f"  loader speed-up vs ORM: {orm_seconds / loader_seconds:.1f}×")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for name in created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if home is not None:
            stop_server(home)
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
