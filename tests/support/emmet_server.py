"""The real Materials Project API server (``emmet-api``) on 127.0.0.1, backed by an in-memory MongoDB.

What runs is MP's own server code: emmet-api's ``MAPI`` with its ``materials/core``,
``materials/tasks``, ``materials/thermo`` and ``materials/summary`` resources, served by
uvicorn in a subprocess on a free port of 127.0.0.1, and queried by the real ``mp-api``
client. Only the database is replaced: each resource gets a ``CollectionWithKey`` over
:class:`AsyncCollection`, a small async wrapper around a ``mongomock`` (``mongomock-ng``) collection (as
emmet-api's own tests do), which also translates the MongoDB Atlas Search stages the
tasks resource sends (``$search`` with ``in``/``equals``/``exists``/``range``/``text``
clauses, ``$$SEARCH_META``) into an ordinary ``$match`` (:func:`atlas_search_to_match`).

The data are real and built with emmet-core, never by hand (:func:`build_server_data`):

* ``tasks``: the public task documents of ``../shared/data/real/task_docs`` as MP's tasks
  collection stores them (monty's ``@class`` wrappers of enums and datetimes unwrapped to
  their values) with the task id in AlphaID form (``mp-149`` → ``aaaaaaft``);
* ``materials``: emmet's materials-builder steps: tasks per formula, then
  :func:`emmet.core.utils.group_structures` with MP's settings, then
  :meth:`MaterialsDoc.from_tasks`;
* ``thermo``: the corrected-entries and thermo-builder steps: the materials' entries of a
  complete chemical system through ``MaterialsProject2020Compatibility``, then
  :meth:`ThermoDoc.from_entries` (``GGA_GGA+U``); a chemical system whose elements have
  no entries of their own gets no phase diagram, so no thermo document (as in MP);
* ``summary``: :meth:`SummaryDoc.from_docs` of each material's ``MaterialsSummary`` and
  ``ThermoSummary``.

Materials, thermo and summary documents carry ``builder_meta.license == "BY-C"`` and
``deprecated: false``, without which the resources' default filters hide them (the
entries' ``data.license`` is the material's, as MP's corrected-entries step gives it).

:func:`shared_server` starts one server per test process (start-up takes about 20 s:
emmet-api imports much of pymatgen) and stops it when pytest ends. ``MAPI_DB_VERSION``
sets the ``db_version`` the client reads from ``/heartbeat``.

Run alone: ``python -m support.emmet_server --data DIR --fd N`` (what :func:`start_server`
does) serves the collections ``DIR/<name>.json``.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the public records folder (absent on a fresh clone)
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
TASK_DOCS = REAL / "task_docs"

API_KEY = "0123456789abcdefghijklmnopqrstuv"  # the client insists on 32 characters; the server checks none
DB_VERSION = "2025.09.25"
COLLECTIONS = ("tasks", "materials", "thermo", "summary")
STARTUP_TIMEOUT = 180.0  # seconds


# --------------------------------------------------------------------------- the data, built with emmet-core


@dataclass
class ServerData:
    """The documents of each collection, as stored (JSON values)."""

    tasks: list[dict[str, Any]]
    materials: list[dict[str, Any]]
    thermo: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    #: legacy task id (``mp-149``) → the task document as read from its file (before unwrapping)
    source_documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def collection(self, name: str) -> list[dict[str, Any]]:
        return getattr(self, name)

    def task(self, legacy_id: str) -> dict[str, Any]:
        from emmet.core.types.typing import format_task_id

        alpha = format_task_id(legacy_id, legacy=False)
        return next(d for d in self.tasks if d["task_id"] == alpha)

    def material_of_task(self, legacy_id: str) -> dict[str, Any] | None:
        from emmet.core.types.typing import format_task_id

        for material in self.materials:
            if legacy_id in {format_task_id(t, legacy=True) for t in material["task_ids"]}:
                return material
        return None


def read_task_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Task documents of JSON(.gz) files (one document or a list each), in file order."""
    docs: list[dict[str, Any]] = []
    for path in paths:
        raw = Path(path).read_bytes()
        data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        docs.extend(data if isinstance(data, list) else [data])
    return docs


def _unwrap(value: Any) -> Any:
    """monty's wrappers of enums (``{"@class": ..., "value": v}``) and datetimes → their plain values."""
    if isinstance(value, dict):
        if "@module" in value and "@class" in value:
            if value["@class"] == "datetime" and "string" in value:
                return value["string"]
            if "value" in value and set(value) <= {"@module", "@class", "@version", "value"}:
                return value["value"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def stored_task(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A task document as MP's tasks collection holds it: plain values, task id in AlphaID form, no ``_id``."""
    from emmet.core.types.typing import format_task_id

    stored = _unwrap(copy.deepcopy(dict(doc)))
    stored.pop("_id", None)
    stored["task_id"] = format_task_id(stored["task_id"], legacy=False)
    return stored


def _json(model: Any) -> dict[str, Any]:
    from monty.json import jsanitize

    return jsanitize(model.model_dump(), strict=True, enum_values=True)


def build_materials(task_docs: list[dict[str, Any]]):
    """emmet's materials builder: per formula, MP's structure grouping, :meth:`MaterialsDoc.from_tasks`.

    Every task type is grouped (the builder's default ``VASP_ALLOWED_VASP_TYPES``).
    """
    from emmet.core.settings import EmmetSettings
    from emmet.core.tasks import ValidationTaskDoc
    from emmet.core.utils import group_structures
    from emmet.core.vasp.material import MaterialsDoc

    settings = EmmetSettings()
    by_formula: dict[str, list[Any]] = {}
    for doc in task_docs:
        task = ValidationTaskDoc(**doc)
        if task.output is None or task.output.structure is None or task.task_type is None:
            continue  # not a calculation the builder can place (no output structure or task type)
        by_formula.setdefault(task.formula_pretty, []).append(task)
    materials = []
    for formula in sorted(by_formula):
        tasks = by_formula[formula]
        structures = []
        for index, task in enumerate(tasks):
            structure = task.output.structure.copy()
            structure.index = index  # as the builder does, to find the task of each grouped structure
            structures.append(structure)
        groups = group_structures(
            structures, ltol=settings.LTOL, stol=settings.STOL, angle_tol=settings.ANGLE_TOL, symprec=settings.SYMPREC
        )
        for group in groups:
            materials.append(
                MaterialsDoc.from_tasks(
                    [tasks[s.index] for s in group],
                    structure_quality_scores=settings.VASP_STRUCTURE_QUALITY_SCORES,
                    use_statics=settings.VASP_USE_STATICS,
                )
            )
    return materials


def build_thermo(materials):
    """emmet's corrected-entries (MP2020) and thermo builders, per chemical system with all its elements."""
    from emmet.core.thermo import ThermoDoc
    from emmet.core.types.enums import ThermoType
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    by_chemsys: dict[str, list[Any]] = {}
    for material in materials:
        if material.deprecated:
            continue
        blessed = material.entries.model_dump(by_alias=True) if material.entries is not None else {}
        for run_type in ("GGA", "GGA+U"):  # what MP2020 corrects (the GGA_GGA+U thermo type)
            entry = blessed.get(run_type)
            if entry is None:
                continue
            entry = copy.deepcopy(getattr(material.entries, "GGA" if run_type == "GGA" else "GGA_U"))
            entry.data["run_type"] = run_type
            entry.data["license"] = material.builder_meta.license
            by_chemsys.setdefault(material.chemsys, []).append(entry)
    docs = []
    for chemsys in sorted(by_chemsys):
        elements = set(chemsys.split("-"))
        pool = [e for c, entries in by_chemsys.items() if set(c.split("-")) <= elements for e in entries]
        if {str(e.composition.elements[0]) for e in pool if len(e.composition.elements) == 1} != elements:
            continue  # elements without entries of their own: no phase diagram, so no thermo document
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corrected = MaterialsProject2020Compatibility().process_entries(copy.deepcopy(pool))
            diagram = ThermoDoc.construct_phase_diagram(corrected)
            for doc in ThermoDoc.from_entries(corrected, ThermoType.GGA_GGA_U, diagram, deprecated=False):
                if doc.chemsys == chemsys:
                    docs.append(doc)
    return docs


def build_summary(materials, thermo):
    """:meth:`SummaryDoc.from_docs` of each material with its GGA_GGA+U thermo document."""
    from emmet.core.summary import MaterialsSummary, SummaryDoc, ThermoSummary

    thermo_by_material = {str(t.material_id): t for t in thermo}
    docs = []
    for material in materials:
        parts = [
            MaterialsSummary.from_structure(
                meta_structure=material.structure,
                material_id=material.material_id,
                task_ids=material.task_ids,
                deprecated=material.deprecated,
                origins=material.origins,
            )
        ]
        if (t := thermo_by_material.get(str(material.material_id))) is not None:
            parts.append(ThermoSummary(**t.model_dump(include=set(ThermoSummary.model_fields))))
        docs.append(SummaryDoc.from_docs(parts, [], builder_meta=material.builder_meta))
    return docs


def build_server_data(paths: Iterable[Path] | None = None) -> ServerData:
    """The four collections from real task documents (default: every file of ``task_docs/``)."""
    from emmet.core.types.typing import format_task_id

    files = sorted(TASK_DOCS.glob("*.json*")) if paths is None else list(paths)
    sources = read_task_documents(files)
    plain = [_unwrap(copy.deepcopy(d)) for d in sources]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        materials = build_materials(plain)
        thermo = build_thermo(materials)
        summary = build_summary(materials, thermo)
    return ServerData(
        tasks=[stored_task(d) for d in sources],
        materials=[_json(m) for m in materials],
        thermo=[_json(t) for t in thermo],
        summary=[_json(s) for s in summary],
        source_documents={format_task_id(d["task_id"], legacy=True): d for d in sources},
    )


def write_server_data(data: ServerData, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in COLLECTIONS:
        (directory / f"{name}.json").write_text(json.dumps(data.collection(name)))
    return directory


# --------------------------------------------------------------------------- the in-memory database (server side)

_RANGE_OPERATORS = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


def _clause_to_match(clause: Mapping[str, Any]) -> dict[str, Any]:
    """One Atlas Search operator → a MongoDB query (ValueError for an operator this translation lacks)."""
    if len(clause) != 1:
        raise ValueError(f"an Atlas Search clause has one operator, not {sorted(clause)}")
    ((operator, spec),) = clause.items()
    if operator == "compound":
        return _compound_to_match(spec)
    paths = spec.get("path")
    paths = paths if isinstance(paths, list) else [paths]

    def on_paths(condition: Any) -> dict[str, Any]:
        return {paths[0]: condition} if len(paths) == 1 else {"$or": [{p: condition} for p in paths]}

    if operator == "in":
        value = spec["value"]
        return on_paths({"$in": value if isinstance(value, list) else [value]})
    if operator == "equals":
        return on_paths(spec["value"])
    if operator == "exists":
        return on_paths({"$exists": True})
    if operator == "range":
        return on_paths({_RANGE_OPERATORS[k]: v for k, v in spec.items() if k in _RANGE_OPERATORS})
    if operator in ("text", "phrase"):
        query = spec["query"]
        return on_paths({"$in": query if isinstance(query, list) else [query]})
    raise ValueError(f"Atlas Search operator {operator!r} is not translated")


def _compound_to_match(spec: Mapping[str, Any]) -> dict[str, Any]:
    parts = [_clause_to_match(c) for key in ("must", "filter") for c in spec.get(key, [])]
    parts += [{"$nor": [_clause_to_match(c)]} for c in spec.get("mustNot", [])]
    should = [_clause_to_match(c) for c in spec.get("should", [])]
    if should:
        parts.append({"$or": should})
    return {"$and": parts} if parts else {}


def atlas_search_to_match(search: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """The ``$search`` stage emmet-api builds → (``$match`` filter, ``$sort`` spec)."""
    operators = {k: v for k, v in search.items() if k not in ("index", "returnStoredSource", "count", "sort")}
    for paging in ("searchAfter", "searchBefore"):
        if operators.pop(paging, None) is not None:
            raise ValueError(f"Atlas Search {paging} (pagination tokens) is not translated")
    if len(operators) != 1:
        raise ValueError(f"expected one Atlas Search operator, got {sorted(operators)}")
    return _clause_to_match(operators), dict(search.get("sort") or {"_id": 1})


class _Cursor:
    def __init__(self, documents: list[dict[str, Any]]):
        self._documents = documents

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        return list(self._documents if length is None else self._documents[:length])


class AsyncCollection:
    """What emmet-api's resources await, over a mongomock collection; Atlas Search stages become ``$match``."""

    def __init__(self, collection):
        self.collection = collection
        self.name = collection.name

    async def count_documents(self, filter=None, **kwargs) -> int:  # noqa: A002 - pymongo's name
        return self.collection.count_documents(filter or {})

    async def estimated_document_count(self, **kwargs) -> int:
        return self.collection.estimated_document_count()

    async def aggregate(self, pipeline: list[dict[str, Any]], **kwargs) -> _Cursor:
        pipeline = copy.deepcopy(pipeline)
        if not pipeline or "$search" not in pipeline[0]:
            return _Cursor(list(self.collection.aggregate(pipeline)))
        match, sort = atlas_search_to_match(pipeline[0]["$search"])
        total = self.collection.count_documents(match)
        rest = []
        for stage in pipeline[1:]:
            if "$project" in stage:
                projection = {
                    k: v
                    for k, v in stage["$project"].items()
                    if v != "$$SEARCH_META" and not (isinstance(v, dict) and "$meta" in v)
                }
                stage = {"$project": projection}
            rest.append(stage)
        documents = list(self.collection.aggregate([{"$match": match}, {"$sort": sort}, *rest]))
        for document in documents:  # what Atlas attaches from $$SEARCH_META
            document["meta"] = {"count": {"total": total}}
        return _Cursor(documents)


def create_app(data_dir: Path):
    """emmet-api's MAPI with the materials core, tasks, thermo and summary resources over ``data_dir``."""
    import mongomock_ng as mongomock
    from emmet.api.core.api import MAPI
    from emmet.api.resource.utils import CollectionWithKey
    from emmet.api.routes.materials.materials.resources import materials_resource
    from emmet.api.routes.materials.summary.resources import summary_resource
    from emmet.api.routes.materials.tasks.resources import task_resource
    from emmet.api.routes.materials.thermo.resources import thermo_resource

    database = mongomock.MongoClient()["mp_core"]
    keys = {"tasks": "task_id", "materials": "material_id", "thermo": "thermo_id", "summary": "material_id"}
    stores = {}
    for name in COLLECTIONS:
        collection = database[name]
        documents = json.loads((data_dir / f"{name}.json").read_text())
        if documents:
            collection.insert_many(documents)
        stores[name] = CollectionWithKey(AsyncCollection(collection), keys[name])
    resources = {
        "materials": [
            materials_resource(stores["materials"]),
            task_resource(stores["tasks"]),
            thermo_resource(stores["thermo"]),
            summary_resource(stores["summary"]),
        ]
    }
    return MAPI(resources=resources, debug=False).app


def main(argv: list[str] | None = None) -> None:
    """Serve ``--data DIR`` on the listening socket ``--fd N`` (inherited from the parent)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(create_app(args.data), log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


# --------------------------------------------------------------------------- the process (test side)


@dataclass
class EmmetServer:
    """A running server: ``url`` ends with a slash (the client's endpoint form)."""

    url: str
    data: ServerData
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def _heartbeat(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "heartbeat", timeout=5) as response:  # noqa: S310 - 127.0.0.1
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def start_server(data: ServerData, workdir: Path, *, db_version: str = DB_VERSION) -> EmmetServer:
    """Start the server in a subprocess on a free port of 127.0.0.1; return once ``/heartbeat`` answers."""
    data_dir = write_server_data(data, workdir / "collections")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    log = workdir / "server.log"
    env = {**os.environ, "MAPI_DB_VERSION": db_version, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "support.emmet_server", "--data", str(data_dir), "--fd", str(listener.fileno())],
            pass_fds=[listener.fileno()],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    listener.close()  # the child holds its own copy
    server = EmmetServer(f"http://127.0.0.1:{port}/", data, process, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emmet-api server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        if _heartbeat(server.url) is not None:
            return server
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(
        f"emmet-api server did not answer /heartbeat in {STARTUP_TIMEOUT:.0f} s:\n{log.read_text()[-4000:]}"
    )


_SHARED: EmmetServer | None = None


def shared_server(config, workdir: Path) -> EmmetServer:
    """One server per test process, stopped when pytest ends (``config`` is pytest's)."""
    global _SHARED
    if _SHARED is None or _SHARED.process.poll() is not None:
        _SHARED = start_server(build_server_data(), workdir)
        config.add_cleanup(_stop_shared)
    return _SHARED


def _stop_shared() -> None:
    global _SHARED
    if _SHARED is not None:
        _SHARED.stop()
        _SHARED = None


if __name__ == "__main__":
    main()
