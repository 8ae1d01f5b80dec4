"""The canonical in-memory form that every source produces and the loader consumes.

A source yields, for each record of its input, either a :class:`Bundle` (a material
with its tasks, their frames, reference entries and the raw document they were made
from) or a :class:`Refusal` (input that cannot become training data, with a reason a
person understands). The loader writes each bundle in one transaction.

Units and conventions (see docs/ingestion.md):

* lengths Å; ``lattice`` rows are the lattice vectors; ``frac_coords`` fractional
* ``energy`` eV, VASP's free energy (``e_fr_energy``), uncorrected;
  ``corrected_energy`` eV where the source has one (MP compatibility corrections)
* ``forces`` eV/Å, shape (n, 3)
* ``stress`` GPa, shape (3, 3), physical sign (tensile positive) as in ASE and
  CHGNet. VASP prints kBar with the opposite sign: use :func:`stress_from_vasp_kbar`.
* ``magmoms`` μB, shape (n,)

Sources build records with plain Python / numpy values and leave validation to
:func:`validate_bundle`, so that every source refuses bad input the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from crossfid.db.vocabulary import FIDELITY_NAMES, TASK_TYPES

TaskType = Literal["relax", "static"]

#: VASP kBar → GPa with the sign flipped to the physical (ASE/CHGNet) convention
KBAR_TO_GPA = -0.1


class RecordError(ValueError):
    """A record that cannot be stored; ``str(error)`` is the reason shown in quarantine."""


def stress_from_vasp_kbar(stress_kbar: Any) -> np.ndarray:
    """VASP stress (kBar, compressive positive; 3×3 or Voigt xx, yy, zz, yz, xz, xy) → GPa, tensile positive."""
    return to_3x3(stress_kbar) * KBAR_TO_GPA


def to_3x3(stress: Any) -> np.ndarray:
    """A 3×3 tensor from a 3×3 array or a 6-vector in Voigt order (xx, yy, zz, yz, xz, xy)."""
    s = np.asarray(stress, dtype=float)
    if s.shape == (3, 3):
        return s
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.shape == (9,):
        return s.reshape(3, 3)
    raise RecordError(f"stress must be 3×3 or Voigt 6, got shape {s.shape}")


@dataclass
class Frame:
    """One ionic step (see the module doc for units)."""

    ionic_step: int
    lattice: np.ndarray  # (3, 3) Å
    atomic_numbers: np.ndarray  # (n,)
    frac_coords: np.ndarray  # (n, 3)
    energy: float | None  # eV, uncorrected free energy
    forces: np.ndarray | None = None  # (n, 3) eV/Å
    stress: np.ndarray | None = None  # (3, 3) GPa, tensile positive
    magmoms: np.ndarray | None = None  # (n,) μB
    corrected_energy: float | None = None  # eV
    n_electronic_steps: int | None = None
    scf_converged: bool | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.atomic_numbers)

    @property
    def energy_per_atom(self) -> float | None:
        return None if self.energy is None else self.energy / self.n_atoms

    def content_hash(self) -> str:
        """SHA-256 over the frame's physical content (structure and labels), not its ids.

        The same frame gets the same hash in any database; floats are hashed as
        their exact IEEE-754 bytes, so the hash survives a PostgreSQL round trip.
        """
        h = hashlib.sha256(b"crossfid-frame-v1")
        h.update(np.asarray(self.atomic_numbers, dtype="<i2").tobytes())
        for name in ("lattice", "frac_coords", "forces", "stress", "magmoms"):
            value = getattr(self, name)
            h.update(name.encode())
            if value is not None:
                h.update(np.asarray(value, dtype="<f8").tobytes())
        for name in ("energy", "corrected_energy"):
            value = getattr(self, name)
            h.update(name.encode())
            if value is not None:
                h.update(np.float64(value).astype("<f8").tobytes())
        h.update(f"{self.n_electronic_steps}|{self.scf_converged}".encode())
        return h.hexdigest()

    @classmethod
    def from_structure(cls, structure, ionic_step: int, energy: float | None, **labels) -> Frame:
        """Build from a pymatgen ``Structure`` (labels as keyword arguments, canonical units)."""
        return cls(
            ionic_step=ionic_step,
            lattice=np.array(structure.lattice.matrix, dtype=float),
            atomic_numbers=np.array([site.specie.Z for site in structure], dtype=np.int16),
            frac_coords=np.array(structure.frac_coords, dtype=float),
            energy=None if energy is None else float(energy),
            **labels,
        )

    def to_structure(self):
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.lattice), [int(z) for z in self.atomic_numbers], self.frac_coords)


@dataclass
class Task:
    """One DFT calculation at one fidelity."""

    external_id: str
    fidelity: str
    run_type: str  # the exact functional, e.g. "PBE+U", "r2SCAN", "HSE06"
    task_type: TaskType
    frames: list[Frame]
    input_parameters: dict[str, Any] = field(default_factory=dict)
    hubbards: dict[str, float] | None = None  # element → U (eV), only elements with U ≠ 0
    source_run_type: str | None = None  # the source's own label, when it has one
    code: str = "VASP"
    code_version: str | None = None
    completed_at: Any | None = None  # datetime


@dataclass
class ReferenceEntry:
    """Primary relaxed entry of the material at a fidelity (energies eV/atom)."""

    fidelity: str
    energy_per_atom: float  # uncorrected
    corrected_energy_per_atom: float | None = None
    formation_energy_per_atom: float | None = None
    energy_above_hull: float | None = None
    n_atoms: int | None = None
    structure: dict[str, Any] | None = None  # pymatgen Structure.as_dict()
    entry_id: str | None = None
    task_external_id: str | None = None  # a task of this bundle, when the entry comes from one
    correction_scheme: str | None = None


@dataclass
class Material:
    external_id: str  # e.g. "mp-149"; sources without ids namespace their own ("vasp:<hash>")
    formula: str  # reduced formula, e.g. "Fe2O3"
    elements: tuple[str, ...]  # sorted symbols

    @property
    def chemsys(self) -> str:
        return "-".join(self.elements)

    @classmethod
    def from_atomic_numbers(cls, external_id: str, atomic_numbers: Sequence[int]) -> Material:
        from pymatgen.core import Composition, Element

        counts: dict[str, int] = {}
        for z in atomic_numbers:
            symbol = Element.from_Z(int(z)).symbol
            counts[symbol] = counts.get(symbol, 0) + 1
        composition = Composition(counts)
        return cls(
            external_id=external_id,
            formula=composition.reduced_formula,
            elements=tuple(sorted(counts)),
        )


@dataclass
class RawDocument:
    """An original input record, stored compressed and addressed by the SHA-256 of ``content``."""

    content: bytes  # uncompressed bytes exactly as read (or canonical JSON of a parsed document)
    format: str  # "json", "vasprun.xml", "extxyz", ...
    location: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def compressed(self) -> bytes:
        return gzip.compress(self.content, compresslevel=6, mtime=0)

    @classmethod
    def from_json(cls, document: Any, location: str) -> RawDocument:
        """Canonical JSON (sorted keys, no whitespace) of a parsed document."""
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=_json_default)
        return cls(content=text.encode(), format="json", location=location)


@dataclass
class Bundle:
    """The unit the loader writes in one transaction: a material and what one input record said of it."""

    material: Material
    location: str  # where in the input, e.g. "mptrj.json#mp-149" or "mp-api:mp-1234"
    tasks: list[Task] = field(default_factory=list)
    references: list[ReferenceEntry] = field(default_factory=list)
    raw: RawDocument | None = None


@dataclass
class Refusal:
    """Input refused before or during conversion; becomes a ``quarantine`` row."""

    location: str
    reason: str
    raw_text: str | None = None
    raw_document: Any | None = None  # JSON-serialisable

    def fingerprint(self, source: str) -> str:
        payload = json.dumps(
            [source, self.location, self.reason, self.raw_text, self.raw_document],
            sort_keys=True,
            default=_json_default,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


Record = Bundle | Refusal


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return str(value)


# --------------------------------------------------------------------------- validation


def _finite_scalar(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise RecordError(f"{what} is not finite ({number})")
    return number


def _finite_array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not numeric") from exc
    if array.shape != shape:
        raise RecordError(f"{what} has shape {array.shape}, expected {shape}")
    # one reduction instead of an elementwise test; the sum can only overflow if values are ~1e308
    if not math.isfinite(array.sum()) and not np.isfinite(array).all():
        raise RecordError(f"{what} contains non-finite values")
    return array


def validate_frame(frame: Frame) -> Frame:
    """Check shapes, finiteness, elements and cell; return a normalised copy or raise RecordError."""
    numbers = np.asarray(frame.atomic_numbers)
    if numbers.ndim != 1 or numbers.size == 0:
        raise RecordError("structure has no atoms")
    if not np.issubdtype(numbers.dtype, np.integer):
        raise RecordError("atomic numbers are not integers")
    bad = numbers[(numbers < 1) | (numbers > 118)]
    if bad.size:
        raise RecordError(f"unknown element (atomic number {int(bad[0])})")
    n = numbers.size
    lattice = _finite_array(frame.lattice, (3, 3), "lattice")
    volume = abs(float(np.linalg.det(lattice)))
    if volume < 1e-6:
        raise RecordError(f"cell volume is {volume:.3g} Å³ (zero-volume cell)")
    frac = _finite_array(frame.frac_coords, (n, 3), "fractional coordinates")
    stress = frame.stress
    if stress is not None:
        stress = to_3x3(stress)
    return replace(
        frame,
        atomic_numbers=numbers.astype(np.int16),
        lattice=lattice,
        frac_coords=frac,
        energy=_finite_scalar(frame.energy, "energy"),
        corrected_energy=_finite_scalar(frame.corrected_energy, "corrected energy"),
        forces=_finite_array(frame.forces, (n, 3), "forces"),
        stress=_finite_array(stress, (3, 3), "stress"),
        magmoms=_finite_array(frame.magmoms, (n,), "magnetic moments"),
        n_electronic_steps=None if frame.n_electronic_steps is None else int(frame.n_electronic_steps),
        scf_converged=None if frame.scf_converged is None else bool(frame.scf_converged),
    )


def validate_task(task: Task) -> Task:
    """Task-level checks (vocabulary, task type); frames are checked one by one by :func:`validate_bundle`."""
    if task.fidelity not in FIDELITY_NAMES:
        raise RecordError(f"unknown fidelity {task.fidelity!r}")
    if task.task_type not in TASK_TYPES:
        raise RecordError(f"task type {task.task_type!r} is not a training task (relax or static)")
    if not task.external_id:
        raise RecordError("task has no id")
    if task.hubbards is not None:
        hubbards = {str(k): float(v) for k, v in task.hubbards.items() if float(v) != 0.0}
        task = replace(task, hubbards=hubbards or None)
    return task


def validate_reference(entry: ReferenceEntry) -> ReferenceEntry:
    if entry.fidelity not in FIDELITY_NAMES:
        raise RecordError(f"unknown fidelity {entry.fidelity!r} of reference entry")
    return replace(
        entry,
        energy_per_atom=_finite_scalar(entry.energy_per_atom, "reference energy per atom"),
        corrected_energy_per_atom=_finite_scalar(entry.corrected_energy_per_atom, "corrected energy per atom"),
        formation_energy_per_atom=_finite_scalar(entry.formation_energy_per_atom, "formation energy per atom"),
        energy_above_hull=_finite_scalar(entry.energy_above_hull, "energy above hull"),
    )


def validate_bundle(
    bundle: Bundle, *, checked_frames: frozenset[str] = frozenset()
) -> tuple[Bundle | None, list[Refusal]]:
    """Validate everything in a bundle.

    A bad frame is refused on its own (the task keeps its other frames); a bad task
    or reference entry is refused whole. Returns the cleaned bundle (None when
    nothing in it survived) and the refusals, each with its location.
    ``checked_frames``: external ids of tasks whose frames were already validated
    (the loader's columnar fast path); their frames are kept as they are.
    """
    refusals: list[Refusal] = []
    tasks: list[Task] = []
    for task in bundle.tasks:
        where = f"{bundle.location} task {task.external_id}"
        try:
            task = validate_task(task)
        except RecordError as exc:
            refusals.append(Refusal(where, str(exc)))
            continue
        if task.external_id in checked_frames and task.frames:
            tasks.append(task)
            continue
        frames: list[Frame] = []
        for frame in task.frames:
            try:
                frames.append(validate_frame(frame))
            except RecordError as exc:
                refusals.append(Refusal(f"{where} ionic step {frame.ionic_step}", str(exc)))
        if frames:
            tasks.append(replace(task, frames=frames))
        elif task.frames:
            refusals.append(Refusal(where, "task has no valid frame"))
        else:
            refusals.append(Refusal(where, "task has no frames"))
    references: list[ReferenceEntry] = []
    for entry in bundle.references:
        try:
            references.append(validate_reference(entry))
        except RecordError as exc:
            refusals.append(Refusal(f"{bundle.location} reference {entry.fidelity}", str(exc)))
    if not tasks and not references:
        return None, refusals
    return replace(bundle, tasks=tasks, references=references), refusals


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``dict`` view of pydantic models, pymatgen objects or mappings (for source converters)."""
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    raise TypeError(f"cannot read {type(value).__name__} as a mapping")


def jsonable(value: Any) -> Any:
    """A JSON/JSONB-safe copy: numpy → lists and numbers, non-finite floats → strings, objects → dicts."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return jsonable(_json_default(value))
