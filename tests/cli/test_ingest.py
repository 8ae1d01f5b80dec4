"""`crossfid ingest <source>` end to end: files → command → database, exit codes, idempotence."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from support.vasp_files import feo_run, write_vasprun

U_INCAR = {"LDAU": True, "LDAUTYPE": 2, "LDAUL": [2, -1], "LDAUU": [5.3, 0.0], "LDAUJ": [0.0, 0.0]}


def test_vasp_directories_round_trip_through_the_command(invoke, database_url, tmp_path):
    gga_u = feo_run(U_INCAR, n_steps=3, seed=1)
    write_vasprun(tmp_path / "calcs" / "feo-u", gga_u)
    write_vasprun(tmp_path / "calcs" / "feo-nscf", feo_run({"ICHARG": 11, "NSW": 0, "IBRION": -1}, n_steps=1))

    result = invoke("ingest", "vasp", str(tmp_path / "calcs"))
    assert result.exit_code == 3, result.output  # the NSCF run is quarantined
    assert "quarantined" in result.output and "non-self-consistent" in result.output

    with psycopg.connect(database_url) as conn:
        task = conn.execute("SELECT id, fidelity, run_type, hubbards FROM tasks").fetchall()
        assert len(task) == 1 and task[0][1:] == ("GGA+U", "PBE+U", {"Fe": 5.3})
        rows = conn.execute(
            "SELECT energy, forces, stress FROM frames WHERE task_id = %s ORDER BY ionic_step", (task[0][0],)
        ).fetchall()
        reason = conn.execute("SELECT reason FROM quarantine").fetchone()[0]
    assert "ICHARG = 11" in reason
    assert [r[0] for r in rows] == pytest.approx([s.e_fr_energy + 0.0125 for s in gga_u.steps], abs=1e-8)  # e_0_energy
    for (_, forces, stress), step in zip(rows, gga_u.steps, strict=True):
        assert np.array_equal(np.reshape(forces, (-1, 3)), np.array(step.forces))
        assert np.allclose(np.reshape(stress, (3, 3)), -0.1 * np.array(step.stress_kbar), rtol=0, atol=1e-12)

    again = invoke("ingest", "vasp", str(tmp_path / "calcs"))
    assert again.exit_code == 3  # the same NSCF input is still refused (not duplicated)
    with psycopg.connect(database_url) as conn:
        counts = conn.execute("SELECT (SELECT count(*) FROM frames), (SELECT count(*) FROM quarantine)").fetchone()
    assert counts == (3, 1)


def test_clean_input_exits_zero_and_missing_api_key_is_one_clear_error(invoke, tmp_path):
    write_vasprun(tmp_path / "ok", feo_run(n_steps=2))
    assert invoke("ingest", "vasp", str(tmp_path / "ok")).exit_code == 0
    result = invoke("ingest", "mp", "--material-ids", "mp-149")
    assert result.exit_code != 0 and "MP_API_KEY is not set" in str(result.exception)


def test_bad_records_in_an_mptrj_file_land_in_quarantine_and_the_good_ones_in_the_tables(
    invoke, database_url, tmp_path
):
    from support.source_files import bad_mptrj_frames, mptrj_frame, write_json

    document = {"mp-1": {"mp-1-0-0": mptrj_frame(["Si", "Si"], -10.0, e_relaxed=-5.25)}}
    for frame_id, frame in bad_mptrj_frames().items():
        mp_id = frame_id.rsplit("-", 2)[0]
        document[mp_id] = {frame_id: frame, f"{mp_id}-0-1": mptrj_frame(["Si", "Si"], -10.1, e_relaxed=-5.3)}
    document["mp-2"] = "not an object"
    path = write_json(tmp_path / "mixed.json.gz", document, gz=True)

    result = invoke("ingest", "mptrj", str(path), "--fidelity", "GGA")
    assert result.exit_code == 3, result.output
    with psycopg.connect(database_url) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM quarantine ORDER BY location")]
        frames = conn.execute("SELECT count(*) FROM frames").fetchone()[0]
        energy, stress = conn.execute(
            "SELECT f.energy, f.stress FROM frames f JOIN tasks t ON t.id = f.task_id "
            "WHERE t.external_id = 'mptrj:mp-1'"
        ).fetchone()
    assert len(reasons) == 8 and len(set(reasons)) == 8  # seven bad frames and one bad material, all distinct
    assert frames == 1 + 7  # the good frame of mp-1 and the good neighbour of every bad frame
    assert energy == -10.0
    assert np.allclose(np.reshape(stress, (3, 3)), [[-1.0, -0.1, 0.0], [-0.1, 2.0, 0.0], [0.0, 0.0, -0.5]])

    assert invoke("ingest", "mptrj", str(path), "--fidelity", "GGA").exit_code == 3
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*), (SELECT count(*) FROM quarantine) FROM frames").fetchone() == (8, 8)


def test_a_tree_without_any_vasp_calculation_is_an_error_naming_the_files_looked_for(tmp_path):
    """Through the real entry point: one line on stderr, exit status 1, nothing ingested (no database needed)."""
    import subprocess
    import sys

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "OUTCAR").write_text("not a vasprun\n")
    done = subprocess.run(
        [sys.executable, "-m", "crossfid.cli", "ingest", "vasp", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith("error:") and "no VASP calculation" in message
    for name in ("vasprun.xml", ".gz", ".bz2", ".xz", "vasprun.xml.relax1", "vaspout.h5"):
        assert name in message


def test_material_id_and_material_map_together_are_a_usage_error(invoke, tmp_path):
    write_vasprun(tmp_path / "calc", feo_run(n_steps=1))
    mapping = tmp_path / "map.json"
    mapping.write_text('{"x": "mp-1"}')
    result = invoke("ingest", "vasp", str(tmp_path / "calc"), "--material-id", "mp-1", "--material-map", str(mapping))
    assert result.exit_code == 2
    assert "not both" in " ".join(result.output.replace("│", " ").split())


def test_entries_without_material_ids_are_grouped_into_materials(invoke, database_url, tmp_path):
    pytest.importorskip("crossfid.ingest.entries", reason="crossfid.ingest.entries (helper src) is not there yet")
    from monty.serialization import dumpfn
    from pymatgen.core import Lattice, Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    diamond = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.468), ["Si"], [[0, 0, 0]])
    strained = diamond.copy()
    strained.apply_strain(0.01)
    bcc = Structure(Lattice.cubic(3.08), ["Si", "Si"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    parameters = {"run_type": "GGA", "is_hubbard": False}
    entries = [
        ComputedStructureEntry(diamond, -43.4, entry_id="mp-149-GGA", parameters=parameters),
        ComputedStructureEntry(
            strained.get_primitive_structure(), -10.8, entry_id="my-strained", parameters=parameters
        ),
        ComputedStructureEntry(bcc, -10.2, entry_id="my-bcc", parameters=parameters),
    ]
    dumpfn(entries, tmp_path / "entries.json.gz")
    result = invoke("ingest", "entries", str(tmp_path / "entries.json.gz"))
    assert result.exit_code in (0, 3), result.output  # two entries of one material and fidelity: one is kept
    with psycopg.connect(database_url) as conn:
        materials = dict(conn.execute("SELECT external_id, formula FROM materials").fetchall())
    # the strained diamond joins mp-149 (named by another entry of the input); bcc Si is a new material
    assert materials == {"mp-149": "Si", "grouped:my-bcc": "Si"}
