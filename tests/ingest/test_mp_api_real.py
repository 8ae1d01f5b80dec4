"""``crossfid ingest mp`` against the real Materials Project API server (emmet-api), queried by the real client.

The server (tests/support/emmet_server.py) runs MP's own resources on 127.0.0.1 over an
in-memory MongoDB holding the public task documents of ``../shared/data/real/task_docs``
(task ids in AlphaID form, as MP's tasks collection has them) and the materials, thermo
and summary documents emmet-core's builders make of them. What crossfid stores is
checked against those served documents. MP's trajectory storage (public S3) is made
unreachable (``AWS_ENDPOINT_URL`` on a closed local port), as it is offline.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import psycopg
import pytest
from support import emmet_server
from typer.testing import CliRunner

from crossfid.cli import app
from crossfid.ingest.mp_api import read_materials_project
from crossfid.ingest.mp_docs import task_document_to_bundle
from crossfid.ingest.mp_ids import alpha_mp_id, legacy_mp_id
from crossfid.ingest.records import Bundle, Refusal

pytestmark = pytest.mark.skipif(
    not emmet_server.TASK_DOCS.is_dir(),
    reason=f"the public records folder {emmet_server.REAL} is absent (a fresh clone has none)",
)
for _module in ("emmet.api", "mongomock_ng", "uvicorn"):
    pytest.importorskip(_module, reason="the test extra is not installed (pip install -e '.[test]')")

KEY = emmet_server.API_KEY
SI = "mp-149"  # mp-aaaaaaft on the server
SI_TASKS = ["mp-149", "mp-1440634"]  # the relaxation and the static; the DFPT and NSCF tasks are not fetched
BASIS = "mp-1201400"  # BaSi(S2O7)3: one relaxation, no thermo document (Ba, S, O have no entries of their own)
NO_S3 = "http://127.0.0.1:9"  # where the client looks for MP's trajectory storage: a closed port


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> emmet_server.EmmetServer:
    return emmet_server.shared_server(request.config, tmp_path_factory.mktemp("emmet-api"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("AWS_ENDPOINT_URL", NO_S3)


def client(server):
    from mp_api.client import MPRester

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MPRester(KEY, endpoint=server.url, use_document_model=False, mute_progress_bars=True)


def served_final_frame(doc):
    """(lattice, Z, frac, energy eV, forces eV/Å, stress GPa) of a served task document's output, via pymatgen."""
    from pymatgen.core import Structure

    out = doc["output"]
    structure = Structure.from_dict(out["structure"])
    return (
        structure.lattice.matrix,
        [site.specie.Z for site in structure],
        structure.frac_coords,
        out["energy"],
        np.asarray(out["forces"], dtype=float),
        -0.1 * np.asarray(out["stress"], dtype=float),
    )


def test_the_server_speaks_alpha_ids_and_serves_core_task_fields(server):
    with client(server) as mpr:
        (material,) = mpr.materials.search(material_ids=[SI], fields=["material_id", "task_ids", "calc_types"])
        tasks = mpr.materials.tasks.search(task_ids=SI_TASKS, chunk_size=1)
        assert mpr.db_version == emmet_server.DB_VERSION
    assert material["material_id"] == "mp-aaaaaaft" == alpha_mp_id(SI)
    assert {legacy_mp_id(t) for t in material["task_ids"]} == {"mp-149", "mp-1440634", "mp-1141021", "mp-1686587"}
    assert sorted(t["task_id"] for t in tasks) == ["aaaaaaft", "aaaddzda"]  # bare AlphaIDs, paged one by one
    assert sorted(legacy_mp_id(t["task_id"], bare=True) for t in tasks) == sorted(SI_TASKS)
    assert all(
        "calcs_reversed" not in t and {"structure", "energy", "forces", "stress"} <= set(t["output"]) for t in tasks
    )


def test_ingest_mp_stores_tasks_frames_materials_and_reference_entries(server, database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    monkeypatch.setenv("MP_API_KEY", KEY)
    args = ["ingest", "mp", "--material-ids", f"{SI},{BASIS}", "--endpoint", server.url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    notices = [line for line in result.output.splitlines() if "get_trajectory" in line]
    assert len(notices) == 1 and "final frame" in notices[0], result.output  # offline: one line, once

    with psycopg.connect(database_url) as conn:
        materials = dict(conn.execute("SELECT external_id, formula FROM materials").fetchall())
        tasks = conn.execute(
            "SELECT t.id, t.external_id, m.external_id, t.fidelity, t.task_type, t.final_frame_only, t.material_rule "
            "FROM tasks t JOIN materials m ON m.id = t.material_id ORDER BY t.external_id"
        ).fetchall()
        frames = {
            task_id: conn.execute(
                "SELECT lattice, atomic_numbers, frac_coords, energy, forces, stress FROM frames WHERE task_id = %s "
                "ORDER BY ionic_step",
                (task_id,),
            ).fetchall()
            for task_id, *_ in tasks
        }
        references = conn.execute(
            "SELECT m.external_id, r.fidelity, r.energy_per_atom, r.corrected_energy_per_atom, r.n_atoms "
            "FROM reference_entries r JOIN materials m ON m.id = r.material_id"
        ).fetchall()
    assert materials == {SI: "Si", BASIS: "BaSi(S2O7)3"}
    assert [t[1:] for t in tasks] == [
        ("mp-1201400", BASIS, "GGA", "relax", True, "mp-materials"),
        ("mp-1440634", SI, "GGA", "static", True, "mp-materials"),
        ("mp-149", SI, "GGA", "relax", True, "mp-materials"),
    ]
    for task_id, external_id, *_ in tasks:
        (row,) = frames[task_id]  # final frame only: the API serves no ionic steps, S3 is unreachable
        lattice, numbers, frac, energy, forces, stress = served_final_frame(server.data.task(external_id))
        assert np.allclose(np.reshape(row[0], (3, 3)), lattice, rtol=0, atol=1e-9)
        assert row[1] == numbers
        assert np.allclose(np.reshape(row[2], (-1, 3)), frac, rtol=0, atol=1e-9)
        assert abs(row[3] - energy) <= 1e-6
        assert np.allclose(np.reshape(row[4], (-1, 3)), forces, rtol=0, atol=1e-9)
        assert np.allclose(np.reshape(row[5], (3, 3)), stress, rtol=0, atol=1e-9)

    (thermo,) = server.data.thermo
    (entry,) = thermo["entries"].values()
    n_atoms = round(sum(entry["composition"].values()))
    assert len(references) == 1
    material, fidelity, energy_per_atom, corrected_per_atom, n = references[0]
    assert (material, fidelity, n) == (SI, "GGA", n_atoms)
    assert abs(energy_per_atom - entry["energy"] / n_atoms) <= 1e-6  # pymatgen's entry dict: uncorrected
    assert abs(corrected_per_atom - thermo["energy_per_atom"]) <= 1e-6

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    with psycopg.connect(database_url) as conn:
        counts = conn.execute("SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM frames)").fetchone()
    assert counts == (3, 3)  # idempotent


def test_trajectory_from_get_trajectory_replaces_the_final_frame(server):
    """When MP's trajectory table answers, the task gets its ionic steps (here: emmet's trajectory of the real run)."""
    from emmet.core.vasp.calculation import Calculation, get_trajectories_from_calculations

    source = server.data.source_documents[BASIS]
    calcs = [Calculation(**emmet_server._unwrap(c)) for c in source["calcs_reversed"][::-1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trajectory = get_trajectories_from_calculations(calcs, separate=False)[-1].model_dump()
    asked = []

    def fetch(task_id, run_type):
        asked.append((task_id, run_type))
        if task_id != BASIS:
            raise RuntimeError(f"No trajectory data for {task_id} found")
        return trajectory

    records = list(read_materials_project(material_ids=[BASIS], api_key=KEY, endpoint=server.url, trajectories=fetch))
    (bundle,) = [r for r in records if isinstance(r, Bundle)]
    (task,) = bundle.tasks
    # the same run read from its whole document (calcs_reversed, every ionic step)
    (expected,) = task_document_to_bundle(source, "file", material_id=BASIS).tasks
    assert asked == [(BASIS, "GGA")]
    assert not task.final_frame_only and len(task.frames) == len(expected.frames) == 20
    assert task.energy_quantity == expected.energy_quantity == "e_0_energy"
    for frame, step in zip(task.frames, expected.frames, strict=True):
        assert abs(frame.energy - step.energy) <= 1e-6
        assert np.allclose(frame.lattice, step.lattice, rtol=0, atol=1e-9)
        assert np.allclose(frame.frac_coords, step.frac_coords, rtol=0, atol=1e-9)
        assert np.allclose(frame.forces, step.forces, rtol=0, atol=1e-9)
        assert np.allclose(frame.stress, step.stress, rtol=0, atol=1e-9)
        assert frame.n_electronic_steps == step.n_electronic_steps
    assert task.material_rule == "mp-materials" and bundle.material.external_id == BASIS


def test_offline_trajectories_give_one_notice_and_final_frames(server):
    notices: list[str] = []
    messages: list[str] = []
    records = list(
        read_materials_project(
            chemsys="Si",
            api_key=KEY,
            endpoint=server.url,
            notice=notices.append,
            progress=lambda done, total, message: messages.append(message),
        )
    )
    bundles = [r for r in records if isinstance(r, Bundle)]
    assert not [r for r in records if isinstance(r, Refusal)]
    assert sorted(t.external_id for b in bundles for t in b.tasks) == sorted(SI_TASKS)
    assert all(t.final_frame_only and len(t.frames) == 1 for b in bundles for t in b.tasks)
    assert len(notices) == 1 and "\n" not in notices[0] and "S3" in notices[0]
    assert messages == [
        f"{SI}: 2 of 4 tasks selected, 2 read (0 with their trajectory, 2 final frame only), "
        "0 refused, 1 reference entries"
    ]


def test_formula_selection_and_the_key_stays_out_of_records(server):
    records = list(read_materials_project(formula="BaSi(S2O7)3", api_key=KEY, endpoint=server.url, trajectories=False))
    assert [r.location for r in records] == [f"mp-api:{BASIS}"]  # no thermo document for this chemical system
    (bundle,) = records
    assert bundle.material.formula == "BaSi(S2O7)3" and bundle.tasks[0].external_id == BASIS
    assert KEY not in repr(bundle) and KEY.encode() not in bundle.raw.content
    assert json.loads(bundle.raw.content)["task_id"] == "aaacqjfs"  # the document as served
