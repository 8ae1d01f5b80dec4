"""MPtrj-format JSON (MPtrj, MP-r2SCAN) → canonical records, streamed.

File format
-----------
``{mp_id: {frame_id: frame}}``, plain or gzip-compressed (detected by its magic
bytes, not its name). The fields of a frame, as defined by the data descriptor of the
MPtrj release (B. Deng, figshare 23713842, "Materials Project Trajectory (MPtrj)
Dataset"; the installed CHGNet, ``chgnet/data/dataset.py`` ``StructureJsonData``,
only reads ``energy_per_atom``, ``force``, ``stress`` × −0.1 and ``magmom`` and does
not document the others):

* ``structure`` — pymatgen ``Structure.as_dict()``
* ``uncorrected_total_energy`` (eV) — raw VASP energy of the frame
* ``corrected_total_energy`` (eV) — after the MP2020 compatibility corrections
* ``energy_per_atom`` (eV/atom) — ``corrected_total_energy / n``, CHGNet's energy label
* ``ef_per_atom`` (eV/atom) — formation energy per atom of the frame
* ``e_per_atom_relaxed`` (eV/atom) — *corrected* energy per atom of the material's
  relaxed structure ("the energy you can find for the mp-id on the MP website")
* ``ef_per_atom_relaxed`` (eV/atom) — formation energy per atom of the relaxed structure
* ``force`` (eV/Å) — (n, 3)
* ``stress`` (kBar) — 3×3, VASP sign (compressive positive); CHGNet multiplies it by −0.1
* ``magmom`` (μB) — (n,), ``null`` when not available
* ``bandgap`` (eV); ``mp_id`` — the material id (also the top-level key)

The MP-r2SCAN release uses the same format.

Mapping
-------
* One :class:`Bundle` per ``mp_id`` (material ``external_id`` = the top-level key).
* Frame ids are ``"<task_id>-<calc_id>-<ionic_step>"`` (e.g. ``mp-1234-0-3``): the
  task id is everything before the last two dash-separated integers. Per the
  descriptor, ``calc_id`` indexes MP's ``calcs_reversed``: **1 is the first and 0 the
  second relaxation** of MP's double relaxation, so frames of a task are ordered by
  (calc_id descending, ionic_step ascending) and the task's last frame is the last
  step of its last calculation. When any frame id of a material does not have that
  form, the material's frames become one task ``mptrj:<mp_id>`` in file order.
  Tasks are ``relax`` tasks with ``external_id`` ``mptrj:<task_id>``; a frame's
  ``ionic_step`` is its running index in the ordered task (refused frames keep
  their index, so the numbering does not depend on what was refused).
* ``energy`` = ``uncorrected_total_energy``, ``corrected_energy`` =
  ``corrected_total_energy``, ``forces`` = ``force``, ``stress`` =
  :func:`~crossfid.ingest.records.stress_from_vasp_kbar` (``stress``), ``magmoms`` =
  ``magmom``. ``bandgap`` and the per-frame formation energies are kept only in the
  raw document.
* Reference entry (when ``e_per_atom_relaxed`` is present): ``corrected_energy_per_atom``
  = ``e_per_atom_relaxed``, ``formation_energy_per_atom`` = ``ef_per_atom_relaxed``.
  The file has no *uncorrected* relaxed energy, so ``energy_per_atom`` is derived:
  ``e_per_atom_relaxed`` minus the correction per atom ``(corrected_total_energy -
  uncorrected_total_energy) / n`` of the frame whose corrected energy per atom is
  closest to ``e_per_atom_relaxed`` (the correction depends on composition and
  U, so it is the same for all frames of a material up to MP2020's structure-dependent
  oxide/peroxide classification; taking the closest frame makes even that exact for
  the reference frame). When some frame matches ``e_per_atom_relaxed`` within 1e-5
  eV/atom its task becomes the entry's ``task_external_id``. ``entry_id`` is the
  ``mp_id``; ``correction_scheme`` is ``MP2020`` for GGA/GGA+U (as the descriptor
  says) and None for other fidelities (unknown).
* Fidelity: the files carry no INCAR, so it is given by the caller. MPtrj mixes GGA
  and GGA+U materials; pass :data:`MP_GGA_AUTO` (``"GGA/GGA+U"``) to apply the
  Materials Project rule per material (pymatgen ``MPRelaxSet``: +U when the most
  electronegative element is O or F and the structure contains one of Co, Cr, Fe, Mn,
  Mo, Ni, V, W; the U values of that set become the task's ``hubbards``). With an
  explicit fidelity ``hubbards`` is unknown (None).

Streaming: the file is read with ``ijson`` one top-level item at a time, so memory
is bounded by the largest material, not the file. Bare ``NaN``/``Infinity`` tokens
(which Python's ``json`` writes but the C JSON parser rejects) are turned into the
strings ``"NaN"``/``"Infinity"`` on the fly and converted back to floats, so a
non-finite value refuses only its frame (via ``validate_bundle``), not the rest of
the file. A corrupt or truncated tail yields everything before it and then one
:class:`Refusal`.

This module also holds the JSON-streaming and pymatgen-structure helpers shared by
:mod:`crossfid.ingest.matpes`.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from crossfid.db.vocabulary import FIDELITY_NAMES
from crossfid.ingest.records import (
    Bundle,
    Frame,
    Material,
    RawDocument,
    Record,
    RecordError,
    ReferenceEntry,
    Refusal,
    Task,
    stress_from_vasp_kbar,
)

__all__ = [
    "MP_GGA_AUTO",
    "MPTRJ_FRAME_ID",
    "read_mptrj",
    "parse_frame_id",
    "mp_hubbards",
    "structure_arrays",
    "iter_json_stream",
    "first_json_byte",
    "open_decompressed",
    "stream_problem",
    "is_missing",
    "to_float",
    "to_optional_float",
    "to_array",
    "reduced_composition",
]

#: pass as ``fidelity`` to decide GGA vs GGA+U per material with the Materials Project rule
MP_GGA_AUTO = "GGA/GGA+U"

#: ``<task id>-<calc id>-<ionic step>``; the task id may itself contain dashes (``mp-1234``)
MPTRJ_FRAME_ID = re.compile(r"^(?P<task>.+)-(?P<calc>\d+)-(?P<step>\d+)$")

#: a frame whose corrected energy per atom is this close to ``e_per_atom_relaxed`` is the reference frame
_REFERENCE_MATCH = 1e-5

_RUN_TYPES = {"GGA": "PBE", "GGA+U": "PBE+U"}


def read_mptrj(path: str | os.PathLike[str], fidelity: str, *, run_type: str | None = None) -> Iterator[Record]:
    """Stream an MPtrj-format JSON file (plain or gzip) as one :class:`Bundle` per material.

    ``fidelity`` is a name of :data:`crossfid.db.vocabulary.FIDELITY_NAMES` (e.g.
    ``"r2SCAN"`` for MP-r2SCAN) or :data:`MP_GGA_AUTO` for MPtrj's GGA/GGA+U mixture.
    ``run_type`` is the exact functional stored on the tasks; by default ``PBE``,
    ``PBE+U`` or the fidelity name. Bad records become :class:`Refusal` s; the
    generator never raises on bad input (a bad *argument* raises ``ValueError``
    immediately).
    """
    if fidelity != MP_GGA_AUTO and fidelity not in FIDELITY_NAMES:
        known = ", ".join(FIDELITY_NAMES)
        raise ValueError(f"unknown fidelity {fidelity!r}; expected one of {known} or {MP_GGA_AUTO!r}")
    return _read_mptrj(Path(path), fidelity, run_type)


def _read_mptrj(path: Path, fidelity: str, run_type: str | None) -> Iterator[Record]:
    name = path.name
    try:
        first = first_json_byte(path)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a refusal of the file
        yield Refusal(name, stream_problem(exc))
        return
    if first is None:
        yield Refusal(name, "file is empty (no JSON document)")
        return
    if first != b"{":
        what = "a JSON array" if first == b"[" else f"not JSON (starts with {first!r})"
        expected = "expected an object {mp_id: {frame_id: frame}}"
        yield Refusal(name, f"not an MPtrj file: top level is {what}, {expected}")
        return
    for item in iter_json_stream(path, "object"):
        if isinstance(item, Refusal):
            yield item
            return
        mp_id, document = item
        yield from _material_records(name, str(mp_id), document, fidelity, run_type)


# --------------------------------------------------------------------------- one material


@dataclass
class _ParsedFrame:
    frame_id: str
    frame: Frame
    n_atoms: int
    corrected_total: float | None
    e_relaxed: Any
    ef_relaxed: Any


def parse_frame_id(frame_id: str) -> tuple[str, int, int] | None:
    """``"mp-1234-0-3"`` → ``("mp-1234", 0, 3)``; None when the id does not have that form."""
    match = MPTRJ_FRAME_ID.match(frame_id)
    if match is None:
        return None
    return match["task"], int(match["calc"]), int(match["step"])


def _material_records(name: str, mp_id: str, document: Any, fidelity: str, run_type: str | None) -> Iterator[Record]:
    where = f"{name}#{mp_id}"
    if not isinstance(document, Mapping):
        yield Refusal(where, "material entry is not a JSON object of frames", raw_document=document)
        return
    if not document:
        yield Refusal(where, "material has no frames", raw_document={mp_id: document})
        return

    # order the frames into tasks
    ids = {frame_id: parse_frame_id(str(frame_id)) for frame_id in document}
    ordered: list[tuple[str, str]]  # (task external id, frame id)
    if all(parsed is not None for parsed in ids.values()):
        parsed_ids: dict[str, tuple[str, int, int]] = ids  # type: ignore[assignment]
        task_order: dict[str, int] = {}
        for task, _, _ in parsed_ids.values():  # tasks in order of first appearance in the file
            task_order.setdefault(task, len(task_order))
        by_task_calc_step = sorted(parsed_ids.items(), key=lambda kv: (task_order[kv[1][0]], -kv[1][1], kv[1][2]))
        ordered = [(f"mptrj:{task}", frame_id) for frame_id, (task, _, _) in by_task_calc_step]
    else:
        ordered = [(f"mptrj:{mp_id}", frame_id) for frame_id in document]

    tasks: dict[str, list[_ParsedFrame]] = {}
    step_counter: dict[str, int] = {}
    composition: tuple | None = None
    composition_frame = ""
    first_numbers: np.ndarray | None = None
    material: Material | None = None
    for task_id, frame_id in ordered:
        step = step_counter.get(task_id, 0)
        step_counter[task_id] = step + 1
        tasks.setdefault(task_id, [])
        frame_doc = document[frame_id]
        frame_where = f"{where}/{frame_id}"
        try:
            parsed = _parse_frame(frame_id, frame_doc, step)
        except RecordError as exc:
            yield Refusal(frame_where, str(exc), raw_document=frame_doc)
            continue
        numbers = parsed.frame.atomic_numbers
        if composition is None:
            composition, composition_frame, first_numbers = reduced_composition(numbers), frame_id, numbers
            material = Material.from_atomic_numbers(mp_id, numbers)
        elif not np.array_equal(numbers, first_numbers) and reduced_composition(numbers) != composition:
            other = Material.from_atomic_numbers(mp_id, parsed.frame.atomic_numbers).formula
            yield Refusal(
                frame_where,
                f"composition {other} differs from the material's {material.formula} (frame {composition_frame})",
                raw_document=frame_doc,
            )
            continue
        tasks[task_id].append(parsed)

    if material is None:
        return  # every frame was refused, each with its reason
    task_fidelity, task_run_type, hubbards = _fidelity_of(fidelity, run_type, material.elements)
    bundle_tasks = [
        Task(
            external_id=task_id,
            fidelity=task_fidelity,
            run_type=task_run_type,
            task_type="relax",
            frames=[p.frame for p in frames],
            hubbards=hubbards,
        )
        for task_id, frames in tasks.items()
        if frames
    ]
    references: list[ReferenceEntry] = []
    try:
        reference = _reference_entry(mp_id, task_fidelity, tasks)
    except RecordError as exc:
        yield Refusal(f"{where} reference {task_fidelity}", str(exc))
    else:
        if reference is not None:
            references.append(reference)
    yield Bundle(
        material=material,
        location=where,
        tasks=bundle_tasks,
        references=references,
        raw=RawDocument.from_json({mp_id: document}, where),
    )


def _parse_frame(frame_id: str, doc: Any, step: int) -> _ParsedFrame:
    if not isinstance(doc, Mapping):
        raise RecordError("frame is not a JSON object")
    for key in ("structure", "uncorrected_total_energy", "force"):
        if key not in doc:
            raise RecordError(f"frame has no {key!r}")
        if doc[key] is None:
            raise RecordError(f"{key!r} is null")
    lattice, numbers, frac = structure_arrays(doc["structure"])
    n = len(numbers)
    energy = to_float(doc["uncorrected_total_energy"], "uncorrected_total_energy")
    corrected = to_optional_float(doc.get("corrected_total_energy"), "corrected_total_energy")
    forces = to_array(doc["force"], "force")
    stress = doc.get("stress")
    if is_missing(stress):
        stress = None
    else:
        try:
            stress = stress_from_vasp_kbar(stress)
        except (TypeError, ValueError) as exc:
            raise RecordError(f"stress is not a numeric 3×3 or Voigt-6 array ({exc})") from exc
    magmoms = doc.get("magmom")
    if is_missing(magmoms):
        magmoms = None
    else:
        magmoms = to_array(magmoms, "magmom")
        if magmoms.ndim == 2 and magmoms.shape[1] == 1:
            magmoms = magmoms[:, 0]
    frame = Frame(
        ionic_step=step,
        lattice=lattice,
        atomic_numbers=numbers,
        frac_coords=frac,
        energy=energy,
        forces=forces,
        stress=stress,
        magmoms=magmoms,
        corrected_energy=corrected,
    )
    return _ParsedFrame(
        frame_id=frame_id,
        frame=frame,
        n_atoms=n,
        corrected_total=corrected,
        e_relaxed=doc.get("e_per_atom_relaxed"),
        ef_relaxed=doc.get("ef_per_atom_relaxed"),
    )


def _reference_entry(mp_id: str, fidelity: str, tasks: dict[str, list[_ParsedFrame]]) -> ReferenceEntry | None:
    frames = [(task_id, p) for task_id, parsed in tasks.items() for p in parsed]
    relaxed = next((p.e_relaxed for _, p in frames if p.e_relaxed is not None), None)
    if relaxed is None:
        return None
    e_relaxed = to_float(relaxed, "e_per_atom_relaxed")
    formation = next((p.ef_relaxed for _, p in frames if p.ef_relaxed is not None), None)
    formation = to_optional_float(formation, "ef_per_atom_relaxed")
    best: tuple[float, str, float] | None = None  # (|Δ|, task, correction per atom)
    for task_id, p in frames:
        if p.corrected_total is None or p.frame.energy is None:
            continue
        corrected_pa = p.corrected_total / p.n_atoms
        correction_pa = (p.corrected_total - p.frame.energy) / p.n_atoms
        distance = abs(corrected_pa - e_relaxed)
        if math.isfinite(distance) and math.isfinite(correction_pa) and (best is None or distance < best[0]):
            best = (distance, task_id, correction_pa)
    if best is None:
        raise RecordError(
            "cannot derive the uncorrected reference energy: no frame has finite "
            "corrected_total_energy and uncorrected_total_energy"
        )
    distance, task_id, correction_pa = best
    return ReferenceEntry(
        fidelity=fidelity,
        energy_per_atom=e_relaxed - correction_pa,
        corrected_energy_per_atom=e_relaxed,
        formation_energy_per_atom=formation,
        entry_id=mp_id,
        task_external_id=task_id if distance <= _REFERENCE_MATCH else None,
        correction_scheme="MP2020" if fidelity in ("GGA", "GGA+U") else None,
    )


# --------------------------------------------------------------------------- fidelity


@cache
def _mp_relax_set_u() -> dict[str, dict[str, float]]:
    from pymatgen.io.vasp.sets import MPRelaxSet

    return {anion: dict(values) for anion, values in MPRelaxSet.CONFIG["INCAR"]["LDAUU"].items()}


def mp_hubbards(elements: tuple[str, ...] | list[str]) -> dict[str, float] | None:
    """U values (eV) that the Materials Project's ``MPRelaxSet`` applies to these elements; None for plain GGA.

    +U applies when the most electronegative element is one of the set's anions (O or F)
    and the structure contains an element with a U value for that anion.
    """
    from pymatgen.core import Element

    def electronegativity(symbol: str) -> float:
        with warnings.catch_warnings():  # noble gases: "No Pauling electronegativity"
            warnings.simplefilter("ignore")
            x = Element(symbol).X
        return -math.inf if x is None or math.isnan(x) else x

    if not elements:
        return None
    most = max(elements, key=electronegativity)
    table = _mp_relax_set_u().get(most)
    if not table:
        return None
    hubbards = {el: float(table[el]) for el in sorted(elements) if float(table.get(el, 0.0)) != 0.0}
    return hubbards or None


def _fidelity_of(
    fidelity: str, run_type: str | None, elements: tuple[str, ...]
) -> tuple[str, str, dict[str, float] | None]:
    if fidelity == MP_GGA_AUTO:
        hubbards = mp_hubbards(elements)
        name = "GGA+U" if hubbards else "GGA"
        return name, run_type or _RUN_TYPES[name], hubbards
    return fidelity, run_type or _RUN_TYPES.get(fidelity, fidelity), None


# --------------------------------------------------------------------------- shared helpers


@cache
def _element_numbers() -> dict[str, int]:
    from pymatgen.core.periodic_table import Element

    return {element.symbol: int(element.Z) for element in Element}


def structure_arrays(structure: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice (3, 3), atomic numbers (n,), fractional coordinates (n, 3)) of a pymatgen ``Structure`` dict.

    Parsed directly (much faster than ``Structure.from_dict`` and stricter: pymatgen
    would turn an unknown symbol into a dummy species). Raises :class:`RecordError`
    for a malformed dict, an unknown element, a disordered site or no sites.
    """
    if not isinstance(structure, Mapping):
        raise RecordError("structure is not a pymatgen Structure object")
    try:
        matrix = structure["lattice"]["matrix"]
    except (KeyError, TypeError) as exc:
        raise RecordError("structure has no lattice matrix") from exc
    try:
        lattice = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError) as exc:
        raise RecordError("lattice matrix is not numeric") from exc
    sites = structure.get("sites")
    if not isinstance(sites, list):
        raise RecordError("structure has no list of sites")
    if not sites:
        raise RecordError("structure has no sites (empty structure)")
    symbols = _element_numbers()
    numbers = np.empty(len(sites), dtype=np.int16)
    abc: list[Any] = []
    xyz: list[Any] = []
    for i, site in enumerate(sites):
        try:
            species = site["species"]
        except (KeyError, TypeError) as exc:
            raise RecordError(f"site {i} has no species") from exc
        if not isinstance(species, list) or len(species) != 1:
            raise RecordError(f"site {i} is disordered ({len(species) if isinstance(species, list) else 0} species)")
        specie = species[0]
        try:
            symbol = specie["element"]
            occupancy = float(specie.get("occu", 1.0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"site {i} has a malformed species entry") from exc
        if abs(occupancy - 1.0) > 1e-6:
            raise RecordError(f"site {i} is partially occupied (occupancy {occupancy:g})")
        z = symbols.get(symbol) if isinstance(symbol, str) else None
        if z is None:
            raise RecordError(f"unknown element symbol {symbol!r} at site {i}")
        numbers[i] = z
        if "abc" in site and site["abc"] is not None:
            abc.append(site["abc"])
        elif "xyz" in site and site["xyz"] is not None:
            xyz.append((i, site["xyz"]))
        else:
            raise RecordError(f"site {i} has no coordinates")
    try:
        if not xyz:
            frac = np.asarray(abc, dtype=float)
        else:
            frac = np.empty((len(sites), 3))
            cart = {i: np.asarray(x, dtype=float) for i, x in xyz}
            inverse = np.linalg.inv(lattice)
            fractional_iter = iter(abc)
            for i in range(len(sites)):
                frac[i] = cart[i] @ inverse if i in cart else np.asarray(next(fractional_iter), dtype=float)
    except np.linalg.LinAlgError as exc:
        raise RecordError("lattice is singular (zero-volume cell): cannot convert Cartesian coordinates") from exc
    except (TypeError, ValueError) as exc:
        raise RecordError("site coordinates are not numeric 3-vectors") from exc
    return lattice, numbers, frac


def reduced_composition(numbers: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Hashable reduced composition: ((Z, count / gcd), ...) sorted by Z."""
    elements, counts = np.unique(np.asarray(numbers), return_counts=True)
    divisor = int(np.gcd.reduce(counts)) if counts.size else 1
    return tuple((int(z), int(c) // divisor) for z, c in zip(elements, counts, strict=True))


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, list | tuple) and len(value) == 0)


def to_float(value: Any, what: str) -> float:
    """float(value), including the ``"NaN"``/``"Infinity"`` strings of a quoted non-finite token."""
    if isinstance(value, bool):
        raise RecordError(f"{what} is not a number: {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not a number: {value!r}") from exc


def to_optional_float(value: Any, what: str) -> float | None:
    return None if value is None else to_float(value, what)


def to_array(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not a numeric array") from exc


# ---- JSON streaming

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16  # small reads: a truncated gzip loses at most this much before the failure
_WHITESPACE = b" \t\r\n"


@contextlib.contextmanager
def open_decompressed(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped when it starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


def first_json_byte(path: str | os.PathLike[str]) -> bytes | None:
    """First non-whitespace byte of the (decompressed) file, None for an empty file."""
    with open_decompressed(path) as stream:
        while chunk := stream.read(1 << 16):
            stripped = chunk.lstrip(_WHITESPACE)
            if stripped.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
                stripped = stripped[3:].lstrip(_WHITESPACE)
            if stripped:
                return stripped[:1]
    return None


class _NonFiniteQuotingReader:
    """A binary reader that quotes bare ``NaN``/``Infinity``/``-Infinity`` JSON tokens.

    Python's ``json`` writes these (invalid JSON) tokens for non-finite floats; the C
    parser of ``ijson`` refuses them and would end the stream. A token counts as a
    value when it follows ``:``, ``,`` or ``[`` (after optional whitespace) and is
    followed by ``,``, ``]`` or ``}``: so it is never rewritten inside an ordinary
    string (a string containing e.g. ``": NaN,"`` would be, and the file would then
    be refused as malformed JSON from there on, never silently altered).
    """

    _TOKEN = re.compile(rb"([:,\[][ \t\r\n]*)(-?(?:NaN|Infinity))(?=[ \t\r\n]*[,\]}])")
    _MARGIN = 4096  # bytes kept back so that a token and its context are never split

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._pending = b""  # read, not yet scanned
        self._out = bytearray()  # scanned, not yet returned
        self._eof = False

    def _fill(self, size: int) -> None:
        while len(self._out) < size and not self._eof:
            chunk = self._stream.read(_CHUNK)
            self._eof = not chunk
            buffer = self._pending + chunk
            limit = len(buffer) if self._eof else max(0, len(buffer) - self._MARGIN)
            if b"NaN" not in buffer and b"Infinity" not in buffer:
                self._out += buffer[:limit]
                self._pending = buffer[limit:]
                continue
            position = 0
            for match in self._TOKEN.finditer(buffer):
                if match.start() >= limit:
                    break
                self._out += buffer[position : match.start(2)]
                self._out += b'"' + match.group(2) + b'"'
                position = match.end()
            end = max(position, limit)
            self._out += buffer[position:end]
            self._pending = buffer[end:]

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            self._fill(math.inf)  # type: ignore[arg-type]
            size = len(self._out)
        else:
            self._fill(size)
        data = bytes(self._out[:size])
        del self._out[:size]
        return data


def stream_problem(exc: BaseException) -> str:
    """A reason a person understands for a failure while reading a (possibly gzipped) JSON stream."""
    import ijson

    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}"
    if isinstance(exc, IsADirectoryError):
        return f"not a file but a directory: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}"
    if isinstance(exc, EOFError):
        return "file is truncated: the gzip stream ends before its end-of-stream marker"
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return f"corrupt gzip data ({exc})"
    if isinstance(exc, ijson.IncompleteJSONError) and "premature EOF" in str(exc):
        return "file is truncated: the JSON ends in the middle of a document"
    if isinstance(exc, ijson.JSONError):
        detail = " ".join(str(exc).split())
        return f"malformed JSON ({detail[:300]})"
    if isinstance(exc, UnicodeDecodeError):
        return f"file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError):
        return f"cannot read file: {exc}"
    return f"cannot read file: {type(exc).__name__}: {exc}"


def iter_json_stream(path: str | os.PathLike[str], top: str) -> Iterator[tuple[Any, Any] | Refusal]:
    """Stream the items of a top-level JSON ``"object"`` (key, value) or ``"array"`` (index, value).

    Yields ``(key_or_index, value)`` pairs; a read or parse failure yields one final
    :class:`Refusal` located after the last good item, and the stream ends.
    """
    import ijson

    name = Path(path).name
    last: Any = None
    count = 0
    try:
        with open_decompressed(path) as stream:
            reader = _NonFiniteQuotingReader(stream)
            if top == "object":
                items = ijson.kvitems(reader, "", use_float=True)
            else:
                items = enumerate(ijson.items(reader, "item", use_float=True))
            for key, value in items:
                last = key
                count += 1
                yield key, value
    except Exception as exc:  # noqa: BLE001 - the rest of the stream is lost; say why and where
        where = f"{name}#item {count}"
        if top == "object":
            where = f"{name}#after {last}" if count else f"{name}#start"
        reason = stream_problem(exc)
        closing = "}" if top == "object" else "]"
        if reason.startswith("malformed JSON") and _ends_abruptly(path, closing):
            reason = f"{reason}; the file does not end with {closing!r}, so it may be truncated"
        yield Refusal(where, f"{reason}; {count} item(s) were read before it")


def _ends_abruptly(path: str | os.PathLike[str], closing: str) -> bool:
    """Whether an uncompressed JSON file does not end with the closing bracket of its top level.

    (The C parser reports a file cut inside a number or a string as a lexical error,
    not as a premature end.) Gzip files are not decompressed again to look.
    """
    try:
        with open(path, "rb") as raw:
            if raw.read(2) == _GZIP_MAGIC:
                return False
            size = raw.seek(0, os.SEEK_END)
            raw.seek(max(0, size - 4096))
            tail = raw.read().rstrip(_WHITESPACE)
    except OSError:
        return False
    return not tail.endswith(closing.encode())
