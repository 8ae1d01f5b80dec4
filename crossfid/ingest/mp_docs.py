"""Materials Project task and thermo documents → canonical records (pure conversion).

Task documents are emmet-core ``TaskDoc`` dictionaries, as served by the API's
``materials/tasks`` endpoint (JSON), as MP's ``tasks`` collection stores them, and as
written by ``monty.serialization.dumpfn`` (with ``@module``/``@class`` keys and
monty-encoded datetimes). What is read:

* frames: ``calcs_reversed`` holds the calculations newest first, so it is walked
  backwards (``calcs_reversed[-1]`` is the first calculation); each calculation's
  ``output.ionic_steps`` gives one frame per ionic step: ``structure``, the energy,
  ``forces`` (eV/Å), ``stress`` (VASP kBar, compressive positive → GPa, tensile positive),
  ``electronic_steps`` (their number; the SCF counts as converged when it is below NELM,
  VASP default 60). Magnetic moments come from the step structure's ``magmom`` site
  property, or, for the last step of a calculation, from ``output.structure`` /
  ``output.outcar``. ``ionic_step`` runs over the whole task (a double relaxation gives
  0 … n-1).
* energy: VASP's σ → 0 energy ``e_0_energy`` of every step, with pymatgen's correction of
  the vasprun.xml bug (:func:`sigma0_energy`), the quantity of ``Vasprun.final_energy`` and so
  of MP's ``output.energy`` and thermo entries; ``Task.energy_quantity`` says so
  (``e_fr_energy`` only for a document whose steps lack it). See docs/ingestion.md, "One energy".
* documents without ionic steps (MP's core task fields: ``output.structure``, ``output.energy``,
  ``output.forces``, ``output.stress``, as the API's tasks endpoint serves them) become one
  task with one frame, marked ``Task.final_frame_only`` (no trajectory).
* fidelity: from each calculation's INCAR (``input.incar``, else the document's
  ``input.incar`` / ``orig_inputs.incar``, else ``input.parameters``) and U values
  (``input.hubbards``) through :func:`crossfid.ingest.fidelity.classify_incar`; the
  document's ``run_type`` / ``calc_type`` / ``task_type`` labels are used only when it has no
  INCAR at all, and are kept in ``Task.source_run_type``. NSCF (band-structure), MD and
  unsupported runs are refused with the classifier's reason. When the calculations of one
  document differ in functional (e.g. a PBEsol pre-relaxation before the r2SCAN relaxations
  of an MP r2SCAN task), each run of consecutive calculations with one classification
  becomes its own task: the one holding the final calculation keeps the task id (and is
  first in the bundle), earlier ones get ``"<task_id>/<task_name>"``. Their frames are never
  mixed into the final fidelity. A calculation that cannot be classified (NSCF, MD,
  unknown functional) refuses the whole document, with the calculation's name in the reason.
* ids: MP ids are written in their legacy form (``mp-1234``), also when the document has
  emmet's AlphaID form (``mp-aaaaabvm``, or a bare ``aaaaabvm`` task id); ids are compared
  through :func:`mp_id_key`. The material is the one the caller passes (it wins), else the
  document's ``material_id``; a document with neither (MP's tasks collection stores none)
  gets the material id ``""`` and :func:`crossfid.ingest.grouping.assign_materials` places it.
* Q-Chem and other molecular documents are refused (:func:`molecular_document_reason`).

Thermo documents (emmet ``ThermoDoc``) become :class:`ReferenceEntry` objects, one
per entry of ``entries``; the formation energy and energy above hull of the document
belong to its ``energy_type`` entry only. Documents of the mixed thermo type
``GGA_GGA+U_R2SCAN`` are not read: their entries are the same calculations as the
``GGA_GGA+U`` and ``R2SCAN`` documents, only with the mixing-scheme corrections.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.ingest import mp_ids
from crossfid.ingest.fidelity import Classification, classify_incar, fidelity_from_label
from crossfid.ingest.mp_ids import legacy_mp_id
from crossfid.ingest.records import (
    Bundle,
    Frame,
    Material,
    RawDocument,
    RecordError,
    ReferenceEntry,
    Refusal,
    Task,
    as_mapping,
    stress_from_vasp_kbar,
)
from crossfid.ingest.sourceio import Limits, first_byte_or_refusal, iter_json_stream, iter_json_values, loads

#: VASP's default NELM (maximum number of electronic steps)
DEFAULT_NELM = 60

#: the thermo type that is not read (its entries are those of GGA_GGA+U and R2SCAN)
MIXED_THERMO_TYPE = "GGA_GGA+U_R2SCAN"

_SNIPPET_CHARS = 4096


# --------------------------------------------------------------------------- small helpers


def format_mp_id(value: Any, *, bare: bool = False) -> str:
    """An MP id in the form crossfid stores (``mp-aaaaabvm`` → ``mp-1234``); other ids unchanged.

    :func:`crossfid.ingest.mp_ids.legacy_mp_id`, the one place MP ids are converted;
    ``bare=True``: the value is known to be an MP id even without prefix (``aaaaabvm``, ``1234``).
    """
    return legacy_mp_id(value, bare=bare)


def mp_id_key(value: Any, *, bare: bool = False) -> str:
    """Comparison key of an id (:func:`crossfid.ingest.mp_ids.mp_id_key`): every form of one MP id is equal."""
    return mp_ids.mp_id_key(value, bare=bare)


def document_task_id(value: Any) -> str:
    """A task document's ``task_id`` as stored: MP's tasks collection writes AlphaID task ids without
    prefix (``aaaaaaft`` → ``mp-149``); a bare number is left as it is (MP never wrote task ids so)."""
    text = str(getattr(value, "string", value)).strip()
    return format_mp_id(value, bare=not text.isdigit())


def _json_like(value: Any) -> Any:
    """Plain Python data from pydantic models, pymatgen objects or JSON strings (emmet's arrow form).

    Embedded JSON text is held to the same nesting and size limits as a file
    (:func:`crossfid.ingest.sourceio.loads`); text that fails them stays text.
    """
    if value is None or isinstance(value, str | int | float | bool):
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                return loads(value.encode("utf-8", "surrogatepass"))
            except RecordError:
                return value
        return value
    if isinstance(value, bytes):
        return loads(value)
    if isinstance(value, Mapping | list | tuple | np.ndarray):
        return value
    try:
        return as_mapping(value)
    except TypeError:
        return value


def _mapping(value: Any) -> Mapping[str, Any]:
    value = _json_like(value)
    return value if isinstance(value, Mapping) else {}


def _hubbard_map(value: Any) -> dict[str, float] | None:
    """emmet stores U values as a dict, or (arrow form) as a list of (element, U) pairs."""
    value = _json_like(value)
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = dict(value)
    if not isinstance(value, Mapping):
        return None
    return {str(k): float(v) for k, v in value.items()}


def _array(value: Any) -> np.ndarray | None:
    """A float array from a list, a numpy array or monty's encoded ndarray."""
    if value is None:
        return None
    if isinstance(value, Mapping) and "data" in value:  # {"@module": "numpy", "@class": "array", ...}
        value = np.asarray(value["data"], dtype=value.get("dtype") or float)
    return np.asarray(value, dtype=float)


def _parse_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, Mapping):  # monty {"@class": "datetime", "string": ...} or Mongo {"$date": ...}
        value = value.get("string") or value.get("$date")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)  # MP writes UTC times


def _json_safe(value: Any) -> Any:
    """JSON-serialisable copy (numpy, pymatgen objects and the like as plain data)."""
    from crossfid.ingest.records import _json_default

    return json.loads(json.dumps(value, default=_json_default))


def _incar_dict(value: Any) -> dict[str, Any]:
    incar = _mapping(value)
    return {str(k): v for k, v in incar.items() if not str(k).startswith("@")}


# --------------------------------------------------------------------------- structures


def _structure_arrays(structure: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(lattice, atomic numbers, fractional coordinates, magmoms or None) of a pymatgen structure dict."""
    from pymatgen.core import Element

    data = _mapping(structure)
    if not data or "lattice" not in data or "sites" not in data:
        raise RecordError("no structure")
    lattice = np.asarray(_mapping(data["lattice"]).get("matrix"), dtype=float)
    numbers: list[int] = []
    frac: list[Any] = []
    magmoms: list[float] = []
    for index, site in enumerate(data["sites"]):
        species = site.get("species") or []
        if len(species) != 1 or float(species[0].get("occu", 1.0)) != 1.0:
            raise RecordError(f"site {index} is disordered (partial occupancy): not a DFT structure")
        symbol = species[0].get("element")
        try:
            numbers.append(Element(symbol).Z)
        except (ValueError, KeyError) as exc:
            raise RecordError(f"site {index} has unknown element {symbol!r}") from exc
        if site.get("abc") is not None:
            frac.append(site["abc"])
        else:
            frac.append(np.linalg.solve(lattice.T, np.asarray(site["xyz"], dtype=float)))
        magmom = (site.get("properties") or {}).get("magmom")
        if isinstance(magmom, int | float) and not isinstance(magmom, bool):
            magmoms.append(float(magmom))
    moments = np.asarray(magmoms, dtype=float) if len(magmoms) == len(numbers) else None
    return lattice, np.asarray(numbers, dtype=np.int16), np.asarray(frac, dtype=float), moments


def _final_magmoms(output: Mapping[str, Any], lattice: np.ndarray, frac: np.ndarray) -> np.ndarray | None:
    """Moments of a calculation's final structure (``output.structure`` or OUTCAR), when it is this frame's."""
    n = len(frac)
    structure = output.get("structure")
    if structure is not None:
        try:
            out_lattice, _, out_frac, moments = _structure_arrays(structure)
        except RecordError:
            moments = None
        else:
            same = out_frac.shape == frac.shape and np.allclose(out_lattice, lattice, atol=1e-6)
            same = same and np.allclose(out_frac, frac, atol=1e-6)
            if not same:
                return None
        if moments is not None:
            return moments
    magnetization = (_mapping(output.get("outcar"))).get("magnetization")
    if isinstance(magnetization, list) and len(magnetization) == n:
        try:
            return np.asarray([float(m["tot"]) for m in magnetization], dtype=float)
        except (KeyError, TypeError, ValueError):
            return None
    return None


# --------------------------------------------------------------------------- task documents


def _is_molecule(structure: Any) -> bool:
    data = _mapping(structure)
    return bool(data) and (data.get("@class") == "Molecule" or ("sites" in data and "lattice" not in data))


def molecular_document_reason(doc: Mapping[str, Any]) -> str | None:
    """Why ``doc`` is not a VASP task document of a crystal (a Q-Chem or other molecular calculation), or None.

    Q-Chem task documents (emmet's molecules ``TaskDocument``) hold a ``molecule`` (no lattice)
    and Q-Chem inputs with a ``rem`` section in ``orig`` / ``input`` / ``calcs_reversed[].input``.
    """
    inputs = [_mapping(doc.get(key)) for key in ("orig", "input", "orig_inputs")]
    calcs = doc.get("calcs_reversed")
    if isinstance(calcs, list):
        inputs += [_mapping(_mapping(calc).get("input")) for calc in calcs]
    output = _mapping(doc.get("output"))
    qchem = any("rem" in i for i in inputs)
    molecule = "molecule" in doc or any(k in i for i in inputs for k in ("molecule", "initial_molecule"))
    molecule = molecule or any(k in output for k in ("optimized_molecule", "initial_molecule"))
    molecule = molecule or _is_molecule(doc.get("structure")) or _is_molecule(output.get("structure"))
    if qchem:
        return (
            "not a VASP task document: Q-Chem molecular calculation (a molecule without a lattice; "
            "its input has a Q-Chem $rem section): nothing stored"
        )
    if molecule:
        return "not a VASP task document: molecular calculation (a molecule without a lattice): nothing stored"
    return None


def _input_species(calc_input: Mapping[str, Any]) -> list[str] | None:
    """POSCAR species order of one input block (``potcar`` symbols, else the input structure)."""
    potcar = calc_input.get("potcar")
    symbols = _mapping(potcar).get("symbols") if isinstance(_json_like(potcar), Mapping) else potcar
    if isinstance(symbols, list) and symbols and all(isinstance(p, str) for p in symbols):
        return [p.split("_", 1)[0] for p in symbols]
    structure = calc_input.get("structure") or _mapping(calc_input.get("poscar")).get("structure")
    return _structure_species(structure)


def _structure_species(structure: Any) -> list[str] | None:
    order: list[str] = []
    for site in _mapping(structure).get("sites") or []:
        species = site.get("species") or [{}]
        symbol = species[0].get("element")
        if symbol and (not order or order[-1] != symbol):
            order.append(symbol)
    return order or None


def _species_order(*inputs: Mapping[str, Any], structure: Any = None) -> list[str] | None:
    """POSCAR species order (to read LDAUU when the U values are not given as a dict): the first
    input block that tells, else the order of the calculation's own structure (VASP keeps it)."""
    for calc_input in inputs:
        order = _input_species(calc_input)
        if order:
            return order
    return _structure_species(structure)


def _potcar_functional(*inputs: Mapping[str, Any]) -> str | None:
    """``PAW_PBE`` → ``PBE``; ``PAW`` (LDA POTCARs) → ``LDA``; ``orig_inputs.potcar.functional`` as it is."""
    for calc_input in inputs:
        types = calc_input.get("potcar_type")
        if isinstance(types, list) and types:
            parts = str(types[0]).split("_", 1)
            return parts[1] if len(parts) == 2 else "LDA"
        specs = calc_input.get("potcar_spec")
        if isinstance(specs, list) and specs:
            titel = str(_mapping(specs[0]).get("titel") or "")
            head = titel.split()[0] if titel.split() else ""
            if head:
                parts = head.split("_", 1)
                return parts[1] if len(parts) == 2 else "LDA"
        functional = _mapping(calc_input.get("potcar")).get("functional")
        if isinstance(functional, str) and functional:
            return functional
    return None


def _calc_incar(calc_input: Mapping[str, Any]) -> dict[str, Any]:
    """The INCAR as written (``input.incar``); ``input.parameters`` (vasprun's full set) only without one."""
    incar = _incar_dict(calc_input.get("incar"))
    return incar or _incar_dict(calc_input.get("parameters"))


def _nelm(calc_input: Mapping[str, Any]) -> int:
    for source in (calc_input.get("parameters"), calc_input.get("incar")):
        value = _mapping(source).get("NELM")
        if value is not None:
            try:
                return int(value)
            except (TypeError, ValueError):
                continue
    return DEFAULT_NELM


def _classify_calc(
    calc_input: Mapping[str, Any], doc_input: Mapping[str, Any], orig_inputs: Mapping[str, Any], structure: Any = None
) -> Classification:
    """Classification of one calculation from its INCAR; the document's ``input`` / ``orig_inputs`` fill gaps."""
    incar = _calc_incar(calc_input) or _incar_dict(doc_input.get("incar")) or _incar_dict(orig_inputs.get("incar"))
    incar = incar or _incar_dict(doc_input.get("parameters"))
    if not incar:
        raise RecordError("calculation has no INCAR (input.incar / input.parameters): fidelity unknown")
    hubbards = _hubbard_map(calc_input.get("hubbards"))
    if hubbards is None:
        hubbards = _hubbard_map(doc_input.get("hubbards"))
    species = _species_order(calc_input, doc_input, orig_inputs, structure=structure)
    functional = _potcar_functional(calc_input, doc_input, orig_inputs)
    return classify_incar(incar, species=species, hubbards=hubbards, potcar_functional=functional)


#: emmet ``TaskType`` label → crossfid task type (documents without an INCAR); other task types are refused
_TASK_TYPE_LABELS = {"structure optimization": "relax", "deformation": "relax", "static": "static"}


def _label(value: Any) -> str | None:
    value = _json_like(value)
    if isinstance(value, Mapping):  # monty's enum {"@class": "TaskType", "value": ...}
        value = value.get("value")
    value = getattr(value, "value", value)
    return None if value in (None, "") else str(value)


def _classify_from_labels(doc: Mapping[str, Any]) -> Classification:
    """Fidelity and task type of a document without any INCAR, from its ``run_type`` / ``calc_type`` / ``task_type``."""
    from emmet.core.vasp.calc_types import TaskType

    run_type = _label(doc.get("run_type"))
    calc_type = _label(doc.get("calc_type"))
    task_label = _label(doc.get("task_type"))
    if calc_type and task_label is None:  # emmet's calc type is "<run type> <task type>"
        known = sorted((t.value for t in TaskType), key=len, reverse=True)
        task_label = next((t for t in known if calc_type.endswith(" " + t)), None)
    if calc_type and task_label and run_type is None and calc_type.endswith(" " + task_label):
        run_type = calc_type[: -len(task_label) - 1]
    if run_type is None or task_label is None:
        raise RecordError("no INCAR and no run_type / task_type labels: fidelity and task type unknown")
    task_type = _TASK_TYPE_LABELS.get(task_label.lower())
    if task_type is None:
        if task_label.upper().startswith("NSCF"):
            raise RecordError(f"non-self-consistent run (task type {task_label!r}): no valid total energy or stress")
        raise RecordError(f"task type {task_label!r} is not a relax or static task")
    from crossfid.vocabulary import fidelity_spec

    hubbards = _hubbard_map(_mapping(doc.get("input")).get("hubbards"))
    hubbards = {k: v for k, v in (hubbards or {}).items() if v != 0} or None
    label = run_type + ("+U" if hubbards and "+U" not in run_type else "")
    fidelity = fidelity_from_label(label)
    spec = fidelity_spec(fidelity)
    if spec is None:  # fidelity_from_label gives vocabulary names
        raise RecordError(f"run type {run_type!r} is not a fidelity crossfid can name")
    exact = "PBE" + fidelity[3:] if fidelity.startswith("GGA") else fidelity
    return Classification(fidelity=fidelity, run_type=exact, hubbards=hubbards, task_type=task_type, spec=spec)


def _electronic_step_count(step: Mapping[str, Any], output: Mapping[str, Any], index: int) -> int | None:
    steps = step.get("electronic_steps")
    if isinstance(steps, list):
        return len(steps)
    if step.get("num_electronic_steps") is not None:
        return int(step["num_electronic_steps"])
    counts = output.get("num_electronic_steps")
    if isinstance(counts, list) and index < len(counts) and counts[index] is not None:
        return int(counts[index])
    return None


def sigma0_energy(step: Mapping[str, Any]) -> float | None:
    """VASP's σ → 0 energy ``e_0_energy`` (eV) of one ionic step, None when the step cannot tell.

    The same number pymatgen's ``Vasprun.final_energy`` gives for the last step
    (pymatgen/io/vasp/outputs.py): vasprun.xml's ionic ``e_0_energy`` is wrong in some VASP
    versions (https://www.vasp.at/forum/viewtopic.php?f=3&t=16942; MP's documents hold 0.0
    there), so when the last electronic step has both energies, ``e_fr_energy + (e_0 − e_fr)``
    of that electronic step, rounded to 1e-8 eV, is taken whenever it differs by more than 1e-7 eV.
    """
    e_0 = step.get("e_0_energy")
    e_fr = step.get("e_fr_energy")
    electronic = step.get("electronic_steps")
    if e_fr is not None and isinstance(electronic, list) and electronic:
        last = _mapping(electronic[-1])
        if last.get("e_0_energy") is not None and last.get("e_fr_energy") is not None:
            fixed = float(np.round(float(last["e_0_energy"]) - float(last["e_fr_energy"]) + float(e_fr), 8))
            if e_0 is None or abs(float(e_0) - fixed) > 1e-7:
                return fixed
    return None if e_0 is None else float(e_0)


def _step_energies(steps: Sequence[Mapping[str, Any]]) -> tuple[list[float | None], str]:
    """Energies of a task's ionic steps and which VASP quantity they are (one quantity per task).

    ``e_0_energy`` (:func:`sigma0_energy`) when every step has it; else ``e_fr_energy`` when every
    step has that; else each step's ``e_0_energy`` where it has one (the others have no energy).
    """
    sigma0 = [sigma0_energy(step) for step in steps]
    if all(e is not None for e in sigma0):
        return sigma0, "e_0_energy"
    free = [step.get("e_fr_energy") for step in steps]
    if all(e is not None for e in free):
        return [float(e) for e in free], "e_fr_energy"
    return sigma0, "e_0_energy"


def _calc_frames(calc: Mapping[str, Any], first_index: int, energies: Sequence[float | None]) -> list[Frame]:
    calc_input = _mapping(calc.get("input"))
    output = _mapping(calc.get("output"))
    nelm = _nelm(calc_input)
    steps = output.get("ionic_steps") or []
    frames: list[Frame] = []
    for i, raw_step in enumerate(steps):
        step = _mapping(raw_step)
        where = f"ionic step {first_index + i}"
        try:
            lattice, numbers, frac, magmoms = _structure_arrays(step.get("structure"))
        except RecordError as exc:
            raise RecordError(f"{where}: {exc}") from exc
        if magmoms is None:
            magmoms = _array(step.get("magmoms", step.get("magmom")))
        if magmoms is None and i == len(steps) - 1:
            magmoms = _final_magmoms(output, lattice, frac)
        n_scf = _electronic_step_count(step, output, i)
        stress = step.get("stress")
        frames.append(
            Frame(
                ionic_step=first_index + i,
                lattice=lattice,
                atomic_numbers=numbers,
                frac_coords=frac,
                energy=energies[i],
                forces=_array(step.get("forces")),
                stress=None if stress is None else stress_from_vasp_kbar(_array(stress)),
                magmoms=magmoms,
                n_electronic_steps=n_scf,
                scf_converged=None if n_scf is None else n_scf < nelm,
            )
        )
    return frames


def _refuse(location: str, reason: str, doc: Any) -> Refusal:
    try:
        raw = _json_safe(doc)
    except (TypeError, ValueError):
        raw = None
    return Refusal(location=location, reason=reason, raw_document=raw)


def task_document_to_bundle(
    doc: Mapping, location: str, *, material_id: str | None = None, material_rule: str = "source"
) -> Bundle | Refusal:
    """One MP task document → a bundle (material, its task(s) and frames, raw document) or a refusal.

    The material is ``material_id`` when given (its tasks get ``material_rule``, e.g.
    ``"mp-materials"`` when it comes from an MP materials document), else the document's own
    ``material_id`` (rule ``"source"``), else ``""``: :func:`crossfid.ingest.grouping.assign_materials`
    gives it one.
    """
    data = doc if isinstance(doc, Mapping) else _mapping(doc)
    if not data:
        return Refusal(location, "not a task document (expected a JSON object)")
    try:
        return _task_bundle(data, location, material_id, material_rule)
    except RecordError as exc:
        return _refuse(location, str(exc), doc)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:  # malformed document
        return _refuse(location, f"malformed task document: {type(exc).__name__}: {exc}", doc)


def _has_trajectory(calcs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any calculation has ionic steps with structures (else only ``output`` can be read)."""
    for calc in calcs:
        for step in _mapping(calc.get("output")).get("ionic_steps") or []:
            if _mapping(step).get("structure") is not None:
                return True
    return False


def _task_bundle(doc: Mapping[str, Any], location: str, material_id: str | None, material_rule: str) -> Bundle:
    reason = molecular_document_reason(doc)
    if reason is not None:
        raise RecordError(reason)
    if doc.get("task_id") in (None, ""):
        raise RecordError("task document has no task_id")
    task_id = document_task_id(doc["task_id"])
    rule: str | None
    if material_id:
        mid, rule = format_mp_id(material_id), material_rule
    elif doc.get("material_id"):
        mid, rule = format_mp_id(doc["material_id"]), "source"
    else:
        mid, rule = "", None  # crossfid.ingest.grouping assigns one

    calcs = [_mapping(c) for c in (doc.get("calcs_reversed") or [])][::-1]  # chronological
    if _has_trajectory(calcs):
        tasks = _trajectory_tasks(doc, task_id, calcs)
    else:
        tasks = [_final_frame_task(doc, task_id, calcs)]
    for task in tasks:
        task.material_rule = rule
    first_frames = next((t.frames for t in tasks if t.frames), None)
    if not first_frames:
        raise RecordError(f"task {task_id} has no ionic steps: no frames to read")
    material = Material.from_atomic_numbers(mid, first_frames[0].atomic_numbers)
    return Bundle(material=material, location=location, tasks=tasks, raw=RawDocument.from_json(doc, location))


def _completed_at(doc: Mapping[str, Any], calc: Mapping[str, Any] | None) -> datetime | None:
    completed = _parse_datetime(doc.get("completed_at")) or _parse_datetime(doc.get("last_updated"))
    return completed or (None if calc is None else _parse_datetime(calc.get("completed_at")))


def _trajectory_tasks(doc: Mapping[str, Any], task_id: str, calcs: list[Mapping[str, Any]]) -> list[Task]:
    """Tasks with every ionic step of the document's calculations (see the module doc)."""
    doc_input = _mapping(doc.get("input"))
    orig_inputs = _mapping(doc.get("orig_inputs"))

    # classify every calculation; group consecutive calculations with one classification
    groups: list[tuple[Classification, list[tuple[int, Mapping[str, Any]]]]] = []
    for index, calc in enumerate(calcs):
        steps = _mapping(calc.get("output")).get("ionic_steps") or []
        structure = _mapping(steps[0]).get("structure") if steps else None
        try:
            classification = _classify_calc(_mapping(calc.get("input")), doc_input, orig_inputs, structure)
        except RecordError as exc:
            if len(calcs) == 1:
                raise
            name = calc.get("task_name") or f"calculation {index + 1} of {len(calcs)}"
            raise RecordError(f"{name}: {exc}") from exc
        if groups and groups[-1][0] == classification:
            groups[-1][1].append((index, calc))
        else:
            groups.append((classification, [(index, calc)]))

    tasks: list[Task] = []
    for g, (classification, members) in enumerate(groups):
        final = g == len(groups) - 1
        steps = [_mapping(s) for _, calc in members for s in _mapping(calc.get("output")).get("ionic_steps") or []]
        energies, quantity = _step_energies(steps)
        frames: list[Frame] = []
        for _, calc in members:
            frames.extend(_calc_frames(calc, len(frames), energies[len(frames) :]))
        _, last_calc = members[-1]
        last_input = _mapping(last_calc.get("input"))
        if final:
            external_id = task_id
            label = _label(doc.get("run_type")) or _label(last_calc.get("run_type"))
            completed = _completed_at(doc, last_calc)
        else:
            first_index, first_calc = members[0]
            external_id = f"{task_id}/{first_calc.get('task_name') or f'calc{first_index + 1}'}"
            label = _label(last_calc.get("run_type"))
            completed = _parse_datetime(last_calc.get("completed_at"))
        incar = _calc_incar(last_input) or _calc_incar(doc_input)
        tasks.append(
            Task(
                external_id=external_id,
                fidelity=classification.fidelity,
                run_type=classification.run_type,
                task_type=classification.task_type,  # type: ignore[arg-type]
                frames=frames,
                input_parameters=_json_safe(incar),
                hubbards=classification.hubbards,
                source_run_type=label,
                code_version=last_calc.get("vasp_version") or doc.get("vasp_version"),
                completed_at=completed,
                energy_quantity=quantity,
            )
        )
    tasks.sort(key=lambda t: t.external_id != task_id)  # the task itself first
    return tasks


def _final_frame_task(doc: Mapping[str, Any], task_id: str, calcs: list[Mapping[str, Any]]) -> Task:
    """The one frame of a document without ionic steps (MP's core task fields): its ``output``.

    emmet builds ``output`` from the last calculation (emmet/core/tasks.py, ``OutputDoc.from_vasp_calc_doc``):
    ``structure`` is the final structure, ``energy`` is ``Vasprun.final_energy`` (emmet/core/vasp/
    calculation.py, ``CalculationOutput.from_vasp_outputs``), i.e. the last ionic step's ``e_0_energy``
    (see :func:`sigma0_energy`), ``forces`` and ``stress`` (kBar) are the last ionic step's. A document
    whose ``output`` has no energy takes it (and forces, stress) from its last calculation's last ionic
    step when that has one. The task is marked ``final_frame_only``: it has no trajectory.
    """
    output = _mapping(doc.get("output"))
    if output.get("structure") is None:
        raise RecordError(
            f"task {task_id} has neither ionic steps (calcs_reversed[].output.ionic_steps with structures) "
            "nor an output structure: no frames to read"
        )
    last_calc = calcs[-1] if calcs else None
    calc_steps = _mapping(last_calc.get("output")).get("ionic_steps") if last_calc else None
    last_step = _mapping(calc_steps[-1]) if calc_steps else {}
    doc_input = _mapping(doc.get("input"))
    orig_inputs = _mapping(doc.get("orig_inputs"))
    calc_input = _mapping(last_calc.get("input")) if last_calc else {}
    if _calc_incar(calc_input) or _calc_incar(doc_input) or _incar_dict(orig_inputs.get("incar")):
        classification = _classify_calc(calc_input, doc_input, orig_inputs, output.get("structure"))
    else:
        classification = _classify_from_labels(doc)

    lattice, numbers, frac, magmoms = _structure_arrays(output["structure"])
    energy = output.get("energy")
    energy = sigma0_energy(last_step) if energy is None else float(energy)
    forces = output.get("forces") if output.get("forces") is not None else last_step.get("forces")
    stress = output.get("stress") if output.get("stress") is not None else last_step.get("stress")
    frame = Frame(
        ionic_step=0,
        lattice=lattice,
        atomic_numbers=numbers,
        frac_coords=frac,
        energy=energy,
        forces=_array(forces),
        stress=None if stress is None else stress_from_vasp_kbar(_array(stress)),
        magmoms=magmoms,
    )
    incar = _calc_incar(calc_input) or _calc_incar(doc_input) or _incar_dict(orig_inputs.get("incar"))
    return Task(
        external_id=task_id,
        fidelity=classification.fidelity,
        run_type=classification.run_type,
        task_type=classification.task_type,  # type: ignore[arg-type]
        frames=[frame],
        input_parameters=_json_safe(incar) if incar else {},
        hubbards=classification.hubbards,
        source_run_type=_label(doc.get("run_type")),
        code_version=doc.get("vasp_version") or (last_calc or {}).get("vasp_version"),
        completed_at=_completed_at(doc, last_calc),
        energy_quantity="e_0_energy" if energy is not None else "unknown",
        final_frame_only=True,
    )


# --------------------------------------------------------------------------- thermo documents


def _entry_fidelity(key: str, entry: Mapping[str, Any]) -> str:
    parameters = _mapping(entry.get("parameters"))
    data = _mapping(entry.get("data"))
    label = str(parameters.get("run_type") or data.get("run_type") or key or "")
    base = label[:-2] if label.endswith("+U") else label
    hubbards = _hubbard_map(parameters.get("hubbards"))
    if hubbards is not None:  # U = 0 everywhere is plain GGA, as in classify_incar
        plus_u = any(value != 0 for value in hubbards.values())
    elif "is_hubbard" in parameters:
        plus_u = bool(parameters["is_hubbard"])
    else:
        plus_u = label.endswith("+U")
    name = f"{base}+U" if plus_u else base
    try:
        return fidelity_from_label(name)
    except RecordError:
        return name  # refused by validate_reference as an unknown fidelity


def _entry_n_atoms(entry: Mapping[str, Any]) -> int:
    structure = _mapping(entry.get("structure"))
    if structure.get("sites"):
        return len(structure["sites"])
    composition = _mapping(entry.get("composition"))
    total = sum(float(v) for v in composition.values())
    if total <= 0:
        raise RecordError("entry has no composition")
    return int(round(total))


def _entry_correction(entry: Mapping[str, Any]) -> float:
    if entry.get("correction") is not None:
        return float(entry["correction"])
    adjustments = _json_like(entry.get("energy_adjustments")) or []
    total = 0.0
    for adjustment in adjustments:
        adjustment = _mapping(adjustment)
        if "value" in adjustment:
            total += float(adjustment["value"])
        elif "adj_per_atom" in adjustment:
            total += float(adjustment["adj_per_atom"]) * float(adjustment.get("n_atoms", 0))
    return total


def thermo_document_to_references(doc: Mapping) -> list[ReferenceEntry]:
    """Reference entries of an MP thermo document (none for the mixed ``GGA_GGA+U_R2SCAN`` type).

    ``energy_per_atom`` is the entry's uncorrected energy per atom; the corrected one
    includes the document's correction scheme (``thermo_type``), which is kept as
    ``correction_scheme``. Raises :class:`RecordError` when an entry has no energy.
    """
    doc = _mapping(doc)
    thermo_type = str(getattr(doc.get("thermo_type"), "value", doc.get("thermo_type")) or "")
    if thermo_type.upper() == MIXED_THERMO_TYPE:
        return []
    entries = _mapping(doc.get("entries"))
    energy_type = doc.get("energy_type")
    references: list[ReferenceEntry] = []
    for key, raw_entry in entries.items():
        entry = _mapping(raw_entry)
        if not entry:
            continue
        if entry.get("energy") is None:
            raise RecordError(f"thermo entry {key} has no energy")
        n_atoms = _entry_n_atoms(entry)
        energy = float(entry["energy"])  # pymatgen's entry dict stores the uncorrected energy
        correction = _entry_correction(entry)
        primary = key == energy_type or len(entries) == 1
        data = _mapping(entry.get("data"))
        structure = _json_like(entry.get("structure"))
        references.append(
            ReferenceEntry(
                fidelity=_entry_fidelity(str(key), entry),
                energy_per_atom=energy / n_atoms,
                corrected_energy_per_atom=(energy + correction) / n_atoms,
                formation_energy_per_atom=_optional_float(doc.get("formation_energy_per_atom")) if primary else None,
                energy_above_hull=_optional_float(doc.get("energy_above_hull")) if primary else None,
                n_atoms=n_atoms,
                structure=_json_safe(structure) if isinstance(structure, Mapping) else None,
                entry_id=None if entry.get("entry_id") is None else str(entry["entry_id"]),
                task_external_id=None if data.get("task_id") is None else document_task_id(data["task_id"]),
                correction_scheme=thermo_type or None,
                # MP entries take a task's output.energy, Vasprun.final_energy (see _final_frame_task)
                energy_quantity="e_0_energy",
            )
        )
    return references


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)  # validate_reference refuses non-finite values


def _material_of_thermo(material_id: str, docs: Sequence[Mapping[str, Any]]) -> Material:
    for doc in docs:
        for entry in _mapping(doc.get("entries")).values():
            structure = _mapping(_mapping(entry).get("structure"))
            if structure.get("sites"):
                _, numbers, _, _ = _structure_arrays(structure)
                return Material.from_atomic_numbers(material_id, numbers)
    for doc in docs:
        formula = doc.get("formula_pretty")
        if formula:
            return material_from_formula(material_id, str(formula))
    raise RecordError(f"thermo document of {material_id} has neither a structure nor a formula")


def material_from_formula(material_id: str, formula: str) -> Material:
    from pymatgen.core import Composition

    composition = Composition(formula)
    return Material(
        external_id=format_mp_id(material_id),
        formula=composition.reduced_formula,
        elements=tuple(sorted(str(e) for e in composition.elements)),
    )


def thermo_documents_to_bundle(
    docs: Sequence[Mapping], location: str, *, material_id: str | None = None, material: Material | None = None
) -> Bundle | Refusal | None:
    """Thermo documents of one material → a bundle of its reference entries (None when there are none)."""
    plain = [_mapping(d) for d in docs]
    try:
        mid = material_id or next((d.get("material_id") for d in plain if d.get("material_id")), None)
        if not mid:
            raise RecordError("thermo document has no material_id")
        mid = format_mp_id(mid)
        references = [ref for doc in plain for ref in thermo_document_to_references(doc)]
        if not references:
            return None
        material = material or _material_of_thermo(mid, plain)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        return _refuse(location, f"thermo document: {exc}", list(docs))
    raw = RawDocument.from_json(list(docs) if len(docs) > 1 else docs[0], location)
    return Bundle(material=material, location=location, references=references, raw=raw)


# --------------------------------------------------------------------------- files


def _snippet(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(_SNIPPET_CHARS).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _payloads(path: Path, limits: Limits) -> Iterator[tuple[int | None, Any] | Refusal]:
    """(index in the top-level array or None, parsed JSON value) of every top-level value of a file, and refusals.

    A JSON array is streamed item by item; a file starting with ``{`` holds one
    document, JSON lines or documents one after the other. Each value is split off at
    the byte level and parsed alone, within the limits of
    :class:`~crossfid.ingest.sourceio.Limits`. A file from which nothing can be read
    gives one refusal located at the file.
    """
    first = first_byte_or_refusal(path)
    if isinstance(first, Refusal):
        yield Refusal(str(path), f"cannot read {path.name}: {first.reason}", raw_text=_snippet(path))
        return
    label = str(path)
    if first == b"[":
        items: Iterator[Any] = iter_json_stream(path, "array", limits, label=label)
    elif first == b"{":
        items = iter_json_values(path, limits, label=label)
    else:
        reason = f"cannot read {path.name}: not JSON (the file starts with {first!r})"
        yield Refusal(str(path), reason, raw_text=_snippet(path))
        return
    read = 0
    pending: Refusal | None = None
    for item in items:
        if pending is not None:
            yield pending
            pending = None
        if isinstance(item, Refusal):
            pending = item  # the last refusal of a file from which nothing was read stands for the file
            continue
        read += 1
        key, value = item
        yield (key if first == b"[" else None), value
    if pending is not None:
        if read == 0:
            pending = Refusal(str(path), f"cannot read {path.name}: {pending.reason}", raw_text=_snippet(path))
        yield pending


def _documents(payload: Any) -> list[Any]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, Mapping) and isinstance(payload.get("data"), list) and "task_id" not in payload:
        return payload["data"]  # a saved API response {"data": [...], "meta": {...}}
    return [payload]


def _document_name(doc: Mapping[str, Any], index: int) -> str:
    if doc.get("thermo_type") is not None and doc.get("material_id"):
        thermo_type = getattr(doc["thermo_type"], "value", doc["thermo_type"])
        return f"{format_mp_id(doc['material_id'])}:{thermo_type}"
    if doc.get("task_id"):
        return document_task_id(doc["task_id"])
    return str(index)


def read_mp_docs(paths: Sequence[Path]) -> Iterator[Bundle | Refusal]:
    """Bundles and refusals from files of MP task (and thermo) documents.

    Each file is JSON, plain or compressed (gzip, bz2, xz; recognised by content, not
    by name), holding one document, a list of documents, JSON lines of documents or
    a saved API response (``{"data": [...]}``), as written by
    ``monty.serialization.dumpfn`` or plain ``json``. A list is streamed document by
    document; every document is parsed on its own within the nesting-depth and
    record-size limits (docs/ingestion.md, "Limits"), so a bad document is refused
    alone. A file from which nothing can be read gives one refusal located at the
    file; the other files are read. Locations are ``<file>#<task id>``.
    """
    limits = Limits.from_env()
    for path in paths:
        path = Path(path)
        for item in _payloads(path, limits):
            if isinstance(item, Refusal):
                yield item
                continue
            position, payload = item
            documents = enumerate(_documents(payload)) if position is None else [(position, payload)]
            for index, doc in documents:
                try:
                    yield from _document_records(path, index, doc)
                except Exception as exc:  # noqa: BLE001 - a document that cannot be converted is refused alone
                    yield _refuse(f"{path}#{index}", f"cannot read the document: {type(exc).__name__}: {exc}", doc)


def _document_records(path: Path, index: int, doc: Any) -> Iterator[Bundle | Refusal]:
    if not isinstance(doc, Mapping):
        yield Refusal(f"{path}#{index}", f"not an MP document (a JSON {type(doc).__name__}, not an object)")
        return
    location = f"{path}#{_document_name(doc, index)}"
    if doc.get("thermo_type") is not None and "entries" in doc:
        thermo_type = str(getattr(doc["thermo_type"], "value", doc["thermo_type"]))
        if thermo_type.upper() == MIXED_THERMO_TYPE:
            yield Refusal(
                location,
                f"thermo type {thermo_type} is not read: its entries are those of the GGA_GGA+U "
                "and R2SCAN thermo documents, with the mixing-scheme corrections",
            )
            return
        record = thermo_documents_to_bundle([doc], location)
        yield record if record is not None else Refusal(location, "thermo document has no entries")
    elif "task_id" in doc or "calcs_reversed" in doc:
        yield task_document_to_bundle(doc, location)
    else:
        yield Refusal(location, "not an MP task or thermo document (no task_id, calcs_reversed or entries)")
