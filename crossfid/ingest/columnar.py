"""Columnar fast path for a task's frames: validate, hash and COPY-encode them as stacked arrays.

The per-frame path (:func:`crossfid.ingest.records.validate_frame`, one binary
row at a time) costs tens of microseconds of Python per frame. Frames of one task
nearly always share their atom count, so here they are stacked into (F, ...)
arrays, validated with a handful of vectorised numpy operations, and encoded into
PostgreSQL binary COPY rows with one numpy structured array per group of frames
that share the same missing labels.

:func:`frame_block` returns None when the fast path does not apply (mixed atom
counts, or any frame that fails validation); the loader then falls back to the
per-frame path, which produces the exact refusal reasons. Both paths store the
same values and the same content hashes (tests check this).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossfid.db.pgbinary import FLOAT8_OID, INT2_OID
from crossfid.hashing import FRAME_HASH_DOMAIN, frame_record_hash
from crossfid.ingest.records import (
    MAX_ABS_ENERGY_PER_ATOM,
    MAX_ABS_FORCE,
    MAX_ABS_FRACTIONAL,
    MAX_ABS_MAGMOM,
    MAX_ABS_STRESS,
    MAX_INT4,
    MAX_LATTICE_LENGTH,
    MIN_LATTICE_LENGTH,
    Frame,
    to_3x3,
)

_PREFIX = FRAME_HASH_DOMAIN
_OPTIONAL = ("forces", "stress", "magmoms", "energy", "corrected_energy", "n_electronic_steps", "scf_converged")


@dataclass
class FrameBlock:
    """F frames of one task with n atoms each, as stacked arrays (canonical units)."""

    ionic_step: np.ndarray  # (F,)
    atomic_numbers: np.ndarray  # (F, n) int16
    lattice: np.ndarray  # (F, 3, 3)
    frac_coords: np.ndarray  # (F, n, 3)
    forces: np.ndarray  # (F, n, 3), NaN rows where missing
    stress: np.ndarray  # (F, 3, 3)
    magmoms: np.ndarray  # (F, n)
    energy: np.ndarray  # (F,)
    corrected_energy: np.ndarray  # (F,)
    n_electronic_steps: np.ndarray  # (F,) int (see present)
    scf_converged: np.ndarray  # (F,) int8 0/1 (see present)
    present: dict[str, np.ndarray]  # label name → (F,) bool
    content_hash: list[str]

    @property
    def n_frames(self) -> int:
        return len(self.ionic_step)

    @property
    def n_atoms(self) -> int:
        return self.atomic_numbers.shape[1]


def _stack(frames: Sequence[Frame], name: str, shape: tuple[int, ...], convert=None) -> tuple[np.ndarray, np.ndarray]:
    values = [getattr(f, name) for f in frames]
    present = np.array([v is not None for v in values])
    if present.all() and convert is None:
        out = np.asarray(values, dtype=float)
        if out.shape != (len(frames), *shape):
            raise ValueError(name)
        return out, present
    out = np.full((len(frames), *shape), np.nan)
    for i, value in enumerate(values):
        if value is not None:
            value = convert(value) if convert else np.asarray(value, dtype=float)
            if value.shape != shape:
                raise ValueError(name)
            out[i] = value
    return out, present


def frame_block(frames: Sequence[Frame]) -> FrameBlock | None:
    """Stack and validate ``frames``; None when any frame needs the per-frame path."""
    if not frames:
        return None
    try:
        numbers = np.array([np.asarray(f.atomic_numbers) for f in frames])
        if numbers.ndim != 2 or numbers.shape[1] == 0 or not np.issubdtype(numbers.dtype, np.integer):
            return None
        n = numbers.shape[1]
        lattice = np.array([f.lattice for f in frames], dtype=float)
        frac = np.array([f.frac_coords for f in frames], dtype=float)
        if lattice.shape[1:] != (3, 3) or frac.shape[1:] != (n, 3):
            return None
        forces, has_forces = _stack(frames, "forces", (n, 3))
        stress, has_stress = _stack(frames, "stress", (3, 3), convert=to_3x3)
        magmoms, has_magmoms = _stack(frames, "magmoms", (n,))
        energy, has_energy = _stack(frames, "energy", ())
        corrected, has_corrected = _stack(frames, "corrected_energy", ())
    except (ValueError, TypeError, OverflowError):
        return None
    if numbers.min() < 1 or numbers.max() > 118:
        return None
    if not (np.isfinite(lattice).all() and np.isfinite(frac).all()):
        return None
    if np.abs(lattice).max() > MAX_LATTICE_LENGTH or np.abs(frac).max() > MAX_ABS_FRACTIONAL:
        return None  # (checked first: the squares and the determinant below cannot overflow)
    lengths = np.linalg.norm(lattice, axis=2)
    if (lengths < MIN_LATTICE_LENGTH).any() or (lengths > MAX_LATTICE_LENGTH).any():
        return None
    if (np.abs(np.linalg.det(lattice)) < 1e-6).any():
        return None
    for values, present, limit in (
        (forces, has_forces, MAX_ABS_FORCE),
        (stress, has_stress, MAX_ABS_STRESS),
        (magmoms, has_magmoms, MAX_ABS_MAGMOM),
        (energy, has_energy, MAX_ABS_ENERGY_PER_ATOM * n),
        (corrected, has_corrected, MAX_ABS_ENERGY_PER_ATOM * n),
    ):
        rows = values.reshape(len(frames), -1)[present]
        if rows.size and not (np.isfinite(rows).all() and np.abs(rows).max() <= limit):
            return None  # the per-frame path refuses the frame with the exact reason
    try:
        steps = np.array([f.ionic_step for f in frames], dtype=np.int64)
        has_nes = np.array([f.n_electronic_steps is not None for f in frames])
        n_es = np.array([0 if f.n_electronic_steps is None else int(f.n_electronic_steps) for f in frames])
    except (TypeError, ValueError, OverflowError):
        return None
    if (steps < 0).any() or (steps > MAX_INT4).any() or (n_es < 0).any() or (n_es > MAX_INT4).any():
        return None  # refused with its reason by the per-frame path
    has_conv = np.array([f.scf_converged is not None for f in frames])
    converged = np.array([bool(f.scf_converged) for f in frames], dtype=np.int8)
    block = FrameBlock(
        ionic_step=steps,
        atomic_numbers=numbers.astype(np.int16),
        lattice=lattice,
        frac_coords=frac,
        forces=forces,
        stress=stress,
        magmoms=magmoms,
        energy=energy,
        corrected_energy=corrected,
        n_electronic_steps=n_es,
        scf_converged=converged,
        present={
            "forces": has_forces,
            "stress": has_stress,
            "magmoms": has_magmoms,
            "energy": has_energy,
            "corrected_energy": has_corrected,
            "n_electronic_steps": has_nes,
            "scf_converged": has_conv,
        },
        content_hash=[],
    )
    block.content_hash = _hashes(block)
    return block


def _hashes(block: FrameBlock) -> list[str]:
    """The same digests as :meth:`Frame.content_hash`, one SHA-256 call per frame.

    The hashed byte string of a frame is laid out as a numpy structured record
    (prefix, atomic numbers, then each label's name followed by its little-endian
    values when present), so all frames sharing the same missing labels are
    serialised at once.
    """
    f, n = block.n_frames, block.n_atoms
    labels = (
        ("lattice", block.lattice, 9),
        ("frac_coords", block.frac_coords, 3 * n),
        ("forces", block.forces, 3 * n),
        ("stress", block.stress, 9),
        ("magmoms", block.magmoms, n),
        ("energy", block.energy, 1),
        ("corrected_energy", block.corrected_energy, 1),
    )
    always = {"lattice", "frac_coords"}
    optional = [name for name, _, _ in labels if name not in always]
    pattern = np.stack([block.present[name] for name in optional], axis=1)
    out: list[str] = [""] * f
    for key in _patterns(pattern):
        index = np.flatnonzero((pattern == key).all(axis=1))
        present = dict(zip(optional, (bool(k) for k in key), strict=True))
        fields = [("prefix", f"S{len(_PREFIX)}"), ("numbers", "<i2", (n,))]
        for name, _, size in labels:
            fields.append((f"{name}_tag", f"S{len(name)}"))
            if name in always or present[name]:
                fields.append((name, "<f8", (size,)))
        records = np.zeros(len(index), dtype=np.dtype(fields))
        records["prefix"] = _PREFIX
        records["numbers"] = block.atomic_numbers[index]
        for name, values, size in labels:
            records[f"{name}_tag"] = name.encode()
            if name in always or present[name]:
                records[name] = values[index].reshape(len(index), size)
        data = records.tobytes()
        width = records.dtype.itemsize
        for row, i in enumerate(index):
            nes = int(block.n_electronic_steps[i]) if block.present["n_electronic_steps"][i] else None
            conv = bool(block.scf_converged[i]) if block.present["scf_converged"][i] else None
            out[i] = frame_record_hash(data[row * width : (row + 1) * width], nes, conv)
    return out


def _patterns(pattern: np.ndarray) -> np.ndarray:
    """Distinct rows of a boolean matrix (fast when all rows are equal, the common case)."""
    if (pattern == pattern[0]).all():
        return pattern[:1]
    return np.unique(pattern, axis=0)


# --------------------------------------------------------------------------- binary COPY encoding


def _float_array_fields(prefix: str, count: int) -> list[tuple]:
    return [
        (f"{prefix}_len", ">i4"),
        (f"{prefix}_hdr", ">i4", (5,)),
        (f"{prefix}_el", [("size", ">i4"), ("value", ">f8")], (count,)),
    ]


def _row_dtype(n: int, present: dict[str, bool]) -> np.dtype:
    fields: list[tuple] = [
        ("nfields", ">i2"),
        ("task_len", ">i4"),
        ("task_id", ">i8"),
        ("step_len", ">i4"),
        ("step", ">i4"),
        ("natoms_len", ">i4"),
        ("natoms", ">i4"),
        *_float_array_fields("lattice", 9),
        ("numbers_len", ">i4"),
        ("numbers_hdr", ">i4", (5,)),
        ("numbers_el", [("size", ">i4"), ("value", ">i2")], (n,)),
        *_float_array_fields("frac", 3 * n),
    ]
    for name in ("energy", "corrected_energy"):
        fields += [(f"{name}_len", ">i4")] + ([(name, ">f8")] if present[name] else [])
    for name, count in (("forces", 3 * n), ("stress", 9), ("magmoms", n)):
        fields += _float_array_fields(name, count) if present[name] else [(f"{name}_len", ">i4")]
    fields += [("nes_len", ">i4")] + ([("nes", ">i4")] if present["n_electronic_steps"] else [])
    fields += [("conv_len", ">i4")] + ([("conv", "i1")] if present["scf_converged"] else [])
    fields += [("hash_len", ">i4"), ("hash", "S64")]
    return np.dtype(fields)


def _fill_float_array(rows: np.ndarray, prefix: str, values: np.ndarray) -> None:
    count = values.shape[1]
    rows[f"{prefix}_len"] = 20 + 12 * count
    rows[f"{prefix}_hdr"] = (1, 0, FLOAT8_OID, count, 1)
    rows[f"{prefix}_el"]["size"] = 8
    rows[f"{prefix}_el"]["value"] = values


def encode_block(block: FrameBlock, task_id: int) -> bytes:
    """Binary COPY rows (``loader.FRAME_COLUMNS`` order) for every frame of ``block``."""
    n = block.n_atoms
    pattern = np.stack([block.present[name] for name in _OPTIONAL], axis=1)
    chunks = []
    for key in _patterns(pattern):
        index = np.flatnonzero((pattern == key).all(axis=1))
        present = dict(zip(_OPTIONAL, (bool(k) for k in key), strict=True))
        rows = np.zeros(len(index), dtype=_row_dtype(n, present))
        rows["nfields"] = 14
        rows["task_len"], rows["task_id"] = 8, task_id
        rows["step_len"], rows["step"] = 4, block.ionic_step[index]
        rows["natoms_len"], rows["natoms"] = 4, n
        _fill_float_array(rows, "lattice", block.lattice[index].reshape(len(index), -1))
        rows["numbers_len"] = 20 + 6 * n
        rows["numbers_hdr"] = (1, 0, INT2_OID, n, 1)
        rows["numbers_el"]["size"] = 2
        rows["numbers_el"]["value"] = block.atomic_numbers[index]
        _fill_float_array(rows, "frac", block.frac_coords[index].reshape(len(index), -1))
        for name in ("energy", "corrected_energy"):
            rows[f"{name}_len"] = 8 if present[name] else -1
            if present[name]:
                rows[name] = getattr(block, name)[index]
        for name in ("forces", "stress", "magmoms"):
            if present[name]:
                _fill_float_array(rows, name, getattr(block, name)[index].reshape(len(index), -1))
            else:
                rows[f"{name}_len"] = -1
        rows["nes_len"] = 4 if present["n_electronic_steps"] else -1
        if present["n_electronic_steps"]:
            rows["nes"] = block.n_electronic_steps[index]
        rows["conv_len"] = 1 if present["scf_converged"] else -1
        if present["scf_converged"]:
            rows["conv"] = block.scf_converged[index]
        rows["hash_len"] = 64
        rows["hash"] = [block.content_hash[i].encode() for i in index]
        chunks.append(rows.tobytes())
    return b"".join(chunks)
