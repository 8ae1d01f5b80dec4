"""Synthetic canonical records for loader tests (deterministic, physically shaped)."""

from __future__ import annotations

import numpy as np

from crossfid.ingest.records import Bundle, Frame, Material, RawDocument, ReferenceEntry, Refusal, Task


def frame(rng: np.random.Generator, step: int, n_atoms: int = 4, numbers=(26, 8)) -> Frame:
    atomic_numbers = np.array([numbers[i % len(numbers)] for i in range(n_atoms)], dtype=np.int16)
    return Frame(
        ionic_step=step,
        lattice=np.diag([4.0, 4.2, 4.4]) + rng.normal(0, 0.01, (3, 3)),
        atomic_numbers=atomic_numbers,
        frac_coords=rng.random((n_atoms, 3)),
        energy=float(-6.5 * n_atoms + rng.normal(0, 0.1)),
        corrected_energy=float(-6.9 * n_atoms),
        forces=rng.normal(0, 0.3, (n_atoms, 3)),
        stress=rng.normal(0, 1.0, (3, 3)),
        magmoms=rng.random(n_atoms) * 4,
        n_electronic_steps=int(rng.integers(5, 40)),
        scf_converged=True,
    )


def bundle(i: int, n_frames: int = 3, n_atoms: int = 4, fidelity: str = "GGA+U", seed: int = 0) -> Bundle:
    rng = np.random.default_rng(seed * 100_003 + i)
    frames = [frame(rng, s, n_atoms) for s in range(n_frames)]
    task = Task(
        external_id=f"task-{i}",
        fidelity=fidelity,
        run_type="PBE+U" if fidelity == "GGA+U" else fidelity,
        task_type="relax",
        frames=frames,
        input_parameters={"LDAU": fidelity.endswith("+U"), "NELM": 100, "EDIFF": 1e-5},
        hubbards={"Fe": 5.3, "O": 0.0} if fidelity.endswith("+U") else None,
        code_version="6.4.3",
    )
    material = Material.from_atomic_numbers(f"mp-{1000 + i}", frames[0].atomic_numbers)
    reference = ReferenceEntry(
        fidelity=fidelity,
        energy_per_atom=frames[-1].energy / n_atoms,
        corrected_energy_per_atom=frames[-1].corrected_energy / n_atoms,
        n_atoms=n_atoms,
        task_external_id=task.external_id,
    )
    raw = RawDocument.from_json({"id": i, "frames": [f.energy for f in frames]}, f"synthetic#{i}")
    return Bundle(material=material, location=f"synthetic#{i}", tasks=[task], references=[reference], raw=raw)


def corpus(n: int, **kwargs) -> list[Bundle]:
    return [bundle(i, **kwargs) for i in range(n)]


def refusal(i: int) -> Refusal:
    return Refusal(location=f"synthetic#bad-{i}", reason="malformed JSON", raw_text="{not json")
