"""Rule 7 (deduplication) the plain way vs the fast way on relaxation trajectories.

Two sets (``--source``):

``emt`` (default)
    real relaxations with ASE's EMT potential (FIRE + FrechetCellFilter, as chgnet's
    StructOptimizer), MP style: per material a first relaxation from a rattled
    (0.05 Å) and strained (±3 %) supercell, a second relaxation from its end point with
    a tighter force criterion, a static run of the final structure (its energy is the
    reference entry's ``E_ref``), and an independent relaxation from another start.
    Every ionic step is a frame; energies decrease steadily as in DFT relaxations.
``synthetic``
    analytic trajectories (strain and displacements decaying exponentially) of
    Si / NaCl / SrTiO3 / Fe2O3-like cells, symmetric or rattled. Many late frames are true
    duplicates here, and each needs the one fit call that finds it, so this set's ratio is
    bounded (the script prints the bound).

Runs :func:`curate_material` with ``dedupe="reference"`` and ``dedupe="fast"`` and
prints StructureMatcher fit calls and seconds of both, their ratios, and whether every
decision is identical (exit status 1 if not).

    .venv/bin/python perf/dedupe.py [--source emt|synthetic] [--materials 8] [--frames 40] [--seed 0]

No wall-clock assertion: timings vary run to run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from crossfid.curation.config import CurationConfig
from crossfid.curation.decisions import FrameView
from crossfid.curation.dedupe import DedupeStats
from crossfid.curation.rules import ReferenceView, TaskView, curate_material


@dataclass(frozen=True)
class Prototype:
    name: str
    lattice: np.ndarray
    numbers: tuple[int, ...]
    frac: np.ndarray
    symmetric: bool  # relax keeping symmetry (strain + internal parameter) or from a rattled start


def _prototypes() -> list[Prototype]:
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    diamond = np.vstack([fcc, fcc + 0.25])
    rocksalt = np.vstack([fcc, fcc + [0.5, 0, 0]]) % 1
    perovskite = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    perovskite_2 = np.vstack([perovskite * [0.5, 1, 1], perovskite * [0.5, 1, 1] + [0.5, 0, 0]])
    # a corundum-like 10-atom rhombohedral cell (approximate positions; only its shape and site count matter here)
    x = 0.3553
    u = 0.1053
    fe = [[u, u, u], [-u, -u, -u], [0.5 + u, 0.5 + u, 0.5 + u], [0.5 - u, 0.5 - u, 0.5 - u]]
    o = [
        [x, 0.5 - x, 0.25],
        [0.25, x, 0.5 - x],
        [0.5 - x, 0.25, x],
        [-x, x - 0.5, 0.75],
        [0.75, -x, x - 0.5],
        [x - 0.5, 0.75, -x],
    ]
    alpha = np.radians(55.3)
    a = 5.43
    rhombo = a * np.array(
        [
            [1, 0, 0],
            [np.cos(alpha), np.sin(alpha), 0],
            [
                np.cos(alpha),
                (np.cos(alpha) - np.cos(alpha) ** 2) / np.sin(alpha),
                np.sqrt(1 - 3 * np.cos(alpha) ** 2 + 2 * np.cos(alpha) ** 3) / np.sin(alpha),
            ],
        ]
    )
    rng = np.random.default_rng(1234)
    return [
        Prototype("Si-conv", 5.47 * np.eye(3), (14,) * 8, diamond, True),
        Prototype("Si-rattled", 5.47 * np.eye(3), (14,) * 8, diamond, False),
        Prototype("NaCl", 5.69 * np.eye(3), (11,) * 4 + (17,) * 4, rocksalt, True),
        Prototype("NaCl-rattled", 5.69 * np.eye(3), (11,) * 4 + (17,) * 4, rocksalt, False),
        Prototype(
            "SrTiO3x2",
            np.diag([7.81, 3.905, 3.905]),
            (38, 22, 8, 8, 8) * 2,
            perovskite_2[[0, 5, 1, 6, 2, 7, 3, 8, 4, 9]],
            True,
        ),
        Prototype("SrTiO3-rattled", 3.905 * np.eye(3), (38, 22, 8, 8, 8), perovskite, False),
        Prototype("Fe2O3-like", rhombo, (26,) * 4 + (8,) * 6, np.array(fe + o) % 1, True),
        Prototype(
            "Fe2O3-like-rattled",
            rhombo,
            (26,) * 4 + (8,) * 6,
            (np.array(fe + o) + rng.normal(0, 0.002, (10, 3))) % 1,
            False,
        ),
    ]


def relaxation_material(proto: Prototype, rng: np.random.Generator, n_frames: int, key0: int):
    """(tasks, reference) of one material: relax 1, relax 2, static; energies in eV/atom."""
    n = len(proto.numbers)
    e_ref = -5.0 - rng.random()
    strain = rng.normal(0, 0.03, (3, 3))
    strain = (strain + strain.T) / 2
    if proto.symmetric:
        strain = np.eye(3) * strain.trace() / 3  # symmetry kept: isotropic strain only
        shift = np.zeros((n, 3))
        if proto.name.startswith("Fe2O3"):
            shift = rng.normal(0, 0.01, (1, 3)).repeat(n, axis=0) * np.sign(np.arange(n) % 2 - 0.5)[:, None]
    else:
        shift = rng.normal(0, 0.08, (n, 3)) @ np.linalg.inv(proto.lattice)  # ~0.08 Å rattle
    e0 = 0.05 + 0.25 * rng.random()  # first frame above the relaxed energy
    tau = n_frames / (3 + 2 * rng.random())
    frames_1 = []
    key = key0
    steps = np.arange(n_frames)
    remaining = np.exp(-steps / tau) * (1 + 0.05 * rng.normal(size=n_frames)).clip(0.8, 1.2)
    remaining = np.minimum.accumulate(remaining)
    for step, r in enumerate(remaining):
        noise = 0 if proto.symmetric else rng.normal(0, 0.002 * r, (n, 3)) @ np.linalg.inv(proto.lattice)
        lattice = proto.lattice @ (np.eye(3) + strain * r)
        frac = (proto.frac + shift * r + noise) % 1
        energy = e_ref + e0 * r**2 + 1e-4 * r
        frames_1.append(_frame(key, step, lattice, proto.numbers, frac, energy))
        key += 1
    # relax 2: restarts from the last structure and converges the last bit
    frames_2 = []
    n2 = max(3, n_frames // 5)
    last_r = remaining[-1]
    for step, r in enumerate(np.linspace(last_r, 0, n2)):
        lattice = proto.lattice @ (np.eye(3) + strain * r * 0.5)
        frac = (proto.frac + shift * r * 0.5) % 1
        frames_2.append(_frame(key, step, lattice, proto.numbers, frac, e_ref + e0 * r**2 * 0.2 + 2e-5 * r))
        key += 1
    # a near-duplicate (≤ 1e-4 Å) of a relax-2 frame, as injected in the demo corpus
    source = frames_2[len(frames_2) // 2]
    dup_frac = source.frac_coords + rng.normal(0, 1e-4, (n, 3)) @ np.linalg.inv(source.lattice)
    frames_2.append(_frame(key, n2, source.lattice, proto.numbers, dup_frac % 1, source.energy_per_atom + 3e-4))
    key += 1
    static = [_frame(key, 0, proto.lattice, proto.numbers, proto.frac % 1, e_ref)]
    tasks = [
        TaskView(f"{proto.name}-relax1", "relax", None, 100, tuple(frames_1)),
        TaskView(f"{proto.name}-relax2", "relax", None, 100, tuple(frames_2)),
        TaskView(f"{proto.name}-static", "static", None, 100, tuple(static)),
    ]
    return tasks, ReferenceView(e_ref, hubbards=None)


def _frame(key, step, lattice, numbers, frac, energy_per_atom) -> FrameView:
    n = len(numbers)
    return FrameView.from_arrays(
        key,
        step,
        lattice,
        numbers,
        frac,
        energy_per_atom,
        forces=np.zeros((n, 3)),
        stress=np.zeros((3, 3)),
        n_electronic_steps=20,
        scf_converged=True,
    )


# --------------------------------------------------------------------------- EMT relaxations

#: (name, ASE bulk arguments, supercell repetition, optional substitution: index → element); EMT elements only
EMT_MATERIALS = (
    ("Cu", ("Cu", "fcc"), {"a": 3.61, "cubic": True}, (2, 1, 1), {}),
    ("Al", ("Al", "fcc"), {"a": 4.05, "cubic": True}, (1, 1, 2), {}),
    ("Cu3Au", ("Cu", "fcc"), {"a": 3.75, "cubic": True}, (1, 1, 1), {0: "Au"}),
    ("Ni3Al", ("Ni", "fcc"), {"a": 3.57, "cubic": True}, (2, 1, 1), {0: "Al", 4: "Al"}),
    ("NiAl", ("Ni", "bcc"), {"a": 2.88, "cubic": True}, (2, 2, 1), {0: "Al", 2: "Al", 4: "Al", 6: "Al"}),
    ("Pt", ("Pt", "fcc"), {"a": 3.92, "cubic": True}, (1, 2, 1), {}),
    ("AgPd", ("Ag", "fcc"), {"a": 4.0, "cubic": True}, (1, 1, 1), {0: "Pd", 1: "Pd"}),
    ("Ni", ("Ni", "fcc"), {"a": 3.52}, (2, 2, 2), {}),
)


def _relax(atoms, fmax: float, steps: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Every ionic step of a FIRE + FrechetCellFilter relaxation: (cell, numbers, scaled positions, eV/atom)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    trajectory = []

    def record() -> None:
        energy = atoms.get_potential_energy() / len(atoms)
        trajectory.append((atoms.cell.array.copy(), atoms.numbers.copy(), atoms.get_scaled_positions(), energy))

    optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
    optimizer.attach(record)
    optimizer.run(fmax=fmax, steps=steps)
    return trajectory


def emt_material(index: int, rng: np.random.Generator, n_frames: int, key0: int):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    name, bulk_args, bulk_kwargs, repeat, substitution = EMT_MATERIALS[index % len(EMT_MATERIALS)]

    def start(rattle: float, strain: float):
        atoms = bulk(*bulk_args, **bulk_kwargs) * repeat
        symbols = atoms.get_chemical_symbols()
        for i, element in substitution.items():
            symbols[i] = element
        atoms.set_chemical_symbols(symbols)
        deformation = np.eye(3) + rng.uniform(-strain, strain, (3, 3)) * np.eye(3) + rng.normal(0, strain / 4, (3, 3))
        atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        return atoms

    atoms = start(0.05, 0.03)
    relax1 = _relax(atoms, fmax=0.05, steps=n_frames)
    relax2 = _relax(atoms, fmax=0.01, steps=max(5, n_frames // 2))
    cell, numbers, frac, e_ref = relax2[-1]
    other = _relax(start(0.05, 0.03), fmax=0.05, steps=n_frames)
    key = key0
    tasks = []
    for label, trajectory in (("relax1", relax1), ("relax2", relax2), ("static", [relax2[-1]]), ("relax3", other)):
        frames = []
        for step, (cell_, numbers_, frac_, energy) in enumerate(trajectory):
            frames.append(_frame(key, step, cell_, numbers_, frac_ % 1, energy))
            key += 1
        tasks.append(
            TaskView(f"{name}-{index}-{label}", "static" if label == "static" else "relax", None, 60, tuple(frames))
        )
    return tasks, ReferenceView(e_ref, hubbards=None)


def build_emt_set(n_materials: int, n_frames: int, seed: int):
    rng = np.random.default_rng(seed)
    return [emt_material(i, rng, n_frames, key0=100_000 * (i + 1)) for i in range(n_materials)]


def build_set(n_materials: int, n_frames: int, seed: int):
    rng = np.random.default_rng(seed)
    protos = _prototypes()
    materials = []
    for i in range(n_materials):
        proto = protos[i % len(protos)]
        materials.append(relaxation_material(proto, rng, n_frames, key0=100_000 * (i + 1)))
    return materials


def run(source: str, n_materials: int, n_frames: int, seed: int) -> int:
    start = time.perf_counter()
    builder = build_emt_set if source == "emt" else build_set
    materials = builder(n_materials, n_frames, seed)
    print(f"built the {source} set in {time.perf_counter() - start:.1f} s")
    config = CurationConfig()
    n_frames_total = sum(len(t.frames) for tasks, _ in materials for t in tasks)
    print(f"{len(materials)} materials, {n_frames_total} frames (seed {seed})")
    results = {}
    for method in ("reference", "fast"):
        stats = DedupeStats()
        start = time.perf_counter()
        decisions = [curate_material(tasks, ref, config, dedupe=method, stats=stats) for tasks, ref in materials]
        elapsed = time.perf_counter() - start
        results[method] = (decisions, stats, elapsed)
        counts = Counter(d.rule for ds in decisions for d in ds)
        print(
            f"{method:>9}: fit calls {stats.fit_calls:6d}  skipped {stats.skipped:6d}  "
            f"fit s {stats.fit_seconds:7.2f}  rule-7 s {stats.seconds:7.2f}  total s {elapsed:7.2f}"
        )
        print(f"{'':>9}  decisions {dict(sorted(counts.items()))}")
        if stats.skipped_by:
            print(f"{'':>9}  skipped by {dict(sorted(stats.skipped_by.items()))}")
    (ref_d, ref_s, ref_t), (fast_d, fast_s, fast_t) = results["reference"], results["fast"]
    identical = ref_d == fast_d
    # every duplicate needs one fit call that finds its match: no necessary condition can skip it
    duplicates = sum(d.rule == "duplicate" for ds in ref_d for d in ds)
    print(f"fit-call ratio reference/fast: {ref_s.fit_calls / max(fast_s.fit_calls, 1):.1f}x")
    print(
        f"  (floor: {duplicates} fit calls that find a duplicate; best possible ratio "
        f"{ref_s.fit_calls / max(duplicates, 1):.1f}x)"
    )
    print(f"rule-7 time ratio reference/fast: {ref_s.seconds / max(fast_s.seconds, 1e-9):.1f}x")
    print(f"total time ratio reference/fast: {ref_t / max(fast_t, 1e-9):.1f}x")
    print(f"identical decisions: {identical}")
    return 0 if identical else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("emt", "synthetic"), default="emt")
    parser.add_argument("--materials", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40, help="maximum ionic steps of the first relaxation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run(args.source, args.materials, args.frames, args.seed)


if __name__ == "__main__":
    sys.exit(main())
