"""Materials for records that name none: a material map, stored materials, MP's own grouping (pure).

A source that cannot name a record's material (MP's ``tasks`` collection stores no
``material_id``; a VASP directory has none) gives its bundle the material id ``""``.
:func:`assign_materials` sits between such a source and the loader and gives every such
bundle a material, by the first rule that applies; the rule is recorded in each task's
``Task.material_rule`` (``crossfid.vocabulary.MATERIAL_RULES``):

1. ``material-map``: the task id is in the user's map (``--material-map FILE``, read by
   :func:`read_material_map`). Ids are compared in one normalised form (:func:`task_key`:
   ``mp-149``, ``149``, ``mp-aaaaaaft`` and ``aaaaaaft`` are one id); a map key also matches
   a VASP task ``vasp:<dir>#<hash>`` by ``vasp:<dir>`` or ``<dir>``, and a split-off task
   ``<id>/<name>`` by ``<id>``.
2. ``structure-match-stored``: the bundle's final structure matches a material already in
   the database (candidates from :mod:`crossfid.ingest.material_store`: the final frame of
   every stored task and the structure of every stored reference entry of that reduced
   formula), or a material named by another record of the same input. A structure
   identical to a stored one (the same record ingested again) adopts that material without
   matching, so re-ingesting is idempotent.
3. ``structure-match-new``: the remaining bundles are grouped as Materials Project's
   materials builder groups tasks (emmet-builders ``MaterialsBuilder.filter_and_group_tasks``):
   per reduced formula, :func:`emmet.core.utils.group_structures` on the final structures
   with emmet's ``LTOL``, ``STOL``, ``ANGLE_TOL`` and ``SYMPREC`` (space group with a loose
   tolerance first, then pymatgen's ``StructureMatcher``). Each group is a new material named
   ``grouped:<lowest task id of the group>`` (MP's id order, :func:`~crossfid.ingest.mp_ids.mp_id_sort_key`;
   MP itself names a material after its lowest task id, the ``grouped:`` prefix keeps such a
   name from passing for an MP id). Structures are fed to emmet in that order, so the groups
   and their names do not depend on the order of the input.

A bundle whose record names its material keeps it; its tasks get the rule ``source``
unless the source set one (``mp-materials``). Grouping is per formula, never all against
all; a group is compared with the stored structures of its formula and space group only,
material by material in id order, stopping at the first match, so a match is the stored
material with the lowest id.

The final structure of a bundle is the last frame of its last task that is not the
pre-calculation of another (a task ``<id>/<name>`` split off the task ``<id>`` of the same
document, see :mod:`crossfid.ingest.mp_docs`); a bundle without tasks (reference entries
only) uses the structure of its first reference entry that has one.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfid.errors import InputError
from crossfid.ingest.mp_ids import legacy_mp_id, mp_id_key, mp_id_sort_key, parse_mp_id
from crossfid.ingest.records import Bundle, Frame, Record, Refusal

if TYPE_CHECKING:
    from pymatgen.core import Structure

#: prefix of the id of a material made by grouping (never an MP id)
NEW_MATERIAL_PREFIX = "grouped:"

#: material external id → structures, per reduced formula
Candidates = Mapping[str, Sequence[tuple[str, "Structure"]]]
#: the stored candidates of some reduced formulas (:func:`crossfid.ingest.material_store.stored_final_structures`)
CandidateLookup = Callable[[Sequence[str]], Candidates]

_MAP_HEADER = ("task_id", "material_id")


# --------------------------------------------------------------------------- the material map


@dataclass(frozen=True)
class MaterialMap:
    """Task id → material id, given by the user; keys in :func:`task_key` form."""

    materials: Mapping[str, str]
    source: str = "material map"

    def __len__(self) -> int:
        return len(self.materials)

    def get(self, task_id: Any) -> str | None:
        return self.materials.get(task_key(task_id))


def task_key(task_id: Any) -> str:
    """The key a task id is compared by: every form of one MP id is one key (``mp-149``, ``mp-aaaaaaft``,
    ``aaaaaaft``, ``149``); other ids as they are."""
    return mp_id_key(task_id, bare=True)


def _material_id(value: Any) -> str:
    """A material id as given in a map, stored in crossfid's form (``149`` and ``mp-aaaaaaft`` → ``mp-149``)."""
    return legacy_mp_id(value, bare=parse_mp_id(value) is None and str(value).strip().isdigit())


def _map_key(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise InputError(f"{where}: a task id must be a non-empty text or a number, not {value!r}")
    return task_key(value)


def _map_value(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise InputError(f"{where}: a material id must be a non-empty text or a number, not {value!r}")
    return _material_id(value)


def parse_material_map(text: str, *, name: str = "material map") -> MaterialMap:
    """A material map from its text: a JSON object ``{task id: material id}``, or CSV with the header
    ``task_id,material_id``. Raises :class:`InputError` naming the line (CSV) or key (JSON) of a bad entry,
    or a task mapped to two different materials."""
    text = text.lstrip("\ufeff")
    materials: dict[str, str] = {}
    seen_at: dict[str, str] = {}

    def add(task: Any, material: Any, where: str) -> None:
        key = _map_key(task, where)
        value = _map_value(material, where)
        if key in materials and materials[key] != value:
            raise InputError(
                f"{where}: task {str(task).strip()!r} is mapped to {value!r} here and to {materials[key]!r} "
                f"at {seen_at[key]}"
            )
        materials[key] = value
        seen_at.setdefault(key, where)

    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"{name}: a JSON material map is an object {{task id: material id}}, not a list")
        for task, material in data.items():
            add(task, material, f"{name}, key {task!r}")
        return MaterialMap(materials, source=name)

    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(h.strip().lower() for h in header) != _MAP_HEADER:
        got = "an empty file" if header is None else ",".join(header)
        raise InputError(f"{name}, line 1: expected the header 'task_id,material_id' (or a JSON object), got {got!r}")
    for row in rows:
        where = f"{name}, line {rows.line_num}"
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise InputError(f"{where}: expected two fields 'task_id,material_id', got {len(row)}: {','.join(row)!r}")
        add(row[0].strip(), row[1].strip(), where)
    return MaterialMap(materials, source=name)


def read_material_map(path: Path | str) -> MaterialMap:
    """:func:`parse_material_map` of a file (UTF-8). Raises :class:`InputError` for a bad file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_material_map(text, name=str(path))


def _map_keys(task_id: str) -> list[str]:
    """The ids a map key may give for a task: the id, ``<id>`` of ``<id>/<name>``, ``vasp:<dir>`` and ``<dir>``
    of ``vasp:<dir>#<hash>``."""
    keys = [task_id]
    head = task_id.split("#", 1)[0]
    if head != task_id:
        keys += [head, head.removeprefix("vasp:")]
    if "/" in task_id and "#" not in task_id:
        keys.append(task_id.rsplit("/", 1)[0])
    return keys


# --------------------------------------------------------------------------- structures of bundles


def _primary_tasks(bundle: Bundle) -> list:
    ids = {task.external_id for task in bundle.tasks}
    return [t for t in bundle.tasks if not ("/" in t.external_id and t.external_id.rsplit("/", 1)[0] in ids)]


def _final_of(bundle: Bundle) -> Frame | Mapping[str, Any] | None:
    """The final frame of a bundle, or the structure dict of its first reference entry that has one."""
    tasks = [t for t in _primary_tasks(bundle) if t.frames] or [t for t in bundle.tasks if t.frames]
    if tasks:
        return max(tasks[-1].frames, key=lambda f: f.ionic_step)
    return next((entry.structure for entry in bundle.references if entry.structure), None)


def _as_structure(final: Frame | Mapping[str, Any] | None) -> Structure | None:
    from pymatgen.core import Structure

    if final is None:
        return None
    if isinstance(final, Frame):
        return final.to_structure()
    return Structure.from_dict(dict(final))


def bundle_structure(bundle: Bundle) -> Structure | None:
    """The final structure of a bundle (see the module doc), None when it has none."""
    return _as_structure(_final_of(bundle))


def _bundle_ids(bundle: Bundle) -> list[str]:
    """The ids that name a bundle: its tasks' (primary first), else its reference entries'."""
    primary = _primary_tasks(bundle)
    chosen = {id(t) for t in primary}
    ids = [t.external_id for t in primary] + [t.external_id for t in bundle.tasks if id(t) not in chosen]
    if not ids:
        for entry in bundle.references:
            ids += [i for i in (entry.entry_id, entry.task_external_id) if i]
    return ids


def structure_key(structure: Structure) -> str:
    """SHA-256 of a structure's exact numbers (atomic numbers, lattice, fractional coordinates)."""
    digest = hashlib.sha256()
    digest.update(np.asarray(structure.atomic_numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(structure.frac_coords, dtype=np.float64).tobytes())
    return digest.hexdigest()


@functools.cache
def _emmet_settings() -> Any:
    """emmet-core's settings (``LTOL``, ``STOL``, ``ANGLE_TOL``, ``SYMPREC``: those of MP's materials builder)."""
    from emmet.core.settings import EmmetSettings

    return EmmetSettings()


def _space_group(structure: Structure, cache: dict[str, int], key: str) -> int:
    from emmet.core.utils import get_sg

    if key not in cache:
        cache[key] = get_sg(structure, symprec=_emmet_settings().SYMPREC)
    return cache[key]


def group_final_structures(structures: Sequence[Structure]) -> list[list[int]]:
    """Indices of ``structures`` grouped as MP's materials builder groups tasks of one formula:
    :func:`emmet.core.utils.group_structures` with emmet's LTOL, STOL, ANGLE_TOL and SYMPREC."""
    from emmet.core.utils import group_structures

    settings = _emmet_settings()
    index = {id(s): i for i, s in enumerate(structures)}
    groups = group_structures(
        list(structures), ltol=settings.LTOL, stol=settings.STOL, angle_tol=settings.ANGLE_TOL, symprec=settings.SYMPREC
    )
    return [[index[id(s)] for s in group] for group in groups]


def _matches(structure: Structure, other: Structure) -> bool:
    """Whether emmet's grouping puts the two structures in one material."""
    return len(group_final_structures([structure, other])) == 1


# --------------------------------------------------------------------------- grouping


@dataclass
class _Pending:
    order: int  # position among the bundles to group
    bundle: Bundle
    structure: Structure
    key: str
    name: str  # lowest id of the bundle, MP's order


@dataclass
class _Formula:
    """Candidates of one reduced formula: exact structure → material ids, and unique structures per material."""

    by_key: dict[str, str] = field(default_factory=dict)
    structures: dict[str, list[tuple[str, Structure]]] = field(default_factory=dict)

    def add(self, material_id: str, structure: Structure) -> None:
        key = structure_key(structure)
        known = self.by_key.get(key)
        if known is None or mp_id_sort_key(material_id) < mp_id_sort_key(known):
            self.by_key[key] = material_id
        entries = self.structures.setdefault(material_id, [])
        if all(k != key for k, _ in entries):
            entries.append((key, structure))


def group_bundles(bundles: Sequence[Bundle], candidates: Candidates | None = None) -> list[tuple[str, str] | str]:
    """For each bundle (material id ``""``), ``(material id, rule)`` or a refusal reason.

    ``candidates``: reduced formula → (material id, structure) of materials that exist already
    (rule ``structure-match-stored``). Pure: the same bundles and candidates give the same answer
    in any order.
    """
    results: list[tuple[str, str] | str] = ["" for _ in bundles]
    by_formula: dict[str, list[_Pending]] = {}
    for order, bundle in enumerate(bundles):
        structure = bundle_structure(bundle)
        ids = _bundle_ids(bundle)
        if structure is None:
            results[order] = "the record names no material and has no structure to group it by"
            continue
        key = structure_key(structure)
        name = min(ids, key=mp_id_sort_key) if ids else f"sha256:{key[:16]}"
        by_formula.setdefault(bundle.material.formula, []).append(_Pending(order, bundle, structure, key, name))

    sg_cache: dict[str, int] = {}
    for formula in sorted(by_formula):
        known = _Formula()
        for material_id, structure in (candidates or {}).get(formula, ()):
            known.add(material_id, structure)
        for pending, assignment in _group_formula(by_formula[formula], known, sg_cache):
            results[pending.order] = assignment
    return results


def _group_formula(
    items: list[_Pending], known: _Formula, sg_cache: dict[str, int]
) -> Iterator[tuple[_Pending, tuple[str, str]]]:
    unique: dict[str, list[_Pending]] = {}
    for item in items:
        stored = known.by_key.get(item.key)
        if stored is not None:  # the very structure of a stored task: the same record again
            yield item, (stored, "structure-match-stored")
        else:
            unique.setdefault(item.key, []).append(item)
    if not unique:
        return
    # emmet's grouping on the distinct structures, in MP's id order (so independent of input order)
    ordered = sorted(unique.values(), key=lambda same: (min(mp_id_sort_key(i.name) for i in same), same[0].key))
    for group in group_final_structures([same[0].structure for same in ordered]):
        members = [item for index in group for item in ordered[index]]
        first = ordered[group[0]][0]
        stored = _stored_match(first, known, sg_cache)
        if stored is not None:
            assignment = (stored, "structure-match-stored")
        else:
            lowest = min((item.name for item in members), key=mp_id_sort_key)
            assignment = (NEW_MATERIAL_PREFIX + lowest, "structure-match-new")
        for item in members:
            yield item, assignment


def _stored_match(item: _Pending, known: _Formula, sg_cache: dict[str, int]) -> str | None:
    """The lowest-id known material with a structure matching ``item``'s (same space group first)."""
    if not known.structures:
        return None
    group = _space_group(item.structure, sg_cache, item.key)
    for material_id in sorted(known.structures, key=mp_id_sort_key):
        for key, structure in known.structures[material_id]:
            if _space_group(structure, sg_cache, key) == group and _matches(item.structure, structure):
                return material_id
    return None


# --------------------------------------------------------------------------- the stream


def _with_material(bundle: Bundle, material_id: str, rule: str) -> Bundle:
    tasks = [replace(task, material_rule=rule) for task in bundle.tasks]
    return replace(bundle, material=replace(bundle.material, external_id=material_id), tasks=tasks)


def _from_map(bundle: Bundle, material_map: MaterialMap) -> str | None:
    """The material the map gives the bundle's tasks; raises :class:`InputError` when they disagree."""
    found: dict[str, str] = {}
    for task_id in _bundle_ids(bundle):
        for key in _map_keys(task_id):
            material = material_map.get(key)
            if material is not None:
                found.setdefault(task_id, material)
                break
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{task} → {material}" for task, material in found.items())
        raise InputError(f"{material_map.source} gives the tasks of one record different materials: {listed}")
    return next(iter(found.values()), None)


def assign_materials(
    records: Iterable[Record],
    *,
    material_map: MaterialMap | None = None,
    stored: CandidateLookup | Candidates | None = None,
) -> Iterator[Record]:
    """``records`` with a material for every bundle whose record names none (see the module doc).

    Refusals and bundles that name their material pass through at once (their tasks get the rule
    ``source`` unless they have one); bundles with material id ``""`` are held until the input
    ends, then grouped and yielded in input order. ``stored`` gives the candidates already in the
    database: a mapping, or a function called once with the formulas to group.
    """
    pending: list[Bundle] = []
    named: dict[str, list[tuple[str, Any]]] = {}  # final frames of the materials named by this input's records
    for record in records:
        if not isinstance(record, Bundle):
            yield record
            continue
        if record.material.external_id == "":
            pending.append(record)
            continue
        if any(task.material_rule is None for task in record.tasks):
            tasks = [t if t.material_rule is not None else replace(t, material_rule="source") for t in record.tasks]
            record = replace(record, tasks=tasks)
        final = _final_of(record)
        if final is not None:
            named.setdefault(record.material.formula, []).append((record.material.external_id, final))
        yield record

    to_group: list[Bundle] = []
    for bundle in pending:
        try:
            material = _from_map(bundle, material_map) if material_map is not None else None
        except InputError as exc:
            yield Refusal(bundle.location, str(exc), raw_document=_raw_json(bundle))
            continue
        if material is not None:
            yield _with_material(bundle, material, "material-map")
        else:
            to_group.append(bundle)
    if not to_group:
        return
    formulas = sorted({b.material.formula for b in to_group})
    found = stored(formulas) if callable(stored) else (stored or {})
    candidates: dict[str, list[tuple[str, Structure]]] = {}
    for formula in formulas:
        mine = [(material_id, _as_structure(final)) for material_id, final in named.get(formula, [])]
        candidates[formula] = list(found.get(formula, ())) + mine
    for bundle, result in zip(to_group, group_bundles(to_group, candidates), strict=True):
        if isinstance(result, str):
            yield Refusal(bundle.location, result, raw_document=_raw_json(bundle))
        else:
            yield _with_material(bundle, *result)


def _raw_json(bundle: Bundle) -> Any:
    """The bundle's raw JSON document (kept with a refusal), None for other formats."""
    raw = bundle.raw
    if raw is None or raw.format != "json":
        return None
    try:
        return json.loads(raw.content)
    except ValueError:
        return None
