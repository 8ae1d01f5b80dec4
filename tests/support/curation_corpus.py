"""Helpers shared by several test modules (moved from curation/test_datasets.py)."""

from __future__ import annotations

import hashlib

import numpy as np
from sqlalchemy import Engine, insert, text

from crossfid.db.models import CurationRun, FrameDecision
from crossfid.ingest.loader import ingest
from crossfid.ingest.records import Bundle, Frame, Material, ReferenceEntry, Task

CATIONS = [3, 11, 12, 13, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 37, 38, 39]


ANIONS = [8, 9]


N_REGULAR = 30


DUPLICATE_CATIONS = [40, 41, 42, 44]  # with Se: compositions no regular material has


def make_trajectory(rng: np.random.Generator, numbers, n_frames: int, lattice=None, frac=None) -> list[Frame]:
    n = len(numbers)
    lattice = np.diag([4.0, 4.2, 4.4]) + rng.normal(0, 0.05, (3, 3)) if lattice is None else lattice
    frac = rng.random((n, 3)) if frac is None else frac
    frames = []
    for step in range(n_frames):
        stress = rng.normal(0, 1.0, (3, 3))
        frames.append(
            Frame(
                ionic_step=step,
                lattice=lattice + rng.normal(0, 0.002, (3, 3)),
                atomic_numbers=np.array(numbers, dtype=np.int16),
                frac_coords=(frac + rng.normal(0, 0.003, frac.shape)) % 1.0,
                energy=float(-5.0 * n + rng.normal(0, 0.1)),
                corrected_energy=float(-5.3 * n + rng.normal(0, 0.1)),
                forces=rng.normal(0, 0.3, (n, 3)),
                stress=stress + stress.T if step % 2 else stress,  # symmetric and general tensors
                magmoms=rng.normal(0, 1.5, n),
                n_electronic_steps=int(rng.integers(5, 40)),
                scf_converged=True,
            )
        )
    return frames


def make_bundle(material_id: str, numbers, frames: list[Frame], *, static: bool, r2scan: bool, ref_structure: bool):
    tasks = [Task(external_id=f"task-{material_id}", fidelity="GGA", run_type="PBE", task_type="relax", frames=frames)]
    last = frames[-1]
    if static:  # a static run on the relaxed geometry
        rng = np.random.default_rng(int(material_id.split("-")[1]))
        single = Frame(
            ionic_step=0,
            lattice=last.lattice.copy(),
            atomic_numbers=last.atomic_numbers.copy(),
            frac_coords=last.frac_coords.copy(),
            energy=last.energy + 0.01,
            corrected_energy=last.corrected_energy + 0.01,
            forces=rng.normal(0, 0.01, last.forces.shape),
            stress=rng.normal(0, 0.1, (3, 3)),
            magmoms=None,
        )
        tasks.append(Task(f"static-{material_id}", "GGA", "PBE", "static", [single]))
    if r2scan:
        rng = np.random.default_rng(7)
        tasks.append(Task(f"r2-{material_id}", "r2SCAN", "r2SCAN", "relax", make_trajectory(rng, numbers, 2)))
    reference = ReferenceEntry(
        fidelity="GGA",
        energy_per_atom=last.energy / len(numbers),
        structure=last.to_structure().as_dict() if ref_structure else None,
    )
    material = Material.from_atomic_numbers(material_id, numbers)
    return Bundle(material=material, location=material_id, tasks=tasks, references=[reference])


def corpus() -> list[Bundle]:
    """30 materials of distinct compositions and 4 pairs of the same structure under two ids."""
    bundles = []
    for i in range(N_REGULAR):
        rng = np.random.default_rng(1000 + i)
        numbers = [CATIONS[i % 20], ANIONS[i // 20]] * 2
        frames = make_trajectory(rng, numbers, n_frames=3 + i % 4)
        bundles.append(
            make_bundle(f"mp-{100 + i}", numbers, frames, static=i % 3 == 0, r2scan=i % 4 == 0, ref_structure=False)
        )
    for k, cation in enumerate(DUPLICATE_CATIONS):
        rng = np.random.default_rng(5000 + k)
        numbers = [cation, 34] * 2
        lattice = np.diag([4.5, 4.6, 4.7]) + rng.normal(0, 0.05, (3, 3))
        frac = rng.random((4, 3))
        first = make_trajectory(rng, numbers, 4, lattice, frac)
        second = make_trajectory(rng, numbers, 3, lattice, (frac + rng.normal(0, 0.003, frac.shape)) % 1.0)
        bundles.append(make_bundle(f"mp-{900 + k}", numbers, first, static=k == 1, r2scan=False, ref_structure=k == 0))
        bundles.append(make_bundle(f"mp-{950 + k}", numbers, second, static=False, r2scan=False, ref_structure=k == 0))
    return bundles


DUPLICATE_PAIRS = [(f"mp-{900 + k}", f"mp-{950 + k}") for k in range(len(DUPLICATE_CATIONS))]


def rejected(material: str, task: str, step: int) -> bool:
    """The frames the test curation run rejects (by content, so the same in every database)."""
    return step == 0 and task.startswith("task-") and int(material.split("-")[1]) % 5 == 0


def record_frames(bundles: list[Bundle]) -> dict[str, tuple[str, str, Frame, str]]:
    """content hash → (material, task, frame, fidelity) of the Python records."""
    return {
        frame.content_hash(): (b.material.external_id, task.external_id, frame, task.fidelity)
        for b in bundles
        for task in b.tasks
        for frame in task.frames
    }


def load(engine: Engine, bundles: list[Bundle]) -> None:
    ingest(engine, "synthetic", "test", bundles)


def curate(engine: Engine, status: str = "completed", reject_all: bool = False) -> int:
    """A curation run over GGA and r2SCAN with one decision per frame (written directly)."""
    with engine.begin() as conn:
        run_id = conn.scalar(
            insert(CurationRun)
            .values(
                fidelities=["GGA", "r2SCAN"],
                config={"max_force": 100.0},
                config_hash=hashlib.sha256(b"test-config").hexdigest(),
                crossfid_version="test",
                status=status,
            )
            .returning(CurationRun.id)
        )
        rows = conn.execute(
            text(
                "SELECT f.id, t.material_id, m.external_id, t.external_id, f.ionic_step FROM frames f "
                "JOIN tasks t ON t.id = f.task_id JOIN materials m ON m.id = t.material_id"
            )
        ).all()
        decisions = []
        for frame_id, material_id, material, task, step in rows:
            ok = not reject_all and not rejected(material, task, step)
            decisions.append(
                {
                    "run_id": run_id,
                    "frame_id": frame_id,
                    "material_id": material_id,
                    "accepted": ok,
                    "rule": "accepted" if ok else "test_rule",
                    "message": "" if ok else "rejected by the test",
                }
            )
        conn.execute(insert(FrameDecision), decisions)
    return run_id
