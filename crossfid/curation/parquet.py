"""Parquet export of a dataset version or of a split: one row per frame, streamed in row groups.

One file, written to ``{name}.partial`` and renamed when complete, named
``{dataset}-v{version}.parquet`` for a dataset version and
``{dataset}-v{version}_{strategy}_{ratios}_seed{seed}.parquet`` for a split (the stem of the
extxyz / MPtrj export), followed by ``_{part}-{part}`` when only some parts are exported or
``_train-{size}`` for a nested training subset. A split export has a ``part`` column.

Columns (units are also in each field's metadata, key ``unit``; ``description`` says more):

==================== ========================================== ========= ==========
column               Arrow type                                 unit      null when
==================== ========================================== ========= ==========
part                 string (``train``/``val``/``test``)        —         (splits only)
material_id          string                                     —
task_id              string                                     —
source               string (the ingest source)                 —
fidelity             string                                     —
ionic_step           int32                                      —
frame_content_hash   string (64 hex)                            —
n_atoms              int32                                      —
atomic_numbers       list<int16>                                —
species              list<string> (element symbols)             —
lattice              fixed_size_list<fixed_size_list<f64,3>,3>  Å         (rows are the lattice vectors)
frac_coords          list<fixed_size_list<f64,3>>               fraction
positions            list<fixed_size_list<f64,3>>               Å         (frac_coords · lattice)
pbc                  fixed_size_list<bool,3>                    —         (always true)
energy               float64                                    eV        unknown
corrected_energy     float64                                    eV        unknown
energy_per_atom      float64                                    eV/atom   unknown
forces               list<fixed_size_list<f64,3>>               eV/Å      unknown
stress               fixed_size_list<fixed_size_list<f64,3>,3>  GPa       unknown
magmoms              list<float64>                              μB        unknown
==================== ========================================== ========= ==========

Values are the stored float64 numbers, bit for bit: ``energy`` is the uncorrected total energy,
``corrected_energy`` the source's MP2020-corrected one, ``energy_per_atom`` = ``energy / n_atoms``
(as the database's ``frames.energy_per_atom``); the dataset's training energy is named by the
metadata's ``training_energy`` (``energy`` or ``corrected_energy``). ``stress`` is the stored 3×3
tensor in GPa with ASE's and CHGNet's sign (tensile positive). ``positions`` are computed from
``frac_coords`` and ``lattice`` elementwise, bit-identical to :func:`crossfid.curation.export.cartesian`.

File metadata: the key ``crossfid`` holds canonical JSON with the dataset (name, version, content
hash, energy label, fidelities, counts, elements), its provenance (the curation rules, their hash,
the crossfid version of the curation run), the split (strategy, ratios, seed, content hash, parts,
nested subset and its hash) and the row order. Nothing time-dependent and no database id is
written, so exports of the same data are byte-identical with the same pyarrow version.

Row order: by part (train, val, test), then by the rule of the extxyz / MPtrj export (material
id, task id, source name, ionic step, content hash, as Python compares strings: code points,
which is PostgreSQL's ``COLLATE "C"`` on UTF-8).

Streaming: a server-side cursor returns the frame ids in that order, a few thousand at a time, as
arrays (the server sorts integers only: tasks are ranked by their text keys first). Two worker
threads, each with its own connection (so two server backends), fetch alternate chunks: a chunk is
a few round trips of one aggregate query each, which returns its frames as a handful of binary
arrays (``array_send``) rather than rows, so that the client decodes them with numpy and never
builds a Python object per frame or per number; the workers convert chunks to Arrow while the
calling thread writes row groups. Memory is bounded by a few chunks and one row group, whatever
the size of the dataset (``perf/export_parquet.py`` measures it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from crossfid.curation.datasets import as_session, resolve_dataset
from crossfid.curation.export import ExportError
from crossfid.curation.split_store import resolve_split
from crossfid.curation.splits import PARTS, SplitError
from crossfid.db.models import CurationRun, Dataset, Split, SplitSubset
from crossfid.hashing import canonical_json

__all__ = [
    "DEFAULT_ROW_GROUP",
    "METADATA_KEY",
    "ParquetExport",
    "export_parquet",
    "is_split_reference",
    "read_metadata",
    "schema",
]

#: frames per row group: about 20 MB of 12-atom frames
DEFAULT_ROW_GROUP = 16_384
#: frames per round trip to the server (larger single results are slower to build and receive)
_FETCH = 512
#: frames decoded at once (several round trips)
_DECODE = 4096
#: connections (server backends) fetching at once
_CONNECTIONS = 2
#: the file metadata key of the export's description
METADATA_KEY = "crossfid"
#: bump when columns, their meaning or the metadata change
FORMAT_VERSION = 1

_ROW_ORDER = "part (train, val, test), material_id, task_id, source, ionic_step, frame_content_hash"

# --------------------------------------------------------------------------- schema

_XYZ = pa.list_(pa.field("element", pa.float64(), nullable=False), 3)
_MATRIX = pa.list_(pa.field("element", _XYZ, nullable=False), 3)


def _field(name: str, kind: pa.DataType, unit: str, description: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, kind, nullable=nullable, metadata={"unit": unit, "description": description})


_FIELDS: tuple[pa.Field, ...] = (
    _field("material_id", pa.string(), "", "material id of the source (e.g. mp-149)"),
    _field("task_id", pa.string(), "", "task id of the source"),
    _field("source", pa.string(), "", "ingest source the task came from"),
    _field("fidelity", pa.string(), "", "fidelity of the task (crossfid vocabulary)"),
    _field("ionic_step", pa.int32(), "", "ionic step of the frame within its task"),
    _field("frame_content_hash", pa.string(), "", "SHA-256 of the frame's content (crossfid.hashing)"),
    _field("n_atoms", pa.int32(), "", "number of atoms"),
    _field("atomic_numbers", pa.list_(pa.field("element", pa.int16(), nullable=False)), "", "atomic numbers"),
    _field("species", pa.list_(pa.field("element", pa.string(), nullable=False)), "", "element symbols"),
    _field("lattice", _MATRIX, "Å", "lattice vectors as rows, 3×3"),
    _field("frac_coords", pa.list_(pa.field("element", _XYZ, nullable=False)), "1", "fractional coordinates"),
    _field(
        "positions",
        pa.list_(pa.field("element", _XYZ, nullable=False)),
        "Å",
        "Cartesian positions: frac_coords · lattice",
    ),
    _field("pbc", pa.list_(pa.field("element", pa.bool_(), nullable=False), 3), "", "periodic directions"),
    _field("energy", pa.float64(), "eV", "total energy, uncorrected (VASP free energy)", True),
    _field("corrected_energy", pa.float64(), "eV", "total energy with the source's MP2020 corrections", True),
    _field("energy_per_atom", pa.float64(), "eV/atom", "energy / n_atoms (uncorrected)", True),
    _field(
        "forces",
        pa.list_(pa.field("element", _XYZ, nullable=False)),
        "eV/Å",
        "forces on the atoms",
        True,
    ),
    _field("stress", _MATRIX, "GPa", "stress tensor 3×3, tensile positive (ASE and CHGNet sign)", True),
    _field("magmoms", pa.list_(pa.field("element", pa.float64(), nullable=False)), "μB", "magnetic moments", True),
)
_PART_FIELD = _field("part", pa.string(), "", "part of the split: train, val or test")


def schema(split: bool = False, metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The export's Arrow schema (with a leading ``part`` column for splits) and its file metadata."""
    fields = ((_PART_FIELD,) if split else ()) + _FIELDS
    meta = None if metadata is None else {METADATA_KEY: canonical_json(metadata)}
    return pa.schema(fields, metadata=meta)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``crossfid`` file metadata of an exported Parquet file, as a dict."""
    import json

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY.encode())
    if raw is None:
        raise ExportError(f"{path} has no {METADATA_KEY!r} metadata: not a crossfid export")
    return json.loads(raw)


# --------------------------------------------------------------------------- fetching frames

# flags: which labels are NULL
_NO_ENERGY, _NO_CORRECTED, _NO_FORCES, _NO_STRESS, _NO_MAGMOMS = 1, 2, 4, 8, 16
_SEPARATOR = b"\x00\x00\x00\x00"

_BLOBS = ("atomic_numbers", "lattice", "frac_coords", "forces", "stress", "magmoms")
_BLOB_AGGREGATES = ", ".join(f"string_agg(array_send(f.{c}), '\\x00000000'::bytea)" for c in _BLOBS)

#: one round trip: the frames of a list of ids as ONE row (binary results), in arrival order with each
#: frame's position in the list (``ord``). Every aggregate of one Agg node sees the rows in the same order,
#: so element i of each ``array_agg`` is the same frame, and the ``string_agg`` of the arrays' ``array_send``
#: holds the frames that have that array (NULLs are skipped) in that order. Each ``array_send`` is a 20-byte
#: header and a (4-byte size, value) pair per element; the 4-byte separator makes each frame's part 24 bytes
#: plus whole pairs, so that pairs of every frame lie on one grid of the blob.
_FRAMES_QUERY = f"""
SELECT count(*)::int8,
       array_send(array_agg(o.ord)),
       array_send(array_agg(f.task_id)),
       array_send(array_agg(f.ionic_step)),
       array_send(array_agg(f.n_atoms)),
       array_send(array_agg(((f.energy IS NULL)::int + 2 * (f.corrected_energy IS NULL)::int
                             + 4 * (f.forces IS NULL)::int + 8 * (f.stress IS NULL)::int
                             + 16 * (f.magmoms IS NULL)::int))),
       convert_to(string_agg(f.content_hash, ''), 'UTF8'),
       array_send(array_agg(coalesce(f.energy, 'NaN'))),
       array_send(array_agg(coalesce(f.corrected_energy, 'NaN'))),
       {_BLOB_AGGREGATES}
  FROM unnest(%s::bigint[]) WITH ORDINALITY AS o(id, ord)
  JOIN frames f ON f.id = o.id
"""
_ARRAY_HEADER = struct.Struct(">iiiii")  # ndim, has NULLs, element type oid, length, lower bound


def _array(blob: bytes, kind: str) -> np.ndarray:
    """The elements of a 1-D ``array_send`` value without NULLs (``kind``: big-endian numpy type)."""
    ndim, has_null, _, length, _ = _ARRAY_HEADER.unpack_from(blob)
    if ndim != 1 or has_null:
        raise ExportError("unexpected array from the server")
    return np.frombuffer(blob, dtype=[("size", ">i4"), ("value", kind)], offset=20, count=length)["value"]


def _ids_literal(ids: np.ndarray) -> str:
    return "{" + ",".join(map(str, ids.tolist())) + "}"


@dataclass
class _Raw:
    """The frames of consecutive round trips, as received: per-frame scalars and one blob per array column."""

    order: np.ndarray  # arrival index of each requested frame, in the requested order
    task: np.ndarray
    step: np.ndarray
    n: np.ndarray
    flags: np.ndarray
    hashes: bytes
    energy: np.ndarray
    corrected: np.ndarray
    blobs: dict[str, bytes]  # _BLOBS → concatenated array_send values, joined by _SEPARATOR
    parts: np.ndarray  # part code of each requested frame, in the requested order


def _fetch_raw(pg: psycopg.Connection, ids: np.ndarray, parts: np.ndarray) -> _Raw:
    """The frames of ``ids`` in :data:`_FETCH` round trips (arrays in arrival order, see :class:`_Raw`)."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("order", "task", "step", "n", "flags", "e", "ce")}
    hashes: list[bytes] = []
    blobs: dict[str, list[bytes]] = {name: [] for name in _BLOBS}
    arrived = 0
    for first in range(0, ids.size, _FETCH):
        wanted = ids[first : first + _FETCH]
        row = pg.execute(_FRAMES_QUERY, (_ids_literal(wanted),), binary=True).fetchone()
        count, ords, tasks, steps, ns, flags, hash_text, energies, corrected, *arrays = row
        ords = _array(ords, ">i8")
        if count != wanted.size or not np.array_equal(np.sort(ords), np.arange(1, wanted.size + 1)):
            raise ExportError(f"the database returned {count} of {wanted.size} frames: a frame was deleted meanwhile")
        columns["order"].append(np.argsort(ords, kind="stable") + arrived)
        for key, blob, kind in (
            ("task", tasks, ">i8"),
            ("step", steps, ">i4"),
            ("n", ns, ">i4"),
            ("flags", flags, ">i4"),
            ("e", energies, ">f8"),
            ("ce", corrected, ">f8"),
        ):
            columns[key].append(_array(blob, kind))
        hashes.append(hash_text)
        for name, blob in zip(_BLOBS, arrays, strict=True):
            if blob is not None:  # None: no frame of this round trip has the array
                blobs[name].append(blob)
        arrived += wanted.size
    joined = {key: np.concatenate(chunks) for key, chunks in columns.items()}
    return _Raw(
        order=joined["order"],
        task=joined["task"].astype(np.int64),
        step=joined["step"].astype(np.int32),
        n=joined["n"].astype(np.int64),
        flags=joined["flags"].astype(np.int32),
        hashes=b"".join(hashes),
        energy=joined["e"].astype(np.float64),
        corrected=joined["ce"].astype(np.float64),
        blobs={name: _SEPARATOR.join(chunks) for name, chunks in blobs.items()},
        parts=parts,
    )


def _column(blob: bytes, kind: str, present: np.ndarray, lengths: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The elements of one array column, in the requested order, of the frames that have it.

    ``blob``: that column's ``array_send`` values joined by 4-byte separators, in arrival order, of the frames
    with ``present`` (arrival order); ``lengths``: elements per frame (arrival order); ``order``: arrival index
    of each requested frame. Seen from byte ``20 % grid``, the blob is a grid of (size, value) pairs in which
    the headers and separators fill ``24 / grid`` cells before each frame's pairs (one fewer before the first).
    """
    grid = 4 + np.dtype(kind).itemsize  # bytes per (size, value) pair: 12 or 6, both divide 24
    have = lengths[present]
    if have.size == 0:
        return np.zeros(0, dtype=kind[1:])
    starts = np.zeros(have.size, dtype=np.int64)
    np.cumsum(24 + grid * have[:-1], out=starts[1:])
    raw = np.frombuffer(blob, dtype=np.uint8)
    if raw.size != int(starts[-1] + 20 + grid * have[-1]):
        raise ExportError("the server's frame arrays do not have the sizes their atom counts say")
    headers = raw[starts[:, None] + np.arange(20)].view(">i4")  # (frames, 5): ndim, has NULLs, oid, length, lower
    if not (np.all(headers[:, 0] == 1) and np.all(headers[:, 1] == 0) and np.array_equal(headers[:, 3], have)):
        raise ExportError("unexpected frame array from the server")
    offset = 20 % grid
    pairs = np.frombuffer(
        blob, dtype=[("size", ">i4"), ("value", kind)], offset=offset, count=(raw.size - offset) // grid
    )
    first = (starts + 20 - offset) // grid  # cell of each frame's first pair
    keep = np.ones(pairs.size, dtype=bool)
    junk = (first[:, None] - np.arange(1, 24 // grid + 1)).ravel()
    keep[junk[junk >= 0]] = False
    values = pairs["value"][keep].astype(kind[1:])  # arrival order
    if np.array_equal(order, np.arange(order.size)):
        return values
    rank = np.cumsum(present) - 1  # index among the frames that have the array, by arrival
    at = np.zeros(have.size, dtype=np.int64)
    np.cumsum(have[:-1], out=at[1:])
    chosen = rank[order[present[order]]]
    return values[_ragged(at[chosen], have[chosen])]


def _ragged(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the concatenated ranges ``[starts[i], starts[i] + lengths[i])``."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)


# --------------------------------------------------------------------------- numpy → Arrow


def _offsets(lengths: np.ndarray) -> pa.Array:
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ExportError("a row group holds more than 2**31 values: export with a smaller row_group_size")
    return pa.array(offsets.astype(np.int32))


def _xyz_list(lengths: np.ndarray, flat: np.ndarray, kind: pa.DataType, mask: np.ndarray | None = None) -> pa.Array:
    """list<fixed_size_list<f64,3>> of ``lengths`` atoms per row from (Σ lengths·3,) values."""
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float64()), type=_XYZ)
    mask_array = None if mask is None else pa.array(mask)
    return pa.ListArray.from_arrays(_offsets(lengths), inner, type=kind, mask=mask_array)


def _matrix(rows: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    inner = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel(), pa.float64()), type=_XYZ)
    return pa.FixedSizeListArray.from_arrays(inner, type=_MATRIX, mask=None if mask is None else pa.array(mask))


@functools.cache
def _symbols() -> pa.Array:
    """Element symbols indexed by atomic number."""
    from ase.data import chemical_symbols

    return pa.array(chemical_symbols, pa.string())


def _batch(raw: _Raw, names: dict[int, tuple[str, str, str, str]], split: bool, target: pa.Schema) -> pa.RecordBatch:
    """The columns of :data:`_FIELDS` (and ``part``) of received frames, in the requested order."""
    order = raw.order
    n_arrived, flags_arrived = raw.n, raw.flags
    everywhere = np.ones(order.size, dtype=bool)
    has = {
        "forces": (flags_arrived & _NO_FORCES) == 0,
        "stress": (flags_arrived & _NO_STRESS) == 0,
        "magmoms": (flags_arrived & _NO_MAGMOMS) == 0,
    }
    per_frame = {
        "atomic_numbers": (">i2", everywhere, n_arrived),
        "lattice": (">f8", everywhere, np.full(order.size, 9)),
        "frac_coords": (">f8", everywhere, 3 * n_arrived),
        "forces": (">f8", has["forces"], 3 * n_arrived),
        "stress": (">f8", has["stress"], np.full(order.size, 9)),
        "magmoms": (">f8", has["magmoms"], n_arrived),
    }
    got = {name: _column(raw.blobs[name], *spec, order) for name, spec in per_frame.items()}
    n = n_arrived[order]
    flags = flags_arrived[order]
    rows = n.size
    has_forces, has_stress, has_magmoms = (has[name][order] for name in ("forces", "stress", "magmoms"))
    lattice = got["lattice"].reshape(rows, 9)
    stress = np.zeros((rows, 9))
    stress[has_stress] = got["stress"].reshape(-1, 9)

    # Cartesian positions, the same elementwise products and sums as crossfid.curation.export.cartesian
    cells = np.repeat(lattice.reshape(rows, 3, 3), n, axis=0)
    f = got["frac_coords"].reshape(-1, 3)
    positions = f[:, 0:1] * cells[:, 0] + f[:, 1:2] * cells[:, 1] + f[:, 2:3] * cells[:, 2]

    task = raw.task[order]
    unique, inverse = np.unique(task, return_inverse=True)
    looked_up = [names[int(t)] for t in unique]
    take = pa.array(inverse.astype(np.int32))

    def by_task(k: int) -> pa.Array:
        return pa.array([row[k] for row in looked_up], pa.string()).take(take)

    no_energy = (flags & _NO_ENERGY) != 0
    energy = raw.energy[order]
    kinds = {field.name: field.type for field in target}
    z = pa.array(got["atomic_numbers"], pa.int16())
    atoms = _offsets(n)
    columns: dict[str, pa.Array] = {
        "material_id": by_task(0),
        "task_id": by_task(1),
        "source": by_task(2),
        "fidelity": by_task(3),
        "ionic_step": pa.array(raw.step[order], pa.int32()),
        "frame_content_hash": pa.array(np.frombuffer(raw.hashes, dtype="S64")[order], pa.binary()).cast(pa.string()),
        "n_atoms": pa.array(n.astype(np.int32), pa.int32()),
        "atomic_numbers": pa.ListArray.from_arrays(atoms, z, type=kinds["atomic_numbers"]),
        "species": pa.ListArray.from_arrays(atoms, _symbols().take(z), type=kinds["species"]),
        "lattice": _matrix(lattice),
        "frac_coords": _xyz_list(n, got["frac_coords"], kinds["frac_coords"]),
        "positions": _xyz_list(n, positions.ravel(), kinds["positions"]),
        "pbc": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(3 * rows, dtype=bool)), type=kinds["pbc"]),
        "energy": pa.array(energy, pa.float64(), mask=no_energy),
        "corrected_energy": pa.array(raw.corrected[order], pa.float64(), mask=(flags & _NO_CORRECTED) != 0),
        "energy_per_atom": pa.array(energy / n, pa.float64(), mask=no_energy),
        "forces": _xyz_list(n * has_forces, got["forces"], kinds["forces"], ~has_forces),
        "stress": _matrix(stress, ~has_stress),
        "magmoms": pa.ListArray.from_arrays(
            _offsets(n * has_magmoms),
            pa.array(got["magmoms"], pa.float64()),
            type=kinds["magmoms"],
            mask=pa.array(~has_magmoms),
        ),
    }
    if split:
        columns["part"] = pa.array(PARTS, pa.string()).take(pa.array(raw.parts.astype(np.int32)))
    return pa.RecordBatch.from_arrays([columns[field.name] for field in target], schema=target)


# --------------------------------------------------------------------------- what to export


def is_split_reference(ref: str | int) -> bool:
    """True when ``ref`` names a split (an id, or ``.../STRATEGY`` or ``...@SEED``), False for a dataset."""
    if isinstance(ref, int):
        return True
    ref = ref.strip()
    return ref.isdigit() or "@" in ref or "/" in ref


@dataclass(frozen=True)
class ParquetExport:
    """A written export: its path, how many frames and row groups, and its ``crossfid`` metadata."""

    path: Path
    n_frames: int
    n_row_groups: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Selection:
    stem: str
    members_sql: str  # SELECT frame_id, part code, material_id
    params: dict[str, Any]
    metadata: dict[str, Any]
    split: bool


def _dataset_metadata(session: Session, dataset: Dataset) -> dict[str, Any]:
    run = session.get(CurationRun, dataset.curation_run_id)
    return {
        "name": dataset.name,
        "version": dataset.version,
        "content_hash": dataset.content_hash,
        "energy_label": dataset.energy_label,
        "fidelities": list(dataset.fidelities),
        "n_frames": dataset.n_frames,
        "n_materials": dataset.n_materials,
        "elements": list(dataset.elements),
        "curation": {
            "config": dataset.config,
            "config_hash": dataset.config_hash,
            "crossfid_version": run.crossfid_version if run else None,
            "dedupe": run.dedupe if run else None,
        },
    }


def _training_energy(energy_label: str | None) -> str:
    # the column crossfid.curation.datasets.training_energy_sql reads
    if energy_label == "uncorrected":
        return "energy"
    if energy_label == "mp2020":
        return "corrected_energy"
    return "corrected_energy where present, else energy"


def _select(session: Session, ref: str | int, parts: Sequence[str] | None, subset: int | None) -> _Selection:
    from crossfid import __version__

    base = {"format": "crossfid-frames", "format_version": FORMAT_VERSION, "crossfid_version": __version__}
    if not is_split_reference(ref):
        if parts is not None or subset is not None:
            raise ExportError(
                f"{ref!r} names a dataset: parts and subsets belong to a split, name one as NAME@SEED or its id"
            )
        dataset = resolve_dataset(session, ref)
        if not dataset.frozen:
            raise ExportError(f"dataset {dataset.name}:{dataset.version} is not frozen")
        meta = _dataset_metadata(session, dataset)
        return _Selection(
            stem=f"{dataset.name}-v{dataset.version}",
            members_sql="SELECT frame_id, 0::int2 AS part, material_id FROM dataset_frames WHERE dataset_id = %(id)s",
            params={"id": dataset.id},
            metadata={
                **base,
                "dataset": meta,
                "split": None,
                "training_energy": _training_energy(dataset.energy_label),
                "row_order": _ROW_ORDER,
            },
            split=False,
        )

    split: Split = resolve_split(session, ref)
    dataset = session.get(Dataset, split.dataset_id)
    wanted = list(PARTS) if parts is None else list(dict.fromkeys(parts))
    unknown = [p for p in wanted if p not in PARTS]
    if unknown or not wanted:
        raise ExportError(f"unknown split part {', '.join(unknown) or '(none)'}; known: {', '.join(PARTS)}")
    wanted = [p for p in PARTS if p in wanted]
    subset_meta = None
    if subset is not None:
        if wanted != ["train"]:
            raise ExportError("a nested subset is part of the training set: export it with parts=('train',)")
        row = session.execute(
            select(SplitSubset.size, SplitSubset.content_hash).where(
                SplitSubset.split_id == split.id, SplitSubset.size == subset
            )
        ).one_or_none()
        if row is None:
            sizes = sorted(session.scalars(select(SplitSubset.size).where(SplitSubset.split_id == split.id)))
            have = ", ".join(map(str, sizes)) or "none"
            raise SplitError(f"split {split.id} has no training subset of {subset} frames (subsets: {have})")
        subset_meta = {"size": row.size, "content_hash": row.content_hash}
    ratios = "-".join(f"{r:g}" for r in split.ratios)
    stem = f"{dataset.name}-v{dataset.version}_{split.strategy}_{ratios}_seed{split.seed}"
    if subset is not None:
        stem += f"_train-{subset}"
    elif wanted != list(PARTS):
        stem += "_" + "-".join(wanted)
    members_sql = """
        SELECT sm.frame_id, (array_position(%(all_parts)s::text[], sm.part) - 1)::int2 AS part, sm.material_id
          FROM split_members sm
         WHERE sm.split_id = %(id)s AND sm.part = ANY(%(parts)s::text[])
           AND (%(size)s::int IS NULL OR sm.frame_id IN (
                SELECT unnest(frame_ids) FROM split_subsets WHERE split_id = %(id)s AND size = %(size)s))
    """
    return _Selection(
        stem=stem,
        members_sql=members_sql,
        params={"id": split.id, "parts": wanted, "all_parts": list(PARTS), "size": subset},
        metadata={
            **base,
            "dataset": _dataset_metadata(session, dataset),
            "split": {
                "strategy": split.strategy,
                "ratios": list(split.ratios),
                "seed": split.seed,
                "content_hash": split.content_hash,
                "parts": wanted,
                "subset": subset_meta,
            },
            "training_energy": _training_energy(dataset.energy_label),
            "row_order": _ROW_ORDER,
        },
        split=True,
    )


def _ordered_chunks(
    pg: psycopg.Connection, selection: _Selection, size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame ids, part codes) of the selected frames in the export's row order, ``size`` at a time.

    The server sorts only the narrow keys and returns each chunk as two arrays, through a cursor.
    """
    # tasks are ranked by (material, task, source) and frames by (part, task rank, ionic step): the export's
    # rule, since (source, task id) and (task, ionic step) are unique, with only integers in the big sort
    query = f"""
        WITH members AS ({selection.members_sql}),
        ranked AS (
            SELECT t.id, row_number() OVER (ORDER BY m.external_id COLLATE "C", t.external_id COLLATE "C",
                                                     s.name COLLATE "C") AS task_rank
              FROM tasks t
              JOIN sources s ON s.id = t.source_id
              JOIN materials m ON m.id = t.material_id
             WHERE t.material_id IN (SELECT material_id FROM members)
        )
        SELECT array_send(array_agg(frame_id ORDER BY rn)), array_send(array_agg(part ORDER BY rn))
          FROM (SELECT mb.frame_id, mb.part,
                       row_number() OVER (ORDER BY mb.part, r.task_rank, f.ionic_step) - 1 AS rn
                  FROM members mb
                  JOIN frames f ON f.id = mb.frame_id
                  JOIN ranked r ON r.id = f.task_id) ordered
         GROUP BY rn / %(chunk)s
         ORDER BY rn / %(chunk)s
    """
    with pg.cursor(name="crossfid_parquet_export", binary=True) as cur:
        cur.itersize = 16
        cur.execute(query, {**selection.params, "chunk": size})
        for ids, parts in cur:
            yield _array(ids, ">i8").astype(np.int64), _array(parts, ">i2").astype(np.int8)


def _task_names(pg: psycopg.Connection, task_ids: np.ndarray) -> dict[int, tuple[str, str, str, str]]:
    """task id → (material id, task id, source, fidelity) as the source names them."""
    rows = pg.execute(
        """
        SELECT t.id, m.external_id, t.external_id, s.name, t.fidelity
          FROM tasks t JOIN sources s ON s.id = t.source_id JOIN materials m ON m.id = t.material_id
         WHERE t.id = ANY(%s::bigint[])
        """,
        (_ids_literal(np.unique(task_ids)),),
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


_DONE = object()


class _Pipeline:
    """Frames fetched and converted by one thread per connection, handed out in the export's order.

    A dispatcher thread reads the row order (on the first connection) and deals its chunks to the
    workers in turn; worker ``w`` runs the queries of chunks ``w, w + W, ...`` on connection ``w`` and
    converts them to record batches, so that the server answers on several backends while the caller
    writes. psycopg serialises the dispatcher's cursor reads with the first worker's queries. An error
    in any thread is raised to the caller at its chunk's turn; a caller that stops early stops them all.
    """

    def __init__(self, connections: Sequence[psycopg.Connection], selection: _Selection, size: int, target: pa.Schema):
        self.stop = threading.Event()
        self.inbox = [queue.Queue(maxsize=1) for _ in connections]
        self.outbox = [queue.Queue(maxsize=2) for _ in connections]
        self.threads = [threading.Thread(target=self._dispatch, args=(connections[0], selection, size), daemon=True)]
        self.threads += [
            threading.Thread(target=self._work, args=(pg, inbox, outbox, selection.split, target), daemon=True)
            for pg, inbox, outbox in zip(connections, self.inbox, self.outbox, strict=True)
        ]

    def _put(self, box: queue.Queue, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _dispatch(self, pg: psycopg.Connection, selection: _Selection, size: int) -> None:
        workers = len(self.inbox)
        chunks = _ordered_chunks(pg, selection, size)
        turn = 0
        try:
            for chunk in chunks:
                if not self._put(self.inbox[turn % workers], chunk):
                    return
                turn += 1
        except BaseException as error:  # handed to the caller at this turn
            self._put(self.inbox[turn % workers], error)
            return
        finally:
            chunks.close()  # in this thread: the cursor is closed where it was used
        for w in range(workers):  # the caller stops at the first turn that has no chunk
            self._put(self.inbox[(turn + w) % workers], _DONE)

    def _work(
        self, pg: psycopg.Connection, inbox: queue.Queue, outbox: queue.Queue, split: bool, target: pa.Schema
    ) -> None:
        while not self.stop.is_set():
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE or isinstance(item, BaseException):
                self._put(outbox, item)
                return
            try:
                ids, parts = item
                raw = _fetch_raw(pg, ids, parts)
                batch = _batch(raw, _task_names(pg, raw.task), split, target)
            except BaseException as error:
                self._put(outbox, error)
                return
            if not self._put(outbox, batch):
                return

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for thread in self.threads:
            thread.start()
        try:
            k = 0
            while True:
                item = self.outbox[k % len(self.outbox)].get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                k += 1
        finally:
            self.stop.set()
            for thread in self.threads:
                while thread.is_alive():
                    for box in (*self.inbox, *self.outbox):
                        with contextlib.suppress(queue.Empty):
                            box.get_nowait()
                    thread.join(timeout=0.05)


# --------------------------------------------------------------------------- the export


def export_parquet(
    engine: Engine,
    ref: str | int,
    out_dir: str | os.PathLike[str],
    parts: Sequence[str] | None = None,
    *,
    subset: int | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP,
    compression: str = "snappy",
) -> ParquetExport:
    """Write one Parquet file of a dataset version or split into ``out_dir``; see the module doc.

    ``ref``: ``NAME`` or ``NAME:VERSION`` (a dataset version, every frozen frame) or a split
    (its id, ``NAME[:VERSION][/STRATEGY]@SEED`` or ``NAME[:VERSION]/STRATEGY``). ``parts``: the
    split's parts to include (default all); ``subset``: only the nested training subset of that
    size. ``row_group_size``: frames per row group (memory is bounded by one). ``compression``:
    a Parquet codec (``zstd``, ``snappy``, ``none`` ...).
    """
    if row_group_size < 1:
        raise ExportError(f"row_group_size must be positive, not {row_group_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(engine.connect()) for _ in range(_CONNECTIONS)]
        return _export(conns, ref, out, parts, subset, row_group_size, compression)


def _export(
    conns: Sequence[Connection],
    ref: str | int,
    out: Path,
    parts: Sequence[str] | None,
    subset: int | None,
    row_group_size: int,
    compression: str,
) -> ParquetExport:
    selection = _select(as_session(conns[0]), ref, parts, subset)
    target = schema(selection.split, selection.metadata)
    path = out / f"{selection.stem}.parquet"
    partial = path.with_name(path.name + ".partial")
    pgs: list[psycopg.Connection] = [conn.connection.driver_connection for conn in conns]
    pgs[0].execute("SET LOCAL cursor_tuple_fraction = 1")
    pgs[0].execute("SET LOCAL work_mem = '256MB'")  # the sort of the row order's keys stays in memory
    n_frames = n_groups = 0
    strings = [f.name for f in target if f.type == pa.string()] + ["species"]
    scalars = [f.name for f in target if not pa.types.is_nested(f.type)]
    pending: list[pa.RecordBatch] = []
    n_pending = 0
    try:
        with pq.ParquetWriter(
            partial, target, compression=compression, use_dictionary=strings, write_statistics=scalars
        ) as writer:

            def flush(final: bool) -> None:
                nonlocal pending, n_pending, n_frames, n_groups
                table = pa.Table.from_batches(pending, schema=target)
                whole = n_pending if final else n_pending - n_pending % row_group_size
                if whole:
                    writer.write_table(table.slice(0, whole), row_group_size=row_group_size)
                    n_frames += whole
                    n_groups += -(-whole // row_group_size)
                pending = table.slice(whole).to_batches()
                n_pending -= whole

            for batch in _Pipeline(pgs, selection, min(row_group_size, _DECODE), target):
                pending.append(batch)
                n_pending += batch.num_rows
                if n_pending >= row_group_size:
                    flush(final=False)
            if n_pending:
                flush(final=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return ParquetExport(path=path, n_frames=n_frames, n_row_groups=n_groups, metadata=selection.metadata)
