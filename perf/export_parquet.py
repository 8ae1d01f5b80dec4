"""Parquet export throughput and memory against binary COPY of the same rows and the extxyz export, in one run.

    python perf/export_parquet.py [--frames 100000] [--atoms 12] [--frames-per-task 20]

A fresh database on a throwaway embedded server (or on the server of ``CROSSFID_DATABASE_URL``)
gets synthetic frames of ``--atoms`` atoms (``tests/support/synthetic.py``, loaded by
``crossfid.ingest.loader.ingest``), accepted by a curation run and frozen as two dataset
versions: ``quarter`` (a quarter of the materials) and ``full``, each split 8:1:1. Every
measurement runs in its own process, so that its peak RSS is its own:

* ``COPY (SELECT <the frame columns> FROM dataset_frames JOIN frames ...) TO STDOUT (FORMAT BINARY)``
  of the full dataset on one connection, read and discarded: the physical limit of getting the
  rows out of PostgreSQL (no ordering, no decoding; the export uses two connections);
* the Parquet export of ``full`` and of ``quarter`` (same row group size: peak RSS must not
  grow with the dataset), and of ``full``'s split with its ``part`` column;
* the extxyz export of the validation and test parts of ``quarter``'s split (about 5% of the
  frames: it is much slower, and its rate is per frame).

Each process first exports a small part (imports, first connection), untimed. Prints frames/s,
peak RSS (VmHWM) and the ratios. Timings on a shared machine are noisy; the ratios
come from one run. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

COPY_FRAMES = """
COPY (
    SELECT f.task_id, f.ionic_step, f.n_atoms, f.content_hash, f.energy, f.corrected_energy, f.atomic_numbers,
           f.lattice, f.frac_coords, f.forces, f.stress, f.magmoms
      FROM dataset_frames df JOIN frames f ON f.id = df.frame_id
     WHERE df.dataset_id = (SELECT id FROM datasets WHERE name = %s)
) TO STDOUT (FORMAT BINARY)
"""


def _peak_rss_mb() -> float:
    """This process's peak resident set (MB): VmHWM, which starts afresh at exec (ru_maxrss would not)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _warm_up(url: str, out: str) -> None:
    """Imports, the first connection and the code paths, on a small export (not timed)."""
    from crossfid.curation.parquet import export_parquet
    from crossfid.db.engine import make_engine

    engine = make_engine(url)
    export_parquet(engine, "quarter@0", Path(out) / "warm-up", ["test"])
    engine.dispose()


def stage_copy(url: str, dataset: str, out: str) -> tuple[float, int, float]:
    """Binary COPY of the dataset's frames, read and discarded: (seconds, bytes, peak RSS MB)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        size = 0
        with cur.copy(COPY_FRAMES, (dataset,)) as copy:
            for block in copy:
                size += len(block)
        return time.perf_counter() - start, size, _peak_rss_mb()


def stage_parquet(url: str, ref: str, out: str) -> tuple[float, int, float]:
    """The Parquet export of ``ref``: (seconds, frames, peak RSS MB)."""
    from crossfid.curation.parquet import export_parquet
    from crossfid.db.engine import make_engine

    _warm_up(url, out)
    engine = make_engine(url)
    with engine.connect():
        pass
    start = time.perf_counter()
    result = export_parquet(engine, ref, out)
    return time.perf_counter() - start, result.n_frames, _peak_rss_mb()


def stage_extxyz(url: str, ref: str, out: str) -> tuple[float, int, float]:
    """The extxyz export of the validation and test parts of split ``ref``: (seconds, frames, peak RSS MB)."""
    from crossfid.curation.export import export_split
    from crossfid.db.engine import make_engine

    engine = make_engine(url)
    export_split(engine, ref, Path(out) / "warm-up", "extxyz", ["test"])
    start = time.perf_counter()
    paths = export_split(engine, ref, out, "extxyz", ["val", "test"])
    seconds = time.perf_counter() - start
    frames = 0
    for path in paths:
        with open(path) as fh:
            frames += sum(line.startswith("Lattice=") for line in fh)
    return seconds, frames, _peak_rss_mb()


def run(stage, *args) -> tuple[float, int, float]:
    """``stage(*args)`` in a fresh process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(stage, args)


def prepare(url: str, frames: int, atoms: int, per_task: int) -> dict[str, int]:
    """Load, curate, freeze and split; return frames per dataset."""
    from support import synthetic
    from support.curation_corpus import curate

    from crossfid.curation.datasets import freeze_dataset
    from crossfid.curation.split_store import create_split
    from crossfid.db.engine import make_engine
    from crossfid.ingest.loader import ingest

    engine = make_engine(url)
    n_tasks = max(4, frames // per_task)
    batch = 2000
    for first in range(0, n_tasks, batch):
        bundles = [
            synthetic.bundle(i, n_frames=per_task, n_atoms=atoms, fidelity="GGA" if i < n_tasks // 4 else "r2SCAN")
            for i in range(first, min(n_tasks, first + batch))
        ]
        ingest(engine, "perf-export", "perf", bundles)
    run_id = curate(engine)
    counts = {}
    for name, fidelities in (("quarter", ["GGA"]), ("full", None)):
        info = freeze_dataset(engine, run_id, name, fidelities, energy_label="uncorrected")
        create_split(engine, name, (8, 1, 1), 0)
        counts[name] = info.n_frames
    engine.dispose()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--atoms", type=int, default=12)
    parser.add_argument("--frames-per-task", type=int, default=20)
    args = parser.parse_args()

    from crossfid.config import Settings
    from crossfid.db import migrate
    from crossfid.db.embedded import ensure_server, stop_server
    from crossfid.db.engine import make_engine

    settings = Settings.from_env()
    home = None
    if settings.database_url:
        admin_url = settings.database_url
        where = "server from CROSSFID_DATABASE_URL"
    else:
        home = Path(tempfile.mkdtemp(prefix="crossfid-perf-"))
        admin_url = ensure_server(home).libpq_url("postgres")
        where = f"throwaway embedded server in {home}"
    name = f"crossfid_perf_{uuid.uuid4().hex[:10]}"
    out = Path(tempfile.mkdtemp(prefix="crossfid-perf-export-"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(make_engine(url))
        start = time.perf_counter()
        counts = prepare(url, args.frames, args.atoms, args.frames_per_task)
        print(f"prepared {counts} in {time.perf_counter() - start:.0f} s ({where})")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

        run(stage_parquet, url, "quarter", str(out / "warm-up"))  # warm the server's cache
        results = {
            "COPY TO STDOUT binary, full (limit)": run(stage_copy, url, "full", str(out)),
            "parquet, full": run(stage_parquet, url, "full", str(out / "full")),
            "parquet, quarter": run(stage_parquet, url, "quarter", str(out / "quarter")),
            "parquet, full@0 (split, part column)": run(stage_parquet, url, "full@0", str(out / "split")),
            "extxyz, quarter@0 val+test": run(stage_extxyz, url, "quarter@0", str(out / "xyz")),
        }
        copy_seconds, copy_bytes, copy_rss = results.pop("COPY TO STDOUT binary, full (limit)")
        full = counts["full"]
        print(f"\n{full:,} frames of {args.atoms} atoms; COPY read {copy_bytes / 1e6:,.0f} MB")
        header = ("frames", "seconds", "frames/s", "peak RSS MB", "× COPY s/frame")
        print(f"  {'stage':40s} " + " ".join(f"{h:>{w}s}" for h, w in zip(header, (9, 8, 10, 12, 15), strict=True)))
        print(
            f"  {'COPY TO STDOUT binary (limit)':40s} {full:9,d} {copy_seconds:8.2f} {full / copy_seconds:10,.0f} "
            f"{copy_rss:12.0f} {1:15.2f}"
        )
        rates = {}
        for label, (seconds, frames, rss) in results.items():
            rate = frames / seconds
            rates[label] = rate
            slower = (full / copy_seconds) / rate
            print(f"  {label:40s} {frames:9,d} {seconds:8.2f} {rate:10,.0f} {rss:12.0f} {slower:15.2f}")
        parquet = rates["parquet, full"]
        print(f"\n  parquet export of the full dataset: {parquet:,.0f} frames/s (target ≥ 100,000 for 12-atom frames)")
        print(f"  parquet vs extxyz export (frames/s): {parquet / rates['extxyz, quarter@0 val+test']:.1f}×")
        print(f"  parquet time / COPY time (same rows): {(full / parquet) / copy_seconds:.2f}")
        rss_full, rss_quarter = results["parquet, full"][2], results["parquet, quarter"][2]
        print(f"  peak RSS full / quarter (4× the frames): {rss_full / rss_quarter:.2f}")
        print(f"  file size full: {(out / 'full' / 'full-v1.parquet').stat().st_size / 1e6:,.0f} MB")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if home is not None:
            stop_server(home)
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
