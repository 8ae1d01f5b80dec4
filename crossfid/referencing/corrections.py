"""Materials Project 2020 energy corrections of GGA/GGA+U energies, via pymatgen.

MP's GGA/GGA+U energies carry ad-hoc corrections: anion corrections (e.g. -0.687
eV per oxide O atom, -0.614 eV per Cl atom) and the GGA/GGA+U mixing corrections
of the U metals in oxides and fluorides (e.g. -2.256 eV per Fe atom). Forces and
stresses get no such corrections. This module only *applies* pymatgen's
``MaterialsProject2020Compatibility`` to plain inputs and reports what it did; it
re-implements nothing.

Settings (pymatgen defaults except the POTCAR check): ``compat_type="Advanced"``
(GGA/GGA+U mixing), ``correct_peroxide=True`` (oxide/peroxide/superoxide/ozonide
from the structure's O-O distances), ``strict_anions="require_bound"`` (anion
corrections only for species with guessed oxidation state <= -1, or the most
electronegative element when no guess exists), and ``check_potcar=False``: our
inputs carry no POTCAR symbols or hashes, and pymatgen's check would then fail
with a ``KeyError`` (not a ``CompatibilityError``) on every entry. The caller is
responsible for the energies coming from MP-compatible (MPRelaxSet-like) runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RUN_TYPES = ("GGA", "GGA+U")


@dataclass(frozen=True)
class CorrectionInput:
    """One GGA/GGA+U calculation to correct.

    ``structure``: ``pymatgen.core.Structure.as_dict()`` (or None when unknown);
    ``energy_per_atom``: uncorrected energy (eV/atom); ``run_type``: "GGA" or
    "GGA+U"; ``hubbards``: element → U (eV) used in the run (zeros allowed), None
    or empty for a plain GGA run.
    """

    identifier: str
    structure: Mapping[str, Any] | None
    energy_per_atom: float
    run_type: str
    hubbards: Mapping[str, float] | None = None


@dataclass(frozen=True)
class CorrectionTerm:
    """One energy adjustment: ``energy`` (eV, whole structure), ``energy_per_atom`` (eV/atom of the structure).

    For composition-based adjustments, ``per_species_atom`` is the correction per
    atom of the corrected species (eV, e.g. -0.687 for an oxide O) and
    ``species_atoms`` the number of such atoms in the structure; otherwise None.
    ``uncertainty``: MP2020's fitted uncertainty of the adjustment (eV, whole
    structure), None when pymatgen gives none.
    """

    name: str
    energy: float
    energy_per_atom: float
    per_species_atom: float | None
    species_atoms: float | None
    uncertainty: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "energy": self.energy,
            "energy_per_atom": self.energy_per_atom,
            "per_species_atom": self.per_species_atom,
            "species_atoms": self.species_atoms,
            "uncertainty": self.uncertainty,
        }


@dataclass(frozen=True)
class CorrectionResult:
    """MP2020-corrected energy of one input (eV/atom), or the reason it could not be corrected."""

    identifier: str
    energy_per_atom: float
    corrected_energy_per_atom: float | None
    correction_per_atom: float | None
    corrections: tuple[CorrectionTerm, ...] = ()
    reason: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.corrected_energy_per_atom is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "energy_per_atom": _finite_or_none(self.energy_per_atom),
            "corrected_energy_per_atom": self.corrected_energy_per_atom,
            "correction_per_atom": self.correction_per_atom,
            "corrections": [term.to_dict() for term in self.corrections],
            "reason": self.reason,
            "warnings": list(self.warnings),
        }


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _failed(item: CorrectionInput, reason: str, caught: Sequence[str] = ()) -> CorrectionResult:
    energy = _finite_or_none(getattr(item, "energy_per_atom", None))
    return CorrectionResult(
        identifier=str(getattr(item, "identifier", "")),
        energy_per_atom=math.nan if energy is None else energy,
        corrected_energy_per_atom=None,
        correction_per_atom=None,
        reason=reason,
        warnings=tuple(caught),
    )


def _u_values(hubbards: Mapping[str, float] | None) -> dict[str, float]:
    """Hubbard U values as floats (ValueError if one is not a finite number)."""
    values = {}
    for element, u in (hubbards or {}).items():
        number = _finite_or_none(u)
        if number is None:
            raise ValueError(f"U of {element} is not a finite number: {u!r}")
        values[str(element)] = number
    return values


def _compatibility():
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    return MaterialsProject2020Compatibility(check_potcar=False)


def _correct_one(item: CorrectionInput, compatibility: Any) -> CorrectionResult:
    from pymatgen.core import Structure
    from pymatgen.entries.compatibility import CompatibilityError
    from pymatgen.entries.computed_entries import CompositionEnergyAdjustment, ComputedStructureEntry

    if item.structure is None:
        return _failed(item, "no structure: MP2020 corrections need the structure (oxide type, composition)")
    if item.run_type not in RUN_TYPES:
        return _failed(item, f"run type {item.run_type!r} is not GGA or GGA+U; MP2020 corrections do not apply")
    energy = _finite_or_none(item.energy_per_atom)
    if energy is None:
        return _failed(item, f"energy per atom is not a finite number: {item.energy_per_atom!r}")
    try:
        u_values = _u_values(item.hubbards)
    except ValueError as exc:
        return _failed(item, str(exc))
    uses_u = any(u != 0.0 for u in u_values.values())
    if item.run_type == "GGA" and uses_u:
        return _failed(item, f"run type GGA but non-zero Hubbard U values {u_values}")
    if item.run_type == "GGA+U" and not uses_u:
        return _failed(item, "run type GGA+U but no non-zero Hubbard U value")
    try:
        structure = Structure.from_dict(dict(item.structure))
    except Exception as exc:  # any malformed dict is a per-entry failure
        return _failed(item, f"structure could not be read: {type(exc).__name__}: {exc}")

    n_atoms = float(structure.composition.num_atoms)
    entry = ComputedStructureEntry(
        structure,
        energy * n_atoms,
        parameters={"run_type": item.run_type, "hubbards": u_values},
        entry_id=str(item.identifier),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            processed = compatibility.process_entry(entry, clean=True, on_error="raise")
        except CompatibilityError as exc:
            # pymatgen appends the whole entry dict to U-value errors; keep the message readable
            message = str(exc).split(" for {", 1)[0]
            return _failed(item, f"rejected by MaterialsProject2020Compatibility: {message}", _messages(caught))
        except Exception as exc:  # never raise for one bad entry
            return _failed(item, f"pymatgen failed: {type(exc).__name__}: {exc}", _messages(caught))
    notes = _messages(caught)
    if processed is None:
        return _failed(item, "rejected by MaterialsProject2020Compatibility (conflicting earlier adjustments)", notes)

    terms = []
    for adjustment in processed.energy_adjustments:
        value = float(adjustment.value)
        per_species = species = None
        if isinstance(adjustment, CompositionEnergyAdjustment) and adjustment.n_atoms:
            species = float(adjustment.n_atoms)
            per_species = value / species
        terms.append(
            CorrectionTerm(
                name=str(adjustment.name),
                energy=value,
                energy_per_atom=value / n_atoms,
                per_species_atom=per_species,
                species_atoms=species,
                uncertainty=_finite_or_none(adjustment.uncertainty),
            )
        )
    correction_per_atom = float(processed.correction) / n_atoms
    return CorrectionResult(
        identifier=str(item.identifier),
        energy_per_atom=energy,
        corrected_energy_per_atom=energy + correction_per_atom,
        correction_per_atom=correction_per_atom,
        corrections=tuple(terms),
        reason=None,
        warnings=notes,
    )


def _messages(caught: Sequence[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(w.message) for w in caught))


def mp2020_corrections(entries: Sequence[CorrectionInput]) -> list[CorrectionResult]:
    """Apply pymatgen's ``MaterialsProject2020Compatibility`` to each input, in order.

    Corrected energy per atom = uncorrected + correction per atom (eV/atom). An
    input that cannot be corrected (no structure, run type not GGA/GGA+U, run type
    inconsistent with its U values, unreadable structure, or rejected by the
    compatibility scheme, e.g. an Fe oxide run without U, or a U value differing
    from MPRelaxSet's) gets ``corrected_energy_per_atom=None`` and a ``reason``;
    this function never raises for one bad entry. The POTCAR check is skipped
    (``check_potcar=False``) because the inputs carry no POTCAR data. Warnings
    pymatgen emits (e.g. failed oxidation-state guesses) are kept per entry.
    """
    compatibility = _compatibility()
    results = []
    for item in entries:
        try:
            results.append(_correct_one(item, compatibility))
        except Exception as exc:  # never raise for one bad entry
            results.append(_failed(item, f"could not be corrected: {type(exc).__name__}: {exc}"))
    return results
