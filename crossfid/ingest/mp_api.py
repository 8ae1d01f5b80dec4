"""Materials Project API source: tasks and thermo entries through the real ``mp_api`` client.

For the selected materials (ids, chemical systems and/or formulas) it reads the
material documents (``materials/core``: ``calc_types`` maps each task id to MP's
calc type label), picks the relaxation and static tasks whose label names a
requested fidelity (:func:`select_tasks`, pure), fetches those task documents
(``materials/tasks``, whole documents: ``calcs_reversed`` is not in the client's
``CoreTaskDoc`` field list, so it cannot be asked for by name) and converts them with
:func:`crossfid.ingest.mp_docs.task_document_to_bundle`, which classifies each task
from its INCAR (MP's label only chose what to fetch; a task whose INCAR says
otherwise is stored at the fidelity of its INCAR, with MP's label kept in
``source_run_type``). Then the material's thermo documents (``materials/thermo``,
types ``GGA_GGA+U`` and/or ``R2SCAN``) become one bundle of reference entries.

Client settings: ``use_document_model=False`` (documents stay the API's JSON, which
is also what is stored as the raw document), ``mute_progress_bars=True``. The client
checks ``<endpoint>/heartbeat`` when it starts (database and emmet versions), so an
``endpoint`` other than MP's must answer it (the test server does). The API key is
only handed to the client, which sends it as the ``x-api-key`` header; it never
enters a record, and error messages are scrubbed of it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

from crossfid.errors import InputError, StateError
from crossfid.ingest.fidelity import fidelity_from_label
from crossfid.ingest.mp_docs import (
    material_from_formula,
    mp_id_key,
    task_document_to_bundle,
    thermo_documents_to_bundle,
)
from crossfid.ingest.records import Bundle, RecordError, Refusal

#: MP task types (end of a calc type label) that are training tasks
TRAINING_TASK_TYPES = ("Structure Optimization", "Static")

#: fields of the material documents that task selection needs
MATERIAL_FIELDS = ["material_id", "formula_pretty", "elements", "calc_types", "task_ids", "deprecated_tasks"]

#: progress(done materials, total materials, message)
ProgressCallback = Callable[[int, int, str], None]


class MaterialsProjectError(StateError):
    """The Materials Project API could not be reached or refused a request (message free of the API key)."""


# --------------------------------------------------------------------------- pure helpers


def _task_type_labels() -> list[str]:
    from emmet.core.vasp.calc_types import TaskType

    return sorted((t.value for t in TaskType), key=len, reverse=True)


def split_calc_type(label: str) -> tuple[str, str]:
    """``"GGA+U Structure Optimization"`` → ``("GGA+U", "Structure Optimization")`` (task type "" if unknown)."""
    text = str(getattr(label, "value", label)).strip()
    for task_type in _task_type_labels():
        if text == task_type:
            return "", task_type
        if text.endswith(" " + task_type):
            return text[: -len(task_type)].strip(), task_type
    return text, ""


def calc_type_fidelity(label: str) -> str | None:
    """The crossfid fidelity named by an MP calc type label (None when it names none)."""
    run_type, _ = split_calc_type(label)
    try:
        return fidelity_from_label(run_type) if run_type else None
    except RecordError:
        return None


def normalize_fidelities(fidelities: Iterable[str]) -> tuple[str, ...]:
    """Vocabulary names of user-given fidelities (``PBE`` ≡ ``GGA``, case-insensitive); ValueError if unknown."""
    names = tuple(dict.fromkeys(fidelity_from_label(str(f)) for f in fidelities))
    if not names:
        raise InputError("no fidelity requested")
    return names


def select_tasks(
    calc_types: Mapping[str, str] | None, fidelities: Iterable[str], *, deprecated: Iterable[str] = ()
) -> list[str]:
    """Task ids whose MP calc type is a relaxation or static run at one of ``fidelities``.

    Deprecated tasks are left out. The order is stable (sorted by id).
    """
    wanted = set(fidelities)
    skip = {mp_id_key(t) for t in deprecated}
    selected = []
    for task_id, label in (calc_types or {}).items():
        if mp_id_key(task_id) in skip:
            continue
        _, task_type = split_calc_type(label)
        if task_type in TRAINING_TASK_TYPES and calc_type_fidelity(label) in wanted:
            selected.append(str(task_id))
    return sorted(selected, key=_id_sort_key)


def thermo_types_for(fidelities: Iterable[str]) -> list[str]:
    """MP thermo types holding reference entries of ``fidelities`` (never the mixed GGA_GGA+U_R2SCAN)."""
    wanted = set(fidelities)
    types = []
    if wanted & {"GGA", "GGA+U"}:
        types.append("GGA_GGA+U")
    if wanted & {"r2SCAN", "r2SCAN+U"}:
        types.append("R2SCAN")
    return types


def _id_sort_key(value: Any) -> tuple[str, int, str]:
    key = mp_id_key(value)
    prefix, _, number = key.rpartition("-")
    return (prefix, int(number), key) if number.isdigit() else (prefix, -1, key)


def _batched(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


# --------------------------------------------------------------------------- the source


def read_materials_project(
    *,
    material_ids: Sequence[str] | str | None = None,
    chemsys: Sequence[str] | str | None = None,
    formula: Sequence[str] | str | None = None,
    fidelities: Iterable[str] = ("GGA", "GGA+U", "r2SCAN"),
    api_key: str,
    endpoint: str | None = None,
    progress: ProgressCallback | None = None,
    task_batch_size: int = 10,
    material_batch_size: int = 50,
) -> Iterator[Bundle | Refusal]:
    """Bundles (one per task, one per material with its thermo reference entries) and refusals.

    At least one of ``material_ids``, ``chemsys``, ``formula`` is required (without a
    filter the client would download whole collections). Raises ``ValueError`` at
    once for a missing or malformed API key (MP keys have 32 characters), no filter
    or an unknown fidelity; while iterating,
    :class:`MaterialsProjectError` when the API cannot be reached or fails a request.
    ``progress(done, total, message)`` is called after each material.

    ``fidelities`` choose which tasks are fetched, by MP's calc type label; each fetched
    task is then stored at the fidelity its INCAR gives (a mislabelled task is not
    dropped, and a PBEsol preconditioning step inside an r2SCAN task comes as its own
    PBEsol task, see :mod:`crossfid.ingest.mp_docs`). Reference entries: the
    ``GGA_GGA+U`` thermo documents for GGA/GGA+U, ``R2SCAN`` for r2SCAN, with all
    their entries (curation needs to know whether the primary GGA-family entry uses +U).
    """
    if not isinstance(api_key, str) or not api_key.strip():
        raise InputError("a Materials Project API key is required (get one at https://materialsproject.org/api)")
    if len(api_key.strip()) != 32:
        raise InputError(
            f"a Materials Project API key has 32 characters, the one given has {len(api_key.strip())} "
            "(get yours at https://materialsproject.org/api)"
        )
    if not (material_ids or chemsys or formula):
        raise InputError("select materials with material_ids, chemsys or formula")
    if task_batch_size < 1 or material_batch_size < 1:
        raise InputError("batch sizes must be positive")
    wanted = normalize_fidelities(fidelities)
    return _read(
        material_ids=material_ids,
        chemsys=chemsys,
        formula=formula,
        fidelities=wanted,
        api_key=api_key.strip(),
        endpoint=endpoint,
        progress=progress,
        task_batch_size=task_batch_size,
        material_batch_size=material_batch_size,
    )


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _call(secret: str, what: str, function: Callable[..., Any], /, **kwargs: Any) -> Any:
    try:
        return function(**kwargs)
    except Exception as exc:  # client, HTTP and decoding errors alike
        raise MaterialsProjectError(_scrub(f"Materials Project API: {what} failed: {exc}", secret)) from None


def _open_client(api_key: str, endpoint: str | None) -> Any:
    from mp_api.client import MPRester

    if endpoint is not None and not endpoint.endswith("/"):
        endpoint += "/"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # version notices of the client are not ours to show
        return _call(
            api_key,
            f"connecting to {endpoint or 'the default endpoint'}",
            MPRester,
            api_key=api_key,
            endpoint=endpoint,
            use_document_model=False,
            mute_progress_bars=True,
            include_user_agent=True,
        )


def _read(
    *,
    material_ids: Sequence[str] | str | None,
    chemsys: Sequence[str] | str | None,
    formula: Sequence[str] | str | None,
    fidelities: tuple[str, ...],
    api_key: str,
    endpoint: str | None,
    progress: ProgressCallback | None,
    task_batch_size: int,
    material_batch_size: int,
) -> Iterator[Bundle | Refusal]:
    thermo_types = thermo_types_for(fidelities)
    with _open_client(api_key, endpoint) as mpr:
        materials = _call(
            api_key,
            "material search",
            mpr.materials.search,
            material_ids=[material_ids] if isinstance(material_ids, str) else material_ids,
            chemsys=chemsys,
            formula=formula,
            fields=MATERIAL_FIELDS,
        )
        materials = sorted((dict(m) for m in materials), key=lambda m: _id_sort_key(m["material_id"]))
        total = len(materials)
        done = 0
        for chunk in _batched(materials, material_batch_size):
            thermo_by_material: dict[str, list[Mapping[str, Any]]] = {}
            if thermo_types:
                thermo_docs = _call(
                    api_key,
                    "thermo search",
                    mpr.materials.thermo.search,
                    material_ids=[str(m["material_id"]) for m in chunk],
                    thermo_types=thermo_types,
                )
                for doc in thermo_docs:
                    thermo_by_material.setdefault(mp_id_key(doc.get("material_id")), []).append(doc)
            for material_doc in chunk:
                material_id = mp_id_key(material_doc["material_id"])
                selected = select_tasks(
                    material_doc.get("calc_types"), fidelities, deprecated=material_doc.get("deprecated_tasks") or ()
                )
                counts = {"tasks": 0, "refused": 0, "references": 0}
                for batch in _batched(selected, task_batch_size):
                    docs = _call(
                        api_key,
                        f"task search for {material_id}",
                        mpr.materials.tasks.search,
                        task_ids=batch,
                        chunk_size=len(batch),
                    )
                    by_id = {mp_id_key(d.get("task_id")): d for d in docs}
                    for task_id in batch:
                        key = mp_id_key(task_id)
                        location = f"mp-api:{key}"
                        doc = by_id.get(key)
                        if doc is None:
                            record: Bundle | Refusal = Refusal(
                                location,
                                f"task {key} of {material_id} (calc type {material_doc['calc_types'][task_id]!r}) "
                                "was not returned by materials/tasks",
                            )
                        else:
                            record = task_document_to_bundle(doc, location, material_id=material_id)
                        counts["tasks" if isinstance(record, Bundle) else "refused"] += 1
                        yield record
                thermo = thermo_by_material.get(material_id, [])
                if thermo:
                    material = (
                        material_from_formula(material_id, material_doc["formula_pretty"])
                        if material_doc.get("formula_pretty")
                        else None
                    )
                    record = thermo_documents_to_bundle(
                        thermo, f"mp-api:{material_id}#thermo", material_id=material_id, material=material
                    )
                    if record is not None:
                        counts["references" if isinstance(record, Bundle) else "refused"] += (
                            len(record.references) if isinstance(record, Bundle) else 1
                        )
                        yield record
                done += 1
                if progress is not None:
                    progress(
                        done,
                        total,
                        f"{material_id}: {len(selected)} of {len(material_doc.get('calc_types') or {})} tasks "
                        f"selected, {counts['tasks']} read, {counts['refused']} refused, "
                        f"{counts['references']} reference entries",
                    )
