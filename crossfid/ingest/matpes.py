"""MatPES-style JSON → canonical records, streamed.

File format
-----------
A JSON array of documents (``MatPES-PBE-2025.1.json.gz`` and friends), JSON lines
(one document per line), or one JSON document (also pretty-printed over many lines,
or several written one after the other); plain or compressed (gzip, bz2, xz, detected
by the magic bytes). The format is told apart by the first non-blank byte: ``[`` →
array (streamed item by item), ``{`` → JSON lines when the first line is a complete
JSON value on its own, else a stream of documents
(:func:`~crossfid.ingest.sourceio.iter_json_values`). Each document is split off at
the byte level and parsed alone, so one that is malformed, nested deeper than
``CROSSFID_MAX_JSON_DEPTH`` or larger than ``CROSSFID_MAX_RECORD_BYTES`` is refused
and the next ones are read. A document, as described
on matpes.ai/dataset (materialsvirtuallab/matpes ``pages/dataset.py``)::

    structure                 pymatgen Structure dict
    energy                    eV, total DFT energy (uncorrected)
    forces                    eV/Å, (n, 3)
    stress                    kBar, Voigt 6 (xx, yy, zz, yz, xz, xy), VASP sign
    magmoms                   μB, (n,) — optional (not in the 2025.1 release)
    functional                "PBE" | "r2SCAN"
    matpes_id                 e.g. "matpes-20240214_999484_73"
    provenance.original_mp_id the Materials Project material the MD snapshot came from
    bandgap, formation_energy_per_atom, cohesive_energy_per_atom (eV/atom), ...

**Stress units.** The dataset page labels ``stress`` "kilobar", and MatPES's own
training notebook (``Training a MatPES model``) converts it to MatGL's GPa labels
with ``voigt_6_to_full_3x3_stress(stress) * -0.1``: kBar, VASP sign (compressive
positive), ASE Voigt order. That is the default ``stress_unit="kbar_vasp"``
(:func:`~crossfid.ingest.records.stress_from_vasp_kbar`); ``"gpa_ase"`` takes the
values as GPa, tensile positive (3×3 or Voigt 6), for MatPES-like files written that way.

Mapping
-------
Each document is a single-frame ``static`` task (MatPES is static calculations on
MD snapshots) with ``external_id`` ``matpes:<matpes_id>`` (``id`` is accepted too;
without any id the first 16 hex digits of the SHA-256 of the document are used), in a
bundle whose material is ``provenance.original_mp_id`` (or a top-level ``mp_id`` /
``material_id``), else ``matpes:<id>``. Fidelity from ``functional``: PBE → GGA,
PBE+U → GGA+U, r2SCAN → r2SCAN (case-insensitive; any fidelity name of the
vocabulary is also accepted); anything else is refused. MatPES snapshots are not
relaxed structures, so no reference entries are made; the formation and cohesive
energies stay in the raw document.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from crossfid.errors import InputError
from crossfid.ingest.fidelity import fidelity_from_label
from crossfid.ingest.records import (
    Bundle,
    Frame,
    Material,
    RawDocument,
    Record,
    RecordError,
    Refusal,
    Task,
    stress_from_vasp_kbar,
    to_3x3,
)
from crossfid.ingest.sourceio import (
    Limits,
    first_byte_or_refusal,
    is_missing,
    iter_json_stream,
    iter_json_values,
    structure_arrays,
    to_array,
    to_float,
)

__all__ = ["StressUnit", "read_matpes", "fidelity_from_functional", "run_type_for_fidelity"]

StressUnit = Literal["kbar_vasp", "gpa_ase"]

#: functional label (lower case, blanks removed) → (fidelity, run type)
_FUNCTIONALS: dict[str, tuple[str, str]] = {
    "pbe": ("GGA", "PBE"),
    "gga": ("GGA", "PBE"),
    "pbe+u": ("GGA+U", "PBE+U"),
    "gga+u": ("GGA+U", "PBE+U"),
    "r2scan": ("r2SCAN", "r2SCAN"),
    "r²scan": ("r2SCAN", "r2SCAN"),
    "r2scan+u": ("r2SCAN+U", "r2SCAN+U"),
}
_RUN_TYPES = {"GGA": "PBE", "GGA+U": "PBE+U"}


def run_type_for_fidelity(fidelity: str) -> str:
    """The exact functional to store for a fidelity when the source names none (GGA → PBE, GGA+U → PBE+U)."""
    return _RUN_TYPES.get(fidelity, fidelity)


def fidelity_from_functional(functional: Any) -> tuple[str, str] | None:
    """``"PBE"`` → ``("GGA", "PBE")``, ``"r2SCAN"`` → ``("r2SCAN", "r2SCAN")``; None when unknown.

    Matching ignores case and blanks; a fidelity name of the vocabulary (e.g.
    ``"PBEsol"``, ``"HSE06"``) maps to itself.
    """
    if not isinstance(functional, str):
        return None
    key = "".join(functional.split()).lower()
    if key in _FUNCTIONALS:
        return _FUNCTIONALS[key]
    try:
        name = fidelity_from_label(functional)
    except RecordError:
        return None
    return name, run_type_for_fidelity(name)


def read_matpes(path: str | os.PathLike[str], *, stress_unit: StressUnit = "kbar_vasp") -> Iterator[Record]:
    """Stream a MatPES JSON array or JSON-lines file (plain or gzip) as one single-frame :class:`Bundle` per document.

    Bad documents become :class:`Refusal` s; the generator never raises on bad input
    (a bad *argument* raises ``ValueError`` immediately).
    """
    if stress_unit not in ("kbar_vasp", "gpa_ase"):
        raise InputError(f"stress_unit must be 'kbar_vasp' or 'gpa_ase', not {stress_unit!r}")
    return _read_matpes(Path(path), stress_unit, Limits.from_env())


def _read_matpes(path: Path, stress_unit: StressUnit, limits: Limits) -> Iterator[Record]:
    name = path.name
    first = first_byte_or_refusal(path)
    if isinstance(first, Refusal):
        yield first
        return
    if first == b"[":
        items = (
            (f"{name}#item {index}", document) for index, document in _values(iter_json_stream(path, "array", limits))
        )
    elif first == b"{":
        items = ((f"{name}{suffix}", document) for suffix, document in _values(iter_json_values(path, limits)))
    else:
        yield Refusal(name, f"not a MatPES file: expected a JSON array or JSON lines, file starts with {first!r}")
        return
    for item in items:
        if isinstance(item[1], Refusal):
            yield item[1]  # one document (the next ones are still read), or the rest of the file
            continue
        where, document = item
        yield from _document_records(name, where, document, stress_unit)


def _values(items: Iterator[tuple[Any, Any] | Refusal]) -> Iterator[tuple[Any, Any]]:
    for item in items:
        yield (None, item) if isinstance(item, Refusal) else item


def _document_records(name: str, fallback_where: str, document: Any, stress_unit: StressUnit) -> Iterator[Record]:
    if not isinstance(document, Mapping):
        yield Refusal(fallback_where, "document is not a JSON object", raw_document=document)
        return
    doc_id = document.get("matpes_id") or document.get("id")
    where = f"{name}#{doc_id}" if doc_id else fallback_where
    try:
        bundle = _convert(document, where, None if not doc_id else str(doc_id), stress_unit)
    except RecordError as exc:
        yield Refusal(where, str(exc), raw_document=document)
        return
    except Exception as exc:  # noqa: BLE001 - a document that cannot be converted is refused, never fatal
        yield Refusal(where, f"cannot convert the document: {type(exc).__name__}: {exc}", raw_document=document)
        return
    yield bundle


def _convert(document: Mapping[str, Any], where: str, doc_id: str | None, stress_unit: StressUnit) -> Bundle:
    raw = RawDocument.from_json(document, where)
    if doc_id is None:
        doc_id = f"sha256:{raw.sha256[:16]}"
    if "functional" not in document or document["functional"] is None:
        raise RecordError("document has no 'functional' (PBE or r2SCAN)")
    functional = document["functional"]
    mapped = fidelity_from_functional(functional)
    if mapped is None:
        raise RecordError(f"unknown functional {functional!r} (expected PBE, PBE+U, r2SCAN or another fidelity name)")
    fidelity, run_type = mapped
    for key in ("structure", "energy", "forces"):
        if key not in document:
            raise RecordError(f"document has no {key!r}")
        if document[key] is None:
            raise RecordError(f"{key!r} is null")
    lattice, numbers, frac = structure_arrays(document["structure"])
    stress = document.get("stress")
    if is_missing(stress):
        stress = None
    else:
        try:
            stress = stress_from_vasp_kbar(stress) if stress_unit == "kbar_vasp" else to_3x3(stress)
        except (TypeError, ValueError, OverflowError) as exc:  # RecordError is a ValueError
            raise RecordError(f"stress is not a numeric 3×3 or Voigt-6 array ({exc})") from exc
    magmoms = document.get("magmoms", document.get("magmom"))
    magmoms = None if is_missing(magmoms) else to_array(magmoms, "magmoms")
    frame = Frame(
        ionic_step=0,
        lattice=lattice,
        atomic_numbers=numbers,
        frac_coords=frac,
        energy=to_float(document["energy"], "energy"),
        forces=to_array(document["forces"], "forces"),
        stress=stress,
        magmoms=magmoms,
    )
    provenance = document.get("provenance")
    material_id = (
        (provenance.get("original_mp_id") if isinstance(provenance, Mapping) else None)
        or document.get("mp_id")
        or document.get("material_id")
        or f"matpes:{doc_id}"
    )
    task = Task(
        external_id=f"matpes:{doc_id}",
        fidelity=fidelity,
        run_type=run_type,
        task_type="static",
        frames=[frame],
        source_run_type=str(functional),
    )
    return Bundle(
        material=Material.from_atomic_numbers(str(material_id), numbers),
        location=where,
        tasks=[task],
        raw=raw,
    )
