"""AtomRef fitting: crossfid's SVD least squares vs chgnet's ``AtomRef.fit`` on the same frames.

chgnet builds the composition matrix frame by frame in torch and solves the normal
equations with a pseudo-inverse, ``pinv(AᵀA) Aᵀ y`` in float32; crossfid builds the
matrix with one numpy bincount per frame and solves ``A x = y`` by SVD
(:func:`numpy.linalg.lstsq`) in float64. Both get atomic numbers only (chgnet is
given objects with an ``atomic_number`` tensor, which is what it reads from a graph),
so the timing compares the fits, not structure parsing.

Prints seconds of both, their ratio, and the largest error of each against the known
per-element energies of the synthetic data (energies = c·E_true + 2 meV/atom noise).

    .venv/bin/python perf/atomref.py [--frames 50000] [--elements 40] [--seed 0]

No wall-clock assertion: timings vary run to run.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np


def synthetic(n_frames: int, n_elements: int, seed: int):
    rng = np.random.default_rng(seed)
    elements = rng.choice(np.arange(1, 95), size=n_elements, replace=False)
    truth = np.zeros(94)
    truth[elements - 1] = rng.uniform(-12.0, -0.5, n_elements)
    numbers = []
    for _ in range(n_frames):
        k = int(rng.integers(1, 5))
        chosen = rng.choice(elements, size=k, replace=False)
        numbers.append(np.concatenate([chosen, rng.choice(chosen, size=int(rng.integers(0, 12)))]))
    return numbers, truth, elements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--elements", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from chgnet.model.composition_model import AtomRef

    from crossfid.referencing.atomref import fit_atomref, reference_energies
    from crossfid.referencing.composition import composition_matrix

    numbers, truth, elements = synthetic(args.frames, args.elements, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    energy = reference_energies(composition_matrix(numbers), truth) + rng.normal(0, 0.002, len(numbers))
    graphs = [SimpleNamespace(atomic_number=torch.tensor(z, dtype=torch.int32)) for z in numbers]

    t0 = time.perf_counter()
    theirs = AtomRef()
    theirs.fit(graphs, energy)
    t_chgnet = time.perf_counter() - t0
    chgnet_values = theirs.fc.weight.detach().double().numpy().ravel()

    t0 = time.perf_counter()
    ours = fit_atomref(composition_matrix(numbers), energy)
    t_crossfid = time.perf_counter() - t0

    cols = elements - 1
    err_chgnet = np.abs(chgnet_values[cols] - truth[cols]).max()
    err_crossfid = np.abs(ours.values[cols] - truth[cols]).max()
    print(f"frames {args.frames:,}, elements {args.elements}")
    print(f"chgnet AtomRef.fit (pinv of normal equations): {t_chgnet:8.3f} s, max error {err_chgnet:.2e} eV")
    print(f"crossfid fit_atomref (SVD lstsq):              {t_crossfid:8.3f} s, max error {err_crossfid:.2e} eV")
    print(f"speed-up: {t_chgnet / t_crossfid:.1f}x; fit MAE {1000 * ours.mae:.2f} meV/atom (noise 2 meV/atom RMS)")


if __name__ == "__main__":
    main()
