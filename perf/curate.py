"""Curation speed on the demo corpus: fast vs reference dedupe, and 1 vs 2 Dask workers.

    python perf/curate.py [--materials 24] [--seed 0]

Uses the demo corpus of that size (generated into $CROSSFID_HOME/demo if missing,
else reused), ingests it into a throwaway embedded server, then measures in one run:

* rule 7 both ways on every material (in process): StructureMatcher ``fit`` calls and
  seconds of the plain reference procedure vs the fast one, and that every decision
  is identical;
* a whole curation run on a Dask LocalCluster with 1 and with 2 worker processes:
  materials per second (cluster start-up excluded).

Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from crossfid.config import Settings
from crossfid.curation.config import CurationConfig
from crossfid.curation.dedupe import DedupeStats
from crossfid.curation.pipeline import _read_partition, decisions_of, run_curation, select_materials
from crossfid.curation.rules import curate_material
from crossfid.db import migrate
from crossfid.db.embedded import ensure_server, stop_server
from crossfid.db.engine import make_engine
from crossfid.demo import generator as demo
from crossfid.ingest.demo import read_demo_corpus
from crossfid.ingest.loader import ingest

FIDELITIES = (["GGA", "GGA+U"], ["r2SCAN"])


def corpus(materials: int, seed: int) -> Path:
    path = demo.default_corpus_path(Settings.from_env().home, materials, seed)
    if not path.exists():
        print(f"generating the demo corpus ({materials} materials) → {path}")
        demo.generate_demo_corpus(path, n_materials=materials, seed=seed)
    return path


def dedupe_both_ways(engine) -> dict[str, tuple[DedupeStats, float, list]]:
    config = CurationConfig()
    out = {}
    for method in ("reference", "fast"):
        stats = DedupeStats()
        decisions = []
        start = time.perf_counter()
        for fidelities in FIDELITIES:
            ids = [m for m, _ in select_materials(engine, fidelities)]
            with engine.connect() as conn:
                views = _read_partition(conn, ids, fidelities)
            for material_id in ids:
                tasks, reference = views[material_id]
                decisions += [
                    (d.frame_key, d.accepted, d.rule)
                    for d in curate_material(tasks, reference, config, dedupe=method, stats=stats)
                ]
        out[method] = (stats, time.perf_counter() - start, decisions)
    return out


def dask_run(engine, url: str, workers: int) -> tuple[float, int, int]:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("crossfid.curation.rules"))  # imports (pymatgen) outside the timing
        start = time.perf_counter()
        materials = 0
        run_ids = []
        for fidelities in FIDELITIES:
            summary = run_curation(engine, url, fidelities, client=client, partition_frames=60)
            materials += summary.materials
            run_ids.append(summary.run_id)
        return time.perf_counter() - start, materials, run_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    path = corpus(args.materials, args.seed)
    home = Path(tempfile.mkdtemp(prefix="crossfid-perf-"))
    try:
        url = ensure_server(home).libpq_url()
        engine = make_engine(url)
        migrate.upgrade(engine)
        loaded = ingest(engine, "demo", "demo", read_demo_corpus(path))
        print("crossfid curation benchmark")
        print(f"  corpus   : {path.name}: {loaded.tasks_added} tasks, {loaded.frames_added} frames")
        print()

        both = dedupe_both_ways(engine)
        (ref, ref_s, ref_d), (fast, fast_s, fast_d) = both["reference"], both["fast"]
        same = sorted(ref_d, key=repr) == sorted(fast_d, key=repr)
        print("  rule 7 (deduplication), in process, all materials and fidelities")
        print(f"  {'':28s} {'fit calls':>10s} {'fit s':>8s} {'total s':>8s}")
        print(f"  {'reference procedure':28s} {ref.fit_calls:10,d} {ref.fit_seconds:8.2f} {ref_s:8.2f}")
        print(f"  {'fast (necessary conditions)':28s} {fast.fit_calls:10,d} {fast.fit_seconds:8.2f} {fast_s:8.2f}")
        print(
            f"  fewer StructureMatcher calls: {ref.fit_calls / max(fast.fit_calls, 1):.1f}×, "
            f"faster: {ref_s / fast_s:.1f}×, identical decisions: {same} ({len(fast_d)} frames)"
        )
        print(f"  comparisons decided without a fit: {dict(sorted(fast.skipped_by.items()))}")
        print()

        timings = {}
        decisions = {}
        for workers in (1, 2):
            seconds, materials, run_ids = dask_run(engine, url, workers)
            timings[workers] = (seconds, materials)
            decisions[workers] = [decisions_of(engine, r) for r in run_ids]
        print("  whole curation runs on a Dask LocalCluster (GGA/GGA+U and r2SCAN runs)")
        for workers, (seconds, materials) in timings.items():
            label = f"{workers} worker{'s' if workers > 1 else ''}"
            print(f"  {label:9s}: {seconds:6.2f} s, {materials / seconds:6.1f} materials/s")
        print(
            f"  2 workers vs 1: {timings[1][0] / timings[2][0]:.2f}× faster; "
            f"identical decisions: {decisions[1] == decisions[2]}"
        )
    finally:
        stop_server(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
