"""Density benchmark relaxations per second with 1 vs 2 Dask worker processes, same crystals.

    .venv/bin/python perf/density_workers.py [--crystals Cu-fcc,Al-fcc,...] [--model chgnet-0.3.0]

The crystals (default: the demo's 12, one per prototype family) are built from the bundled
table, strained by −10 % and relaxed as the density benchmark does
(:func:`crossfid.benchmarks.relax_jobs.relax_many`, default :class:`RelaxSettings`), on a
Dask LocalCluster with 1 and then 2 worker processes of one thread each. Each worker loads
the model and relaxes one crystal before the clock starts (cluster start-up and model
loading excluded). Prints both rates, their ratio (target ≥ 1.6×) and the largest
difference of relaxed densities between the two runs. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import time

from crossfid.benchmarks.density import build_crystal, load_crystals
from crossfid.benchmarks.relax import strained
from crossfid.benchmarks.relax_jobs import RelaxSettings, relax_many, relax_one
from crossfid.potentials.base import ModelSpec

#: the demo's density crystals (Makefile DEMO_CRYSTALS)
DEMO_CRYSTALS = (
    "Cu-fcc,Al-fcc,Fe-bcc,W-bcc,Si-diamond,NaCl-rocksalt,MgO-rocksalt,GaAs-zincblende,ZnO-wurtzite,"
    "CaF2-fluorite,SrTiO3-perovskite,TiO2-rutile"
)


def structures(ids: list[str]) -> list[tuple[str, dict]]:
    table = {c["id"]: c for c in load_crystals()}
    return [(i, strained(build_crystal(table[i]), -0.10).as_dict()) for i in ids]


def run(workers: int, spec: ModelSpec, items: list[tuple[str, dict]], settings: RelaxSettings):
    """Seconds and results of relaxing ``items`` on ``workers`` warmed-up worker processes."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        first, structure = items[0]
        client.run(relax_one, spec, first, structure, settings)  # model loaded and torch warm on every worker
        start = time.perf_counter()
        results = relax_many(spec, items, settings, client=client)
        return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crystals", default=DEMO_CRYSTALS, help="Crystal ids, comma-separated.")
    parser.add_argument("--model", default="chgnet-0.3.0", help="A shipped model.")
    args = parser.parse_args()

    from pymatgen.core import Structure

    ids = [c.strip() for c in args.crystals.split(",") if c.strip()]
    items = structures(ids)
    spec = ModelSpec(args.model)
    settings = RelaxSettings()
    print("crossfid density benchmark relaxations on Dask")
    print(f"  model    : {args.model}; {len(items)} crystals strained by -10 %, fmax {settings.fmax} eV/Å")
    print(f"  machine  : {os.cpu_count()} CPU cores")
    timings, densities = {}, {}
    for workers in (1, 2):
        seconds, results = run(workers, spec, items, settings)
        timings[workers] = seconds
        densities[workers] = {i: Structure.from_dict(r["structure"]).density for i, r in results.items() if r.get("ok")}
        steps = sum(r.get("n_steps", 0) for r in results.values())
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        print(
            f"  {label:9s}: {seconds:6.2f} s, {len(items) / seconds:5.2f} relaxations/s "
            f"({steps} optimiser steps, {len(densities[workers])}/{len(items)} ok)"
        )
    common = densities[1].keys() & densities[2].keys()
    drift = max((abs(densities[1][i] - densities[2][i]) for i in common), default=float("nan"))
    print(
        f"  2 workers vs 1: {timings[1] / timings[2]:.2f}× the relaxations per second (target ≥ 1.6×); "
        f"largest density difference {drift:.2e} g/cm³"
    )


if __name__ == "__main__":
    main()
