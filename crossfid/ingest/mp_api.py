"""Materials Project API source: tasks and thermo entries through the real ``mp_api`` client.

For the selected materials (ids, chemical systems and/or formulas) it reads the
material documents (``materials/core``: ``calc_types`` maps each task id to MP's
calc type label), picks the relaxation and static tasks whose label names a
requested fidelity (:func:`select_tasks`, pure), fetches those task documents
(``materials/tasks``) and converts them with
:func:`crossfid.ingest.mp_docs.task_document_to_bundle`, which classifies each task
from its INCAR (MP's label only chose what to fetch; a task whose INCAR says
otherwise is stored at the fidelity of its INCAR, with MP's label kept in
``source_run_type``). Each task's material is the materials document that lists it
(``material_rule = "mp-materials"``). Then the material's thermo documents
(``materials/thermo``, types ``GGA_GGA+U`` and/or ``R2SCAN``) become one bundle of
reference entries.

Ionic steps: the API serves MP's core task fields only (``output.structure``,
``energy``, ``forces``, ``stress``; no ``calcs_reversed``), so a task comes as its final
frame, marked ``final_frame_only``. Its ionic steps are then asked of
``tasks.get_trajectory`` (MP's trajectory table, on MP's public S3 storage): a
trajectory that ends at the task's output replaces the final frame
(:func:`attach_trajectory`, pure). When that storage cannot be reached (offline), one
notice says so and every task keeps its final frame.

Ids: the server writes AlphaIDs (material ``mp-aaaaaaft``, task ``aaaaaaft``), older
servers and documents legacy ids (``mp-149``); both are matched, and stored in legacy
form (:mod:`crossfid.ingest.mp_ids`).

Client: only arguments the installed ``mp_api`` has are passed (:data:`CLIENT_CALLS`,
checked against the client's signatures before each call). Settings:
``use_document_model=False`` (documents stay the API's JSON, which is also what is
stored as the raw document), ``mute_progress_bars=True``. The client checks
``<endpoint>/heartbeat`` when it starts (database and emmet versions), so an
``endpoint`` other than MP's must answer it (emmet-api does). The API key is only
handed to the client, which sends it as the ``x-api-key`` header; it never enters a
record, and error messages and notices are scrubbed of it.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from importlib import import_module
from itertools import islice
from typing import Any

import numpy as np

from crossfid.errors import InputError, StateError
from crossfid.ingest.fidelity import fidelity_from_label
from crossfid.ingest.mp_docs import (
    material_from_formula,
    sigma0_energy,
    task_document_to_bundle,
    thermo_documents_to_bundle,
)
from crossfid.ingest.mp_ids import legacy_mp_id, mp_id_key, mp_id_sort_key
from crossfid.ingest.records import Bundle, Frame, RecordError, Refusal, Task, stress_from_vasp_kbar

#: MP task types (end of a calc type label) that are training tasks
TRAINING_TASK_TYPES = ("Structure Optimization", "Static")

#: fields of the material documents that task selection needs
MATERIAL_FIELDS = ["material_id", "formula_pretty", "elements", "calc_types", "task_ids", "deprecated_tasks"]

#: progress(done materials, total materials, message)
ProgressCallback = Callable[[int, int, str], None]
#: notice(one line): something the user should know that is not a record (e.g. no trajectories offline)
NoticeCallback = Callable[[str], None]
#: trajectory(legacy task id, MP run type or None) → an emmet ``RelaxTrajectory`` as a dict
TrajectoryFetcher = Callable[[str, "str | None"], Mapping[str, Any]]

#: the client calls crossfid makes: (module, class, method) → the keyword arguments it passes
CLIENT_CALLS: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("mp_api.client.routes.materials.materials", "MaterialsRester", "search"): (
        "material_ids",
        "chemsys",
        "formula",
        "fields",
    ),
    ("mp_api.client.routes.materials.thermo", "ThermoRester", "search"): ("material_ids", "thermo_types"),
    ("mp_api.client.routes.materials.tasks", "TaskRester", "search"): ("task_ids", "chunk_size"),
    ("mp_api.client.routes.materials.tasks", "TaskRester", "get_trajectory"): ("task_id", "run_type"),
}

#: VASP's default NELM (maximum number of electronic steps)
DEFAULT_NELM = 60
#: a trajectory belongs to a task when its last step is the task's output within these tolerances
TRAJECTORY_ENERGY_TOLERANCE = 1e-6  # eV
TRAJECTORY_POSITION_TOLERANCE = 1e-4  # Å (lattice) and fractional (coordinates)
#: RelaxTrajectory field of each VASP energy
_TRAJECTORY_ENERGIES = {"e_0_energy": "energy", "e_fr_energy": "e_fr_energy", "e_wo_entrp": "e_wo_entrp"}


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
    skip = {mp_id_key(t, bare=True) for t in deprecated}
    selected = []
    for task_id, label in (calc_types or {}).items():
        if mp_id_key(task_id, bare=True) in skip:
            continue
        _, task_type = split_calc_type(label)
        if task_type in TRAINING_TASK_TYPES and calc_type_fidelity(label) in wanted:
            selected.append(str(task_id))
    return sorted(selected, key=lambda t: mp_id_sort_key(t, bare=True))


def thermo_types_for(fidelities: Iterable[str]) -> list[str]:
    """MP thermo types holding reference entries of ``fidelities`` (never the mixed GGA_GGA+U_R2SCAN)."""
    wanted = set(fidelities)
    types = []
    if wanted & {"GGA", "GGA+U"}:
        types.append("GGA_GGA+U")
    if wanted & {"r2SCAN", "r2SCAN+U"}:
        types.append("R2SCAN")
    return types


def _batched(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def legacy_task_ids(bundle: Bundle, served_id: Any) -> Bundle:
    """The bundle with its task ids in legacy form (``aaaaaaft`` and ``aaaaaaft/relax1`` → ``mp-149``, ...).

    The API serves task ids in AlphaID form without prefix, which only the caller knows
    to be MP task ids.
    """
    served = str(getattr(served_id, "string", served_id)).strip()
    legacy = legacy_mp_id(served, bare=True)
    if legacy == served:
        return bundle
    tasks = []
    for task in bundle.tasks:
        head, slash, tail = task.external_id.partition("/")
        if head == served:
            task = replace(task, external_id=legacy + slash + tail)
        tasks.append(task)
    return replace(bundle, tasks=tasks)


# --------------------------------------------------------------------------- trajectories (pure)


def _trajectory_energies(trajectory: Mapping[str, Any], quantity: str, n_steps: int) -> list[float] | None:
    """Each step's ``quantity`` (eV), None when the trajectory lacks it for a step.

    ``e_0_energy`` is corrected as for task documents (:func:`crossfid.ingest.mp_docs.sigma0_energy`:
    vasprun.xml's ionic e_0_energy is wrong in some VASP versions, and MP's old documents hold 0.0).
    """
    if quantity == "e_0_energy":

        def at(name: str, i: int) -> Any:
            values = trajectory.get(name)
            return values[i] if values is not None and i < len(values) else None

        values = [
            sigma0_energy(
                {
                    "e_0_energy": at("energy", i),
                    "e_fr_energy": at("e_fr_energy", i),
                    "electronic_steps": at("electronic_steps", i),
                }
            )
            for i in range(n_steps)
        ]
    else:
        values = trajectory.get(_TRAJECTORY_ENERGIES.get(quantity, quantity))
    if values is None or len(values) != n_steps or any(v is None for v in values):
        return None
    return [float(v) for v in values]


def trajectory_frames(trajectory: Mapping[str, Any], quantity: str, *, nelm: int = DEFAULT_NELM) -> list[Frame]:
    """Frames of an emmet ``RelaxTrajectory`` (as a dict), with ``quantity`` (a VASP energy name) as the energy.

    The trajectory holds Cartesian coordinates (Å), one lattice per step (or one for
    all), energies (eV: ``energy`` is e_0_energy), forces (eV/Å) and stresses (VASP
    kBar, compressive positive → GPa, tensile positive). Raises :class:`RecordError`
    when the trajectory lacks what a frame needs.
    """
    coords = trajectory.get("cart_coords") or []
    n_steps = len(coords)
    numbers = np.asarray(trajectory.get("elements") or [], dtype=np.int16)
    lattices = trajectory.get("lattice") or []
    if not n_steps or not len(numbers) or len(lattices) not in (1, n_steps):
        raise RecordError("trajectory has no steps, elements or lattices")
    energies = _trajectory_energies(trajectory, quantity, n_steps)
    if energies is None:
        raise RecordError(f"trajectory has no {quantity} for every step")
    forces = trajectory.get("forces")
    stresses = trajectory.get("stress")
    counts = trajectory.get("num_electronic_steps")
    frames = []
    for i in range(n_steps):
        lattice = np.asarray(lattices[i if len(lattices) == n_steps else 0], dtype=float)
        cart = np.asarray(coords[i], dtype=float)
        if cart.shape != (len(numbers), 3):
            raise RecordError(f"trajectory step {i} has {cart.shape} coordinates for {len(numbers)} sites")
        n_scf = None if not counts or counts[i] is None else int(counts[i])
        frames.append(
            Frame(
                ionic_step=i,
                lattice=lattice,
                atomic_numbers=numbers.copy(),
                frac_coords=np.linalg.solve(lattice.T, cart.T).T,
                energy=energies[i],
                forces=None if not forces or forces[i] is None else np.asarray(forces[i], dtype=float),
                stress=None if not stresses or stresses[i] is None else stress_from_vasp_kbar(stresses[i]),
                n_electronic_steps=n_scf,
                scf_converged=None if n_scf is None else n_scf < nelm,
            )
        )
    return frames


def _same_frame(a: Frame, b: Frame) -> bool:
    if a.energy is None or b.energy is None or abs(a.energy - b.energy) > TRAJECTORY_ENERGY_TOLERANCE:
        return False
    if not np.array_equal(a.atomic_numbers, b.atomic_numbers):
        return False
    if not np.allclose(a.lattice, b.lattice, atol=TRAJECTORY_POSITION_TOLERANCE):
        return False
    shift = a.frac_coords - b.frac_coords
    return bool(np.allclose(shift - np.round(shift), 0.0, atol=TRAJECTORY_POSITION_TOLERANCE))


def _task_nelm(task: Task) -> int:
    try:
        return int((task.input_parameters or {}).get("NELM", DEFAULT_NELM))
    except (TypeError, ValueError):
        return DEFAULT_NELM


def attach_trajectory(task: Task, trajectory: Mapping[str, Any]) -> Task | None:
    """``task`` (final frame only) with the ionic steps of ``trajectory``, or None when they are not its own.

    The trajectory is the task's when its last step is the task's final frame: same
    atoms, lattice and positions (1e-4 Å / fractional) and an energy within 1e-6 eV.
    The energy quantity is the task's own when the trajectory has it; otherwise the
    one of the trajectory's energies that equals the final frame's energy, which then
    becomes the task's ``energy_quantity``.
    """
    if not task.final_frame_only or len(task.frames) != 1:
        return None
    final = task.frames[0]
    candidates = [task.energy_quantity] if task.energy_quantity in _TRAJECTORY_ENERGIES else []
    candidates += [q for q in _TRAJECTORY_ENERGIES if q not in candidates]
    for quantity in candidates:
        try:
            frames = trajectory_frames(trajectory, quantity, nelm=_task_nelm(task))
        except RecordError:
            continue
        last = frames[-1]
        if _same_frame(last, final):
            if last.magmoms is None and final.magmoms is not None:
                frames[-1] = replace(last, magmoms=final.magmoms)
            return replace(task, frames=frames, final_frame_only=False, energy_quantity=quantity)
    return None


# --------------------------------------------------------------------------- the client


def missing_client_arguments() -> list[str]:
    """``"module.Class.method(argument)"`` for every argument of :data:`CLIENT_CALLS` the installed client lacks."""
    missing = []
    for (module, cls, method), arguments in CLIENT_CALLS.items():
        try:
            function = getattr(getattr(import_module(module), cls), method)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{cls}.{method}")
            continue
        accepted = inspect.signature(function).parameters
        missing += [f"{module}.{cls}.{method}({a})" for a in arguments if a not in accepted]
    return missing


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _check_arguments(what: str, function: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    try:
        accepted = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        from importlib.metadata import version

        raise MaterialsProjectError(
            f"Materials Project API: {what}: the installed mp-api client ({version('mp-api')}) "
            f"has no argument {', '.join(unknown)}"
        )


def _call(secret: str, what: str, function: Callable[..., Any], /, **kwargs: Any) -> Any:
    _check_arguments(what, function, kwargs)
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


def _print_notice(message: str) -> None:
    print(message, file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].strip() if text else ''}".rstrip(": ")


class _Trajectories:
    """Ionic steps of final-frame-only tasks from ``tasks.get_trajectory``, until that source proves unreachable."""

    def __init__(self, fetch: TrajectoryFetcher | None, secret: str, notice: NoticeCallback):
        self.fetch = fetch
        self.secret = secret
        self.notice = notice
        self.attached = 0
        self.kept_final = 0

    def complete(self, bundle: Bundle, run_type: Any) -> Bundle:
        if not any(t.final_frame_only for t in bundle.tasks):
            return bundle
        tasks = [self._complete(t, run_type) if t.final_frame_only else t for t in bundle.tasks]
        return replace(bundle, tasks=tasks)

    def _complete(self, task: Task, run_type: Any) -> Task:
        trajectory = self._fetch(task.external_id, run_type)
        completed = None if trajectory is None else attach_trajectory(task, trajectory)
        if completed is None:
            self.kept_final += 1
            return task
        self.attached += 1
        return completed

    def _fetch(self, task_id: str, run_type: Any) -> Mapping[str, Any] | None:
        if self.fetch is None:
            return None
        label = None if run_type in (None, "") else str(getattr(run_type, "value", run_type))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.fetch(task_id, label)
        except Exception as exc:  # noqa: BLE001 - any failure of the trajectory source
            if "no trajectory data" in str(exc).lower():
                return None  # this task has none: keep its final frame
            self.fetch = None  # unreachable (offline, S3 refused): do not ask again in this run
            self.notice(
                _scrub(
                    "no ionic steps from tasks.get_trajectory (it reads MP's public S3 storage, which could not "
                    f"be reached: {_first_line(exc)}); tasks are stored with their final frame, marked "
                    "final_frame_only",
                    self.secret,
                )
            )
            return None


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
    notice: NoticeCallback | None = None,
    trajectories: bool | TrajectoryFetcher = True,
    task_batch_size: int = 10,
    material_batch_size: int = 50,
) -> Iterator[Bundle | Refusal]:
    """Bundles (one per task, one per material with its thermo reference entries) and refusals.

    At least one of ``material_ids``, ``chemsys``, ``formula`` is required (without a
    filter the client would download whole collections). Raises ``ValueError`` at
    once for a missing or malformed API key (MP keys have 32 characters), no filter
    or an unknown fidelity; while iterating,
    :class:`MaterialsProjectError` when the API cannot be reached, fails a request or
    the installed client lacks an argument crossfid passes.
    ``progress(done, total, message)`` is called after each material;
    ``notice(line)`` (default: a line on stderr) for what concerns the whole run, such
    as trajectories being unreachable.

    ``fidelities`` choose which tasks are fetched, by MP's calc type label; each fetched
    task is then stored at the fidelity its INCAR gives (a mislabelled task is not
    dropped, and a PBEsol preconditioning step inside an r2SCAN task comes as its own
    PBEsol task, see :mod:`crossfid.ingest.mp_docs`). A task served without its ionic
    steps gets them from ``tasks.get_trajectory`` when ``trajectories`` is true (or
    from the given fetcher), else keeps its final frame (``final_frame_only``).
    Reference entries: the ``GGA_GGA+U`` thermo documents for GGA/GGA+U, ``R2SCAN``
    for r2SCAN, with all their entries (curation needs to know whether the primary
    GGA-family entry uses +U).
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
        notice=notice or _print_notice,
        trajectories=trajectories,
        task_batch_size=task_batch_size,
        material_batch_size=material_batch_size,
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
    notice: NoticeCallback,
    trajectories: bool | TrajectoryFetcher,
    task_batch_size: int,
    material_batch_size: int,
) -> Iterator[Bundle | Refusal]:
    thermo_types = thermo_types_for(fidelities)
    with _open_client(api_key, endpoint) as mpr:
        if callable(trajectories):
            fetch: TrajectoryFetcher | None = trajectories
        elif trajectories:

            def fetch(task_id: str, run_type: str | None) -> Mapping[str, Any]:
                get = mpr.materials.tasks.get_trajectory
                _check_arguments("trajectory", get, {"task_id": task_id, "run_type": run_type})
                return get(task_id=task_id, run_type=run_type)

        else:
            fetch = None
        steps = _Trajectories(fetch, api_key, notice)
        materials = _call(
            api_key,
            "material search",
            mpr.materials.search,
            material_ids=[material_ids] if isinstance(material_ids, str) else material_ids,
            chemsys=chemsys,
            formula=formula,
            fields=MATERIAL_FIELDS,
        )
        materials = sorted((dict(m) for m in materials), key=lambda m: mp_id_sort_key(m["material_id"]))
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
                material_id = legacy_mp_id(material_doc["material_id"])
                selected = select_tasks(
                    material_doc.get("calc_types"), fidelities, deprecated=material_doc.get("deprecated_tasks") or ()
                )
                counts = {"tasks": 0, "refused": 0, "references": 0}
                before = (steps.attached, steps.kept_final)
                for batch in _batched(selected, task_batch_size):
                    docs = _call(
                        api_key,
                        f"task search for {material_id}",
                        mpr.materials.tasks.search,
                        task_ids=batch,
                        chunk_size=len(batch),
                    )
                    by_id = {mp_id_key(d.get("task_id"), bare=True): d for d in docs}
                    for task_id in batch:
                        key = mp_id_key(task_id, bare=True)
                        location = f"mp-api:{key}"
                        doc = by_id.get(key)
                        if doc is None:
                            record: Bundle | Refusal = Refusal(
                                location,
                                f"task {key} of {material_id} (calc type {material_doc['calc_types'][task_id]!r}) "
                                "was not returned by materials/tasks",
                            )
                        else:
                            record = _task_record(doc, location, material_id, steps)
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
                    attached, kept = steps.attached - before[0], steps.kept_final - before[1]
                    progress(
                        done,
                        total,
                        f"{material_id}: {len(selected)} of {len(material_doc.get('calc_types') or {})} tasks "
                        f"selected, {counts['tasks']} read ({attached} with their trajectory, {kept} final frame "
                        f"only), {counts['refused']} refused, {counts['references']} reference entries",
                    )


def _task_record(doc: Mapping[str, Any], location: str, material_id: str, steps: _Trajectories) -> Bundle | Refusal:
    """One served task document → its bundle (legacy ids, MP's material, trajectory when there is one)."""
    record = task_document_to_bundle(doc, location, material_id=material_id, material_rule="mp-materials")
    if isinstance(record, Refusal):
        return record
    return steps.complete(legacy_task_ids(record, doc.get("task_id")), doc.get("run_type"))
