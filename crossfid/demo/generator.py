"""The demo corpus generator: a seeded multi-fidelity corpus so that everything runs offline.

What it is
    Small crystals (≤ 12 atoms) from :data:`crossfid.structures.prototypes.CATALOGUE` are
    perturbed (rattle ~0.05 Å, strain ±3 %) and relaxed with the two CHGNet models
    shipped in the ``chgnet`` wheel (through :mod:`crossfid.potentials`), every ionic
    step recorded: ``chgnet-0.3.0`` (``CHGNet.load()``, MPtrj) for GGA / GGA+U and
    ``chgnet-r2scan`` (``CHGNet.load(model_name="r2scan")``, transfer-learned) for r2SCAN.
    A material is GGA+U when it is an oxide or fluoride of Co, Cr, Fe, Mn, Mo, Ni, V or W
    (Materials Project's rule) and the task records MP's U values in ``Task.hubbards`` and
    as an INCAR (``LDAU``, ``LDAUU``, ...); otherwise GGA.

Labels (``DemoSettings.labeller``)
    ``"sevennet"`` (default): every recorded frame is then re-labelled as a single point
    (energy, forces, stress; cell and coordinates kept exactly) by SevenNet-MF-0 from the
    ``sevenn`` wheel (:mod:`crossfid.potentials.sevennet`): its ``PBE`` modality (trained on
    MPtrj, ``sevennet-mf-0-pbe``) for GGA / GGA+U, its ``R2SCAN`` modality (MP r2SCAN data,
    ``sevennet-mf-0-r2scan``) for r2SCAN; the injected static, high-energy and
    near-duplicate frames are its single points too. So the labeller is not one of the
    CHGNet models the leaderboard benchmarks (a model labelling its own test set would have
    zero error by construction). SevenNet predicts no magnetic moments: ``magmoms`` is
    None on every frame. About 0.07 s per ≤ 12-atom frame on one CPU thread.
    ``"chgnet"``: the relaxing CHGNet models' own labels (with magmoms), no second model:
    cheaper (no sevenn import or single points), for tests that only need some corpus.

    **The labels come from a surrogate model, not from DFT.** Every task says so:
    ``code`` (``"SevenNet-surrogate"`` / ``"CHGNet-surrogate"``), ``code_version`` (the
    labeller's package version), ``run_type`` (e.g. ``"r2SCAN (SevenNet-MF-0 surrogate)"``),
    ``input_parameters["label_source"]`` (text) and, machine-readable,
    ``input_parameters["label_model"]`` / ``["relax_model"]`` (crossfid model names), also
    in each document's ``provenance`` and, per fidelity, in the header (``label_models``,
    ``relax_models``).

Elemental phases (``DemoSettings.elemental_phases``, on by default)
    For every element of the chosen materials the corpus also holds that element's
    ground-state elemental phase (:data:`crossfid.structures.prototypes.ELEMENTAL_PHASES`),
    at GGA (never GGA+U, as MP) and r2SCAN, relaxed and labelled by the same models,
    so that formation energies and hulls have true elemental reference entries. An
    elemental material already chosen from the catalogue serves itself (and keeps both
    fidelities); the others get the id ``demo-el-<symbol>``. They are ordinary materials
    (tasks, flaws, reference entry). Demo approximations: MP's molecular solids (O2, N2,
    F2, Cl2, H2, Br2, I2) are one dimer in a 10 Å cubic box, α-S one S8 ring in that box
    (both relaxed at fixed cell), α-Mn is fcc Mn; each document's
    ``provenance["elemental_phase"]`` says which.

The file (format: :mod:`crossfid.ingest.demo`, which reads it back) is written with
floats at full precision (``repr``), keys sorted, no timestamps: the same seed and
settings give a byte-identical file (on the same platform / torch build), with and
without Dask.

Injected flaws (known, seeded rates; see :class:`FlawRates`)
    ``final_energy_mismatch``: an extra relax task whose frames are the relaxation
    shifted up by 30-100 meV/atom, so its last frame misses the reference by more
    than 20 meV/atom. ``scf_unconverged``: ``n_electronic_steps == NELM`` and
    ``scf_converged = False``. ``high_energy``: a strongly compressed first frame
    more than 1 eV/atom above the relaxed energy. ``near_duplicate``: a frame
    repeated with ≤ 1e-4 Å displacements (labels re-predicted, ≤ 1 meV/atom apart).
    ``missing_forces``: ``forces = None``. Flaws are never put on the reference
    (final) frame of the relax task. The manifest counts injected flaws only: FIRE
    itself occasionally takes a step < 1e-4 Å (after a velocity reset), so a corpus
    also holds a few natural near-duplicates (2 in the default corpus), as MPtrj did.

Progress: ``generate_demo_corpus(progress=...)`` counts materials; a material is done when
all its task groups are relaxed *and* labelled, so the labelling time is inside each step.

Units (as :mod:`crossfid.ingest.records`): energies eV total (uncorrected), forces
eV/Å, stress GPa tensile-positive (ASE sign), magmoms μB (None when the labeller predicts none).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.ingest.demo import FORMAT, FORMAT_VERSION
from crossfid.potentials.base import ModelSpec, Potential, load_potential, potential_class
from crossfid.potentials.chgnet import chgnet_version as _chgnet_version
from crossfid.potentials.sevennet import sevenn_version
from crossfid.runtime.paths import DataDirs
from crossfid.structures.prototypes import BY_FORMULA, CATALOGUE, ELEMENTAL_PHASES, Prototype, build_prototype

log = logging.getLogger(__name__)

#: the generator's name recorded in every corpus (its module's name when format 1 was defined; kept so that
#: corpora stay byte-identical)
GENERATOR = "crossfid.ingest.demo"

#: fidelities the demo source can produce (vocabulary names)
DEMO_FIDELITIES: tuple[str, ...] = ("GGA", "GGA+U", "r2SCAN")

FLAW_KINDS: tuple[str, ...] = (
    "final_energy_mismatch",
    "scf_unconverged",
    "high_energy",
    "near_duplicate",
    "missing_forces",
)

#: Electronic step limit written into each task's INCAR
NELM = {"GGA": 100, "GGA+U": 100, "r2SCAN": 200}

#: the shipped CHGNet model relaxing each fidelity (a crossfid.potentials name)
_MODEL_NAMES = {"GGA": "chgnet-0.3.0", "GGA+U": "chgnet-0.3.0", "r2SCAN": "chgnet-r2scan"}
#: DemoSettings.labeller → the shipped model labelling each fidelity
LABEL_MODELS: dict[str, dict[str, str]] = {
    "sevennet": {"GGA": "sevennet-mf-0-pbe", "GGA+U": "sevennet-mf-0-pbe", "r2SCAN": "sevennet-mf-0-r2scan"},
    "chgnet": _MODEL_NAMES,
}
#: family of each model named above
_FAMILIES = {
    "chgnet-0.3.0": "CHGNet",
    "chgnet-r2scan": "CHGNet",
    **dict.fromkeys(LABEL_MODELS["sevennet"].values(), "SevenNet"),
}
_MODEL_LABELS = {
    "chgnet-0.3.0": "CHGNet 0.3.0 (MPtrj)",
    "chgnet-r2scan": "CHGNet r2scan (MP-r2SCAN, transfer-learned, method 4)",
    "sevennet-mf-0-pbe": "SevenNet-MF-0, PBE modality (MPtrj)",
    "sevennet-mf-0-r2scan": "SevenNet-MF-0, R2SCAN modality (MP r2SCAN)",
}
#: the code named in each task (and the surrogate named in its run type), by labeller
_CODES = {"sevennet": ("SevenNet-surrogate", "SevenNet-MF-0"), "chgnet": ("CHGNet-surrogate", "CHGNet")}
_RUN_TYPES = {"GGA": "PBE", "GGA+U": "PBE+U", "r2SCAN": "r2SCAN"}
_SLUGS = {"GGA": "gga", "GGA+U": "ggau", "r2SCAN": "r2scan"}
_GROUP_CODES = {"low": 1, "r2SCAN": 2}

#: every prototype a material spec may name, by formula
_PROTOTYPES: dict[str, Prototype] = BY_FORMULA | {proto.formula: proto for proto in ELEMENTAL_PHASES.values()}
#: an added elemental phase's spec index is this plus its atomic number (stable whatever the other materials)
_ELEMENTAL_INDEX = 1000


# --------------------------------------------------------------------------- settings and manifest


@dataclass(frozen=True)
class FlawRates:
    """Probabilities of the injected flaws.

    ``final_energy_mismatch`` and ``high_energy`` are drawn once per task group
    (material × fidelity); the others once per eligible relax frame (every frame of
    the main relax task except the final, reference frame and an injected
    high-energy frame). A frame gets at most one flaw.
    """

    final_energy_mismatch: float = 0.15
    high_energy: float = 0.2
    scf_unconverged: float = 0.04
    missing_forces: float = 0.03
    near_duplicate: float = 0.04


@dataclass(frozen=True)
class DemoSettings:
    """How the corpus is generated (all recorded in the file header)."""

    fmax: float = 0.05  # eV/Å, FIRE with FrechetCellFilter
    max_steps: int = 40  # ionic steps per relaxation (≤ max_steps + 1 frames)
    rattle: float = 0.05  # Å, RMS displacement of the starting structure
    strain: float = 0.03  # maximum |normal strain| of the starting cell (shear ≤ strain / 3)
    static_rate: float = 0.4  # probability of a static task per task group
    single_fidelity_fraction: float = 0.1  # fraction of materials with only one fidelity group
    flaws: FlawRates = field(default_factory=FlawRates)
    elemental_phases: bool = True  # add each element's ground-state elemental phase (its reference state)
    labeller: str = "sevennet"  # key of LABEL_MODELS: "sevennet" (SevenNet-MF-0) or "chgnet" (the relaxing models)


@dataclass
class DemoManifest:
    """What a demo corpus file contains."""

    path: Path
    seed: int
    n_materials: int  # all materials, elemental phases included
    n_documents: int  # task groups (lines after the header)
    n_tasks: int
    n_frames: int
    n_references: int
    tasks_by_fidelity: dict[str, int]
    flaws: dict[str, int]  # kind → count
    chgnet_version: str
    format_version: int = FORMAT_VERSION
    fidelities: tuple[str, ...] = DEMO_FIDELITIES
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None  # wall time of the generation (None when read back from a file)
    n_elemental: int = 0  # single-element materials (elemental reference phases) among n_materials
    label_models: dict[str, str] = field(default_factory=dict)  # fidelity → crossfid name of the labelling model


def default_corpus_path(home: Path, n_materials: int = 24, seed: int = 0) -> Path:
    """Where ``make demo`` keeps the corpus of this size and seed (reused when present)."""
    return DataDirs(Path(home)).demo / f"demo-v{FORMAT_VERSION}-n{int(n_materials)}-seed{int(seed)}.jsonl.gz"


# --------------------------------------------------------------------------- labelling with the model


def _frame_dict(lattice, frac_coords, energy, forces, stress, magmoms) -> dict[str, Any]:
    """A frame's JSON; ``magmoms`` None when the model predicts none (NaN)."""
    moments = np.asarray(magmoms, dtype=float).reshape(-1)
    return {
        "lattice": np.asarray(lattice, dtype=float).tolist(),
        "frac_coords": np.asarray(frac_coords, dtype=float).tolist(),
        "energy": float(energy),
        "forces": np.asarray(forces, dtype=float).tolist(),
        "stress": np.asarray(stress, dtype=float).tolist(),
        "magmoms": moments.tolist() if np.isfinite(moments).all() else None,
    }


def predict_frame(potential: Potential, structure) -> dict[str, Any]:
    """Single-point labels of a structure: energy (total eV), forces, stress (3×3 GPa, tensile +), magmoms or None."""
    (prediction,) = potential.predict([structure])
    return _frame_dict(
        structure.lattice.matrix,
        structure.frac_coords,
        prediction.energy * len(structure),  # the model is intensive: eV/atom
        prediction.forces,
        prediction.stress,
        prediction.magmoms,
    )


def relax_frames(
    potential: Potential, structure, *, fmax: float, steps: int, relax_cell: bool = True
) -> list[dict[str, Any]]:
    """Relax (FIRE + FrechetCellFilter, :meth:`~crossfid.potentials.base.Potential.relax`); every ionic step once.

    ``relax_cell=False`` keeps the cell (a molecule in a box). Energies total eV, stress a 3×3
    tensor in GPa (tensile positive), fractional coordinates.
    """
    relaxation = potential.relax(structure, fmax=fmax, steps=steps, relax_cell=relax_cell)
    frames = []
    for i in range(len(relaxation)):
        cell = relaxation.cells[i]
        frac = np.linalg.solve(cell.T, relaxation.positions[i].T).T
        frames.append(
            _frame_dict(
                cell,
                frac,
                relaxation.energies[i],
                relaxation.forces[i],
                relaxation.stresses[i],
                relaxation.magmoms[i],
            )
        )
    return frames


def relabel_frames(potential: Potential, atomic_numbers: Sequence[int], frames: Iterable[dict[str, Any]]):
    """The frames with their labels replaced by ``potential``'s single points of the same structures (cell and
    coordinates kept exactly); energies total eV, stress 3×3 GPa, magmoms None when the model predicts none."""
    out = []
    for frame in frames:
        labels = predict_frame(potential, _structure(atomic_numbers, frame))
        out.append({**frame, **{key: labels[key] for key in ("energy", "forces", "stress", "magmoms")}})
    return out


def _structure(atomic_numbers: Sequence[int], frame: dict[str, Any]):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(frame["lattice"]), [int(z) for z in atomic_numbers], frame["frac_coords"])


def _perturbed(structure, rng: np.random.Generator, *, rattle: float, strain: float):
    """Strain the cell (normal ±strain, shear ±strain/3) and rattle the atoms (RMS ``rattle`` Å)."""
    from pymatgen.core import Lattice, Structure

    eps = np.diag(rng.uniform(-strain, strain, 3))
    shear = rng.uniform(-strain / 3, strain / 3, 3)
    eps[0, 1] = eps[1, 0] = shear[0]
    eps[0, 2] = eps[2, 0] = shear[1]
    eps[1, 2] = eps[2, 1] = shear[2]
    lattice = structure.lattice.matrix @ (np.eye(3) + eps)
    cart = structure.frac_coords @ lattice + rng.normal(0.0, rattle / np.sqrt(3.0), (len(structure), 3))
    return Structure(Lattice(lattice), structure.species, cart, coords_are_cartesian=True)


# --------------------------------------------------------------------------- one material (the Dask task)


@dataclass(frozen=True)
class _MaterialSpec:
    index: int  # 1-based; _ELEMENTAL_INDEX + Z for an added elemental phase
    material_id: str
    formula: str  # key of _PROTOTYPES
    groups: tuple[str, ...]  # fidelities of the task groups to generate
    seed: int


def _incar(
    fidelity: str,
    task_type: str,
    species: Sequence[str],
    hubbards: dict[str, float] | None,
    label_model: str,
    relax_model: str,
    relax_cell: bool = True,
):
    incar: dict[str, Any] = {
        "ENCUT": 680 if fidelity == "r2SCAN" else 520,
        "EDIFF": 1e-5 if fidelity == "r2SCAN" else 5e-5,
        "ISPIN": 2,
        "ISMEAR": -5 if task_type == "static" else 0,
        "NELM": NELM[fidelity],
        "NSW": 0 if task_type == "static" else 99,
        "IBRION": -1 if task_type == "static" else 2,
        "ISIF": 3 if relax_cell else 2,
        "LDAU": bool(hubbards),
    }
    if fidelity == "r2SCAN":
        incar["METAGGA"] = "R2SCAN"
    else:
        incar["GGA"] = "PE"
    if hubbards:
        incar["LDAUTYPE"] = 2
        incar["LDAUL"] = [2 if el in hubbards else 0 for el in species]
        incar["LDAUU"] = [hubbards.get(el, 0.0) for el in species]
        incar["LDAUJ"] = [0.0 for _ in species]
        incar["LMAXMIX"] = 4
    # not INCAR tags: how the labels were really made
    incar["species"] = list(species)  # POSCAR species order, for LDAUL/LDAUU/LDAUJ
    incar["label_source"] = _label_source(label_model, relax_model)
    incar["surrogate_model"] = _MODEL_LABELS[label_model]
    incar["label_model"] = label_model  # crossfid name of the labelling model (machine-readable)
    incar["relax_model"] = relax_model  # crossfid name of the model whose relaxation gave the geometries
    if task_type == "relax":
        incar["optimizer"] = (
            "ASE FIRE + FrechetCellFilter (chgnet StructOptimizer)" if relax_cell else "ASE FIRE, fixed cell"
        )
    return incar


def _label_source(label_model: str, relax_model: str) -> str:
    text = f"surrogate: {_MODEL_LABELS[label_model]}, not DFT"
    if label_model != relax_model:
        text += f"; geometries relaxed by {_MODEL_LABELS[relax_model]}, every frame re-labelled as a single point"
    return text


def _potential(name: str) -> Potential:
    return load_potential(ModelSpec(name, family=_FAMILIES[name]))


def _electronic_steps(rng: np.random.Generator, n_frames: int) -> list[int]:
    first = int(rng.integers(18, 41))
    return [first] + [int(v) for v in rng.integers(4, 21, max(n_frames - 1, 0))]


def _task_group(
    spec: _MaterialSpec, fidelity: str, ideal, start, settings: DemoSettings, versions: dict[str, str]
) -> dict[str, Any]:
    """One line of the corpus: the material at one fidelity, with flaws injected and recorded.

    CHGNet relaxes; the labeller (``settings.labeller``) labels every recorded frame and every
    single point (static, high-energy and near-duplicate frames).
    """
    rates = settings.flaws
    rng = np.random.default_rng([spec.seed, spec.index, _GROUP_CODES["r2SCAN" if fidelity == "r2SCAN" else "low"]])
    proto = _PROTOTYPES[spec.formula]
    relax_model = _MODEL_NAMES[fidelity]
    model_name = LABEL_MODELS[settings.labeller][fidelity]
    code, surrogate = _CODES[settings.labeller]
    potential = _potential(model_name)
    hubbards = proto.hubbards if fidelity == "GGA+U" else None
    atomic_numbers = [int(site.specie.Z) for site in start]
    species = list(dict.fromkeys(site.specie.symbol for site in start))
    n = len(start)
    slug = _SLUGS[fidelity]
    relax_id = f"{spec.material_id}-{slug}-relax"

    base = relax_frames(
        _potential(relax_model), start, fmax=settings.fmax, steps=settings.max_steps, relax_cell=not proto.molecular
    )
    if model_name != relax_model:
        base = relabel_frames(potential, atomic_numbers, base)
    e_ref = base[-1]["energy"] / n
    nelm = NELM[fidelity]
    for frame, steps in zip(base, _electronic_steps(rng, len(base)), strict=True):
        frame["n_electronic_steps"] = steps
        frame["scf_converged"] = True

    # decisions per group, always drawn in the same order
    want_static = rng.random() < settings.static_rate
    want_mismatch = rng.random() < rates.final_energy_mismatch
    want_high = rng.random() < rates.high_energy
    mismatch_shift = float(rng.uniform(0.03, 0.10))

    flaws: list[dict[str, Any]] = []
    # (frame, tag): tag "base" for relaxation frames, or the flaw kind of an injected frame
    frames: list[tuple[dict[str, Any], str, int | None]] = []

    if want_high:
        for scale in (0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5):
            distorted = start.copy()
            distorted.scale_lattice(start.volume * scale**3)
            high = predict_frame(potential, distorted)
            if high["energy"] / n - e_ref > 1.2:
                high["n_electronic_steps"] = int(rng.integers(25, 61))
                high["scf_converged"] = True
                frames.append((high, "high_energy", None))
                break

    for i, frame in enumerate(base):
        frame = dict(frame)
        last = i == len(base) - 1
        u, v = rng.random(), rng.random()
        kind = None
        if not last:
            if u < rates.scf_unconverged:
                kind = "scf_unconverged"
                frame["n_electronic_steps"] = nelm
                frame["scf_converged"] = False
            elif u < rates.scf_unconverged + rates.missing_forces:
                kind = "missing_forces"
                frame["forces"] = None
        frames.append((frame, kind or "base", None))
        if not last and kind is None and v < rates.near_duplicate:
            shift = np.clip(rng.normal(0.0, 2e-5, (n, 3)), -5e-5, 5e-5)
            moved = dict(frame)
            lattice = np.asarray(frame["lattice"])
            moved["frac_coords"] = (np.asarray(frame["frac_coords"]) + np.linalg.solve(lattice.T, shift.T).T).tolist()
            duplicate = predict_frame(potential, _structure(atomic_numbers, moved))
            if abs(duplicate["energy"] - frame["energy"]) / n <= 1e-3:
                duplicate["n_electronic_steps"] = int(rng.integers(3, 9))
                duplicate["scf_converged"] = True
                frames.append((duplicate, "near_duplicate", len(frames) - 1))

    relax_frames_out = []
    for step, (frame, tag, origin) in enumerate(frames):
        relax_frames_out.append({"ionic_step": step, **frame})
        if tag == "base":
            continue
        record: dict[str, Any] = {"kind": tag, "task_id": relax_id, "ionic_step": step}
        if tag == "high_energy":
            record["delta_e_per_atom"] = frame["energy"] / n - e_ref
        elif tag == "near_duplicate":
            original = frames[origin][0]
            displacement = (np.asarray(frame["frac_coords"]) - np.asarray(original["frac_coords"])) @ np.asarray(
                frame["lattice"]
            )
            record["duplicate_of"] = origin
            record["max_displacement"] = float(np.abs(np.linalg.norm(displacement, axis=1)).max())
            record["delta_e_per_atom"] = (frame["energy"] - original["energy"]) / n
        flaws.append(record)

    def task(task_id: str, task_type: str, task_frames: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "task_type": task_type,
            "fidelity": fidelity,
            "run_type": f"{_RUN_TYPES[fidelity]} ({surrogate} surrogate)",
            "source_run_type": fidelity,
            "hubbards": hubbards,
            "input_parameters": _incar(
                fidelity, task_type, species, hubbards, model_name, relax_model, not proto.molecular
            ),
            "code": code,
            "code_version": versions[settings.labeller],
            "atomic_numbers": atomic_numbers,
            "frames": task_frames,
        }

    tasks = [task(relax_id, "relax", relax_frames_out)]

    if want_static:
        final = base[-1]
        lattice = np.asarray(final["lattice"])
        cart = np.asarray(final["frac_coords"]) @ lattice + rng.normal(0.0, 0.01 / np.sqrt(3.0), (n, 3))
        rattled = _structure(atomic_numbers, {"lattice": lattice, "frac_coords": np.linalg.solve(lattice.T, cart.T).T})
        static = predict_frame(potential, rattled)
        if not -0.005 <= static["energy"] / n - e_ref <= 0.015:
            static = predict_frame(potential, _structure(atomic_numbers, final))
        static.update(ionic_step=0, n_electronic_steps=int(rng.integers(12, 31)), scf_converged=True)
        tasks.append(task(f"{spec.material_id}-{slug}-static", "static", [static]))

    if want_mismatch:
        rerun_id = f"{spec.material_id}-{slug}-relax-2"
        rerun = []
        for step, frame in enumerate(base):
            shifted = {"ionic_step": step, **frame}
            shifted["energy"] = frame["energy"] + mismatch_shift * n
            rerun.append(shifted)
        tasks.append(task(rerun_id, "relax", rerun))
        flaws.append(
            {
                "kind": "final_energy_mismatch",
                "task_id": rerun_id,
                "shift_ev_per_atom": mismatch_shift,
                "delta_e_last_per_atom": rerun[-1]["energy"] / n - e_ref,
            }
        )

    provenance = {
        "generator": GENERATOR,
        "seed": spec.seed,
        "chgnet_version": versions["chgnet"],
        "model": _MODEL_LABELS[model_name],
        "label_model": model_name,
        "relax_model": relax_model,
        "label_source": _label_source(model_name, relax_model),
        "ideal_structure": ideal.as_dict(),
    }
    if settings.labeller == "sevennet":
        provenance["sevenn_version"] = versions["sevennet"]
    if len(proto.elements) == 1:
        (element,) = proto.elements
        provenance["elemental_phase"] = {
            "element": element,
            "prototype": proto.prototype,
            "relax_cell": not proto.molecular,
            "approximation": proto.note or None,
        }
    return {
        "kind": "task_group",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "material_id": spec.material_id,
        "formula": proto.formula,
        "prototype": proto.prototype,
        "fidelity": fidelity,
        "tasks": tasks,
        "reference": {
            "fidelity": fidelity,
            "entry_id": f"{spec.material_id}-{slug}",
            "task_id": relax_id,
            "energy_per_atom": e_ref,
            "n_atoms": n,
            "structure": _structure(atomic_numbers, base[-1]).as_dict(),
        },
        "flaws": flaws,
        "provenance": provenance,
    }


def _material_documents(spec: _MaterialSpec, settings: DemoSettings) -> list[dict[str, Any]]:
    """All task groups of one material, computed on one torch thread (``Potential.single_thread``)."""
    with warnings.catch_warnings():
        # chgnet converts a grad-tracking volume tensor (model.py); harmless, once per process otherwise
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad", category=UserWarning)
        proto = _PROTOTYPES[spec.formula]
        ideal = build_prototype(proto)
        rng = np.random.default_rng([spec.seed, spec.index, 0])
        start = _perturbed(ideal, rng, rattle=settings.rattle, strain=settings.strain)
        versions = _versions(settings.labeller)
        return [_task_group(spec, fidelity, ideal, start, settings, versions) for fidelity in spec.groups]


def _versions(labeller: str) -> dict[str, str]:
    """Package versions of the relaxing model (``chgnet``) and the labeller's (by labeller name)."""
    versions = {"chgnet": _chgnet_version()}
    if labeller == "sevennet":
        versions["sevennet"] = sevenn_version()
    return versions


def _worker_material_documents(spec: _MaterialSpec, settings: DemoSettings) -> list[dict[str, Any]]:
    """The Dask task: the worker process set up once for the potentials (one torch thread, kept), models cached."""
    potential_class().setup_worker()
    if settings.labeller == "sevennet":
        potential_class("SevenNet").filter_warnings()
    return _material_documents(spec, settings)


# --------------------------------------------------------------------------- the corpus


def _choose_materials(n_materials: int, seed: int, fidelities: Sequence[str], settings: DemoSettings):
    wanted = set(fidelities)
    catalogue = [p for p in CATALOGUE if p.low_fidelity in wanted or "r2SCAN" in wanted]
    if not 1 <= n_materials <= len(catalogue):
        raise ValueError(f"n_materials must be between 1 and {len(catalogue)} for fidelities {tuple(fidelities)}")
    rng = np.random.default_rng([seed, 0xDE30])
    with_u = [catalogue[i] for i in rng.permutation(len(catalogue)) if catalogue[i].hubbards]
    without_u = [catalogue[i] for i in rng.permutation(len(catalogue)) if not catalogue[i].hubbards]
    order: list[Prototype] = []
    while with_u or without_u:  # alternate U and non-U materials
        for pool in (with_u, without_u):
            if pool:
                order.append(pool.pop(0))
    chosen = order[:n_materials]
    groups = []
    for proto in chosen:
        g = [proto.low_fidelity] if proto.low_fidelity in wanted else []
        g += ["r2SCAN"] if "r2SCAN" in wanted else []
        groups.append(g)
    # elemental phases of the chosen materials' elements, at GGA (never GGA+U) and r2SCAN
    elemental_groups = [f for f in ("GGA", "r2SCAN") if f in wanted]
    elements = sorted({el for p in chosen for el in p.elements}, key=_atomic_number)
    phases = [ELEMENTAL_PHASES[el] for el in elements] if settings.elemental_phases and elemental_groups else []
    serving = {i for i, p in enumerate(chosen) if p in phases}  # a chosen material that is an elemental phase
    for i in serving:
        groups[i] = list(elemental_groups)
    # a few materials keep only one fidelity group (never the first two, never an elemental reference)
    two = [i for i, g in enumerate(groups) if len(g) == 2 and i >= 2 and i not in serving]
    n_single = min(int(n_materials * settings.single_fidelity_fraction), len(two))
    for i in sorted(rng.choice(two, size=n_single, replace=False).tolist()) if n_single else []:
        groups[i] = [groups[i][int(rng.integers(0, 2))]]
    specs = [
        _MaterialSpec(index=i + 1, material_id=f"demo-{i + 1:04d}", formula=p.formula, groups=tuple(g), seed=seed)
        for i, (p, g) in enumerate(zip(chosen, groups, strict=True))
    ]
    for proto in phases:
        if proto not in chosen:
            element = proto.species[0]
            specs.append(
                _MaterialSpec(
                    index=_ELEMENTAL_INDEX + _atomic_number(element),
                    material_id=f"demo-el-{element}",
                    formula=proto.formula,
                    groups=tuple(elemental_groups),
                    seed=seed,
                )
            )
    return specs


def _atomic_number(symbol: str) -> int:
    from pymatgen.core import Element

    return Element(symbol).Z


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _header(n_materials: int, seed: int, fidelities: Sequence[str], settings: DemoSettings) -> dict[str, Any]:
    return {
        "kind": "header",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "n_materials": n_materials,
        "seed": seed,
        "fidelities": list(fidelities),
        "settings": asdict(settings),
        "chgnet_version": _chgnet_version(),
        **({"sevenn_version": sevenn_version()} if settings.labeller == "sevennet" else {}),
        "models": {fid: _MODEL_LABELS[LABEL_MODELS[settings.labeller][fid]] for fid in fidelities},
        "label_models": {fid: LABEL_MODELS[settings.labeller][fid] for fid in fidelities},
        "relax_models": {fid: _MODEL_NAMES[fid] for fid in fidelities},
        "label_source": _HEADER_LABEL_SOURCES[settings.labeller],
        "units": "energy eV (total, uncorrected), forces eV/Å, stress GPa (tensile positive), magmoms μB",
    }


_HEADER_LABEL_SOURCES = {
    "sevennet": "surrogate: SevenNet-MF-0 (sevenn package; PBE modality for GGA/GGA+U, R2SCAN modality for r2SCAN),"
    " not DFT; geometries from relaxations with the CHGNet models shipped with the chgnet package",
    "chgnet": "surrogate: CHGNet models shipped with the chgnet package, not DFT",
}


def generate_demo_corpus(
    path: Path,
    *,
    n_materials: int = 24,
    seed: int = 0,
    fidelities: Sequence[str] = DEMO_FIDELITIES,
    client: Any | None = None,
    progress: Callable[[int, int], None] | None = None,
    settings: DemoSettings | None = None,
) -> DemoManifest:
    """Generate the demo corpus into ``path`` (gzip JSON lines) and return its manifest.

    ``fidelities``: which task groups to produce. A material's GGA-level group is
    ``GGA+U`` when it is an oxide/fluoride of a U metal, else ``GGA``; it is made
    when that name is listed. ``r2SCAN`` adds the r2SCAN group. Materials that
    would get no group are not chosen.
    ``client``: a ``dask.distributed.Client``; one material per Dask task, models
    loaded once per worker process. The file is identical with and without Dask.
    ``progress(done, total)`` is called as materials finish, relaxed and labelled (``total``: the
    chosen materials plus the elemental phases added for their elements, ``settings.elemental_phases``).
    ``settings.labeller``: ``"sevennet"`` (SevenNet-MF-0 single points) or ``"chgnet"`` (ValueError otherwise).
    The file is written to a temporary name and renamed, so it is either complete or absent.
    """
    settings = settings or DemoSettings()
    if settings.labeller not in LABEL_MODELS:
        raise ValueError(f"demo labeller must be one of {tuple(LABEL_MODELS)}, got {settings.labeller!r}")
    fidelities = tuple(dict.fromkeys(fidelities))
    unknown = [f for f in fidelities if f not in DEMO_FIDELITIES]
    if unknown or not fidelities:
        raise ValueError(f"demo fidelities must be among {DEMO_FIDELITIES}, got {fidelities}")
    path = Path(path)
    started = time.perf_counter()
    specs = _choose_materials(n_materials, seed, fidelities, settings)
    total = len(specs)
    results: dict[int, list[dict[str, Any]]] = {}
    if progress:
        progress(0, total)
    if client is None:
        with potential_class().single_thread():
            for spec in specs:
                results[spec.index] = _material_documents(spec, settings)
                log.info("demo: %s (%s) done", spec.material_id, spec.formula)
                if progress:
                    progress(len(results), total)
    else:
        from distributed import as_completed

        futures = client.map(_worker_material_documents, specs, settings=settings, pure=False)
        index_of = {future.key: spec.index for future, spec in zip(futures, specs, strict=True)}
        for future in as_completed(futures):
            results[index_of[future.key]] = future.result()
            if progress:
                progress(len(results), total)
    documents = [doc for index in sorted(results) for doc in results[index]]

    header = _header(n_materials, seed, fidelities, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for document in [header, *documents]:
                gz.write(_dumps(document).encode() + b"\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    manifest = _manifest(path, header, documents)
    manifest.seconds = time.perf_counter() - started
    return manifest


def _manifest(path: Path, header: dict[str, Any], documents: Iterable[dict[str, Any]]) -> DemoManifest:
    materials: set[str] = set()
    elemental: set[str] = set()
    flaws: Counter[str] = Counter({kind: 0 for kind in FLAW_KINDS})
    by_fidelity: Counter[str] = Counter()
    n_documents = n_tasks = n_frames = n_refs = 0
    for document in documents:
        n_documents += 1
        materials.add(document["material_id"])
        if len({int(z) for task in document["tasks"] for z in task["atomic_numbers"]}) == 1:
            elemental.add(document["material_id"])
        n_refs += 1 if document.get("reference") else 0
        for task in document["tasks"]:
            n_tasks += 1
            n_frames += len(task["frames"])
            by_fidelity[task["fidelity"]] += 1
        flaws.update(flaw["kind"] for flaw in document.get("flaws", []))
    return DemoManifest(
        path=path,
        seed=int(header["seed"]),
        n_materials=len(materials),
        n_documents=n_documents,
        n_tasks=n_tasks,
        n_frames=n_frames,
        n_references=n_refs,
        tasks_by_fidelity=dict(sorted(by_fidelity.items())),
        flaws=dict(flaws),
        chgnet_version=str(header["chgnet_version"]),
        format_version=int(header["format_version"]),
        fidelities=tuple(header["fidelities"]),
        settings=dict(header["settings"]),
        n_elemental=len(elemental),
        label_models=dict(header.get("label_models") or {fid: _MODEL_NAMES[fid] for fid in header["fidelities"]}),
    )


def load_demo_manifest(path: Path) -> DemoManifest:
    """The manifest of an existing corpus file (e.g. to reuse it); raises ValueError if it is not one."""
    path = Path(path)
    header: dict[str, Any] | None = None
    documents = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            document = json.loads(line)
            if number == 1:
                header = document
            elif document.get("kind") == "task_group":
                documents.append(document)
    if not header or header.get("kind") != "header" or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} corpus (no header line)")
    return _manifest(path, header, documents)
