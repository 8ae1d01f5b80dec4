"""pymatgen ``ComputedEntry`` / ``ComputedStructureEntry`` JSON → reference entries.

File format
-----------
What pymatgen's ``dumpfn`` writes for entries (a phase diagram's entries, an MP entry
set): a JSON list of entry dicts (``ComputedStructureEntry.as_dict()``), an object with
such a list under ``entries`` or ``all_entries`` (e.g. a ``PhaseDiagram.as_dict()``), or
one entry dict; plain or gzip/bz2/xz-compressed (by magic bytes, not by name). A list is
streamed item by item with the limits of :mod:`crossfid.ingest.sourceio` (each entry
at most ``CROSSFID_MAX_RECORD_BYTES`` and ``CROSSFID_MAX_JSON_DEPTH`` deep, the
decompressed file at most ``CROSSFID_MAX_DECOMPRESSED_BYTES``); in an object the
``entries`` list is one member, so it is read whole within the record limit.

Each entry is rebuilt with pymatgen itself (``ComputedEntry.from_dict`` /
``ComputedStructureEntry.from_dict``, which also rebuild the energy adjustments). Only
classes of pymatgen, emmet and monty, ``datetime`` and ``numpy`` are decoded: an entry
naming another ``@module`` anywhere in it is refused unparsed (decoding imports it).

Mapping (one :class:`Bundle` per entry, no tasks)
-------------------------------------------------
* :class:`ReferenceEntry`: ``energy_per_atom`` = ``entry.uncorrected_energy_per_atom``,
  ``corrected_energy_per_atom`` = ``entry.energy_per_atom`` (pymatgen's corrected energy:
  uncorrected + the sum of the energy adjustments, or a legacy ``correction``),
  ``n_atoms`` from the structure (else an integral composition), ``structure`` =
  ``entry.structure.as_dict()`` for a ``ComputedStructureEntry`` (a ``ComputedEntry`` has
  none and is stored without one: the thermodynamic benchmarks skip it),
  ``formation_energy_per_atom`` / ``energy_above_hull`` from ``data`` when present,
  ``entry_id`` the entry's id.
* ``correction_scheme``: the compatibility schemes that made the entry's adjustments
  (``MaterialsProject2020Compatibility`` → ``MP2020``, other classes by their name, joined
  with ``+``); ``unknown`` for a correction without a recorded scheme (a legacy
  ``correction`` or a manual adjustment); None when the entry has no correction.
* Fidelity: from ``parameters.run_type`` (``GGA``, ``GGA+U``, ``r2SCAN``, emmet's run
  types; :func:`crossfid.ingest.fidelity.fidelity_from_label`), which must agree with
  ``parameters.is_hubbard`` when that is given. An entry without a run type takes the
  ``fidelity`` argument: a fidelity name, or :data:`~crossfid.ingest.mptrj.MP_GGA_AUTO`
  (``GGA/GGA+U``) for the Materials Project rule by composition (as for MPtrj); without
  one it is refused with that reason.
* Energy quantity: ``e_0_energy`` for a Materials Project entry (its material id is an
  MP id). MP's entries are built from a task's ``output.energy``, which emmet-core takes
  from pymatgen's ``Vasprun.final_energy`` (emmet/core/vasp/calculation.py,
  ``CalculationOutput.from_vasp_outputs``: ``energy=vasprun.final_energy``), and
  ``Vasprun.get_computed_entry`` uses ``self.final_energy`` too; ``final_energy`` is the
  last ionic step's ``e_0_energy`` (pymatgen/io/vasp/outputs.py, ``Vasprun.final_energy``).
  For other entries the quantity is ``unknown``.
* Material: ``data.material_id``, else ``entry_id``, when it is an MP id (``mp-149``,
  ``mp-149-GGA``, AlphaID ``mp-aaaaaaft``; stored in legacy form); otherwise the material
  id is ``""`` and the grouping step (:mod:`crossfid.ingest.grouping`) assigns one from the
  entry's structure. An entry with neither an MP id nor a structure cannot be grouped and
  is refused. The formula comes from the structure, else the composition.
* ``Bundle.raw`` is the entry's JSON (canonical), located at ``<file>#item <i>``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from crossfid.ingest.fidelity import fidelity_from_label
from crossfid.ingest.mp_ids import legacy_mp_id, parse_mp_id
from crossfid.ingest.mptrj import MP_GGA_AUTO, mp_hubbards
from crossfid.ingest.records import (
    Bundle,
    Material,
    RawDocument,
    Record,
    RecordError,
    ReferenceEntry,
    Refusal,
)
from crossfid.ingest.sourceio import Limits, first_byte_or_refusal, iter_json_stream

__all__ = ["ENTRY_CLASSES", "entry_fidelity", "read_entries", "correction_scheme"]

#: the entry classes read (``@class``); a dict without ``@class`` is one of them by its ``structure`` key
ENTRY_CLASSES = ("ComputedEntry", "ComputedStructureEntry")
#: ``@module`` prefixes that may be decoded (MontyDecoder imports the module it names)
_DECODABLE_MODULES = ("pymatgen", "emmet", "monty", "datetime", "numpy")
#: compatibility class → crossfid's scheme name (as MPtrj and MP thermo documents call it)
_SCHEMES = {"MaterialsProject2020Compatibility": "MP2020"}
#: where a JSON object keeps its list of entries
_LIST_KEYS = ("entries", "all_entries")
_MP_ID_HEAD = re.compile(r"^((?:mp|mvc)-[0-9a-z]+)(?:[-_].*)?$")


def read_entries(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *, fidelity: str | None = None
) -> Iterator[Record]:
    """Stream entry JSON files as one :class:`Bundle` (a reference entry) per entry.

    ``fidelity``: the fidelity of entries whose ``parameters`` name no run type (a
    vocabulary name or label, or :data:`~crossfid.ingest.mptrj.MP_GGA_AUTO`); checked at
    once (a bad value raises :class:`~crossfid.errors.InputError`). Bad entries and files become
    :class:`Refusal` s; the generator never raises on bad input.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if fidelity is not None and fidelity != MP_GGA_AUTO:
        from crossfid.errors import InputError

        try:
            fidelity = fidelity_from_label(fidelity)
        except RecordError as exc:
            raise InputError(str(exc)) from exc
    limits = Limits.from_env()
    return (record for path in paths for record in _read_file(Path(path), fidelity, limits))


def _read_file(path: Path, fidelity: str | None, limits: Limits) -> Iterator[Record]:
    name = path.name
    first = first_byte_or_refusal(path)
    if isinstance(first, Refusal):
        yield first
        return
    if first == b"[":
        for item in iter_json_stream(path, "array", limits):
            if isinstance(item, Refusal):
                yield item
                continue
            index, document = item
            yield _record(f"{name}#item {index}", document, fidelity)
        return
    if first != b"{":
        yield Refusal(name, f"not an entries file: expected a JSON list of entries or an object, not {first!r}")
        return
    members: dict[str, Any] = {}
    for item in iter_json_stream(path, "object", limits):
        if isinstance(item, Refusal):
            yield item
            continue
        key, value = item
        members[str(key)] = value
    key = next((k for k in _LIST_KEYS if isinstance(members.get(k), list)), None)
    if key is not None:
        for index, document in enumerate(members[key]):
            yield _record(f"{name}#{key}[{index}]", document, fidelity)
    elif members.get("@class") in ENTRY_CLASSES or "energy" in members and "composition" in members:
        yield _record(f"{name}#entry", members, fidelity)
    elif members:
        shown = ", ".join(sorted(members)[:8])
        yield Refusal(
            name, f"not an entries file: the object has no entries list ({' or '.join(_LIST_KEYS)}); keys: {shown}"
        )


# --------------------------------------------------------------------------- one entry


def _record(where: str, document: Any, fidelity: str | None) -> Bundle | Refusal:
    raw = document if isinstance(document, Mapping) else None
    try:
        return _bundle(where, document, fidelity)
    except RecordError as exc:
        return Refusal(where, str(exc), raw_document=raw)
    except Exception as exc:  # noqa: BLE001 - pymatgen objects of odd entries (dummy species, ...)
        return Refusal(where, f"cannot convert the entry: {type(exc).__name__}: {exc}", raw_document=raw)


def _bundle(where: str, document: Any, fidelity: str | None) -> Bundle:
    entry = _entry(document)
    structure = getattr(entry, "structure", None)
    material_id = _mp_material_id(entry)
    if structure is not None:
        if not structure.is_ordered:
            raise RecordError("the entry's structure is disordered (partial occupancies): not a DFT cell")
        material = Material.from_atomic_numbers(material_id or "", [site.specie.Z for site in structure])
        n_atoms: int | None = len(structure)
    else:
        if material_id is None:
            raise RecordError(
                "entry has neither an MP material id (data.material_id, entry_id) nor a structure: "
                "it cannot be grouped into a material"
            )
        composition = entry.composition
        material = Material(
            external_id=material_id,
            formula=composition.reduced_formula,
            elements=tuple(sorted(str(e) for e in composition.elements)),
        )
        atoms = composition.num_atoms
        n_atoms = int(round(atoms)) if abs(atoms - round(atoms)) < 1e-8 and atoms >= 1 else None
    reference = ReferenceEntry(
        fidelity=entry_fidelity(entry, material.elements, fidelity),
        energy_per_atom=float(entry.uncorrected_energy_per_atom),
        corrected_energy_per_atom=float(entry.energy_per_atom),
        formation_energy_per_atom=_data_number(entry, "formation_energy_per_atom"),
        energy_above_hull=_data_number(entry, "e_above_hull", "energy_above_hull"),
        n_atoms=n_atoms,
        structure=None if structure is None else structure.as_dict(),
        entry_id=None if entry.entry_id is None else str(entry.entry_id),
        correction_scheme=correction_scheme(entry),
        energy_quantity="e_0_energy" if material_id is not None else "unknown",
    )
    return Bundle(material=material, location=where, references=[reference], raw=RawDocument.from_json(document, where))


def _entry(document: Any) -> Any:
    """The pymatgen entry of a JSON dict (RecordError when it is not a decodable entry)."""
    if not isinstance(document, Mapping):
        raise RecordError(f"entry is a JSON {type(document).__name__}, not an object")
    cls_name = document.get("@class", "ComputedStructureEntry" if "structure" in document else "ComputedEntry")
    if cls_name not in ENTRY_CLASSES:
        raise RecordError(f"@class {cls_name!r} is not one of {', '.join(ENTRY_CLASSES)}")
    module = _foreign_module(document)
    if module is not None:
        raise RecordError(f"entry names @module {module!r}: only {', '.join(_DECODABLE_MODULES)} classes are decoded")
    for key in ("energy", "composition"):
        if document.get(key) is None:
            raise RecordError(f"entry has no {key!r}")
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    cls = ComputedStructureEntry if cls_name == "ComputedStructureEntry" else ComputedEntry
    body = {"correction": 0.0, **document}  # pymatgen's from_dict requires the key
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entry = cls.from_dict(body)
            energy, per_atom = float(entry.uncorrected_energy), float(entry.energy_per_atom)
    except Exception as exc:  # pymatgen raises KeyError, ValueError, TypeError... on malformed dicts
        raise RecordError(f"pymatgen cannot read the entry: {type(exc).__name__}: {exc}") from exc
    if not (math.isfinite(energy) and math.isfinite(per_atom)):
        raise RecordError(f"entry energy is not finite ({energy})")
    return entry


def _foreign_module(value: Any, depth: int = 0) -> str | None:
    """The first ``@module`` in ``value`` that may not be decoded, or None."""
    if isinstance(value, Mapping):
        module = value.get("@module")
        if module is not None and not str(module).startswith(_DECODABLE_MODULES):
            return str(module)
        values = value.values()
    elif isinstance(value, list):
        values = value
    else:
        return None
    for item in values:
        found = _foreign_module(item, depth + 1)
        if found is not None:
            return found
    return None


def _mp_material_id(entry: Any) -> str | None:
    """``data.material_id``, else ``entry_id``, in legacy form when it is an MP id (``mp-149-GGA`` → ``mp-149``)."""
    data = entry.data if isinstance(entry.data, Mapping) else {}
    for candidate in (data.get("material_id"), entry.entry_id):
        if candidate is None:
            continue
        match = _MP_ID_HEAD.match(str(getattr(candidate, "string", candidate)).strip())
        if match is not None and parse_mp_id(match.group(1)) is not None:
            return legacy_mp_id(match.group(1))
    return None


def entry_fidelity(entry: Any, elements: Sequence[str], default: str | None = None) -> str:
    """Fidelity of an entry from ``parameters.run_type`` checked against ``is_hubbard``; else ``default``.

    ``default`` :data:`~crossfid.ingest.mptrj.MP_GGA_AUTO` applies the Materials Project
    GGA/GGA+U rule to ``elements``. Raises :class:`RecordError` when neither decides.
    """
    parameters = entry.parameters if isinstance(entry.parameters, Mapping) else {}
    run_type = parameters.get("run_type")
    run_type = getattr(run_type, "value", run_type)
    if run_type in (None, ""):
        if default is None:
            raise RecordError(
                "entry names no functional (parameters.run_type): give the fidelity of such entries "
                f"(a fidelity name, or {MP_GGA_AUTO!r} for the Materials Project rule)"
            )
        if default == MP_GGA_AUTO:
            return "GGA+U" if mp_hubbards(tuple(elements)) else "GGA"
        return default
    fidelity = fidelity_from_label(str(run_type))
    is_hubbard = parameters.get("is_hubbard")
    if isinstance(is_hubbard, bool) and is_hubbard != ("+U" in fidelity):
        raise RecordError(f"parameters.run_type {run_type!r} contradicts parameters.is_hubbard = {is_hubbard}")
    return fidelity


def correction_scheme(entry: Any) -> str | None:
    """The compatibility scheme(s) behind an entry's correction (see the module doc)."""
    adjustments = list(getattr(entry, "energy_adjustments", None) or [])
    if not adjustments:
        return None
    names: list[str] = []
    for adjustment in adjustments:
        cls = getattr(adjustment, "cls", None)
        name = cls.get("@class") if isinstance(cls, Mapping) else type(cls).__name__ if cls else None
        name = _SCHEMES.get(name, name) if name not in (None, "unknown", "NoneType") else "unknown"
        if name not in names:
            names.append(name)
    known = sorted(n for n in names if n != "unknown")
    if not known:
        return "unknown" if not math.isclose(float(entry.correction), 0.0, abs_tol=1e-12) else None
    return "+".join(known + (["unknown"] if "unknown" in names else []))


def _data_number(entry: Any, *keys: str) -> float | None:
    data = entry.data if isinstance(entry.data, Mapping) else {}
    for key in keys:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
