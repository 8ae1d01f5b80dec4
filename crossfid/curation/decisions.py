"""What the curation rules and the dedupe share: the decision vocabulary, the frame view they read, their outputs.

Pure, no database access. :mod:`crossfid.curation.rules` (rules 1-6 and the order of
application) and :mod:`crossfid.curation.dedupe` (rule 7) both build on it; the meaning of
each decision name is documented in :mod:`crossfid.curation.rules`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from crossfid.ingest.records import Frame

# --------------------------------------------------------------------------- vocabulary

NO_REFERENCE_ENTRY = "no_reference_entry"
HUBBARD_CONSISTENCY = "hubbard_consistency"
FINAL_FRAME_AGREEMENT = "final_frame_agreement"
COMPLETE_LABELS = "complete_labels"
ELECTRONIC_CONVERGENCE = "electronic_convergence"
ENERGY_WINDOW = "energy_window"
MIN_DISTANCE = "min_distance"
DUPLICATE = "duplicate"
REFERENCE_FRAME = "reference_frame"
ENERGY_UNIQUE = "energy_unique"
STRUCTURE_UNIQUE = "structure_unique"

#: rule names of rejections, in order of application
REJECTION_RULES: tuple[str, ...] = (
    NO_REFERENCE_ENTRY,
    HUBBARD_CONSISTENCY,
    FINAL_FRAME_AGREEMENT,
    COMPLETE_LABELS,
    ELECTRONIC_CONVERGENCE,
    ENERGY_WINDOW,
    MIN_DISTANCE,
    DUPLICATE,
)
#: reasons of acceptances
ACCEPTANCE_REASONS: tuple[str, ...] = (REFERENCE_FRAME, ENERGY_UNIQUE, STRUCTURE_UNIQUE)
#: the number of the rule in CURATION_RULES.md behind each decision name (None: no rule could be applied,
#: or a rule that is not one of CURATION_RULES.md's, such as the ``min_distance`` safety rule)
RULE_NUMBERS: dict[str, int | None] = {
    NO_REFERENCE_ENTRY: None,
    MIN_DISTANCE: None,
    HUBBARD_CONSISTENCY: 1,
    FINAL_FRAME_AGREEMENT: 2,
    COMPLETE_LABELS: 3,
    ELECTRONIC_CONVERGENCE: 4,
    ENERGY_WINDOW: 5,
    REFERENCE_FRAME: 6,
    DUPLICATE: 7,
    ENERGY_UNIQUE: 7,
    STRUCTURE_UNIQUE: 7,
}


# --------------------------------------------------------------------------- inputs


def is_finite(value: float | None) -> bool:
    """``value`` is a number and finite (None is not)."""
    return value is not None and math.isfinite(value)


@dataclass(frozen=True, eq=False)
class FrameView:
    """What the rules need of one frame (one ``frames`` row). Compared by identity.

    ``key`` is any hashable the caller chooses (the database frame id). Units as in
    the database: ``lattice`` (3, 3) Å with the lattice vectors as rows (the 9 stored
    floats reshaped row-major), ``frac_coords`` (n, 3), ``energy_per_atom`` eV/atom.
    ``has_forces`` / ``has_stress``: the label is stored and finite (the database
    guarantees finiteness of stored arrays). The pymatgen ``Structure`` is built
    lazily, once, by :attr:`structure`.
    """

    key: Hashable
    ionic_step: int
    n_atoms: int
    energy_per_atom: float | None
    has_energy: bool
    has_forces: bool
    has_stress: bool
    n_electronic_steps: int | None
    scf_converged: bool | None
    lattice: np.ndarray
    atomic_numbers: np.ndarray
    frac_coords: np.ndarray

    def __post_init__(self) -> None:
        lattice = np.asarray(self.lattice, dtype=float).reshape(3, 3)
        numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        frac = np.asarray(self.frac_coords, dtype=float).reshape(-1, 3)
        if numbers.size != self.n_atoms or frac.shape[0] != self.n_atoms:
            raise ValueError(
                f"frame {self.key!r}: n_atoms={self.n_atoms} but {numbers.size} atomic numbers "
                f"and {frac.shape[0]} fractional coordinates"
            )
        object.__setattr__(self, "lattice", lattice)
        object.__setattr__(self, "atomic_numbers", numbers)
        object.__setattr__(self, "frac_coords", frac)
        if self.energy_per_atom is not None:
            object.__setattr__(self, "energy_per_atom", float(self.energy_per_atom))

    @property
    def energy_ok(self) -> bool:
        """An energy is stored and finite."""
        return bool(self.has_energy) and is_finite(self.energy_per_atom)

    @cached_property
    def structure(self) -> Structure:
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.lattice), [int(z) for z in self.atomic_numbers], self.frac_coords)

    @classmethod
    def from_arrays(
        cls,
        key: Hashable,
        ionic_step: int,
        lattice: Any,
        atomic_numbers: Any,
        frac_coords: Any,
        energy_per_atom: float | None,
        *,
        forces: Any = None,
        stress: Any = None,
        n_electronic_steps: int | None = None,
        scf_converged: bool | None = None,
    ) -> FrameView:
        """Build from stored arrays (flat or shaped); label flags are "present and all finite"."""
        numbers = np.asarray(atomic_numbers).reshape(-1)

        def present(value: Any) -> bool:
            return value is not None and bool(np.all(np.isfinite(np.asarray(value, dtype=float))))

        return cls(
            key=key,
            ionic_step=int(ionic_step),
            n_atoms=int(numbers.size),
            energy_per_atom=None if energy_per_atom is None else float(energy_per_atom),
            has_energy=is_finite(None if energy_per_atom is None else float(energy_per_atom)),
            has_forces=present(forces),
            has_stress=present(stress),
            n_electronic_steps=None if n_electronic_steps is None else int(n_electronic_steps),
            scf_converged=None if scf_converged is None else bool(scf_converged),
            lattice=lattice,
            atomic_numbers=numbers,
            frac_coords=frac_coords,
        )

    @classmethod
    def from_record(cls, frame: Frame, key: Hashable) -> FrameView:
        """Build from a canonical :class:`crossfid.ingest.records.Frame`."""
        return cls.from_arrays(
            key,
            frame.ionic_step,
            frame.lattice,
            frame.atomic_numbers,
            frame.frac_coords,
            frame.energy_per_atom,
            forces=frame.forces,
            stress=frame.stress,
            n_electronic_steps=frame.n_electronic_steps,
            scf_converged=frame.scf_converged,
        )


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Decision:
    """The curation decision for one frame.

    ``rule``: for a rejection the rule that rejected it, for an acceptance the reason
    (module doc). ``detail``: the numbers behind it (JSON-safe apart from the frame
    keys, which are whatever the caller used). ``message``: one line a person reads.
    """

    frame_key: Hashable
    accepted: bool
    rule: str
    detail: Mapping[str, Any]
    message: str

    @property
    def rule_number(self) -> int | None:
        return RULE_NUMBERS.get(self.rule)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frame_key": self.frame_key,
            "accepted": self.accepted,
            "rule": self.rule,
            "detail": dict(self.detail),
            "message": self.message,
        }


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule did: ``remaining`` go on to the next rule, ``accepted`` were accepted by this
    rule (rules 6, 7), ``decisions`` are this rule's decisions (rejections for 1-5, one per frame)."""

    remaining: tuple[Any, ...] = ()
    accepted: tuple[FrameView, ...] = ()
    decisions: tuple[Decision, ...] = ()


def fmt(value: float) -> str:
    """Numbers in decision messages: 6 significant digits, no trailing zeros (1.37, 0.02, 1e-05)."""
    return f"{value:.6g}"
