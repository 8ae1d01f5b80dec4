"""Frames of a split part with their training labels, and the per-structure targets chgnet trains on.

Energy label: the training energy the dataset chose when it was frozen
(``datasets.energy_label``: uncorrected, or MP2020-corrected as in CHGNet's own MPtrj
training; :func:`crossfid.curation.datasets.training_energy_sql`), per atom (eV/atom), as
:func:`crossfid.referencing.store.split_frames` reads it. Forces eV/Å, stress GPa in the ASE/CHGNet sign
convention (tensile positive, exactly what the model outputs), magmoms μB.

Targets are built here rather than with chgnet's ``StructureData``: that class
multiplies stresses by -0.1 (it expects VASP kBar) and, like every chgnet dataset,
swallows errors and returns a random other sample (CHGNET_NOTES pitfalls 1 and 4).
Call :func:`validate_frames` before training and refuse on any reason it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from crossfid.curation.datasets import training_energy_sql
from crossfid.db.models import Dataset, Split, SplitSubset
from crossfid.errors import InputError

if TYPE_CHECKING:
    import torch
    from pymatgen.core import Structure

PARTS: tuple[str, ...] = ("train", "val", "test")
#: chgnet's targets in its order: energy, forces, stress, magmoms
TARGET_KEYS = "efsm"
TARGET_NAMES = {"e": "energy", "f": "force", "s": "stress", "m": "magmom"}
_PLURALS = {"e": "energies", "f": "forces", "s": "stresses", "m": "magmoms"}
#: CHGNet's atom embedding covers H..Pu
MAX_ATOMIC_NUMBER = 94


@dataclass(frozen=True, eq=False)
class LabelledFrame:
    """One frame with its labels; arrays are read-only copies. ``energy_per_atom`` is NaN when unlabelled.

    Equality is identity (``eq=False``): comparing numpy arrays field by field is ambiguous.
    """

    frame_id: int
    content_hash: str
    material: str
    lattice: np.ndarray
    atomic_numbers: np.ndarray
    frac_coords: np.ndarray
    energy_per_atom: float
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    magmoms: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("lattice", "frac_coords", "forces", "stress", "magmoms"):
            object.__setattr__(self, name, _frozen_array(getattr(self, name), float))
        object.__setattr__(self, "atomic_numbers", _frozen_array(self.atomic_numbers, None))
        energy = self.energy_per_atom
        object.__setattr__(self, "energy_per_atom", float("nan") if energy is None else float(energy))

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.size)

    def has_label(self, key: str) -> bool:
        """Whether the frame has target ``key`` (e, f, s or m): a finite energy, or a stored array."""
        if key == "e":
            return bool(np.isfinite(self.energy_per_atom))
        return getattr(self, _LABEL_FIELDS[key]) is not None

    def structure(self) -> Structure:
        """The frame as a pymatgen ``Structure`` (lattice rows a, b, c in Å; fractional coordinates)."""
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.lattice), self.atomic_numbers.tolist(), self.frac_coords)


_LABEL_FIELDS = {"e": "energy_per_atom", "f": "forces", "s": "stress", "m": "magmoms"}


def _frozen_array(value: Any, dtype: Any) -> np.ndarray | None:
    if value is None:
        return None
    array = np.array(value, dtype=dtype)
    array.setflags(write=False)
    return array


# --------------------------------------------------------------------------- loading


_FRAMES_SQL = """
SELECT f.id, f.content_hash, m.external_id, f.n_atoms, f.lattice, f.atomic_numbers, f.frac_coords,
       {energy} / f.n_atoms AS energy_per_atom, f.forces, f.stress, f.magmoms
  FROM split_members sm
  JOIN frames f ON f.id = sm.frame_id
  JOIN materials m ON m.id = sm.material_id
 WHERE sm.split_id = :split AND sm.part = :part {subset}
 ORDER BY f.content_hash COLLATE "C", f.id
"""
_SUBSET_SQL = (
    "AND sm.frame_id IN (SELECT unnest(frame_ids) FROM split_subsets WHERE split_id = :split AND size = :size)"
)


def load_split_frames(
    session: Session, split_id: int, part: str, *, subset_size: int | None = None
) -> list[LabelledFrame]:
    """The frames of one part of a split with their labels, ordered by content hash (then frame id).

    ``subset_size``: only the nested training subset of that many frames (part
    ``train`` only; a size the split lacks is a ValueError naming the sizes it has).
    All arrays are read in one query.
    """
    if part not in PARTS:
        raise InputError(f"unknown split part {part!r}; one of {', '.join(PARTS)}")
    split = session.get(Split, split_id)
    if split is None:
        raise InputError(f"no split with id {split_id}")
    params: dict[str, Any] = {"split": split_id, "part": part}
    subset = ""
    if subset_size is not None:
        _check_subset(session, split_id, part, subset_size)
        params["size"] = subset_size
        subset = _SUBSET_SQL
    energy = training_energy_sql(session.get(Dataset, split.dataset_id).energy_label)
    rows = session.execute(text(_FRAMES_SQL.format(subset=subset, energy=energy)), params).all()
    if subset_size is not None and len(rows) != subset_size:
        raise InputError(
            f"split {split_id}: the training subset of {subset_size} frames matches {len(rows)} training frames"
        )
    return [_frame_from_row(row) for row in rows]


def _check_subset(session: Session, split_id: int, part: str, size: Any) -> None:
    if part != "train":
        raise InputError(f"nested subsets are subsets of the training part, not of {part!r}")
    sizes = list(
        session.scalars(select(SplitSubset.size).where(SplitSubset.split_id == split_id).order_by(SplitSubset.size))
    )
    if isinstance(size, bool) or size not in sizes:
        have = ", ".join(map(str, sizes)) if sizes else "none"
        raise InputError(f"split {split_id} has no training subset of size {size!r}; subset sizes: {have}")


def _frame_from_row(row: Any) -> LabelledFrame:
    frame_id, content_hash, material, n, lattice, numbers, frac, energy, forces, stress, magmoms = row
    return LabelledFrame(
        frame_id=frame_id,
        content_hash=content_hash,
        material=material,
        lattice=np.reshape(lattice, (3, 3)),
        atomic_numbers=np.asarray(numbers, dtype=np.int64),
        frac_coords=np.reshape(frac, (n, 3)),
        energy_per_atom=energy,
        forces=None if forces is None else np.reshape(forces, (n, 3)),
        stress=None if stress is None else np.reshape(stress, (3, 3)),
        magmoms=magmoms,
    )


# --------------------------------------------------------------------------- targets


def _target_keys(targets: str) -> str:
    """``targets`` checked (letters of ``efsm``, each once, energy included) and put in e-f-s-m order."""
    unknown = sorted(set(targets) - set(TARGET_KEYS))
    if unknown or len(set(targets)) != len(targets):
        raise InputError(f"targets must be distinct letters of {TARGET_KEYS!r}, got {targets!r}")
    if "e" not in targets:
        raise InputError(f"targets must include the energy 'e' (CHGNet always trains on it), got {targets!r}")
    return "".join(key for key in TARGET_KEYS if key in targets)


def available_targets(frames: Sequence[LabelledFrame], requested: str = TARGET_KEYS) -> tuple[str, list[str]]:
    """The targets to train on (``requested`` minus those no frame has, in e-f-s-m order) and warnings.

    A requested target that no frame has is dropped, with a warning. A target only
    some frames have is kept, with a warning: its missing labels become NaN
    (:func:`frame_targets`), and chgnet 0.4.2's ``CombinedLoss(allow_missing_labels=True)``
    masks NaN energies and NaN force/stress components out of loss and MAE, and skips
    a structure's magmoms when its label is None or contains NaN. Caveat (measured):
    for e, f and s, a batch in which *no* frame has the label gives a NaN loss and
    MAE (mean of an empty tensor). Gradients stay finite, but the epoch's logged
    loss and MAE become NaN, and a NaN energy MAE makes chgnet's ``Trainer`` stop
    ("Exit due to NaN"). Magmoms do not have this problem.
    ValueError if ``requested`` lacks "e", no frame has an energy, or there are no frames.
    """
    keys = _target_keys(requested)
    if not frames:
        raise InputError("no frames to train on")
    n = len(frames)
    kept, warnings = [], []
    for key in keys:
        name = TARGET_NAMES[key]
        n_labelled = sum(frame.has_label(key) for frame in frames)
        if n_labelled == 0 and key == "e":
            raise InputError(f"none of the {n} frames has an energy label")
        if n_labelled == 0:
            warnings.append(f"No frame has {name} labels: the {name} target ({key!r}) is dropped from the loss.")
            continue
        kept.append(key)
        if n_labelled < n:
            caveat = (
                ""
                if key == "m"
                else f" A batch in which no frame has {name} labels gives chgnet a NaN loss and MAE (logged for"
                " the epoch), so mix labelled frames into every batch."
            )
            warnings.append(
                f"Only {n_labelled} of {n} frames have {name} labels: the others get NaN labels, which chgnet's "
                f"CombinedLoss (allow_missing_labels=True) leaves out of the {name} loss.{caveat}"
            )
    return "".join(kept), warnings


def frame_targets(frame: LabelledFrame, targets: str) -> dict[str, torch.Tensor]:
    """One structure's target dict for chgnet's ``collate_graphs``, in the units and sign of CHGNet's output.

    "e": 0-d tensor, eV/atom; "f": (n, 3) eV/Å; "s": (3, 3) GPa as stored (no
    -0.1 kBar conversion); "m": (n,) μB, ``abs()`` taken as chgnet does (its
    predicted magmoms are non-negative). Missing labels are NaN tensors of the
    right shape. float32 (chgnet's ``TORCH_DTYPE``).
    """
    import torch

    keys = _target_keys(targets)
    n = frame.n_atoms
    out = {"e": torch.tensor(frame.energy_per_atom, dtype=torch.float32)}
    shapes = {"f": (n, 3), "s": (3, 3), "m": (n,)}
    for key in keys[1:]:
        value = getattr(frame, _LABEL_FIELDS[key])
        shape = shapes[key]
        if value is None:
            out[key] = torch.full(shape, float("nan"), dtype=torch.float32)
            continue
        if value.shape != shape:
            raise ValueError(f"{_describe(frame)}: {_PLURALS[key]} have shape {value.shape}, expected {shape}")
        tensor = torch.tensor(value, dtype=torch.float32)
        out[key] = tensor.abs() if key == "m" else tensor
    return out


# --------------------------------------------------------------------------- validation


def _describe(frame: LabelledFrame) -> str:
    return f"frame {frame.frame_id} ({frame.material}, {frame.content_hash[:12]})"


def _array_problems(name: str, value: np.ndarray | None, shape: tuple[int, ...]) -> list[str]:
    if value is None:
        return []
    if value.shape != shape:
        return [f"{name} have shape {value.shape}, expected {shape}"]
    if not np.isfinite(value).all():
        return [f"{name} are not all finite"]
    return []


def frame_problems(frame: LabelledFrame) -> list[str]:
    """What makes one frame unusable for CHGNet (empty when it is fine)."""
    numbers = frame.atomic_numbers
    n = numbers.size
    problems = []
    if numbers.ndim != 1 or n == 0:
        problems.append(f"atomic numbers have shape {numbers.shape}, expected (n,) with n > 0")
    elif not np.issubdtype(numbers.dtype, np.integer):
        problems.append(f"atomic numbers are {numbers.dtype}, not integers")
    else:
        bad = sorted({int(z) for z in numbers if not 1 <= z <= MAX_ATOMIC_NUMBER})
        if bad:
            problems.append(f"atomic numbers {bad} are outside CHGNet's 1..{MAX_ATOMIC_NUMBER}")
    problems += _array_problems("lattice vectors", frame.lattice, (3, 3))
    if frame.lattice.shape == (3, 3) and np.isfinite(frame.lattice).all() and abs(np.linalg.det(frame.lattice)) < 1e-6:
        problems.append("lattice has no volume")
    problems += _array_problems("fractional coordinates", frame.frac_coords, (n, 3))
    if not np.isfinite(frame.energy_per_atom):
        problems.append("energy per atom is not finite")
    problems += _array_problems("forces", frame.forces, (n, 3))
    problems += _array_problems("stresses", frame.stress, (3, 3))
    problems += _array_problems("magmoms", frame.magmoms, (n,))
    return problems


def validate_frames(frames: Sequence[LabelledFrame]) -> list[str]:
    """Reasons (one per problem, naming the frame) why frames are unusable; empty when all are fine.

    Checked: atomic numbers 1..94, shapes of every array against the atom count,
    finite values, a lattice with volume, a finite energy label. chgnet would
    silently swap such a frame for a random other one, so refuse before training.
    """
    return [f"{_describe(frame)}: {problem}" for frame in frames for problem in frame_problems(frame)]
