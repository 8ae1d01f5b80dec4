"""The SQL cookbook at scale: each docs/sql.md query's time on its index path vs forced sequential scans.

    python perf/sql.py [--materials 3000] [--frames 12] [--atoms 12]

Builds a corpus on a throwaway embedded server (or on the server of ``CROSSFID_DATABASE_URL``):
``--materials`` binary materials over 30 elements (so an element filter keeps about 1/15 of
them), ``--frames`` frames of ``--atoms`` atoms each, loaded with crossfid's loader, plus a
dataset ``demo-r2scan`` holding every frame; then ``VACUUM ANALYZE``. For every cookbook query
it prints the median of 5 runs with the planner free (the index path) and with index scans
disabled (the sequential baseline, same run), their ratio, and the plan's index names and any
sequential scan. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import synthetic  # noqa: E402
from support.cookbook import cookbook  # noqa: E402

from crossfid.config import Settings  # noqa: E402
from crossfid.db import migrate  # noqa: E402
from crossfid.db.embedded import ensure_server, stop_server  # noqa: E402
from crossfid.db.engine import make_engine  # noqa: E402
from crossfid.ingest.loader import ingest  # noqa: E402
from crossfid.ingest.records import Bundle, Material, Task  # noqa: E402

#: cations and anions of the synthetic binaries (atomic numbers)
CATIONS = (3, 11, 12, 19, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 38, 40, 42, 47, 56, 74)
ANIONS = (7, 8, 9, 15, 16, 17, 33, 34, 35, 53)
SEQUENTIAL = "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_indexonlyscan = off"


def bundles(n_materials: int, n_frames: int, n_atoms: int) -> list[Bundle]:
    """Binary materials, one relax task each, with synthetic (physically shaped) frames."""
    out = []
    for i in range(n_materials):
        rng = np.random.default_rng(i)
        pair = (CATIONS[i % len(CATIONS)], ANIONS[(i // len(CATIONS)) % len(ANIONS)])
        fidelity = "r2SCAN" if i % 3 == 0 else "GGA"
        frames = [synthetic.frame(rng, s, n_atoms, numbers=pair) for s in range(n_frames)]
        task = Task(external_id=f"task-{i}", fidelity=fidelity, run_type=fidelity, task_type="relax", frames=frames)
        material = Material.from_atomic_numbers(f"mp-{i}", frames[0].atomic_numbers)
        out.append(Bundle(material=material, location=f"perf#{i}", tasks=[task]))
    return out


def make_dataset(conn: psycopg.Connection) -> None:
    """A dataset ``demo-r2scan`` (not frozen) holding every frame, as a curation would."""
    run = conn.execute(
        "INSERT INTO curation_runs (fidelities, config, config_hash, status, crossfid_version) "
        "VALUES ('{r2SCAN,GGA}', '{}', repeat('0', 64), 'completed', 'perf') RETURNING id"
    ).fetchone()[0]
    dataset = conn.execute(
        "INSERT INTO datasets (name, version, fidelities, curation_run_id, config, config_hash) "
        "VALUES ('demo-r2scan', 1, '{r2SCAN,GGA}', %s, '{}', repeat('0', 64)) RETURNING id",
        (run,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO dataset_frames (dataset_id, frame_id, material_id) "
        "SELECT %s, f.id, t.material_id FROM frames f JOIN tasks t ON t.id = f.task_id",
        (dataset,),
    )


def median_ms(conn: psycopg.Connection, statement: str, sequential: bool) -> float:
    times = []
    for _ in range(5):
        with conn.transaction():
            if sequential:
                conn.execute(SEQUENTIAL)
            start = time.perf_counter()
            conn.execute(statement).fetchall()
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def plan_summary(conn: psycopg.Connection, statement: str) -> str:
    plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {statement}"))
    indexes = sorted(set(re.findall(r"(?:Index|Index Only|Bitmap Index) Scan (?:using|on) (\w+)", plan)))
    seq = sorted(set(re.findall(r"Seq Scan on (\w+)", plan)))
    return ", ".join(indexes) + (f"; Seq Scan on {', '.join(seq)}" if seq else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=3000)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--atoms", type=int, default=12)
    args = parser.parse_args()

    settings = Settings.from_env()
    home = None
    if settings.database_url:
        admin_url = settings.database_url
    else:
        home = Path(tempfile.mkdtemp(prefix="crossfid-perf-sql-"))
        admin_url = ensure_server(home).libpq_url("postgres")
    name = f"crossfid_perf_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        migrate.upgrade(engine)
        start = time.perf_counter()
        summary = ingest(engine, "perf-sql", "perf", bundles(args.materials, args.frames, args.atoms))
        engine.dispose()
        libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(libpq, autocommit=True) as conn:
            with conn.transaction():
                make_dataset(conn)
            conn.execute("VACUUM ANALYZE")
            print(
                f"{summary.frames_added:,} frames of {args.atoms} atoms, {args.materials:,} materials, "
                f"built in {time.perf_counter() - start:.0f} s"
            )
            print(f"{'query':<60} {'index ms':>9} {'seq ms':>9} {'ratio':>6}  plan")
            for statement, uses in cookbook():
                first = " ".join(statement.split())[:58]
                free = median_ms(conn, statement, sequential=False)
                seq = median_ms(conn, statement, sequential=True)
                mark = "" if uses else " (no index named)"
                print(f"{first:<60} {free:9.1f} {seq:9.1f} {seq / free:6.1f}  {plan_summary(conn, statement)}{mark}")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        if home is not None:
            stop_server(home)
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
