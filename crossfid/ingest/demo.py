"""The ``demo`` source: a generated, seeded multi-fidelity corpus so that everything runs offline.

What it is
    Small crystals (≤ 12 atoms) built from common prototypes (rocksalt, zincblende,
    fluorite, rutile, perovskite, ReO3, corundum, wurtzite, bcc/fcc metals) are
    perturbed (rattle ~0.05 Å, strain ±3 %) and relaxed with the two CHGNet models
    shipped in the ``chgnet`` wheel, every ionic step recorded:

    * ``CHGNet.load()`` (v0.3.0, trained on MPtrj) labels the GGA / GGA+U fidelity.
      A material is GGA+U when it is an oxide or fluoride of Co, Cr, Fe, Mn, Mo, Ni,
      V or W (Materials Project's rule) and the task records MP's U values in
      ``Task.hubbards`` and as an INCAR (``LDAU``, ``LDAUU``, ...); otherwise GGA.
    * ``CHGNet.load(model_name="r2scan")`` (the published transfer-learned model)
      labels the r2SCAN fidelity.

    **The labels come from a surrogate model, not from DFT.** Every task says so in
    ``input_parameters["label_source"]``, ``code = "CHGNet-surrogate"`` and its
    ``run_type`` (e.g. ``"PBE+U (CHGNet surrogate)"``).

File format
    A gzip JSON-lines file. Line 1 is a header (``"kind": "header"``: format version,
    seed, settings, chgnet version). Every further line is one *task group*: one
    material at one fidelity group (GGA-or-GGA+U, or r2SCAN) with its tasks, frames,
    reference entry and the flaws injected into it (``"flaws"``). Floats are written
    with full precision (``repr``), keys sorted, no timestamps: the same seed and
    settings give a byte-identical file (on the same platform / torch build).

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

Units (as :mod:`crossfid.ingest.records`): energies eV total (uncorrected), forces
eV/Å, stress GPa tensile-positive (ASE/CHGNet), magmoms μB. Note that chgnet's
``TrajectoryObserver`` records ``atoms.get_stress()``, i.e. ASE Voigt order in
eV/Å³ (the calculator multiplies the model's GPa by ``units.GPa``), so the stored
stress is converted back to a 3×3 GPa tensor here; the observer also records the
final step twice (once by the optimizer, once after ``run``), the repeat is dropped.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.ingest.records import Bundle, Frame, Material, RawDocument, ReferenceEntry, Refusal, Task
from crossfid.ingest.sourceio import (
    Limits,
    compression_of,
    iter_lines,
    json_depth_problem,
    open_decompressed,
    record_size_reason,
    stream_problem,
)

log = logging.getLogger(__name__)

FORMAT = "crossfid-demo"
FORMAT_VERSION = 1

#: fidelities the demo source can produce (vocabulary names)
DEMO_FIDELITIES: tuple[str, ...] = ("GGA", "GGA+U", "r2SCAN")

#: Materials Project's U values (eV, Dudarev), applied to these metals in oxides and fluorides
MP_HUBBARD_U: dict[str, float] = {
    "Co": 3.32,
    "Cr": 3.7,
    "Fe": 5.3,
    "Mn": 3.9,
    "Mo": 4.38,
    "Ni": 6.2,
    "V": 3.25,
    "W": 6.2,
}
U_ANIONS = frozenset({"O", "F"})

FLAW_KINDS: tuple[str, ...] = (
    "final_energy_mismatch",
    "scf_unconverged",
    "high_energy",
    "near_duplicate",
    "missing_forces",
)

#: Electronic step limit written into each task's INCAR
NELM = {"GGA": 100, "GGA+U": 100, "r2SCAN": 200}

_MODEL_NAMES = {"GGA": "0.3.0", "GGA+U": "0.3.0", "r2SCAN": "r2scan"}
_MODEL_LABELS = {
    "0.3.0": "CHGNet 0.3.0 (MPtrj)",
    "r2scan": "CHGNet r2scan (MP-r2SCAN, transfer-learned, method 4)",
}
_RUN_TYPES = {"GGA": "PBE", "GGA+U": "PBE+U", "r2SCAN": "r2SCAN"}
_SLUGS = {"GGA": "gga", "GGA+U": "ggau", "r2SCAN": "r2scan"}
_GROUP_CODES = {"low": 1, "r2SCAN": 2}


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


@dataclass
class DemoManifest:
    """What a demo corpus file contains."""

    path: Path
    seed: int
    n_materials: int
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


def default_corpus_path(home: Path, n_materials: int = 24, seed: int = 0) -> Path:
    """Where ``make demo`` keeps the corpus of this size and seed (reused when present)."""
    return Path(home) / "demo" / f"demo-v{FORMAT_VERSION}-n{int(n_materials)}-seed{int(seed)}.jsonl.gz"


# --------------------------------------------------------------------------- prototypes


@dataclass(frozen=True)
class _Proto:
    formula: str
    prototype: str
    species: tuple[str, ...]
    params: tuple[float, ...]

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(self.species)

    @property
    def hubbards(self) -> dict[str, float] | None:
        """MP's rule: U on the listed metals in oxides and fluorides."""
        if not self.elements & U_ANIONS:
            return None
        u = {el: MP_HUBBARD_U[el] for el in sorted(self.elements) if el in MP_HUBBARD_U}
        return u or None

    @property
    def low_fidelity(self) -> str:
        return "GGA+U" if self.hubbards else "GGA"


def _p(formula: str, prototype: str, species: str, *params: float) -> _Proto:
    return _Proto(formula, prototype, tuple(species.split()), tuple(params))


#: approximate experimental lattice parameters (Å); the relaxation does the rest
CATALOGUE: tuple[_Proto, ...] = (
    # oxides and fluorides of U metals → GGA+U
    _p("FeO", "rocksalt", "Fe O", 4.33),
    _p("MnO", "rocksalt", "Mn O", 4.45),
    _p("CoO", "rocksalt", "Co O", 4.26),
    _p("NiO", "rocksalt", "Ni O", 4.18),
    _p("VO", "rocksalt", "V O", 4.08),
    _p("CrO2", "rutile", "Cr O", 4.42, 2.92, 0.303),
    _p("VO2", "rutile", "V O", 4.55, 2.86, 0.300),
    _p("MnO2", "rutile", "Mn O", 4.40, 2.87, 0.305),
    _p("MoO2", "rutile", "Mo O", 4.86, 2.81, 0.300),
    _p("FeF2", "rutile", "Fe F", 4.70, 3.31, 0.300),
    _p("MnF2", "rutile", "Mn F", 4.87, 3.31, 0.305),
    _p("CoF2", "rutile", "Co F", 4.70, 3.18, 0.306),
    _p("NiF2", "rutile", "Ni F", 4.65, 3.08, 0.302),
    _p("SrFeO3", "perovskite", "Sr Fe O", 3.85),
    _p("SrMnO3", "perovskite", "Sr Mn O", 3.81),
    _p("SrVO3", "perovskite", "Sr V O", 3.84),
    _p("SrCrO3", "perovskite", "Sr Cr O", 3.82),
    _p("KNiF3", "perovskite", "K Ni F", 4.01),
    _p("KMnF3", "perovskite", "K Mn F", 4.19),
    _p("KCoF3", "perovskite", "K Co F", 4.07),
    _p("KFeF3", "perovskite", "K Fe F", 4.12),
    _p("WO3", "ReO3", "W O", 3.77),
    _p("Fe2O3", "corundum", "Fe O", 5.035, 13.75, 0.3553, 0.3059),
    _p("Cr2O3", "corundum", "Cr O", 4.96, 13.59, 0.3475, 0.3056),
    _p("V2O3", "corundum", "V O", 4.95, 14.00, 0.3463, 0.3122),
    # no U: main-group and d0/d10 compounds, metals, and U metals without O/F → GGA
    _p("MgO", "rocksalt", "Mg O", 4.21),
    _p("CaO", "rocksalt", "Ca O", 4.81),
    _p("NaCl", "rocksalt", "Na Cl", 5.64),
    _p("LiF", "rocksalt", "Li F", 4.03),
    _p("KCl", "rocksalt", "K Cl", 6.29),
    _p("MnS", "rocksalt", "Mn S", 5.22),
    _p("CrN", "rocksalt", "Cr N", 4.15),
    _p("Si", "zincblende", "Si Si", 5.43),
    _p("Ge", "zincblende", "Ge Ge", 5.66),
    _p("ZnS", "zincblende", "Zn S", 5.41),
    _p("GaAs", "zincblende", "Ga As", 5.65),
    _p("AlP", "zincblende", "Al P", 5.46),
    _p("Al", "fcc", "Al", 4.05),
    _p("Cu", "fcc", "Cu", 3.61),
    _p("Ag", "fcc", "Ag", 4.09),
    _p("Ni", "fcc", "Ni", 3.52),
    _p("Fe", "bcc", "Fe", 2.87),
    _p("W", "bcc", "W", 3.17),
    _p("Mo", "bcc", "Mo", 3.15),
    _p("Na", "bcc", "Na", 4.23),
    _p("Li", "bcc", "Li", 3.49),
    _p("TiO2", "rutile", "Ti O", 4.59, 2.96, 0.305),
    _p("SnO2", "rutile", "Sn O", 4.74, 3.19, 0.307),
    _p("MgF2", "rutile", "Mg F", 4.62, 3.05, 0.303),
    _p("SrTiO3", "perovskite", "Sr Ti O", 3.905),
    _p("BaTiO3", "perovskite", "Ba Ti O", 4.00),
    _p("KMgF3", "perovskite", "K Mg F", 3.99),
    _p("CaF2", "fluorite", "Ca F", 5.46),
    _p("CeO2", "fluorite", "Ce O", 5.41),
    _p("ZrO2", "fluorite", "Zr O", 5.07),
    _p("Li2O", "antifluorite", "O Li", 4.61),
    _p("Al2O3", "corundum", "Al O", 4.76, 12.99, 0.3520, 0.3060),
    _p("ZnO", "wurtzite", "Zn O", 3.25, 5.21, 0.382),
)
_BY_FORMULA = {proto.formula: proto for proto in CATALOGUE}


_FCC_TRANSLATIONS = ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0))


def _face_centred(a: float, species: Sequence[str], basis: Sequence[Sequence[float]]):
    """Conventional cubic F-centred cell (pymatgen's ``from_spacegroup("Fm-3m")`` takes ~0.6 s per call)."""
    from pymatgen.core import Lattice, Structure

    sites = [(el, (np.asarray(b) + t) % 1.0) for el, b in zip(species, basis, strict=True) for t in _FCC_TRANSLATIONS]
    return Structure(Lattice.cubic(a), [el for el, _ in sites], [xyz for _, xyz in sites])


def build_prototype(proto: _Proto):
    """The ideal (unperturbed) pymatgen ``Structure`` of a catalogue entry (≤ 12 atoms)."""
    from pymatgen.core import Lattice, Structure

    kind, sp, prm = proto.prototype, list(proto.species), proto.params
    if kind == "rocksalt":
        s = _face_centred(prm[0], sp, [[0, 0, 0], [0.5, 0.5, 0.5]])
    elif kind == "zincblende":
        s = Structure.from_spacegroup("F-43m", Lattice.cubic(prm[0]), sp, [[0, 0, 0], [0.25, 0.25, 0.25]])
    elif kind in ("fluorite", "antifluorite"):
        s = _face_centred(prm[0], sp[:1] + sp[1:] * 2, [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]])
    elif kind == "fcc":
        s = _face_centred(prm[0], sp, [[0, 0, 0]])
    elif kind == "bcc":
        s = Structure.from_spacegroup("Im-3m", Lattice.cubic(prm[0]), sp, [[0, 0, 0]])
    elif kind == "rutile":
        a, c, u = prm
        s = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(a, c), sp, [[0, 0, 0], [u, u, 0]])
    elif kind == "perovskite":  # A B X3 with B at the origin
        s = Structure.from_spacegroup("Pm-3m", Lattice.cubic(prm[0]), sp, [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]])
    elif kind == "ReO3":
        s = Structure.from_spacegroup("Pm-3m", Lattice.cubic(prm[0]), sp, [[0, 0, 0], [0.5, 0, 0]])
    elif kind == "corundum":
        a, c, z, x = prm
        conventional = Structure.from_spacegroup("R-3c", Lattice.hexagonal(a, c), sp, [[0, 0, z], [x, 0, 0.25]])
        s = conventional.get_primitive_structure()
    elif kind == "wurtzite":
        a, c, u = prm
        s = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(a, c), sp, [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, u]])
    else:  # pragma: no cover - catalogue typo
        raise ValueError(f"unknown prototype {kind!r}")
    s = s.get_sorted_structure()
    if len(s) > 12:  # pragma: no cover - guarded by a test over the whole catalogue
        raise ValueError(f"{proto.formula} ({kind}) has {len(s)} atoms, more than 12")
    return s


# --------------------------------------------------------------------------- models (one cache per process)

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def load_model(name: str):
    """A shipped CHGNet model ("0.3.0" or "r2scan"), loaded once per process (Dask workers included)."""
    with _MODELS_LOCK:
        model = _MODELS.get(name)
        if model is None:
            from chgnet.model import CHGNet

            with contextlib.redirect_stdout(io.StringIO()):
                model = CHGNet.load(model_name=name, use_device="cpu", verbose=False)
            model.eval()
            _MODELS[name] = model
        return model


def _chgnet_version() -> str:
    import chgnet

    return str(chgnet.__version__)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op torch threads, restoring the previous setting afterwards.

    One thread is used for every prediction, in-process and in Dask workers alike:
    the graphs are tiny (≤ 12 atoms) and one thread measured as fast as two (8
    materials: 24 s with one thread, 27 s with two, on 2 cores), it leaves the other
    core to a second worker, and the same thread count everywhere keeps the
    floating-point results bit-identical with and without Dask.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- labelling with the model


def _frame_dict(lattice, frac_coords, energy, forces, stress, magmoms) -> dict[str, Any]:
    return {
        "lattice": np.asarray(lattice, dtype=float).tolist(),
        "frac_coords": np.asarray(frac_coords, dtype=float).tolist(),
        "energy": float(energy),
        "forces": np.asarray(forces, dtype=float).tolist(),
        "stress": np.asarray(stress, dtype=float).tolist(),
        "magmoms": np.asarray(magmoms, dtype=float).reshape(-1).tolist(),
    }


def predict_frame(model, structure) -> dict[str, Any]:
    """Single-point labels of a structure: energy (total eV), forces, stress (3×3 GPa, tensile +), magmoms."""
    prediction = model.predict_structure(structure, task="efsm")
    n = len(structure)
    return _frame_dict(
        structure.lattice.matrix,
        structure.frac_coords,
        float(prediction["e"]) * n,  # the model is intensive: eV/atom
        prediction["f"],
        prediction["s"],  # already GPa, ASE sign (1/V dE/dε)
        prediction["m"],
    )


def relax_frames(model, structure, *, fmax: float, steps: int) -> list[dict[str, Any]]:
    """Relax with chgnet's ``StructOptimizer`` (FIRE + FrechetCellFilter) and return every ionic step.

    Conversions: the observer's stress is ASE Voigt (xx, yy, zz, yz, xz, xy) in eV/Å³;
    stored as a 3×3 tensor in GPa (same sign: tensile positive). Energies are total eV.
    The observer's final duplicate observation (recorded again after ``run``) is dropped.
    """
    from ase import units
    from ase.stress import voigt_6_to_full_3x3_stress
    from chgnet.model import StructOptimizer

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNetCalculator prints its device
        optimizer = StructOptimizer(model=model, optimizer_class="FIRE", use_device="cpu")
        result = optimizer.relax(
            structure.copy(),
            fmax=fmax,
            steps=steps,
            relax_cell=True,
            ase_filter="FrechetCellFilter",
            verbose=False,
            assign_magmoms=False,
        )
    trajectory = result["trajectory"]
    n_obs = len(trajectory)
    if (
        n_obs >= 2
        and np.array_equal(trajectory.atom_positions[-1], trajectory.atom_positions[-2])
        and np.array_equal(trajectory.cells[-1], trajectory.cells[-2])
    ):
        n_obs -= 1
    frames = []
    for i in range(n_obs):
        cell = np.asarray(trajectory.cells[i], dtype=float)
        positions = np.asarray(trajectory.atom_positions[i], dtype=float)
        frac = np.linalg.solve(cell.T, positions.T).T
        stress_gpa = voigt_6_to_full_3x3_stress(np.asarray(trajectory.stresses[i], dtype=float)) / units.GPa
        frames.append(
            _frame_dict(cell, frac, trajectory.energies[i], trajectory.forces[i], stress_gpa, trajectory.magmoms[i])
        )
    return frames


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
    index: int  # 1-based
    material_id: str
    formula: str  # catalogue key
    groups: tuple[str, ...]  # fidelities of the task groups to generate
    seed: int


def _incar(fidelity: str, task_type: str, species: Sequence[str], hubbards: dict[str, float] | None, model_name: str):
    incar: dict[str, Any] = {
        "ENCUT": 680 if fidelity == "r2SCAN" else 520,
        "EDIFF": 1e-5 if fidelity == "r2SCAN" else 5e-5,
        "ISPIN": 2,
        "ISMEAR": -5 if task_type == "static" else 0,
        "NELM": NELM[fidelity],
        "NSW": 0 if task_type == "static" else 99,
        "IBRION": -1 if task_type == "static" else 2,
        "ISIF": 3,
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
    incar["label_source"] = f"surrogate: {_MODEL_LABELS[model_name]}, not DFT"
    incar["surrogate_model"] = _MODEL_LABELS[model_name]
    if task_type == "relax":
        incar["optimizer"] = "ASE FIRE + FrechetCellFilter (chgnet StructOptimizer)"
    return incar


def _electronic_steps(rng: np.random.Generator, n_frames: int) -> list[int]:
    first = int(rng.integers(18, 41))
    return [first] + [int(v) for v in rng.integers(4, 21, max(n_frames - 1, 0))]


def _task_group(
    spec: _MaterialSpec, fidelity: str, ideal, start, settings: DemoSettings, chgnet_version: str
) -> dict[str, Any]:
    """One line of the corpus: the material at one fidelity, with flaws injected and recorded."""
    rates = settings.flaws
    rng = np.random.default_rng([spec.seed, spec.index, _GROUP_CODES["r2SCAN" if fidelity == "r2SCAN" else "low"]])
    proto = _BY_FORMULA[spec.formula]
    model_name = _MODEL_NAMES[fidelity]
    model = load_model(model_name)
    hubbards = proto.hubbards if fidelity == "GGA+U" else None
    atomic_numbers = [int(site.specie.Z) for site in start]
    species = list(dict.fromkeys(site.specie.symbol for site in start))
    n = len(start)
    slug = _SLUGS[fidelity]
    relax_id = f"{spec.material_id}-{slug}-relax"

    base = relax_frames(model, start, fmax=settings.fmax, steps=settings.max_steps)
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
            high = predict_frame(model, distorted)
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
            duplicate = predict_frame(model, _structure(atomic_numbers, moved))
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
            "run_type": f"{_RUN_TYPES[fidelity]} (CHGNet surrogate)",
            "source_run_type": fidelity,
            "hubbards": hubbards,
            "input_parameters": _incar(fidelity, task_type, species, hubbards, model_name),
            "code": "CHGNet-surrogate",
            "code_version": chgnet_version,
            "atomic_numbers": atomic_numbers,
            "frames": task_frames,
        }

    tasks = [task(relax_id, "relax", relax_frames_out)]

    if want_static:
        final = base[-1]
        lattice = np.asarray(final["lattice"])
        cart = np.asarray(final["frac_coords"]) @ lattice + rng.normal(0.0, 0.01 / np.sqrt(3.0), (n, 3))
        rattled = _structure(atomic_numbers, {"lattice": lattice, "frac_coords": np.linalg.solve(lattice.T, cart.T).T})
        static = predict_frame(model, rattled)
        if not -0.005 <= static["energy"] / n - e_ref <= 0.015:
            static = predict_frame(model, _structure(atomic_numbers, final))
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
        "provenance": {
            "generator": "crossfid.ingest.demo",
            "seed": spec.seed,
            "chgnet_version": chgnet_version,
            "model": _MODEL_LABELS[model_name],
            "label_source": f"surrogate: {_MODEL_LABELS[model_name]}, not DFT",
            "ideal_structure": ideal.as_dict(),
        },
    }


def _material_documents(spec: _MaterialSpec, settings: DemoSettings) -> list[dict[str, Any]]:
    """All task groups of one material, computed on one torch thread (see :func:`_torch_threads`)."""
    with warnings.catch_warnings():
        # chgnet converts a grad-tracking volume tensor (model.py); harmless, once per process otherwise
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad", category=UserWarning)
        proto = _BY_FORMULA[spec.formula]
        ideal = build_prototype(proto)
        rng = np.random.default_rng([spec.seed, spec.index, 0])
        start = _perturbed(ideal, rng, rattle=settings.rattle, strain=settings.strain)
        chgnet_version = _chgnet_version()
        return [_task_group(spec, fidelity, ideal, start, settings, chgnet_version) for fidelity in spec.groups]


_MALLOC_TUNED = False


def _undo_nanny_malloc_trim() -> None:
    """Give glibc malloc back its normal thresholds in a Dask worker process (once).

    The Dask Nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting that
    also freezes glibc's dynamic mmap threshold at 128 KiB, so every larger torch
    buffer is mmapped and unmapped again: measured on 2 cores, chgnet relaxations
    ran ~2× slower in workers (and serially with the variable set: 45 s instead of
    24 s for 8 materials). Raising the trim (64 MiB) and mmap (32 MiB) thresholds
    restores the speed. Only done when that variable is set, on glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to undo
        pass


def _worker_material_documents(spec: _MaterialSpec, settings: DemoSettings) -> list[dict[str, Any]]:
    """The Dask task: one torch thread for the worker process (kept), models cached per process."""
    import torch

    _undo_nanny_malloc_trim()
    torch.set_num_threads(1)
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
    order: list[_Proto] = []
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
    # a few materials keep only one fidelity group (never the first two)
    two = [i for i, g in enumerate(groups) if len(g) == 2 and i >= 2]
    n_single = min(int(n_materials * settings.single_fidelity_fraction), len(two))
    for i in sorted(rng.choice(two, size=n_single, replace=False).tolist()) if n_single else []:
        groups[i] = [groups[i][int(rng.integers(0, 2))]]
    return [
        _MaterialSpec(index=i + 1, material_id=f"demo-{i + 1:04d}", formula=p.formula, groups=tuple(g), seed=seed)
        for i, (p, g) in enumerate(zip(chosen, groups, strict=True))
    ]


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _header(n_materials: int, seed: int, fidelities: Sequence[str], settings: DemoSettings) -> dict[str, Any]:
    return {
        "kind": "header",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": "crossfid.ingest.demo",
        "n_materials": n_materials,
        "seed": seed,
        "fidelities": list(fidelities),
        "settings": asdict(settings),
        "chgnet_version": _chgnet_version(),
        "models": {fid: _MODEL_LABELS[_MODEL_NAMES[fid]] for fid in fidelities},
        "label_source": "surrogate: CHGNet models shipped with the chgnet package, not DFT",
        "units": "energy eV (total, uncorrected), forces eV/Å, stress GPa (tensile positive), magmoms μB",
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
    ``progress(done, total)`` is called as materials finish.
    The file is written to a temporary name and renamed, so it is either complete or absent.
    """
    settings = settings or DemoSettings()
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
        with _torch_threads(1):
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
    flaws: Counter[str] = Counter({kind: 0 for kind in FLAW_KINDS})
    by_fidelity: Counter[str] = Counter()
    n_documents = n_tasks = n_frames = n_refs = 0
    for document in documents:
        n_documents += 1
        materials.add(document["material_id"])
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


# --------------------------------------------------------------------------- reading back


def _array(value: Any, dtype=float) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=dtype)


def document_to_bundle(document: dict[str, Any], location: str) -> Bundle:
    """Canonical records of one task-group document (raises KeyError/TypeError/ValueError when malformed)."""
    if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"not a {FORMAT} v{FORMAT_VERSION} document "
            f"(format {document.get('format')!r}, version {document.get('format_version')!r})"
        )
    if document.get("kind") != "task_group":
        raise ValueError(f"unexpected document kind {document.get('kind')!r}")
    material_id = str(document["material_id"])
    tasks: list[Task] = []
    atomic_numbers_seen = None
    for task in document["tasks"]:
        numbers = np.asarray(task["atomic_numbers"], dtype=np.int16)
        atomic_numbers_seen = numbers if atomic_numbers_seen is None else atomic_numbers_seen
        frames = [
            Frame(
                ionic_step=int(frame["ionic_step"]),
                lattice=np.asarray(frame["lattice"], dtype=float),
                atomic_numbers=numbers,
                frac_coords=np.asarray(frame["frac_coords"], dtype=float),
                energy=None if frame.get("energy") is None else float(frame["energy"]),
                forces=_array(frame.get("forces")),
                stress=_array(frame.get("stress")),
                magmoms=_array(frame.get("magmoms")),
                n_electronic_steps=frame.get("n_electronic_steps"),
                scf_converged=frame.get("scf_converged"),
            )
            for frame in task["frames"]
        ]
        hubbards = task.get("hubbards")
        tasks.append(
            Task(
                external_id=str(task["task_id"]),
                fidelity=str(task["fidelity"]),
                run_type=str(task["run_type"]),
                task_type=task["task_type"],
                frames=frames,
                input_parameters=dict(task.get("input_parameters") or {}),
                hubbards=None if hubbards is None else {str(k): float(v) for k, v in hubbards.items()},
                source_run_type=task.get("source_run_type"),
                code=str(task.get("code", "CHGNet-surrogate")),
                code_version=task.get("code_version"),
            )
        )
    if atomic_numbers_seen is None:
        raise ValueError("document has no tasks")
    references = []
    ref = document.get("reference")
    if ref:
        references.append(
            ReferenceEntry(
                fidelity=str(ref["fidelity"]),
                energy_per_atom=float(ref["energy_per_atom"]),
                n_atoms=int(ref["n_atoms"]),
                structure=ref.get("structure"),
                entry_id=ref.get("entry_id"),
                task_external_id=ref.get("task_id"),
            )
        )
    return Bundle(
        material=Material.from_atomic_numbers(material_id, atomic_numbers_seen.tolist()),
        location=location,
        tasks=tasks,
        references=references,
        raw=RawDocument.from_json(document, location),
    )


def _line_record(line_bytes: bytes, where: str, limits: Limits | None = None) -> Bundle | Refusal | None:
    """The record of one line (None for the header and blank lines)."""
    text = None
    try:
        text = line_bytes.decode("utf-8")
        if not text.strip():
            return None
        problem = json_depth_problem(line_bytes, limits or Limits.from_env())
        if problem is not None:
            return Refusal(location=where, reason=problem, raw_text=text[:2000])
        document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError(f"a JSON object was expected, got {type(document).__name__}")
        if document.get("kind") == "header":
            if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"unsupported header {document.get('format')!r} v{document.get('format_version')!r}")
            return None
        return document_to_bundle(document, f"{where}#{document.get('material_id')}/{document.get('fidelity')}")
    except UnicodeDecodeError as exc:
        return Refusal(location=where, reason=f"not UTF-8 text: {exc}")
    except json.JSONDecodeError as exc:
        return Refusal(location=where, reason=f"invalid JSON: {exc}", raw_text=text[:20000])
    except Exception as exc:  # noqa: BLE001 - a line that cannot be converted is refused alone, never fatal
        reason = f"malformed demo document: {type(exc).__name__}: {exc}"
        return Refusal(location=where, reason=reason, raw_text=None if text is None else text[:20000])


def read_demo_corpus(path: Path) -> Iterator[Bundle | Refusal]:
    """Canonical records of a corpus file: one Bundle per task-group line, a Refusal for each bad line.

    Bad input never raises: an unparsable or malformed line becomes
    ``Refusal(location="<file>:line N", reason=...)`` (also a line nested deeper or
    longer than the limits of :class:`~crossfid.ingest.sourceio.Limits`, which is
    never parsed nor held whole), and a damaged stream, or one expanding beyond
    ``CROSSFID_MAX_DECOMPRESSED_BYTES``, a Refusal for the rest of the file. (A missing
    file raises ``FileNotFoundError``.)
    """
    path = Path(path)
    name = path.name
    limits = Limits.from_env()
    number = 0
    with open(path, "rb") as handle:  # a missing file raises here, before anything is read
        kind = compression_of(handle.read(6)) or "text"
    try:
        with open_decompressed(path, limits) as stream:
            for number, line_bytes in iter_lines(stream, limits.max_record_bytes):  # noqa: B007 - used after the loop
                where = f"{name}:line {number}"
                if line_bytes is None:
                    yield Refusal(location=where, reason=record_size_reason(limits.max_record_bytes, f"line {number}"))
                    continue
                record = _line_record(line_bytes, where, limits)
                if record is not None:
                    yield record
    except Exception as exc:  # noqa: BLE001 - the rest of the file is lost; say why and where
        yield Refusal(
            location=f"{name}:line {number + 1}",
            reason=f"unreadable {kind} stream after line {number}: {stream_problem(exc)}",
        )
