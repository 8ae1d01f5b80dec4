"""Seconds per epoch: crossfid's training loop vs chgnet's own ``StructureData`` + ``Trainer``, same frames, CPU.

Frames: rattled and strained prototype crystals of the demo catalogue (≤ 12 atoms),
labelled with energies, forces, stresses and magmoms predicted by the shipped
r2SCAN model, so both pipelines train on r2SCAN-like labels. Both start from
``CHGNet.load()`` with the same hyperparameters (Huber, 3:1:0.1:1, Adam, cosine
learning rate, batch size), and both train for the same number of epochs:

* chgnet: ``StructureData`` (graphs converted in ``__getitem__``, cached from the
  second epoch by chgnet) and ``Trainer.train``; seconds per epoch from its wall time;
* crossfid: graphs from the on-disk cache (warmed first, as on a second run of
  a split), :func:`crossfid.training.loop.train`; seconds per epoch and the share
  of each epoch spent outside forward/backward/optimiser step.

Prints both, their ratio and the outside share. No wall-clock assertion.

    .venv/bin/python perf/train.py [--frames 96] [--epochs 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def make_frames(n_frames: int, seed: int):
    """(structure, labels) pairs: prototypes perturbed, labelled by the r2SCAN model (eV/atom, eV/Å, GPa, μB)."""
    from crossfid.potentials.base import load_potential
    from crossfid.structures.prototypes import CATALOGUE, build_prototype

    labeller = load_potential("chgnet-r2scan")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_frames):
        structure = build_prototype(CATALOGUE[i % len(CATALOGUE)]).copy()
        structure.apply_strain(rng.uniform(-0.02, 0.02, 3))
        structure.perturb(0.05)
        (p,) = labeller.predict([structure])
        out.append((structure, {"e": p.energy, "f": p.forces, "s": p.stress, "m": p.magmoms}))
    return out


def chgnet_seconds_per_epoch(frames, epochs: int, batch_size: int) -> float:
    from chgnet.data.dataset import StructureData, get_train_val_test_loader
    from chgnet.trainer import Trainer

    from crossfid.potentials.base import load_potential

    data = StructureData(
        structures=[s for s, _ in frames],
        energies=[lab["e"] for _, lab in frames],
        forces=[lab["f"] for _, lab in frames],
        stresses=[-10.0 * np.asarray(lab["s"]) for _, lab in frames],  # StructureData expects VASP kBar
        magmoms=[lab["m"] for _, lab in frames],
    )
    train_loader, val_loader, _ = get_train_val_test_loader(
        data, batch_size=batch_size, train_ratio=0.9, val_ratio=0.1, return_test=True
    )
    trainer = Trainer(
        model=load_potential("chgnet-0.3.0").copy().model,
        targets="efsm",
        energy_loss_ratio=3,
        force_loss_ratio=1,
        stress_loss_ratio=0.1,
        mag_loss_ratio=1,
        optimizer="Adam",
        scheduler="CosLR",
        criterion="Huber",
        epochs=epochs,
        learning_rate=1e-3,
        use_device="cpu",
        print_freq=10_000,
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        trainer.train(train_loader, val_loader, save_dir=tmp, save_test_result=False)
        return (time.perf_counter() - start) / epochs


def crossfid_epochs(frames, epochs: int, batch_size: int):
    import torch

    from crossfid.potentials.base import load_potential
    from crossfid.training.data import LabelledFrame, frame_targets
    from crossfid.training.graph_cache import GraphCache
    from crossfid.training.hyperparameters import Hyperparameters
    from crossfid.training.loop import train
    from crossfid.training.methods import set_up_model

    model = set_up_model("tl-frozen-atomref", load_potential("chgnet-0.3.0"))
    labelled = [
        LabelledFrame(
            frame_id=i,
            content_hash=f"{i:064x}",
            material=f"m{i}",
            lattice=s.lattice.matrix,
            atomic_numbers=np.array(s.atomic_numbers),
            frac_coords=s.frac_coords,
            energy_per_atom=lab["e"],
            forces=np.asarray(lab["f"]),
            stress=np.asarray(lab["s"]),
            magmoms=np.asarray(lab["m"]),
        )
        for i, (s, lab) in enumerate(frames)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        GraphCache(Path(tmp), model.graph_converter).graphs(labelled)  # warm the cache (a first run)
        cache = GraphCache(Path(tmp), model.graph_converter)
        start = time.perf_counter()
        graphs = cache.graphs(labelled)
        load_seconds = time.perf_counter() - start
    items = [(g, frame_targets(f, "efsm")) for g, f in zip(graphs, labelled, strict=True)]
    n_val = max(1, len(items) // 10)
    hp = Hyperparameters(epochs=epochs, batch_size=batch_size)
    results = []
    torch.manual_seed(0)
    train(model, items[n_val:], items[:n_val], hp, on_epoch=lambda result, _state: results.append(result))
    return results, load_seconds, cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    frames = make_frames(args.frames, args.seed)
    theirs = chgnet_seconds_per_epoch(frames, args.epochs, args.batch_size)
    results, load_seconds, cache = crossfid_epochs(frames, args.epochs, args.batch_size)
    ours = sum(r.seconds for r in results) / len(results)
    outside = sum(r.other_seconds for r in results) / sum(r.seconds for r in results)
    print(f"{args.frames} frames, {args.epochs} epochs, batch {args.batch_size}, CPU")
    print(f"chgnet StructureData + Trainer: {theirs:7.2f} s/epoch")
    print(f"crossfid loop, cached graphs:   {ours:7.2f} s/epoch ({cache.hits} graphs loaded in {load_seconds:.2f} s)")
    print(f"ratio chgnet / crossfid: {theirs / ours:.2f}x")
    print(f"time outside forward/backward/step: {100 * outside:.1f}% of a crossfid epoch")


if __name__ == "__main__":
    main()
