"""An imitation of the Materials Project API, kept only for what the real server cannot do.

The real server is emmet-api itself (tests/support/emmet_server.py, used by
tests/ingest/test_mp_api_real.py); prefer it. This stdlib imitation remains for:

* error answers: a wrong or missing ``x-api-key`` gets 403 (MP's gateway checks keys,
  emmet-api does not), ``fail={path: status}`` answers e.g. 500 on a collection, and
  after ``max_requests`` requests every answer is a 503;
* whole task documents: the real ``materials/tasks`` resource projects onto
  ``CoreTaskDoc`` (no ``calcs_reversed``), so full documents (as earlier API versions
  served them, and as saved files hold them) with known ionic steps, a mislabelled
  NSCF task in ``calc_types`` and an r2SCAN task with its PBEsol preconditioning step
  come from here;
* GGA+U and r2SCAN thermo documents with known values (the public task documents are
  GGA only).

:class:`MPTestServer` is a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port), run in a
background thread, that answers what ``MPRester`` asks for:

* ``GET /heartbeat`` → ``{"db_version", "version", "access_controlled_batch_ids"}``
  (read by ``MPRester.get_emmet_version`` and ``_Rester._get_heartbeat_info`` without
  the API key, like the real one);
* ``GET /materials/core/``, ``/materials/tasks/``, ``/materials/thermo/`` with the
  query parameters the client sends (``material_ids``, ``task_ids`` in legacy and
  AlphaID form, ``chemsys``, ``formula``, ``deprecated``, ``thermo_types``;
  comma-separated lists), projection (``_fields``, ``_all_fields``, else a default
  field set) and pagination (``_limit``/``_skip``, ``_page``/``_per_page``), answering
  ``{"data": [...], "meta": {"total_doc": N, ...}}`` as ``_submit_requests`` expects;
  an unknown parameter gets 400, an unknown path 404.

Requests are bounded: ``_limit`` above ``max_limit`` is a 400. Every request is
recorded (path, parameters, the API key header) for assertions.

:func:`build_documents` makes the served documents from real emmet-core and pymatgen
objects (``TaskDoc`` with ``Calculation``/``IonicStep``, ``MaterialsDoc``,
``ThermoDoc`` with ``ComputedStructureEntry``), dumped with
``model_dump(mode="json")`` as the API does, and keeps the exact values they were
built from so tests can check round trips.
"""

from __future__ import annotations

import json
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymatgen.core import Composition, Lattice, Structure

DB_VERSION = "2025.09.25"
API_KEY = "abcdefghijklmnopqrstuvwxyz012345"  # 32 characters, as the client demands

# --------------------------------------------------------------------------- documents

FE2O3_LATTICE = [[5.03, 0.02, 0.0], [-2.5, 4.36, 0.01], [0.03, 0.0, 13.74]]
FE2O3_SPECIES = ["Fe", "Fe", "O", "O", "O"]
FE2O3_FRAC = [[0.0, 0.0, 0.1447], [0.0, 0.0, 0.6447], [0.3059, 0.0, 0.25], [0.0, 0.3059, 0.25], [0.6941, 0.6941, 0.25]]
SI_LATTICE = [[0.0, 2.7335, 2.7335], [2.7335, 0.0, 2.7335], [2.7335, 2.7335, 0.0]]

MP_RELAX_U_INCAR = {
    "ALGO": "Fast",
    "EDIFF": 0.0005,
    "ENCUT": 520,
    "IBRION": 2,
    "ISIF": 3,
    "ISMEAR": -5,
    "ISPIN": 2,
    "LASPH": True,
    "LDAU": True,
    "LDAUJ": [0, 0],
    "LDAUL": [2, 0],
    "LDAUTYPE": 2,
    "LDAUU": [5.3, 0],
    "LMAXMIX": 4,
    "LORBIT": 11,
    "LREAL": "Auto",
    "LWAVE": False,
    "MAGMOM": [5, 5, 0.6, 0.6, 0.6],
    "NELM": 100,
    "NSW": 99,
    "PREC": "Accurate",
    "SIGMA": 0.05,
}
MP_NSCF_LINE_INCAR = {
    **{k: v for k, v in MP_RELAX_U_INCAR.items() if k not in ("IBRION", "ISIF", "NSW")},
    "ICHARG": 11,
    "ISMEAR": 0,
    "LCHARG": False,
    "NSW": 0,
}
MP_PBESOL_PRECONDITION_INCAR = {
    "ALGO": "Normal",
    "EDIFF": 1e-05,
    "ENCUT": 680,
    "GGA": "Ps",
    "IBRION": 2,
    "ISIF": 3,
    "ISPIN": 2,
    "LASPH": True,
    "NELM": 200,
    "NSW": 99,
    "ISMEAR": 0,
    "KSPACING": 0.22,
}
MP_R2SCAN_INCAR = {
    "ALGO": "All",
    "EDIFF": 1e-05,
    "ENAUG": 1360,
    "ENCUT": 680,
    "IBRION": 2,
    "ISIF": 3,
    "ISMEAR": 0,
    "ISPIN": 2,
    "KSPACING": 0.22,
    "LASPH": True,
    "LMIXTAU": True,
    "METAGGA": "R2scan",
    "NELM": 200,
    "NSW": 99,
}
MP_STATIC_SI_INCAR = {"ALGO": "Fast", "EDIFF": 0.0001, "ENCUT": 520, "ISMEAR": -5, "ISPIN": 1, "LASPH": True, "NSW": 0}


@dataclass
class StepTruth:
    """What an ionic step was built from (VASP units: stress kBar)."""

    lattice: list[list[float]]
    species: list[str]
    frac: list[list[float]]
    energy: float
    e0: float
    forces: list[list[float]]
    stress_kbar: list[list[float]]
    magmoms: list[float] | None
    n_scf: int


@dataclass
class TaskTruth:
    task_id: str  # legacy form, e.g. "mp-1001"
    material_id: str
    calc_type_label: str  # what the material document says
    run_type_label: str | None  # the task document's own (possibly wrong) run_type
    calcs: list[tuple[str, dict[str, Any], list[StepTruth]]]  # chronological (task_name, INCAR, steps)
    nelm: int
    completed_at: datetime


@dataclass
class Documents:
    materials: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    thermo: list[dict[str, Any]]
    task_models: dict[str, Any]  # legacy task id → TaskDoc
    truth: dict[str, TaskTruth]
    thermo_truth: dict[tuple[str, str], dict[str, Any]]  # (material id, entry key) → values


def _steps(
    lattice, species, frac, *, n: int, energy0: float, stress_diag: float, magmoms, n_scf: list[int], shift: float = 0
) -> list[StepTruth]:
    steps = []
    for i in range(n):
        moved = [[c + (0.001 * i + shift if j == 2 else 0.0) for j, c in enumerate(site)] for site in frac]
        forces = [[0.01 * (k + 1) * (n - i), -0.02 * k, 0.005 * (i - k)] for k in range(len(species))]
        steps.append(
            StepTruth(
                lattice=[[x * (1 - 0.002 * i) for x in row] for row in lattice],
                species=list(species),
                frac=moved,
                energy=energy0 - 0.0371 * i,
                e0=energy0 - 0.0371 * i + 0.0013,
                forces=forces,
                stress_kbar=[[stress_diag - i, 0.5, -0.25], [0.5, stress_diag - i, 0.125], [-0.25, 0.125, stress_diag]],
                magmoms=None if magmoms is None else [m * (1 + 0.01 * i) for m in magmoms],
                n_scf=n_scf[i],
            )
        )
    return steps


def _structure(step: StepTruth) -> Structure:
    props = {} if step.magmoms is None else {"magmom": step.magmoms}
    return Structure(Lattice(step.lattice), step.species, step.frac, site_properties=props)


def _calculation(task_name: str, incar: dict[str, Any], steps: list[StepTruth], *, potcar, hubbards, completed):
    from emmet.core.vasp.calculation import Calculation, CalculationInput, CalculationOutput, IonicStep

    structures = [_structure(s) for s in steps]
    ionic_steps = [
        IonicStep(
            e_fr_energy=s.energy,
            e_wo_entrp=s.e0,
            e_0_energy=s.e0,
            forces=s.forces,
            stress=s.stress_kbar,
            # converging towards the ionic step's energies, which the last electronic step has (as in VASP)
            electronic_steps=[
                {
                    "e_fr_energy": s.energy + 1.0 / (k + 1) - 1.0 / s.n_scf,
                    "e_0_energy": s.e0 + 1.0 / (k + 1) - 1.0 / s.n_scf,
                }
                for k in range(s.n_scf)
            ],
            structure=st,
        )
        for s, st in zip(steps, structures, strict=True)
    ]
    parameters = {**incar, "NELM": incar.get("NELM", 60), "GGA": incar.get("GGA", "--")}
    calc_input = CalculationInput(
        incar=incar,
        parameters=parameters,
        structure=structures[0],
        potcar=potcar,
        potcar_type=["PAW_PBE"],
        is_hubbard=bool(hubbards),
        hubbards=hubbards,
    )
    output = CalculationOutput(
        ionic_steps=ionic_steps,
        structure=structures[-1],
        energy=steps[-1].energy,
        energy_per_atom=steps[-1].energy / len(steps[-1].species),
        num_electronic_steps=[s.n_scf for s in steps],
    )
    return Calculation(
        vasp_version="6.3.2",
        has_vasp_completed="successful",
        input=calc_input,
        output=output,
        completed_at=str(completed),
        task_name=task_name,
    )


def _task_model(truth: TaskTruth, potcar: list[str], hubbards):
    from emmet.core.tasks import OutputDoc, TaskDoc

    calcs = [
        _calculation(
            name,
            incar,
            steps,
            potcar=potcar,
            hubbards=hubbards if incar.get("LDAU") else None,
            completed=truth.completed_at,
        )
        for name, incar, steps in truth.calcs
    ]
    calcs_reversed = calcs[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TaskDoc.from_structure(
            meta_structure=calcs_reversed[0].output.structure,
            structure=calcs_reversed[0].output.structure,
            task_id=truth.task_id,
            calcs_reversed=calcs_reversed,
            input=calcs[0].input,
            orig_inputs=calcs[0].input,
            output=OutputDoc.from_vasp_calc_doc(calcs_reversed[0]),
            completed_at=truth.completed_at,
            vasp_version="6.3.2",
            task_label="structure optimization",
        )


def _served(model, truth: TaskTruth) -> dict[str, Any]:
    """The API's JSON of a task: emmet's dump, with MP's stored labels (not recomputed ones)."""
    doc = model.model_dump(mode="json")
    run_type, task_type = _split(truth.calc_type_label)
    doc["run_type"] = truth.run_type_label if truth.run_type_label is not None else run_type
    doc["task_type"] = task_type
    doc["calc_type"] = f"{doc['run_type']} {task_type}"
    return doc


def _split(label: str) -> tuple[str, str]:
    for task_type in ("Structure Optimization", "Static", "NSCF Line", "NSCF Uniform"):
        if label.endswith(" " + task_type):
            return label[: -len(task_type) - 1], task_type
    raise ValueError(label)


def _entry(structure: Structure, energy: float, correction: float, run_type: str, hubbards, task_id, material_id):
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    return ComputedStructureEntry(
        structure,
        energy,
        correction=correction,
        parameters={"run_type": run_type, "is_hubbard": bool(hubbards), "hubbards": hubbards or {}},
        data={"task_id": task_id, "material_id": material_id, "run_type": run_type, "aspherical": True},
        entry_id=f"{material_id}-{run_type}",
    )


def _thermo(material_id: str, thermo_type: str, entries: dict[str, Any], formation: float, ehull: float):
    from emmet.core.thermo import ThermoDoc

    blessed_key = next(iter(entries))
    blessed = entries[blessed_key]
    n = blessed.composition.num_atoms
    doc = ThermoDoc.from_structure(
        meta_structure=blessed.structure,
        material_id=material_id,
        thermo_type=thermo_type,
        uncorrected_energy_per_atom=blessed.uncorrected_energy / n,
        energy_per_atom=blessed.energy / n,
        formation_energy_per_atom=formation,
        energy_above_hull=ehull,
        is_stable=ehull == 0,
        energy_type=blessed_key,
        entry_types=list(entries),
        entries=entries,
    )
    return doc.model_dump(mode="json")


def _material(material_id: str, structure: Structure, calc_types: dict[str, str], deprecated_tasks=()):
    from emmet.core.vasp.material import MaterialsDoc

    doc = MaterialsDoc.from_structure(
        meta_structure=structure,
        material_id=material_id,
        task_ids=list(calc_types),
        calc_types=calc_types,
        deprecated=False,
        deprecated_tasks=list(deprecated_tasks),
        initial_structures=[structure],
    )
    return doc.model_dump(mode="json")


def build_documents() -> Documents:
    """Fe2O3 (mp-19770) and Si (mp-149) with GGA+U, r2SCAN, GGA and NSCF tasks and thermo documents."""
    when = datetime(2023, 5, 17, 8, 30, 12, 250000, tzinfo=UTC)
    fe_moms = [4.2, -4.2, 0.03, 0.02, -0.01]
    truths = [
        # GGA+U double relaxation; the document's own run_type label is wrong ("GGA")
        TaskTruth(
            "mp-1001",
            "mp-19770",
            "GGA+U Structure Optimization",
            "GGA",
            [
                (
                    "relax1",
                    MP_RELAX_U_INCAR,
                    _steps(
                        FE2O3_LATTICE,
                        FE2O3_SPECIES,
                        FE2O3_FRAC,
                        n=2,
                        energy0=-38.5,
                        stress_diag=10.0,
                        magmoms=fe_moms,
                        n_scf=[23, 100],
                    ),
                ),
                (
                    "relax2",
                    MP_RELAX_U_INCAR,
                    _steps(
                        FE2O3_LATTICE,
                        FE2O3_SPECIES,
                        FE2O3_FRAC,
                        n=1,
                        energy0=-38.61,
                        stress_diag=10.0,
                        magmoms=fe_moms,
                        n_scf=[9],
                        shift=0.0005,
                    ),
                ),
            ],
            100,
            when,
        ),
        # r2SCAN relaxation preceded by a PBEsol preconditioning calculation (MP r2SCAN workflow)
        TaskTruth(
            "mp-1002",
            "mp-19770",
            "r2SCAN Structure Optimization",
            None,
            [
                (
                    "precondition",
                    MP_PBESOL_PRECONDITION_INCAR,
                    _steps(
                        FE2O3_LATTICE,
                        FE2O3_SPECIES,
                        FE2O3_FRAC,
                        n=1,
                        energy0=-36.0,
                        stress_diag=-3.0,
                        magmoms=fe_moms,
                        n_scf=[31],
                    ),
                ),
                (
                    "relax1",
                    MP_R2SCAN_INCAR,
                    _steps(
                        FE2O3_LATTICE,
                        FE2O3_SPECIES,
                        FE2O3_FRAC,
                        n=2,
                        energy0=-90.25,
                        stress_diag=2.5,
                        magmoms=fe_moms,
                        n_scf=[40, 18],
                    ),
                ),
            ],
            200,
            when,
        ),
        # band-structure (NSCF line) task that MP's calc_types map mislabels as a static: fetched, then refused
        TaskTruth(
            "mp-1003",
            "mp-19770",
            "GGA+U Static",
            "GGA+U",
            [
                (
                    "nscf",
                    MP_NSCF_LINE_INCAR,
                    _steps(
                        FE2O3_LATTICE,
                        FE2O3_SPECIES,
                        FE2O3_FRAC,
                        n=1,
                        energy0=-38.0,
                        stress_diag=0.0,
                        magmoms=fe_moms,
                        n_scf=[12],
                    ),
                )
            ],
            100,
            when,
        ),
        # correctly labelled band-structure task: never fetched
        TaskTruth(
            "mp-1004",
            "mp-19770",
            "GGA+U NSCF Line",
            "GGA+U",
            [
                (
                    "nscf",
                    MP_NSCF_LINE_INCAR,
                    _steps(
                        FE2O3_LATTICE,
                        FE2O3_SPECIES,
                        FE2O3_FRAC,
                        n=1,
                        energy0=-38.0,
                        stress_diag=0.0,
                        magmoms=fe_moms,
                        n_scf=[12],
                    ),
                )
            ],
            100,
            when,
        ),
        # GGA static of Si whose SCF hit the default NELM (60): unconverged
        TaskTruth(
            "mp-1005",
            "mp-149",
            "GGA Static",
            "GGA",
            [
                (
                    "standard",
                    MP_STATIC_SI_INCAR,
                    _steps(
                        SI_LATTICE,
                        ["Si", "Si"],
                        [[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]],
                        n=1,
                        energy0=-10.84,
                        stress_diag=-1.5,
                        magmoms=None,
                        n_scf=[60],
                    ),
                )
            ],
            60,
            when,
        ),
    ]
    potcars = {"mp-19770": (["Fe_pv", "O"], {"Fe": 5.3, "O": 0.0}), "mp-149": (["Si"], None)}
    models = {t.task_id: _task_model(t, *potcars[t.material_id]) for t in truths}
    tasks = [_served(models[t.task_id], t) for t in truths]

    fe_final = models["mp-1001"].calcs_reversed[0].output.structure
    fe_r2 = models["mp-1002"].calcs_reversed[0].output.structure
    si_final = models["mp-1005"].calcs_reversed[0].output.structure
    materials = [
        _material("mp-19770", fe_final, {t.task_id: t.calc_type_label for t in truths if t.material_id == "mp-19770"}),
        _material("mp-149", si_final, {"mp-1005": "GGA Static", "mp-1006": "GGA Static"}, deprecated_tasks=["mp-1006"]),
    ]
    gga_u = _entry(fe_final, -38.61, -5.478, "GGA+U", {"Fe": 5.3, "O": 0.0}, "mp-1001", "mp-19770")
    r2 = _entry(fe_r2, -90.2871, 0.0, "r2SCAN", None, "mp-1002", "mp-19770")
    si = _entry(si_final, -10.84, 0.0, "GGA", None, "mp-1005", "mp-149")
    thermo = [
        _thermo("mp-19770", "GGA_GGA+U", {"GGA+U": gga_u}, -1.7042, 0.0),
        _thermo("mp-19770", "R2SCAN", {"r2SCAN": r2}, -2.01, 0.0),
        _thermo("mp-19770", "GGA_GGA+U_R2SCAN", {"r2SCAN": r2}, -1.69, 0.0),
        _thermo("mp-149", "GGA_GGA+U", {"GGA": si}, 0.0, 0.0),
    ]
    thermo_truth = {
        ("mp-19770", "GGA+U"): {
            "energy": -38.61,
            "correction": -5.478,
            "n": 5,
            "task": "mp-1001",
            "fidelity": "GGA+U",
            "formation": -1.7042,
            "ehull": 0.0,
            "scheme": "GGA_GGA+U",
        },
        ("mp-19770", "r2SCAN"): {
            "energy": -90.2871,
            "correction": 0.0,
            "n": 5,
            "task": "mp-1002",
            "fidelity": "r2SCAN",
            "formation": -2.01,
            "ehull": 0.0,
            "scheme": "R2SCAN",
        },
        ("mp-149", "GGA"): {
            "energy": -10.84,
            "correction": 0.0,
            "n": 2,
            "task": "mp-1005",
            "fidelity": "GGA",
            "formation": 0.0,
            "ehull": 0.0,
            "scheme": "GGA_GGA+U",
        },
    }
    return Documents(materials, tasks, thermo, models, {t.task_id: t for t in truths}, thermo_truth)


# --------------------------------------------------------------------------- server


def _id_key(value: Any) -> str:
    from emmet.core.mpid import AlphaID

    text = str(value).strip()
    try:
        return str(AlphaID(text).formatted) if "-" in text else str(int(AlphaID(text)))
    except Exception:
        return text


def _number_key(value: Any) -> str:
    from emmet.core.mpid import AlphaID

    try:
        return str(int(AlphaID(str(value).strip())))
    except Exception:
        return str(value)


COLLECTIONS: dict[str, dict[str, Any]] = {
    "materials/core": {
        "params": {"material_ids", "task_ids", "chemsys", "formula", "deprecated", "elements", "exclude_elements"},
        "default_fields": ["material_id", "last_updated", "formula_pretty"],
    },
    "materials/tasks": {
        "params": {"task_ids", "formula", "elements", "exclude_elements"},
        "default_fields": ["task_id", "last_updated", "formula_pretty"],
    },
    "materials/thermo": {
        "params": {"material_ids", "thermo_types", "chemsys", "formula", "thermo_ids", "is_stable"},
        "default_fields": ["material_id", "thermo_type", "last_updated"],
    },
}


def _matches(doc: dict[str, Any], name: str, value: str, collection: str) -> bool:
    values = [v.strip() for v in value.split(",") if v.strip()]
    if name == "material_ids":
        return _number_key(doc.get("material_id")) in {_number_key(v) for v in values}
    if name == "task_ids":
        keys = {_number_key(v) for v in values}
        if collection == "materials/tasks":
            return _number_key(doc.get("task_id")) in keys
        return any(_number_key(t) in keys for t in doc.get("task_ids") or [])
    if name == "chemsys":
        return doc.get("chemsys") in {"-".join(sorted(v.split("-"))) for v in values}
    if name == "formula":
        reduced = Composition(doc["formula_pretty"]).reduced_formula
        return reduced in {Composition(v).reduced_formula for v in values}
    if name == "deprecated":
        return bool(doc.get("deprecated", False)) == (value.lower() == "true")
    if name == "thermo_types":
        return str(doc.get("thermo_type")).lower() in {v.lower() for v in values}
    if name == "elements":
        return set(values) <= set(doc.get("elements") or [])
    if name == "exclude_elements":
        return not set(values) & set(doc.get("elements") or [])
    if name == "is_stable":
        return bool(doc.get("is_stable")) == (value.lower() == "true")
    if name == "thermo_ids":
        return f"{_id_key(doc.get('material_id'))}_{doc.get('thermo_type')}" in values
    raise KeyError(name)


@dataclass
class RecordedRequest:
    path: str
    params: dict[str, str]
    api_key: str | None


@dataclass
class MPTestServer:
    """The local API (see the module doc). Use as a context manager, or :func:`serve`."""

    documents: dict[str, list[dict[str, Any]]]  # collection path → documents
    api_key: str = API_KEY
    db_version: str = DB_VERSION
    max_limit: int = 1000
    max_requests: int = 500
    #: collection path → HTTP status answered instead of data (e.g. {"materials/thermo": 500})
    fail: dict[str, int] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def requested(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> MPTestServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds per connection

            def log_message(self, format, *args):  # noqa: A002 - quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                status, body = server._answer(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mp-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> MPTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- request handling

    def _answer(self, request: BaseHTTPRequestHandler) -> tuple[int, Any]:
        parts = urlsplit(request.path)
        path = parts.path.strip("/")
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.requests.append(RecordedRequest(path, params, request.headers.get("x-api-key")))
        if len(self.requests) > self.max_requests:
            return 503, {"detail": "test server request budget exhausted"}
        if path == "heartbeat":
            from importlib.metadata import version

            return 200, {
                "db_version": self.db_version,
                "version": version("emmet-core"),
                "access_controlled_batch_ids": [],
            }
        if path not in COLLECTIONS:
            return 404, {"detail": "Not Found"}
        if request.headers.get("x-api-key") != self.api_key:
            return 403, {"detail": "Invalid API key"}
        if path in self.fail:
            return self.fail[path], {"detail": f"test server answers {self.fail[path]} on {path}"}
        return self._query(path, params)

    def _query(self, collection: str, params: dict[str, str]) -> tuple[int, Any]:
        spec = COLLECTIONS[collection]
        filters = {k: v for k, v in params.items() if not k.startswith("_")}
        unknown = set(filters) - spec["params"]
        if unknown:
            return 400, {"detail": [{"loc": ["query", sorted(unknown)[0]], "msg": "unknown query parameter"}]}
        docs = [
            d
            for d in self.documents.get(collection, [])
            if all(_matches(d, k, v, collection) for k, v in filters.items())
        ]
        try:
            limit = int(params.get("_limit") or params.get("_per_page") or 100)
            skip = int(params.get("_skip") or 0)
            if params.get("_page"):
                skip = (int(params["_page"]) - 1) * limit
        except ValueError:
            return 400, {"detail": "bad pagination"}
        if limit < 1 or limit > self.max_limit or skip < 0:
            return 400, {"detail": [{"loc": ["query", "_limit"], "msg": f"must be in 1..{self.max_limit}"}]}
        page = docs[skip : skip + limit]
        if params.get("_all_fields", "").lower() not in ("true", "1"):
            fields = (
                [f.split(".", 1)[0] for f in params["_fields"].split(",")]
                if params.get("_fields")
                else spec["default_fields"]
            )
            page = [{k: v for k, v in d.items() if k in fields} for d in page]
        meta = {
            "api_version": "test",
            "time_stamp": datetime.now(UTC).isoformat(),
            "total_doc": len(docs),
            "max_limit": self.max_limit,
            "facet": {},
        }
        return 200, {"data": page, "meta": meta}


@contextmanager
def serve(documents: Documents | None = None, **kwargs: Any):
    """Start a local MP API serving ``documents`` (default :func:`build_documents`) and stop it afterwards."""
    documents = documents or build_documents()
    collections = {
        "materials/core": documents.materials,
        "materials/tasks": documents.tasks,
        "materials/thermo": documents.thermo,
    }
    with MPTestServer(collections, **kwargs) as server:
        yield server
