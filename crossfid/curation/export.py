"""Export the parts of a split: extended XYZ (MACE, NequIP, ASE) and MPtrj-layout JSON (CHGNet).

One file per part, named ``{dataset}-v{version}_{strategy}_{ratios}_seed{seed}_{part}.{extxyz|json}``
(``_train-{size}`` for a nested training subset). Frames are ordered by (material id,
task id, source name, ionic step, content hash), compared as Python strings, never by
database ids or collation; nothing time-dependent is written, and floats are written
as their shortest exact decimal (``repr``). Exports of the same split are therefore
byte-identical, in any database holding the same data.

extxyz layout
-------------
Written directly (ASE's own writer rounds per-atom columns to 8 decimals) in the
extended XYZ format that ``ase.io.read`` parses; every value reads back exactly::

    4
    Lattice="ax ay az bx by bz cx cy cz" Properties=species:S:1:pos:R:3:REF_forces:R:3:REF_magmoms:R:1
        REF_energy=-26.1 REF_corrected_energy=-27.6 REF_stress="xx yy zz yz xz xy" material_id=mp-1
        task_id=mp-1 ionic_step=0 frame_content_hash=<sha256> fidelity=GGA+U config_type=GGA+U pbc="T T T"
    Fe x y z fx fy fz m
    ...

(the comment line is one line). No calculator: all labels are plain ``atoms.info`` /
``atoms.arrays`` entries, so ASE ≥ 3.23 does not turn them into a
``SinglePointCalculator`` and MACE / NequIP read them by key:

* ``REF_energy`` — total energy in eV, uncorrected (VASP free energy);
  ``REF_corrected_energy`` — eV with the source's corrections (MP2020), when known
* ``REF_forces`` (per atom) — eV/Å
* ``REF_stress`` — Voigt 6 (xx, yy, zz, yz, xz, xy) of the symmetric part of the
  stored tensor, in eV/Å³ with ASE's sign (tensile positive): ``stress_GPa × ase.units.GPa``.
  Voigt 6 is what ``atoms.get_stress()`` returns and what every MACE version's
  ``voigt_to_matrix`` and NequIP accept.
* ``REF_magmoms`` (per atom) — μB
* ``material_id``, ``task_id``, ``ionic_step``, ``frame_content_hash``, ``fidelity``, and
  ``config_type`` = the fidelity (MACE reports errors per config type). Purely numeric
  ids are read back by ASE as integers.

Labels a frame does not have are left out (MACE then gives them zero weight).
MACE: ``--energy_key REF_energy --forces_key REF_forces --stress_key REF_stress`` (its
defaults). NequIP: ``key_mapping: {REF_energy: total_energy, REF_forces: forces,
REF_stress: stress}``.

MPtrj layout
------------
``{material_id: {frame_id: frame}}``, materials in order, one material per line, with
frame ids ``"{task}-0-{ionic_step}"`` (a leading ``mptrj:`` of the task id removed, so
``crossfid.ingest.mptrj.read_mptrj`` maps the frames back to the same tasks and ionic
steps) and per frame:

* ``structure`` — pymatgen ``Structure`` dict (lattice matrix, pbc, sites with species,
  ``abc`` fractional and ``xyz`` Cartesian coordinates in Å)
* ``uncorrected_total_energy`` / ``corrected_total_energy`` (eV; the latter null when
  unknown) and ``energy_per_atom`` = corrected (else uncorrected) total / n, CHGNet's
  energy label
* ``force`` — eV/Å, (n, 3)
* ``stress`` — 3×3 in kBar with VASP's sign (compressive positive): ``stress_GPa × −10``,
  which CHGNet's ``StructureJsonData`` multiplies by −0.1 back to GPa; null when unknown
* ``magmom`` — μB, (n,) or null; ``mp_id`` — the material id

Frames without energy or forces cannot be MPtrj frames and make the export fail.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from ase import units
from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from crossfid.curation.split_store import resolve_split
from crossfid.curation.splits import PARTS, SplitError
from crossfid.db.models import Dataset, SplitSubset
from crossfid.errors import InputError

__all__ = ["FORMATS", "ExportError", "ExportFrame", "export_split", "extxyz_block", "mptrj_frame", "write_mptrj"]

FORMATS = ("extxyz", "mptrj")
_SUFFIX = {"extxyz": "extxyz", "mptrj": "json"}

#: GPa → eV/Å³, exactly as ASE defines it (CODATA 2014: 1 / 160.21766208)
EV_PER_A3_PER_GPA = float(units.GPa)
#: GPa (tensile positive) → kBar with VASP's sign (compressive positive)
GPA_TO_VASP_KBAR = -10.0

_CHUNK = 1000


class ExportError(InputError):
    """An export that cannot be written; ``str(error)`` is a one-line reason."""


@dataclass(frozen=True)
class ExportFrame:
    """One frame with its labels in the database layout and units (see :mod:`crossfid.db.models`)."""

    material: str
    task: str
    source: str
    ionic_step: int
    content_hash: str
    fidelity: str
    lattice: Sequence[float]  # 9, row-major, Å
    atomic_numbers: Sequence[int]
    frac_coords: Sequence[float]  # 3n
    energy: float | None  # eV
    corrected_energy: float | None  # eV
    forces: Sequence[float] | None  # 3n, eV/Å
    stress: Sequence[float] | None  # 9, GPa, tensile positive
    magmoms: Sequence[float] | None  # n, μB

    @property
    def n_atoms(self) -> int:
        return len(self.atomic_numbers)


def _sort_key(row: Sequence[Any]) -> tuple:
    # (frame id, material, task, source, ionic step, content hash, fidelity)
    return row[1], row[2], row[3], row[4], row[5]


# --------------------------------------------------------------------------- geometry and numbers


def cartesian(lattice: Sequence[float], frac_coords: Sequence[float]) -> np.ndarray:
    """Cartesian positions (n, 3) in Å, computed elementwise (no BLAS) so the bits are reproducible."""
    cell = np.reshape(np.asarray(lattice, dtype=float), (3, 3))
    frac = np.reshape(np.asarray(frac_coords, dtype=float), (-1, 3))
    return frac[:, 0:1] * cell[0] + frac[:, 1:2] * cell[1] + frac[:, 2:3] * cell[2]


def voigt_ev_per_a3(stress_gpa: Sequence[float]) -> list[float]:
    """Voigt 6 (xx, yy, zz, yz, xz, xy) in eV/Å³ of the symmetric part of a 3×3 GPa tensor (ASE sign kept)."""
    s = np.reshape(np.asarray(stress_gpa, dtype=float), (3, 3))
    voigt = [s[0, 0], s[1, 1], s[2, 2], (s[1, 2] + s[2, 1]) / 2, (s[0, 2] + s[2, 0]) / 2, (s[0, 1] + s[1, 0]) / 2]
    return [float(v) * EV_PER_A3_PER_GPA for v in voigt]


def _f(value: float) -> str:
    return repr(float(value))


_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-:#()/@~^%")


def _text(value: str) -> str:
    """An extxyz value: bare when safe, else double-quoted with ``\\`` and ``"`` escaped."""
    if value and set(value) <= _SAFE:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- extxyz


def extxyz_block(frame: ExportFrame) -> str:
    """The extended XYZ block of one frame (layout in the module doc), ending with a newline."""
    from ase.data import chemical_symbols

    n = frame.n_atoms
    lattice = [float(x) for x in frame.lattice]
    columns = ["species:S:1", "pos:R:3"]
    per_atom: list[np.ndarray] = [cartesian(lattice, frame.frac_coords)]
    if frame.forces is not None:
        columns.append("REF_forces:R:3")
        per_atom.append(np.reshape(np.asarray(frame.forces, dtype=float), (n, 3)))
    if frame.magmoms is not None:
        columns.append("REF_magmoms:R:1")
        per_atom.append(np.reshape(np.asarray(frame.magmoms, dtype=float), (n, 1)))
    header = [f'Lattice="{" ".join(map(_f, lattice))}"', "Properties=" + ":".join(columns)]
    if frame.energy is not None:
        header.append(f"REF_energy={_f(frame.energy)}")
    if frame.corrected_energy is not None:
        header.append(f"REF_corrected_energy={_f(frame.corrected_energy)}")
    if frame.stress is not None:
        header.append(f'REF_stress="{" ".join(map(_f, voigt_ev_per_a3(frame.stress)))}"')
    header += [
        f"material_id={_text(frame.material)}",
        f"task_id={_text(frame.task)}",
        f"ionic_step={int(frame.ionic_step)}",
        f"frame_content_hash={frame.content_hash}",
        f"fidelity={_text(frame.fidelity)}",
        f"config_type={_text(frame.fidelity)}",
        'pbc="T T T"',
    ]
    values = np.hstack(per_atom).tolist()
    lines = [str(n), " ".join(header)]
    for z, row in zip(frame.atomic_numbers, values, strict=True):
        lines.append(" ".join([chemical_symbols[int(z)], *map(_f, row)]))
    return "\n".join(lines) + "\n"


def write_extxyz(fh: TextIO, frames: Iterable[ExportFrame]) -> int:
    n = 0
    for frame in frames:
        fh.write(extxyz_block(frame))
        n += 1
    return n


# --------------------------------------------------------------------------- MPtrj


def structure_dict(frame: ExportFrame) -> dict[str, Any]:
    """A pymatgen ``Structure.as_dict()``-compatible dict with only exactly reproducible numbers."""
    from ase.data import chemical_symbols

    cell = np.reshape(np.asarray(frame.lattice, dtype=float), (3, 3)).tolist()
    frac = np.reshape(np.asarray(frame.frac_coords, dtype=float), (-1, 3)).tolist()
    xyz = cartesian(frame.lattice, frame.frac_coords).tolist()
    sites = []
    for z, abc, position in zip(frame.atomic_numbers, frac, xyz, strict=True):
        symbol = chemical_symbols[int(z)]
        sites.append(
            {
                "species": [{"element": symbol, "occu": 1}],
                "abc": abc,
                "xyz": position,
                "properties": {},
                "label": symbol,
            }
        )
    return {
        "@module": "pymatgen.core.structure",
        "@class": "Structure",
        "charge": 0,
        "lattice": {"matrix": cell, "pbc": [True, True, True]},
        "properties": {},
        "sites": sites,
    }


def mptrj_frame(frame: ExportFrame) -> dict[str, Any]:
    """One frame in the MPtrj layout (see the module doc)."""
    if frame.energy is None or frame.forces is None:
        missing = "energy" if frame.energy is None else "forces"
        raise ExportError(
            f"frame {frame.content_hash[:12]} of {frame.material} has no {missing}: the MPtrj layout needs it"
        )
    n = frame.n_atoms
    label = frame.corrected_energy if frame.corrected_energy is not None else frame.energy
    stress = None
    if frame.stress is not None:
        stress = (np.reshape(np.asarray(frame.stress, dtype=float), (3, 3)) * GPA_TO_VASP_KBAR).tolist()
    return {
        "structure": structure_dict(frame),
        "uncorrected_total_energy": float(frame.energy),
        "corrected_total_energy": None if frame.corrected_energy is None else float(frame.corrected_energy),
        "energy_per_atom": float(label) / n,
        "force": np.reshape(np.asarray(frame.forces, dtype=float), (n, 3)).tolist(),
        "stress": stress,
        "magmom": None if frame.magmoms is None else [float(m) for m in frame.magmoms],
        "mp_id": frame.material,
    }


def _task_labels(frames: Sequence[ExportFrame]) -> dict[tuple[str, str], str]:
    """Task part of the frame ids of one material: the task id without ``mptrj:``, made unique."""
    labels: dict[tuple[str, str], str] = {}
    used: set[str] = set()
    for task, source in sorted({(f.task, f.source) for f in frames}):
        base = task.removeprefix("mptrj:")
        label, k = base, 1
        while label in used:
            k += 1
            label = f"{base}~{k}"
        used.add(label)
        labels[task, source] = label
    return labels


def write_mptrj(fh: TextIO, frames: Iterable[ExportFrame]) -> int:
    """Write frames (sorted by material) as one MPtrj-layout JSON object; return how many."""
    n = 0
    fh.write("{")
    for i, (material, group) in enumerate(itertools.groupby(frames, key=lambda f: f.material)):
        group = list(group)
        labels = _task_labels(group)
        document = {f"{labels[f.task, f.source]}-0-{f.ionic_step}": mptrj_frame(f) for f in group}
        if len(document) != len(group):
            raise ExportError(f"material {material} has two frames with the same task and ionic step")
        fh.write(("\n" if i == 0 else ",\n") + json.dumps(material) + ":")
        fh.write(json.dumps(document, separators=(",", ":"), allow_nan=False))
        n += len(group)
    fh.write("\n}\n" if n else "}\n")
    return n


# --------------------------------------------------------------------------- from the database


def _frames(conn: Connection, ordered: list[Sequence[Any]]) -> Iterator[ExportFrame]:
    """Frames of ``ordered`` metadata rows, in that order, loaded in chunks."""
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        rows = conn.exec_driver_sql(
            "SELECT id, lattice, atomic_numbers, frac_coords, energy, corrected_energy, forces, stress, magmoms "
            "FROM frames WHERE id = ANY(%(ids)s)",
            {"ids": [row[0] for row in chunk]},
        )
        arrays = {row[0]: row[1:] for row in rows}
        for frame_id, material, task, source, step, content_hash, fidelity in chunk:
            yield ExportFrame(material, task, source, step, content_hash, fidelity, *arrays[frame_id])


def export_split(
    engine: Engine,
    split_ref: str | int,
    out_dir: str | os.PathLike[str],
    fmt: str = "extxyz",
    parts: Sequence[str] = PARTS,
    *,
    subset: int | None = None,
) -> list[Path]:
    """Write one file per part of a split into ``out_dir`` (created if needed); return the paths.

    ``fmt``: ``extxyz`` or ``mptrj``. ``subset``: export only the nested training
    subset of that size (``parts`` must then be just ``train``). Each file is written
    to a temporary name and renamed, so a failed export leaves no partial file.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    parts = list(dict.fromkeys(parts))
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ExportError(f"unknown split part {', '.join(unknown) or '(none)'}; known: {', '.join(PARTS)}")
    if subset is not None and parts != ["train"]:
        raise ExportError("a nested subset is part of the training set: export it with parts=('train',)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with engine.connect() as conn:
        session = Session(bind=conn)
        split = resolve_split(session, split_ref)
        dataset = session.get(Dataset, split.dataset_id)
        only: list[int] | None = None
        if subset is not None:
            only = session.scalar(
                select(SplitSubset.frame_ids).where(SplitSubset.split_id == split.id, SplitSubset.size == subset)
            )
            if only is None:
                sizes = sorted(session.scalars(select(SplitSubset.size).where(SplitSubset.split_id == split.id)))
                have = ", ".join(map(str, sizes)) or "none"
                raise SplitError(f"split {split.id} has no training subset of {subset} frames (subsets: {have})")
        ratios = "-".join(f"{r:g}" for r in split.ratios)
        stem = f"{dataset.name}-v{dataset.version}_{split.strategy}_{ratios}_seed{split.seed}"
        for part in parts:
            meta = conn.exec_driver_sql(
                """
                SELECT sm.frame_id, m.external_id, t.external_id, s.name, f.ionic_step, f.content_hash, t.fidelity
                  FROM split_members sm
                  JOIN frames f ON f.id = sm.frame_id
                  JOIN tasks t ON t.id = f.task_id
                  JOIN sources s ON s.id = t.source_id
                  JOIN materials m ON m.id = sm.material_id
                 WHERE sm.split_id = %(id)s AND sm.part = %(part)s
                   AND (%(only)s::bigint[] IS NULL OR sm.frame_id = ANY(%(only)s::bigint[]))
                """,
                {"id": split.id, "part": part, "only": only},
            ).all()
            ordered = sorted(meta, key=_sort_key)
            name = f"{stem}_{part}" if subset is None else f"{stem}_train-{subset}"
            path = out / f"{name}.{_SUFFIX[fmt]}"
            partial = path.with_name(path.name + ".partial")
            try:
                with open(partial, "w", encoding="utf-8", newline="\n") as fh:
                    writer = write_extxyz if fmt == "extxyz" else write_mptrj
                    writer(fh, _frames(conn, ordered))
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
            written.append(path)
    return written
