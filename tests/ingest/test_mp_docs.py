"""MP task documents as MP's tasks collection stores them (real ones from ../shared/data/real), core task
documents without calcs_reversed, energies as pymatgen reads them, and Q-Chem documents refused."""

from __future__ import annotations

import copy
import gzip
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psycopg
import pytest
from pymatgen.core import Structure
from pymatgen.io.vasp.outputs import Vasprun
from typer.testing import CliRunner

from crossfid.cli import app
from crossfid.ingest.mp_docs import (
    molecular_document_reason,
    sigma0_energy,
    task_document_to_bundle,
    thermo_document_to_references,
)
from crossfid.ingest.records import Bundle, Refusal

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
TASK_DOCS = REAL / "task_docs"
QCHEM = REAL / "not_vasp" / "qchem_liec_tasks.json.gz"
needs_real = pytest.mark.skipif(
    not TASK_DOCS.is_dir() or not QCHEM.is_file(),
    reason=f"the public records folder {REAL} is absent (a fresh clone has none)",
)


def read(path: Path) -> list[dict]:
    data = json.loads(gzip.decompress(path.read_bytes()))
    return data if isinstance(data, list) else [data]


def real_docs() -> list[dict]:
    return [doc for path in sorted(TASK_DOCS.glob("*.json.gz")) for doc in read(path)]


def pymatgen_final_energy(step: dict) -> float:
    """pymatgen's own ``Vasprun.final_energy`` (its code) of a run whose last ionic step is ``step``."""
    return Vasprun.final_energy.fget(SimpleNamespace(ionic_steps=[step]))


def unwrap(value):
    """monty's enum wrappers ({"@module", "@class", "value"}) → their values, so emmet's TaskDoc reads the document."""
    if isinstance(value, dict):
        if "value" in value and set(value) <= {"@module", "@class", "@version", "value"}:
            return value["value"]
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def emmet_task(doc: dict):
    from emmet.core.tasks import TaskDoc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TaskDoc(**unwrap(copy.deepcopy(doc)))


# --------------------------------------------------------------------------- energies


def test_sigma0_energy_is_pymatgens_final_energy():
    consistent = {
        "e_fr_energy": -10.0,
        "e_0_energy": -10.2,
        "electronic_steps": [{"e_fr_energy": -9.9, "e_0_energy": -10.1}],
    }
    buggy = {"e_fr_energy": -10.0, "e_0_energy": 0.0, "electronic_steps": [{"e_fr_energy": -9.9, "e_0_energy": -10.1}]}
    for step in (consistent, buggy):
        assert sigma0_energy(step) == pymatgen_final_energy(step)
    assert sigma0_energy({"e_fr_energy": -10.0, "e_0_energy": -10.05}) == -10.05  # no electronic steps to check
    assert sigma0_energy(buggy) == -10.2  # vasprun.xml's bad e_0_energy is repaired from the electronic step
    assert sigma0_energy({"e_fr_energy": -10.0}) is None  # no σ → 0 energy to be had


@needs_real
def test_real_documents_hold_the_vasp_bug_and_their_output_energy_is_the_repaired_sigma0_energy():
    """MP's documents store e_0_energy = 0.0 for every ionic step; output.energy is pymatgen's repaired value."""
    for doc in real_docs():
        last = doc["calcs_reversed"][0]["output"]["ionic_steps"][-1]
        if doc["output"].get("energy") is None:
            continue
        assert last.get("e_0_energy") in (0.0, -0.0)
        assert sigma0_energy(last) == doc["output"]["energy"] == pymatgen_final_energy(last)


# --------------------------------------------------------------------------- documents without calcs_reversed


@needs_real
def test_a_core_task_document_becomes_one_final_frame():
    (doc,) = read(TASK_DOCS / "mp-1201400_task_doc.json.gz")
    core = {k: v for k, v in doc.items() if k != "calcs_reversed"}  # what the API's tasks endpoint serves
    record = task_document_to_bundle(core, "loc")
    assert isinstance(record, Bundle), getattr(record, "reason", None)
    (task,) = record.tasks
    (frame,) = task.frames
    assert task.final_frame_only and task.energy_quantity == "e_0_energy"
    assert (task.fidelity, task.task_type) == ("GGA", "relax")  # from input.incar
    from emmet.core.tasks import OutputDoc

    output = OutputDoc(**unwrap(core["output"]))
    np.testing.assert_array_equal(frame.lattice, output.structure.lattice.matrix)
    np.testing.assert_array_equal(frame.frac_coords, output.structure.frac_coords)
    assert frame.energy == output.energy
    np.testing.assert_array_equal(frame.forces, np.asarray(output.forces))
    np.testing.assert_allclose(frame.stress, -0.1 * np.asarray(output.stress), rtol=0, atol=1e-12)
    # the same task with its trajectory ends on the same structure and energy
    full = task_document_to_bundle(doc, "loc").tasks[0]
    assert not full.final_frame_only and full.frames[-1].energy == frame.energy


def core_doc(**labels) -> dict:
    structure = Structure.from_spacegroup(
        "Fm-3m", [[4.2, 0, 0], [0, 4.2, 0], [0, 0, 4.2]], ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return {
        "task_id": "mp-aaaaaaaz",
        "output": {
            "structure": structure.as_dict(),
            "energy": -95.1,
            "forces": [[0.0, 0.0, 0.0]] * len(structure),
            "stress": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]],
        },
        "input": {"hubbards": {"Ni": 6.2, "O": 0.0}},
        **labels,
    }


def test_a_core_document_without_any_incar_is_classified_by_its_labels():
    record = task_document_to_bundle(core_doc(calc_type="GGA+U Static"), "loc")
    assert isinstance(record, Bundle), getattr(record, "reason", None)
    (task,) = record.tasks
    assert (task.external_id, task.fidelity, task.run_type, task.task_type) == ("mp-25", "GGA+U", "PBE+U", "static")
    assert task.hubbards == {"Ni": 6.2} and task.final_frame_only and task.frames[0].energy == -95.1
    np.testing.assert_array_equal(task.frames[0].stress, -0.1 * np.eye(3))
    nscf = task_document_to_bundle(core_doc(run_type="GGA+U", task_type="NSCF Line"), "loc")
    assert isinstance(nscf, Refusal) and "non-self-consistent" in nscf.reason
    dfpt = task_document_to_bundle(core_doc(run_type="GGA", task_type="DFPT"), "loc")
    assert isinstance(dfpt, Refusal) and "'DFPT' is not a relax or static task" in dfpt.reason
    bare = task_document_to_bundle(core_doc(), "loc")
    assert isinstance(bare, Refusal) and "no INCAR and no run_type" in bare.reason
    empty = task_document_to_bundle({"task_id": "mp-1", "output": {}}, "loc")
    assert isinstance(empty, Refusal) and "neither ionic steps" in empty.reason


def test_trajectory_frames_are_sigma0_energies_and_say_so():
    doc = core_doc(calc_type="GGA+U Static")
    step = {
        "structure": doc["output"]["structure"],
        "e_fr_energy": -95.0,
        "e_0_energy": 0.0,
        "forces": doc["output"]["forces"],
        "stress": doc["output"]["stress"],
        "electronic_steps": [{"e_fr_energy": -94.9, "e_0_energy": -95.0}],
    }
    doc["calcs_reversed"] = [
        {
            "input": {"incar": {"LDAU": True, "LDAUU": [6.2, 0], "NSW": 0}, "potcar": ["Ni_pv", "O"]},
            "output": {"ionic_steps": [step]},
        }
    ]
    (task,) = task_document_to_bundle(doc, "loc").tasks
    assert task.energy_quantity == "e_0_energy" and not task.final_frame_only
    assert task.frames[0].energy == pymatgen_final_energy(step) == -95.1
    del step["electronic_steps"], step["e_0_energy"]
    (task,) = task_document_to_bundle(doc, "loc").tasks
    assert (task.energy_quantity, task.frames[0].energy) == ("e_fr_energy", -95.0)  # a whole task, one quantity


def test_thermo_entries_state_their_energy_quantity():
    doc = {
        "material_id": "mp-19770",
        "thermo_type": "GGA_GGA+U",
        "energy_type": "GGA_GGA+U",
        "entries": {
            "GGA_GGA+U": {"energy": -67.0, "composition": {"Fe": 2, "O": 3}, "parameters": {"run_type": "GGA+U"}}
        },
    }
    (entry,) = thermo_document_to_references(doc)
    assert entry.energy_quantity == "e_0_energy"


# --------------------------------------------------------------------------- molecules


@needs_real
def test_qchem_documents_are_refused_as_not_vasp():
    for doc in read(QCHEM):
        assert "Q-Chem molecular calculation" in molecular_document_reason(doc)
        refusal = task_document_to_bundle(doc, "loc")
        assert isinstance(refusal, Refusal) and refusal.reason.startswith("not a VASP task document: Q-Chem")


def test_a_molecule_without_a_lattice_is_refused():
    molecule = {"@class": "Molecule", "sites": [{"species": [{"element": "H", "occu": 1}], "xyz": [0, 0, 0]}]}
    refusal = task_document_to_bundle({"task_id": "m-1", "output": {"structure": molecule}}, "loc")
    assert isinstance(refusal, Refusal) and refusal.reason.startswith("not a VASP task document: molecular")


# --------------------------------------------------------------------------- the real documents, end to end


def expected_frames(doc: dict) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray | None, np.ndarray | None]]:
    """(lattice, frac coords, energy, forces, stress GPa) of every frame, read with emmet and pymatgen."""
    task = emmet_task(doc)
    frames = []
    for calc, raw in zip(reversed(task.calcs_reversed), reversed(doc["calcs_reversed"]), strict=True):
        for step, raw_step in zip(calc.output.ionic_steps, raw["output"]["ionic_steps"], strict=True):
            if step.structure is None:
                continue
            stress = None if step.stress is None else -0.1 * np.asarray(step.stress)
            frames.append(
                (
                    step.structure.lattice.matrix,
                    step.structure.frac_coords,
                    pymatgen_final_energy(raw_step),
                    None if step.forces is None else np.asarray(step.forces),
                    stress,
                )
            )
    if not frames:  # no step has a structure: the output structure with the last step's σ → 0 energy
        last = doc["calcs_reversed"][0]["output"]["ionic_steps"][-1]
        energy = last["electronic_steps"][-1]["e_0_energy"]  # the step has no e_0_energy of its own
        structure = task.output.structure
        frames.append((structure.lattice.matrix, structure.frac_coords, energy, None, None))
    return frames


def stored_frames(conn, task_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT f.lattice, f.frac_coords, f.energy, f.forces, f.stress FROM frames f JOIN tasks t ON t.id = f.task_id "
        "WHERE t.external_id = %s ORDER BY f.ionic_step",
        (task_id,),
    ).fetchall()


@needs_real
def test_every_real_task_document_is_stored_frame_for_frame_and_grouped(database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    files = [str(p) for p in sorted(TASK_DOCS.glob("*.json.gz"))] + [str(QCHEM)]
    result = CliRunner().invoke(app, ["ingest", "mp-docs", *files])
    assert result.exit_code == 3, result.output  # the NSCF run and the Q-Chem documents are refused

    with psycopg.connect(database_url) as conn:
        reasons = dict(conn.execute("SELECT location, reason FROM quarantine").fetchall())
        tasks = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT t.external_id, m.external_id, t.material_rule, t.fidelity, t.energy_quantity, "
                "t.final_frame_only FROM tasks t JOIN materials m ON m.id = t.material_id"
            )
        }
        for doc in real_docs():
            task = emmet_task(doc)
            task_id = f"mp-{int(task.task_id)}"  # emmet reads every id as an AlphaID; stored in the legacy form
            if task.task_type.value == "NSCF Uniform":
                assert task_id not in tasks
                assert "ICHARG = 11" in reasons[f"{TASK_DOCS / 'Si_tasks.json.gz'}#{task_id}"]
                continue
            expected = expected_frames(doc)
            rows = stored_frames(conn, task_id)
            assert len(rows) == len(expected), task_id
            for (lattice, frac, energy, forces, stress), row in zip(expected, rows, strict=True):
                np.testing.assert_array_equal(np.reshape(row[0], (3, 3)), lattice)
                np.testing.assert_array_equal(np.reshape(row[1], (-1, 3)), frac)
                assert abs(row[2] - energy) < 1e-6
                assert (row[3] is None) == (forces is None) and (row[4] is None) == (stress is None)
                if forces is not None:
                    np.testing.assert_array_equal(np.reshape(row[3], (-1, 3)), forces)
                    np.testing.assert_allclose(np.reshape(row[4], (3, 3)), stress, rtol=0, atol=1e-12)
            material, rule, fidelity, quantity, final_only = tasks[task_id]
            assert fidelity == task.run_type.value  # emmet's run type (GGA, GGA+U) is crossfid's fidelity here
            assert (rule, quantity) == ("structure-match-new", "e_0_energy")
            assert final_only == (task_id == "mp-688194")  # its ionic steps carry no structures
        qchem = [reason for location, reason in reasons.items() if location.startswith(str(QCHEM))]
        assert len(qchem) == len(read(QCHEM)) and all(r.startswith("not a VASP task document: Q-Chem") for r in qchem)
        assert len(reasons) == 1 + len(qchem)
        materials = dict(conn.execute("SELECT external_id, formula FROM materials").fetchall())
        counts = conn.execute("SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM frames)").fetchone()

    # MP's materials builder puts the three Si calculations in one material, which MP names mp-149
    assert {t: tasks[t][0] for t in ("mp-149", "mp-1141021", "mp-1440634")} == dict.fromkeys(
        ("mp-149", "mp-1141021", "mp-1440634"), "grouped:mp-149"
    )
    assert materials == {"grouped:mp-149": "Si", "grouped:mp-1201400": "BaSi(S2O7)3", "grouped:mp-688194": "Ca3MnZnO6"}

    again = CliRunner().invoke(app, ["ingest", "mp-docs", *files])
    assert again.exit_code == 3, again.output
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM frames)").fetchone() == counts
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == len(reasons)
        assert dict(conn.execute("SELECT external_id, formula FROM materials").fetchall()) == materials
