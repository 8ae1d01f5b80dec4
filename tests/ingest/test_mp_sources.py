"""Materials Project sources: ids, trajectories, the real mp_api client against the imitation API, MP files.

The imitation API (tests/support/mp_server.py) serves emmet-core documents built from
known values, including what the real server (tests/ingest/test_mp_api_real.py) cannot:
whole task documents, error answers, GGA+U and r2SCAN thermo documents. These tests check
that those values come out of the sources unchanged (in canonical units), that fidelity
comes from the INCAR, and that the API key stays out of every record.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import warnings

import numpy as np
import pytest
from monty.serialization import dumpfn
from support import mp_server

from crossfid.ingest.mp_api import (
    CLIENT_CALLS,
    MaterialsProjectError,
    attach_trajectory,
    calc_type_fidelity,
    legacy_task_ids,
    missing_client_arguments,
    normalize_fidelities,
    read_materials_project,
    select_tasks,
    split_calc_type,
    thermo_types_for,
    trajectory_frames,
)
from crossfid.ingest.mp_docs import (
    format_mp_id,
    read_mp_docs,
    task_document_to_bundle,
    thermo_document_to_references,
)
from crossfid.ingest.mp_ids import alpha_mp_id, legacy_mp_id, mp_id_key, mp_id_sort_key, parse_mp_id
from crossfid.ingest.records import Bundle, Frame, RawDocument, Refusal, Task, validate_bundle

ALL_MATERIALS = ["mp-19770", "mp-149"]


@pytest.fixture(scope="module")
def documents() -> mp_server.Documents:
    return mp_server.build_documents()


@pytest.fixture
def server(documents, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with mp_server.serve(documents) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_run(documents):
    """One full read of both materials (shared by the read-only checks below)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        mp.delenv("MP_API_KEY", raising=False)
        with mp_server.serve(documents) as srv:
            messages: list[tuple[int, int, str]] = []
            records = list(
                read_materials_project(
                    material_ids=ALL_MATERIALS,
                    api_key=mp_server.API_KEY,
                    endpoint=srv.url,
                    progress=lambda done, total, message: messages.append((done, total, message)),
                )
            )
            return records, list(srv.requests), messages


def bundles_by_location(records) -> dict[str, Bundle]:
    return {r.location: r for r in records if isinstance(r, Bundle)}


def task_of(records, external_id: str):
    for record in records:
        if isinstance(record, Bundle):
            for task in record.tasks:
                if task.external_id == external_id:
                    return record, task
    raise AssertionError(f"no task {external_id}")


def expected_frames(truth: mp_server.TaskTruth, calc_names: list[str]):
    steps = [(step, name) for name, _, calc_steps in truth.calcs if name in calc_names for step in calc_steps]
    return [step for step, _ in steps]


def assert_frames_equal(frames, steps, nelm):
    assert [f.ionic_step for f in frames] == list(range(len(steps)))
    for frame, step in zip(frames, steps, strict=True):
        assert np.array_equal(frame.lattice, np.asarray(step.lattice))
        assert [int(z) for z in frame.atomic_numbers] == [{"Fe": 26, "O": 8, "Si": 14}[s] for s in step.species]
        assert np.array_equal(frame.frac_coords, np.asarray(step.frac))
        assert frame.energy == step.e0  # e_0_energy (σ → 0), the quantity of MP's entries, not e_fr_energy
        assert frame.energy != step.energy
        assert np.array_equal(frame.forces, np.asarray(step.forces))
        assert np.array_equal(frame.stress, np.asarray(step.stress_kbar) * -0.1)
        if step.magmoms is None:
            assert frame.magmoms is None
        else:
            assert np.array_equal(frame.magmoms, np.asarray(step.magmoms))
        assert frame.n_electronic_steps == step.n_scf
        assert frame.scf_converged == (step.n_scf < nelm)


# --------------------------------------------------------------------------- pure helpers


def test_calc_type_helpers():
    assert split_calc_type("GGA+U Structure Optimization") == ("GGA+U", "Structure Optimization")
    assert split_calc_type("r2SCAN NSCF Line") == ("r2SCAN", "NSCF Line")
    assert split_calc_type("PBEsol Static") == ("PBEsol", "Static")
    assert calc_type_fidelity("GGA Static") == "GGA"
    assert calc_type_fidelity("PBE+U Static") == "GGA+U"
    assert calc_type_fidelity("r2SCAN Structure Optimization") == "r2SCAN"
    assert calc_type_fidelity("LDA Static") == "LDA"  # any functional pymatgen/emmet identify is a fidelity
    assert calc_type_fidelity("XYZ Static") is None
    assert normalize_fidelities(["pbe", "GGA", "R2SCAN"]) == ("GGA", "r2SCAN")
    with pytest.raises(ValueError):
        normalize_fidelities(["B3LYP-ish"])
    assert thermo_types_for(["GGA+U"]) == ["GGA_GGA+U"]
    assert thermo_types_for(["r2SCAN", "GGA"]) == ["GGA_GGA+U", "R2SCAN"]
    assert thermo_types_for(["HSE06"]) == []


def test_select_tasks():
    calc_types = {
        "mp-aaaaabmn": "GGA+U Structure Optimization",
        "mp-12": "GGA+U Static",
        "mp-13": "GGA+U NSCF Line",
        "mp-14": "GGA+U NSCF Uniform",
        "mp-15": "r2SCAN Structure Optimization",
        "mp-16": "GGA Static",
        "mp-17": "HSE06 Static",
        "mp-18": "GGA Deformation",
        "mp-19": "GGA+U Static",
    }
    assert select_tasks(calc_types, ["GGA+U"], deprecated=["mp-aaaaaaat"]) == ["mp-12", "mp-aaaaabmn"]
    assert select_tasks(calc_types, ["GGA", "GGA+U", "r2SCAN"]) == [
        "mp-12",
        "mp-15",
        "mp-16",
        "mp-19",
        "mp-aaaaabmn",
    ]
    assert select_tasks(calc_types, ["HSE06"]) == ["mp-17"]
    assert select_tasks(None, ["GGA"]) == []


def test_format_mp_id():
    assert format_mp_id("mp-aaaaabmn") == "mp-1001"
    assert format_mp_id("mp-1001") == "mp-1001"
    assert format_mp_id("mvc-12") == "mvc-12"
    assert format_mp_id("vasp:abc-def") == "vasp:abc-def"
    assert format_mp_id("task-xyz") == "task-xyz"


def test_mp_ids_legacy_and_alpha_both_ways():
    from emmet.core.types.typing import format_identifier, format_task_id

    cases = [("mp-149", "mp-aaaaaaft", "mp-ft", "aaaaaaft"), ("mp-1201400", "mp-aaacqjfs", "mp-cqjfs", "aaacqjfs")]
    for legacy, material, unpadded, task in cases:
        assert alpha_mp_id(legacy) == material == format_identifier(legacy, legacy=False)
        assert alpha_mp_id(legacy, task=True) == task == format_task_id(legacy, legacy=False)
        for form in (legacy, material, unpadded, task):
            assert legacy_mp_id(form, bare=form == task) == legacy
            assert alpha_mp_id(form, bare=form == task) == material
            assert mp_id_key(form, bare=form == task) == mp_id_key(legacy)
    assert legacy_mp_id("aaaaaaft") == "aaaaaaft"  # a bare word is an MP id only where the caller says so
    assert legacy_mp_id("149", bare=True) == "mp-149"
    assert legacy_mp_id("mvc-aaaaaaam") == "mvc-12" and alpha_mp_id("mvc-12") == "mvc-aaaaaaam"
    # above AlphaID's cut point no legacy number was minted: the id stays the AlphaID the API serves
    assert legacy_mp_id("mp-hilze") == "mp-aaahilze" == format_identifier("mp-aaahilze", legacy=True)
    assert legacy_mp_id("mp-3347530") == "mp-aaahilze" == alpha_mp_id("mp-3347530")
    for other in ("task-xyz", "vasp:abc-def", "MP-149", "mp-1a", "mp-", "", "mp-149/relax1"):
        assert legacy_mp_id(other) == other and alpha_mp_id(other) == other and parse_mp_id(other) is None
    assert sorted(["mp-aaaaabmn", "mp-10", "x", "mp-9"], key=mp_id_sort_key) == ["mp-9", "mp-10", "mp-aaaaabmn", "x"]


def test_every_argument_crossfid_passes_exists_in_the_installed_client():
    assert missing_client_arguments() == []
    searched = {method: args for (_, cls, method), args in CLIENT_CALLS.items() if cls == "TaskRester"}
    assert "chemsys" not in searched["search"]  # the tasks endpoint has no chemsys filter any more


def test_served_alpha_task_ids_are_stored_in_legacy_form(documents):
    doc = next(d for d in documents.tasks if format_mp_id(d["task_id"]) == "mp-1002")
    served = {**doc, "task_id": "aaaaabmo"}  # mp-1002 as MP's tasks collection writes it
    bundle = legacy_task_ids(task_document_to_bundle(served, "loc", material_id="mp-19770"), "aaaaabmo")
    assert [t.external_id for t in bundle.tasks] == ["mp-1002", "mp-1002/precondition"]
    assert legacy_task_ids(bundle, "mp-1002") is bundle


# --------------------------------------------------------------------------- trajectories


def emmet_trajectory(documents, task_id: str) -> dict:
    """emmet's RelaxTrajectory of a task's calculations of its final calc type (what MP's trajectory table holds)."""
    from emmet.core.vasp.calculation import get_trajectories_from_calculations

    calcs = documents.task_models[task_id].calcs_reversed[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_trajectories_from_calculations(calcs, separate=False)[-1].model_dump()


def final_frame_task(documents, task_id: str, quantity: str) -> Task:
    """A task as stored from a core document: its output frame only."""
    truth = documents.truth[task_id]
    step = truth.calcs[-1][2][-1]
    frame = Frame.from_structure(
        mp_server._structure(step),
        0,
        step.e0 if quantity == "e_0_energy" else step.energy,
        forces=np.asarray(step.forces),
        stress=np.asarray(step.stress_kbar) * -0.1,
    )
    incar = truth.calcs[-1][1]
    return Task(
        task_id,
        "GGA+U",
        "PBE+U",
        "relax",
        [frame],
        input_parameters=incar,
        energy_quantity=quantity,
        final_frame_only=True,
    )


def test_trajectory_frames_of_an_emmet_trajectory(documents):
    trajectory = emmet_trajectory(documents, "mp-1001")
    truth = expected_frames(documents.truth["mp-1001"], ["relax1", "relax2"])
    frames = trajectory_frames(trajectory, "e_fr_energy", nelm=100)
    assert [f.ionic_step for f in frames] == [0, 1, 2]
    for frame, step in zip(frames, truth, strict=True):
        assert np.allclose(frame.lattice, step.lattice, rtol=0, atol=1e-12)
        assert np.allclose(frame.frac_coords, step.frac, rtol=0, atol=1e-12)
        assert [int(z) for z in frame.atomic_numbers] == [26, 26, 8, 8, 8]
        assert frame.energy == step.energy
        assert np.array_equal(frame.forces, np.asarray(step.forces))
        assert np.allclose(frame.stress, np.asarray(step.stress_kbar) * -0.1, rtol=0, atol=1e-12)
        assert frame.n_electronic_steps == step.n_scf and frame.scf_converged == (step.n_scf < 100)
    assert [f.energy for f in trajectory_frames(trajectory, "e_0_energy")] == [s.e0 for s in truth]


def test_attach_trajectory_keeps_one_energy_quantity(documents):
    trajectory = emmet_trajectory(documents, "mp-1001")
    truth = expected_frames(documents.truth["mp-1001"], ["relax1", "relax2"])
    sigma0 = attach_trajectory(final_frame_task(documents, "mp-1001", "e_0_energy"), trajectory)
    assert not sigma0.final_frame_only and sigma0.energy_quantity == "e_0_energy"
    assert [f.energy for f in sigma0.frames] == [s.e0 for s in truth]
    assert sigma0.frames[-1].scf_converged is True and sigma0.frames[1].scf_converged is False  # NELM 100
    # a task whose quantity is not known takes the trajectory energy that equals its final frame's
    unknown = attach_trajectory(final_frame_task(documents, "mp-1001", "unknown"), trajectory)
    assert unknown.energy_quantity == "e_fr_energy" and [f.energy for f in unknown.frames] == [s.energy for s in truth]
    # another task's trajectory, or a task that has its steps already, is not attached
    assert (
        attach_trajectory(final_frame_task(documents, "mp-1001", "e_fr_energy"), emmet_trajectory(documents, "mp-1005"))
        is None
    )
    assert attach_trajectory(unknown, trajectory) is None


# --------------------------------------------------------------------------- the API source


def test_api_frames_round_trip_exactly(api_run, documents):
    records, _, _ = api_run
    for task_id, calcs in [("mp-1001", ["relax1", "relax2"]), ("mp-1005", ["standard"]), ("mp-1002", ["relax1"])]:
        truth = documents.truth[task_id]
        bundle, task = task_of(records, task_id)
        assert bundle.location == f"mp-api:{task_id}"
        assert bundle.material.external_id == truth.material_id
        assert_frames_equal(task.frames, expected_frames(truth, calcs), truth.nelm)
        assert task.energy_quantity == "e_0_energy" and not task.final_frame_only
        assert task.material_rule == "mp-materials"
        cleaned, refusals = validate_bundle(bundle)
        assert refusals == [] and cleaned is not None
    _, relaxation = task_of(records, "mp-1001")
    assert len(relaxation.frames) == 3  # relax1 (2 steps) + relax2 (1 step), chronological
    assert relaxation.frames[1].scf_converged is False  # 100 electronic steps = NELM
    _, si_static = task_of(records, "mp-1005")
    assert si_static.frames[0].scf_converged is False  # 60 steps = VASP's default NELM


def test_api_stress_kbar_to_gpa_sign(api_run):
    _, task = task_of(api_run[0], "mp-1001")
    stress = task.frames[0].stress
    assert stress[0, 0] == -1.0  # +10 kBar (VASP, compressive positive) → −1.0 GPa (tensile positive)
    assert stress[0, 1] == -0.05
    assert stress.shape == (3, 3)


def test_api_fidelity_from_incar_not_from_label(api_run, documents):
    bundle, task = task_of(api_run[0], "mp-1001")
    assert task.fidelity == "GGA+U"
    assert task.run_type == "PBE+U"
    assert task.hubbards == {"Fe": 5.3}
    assert task.source_run_type == "GGA"  # the document's (wrong) label, kept
    assert task.task_type == "relax"
    assert task.input_parameters == mp_server.MP_RELAX_U_INCAR
    assert task.code_version == "6.3.2"
    assert task.completed_at == documents.truth["mp-1001"].completed_at
    assert bundle.material.formula == "Fe2O3" and bundle.material.elements == ("Fe", "O")
    served = next(d for d in documents.tasks if format_mp_id(d["task_id"]) == "mp-1001")
    assert bundle.raw == RawDocument.from_json(served, "mp-api:mp-1001")


def test_api_mixed_functional_task_is_split(api_run, documents):
    bundle, main = task_of(api_run[0], "mp-1002")
    _, pre = task_of(api_run[0], "mp-1002/precondition")
    assert [t.external_id for t in bundle.tasks] == ["mp-1002", "mp-1002/precondition"]
    assert (main.fidelity, main.run_type, main.task_type, main.source_run_type) == (
        "r2SCAN",
        "r2SCAN",
        "relax",
        "r2SCAN",
    )
    assert (pre.fidelity, pre.run_type) == ("PBEsol", "PBEsol")
    assert_frames_equal(pre.frames, expected_frames(documents.truth["mp-1002"], ["precondition"]), 200)


def test_api_nscf_task_refused_and_band_structures_not_fetched(api_run):
    records, requests, _ = api_run
    refusals = [r for r in records if isinstance(r, Refusal)]
    assert [r.location for r in refusals] == ["mp-api:mp-1003"]
    assert "non-self-consistent" in refusals[0].reason and "ICHARG = 11" in refusals[0].reason
    fetched = ",".join(r.params.get("task_ids", "") for r in requests if r.path == "materials/tasks")
    for never in ("mp-1004", "aaaaabmq", "mp-1006", "aaaaabms"):  # correctly labelled NSCF; deprecated task
        assert never not in fetched
    assert "mp-1003" in fetched


def test_api_thermo_reference_entries(api_run, documents):
    records, requests, _ = api_run
    bundles = bundles_by_location(records)
    seen = set()
    for material_id in ALL_MATERIALS:
        bundle = bundles[f"mp-api:{material_id}#thermo"]
        assert bundle.tasks == [] and bundle.material.external_id == material_id
        for ref in bundle.references:
            truth = next(
                v for (m, _), v in documents.thermo_truth.items() if m == material_id and v["fidelity"] == ref.fidelity
            )
            assert ref.energy_per_atom == truth["energy"] / truth["n"]  # uncorrected
            assert ref.corrected_energy_per_atom == (truth["energy"] + truth["correction"]) / truth["n"]
            assert ref.formation_energy_per_atom == truth["formation"]
            assert ref.energy_above_hull == truth["ehull"]
            assert ref.task_external_id == truth["task"]
            assert ref.correction_scheme == truth["scheme"]
            assert ref.n_atoms == truth["n"] and len(ref.structure["sites"]) == truth["n"]
            assert ref.entry_id == f"{material_id}-{'GGA+U' if ref.fidelity == 'GGA+U' else ref.fidelity}"
            seen.add((material_id, ref.fidelity))
        assert validate_bundle(bundle)[1] == []
    assert seen == {("mp-19770", "GGA+U"), ("mp-19770", "r2SCAN"), ("mp-149", "GGA")}
    thermo_types = [r.params["thermo_types"] for r in requests if r.path == "materials/thermo"]
    assert thermo_types and all("GGA_GGA+U_R2SCAN" not in t for t in thermo_types)


def test_api_key_never_in_records(api_run):
    records, requests, messages = api_run
    key = mp_server.API_KEY
    data_requests = [r for r in requests if r.path != "heartbeat"]
    assert data_requests and all(r.api_key == key for r in data_requests)  # the client did send it
    for record in records:
        assert key not in repr(record)
        if isinstance(record, Bundle):
            assert key.encode() not in record.raw.content
            assert key not in record.raw.location
        else:
            assert key not in json.dumps(dataclasses.asdict(record), default=str)
    assert key not in repr(messages)
    assert [m[:2] for m in messages] == [(1, 2), (2, 2)]


def test_api_requires_a_key_and_a_filter():
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="API key"):
            read_materials_project(material_ids=["mp-149"], api_key=bad)
    with pytest.raises(ValueError, match="32 characters, the one given has 5") as info:
        read_materials_project(material_ids=["mp-149"], api_key="short")
    assert "short" not in str(info.value)
    with pytest.raises(ValueError, match="material_ids, chemsys or formula"):
        read_materials_project(api_key=mp_server.API_KEY)
    with pytest.raises(ValueError):
        read_materials_project(material_ids=["mp-149"], api_key=mp_server.API_KEY, fidelities=["nonsense"])


def test_api_rejected_key_gives_clear_error_without_the_key(server):
    wrong = "Z" * 32
    with pytest.raises(MaterialsProjectError) as info:
        list(read_materials_project(material_ids=["mp-149"], api_key=wrong, endpoint=server.url))
    assert "403" in str(info.value)
    assert wrong not in str(info.value)


def test_api_server_error_gives_clear_error_without_the_key(documents, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with (
        mp_server.serve(documents, fail={"materials/thermo": 500}) as srv,
        pytest.raises(MaterialsProjectError, match="thermo search failed") as info,
    ):
        list(read_materials_project(material_ids=["mp-149"], api_key=mp_server.API_KEY, endpoint=srv.url))
    assert "500" in str(info.value) and mp_server.API_KEY not in str(info.value)


def test_api_fidelity_selection(server):
    """Fidelities choose tasks and thermo types (chemsys and formula: tests/ingest/test_mp_api_real.py)."""
    records = list(
        read_materials_project(formula="Fe2O3", fidelities=["r2SCAN"], api_key=mp_server.API_KEY, endpoint=server.url)
    )
    assert sorted(r.location for r in records) == ["mp-api:mp-1002", "mp-api:mp-19770#thermo"]
    thermo = bundles_by_location(records)["mp-api:mp-19770#thermo"]
    assert [ref.fidelity for ref in thermo.references] == ["r2SCAN"]
    assert [r.params["thermo_types"] for r in server.requested("materials/thermo")] == ["r2SCAN"]
    assert all(t.material_rule == "mp-materials" for r in records if isinstance(r, Bundle) for t in r.tasks)


# --------------------------------------------------------------------------- document files


def comparable(bundle: Bundle):
    return (
        bundle.material,
        [
            (
                t.external_id,
                t.fidelity,
                t.run_type,
                t.task_type,
                t.hubbards,
                t.input_parameters,
                t.source_run_type,
                t.code_version,
                t.completed_at,
                [(f.ionic_step, f.content_hash()) for f in t.frames],
            )
            for t in bundle.tasks
        ],
        [dataclasses.astuple(r) for r in bundle.references],
    )


def test_mp_docs_dumpfn_files_read_back_identically(api_run, documents, tmp_path):
    records = api_run[0]
    served = []
    for doc in documents.tasks:
        truth = documents.truth[format_mp_id(doc["task_id"])]
        served.append({**doc, "material_id": truth.material_id})  # task documents of the API carry no material id
    fetched = {
        format_mp_id(d["task_id"]): d for d in served if format_mp_id(d["task_id"]) in ("mp-1001", "mp-1002", "mp-1005")
    }
    dumpfn(fetched["mp-1001"], tmp_path / "single.json")
    dumpfn(fetched["mp-1005"], tmp_path / "single.json.gz")
    dumpfn([fetched["mp-1002"], fetched["mp-1001"]], tmp_path / "list.json.gz")
    dumpfn([fetched["mp-1005"]], tmp_path / "list.json")
    paths = [tmp_path / n for n in ("single.json", "single.json.gz", "list.json.gz", "list.json")]
    read = list(read_mp_docs(paths))
    assert all(isinstance(r, Bundle) for r in read)
    assert [r.location for r in read] == [
        f"{tmp_path}/single.json#mp-1001",
        f"{tmp_path}/single.json.gz#mp-1005",
        f"{tmp_path}/list.json.gz#mp-1002",
        f"{tmp_path}/list.json.gz#mp-1001",
        f"{tmp_path}/list.json#mp-1005",
    ]
    from_api = {r.location.split(":", 1)[1]: r for r in records if isinstance(r, Bundle) and r.tasks}
    for bundle in read:
        task_id = bundle.tasks[0].external_id
        assert comparable(bundle) == comparable(from_api[task_id])
        assert json.loads(bundle.raw.content) == fetched[task_id]


def test_mp_docs_dumpfn_of_emmet_models(documents, tmp_path):
    """monty's encoding of TaskDoc objects (@module/@class, datetime dicts) reads like the API's JSON."""
    model = documents.task_models["mp-1001"].model_copy(update={"material_id": "mp-19770"})
    dumpfn(model, tmp_path / "model.json.gz")
    text = gzip.decompress((tmp_path / "model.json.gz").read_bytes()).decode()
    assert '"@module"' in text and '"@class": "datetime"' in text
    (bundle,) = read_mp_docs([tmp_path / "model.json.gz"])
    served = next(d for d in documents.tasks if format_mp_id(d["task_id"]) == "mp-1001")
    reference = task_document_to_bundle(served, "x", material_id="mp-19770")
    (task,), (ref_task,) = bundle.tasks, reference.tasks
    assert [f.content_hash() for f in task.frames] == [f.content_hash() for f in ref_task.frames]
    assert (task.fidelity, task.run_type, task.hubbards, task.completed_at) == (
        ref_task.fidelity,
        ref_task.run_type,
        ref_task.hubbards,
        ref_task.completed_at,
    )
    assert task.source_run_type == "GGA+U"  # emmet recomputed the label when the model was built


def test_mp_docs_bad_files_refused_others_read(documents, tmp_path):
    doc = {**next(d for d in documents.tasks if format_mp_id(d["task_id"]) == "mp-1005"), "material_id": "mp-149"}
    dumpfn(doc, tmp_path / "good.json.gz")
    whole = (tmp_path / "good.json.gz").read_bytes()
    (tmp_path / "truncated.json.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "malformed.json").write_text('{"task_id": "mp-1005", "calcs_reversed": [')
    (tmp_path / "also_good.json").write_text(json.dumps([doc, 42]))
    paths = [tmp_path / n for n in ("truncated.json.gz", "good.json.gz", "malformed.json", "also_good.json")]
    read = list(read_mp_docs(paths))
    kinds = [(type(r).__name__, r.location) for r in read]
    assert kinds == [
        ("Refusal", str(tmp_path / "truncated.json.gz")),
        ("Bundle", f"{tmp_path / 'good.json.gz'}#mp-1005"),
        ("Refusal", str(tmp_path / "malformed.json")),
        ("Bundle", f"{tmp_path / 'also_good.json'}#mp-1005"),
        ("Refusal", f"{tmp_path / 'also_good.json'}#1"),
    ]
    assert "truncated.json.gz" in read[0].reason
    assert "malformed.json" in read[2].reason and read[2].raw_text.startswith('{"task_id"')


def test_mp_docs_refusals_for_unusable_documents(documents):
    served = {format_mp_id(d["task_id"]): d for d in documents.tasks}
    no_material = task_document_to_bundle(served["mp-1001"], "loc")  # the grouping step gives it a material
    assert no_material.material.external_id == "" and no_material.tasks[0].material_rule is None
    nscf = task_document_to_bundle(served["mp-1004"], "loc", material_id="mp-19770")
    assert isinstance(nscf, Refusal) and "ICHARG = 11" in nscf.reason
    assert nscf.raw_document["task_id"] == served["mp-1004"]["task_id"]
    slim = {k: v for k, v in served["mp-1001"].items() if k != "calcs_reversed"}  # CoreTaskDoc projection
    final = task_document_to_bundle(slim, "loc", material_id="mp-19770")
    (task,) = final.tasks  # the output frame, marked: no trajectory
    assert task.final_frame_only and len(task.frames) == 1 and task.fidelity == "GGA+U"
    assert task.frames[0].energy == slim["output"]["energy"]
    broken = json.loads(json.dumps(served["mp-1005"]))
    broken["calcs_reversed"][0]["output"]["ionic_steps"][0]["forces"] = "not numbers"
    refusal = task_document_to_bundle(broken, "loc", material_id="mp-149")
    assert isinstance(refusal, Refusal) and "malformed" in refusal.reason
    # the material id given by the caller wins over one stored in the document
    bundle = task_document_to_bundle({**served["mp-1005"], "material_id": "mp-1"}, "loc", material_id="mp-149")
    assert bundle.material.external_id == "mp-149"


def test_mp_docs_thermo_documents(documents, tmp_path):
    gga_u, r2scan, mixed, si = documents.thermo
    assert thermo_document_to_references(mixed) == []
    (ref,) = thermo_document_to_references(gga_u)
    assert (ref.fidelity, ref.energy_per_atom, ref.task_external_id) == ("GGA+U", -38.61 / 5, "mp-1001")
    # an entry whose U values are all zero is plain GGA
    zero_u = json.loads(json.dumps(gga_u))
    zero_u["entries"]["GGA+U"]["parameters"]["hubbards"] = {"Fe": 0.0, "O": 0.0}
    assert thermo_document_to_references(zero_u)[0].fidelity == "GGA"
    dumpfn([gga_u, mixed, r2scan], tmp_path / "thermo.json")
    read = list(read_mp_docs([tmp_path / "thermo.json"]))
    assert [type(r).__name__ for r in read] == ["Bundle", "Refusal", "Bundle"]
    assert "GGA_GGA+U_R2SCAN" in read[1].reason
    assert read[0].material.formula == "Fe2O3" and read[0].tasks == []
    assert [r.fidelity for r in read[2].references] == ["r2SCAN"]


def test_mp_docs_magmoms_of_final_structure(documents):
    """Without per-step moments, the last step of each calculation takes them from output.structure or OUTCAR."""
    doc = json.loads(json.dumps(next(d for d in documents.tasks if format_mp_id(d["task_id"]) == "mp-1001")))
    for calc in doc["calcs_reversed"]:
        for step in calc["output"]["ionic_steps"]:
            for site in step["structure"]["sites"]:
                site["properties"] = {}
    bundle = task_document_to_bundle(doc, "loc", material_id="mp-19770")
    frames = bundle.tasks[0].frames
    truth = expected_frames(documents.truth["mp-1001"], ["relax1", "relax2"])
    assert frames[0].magmoms is None
    assert np.array_equal(frames[1].magmoms, truth[1].magmoms)  # last step of relax1
    assert np.array_equal(frames[2].magmoms, truth[2].magmoms)  # last step of relax2
    relax2 = doc["calcs_reversed"][0]["output"]
    for site in relax2["structure"]["sites"]:
        site["properties"] = {}
    relax2["outcar"] = {"magnetization": [{"s": 0.0, "p": 0.0, "d": m, "tot": m} for m in (3.9, -3.9, 0.1, 0.1, 0.0)]}
    frames = task_document_to_bundle(doc, "loc", material_id="mp-19770").tasks[0].frames
    assert frames[2].magmoms.tolist() == [3.9, -3.9, 0.1, 0.1, 0.0]
