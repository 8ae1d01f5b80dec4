"""Labelling throughput of the demo generator: SevenNet-MF-0 single points, 1 vs 2 Dask workers.

    python perf/demo_labelling.py [--materials 3] [--seed 0] [--max-steps 10]

Relaxes a small corpus once with the CHGNet labeller (``DemoSettings(labeller="chgnet")``,
in a temporary folder), then re-labels every frame of it as the generator does with the
default labeller (:func:`crossfid.demo.generator.relabel_frames`, SevenNet-MF-0: PBE
modality for GGA/GGA+U, R2SCAN for r2SCAN), one Dask task per task, on a LocalCluster
with 1 and with 2 worker processes (one thread each). Models are loaded on every worker
before the clock starts (cluster start-up and model loading excluded). Prints structures
per second for both, their ratio, and whether both runs gave identical labels.

Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from crossfid.demo import generator as demo
from crossfid.potentials.base import ModelSpec, load_potential, potential_class


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name, family="SevenNet")


def jobs(path: Path) -> list[tuple[str, list[int], list[dict[str, Any]]]]:
    """(labelling model, atomic numbers, frames) of every task of a corpus file."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            document = json.loads(line)
            if document.get("kind") != "task_group":
                continue
            for task in document["tasks"]:
                name = demo.LABEL_MODELS["sevennet"][task["fidelity"]]
                out.append((name, task["atomic_numbers"], task["frames"]))
    return out


def _warm_up() -> None:
    potential_class("SevenNet").setup_worker()
    for name in set(demo.LABEL_MODELS["sevennet"].values()):
        load_potential(_spec(name))


def _label(name: str, numbers: list[int], frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    potential_class("SevenNet").setup_worker()
    return demo.relabel_frames(load_potential(_spec(name)), numbers, frames)


def dask_run(work: list, workers: int) -> tuple[float, list]:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_up)  # imports and model loading outside the timing
        start = time.perf_counter()
        futures = [client.submit(_label, *job, pure=False) for job in work]
        labelled = client.gather(futures)
        return time.perf_counter() - start, labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crossfid-perf-labelling-") as folder:
        settings = demo.DemoSettings(labeller="chgnet", max_steps=args.max_steps)
        path = Path(folder) / "corpus.jsonl.gz"
        print(f"relaxing a corpus of {args.materials} materials with CHGNet (elemental phases included) ...")
        manifest = demo.generate_demo_corpus(path, n_materials=args.materials, seed=args.seed, settings=settings)
        work = jobs(path)
        n_frames = sum(len(frames) for _, _, frames in work)
        print(f"{manifest.n_materials} materials, {len(work)} tasks, {n_frames} frames to label")

        rates = {}
        results = {}
        for workers in (1, 2):
            seconds, results[workers] = dask_run(work, workers)
            rates[workers] = n_frames / seconds
            print(f"{workers} worker(s): {n_frames} structures in {seconds:.1f} s = {rates[workers]:.2f} structures/s")
        print(f"speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x")
        print(f"identical labels with 1 and 2 workers: {results[1] == results[2]}")


if __name__ == "__main__":
    main()
