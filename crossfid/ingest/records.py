"""The canonical in-memory form that every source produces and the loader consumes.

A source yields, for each record of its input, either a :class:`Bundle` (a material
with its tasks, their frames, reference entries and the raw document they were made
from) or a :class:`Refusal` (input that cannot become training data, with a reason a
person understands). The loader writes each bundle in one transaction.

Units and conventions (see docs/ingestion.md):

* lengths Å; ``lattice`` rows are the lattice vectors; ``frac_coords`` fractional
* ``energy`` eV, uncorrected; which VASP quantity it is is the task's ``energy_quantity``
  (crossfid's sources store ``e_0_energy``, the energy extrapolated to σ → 0: the quantity
  of pymatgen's ``Vasprun.final_energy``, so of Materials Project entries, and of CHGNet's
  own VASP parser); ``corrected_energy`` eV where the source has one (MP compatibility
  corrections)
* ``forces`` eV/Å, shape (n, 3)
* ``stress`` GPa, shape (3, 3), physical sign (tensile positive) as in ASE and
  CHGNet. VASP prints kBar with the opposite sign: use :func:`stress_from_vasp_kbar`.
* ``magmoms`` μB, shape (n,)

Sources build records with plain Python / numpy values and leave validation to
:func:`validate_bundle`, so that every source refuses bad input the same way.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from crossfid.errors import InputError
from crossfid.hashing import frame_content_hash, sha256_bytes, sha256_text
from crossfid.vocabulary import ENERGY_QUANTITIES, MATERIAL_RULES, TASK_TYPES, is_fidelity

TaskType = Literal["relax", "static"]

#: VASP kBar → GPa with the sign flipped to the physical (ASE/CHGNet) convention
KBAR_TO_GPA = -0.1

# Physical plausibility limits (docs/ingestion.md, "Limits"). A frame with a finite value beyond
# one of them is refused on its own with the value and the limit; the task keeps its other frames.
# They are far outside anything a DFT code prints for a real material and exist so that a corrupt
# number (1e200 forces, an energy in the wrong unit) never reaches the database, where it would
# overflow derived columns such as ``max_force`` and take the whole task with it.

#: |energy per atom| and |corrected energy per atom| of a frame or reference entry (eV/atom)
MAX_ABS_ENERGY_PER_ATOM = 1e3
#: |force component| (eV/Å); real VASP output reaches 1.7e4 (the first ionic step of a badly started
#: relaxation in chgnet's public parser test run), so the limit sits well above that
MAX_ABS_FORCE = 1e6
#: |stress component| (GPa)
MAX_ABS_STRESS = 1e5
#: |magnetic moment| (μB)
MAX_ABS_MAGMOM = 1e3
#: length of each lattice vector (Å)
MIN_LATTICE_LENGTH = 0.1
MAX_LATTICE_LENGTH = 1e4
#: |fractional coordinate| (unwrapped coordinates are fine; 1e200 is not)
MAX_ABS_FRACTIONAL = 1e3
#: ionic step indices and electronic step counts are PostgreSQL ``integer`` columns
MAX_INT4 = 2**31 - 1

#: characters that cannot be stored in PostgreSQL text or JSONB: NUL, and lone UTF-16 surrogates
#: (which are not Unicode scalar values, so they cannot be encoded as UTF-8)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class RecordError(InputError):
    """A record that cannot be stored; ``str(error)`` is the reason shown in quarantine."""


def stress_from_vasp_kbar(stress_kbar: Any) -> np.ndarray:
    """VASP stress (kBar, compressive positive; 3×3 or Voigt xx, yy, zz, yz, xz, xy) → GPa, tensile positive."""
    return to_3x3(stress_kbar) * KBAR_TO_GPA


def to_3x3(stress: Any) -> np.ndarray:
    """A 3×3 tensor from a 3×3 array or a 6-vector in Voigt order (xx, yy, zz, yz, xz, xy)."""
    try:
        s = np.asarray(stress, dtype=float)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"stress is not a numeric array ({exc})") from exc
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
        return frame_content_hash(
            self.atomic_numbers,
            {name: getattr(self, name) for name in ("lattice", "frac_coords", "forces", "stress", "magmoms")},
            {"energy": self.energy, "corrected_energy": self.corrected_energy},
            self.n_electronic_steps,
            self.scf_converged,
        )

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
    #: which VASP energy the frames' ``energy`` is (crossfid.vocabulary.ENERGY_QUANTITIES)
    energy_quantity: str = "unknown"
    #: stored from a document holding only its output: one frame, no trajectory
    final_frame_only: bool = False
    #: how the task got its material (crossfid.vocabulary.MATERIAL_RULES); None: not recorded
    material_rule: str | None = None


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
    #: which VASP energy ``energy_per_atom`` is (crossfid.vocabulary.ENERGY_QUANTITIES); None: not known
    energy_quantity: str | None = None


@dataclass
class Material:
    #: e.g. "mp-149"; "" when the record names no material: crossfid.ingest.grouping assigns one
    external_id: str
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
        return sha256_bytes(self.content)

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

    def __post_init__(self) -> None:
        # a refusal must itself be storable: NUL and lone surrogates (from a hostile id or file
        # name) are written as visible escapes in every field
        self.location = escape_text(str(self.location))
        self.reason = escape_text(str(self.reason))
        if self.raw_text is not None:
            self.raw_text = escape_text(str(self.raw_text))
        if self.raw_document is not None:
            self.raw_document = escape_unstorable(self.raw_document)

    def fingerprint(self, source: str) -> str:
        payload = json.dumps(
            [source, self.location, self.reason, self.raw_text, self.raw_document],
            sort_keys=True,
            default=_json_default,
        )
        return sha256_text(payload)


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


# --------------------------------------------------------------------------- text that cannot be stored


def has_unstorable_text(text: str) -> bool:
    """Whether ``text`` holds a NUL character or a lone surrogate (PostgreSQL can store neither)."""
    return ("\x00" in text) if text.isascii() else _UNSTORABLE.search(text) is not None


def escape_text(text: str) -> str:
    """``text`` with NUL and lone surrogates written as ``\\u0000`` / ``\\ud800`` escapes (everything else kept)."""
    if not has_unstorable_text(text):
        return text
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def unstorable_reason(what: str, text: str) -> str:
    """A reason naming the bad character, with the text escaped (the reason itself is always storable)."""
    bad = _UNSTORABLE.search(text)
    char = "" if bad is None else bad.group()
    kind = "a NUL character (U+0000)" if char == "\x00" else f"a lone surrogate (U+{ord(char or '?'):04X})"
    shown = escape_text(text if len(text) <= 200 else text[:200] + "…")
    return f'{what} "{shown}" contains {kind}, which cannot be stored as text'


def check_text(value: Any, what: str) -> None:
    """Raise :class:`RecordError` when a string (or a key or string inside a JSON-like value) is unstorable."""
    found = find_unstorable(value)
    if found is not None:
        path, text = found
        raise RecordError(unstorable_reason(f"{what}{path}", text))


def _contains_unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return has_unstorable_text(value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and has_unstorable_text(key):
                return True
            if not isinstance(item, float | int | bool | None) and _contains_unstorable(item):
                return True
        return False
    if isinstance(value, list | tuple):
        return any(_contains_unstorable(item) for item in value if not isinstance(item, float | int | bool | None))
    return False


def find_unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """(path, text) of the first unstorable string in a JSON-like value (keys included), None when clean."""
    if not _contains_unstorable(value):
        return None
    if isinstance(value, str):
        return path, value
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and has_unstorable_text(key):
                return f"{path} key", key
            if _contains_unstorable(item):
                return find_unstorable(item, f"{path}[{escape_text(str(key))!r}]")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if _contains_unstorable(item):
                return find_unstorable(item, f"{path}[{i}]")
    return None


def escape_unstorable(value: Any) -> Any:
    """A JSON-like value with every unstorable string (and key) escaped; the same object when nothing is."""
    if not _contains_unstorable(value):
        return value
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, Mapping):
        return {escape_text(k) if isinstance(k, str) else k: escape_unstorable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_unstorable(v) for v in value]
    return value


# --------------------------------------------------------------------------- validation


def _finite_scalar(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"{what} is not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise RecordError(f"{what} is not finite ({number})")
    return number


def _finite_array(
    value: Any, shape: tuple[int, ...], what: str, limit: float | None = None, unit: str = ""
) -> np.ndarray | None:
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"{what} is not numeric") from exc
    if array.shape != shape:
        raise RecordError(f"{what} has shape {array.shape}, expected {shape}")
    if limit is None:
        # one reduction instead of an elementwise test; the sum can only overflow if values are ~1e308
        if not math.isfinite(array.sum()) and not np.isfinite(array).all():
            raise RecordError(f"{what} contains non-finite values")
        return array
    largest = float(np.abs(array).max()) if array.size else 0.0
    if not largest <= limit:  # also NaN, which compares false
        if not np.isfinite(array).all():
            raise RecordError(f"{what} contains non-finite values")
        raise RecordError(
            f"{what} has a component of magnitude {largest:.6g}{unit}, beyond the limit of {limit:g}{unit}"
        )
    return array


def _check_magnitude(value: float | None, limit: float, what: str, unit: str = " eV/atom") -> None:
    if value is not None and abs(value) > limit:
        raise RecordError(f"{what} is {value:.6g}{unit}, beyond the limit of ±{limit:g}{unit}")


def _check_lattice(lattice: np.ndarray) -> None:
    scale = float(np.abs(lattice).max())
    lengths = scale * np.sqrt(((lattice / scale) ** 2).sum(axis=1)) if scale > 0 else np.zeros(3)  # no overflow
    if lengths.min() >= MIN_LATTICE_LENGTH and lengths.max() <= MAX_LATTICE_LENGTH:
        return
    for i, length in enumerate(lengths):
        if not MIN_LATTICE_LENGTH <= length <= MAX_LATTICE_LENGTH:
            raise RecordError(
                f"lattice vector {i + 1} is {float(length):.6g} Å long, outside the sane range "
                f"{MIN_LATTICE_LENGTH:g} to {MAX_LATTICE_LENGTH:g} Å"
            )


def _check_int4(value: Any, what: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"{what} is not an integer: {value!r}") from exc
    if not 0 <= number <= MAX_INT4:
        raise RecordError(f"{what} is {number}, outside 0 to {MAX_INT4}")
    return number


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
    _check_lattice(lattice)
    volume = abs(float(np.linalg.det(lattice)))
    if volume < 1e-6:
        raise RecordError(f"cell volume is {volume:.3g} Å³ (zero-volume cell)")
    frac = _finite_array(frame.frac_coords, (n, 3), "fractional coordinates", MAX_ABS_FRACTIONAL)
    stress = frame.stress
    if stress is not None:
        stress = to_3x3(stress)
    energy = _finite_scalar(frame.energy, "energy")
    corrected = _finite_scalar(frame.corrected_energy, "corrected energy")
    _check_magnitude(None if energy is None else energy / n, MAX_ABS_ENERGY_PER_ATOM, "energy per atom")
    _check_magnitude(None if corrected is None else corrected / n, MAX_ABS_ENERGY_PER_ATOM, "corrected energy per atom")
    return replace(
        frame,
        ionic_step=_check_int4(frame.ionic_step, "ionic step"),
        atomic_numbers=numbers.astype(np.int16),
        lattice=lattice,
        frac_coords=frac,
        energy=energy,
        corrected_energy=corrected,
        forces=_finite_array(frame.forces, (n, 3), "forces", MAX_ABS_FORCE, " eV/Å"),
        stress=_finite_array(stress, (3, 3), "stress", MAX_ABS_STRESS, " GPa"),
        magmoms=_finite_array(frame.magmoms, (n,), "magnetic moments", MAX_ABS_MAGMOM, " μB"),
        n_electronic_steps=_check_int4(frame.n_electronic_steps, "number of electronic steps"),
        scf_converged=None if frame.scf_converged is None else bool(frame.scf_converged),
    )


def material_texts(material: Material) -> tuple[tuple[str, Any], ...]:
    """(name, value) of every text a material stores (the names quarantine reasons use)."""
    return (("material id", material.external_id), ("formula", material.formula), ("elements", list(material.elements)))


def task_texts(task: Task) -> tuple[tuple[str, Any], ...]:
    """(name, value) of every text a task stores besides its id, JSON values included."""
    return (
        ("fidelity", task.fidelity),
        ("run type", task.run_type),
        ("source run type", task.source_run_type),
        ("task type", task.task_type),
        ("code", task.code),
        ("code version", task.code_version),
        ("completion time", task.completed_at),
        ("input parameters", task.input_parameters),
        ("U values", task.hubbards),
    )


def reference_texts(entry: ReferenceEntry) -> tuple[tuple[str, Any], ...]:
    """(name, value) of every text a reference entry stores, its structure included."""
    return (
        ("fidelity", entry.fidelity),
        ("entry id", entry.entry_id),
        ("task id", entry.task_external_id),
        ("correction scheme", entry.correction_scheme),
        ("structure", entry.structure),
    )


def unstorable_text_reason(bundle: Bundle) -> str | None:
    """Why a bundle holds text PostgreSQL cannot store (the first such field, escaped); None when it has none.

    The same fields as :func:`validate_bundle` checks, for the loader, which checks again whatever reaches it.
    """
    labelled: list[tuple[str, str, Any]] = [("", what, value) for what, value in material_texts(bundle.material)]
    for task in bundle.tasks:
        labelled.append(("", "task id", task.external_id))
        labelled += [(f"task {task.external_id} ", what, value) for what, value in task_texts(task)]
    for entry in bundle.references:
        labelled += [(f"reference entry {entry.fidelity} ", what, value) for what, value in reference_texts(entry)]
    for label, what, value in labelled:
        found = find_unstorable(value)
        if found is not None:
            return unstorable_reason(f"{label}{what}{found[0]}", found[1])
    return None


def validate_task(task: Task) -> Task:
    """Task-level checks (vocabulary, task type, storable text); :func:`validate_bundle` checks the frames."""
    check_text(task.external_id, "task id")
    if not is_fidelity(task.fidelity):
        raise RecordError(f"unknown fidelity {task.fidelity!r}")
    if task.task_type not in TASK_TYPES:
        raise RecordError(f"task type {task.task_type!r} is not a training task (relax or static)")
    if task.energy_quantity not in ENERGY_QUANTITIES:
        raise RecordError(f"unknown energy quantity {task.energy_quantity!r}")
    if task.material_rule is not None and task.material_rule not in MATERIAL_RULES:
        raise RecordError(f"unknown material rule {task.material_rule!r}")
    if task.final_frame_only and len(task.frames) > 1:
        raise RecordError(f"a final-frame-only task has one frame, not {len(task.frames)}")
    if not task.external_id:
        raise RecordError("task has no id")
    for what, value in task_texts(task):
        check_text(value, what)
    if task.hubbards is not None:
        try:
            values = {str(k): float(v) for k, v in task.hubbards.items()}
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise RecordError(f"U values are not numbers: {task.hubbards!r}") from exc
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise RecordError(f"U value of {bad[0]} is not finite ({values[bad[0]]})")
        hubbards = {k: v for k, v in values.items() if v != 0.0}
        task = replace(task, hubbards=hubbards or None)
    return task


def validate_reference(entry: ReferenceEntry) -> ReferenceEntry:
    if not is_fidelity(entry.fidelity):
        raise RecordError(f"unknown fidelity {entry.fidelity!r} of reference entry")
    if entry.energy_quantity is not None and entry.energy_quantity not in ENERGY_QUANTITIES:
        raise RecordError(f"unknown energy quantity {entry.energy_quantity!r} of reference entry")
    for what, value in reference_texts(entry):
        check_text(value, what)
    checked = replace(
        entry,
        energy_per_atom=_finite_scalar(entry.energy_per_atom, "reference energy per atom"),
        corrected_energy_per_atom=_finite_scalar(entry.corrected_energy_per_atom, "corrected energy per atom"),
        formation_energy_per_atom=_finite_scalar(entry.formation_energy_per_atom, "formation energy per atom"),
        energy_above_hull=_finite_scalar(entry.energy_above_hull, "energy above hull"),
        n_atoms=None if entry.n_atoms is None else _check_int4(entry.n_atoms, "number of atoms"),
    )
    for value, what in (
        (checked.energy_per_atom, "reference energy per atom"),
        (checked.corrected_energy_per_atom, "corrected energy per atom"),
        (checked.formation_energy_per_atom, "formation energy per atom"),
        (checked.energy_above_hull, "energy above hull"),
    ):
        _check_magnitude(value, MAX_ABS_ENERGY_PER_ATOM, what)
    return checked


def validate_material(material: Material) -> None:
    """Raise :class:`RecordError` when the material's id, formula or elements cannot be stored."""
    for what, value in material_texts(material):
        check_text(value, what)
    if not material.external_id:
        raise RecordError("material has no id (the record names none and no grouping step gave it one)")


def _problem(exc: Exception) -> str:
    """The quarantine reason of a failed check: the RecordError's text, else the unexpected error named."""
    if isinstance(exc, RecordError):
        return str(exc)
    return f"invalid record ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"


def validate_bundle(
    bundle: Bundle, *, checked_frames: frozenset[str] = frozenset()
) -> tuple[Bundle | None, list[Refusal]]:
    """Validate everything in a bundle.

    A bad frame is refused on its own (the task keeps its other frames); a bad task
    or reference entry is refused whole, and a bad material (e.g. an id holding a
    NUL character) refuses the bundle. Returns the cleaned bundle (None when
    nothing in it survived) and the refusals, each with its location. Locations
    are informational: NUL characters and lone surrogates in them (a file name
    that is not UTF-8) are escaped, not refused.
    ``checked_frames``: external ids of tasks whose frames were already validated
    (the loader's columnar fast path); their frames are kept as they are.
    """
    location = escape_text(bundle.location)
    raw = bundle.raw
    if raw is not None and has_unstorable_text(raw.location):
        raw = replace(raw, location=escape_text(raw.location))
    try:
        validate_material(bundle.material)
    except Exception as exc:  # noqa: BLE001 - a record that cannot be checked is refused, never fatal
        return None, [Refusal(location, _problem(exc))]
    refusals: list[Refusal] = []
    tasks: list[Task] = []
    for task in bundle.tasks:
        where = f"{location} task {task.external_id}"
        try:
            task = validate_task(task)
        except Exception as exc:  # noqa: BLE001
            refusals.append(Refusal(where, _problem(exc)))
            continue
        if task.external_id in checked_frames and task.frames:
            tasks.append(task)
            continue
        frames: list[Frame] = []
        for frame in task.frames:
            try:
                frames.append(validate_frame(frame))
            except Exception as exc:  # noqa: BLE001
                refusals.append(Refusal(f"{where} ionic step {frame.ionic_step}", _problem(exc)))
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
        except Exception as exc:  # noqa: BLE001
            refusals.append(Refusal(f"{location} reference {entry.fidelity}", _problem(exc)))
    if not tasks and not references:
        return None, refusals
    return replace(bundle, location=location, tasks=tasks, references=references, raw=raw), refusals


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
