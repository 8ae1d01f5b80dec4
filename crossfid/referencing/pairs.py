"""Reference entries of the same materials at two fidelities, read from the database.

A fidelity *set* such as ``GGA,GGA+U`` stands for Materials Project's mixed
GGA/GGA+U scheme: each material contributes the entry of the first listed
fidelity it has. Compositions come from the materials' reduced formulas (the
fractions are the same as the structure's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crossfid.hashing import json_digest
from crossfid.referencing.composition import fractions_from_formula


@dataclass(frozen=True)
class FidelityEntries:
    """One reference entry per material at a fidelity set (energies eV/atom; NaN where not stored)."""

    material_ids: list[str]
    formulas: list[str]
    fidelity: list[str]
    energy: np.ndarray  # uncorrected
    corrected: np.ndarray  # as stored by the source (MP2020 for MP GGA/GGA+U), NaN if none
    formation: np.ndarray  # as stored by the source, NaN if none
    structures: list[dict | None]
    hubbards: list[dict | None]
    n_atoms: np.ndarray  # atoms in the entry's cell (NaN if unknown)

    @property
    def label(self) -> np.ndarray:
        """The energy an analysis compares (eV/atom): corrected when stored, else uncorrected.

        This is CHGNet's training label (MPtrj was fitted on MP2020-corrected
        energies), so energies and shipped AtomRefs are on the same footing.
        """
        return np.where(np.isfinite(self.corrected), self.corrected, self.energy)

    def index(self) -> dict[str, int]:
        return {m: i for i, m in enumerate(self.material_ids)}


_ENTRIES_SQL = text(
    """
    SELECT DISTINCT ON (r.material_id)
           m.external_id, m.formula, r.fidelity, r.energy_per_atom, r.corrected_energy_per_atom,
           r.formation_energy_per_atom, r.structure, t.hubbards, r.n_atoms
    FROM reference_entries r
    JOIN materials m ON m.id = r.material_id
    LEFT JOIN tasks t ON t.id = r.task_id
    WHERE r.fidelity = ANY(:fidelities)
      AND (CAST(:dataset AS bigint) IS NULL
           OR r.material_id IN (SELECT material_id FROM dataset_frames WHERE dataset_id = :dataset))
    ORDER BY r.material_id, array_position(CAST(:fidelities AS text[]), r.fidelity)
    """
)


def _nan(value) -> float:
    return np.nan if value is None else float(value)


def load_entries(session: Session, fidelities: Sequence[str], dataset_id: int | None = None) -> FidelityEntries:
    """The reference entry of every material at a fidelity set (restricted to a dataset's materials if given)."""
    rows = session.execute(_ENTRIES_SQL, {"fidelities": list(fidelities), "dataset": dataset_id}).all()
    rows = sorted(rows, key=lambda r: r[0])
    return FidelityEntries(
        material_ids=[r[0] for r in rows],
        formulas=[r[1] for r in rows],
        fidelity=[r[2] for r in rows],
        energy=np.array([float(r[3]) for r in rows]),
        corrected=np.array([_nan(r[4]) for r in rows]),
        formation=np.array([_nan(r[5]) for r in rows]),
        structures=[r[6] for r in rows],
        hubbards=[r[7] for r in rows],
        n_atoms=np.array([_nan(r[8]) for r in rows]),
    )


@dataclass(frozen=True)
class PairedEntries:
    """Materials that have entries at both fidelity sets, in the same order on both sides."""

    source_label: str
    target_label: str
    source: FidelityEntries
    target: FidelityEntries
    composition: np.ndarray  # (n, 94)

    @property
    def n(self) -> int:
        return len(self.source.material_ids)

    @property
    def material_ids(self) -> list[str]:
        return self.source.material_ids

    def input_hash(self) -> str:
        """SHA-256 of what an analysis of these pairs reads: ids, fidelities, energies (full precision)."""
        payload = [
            [m, sf, tf, repr(float(se)), repr(float(sc)), repr(float(te)), repr(float(tc))]
            for m, sf, tf, se, sc, te, tc in zip(
                self.material_ids,
                self.source.fidelity,
                self.target.fidelity,
                self.source.energy,
                self.source.corrected,
                self.target.energy,
                self.target.corrected,
                strict=True,
            )
        ]
        return json_digest(payload)

    def atom_counts(self) -> np.ndarray:
        """Atoms of each element per material (n, 94): fractions × the entry's atoms (formula units if unknown)."""
        n_atoms = np.where(np.isfinite(self.source.n_atoms), self.source.n_atoms, self.target.n_atoms)
        if not np.isfinite(n_atoms).all():
            from pymatgen.core import Composition

            formula_atoms = np.array([Composition(f).num_atoms for f in self.source.formulas])
            n_atoms = np.where(np.isfinite(n_atoms), n_atoms, formula_atoms)
        return self.composition * n_atoms[:, None]


def _take(entries: FidelityEntries, ids: Iterable[str]) -> FidelityEntries:
    where = entries.index()
    idx = [where[m] for m in ids]
    return FidelityEntries(
        material_ids=[entries.material_ids[i] for i in idx],
        formulas=[entries.formulas[i] for i in idx],
        fidelity=[entries.fidelity[i] for i in idx],
        energy=entries.energy[idx],
        corrected=entries.corrected[idx],
        formation=entries.formation[idx],
        structures=[entries.structures[i] for i in idx],
        hubbards=[entries.hubbards[i] for i in idx],
        n_atoms=entries.n_atoms[idx],
    )


def pair_entries(source: FidelityEntries, target: FidelityEntries, source_label: str, target_label: str):
    """Keep the materials present on both sides (sorted by material id)."""
    shared = sorted(set(source.material_ids) & set(target.material_ids))
    s, t = _take(source, shared), _take(target, shared)
    composition = (
        np.vstack([fractions_from_formula(f) for f in s.formulas]) if shared else np.zeros((0, 94), dtype=float)
    )
    return PairedEntries(source_label, target_label, s, t, composition)


def entries_composition(entries: FidelityEntries) -> np.ndarray:
    if not entries.formulas:
        return np.zeros((0, 94))
    return np.vstack([fractions_from_formula(f) for f in entries.formulas])


def label(fidelities: Sequence[str]) -> str:
    """``["GGA", "GGA+U"]`` → ``"GGA/GGA+U"``."""
    return "/".join(fidelities)
