"""extxyz and other ASE-readable trajectories → canonical records.

Reading
-------
Extended XYZ files (``.xyz``/``.extxyz``, plain or gzip) are split into frames here
and each frame is parsed with ASE on its own, so a bad frame (unknown element
symbol, malformed line) is refused with its index and the following frames are
still read; each bundle keeps the exact bytes of its frames as raw document
(format ``extxyz``). Lines are read with a bounded ``readline``: a frame larger than
``CROSSFID_MAX_RECORD_BYTES`` is refused without being held, and a compressed file
(gzip, bz2, xz) expanding beyond ``CROSSFID_MAX_DECOMPRESSED_BYTES`` is refused from
that point (docs/ingestion.md, "Limits"). A NUL character or lone surrogate in an
id or label of ``info`` refuses its frame. Other formats go through ``ase.io.iread(path, index=":")``; as
ASE cannot resume after a bad frame, the first unreadable frame ends the file with
one refusal, and the raw document is a JSON dump of the frames' atoms, info, arrays
and calculator results.

Labels (first found wins)
-------------------------
* energy: calculator ``energy``, calculator ``free_energy``, ``info["energy"]``,
  ``info["free_energy"]``, ``info["REF_energy"]`` (eV). ``energy`` comes first because
  crossfid's energy is VASP's σ → 0 energy ``e_0_energy`` (docs/ingestion.md, "Units and
  conventions"), which ASE's VASP readers store as ``energy`` (``free_energy`` is TOTEN);
  for other codes both are usually equal. The file does not say which code made it,
  so its tasks' ``energy_quantity`` is ``unknown``.
* forces: calculator ``forces``, ``arrays["forces"]``, ``arrays["REF_forces"]`` (eV/Å).
* stress: calculator ``stress``, ``info["stress"]``, ``info["REF_stress"]`` (Voigt 6,
  3×3 or 9 values). With ``stress_convention="ase"`` (default) it is ASE's
  convention, eV/Å³ tensile positive (the extxyz reader/writer of ASE use it for
  ``stress``), converted with 1 eV/Å³ = 160.21766208 GPa; ``"gpa"`` means GPa
  tensile positive, ``"vasp_kbar"`` kBar compressive positive.
* magmoms: calculator ``magmoms``, ``arrays["magmoms"]``, ``arrays["REF_magmoms"]``
  (μB) — results only: ``initial_magmoms`` are inputs and are never taken.

A frame without energy or forces is refused (it cannot be training data).

Grouping
--------
Fidelity: the ``fidelity`` argument, else ``info["fidelity"]``, else
``info["functional"]`` / ``info["xc"]`` (PBE → GGA, PBE+U → GGA+U, r2SCAN → r2SCAN,
or any vocabulary name, case-insensitive); without any a frame is refused.
Material: the ``material_id`` argument, else ``info["material_id"]`` /
``info["mp_id"]``; frames of such a material with another reduced composition are
refused. Without an id, frames are grouped by reduced composition and each group
becomes the material ``file:<first 12 hex digits of the SHA-256 of its first
frame's structure>`` (so frames of different compositions become separate bundles,
and re-reading the file gives the same ids). Within a material, frames form one task
per (fidelity, ``info["task_id"]``) in file order, ``ionic_step`` = running index;
task ``external_id`` = the ``task_id`` argument, else ``info["task_id"]``, else
``ase:<first 16 hex digits of the first frame's content hash>`` (suffixed with
``:<material>:<fidelity>`` if one id would name several tasks). Task type: the
``task_type`` argument, else ``info["task_type"]``, else ``relax`` for several frames
and ``static`` for one. Bundles are yielded after the whole file has been read
(grouping needs every frame); refusals as they are found.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crossfid.errors import InputError
from crossfid.hashing import structure_hash
from crossfid.ingest.matpes import fidelity_from_functional, run_type_for_fidelity
from crossfid.ingest.records import (
    Bundle,
    Frame,
    Material,
    RawDocument,
    Record,
    RecordError,
    Refusal,
    Task,
    TaskType,
    check_text,
    stress_from_vasp_kbar,
    to_3x3,
)
from crossfid.ingest.sourceio import (
    InputLimitError,
    Limits,
    compression_of,
    open_decompressed,
    record_size_reason,
    reduced_composition,
    stream_problem,
)
from crossfid.vocabulary import FIDELITY_NAMES, TASK_TYPES, is_fidelity

__all__ = ["EV_PER_A3_TO_GPA", "StressConvention", "read_ase_trajectory"]

#: 1 eV/Å³ in GPa (CODATA 2014 elementary charge, as in ``ase.units``)
EV_PER_A3_TO_GPA = 160.21766208

StressConvention = Literal["ase", "gpa", "vasp_kbar"]

_EXTXYZ_SUFFIXES = (".xyz", ".extxyz")


def read_ase_trajectory(
    path: str | os.PathLike[str],
    *,
    fidelity: str | None = None,
    material_id: str | None = None,
    task_id: str | None = None,
    stress_convention: StressConvention = "ase",
    task_type: TaskType | None = None,
) -> Iterator[Record]:
    """Read an extxyz / ASE trajectory file into bundles (one per material) and refusals.

    Bad frames become :class:`Refusal` s; the generator never raises on bad input (a
    bad *argument* raises ``ValueError`` immediately).
    """
    if fidelity is not None and not is_fidelity(fidelity):
        raise InputError(f"unknown fidelity {fidelity!r}; expected one of {', '.join(FIDELITY_NAMES)}")
    if stress_convention not in ("ase", "gpa", "vasp_kbar"):
        raise InputError(f"stress_convention must be 'ase', 'gpa' or 'vasp_kbar', not {stress_convention!r}")
    if task_type is not None and task_type not in TASK_TYPES:
        raise InputError(f"task_type must be one of {', '.join(TASK_TYPES)}, not {task_type!r}")
    return _read(Path(path), fidelity, material_id, task_id, stress_convention, task_type)


# --------------------------------------------------------------------------- frames


@dataclass
class _Item:
    index: int
    frame: Frame
    fidelity: str
    run_type: str
    source_run_type: str | None
    task_hint: str | None
    task_type_hint: str | None
    code: str
    raw: bytes | dict[str, Any]


@dataclass
class _Group:
    material: Material
    composition: tuple
    items: list[_Item] = field(default_factory=list)


def _read(
    path: Path,
    fidelity: str | None,
    material_id: str | None,
    task_id: str | None,
    stress_convention: StressConvention,
    task_type: TaskType | None,
) -> Iterator[Record]:
    name = path.name
    groups: dict[tuple[str, Any], _Group] = {}
    n_frames = 0
    for item in _iter_frames(path, name):
        if isinstance(item, Refusal):
            yield item
            n_frames += 1
            continue
        index, atoms, raw = item
        n_frames += 1
        where = f"{name}:frame {index}"
        try:
            _check_info_text(atoms.info)
            frame = _frame_from_atoms(atoms, stress_convention)
            frame_fidelity, run_type, source_run_type = _fidelity_of(atoms.info, fidelity)
        except RecordError as exc:
            yield Refusal(where, str(exc), **_raw_fields(raw))
            continue
        except Exception as exc:  # noqa: BLE001 - a frame that cannot be converted is refused alone
            yield Refusal(where, f"cannot read frame {index}: {type(exc).__name__}: {exc}", **_raw_fields(raw))
            continue
        info = atoms.info
        explicit = material_id or _info_text(info, "material_id", "mp_id")
        composition = reduced_composition(frame.atomic_numbers)
        key: tuple[str, Any] = ("id", str(explicit)) if explicit else ("composition", composition)
        group = groups.get(key)
        if group is None:
            external_id = (
                str(explicit)
                if explicit
                else f"file:{structure_hash(frame.atomic_numbers, frame.lattice, frame.frac_coords)[:12]}"
            )
            group = groups[key] = _Group(Material.from_atomic_numbers(external_id, frame.atomic_numbers), composition)
        elif group.composition != composition:
            formula = Material.from_atomic_numbers("", frame.atomic_numbers).formula
            yield Refusal(
                where,
                f"composition {formula} differs from material {group.material.external_id}'s "
                f"{group.material.formula} (frame {group.items[0].index})",
                **_raw_fields(raw),
            )
            continue
        hint = _info_text(info, "task_id")
        type_hint = _info_text(info, "task_type")
        group.items.append(
            _Item(
                index=index,
                frame=frame,
                fidelity=frame_fidelity,
                run_type=run_type,
                source_run_type=source_run_type,
                task_hint=hint,
                task_type_hint=type_hint if type_hint in TASK_TYPES else None,
                code=_info_text(info, "code") or "unknown",
                raw=raw,
            )
        )
    if n_frames == 0:
        yield Refusal(name, "file contains no frames")
        return
    yield from _bundles(name, groups, task_id, task_type)


def _bundles(name: str, groups: dict[tuple[str, Any], _Group], task_id: str | None, task_type: TaskType | None):
    planned: list[tuple[_Group, str, list[_Item]]] = []  # (group, base external id, frames)
    for group in groups.values():
        if not group.items:
            continue
        by_task: dict[tuple[str, str | None], list[_Item]] = {}
        for item in group.items:
            by_task.setdefault((item.fidelity, item.task_hint), []).append(item)
        for (_, hint), items in by_task.items():
            base = task_id or hint or f"ase:{items[0].frame.content_hash()[:16]}"
            planned.append((group, base, items))
    counts: dict[str, int] = {}
    for _, base, _ in planned:
        counts[base] = counts.get(base, 0) + 1
    tasks_of: dict[int, list[Task]] = {}
    for group, base, items in planned:
        external_id = base if counts[base] == 1 else f"{base}:{group.material.external_id}:{items[0].fidelity}"
        frames = []
        for step, item in enumerate(items):
            item.frame.ionic_step = step
            frames.append(item.frame)
        tasks_of.setdefault(id(group), []).append(
            Task(
                external_id=external_id,
                fidelity=items[0].fidelity,
                run_type=items[0].run_type,
                task_type=task_type or items[0].task_type_hint or ("relax" if len(frames) > 1 else "static"),
                frames=frames,
                source_run_type=items[0].source_run_type,
                code=items[0].code,
            )
        )
    for group in groups.values():
        if not group.items:
            continue
        location = f"{name}#{group.material.external_id}"
        raws = [item.raw for item in sorted(group.items, key=lambda item: item.index)]
        if all(isinstance(raw, bytes) for raw in raws):
            raw = RawDocument(content=b"".join(raws), format="extxyz", location=location)  # type: ignore[arg-type]
        else:
            raw = RawDocument.from_json(raws, location)
        yield Bundle(material=group.material, location=location, tasks=tasks_of[id(group)], raw=raw)


#: info keys whose text is stored (ids, labels): a NUL or lone surrogate in one refuses the frame
_STORED_INFO = ("material_id", "mp_id", "task_id", "task_type", "code", "functional", "xc", "fidelity")


def _check_info_text(info: Mapping[str, Any]) -> None:
    for key in _STORED_INFO:
        value = info.get(key)
        if isinstance(value, str):
            check_text(value, f"info[{key!r}]")


def _info_text(info: Mapping[str, Any], *keys: str) -> str | None:
    """The first of ``info[key]`` that is a non-empty string or an integer, as text."""
    for key in keys:
        value = info.get(key)
        if isinstance(value, str | int | np.integer) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _raw_fields(raw: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw, bytes):
        return {"raw_text": raw.decode("utf-8", errors="replace")}
    return {"raw_document": raw}


def _fidelity_of(info: Mapping[str, Any], fidelity: str | None) -> tuple[str, str, str | None]:
    """(fidelity, run type, source's own functional label)."""
    label = next((info[key] for key in ("functional", "xc") if info.get(key) is not None), None)
    source = None if label is None else str(label)
    if fidelity is not None:
        return fidelity, run_type_for_fidelity(fidelity), source
    if info.get("fidelity") is not None:
        mapped = fidelity_from_functional(info["fidelity"])
        if mapped is None:
            raise RecordError(f"unknown fidelity {info['fidelity']!r} in info['fidelity']")
        return mapped[0], mapped[1], source
    if label is not None:
        mapped = fidelity_from_functional(label)
        if mapped is None:
            raise RecordError(f"unknown functional {label!r} in info (expected PBE, PBE+U, r2SCAN or a fidelity name)")
        return mapped[0], mapped[1], source
    raise RecordError("no fidelity: pass --fidelity or set info['fidelity']")


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value is not None:
            return value
    return None


def _frame_from_atoms(atoms, stress_convention: StressConvention) -> Frame:
    numbers = np.asarray(atoms.numbers)
    if numbers.size == 0:
        raise RecordError("frame has no atoms")
    bad = np.flatnonzero((numbers < 1) | (numbers > 118))
    if bad.size:
        raise RecordError(f"unknown element (atomic number {int(numbers[bad[0]])}) at atom {int(bad[0])}")
    cell = np.array(atoms.cell, dtype=float)
    if not np.any(cell):
        raise RecordError("frame has no cell (non-periodic structure); a periodic cell is required")
    volume = abs(float(np.linalg.det(cell)))
    if volume < 1e-6:
        raise RecordError(f"cell volume is {volume:.3g} Å³ (zero-volume cell): fractional coordinates are undefined")
    frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, dtype=float).T).T

    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    info, arrays = atoms.info, atoms.arrays
    energy = _first(results, "energy", "free_energy")
    if energy is None:
        energy = _first(info, "energy", "free_energy", "REF_energy")
    if energy is None:
        raise RecordError("frame has no energy (no calculator result, no info 'energy'/'free_energy'/'REF_energy')")
    forces = _first(results, "forces")
    if forces is None:
        forces = _first(arrays, "forces", "REF_forces")
    if forces is None:
        raise RecordError("frame has no forces (no calculator result, no 'forces'/'REF_forces' array)")
    stress = _first(results, "stress")
    if stress is None:
        stress = _first(info, "stress", "REF_stress")
    magmoms = _first(results, "magmoms")
    if magmoms is None:
        magmoms = _first(arrays, "magmoms", "REF_magmoms")
    try:
        energy = float(energy)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"energy is not a number: {energy!r}") from exc
    try:
        forces = np.asarray(forces, dtype=float)
        magmoms = None if magmoms is None else np.asarray(magmoms, dtype=float)
    except (TypeError, ValueError) as exc:
        raise RecordError("forces or magnetic moments are not numeric arrays") from exc
    if stress is not None:
        try:
            if stress_convention == "ase":
                stress = to_3x3(stress) * EV_PER_A3_TO_GPA
            elif stress_convention == "gpa":
                stress = to_3x3(stress)
            else:
                stress = stress_from_vasp_kbar(stress)
        except (TypeError, ValueError) as exc:  # RecordError is a ValueError
            raise RecordError(f"stress is not a numeric 3×3 or Voigt-6 array ({exc})") from exc
    return Frame(
        ionic_step=0,
        lattice=cell,
        atomic_numbers=numbers.astype(np.int16),
        frac_coords=frac,
        energy=energy,
        forces=forces,
        stress=stress,
        magmoms=magmoms,
    )


# --------------------------------------------------------------------------- file reading


def _is_extxyz(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(_EXTXYZ_SUFFIXES)


def _iter_frames(path: Path, name: str) -> Iterator[tuple[int, Any, bytes | dict[str, Any]] | Refusal]:
    if _is_extxyz(path):
        yield from _iter_extxyz(path, name)
    else:
        yield from _iter_ase(path, name)


def _parse_problem(exc: Exception, index: int) -> str:
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        symbol = exc.args[0]
        if symbol.isalpha() and len(symbol) <= 3:
            return f"unknown element symbol {symbol!r}"
    detail = " ".join(str(exc).split())
    return f"cannot parse frame {index}: {type(exc).__name__}: {detail[:300]}"


def _bounded_line(stream: Any, cap: int) -> tuple[bytes, bool]:
    """The next line (at most ``cap + 1`` bytes of it) and whether it was longer; the rest of a long line is skipped."""
    line = stream.readline(cap + 1)
    if len(line) <= cap or line.endswith(b"\n"):
        return line, False
    rest = line
    while rest and not rest.endswith(b"\n"):
        rest = stream.readline(1 << 20)
    return line[:2000], True


def _iter_extxyz(path: Path, name: str) -> Iterator[tuple[int, Any, bytes] | Refusal]:
    """Frames of an extxyz file, split by their atom-count lines; each is parsed by ASE on its own.

    Every line is read with a bounded ``readline`` and a frame larger than
    ``CROSSFID_MAX_RECORD_BYTES`` is refused without being kept (its lines are skipped),
    so no line or frame can fill memory; compressed files are capped at
    ``CROSSFID_MAX_DECOMPRESSED_BYTES``.
    """
    import ase.io

    limits = Limits.from_env()
    cap = limits.max_record_bytes
    index = 0
    lineno = 0
    try:
        with open_decompressed(path, limits) as stream:
            while True:
                header, long_header = _bounded_line(stream, cap)
                if not header:
                    return
                lineno += 1
                if not header.strip():
                    continue  # blank lines between frames (also very long ones)
                try:
                    n_atoms = int(header.split()[0])
                    if n_atoms < 0 or long_header:
                        raise ValueError
                except (ValueError, IndexError):
                    yield Refusal(
                        f"{name}:line {lineno}",
                        f"expected the atom count of frame {index}, found {header.strip()[:80]!r}; "
                        "the following frames cannot be located",
                        raw_text=header[:2000].decode("utf-8", errors="replace"),
                    )
                    return
                lines = [header]
                size = len(header)
                too_large = False
                read = 0
                for _ in range(n_atoms + 1):  # comment line + one line per atom
                    line, long_line = _bounded_line(stream, cap)
                    if not line:
                        break
                    read += 1
                    size += len(line)
                    too_large = too_large or long_line or size > cap
                    if too_large:
                        lines = lines[:1]  # keep nothing but the header of a frame that is too large
                        continue
                    lines.append(line)
                lineno += read
                blob = b"".join(lines)
                if read < n_atoms + 1:
                    yield Refusal(
                        f"{name}:frame {index}",
                        f"frame {index} is truncated: the file ends after {max(0, read - 1)} of {n_atoms} atom lines",
                        raw_text=blob[:20_000].decode("utf-8", errors="replace"),
                    )
                    return
                if too_large:
                    yield Refusal(
                        f"{name}:frame {index}",
                        record_size_reason(cap, f"frame {index}"),
                        raw_text=header[:2000].decode("utf-8", errors="replace"),
                    )
                    index += 1
                    continue
                try:
                    atoms = ase.io.read(io.StringIO(blob.decode("utf-8")), format="extxyz", index=0)
                except Exception as exc:  # noqa: BLE001 - any parse failure refuses this frame only
                    yield Refusal(
                        f"{name}:frame {index}",
                        _parse_problem(exc, index),
                        raw_text=blob.decode("utf-8", errors="replace"),
                    )
                else:
                    yield index, atoms, blob
                index += 1
    except Exception as exc:  # noqa: BLE001 - the rest of the file is lost; say why and where
        yield Refusal(f"{name}:frame {index}", f"{stream_problem(exc)}; {index} frame(s) were read before it")


def _atoms_document(index: int, atoms) -> dict[str, Any]:
    return {
        "index": index,
        "numbers": atoms.numbers,
        "cell": np.array(atoms.cell),
        "positions": atoms.positions,
        "pbc": atoms.pbc,
        "info": dict(atoms.info),
        "arrays": {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")},
        "results": dict(atoms.calc.results) if atoms.calc is not None else {},
    }


def _check_decompressed_size(path: Path) -> None:
    """ASE decompresses on its own: a compressed file is first counted through the capped reader."""
    with open(path, "rb") as raw:
        if compression_of(raw.read(6)) is None:
            return
    with open_decompressed(path) as stream:
        while stream.read(1 << 20):
            pass


def _iter_ase(path: Path, name: str) -> Iterator[tuple[int, Any, dict[str, Any]] | Refusal]:
    import ase.io

    count = 0
    try:
        _check_decompressed_size(path)
        for atoms in ase.io.iread(str(path), index=":"):
            yield count, atoms, _atoms_document(count, atoms)
            count += 1
    except Exception as exc:  # noqa: BLE001 - ASE cannot resume after a bad frame
        detail = " ".join(str(exc).split())[:300]
        known = isinstance(exc, OSError | EOFError | InputLimitError)
        reason = stream_problem(exc) if known else f"{type(exc).__name__}: {detail}"
        if count == 0:
            yield Refusal(name, f"cannot read the file as an ASE trajectory: {reason}")
        else:
            yield Refusal(f"{name}:frame {count}", f"cannot read frame {count}: {reason}; the rest of the file is lost")
