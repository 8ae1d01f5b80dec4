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
  eV/atom its task becomes the entry's ``task_external_id`` and that frame's structure
  (``Structure.as_dict()``, with ``n_atoms``) the entry's ``structure``, which the
  thermodynamic and density benchmarks need; an entry with no such frame has no
  structure (no frame is known to be the relaxed structure). ``entry_id`` is the
  ``mp_id``; ``correction_scheme`` is ``MP2020`` for GGA/GGA+U (as the descriptor
  says) and None for other fidelities (unknown).
* Fidelity: the files carry no INCAR, so it is given by the caller. MPtrj mixes GGA
  and GGA+U materials; pass :data:`MP_GGA_AUTO` (``"GGA/GGA+U"``) to apply the
  Materials Project rule per material (pymatgen ``MPRelaxSet``: +U when the most
  electronegative element is O or F and the structure contains one of Co, Cr, Fe, Mn,
  Mo, Ni, V, W; the U values of that set become the task's ``hubbards``). With an
  explicit fidelity ``hubbards`` is unknown (None).

Streaming: the file is split into its top-level items (one material each) at the
byte level and each item is parsed on its own (:func:`~crossfid.ingest.sourceio.iter_json_stream`),
so memory is bounded by the largest material, not the file. Bare ``NaN``/``Infinity``
tokens (which Python's ``json`` writes) are read as floats, so a non-finite value
refuses only its frame (via ``validate_bundle``). A material nested deeper than
``CROSSFID_MAX_JSON_DEPTH`` (64) or larger than ``CROSSFID_MAX_RECORD_BYTES`` (256 MiB),
or whose JSON is malformed, is refused alone, unparsed, and the next materials are
read; a gzip file expanding beyond ``CROSSFID_MAX_DECOMPRESSED_BYTES`` is refused
from that point. A corrupt or truncated tail yields everything before it and then
one :class:`Refusal`.

The JSON-streaming and structure helpers live in :mod:`crossfid.ingest.sourceio`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.errors import InputError
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
from crossfid.ingest.sourceio import (
    Limits,
    first_byte_or_refusal,
    is_missing,
    iter_json_stream,
    reduced_composition,
    structure_arrays,
    to_array,
    to_float,
    to_optional_float,
)
from crossfid.vocabulary import FIDELITY_NAMES, is_fidelity

__all__ = ["MP_GGA_AUTO", "MPTRJ_FRAME_ID", "read_mptrj", "parse_frame_id", "mp_hubbards"]

#: pass as ``fidelity`` to decide GGA vs GGA+U per material with the Materials Project rule
MP_GGA_AUTO = "GGA/GGA+U"

#: ``<task id>-<calc id>-<ionic step>``; the task id may itself contain dashes (``mp-1234``)
MPTRJ_FRAME_ID = re.compile(r"^(?P<task>.+)-(?P<calc>\d{1,9})-(?P<step>\d{1,9})$")

#: a frame whose corrected energy per atom is this close to ``e_per_atom_relaxed`` is the reference frame
_REFERENCE_MATCH = 1e-5

_RUN_TYPES = {"GGA": "PBE", "GGA+U": "PBE+U"}


def read_mptrj(path: str | os.PathLike[str], fidelity: str, *, run_type: str | None = None) -> Iterator[Record]:
    """Stream an MPtrj-format JSON file (plain or gzip) as one :class:`Bundle` per material.

    ``fidelity`` is a name of :data:`crossfid.vocabulary.FIDELITY_NAMES` (e.g.
    ``"r2SCAN"`` for MP-r2SCAN) or :data:`MP_GGA_AUTO` for MPtrj's GGA/GGA+U mixture.
    ``run_type`` is the exact functional stored on the tasks; by default ``PBE``,
    ``PBE+U`` or the fidelity name. Bad records become :class:`Refusal` s; the
    generator never raises on bad input (a bad *argument* raises ``ValueError``
    immediately).
    """
    if fidelity != MP_GGA_AUTO and not is_fidelity(fidelity):
        known = ", ".join(FIDELITY_NAMES)
        raise InputError(f"unknown fidelity {fidelity!r}; expected one of {known} or {MP_GGA_AUTO!r}")
    return _read_mptrj(Path(path), fidelity, run_type, Limits.from_env())


def _read_mptrj(path: Path, fidelity: str, run_type: str | None, limits: Limits) -> Iterator[Record]:
    name = path.name
    first = first_byte_or_refusal(path)
    if isinstance(first, Refusal):
        yield first
        return
    if first != b"{":
        what = "a JSON array" if first == b"[" else f"not JSON (starts with {first!r})"
        expected = "expected an object {mp_id: {frame_id: frame}}"
        yield Refusal(name, f"not an MPtrj file: top level is {what}, {expected}")
        return
    for item in iter_json_stream(path, "object", limits):
        if isinstance(item, Refusal):
            yield item  # one material (the next ones are still read), or the rest of the file
            continue
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
        except (TypeError, ValueError, OverflowError) as exc:
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
    best: tuple[float, str, float, Frame] | None = None  # (|Δ|, task, correction per atom, frame)
    for task_id, p in frames:
        if p.corrected_total is None or p.frame.energy is None:
            continue
        corrected_pa = p.corrected_total / p.n_atoms
        correction_pa = (p.corrected_total - p.frame.energy) / p.n_atoms
        distance = abs(corrected_pa - e_relaxed)
        if math.isfinite(distance) and math.isfinite(correction_pa) and (best is None or distance < best[0]):
            best = (distance, task_id, correction_pa, p.frame)
    if best is None:
        raise RecordError(
            "cannot derive the uncorrected reference energy: no frame has finite "
            "corrected_total_energy and uncorrected_total_energy"
        )
    distance, task_id, correction_pa, frame = best
    matched = distance <= _REFERENCE_MATCH
    return ReferenceEntry(
        fidelity=fidelity,
        energy_per_atom=e_relaxed - correction_pa,
        corrected_energy_per_atom=e_relaxed,
        formation_energy_per_atom=formation,
        n_atoms=frame.n_atoms if matched else None,
        structure=frame.to_structure().as_dict() if matched else None,
        entry_id=mp_id,
        task_external_id=task_id if matched else None,
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
