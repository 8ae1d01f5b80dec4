"""Public VASP directories (chgnet's and emmet's test runs, in ../shared/data/real) frame for frame.

Every self-consistent directory is read by crossfid and, independently, by pymatgen
(``Vasprun``, ``Vaspout``, ``Outcar``) and h5py: the same number of frames, energies within
1e-6 eV (VASP's σ → 0 energy, as MP's entries), forces and stresses equal. The
non-self-consistent run is refused with its reason; a VASP 6 directory read from its
``vaspout.h5`` alone gives the same frames as from its ``vasprun.xml``.
"""

from __future__ import annotations

import gzip
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from crossfid.cli import app
from crossfid.ingest.records import KBAR_TO_GPA, Bundle, Refusal
from crossfid.ingest.vasp_dirs import read_vasp_dirs

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
VASP = REAL / "vasp_dirs"

pytestmark = pytest.mark.skipif(
    not VASP.is_dir(), reason=f"the public records folder {REAL} is absent (a fresh clone has none)"
)

#: directory → (fidelity, task type, frames): what each run is (the frames are pymatgen's count, checked below)
SELF_CONSISTENT = {
    "Si_old_double_relax": ("GGA", "relax", 4),  # relax1 (3 steps) then relax2 (1 step), VASP 5.2
    "chgnet_parse-vasp-no-magmoms": ("GGA", "relax", 49),  # VASP 5.4: wrong e_0_energy per ionic step in the file
    "chgnet_parse-vasp-with-magmoms": ("PBE-D3", "static", 1),
    "defect_run": ("HSE06", "static", 1),
    "lda_calc": ("LDA", "static", 1),
    "magnetic_run": ("RPBE", "static", 1),
    "raw_vasp_with_h5": ("r2SCAN", "relax", 3),
}


def read(directory: Path) -> tuple[list[Bundle], list[Refusal]]:
    out = list(read_vasp_dirs([directory]))
    return [r for r in out if isinstance(r, Bundle)], [r for r in out if isinstance(r, Refusal)]


def pymatgen_steps(directory: Path) -> list[dict]:
    """Every ionic step of the directory as pymatgen parses it, vasprun.xml files in suffix order (relax1, relax2,
    then the bare name), or the vaspout.h5 when there is no vasprun.xml, each with its σ → 0 energy and its stress."""
    from pymatgen.io.vasp.outputs import Vaspout, Vasprun

    files = sorted(directory.glob("vasprun.xml*"), key=lambda p: (p.name.startswith("vasprun.xml.gz"), p.name))
    steps: list[dict] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not files:
            (h5,) = directory.glob("vaspout.h5*")
            run = Vaspout(h5, parse_dos=False, parse_eigen=False)
            for step, stress in zip(run.ionic_steps, h5_stresses(h5), strict=True):
                steps.append({**step, "sigma0": step["e_0_energy"], "stress": stress})
            return steps
        for path in files:
            run = Vasprun(path, parse_dos=False, parse_eigen=False, parse_potcar_file=False)
            for step in run.ionic_steps:
                last = step["electronic_steps"][-1]  # the converged SCF: its σ → 0 correction
                steps.append({**step, "sigma0": step["e_fr_energy"] + last["e_0_energy"] - last["e_fr_energy"]})
            steps[-1]["final_energy"] = run.final_energy
    return steps


def h5_stresses(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(io.BytesIO(gzip.decompress(path.read_bytes())), "r") as h5:
        return np.asarray(h5["intermediate/ion_dynamics/stress"], dtype=float)


@pytest.mark.parametrize("name", sorted(SELF_CONSISTENT))
def test_every_frame_equals_an_independent_pymatgen_parse(name):
    fidelity, task_type, n_frames = SELF_CONSISTENT[name]
    (bundle,), refusals = read(VASP / name)
    assert refusals == []
    (task,) = bundle.tasks  # relax1 + relax2 of one relaxation are one task
    assert (task.fidelity, task.task_type, task.energy_quantity) == (fidelity, task_type, "e_0_energy")
    assert bundle.material.external_id == "" and task.material_rule is None  # named by the grouping step
    steps = pymatgen_steps(VASP / name)
    assert len(task.frames) == len(steps) == n_frames
    assert [f.ionic_step for f in task.frames] == list(range(n_frames))
    for frame, step in zip(task.frames, steps, strict=True):
        assert abs(frame.energy - step["sigma0"]) <= 1e-6
        np.testing.assert_array_equal(frame.forces, np.asarray(step["forces"], dtype=float))
        if step.get("stress") is None:  # the HSE defect supercell's vasprun.xml has no stress
            assert frame.stress is None
        else:
            np.testing.assert_array_equal(frame.stress, np.asarray(step["stress"], dtype=float) * KBAR_TO_GPA)
        np.testing.assert_array_equal(frame.lattice, step["structure"].lattice.matrix)
        np.testing.assert_array_equal(frame.frac_coords, step["structure"].frac_coords)
        assert frame.atomic_numbers.tolist() == [s.specie.Z for s in step["structure"]]
    # the last frame is pymatgen's final energy, the energy of Materials Project's entries
    assert abs(task.frames[-1].energy - steps[-1]["final_energy"]) <= 1e-6
    for reference in bundle.references:
        assert reference.energy_quantity == "e_0_energy"
        assert reference.energy_per_atom == task.frames[-1].energy / task.frames[-1].n_atoms


def test_the_double_relaxation_keeps_every_frame_of_both_runs():
    (bundle,), _ = read(VASP / "Si_old_double_relax")
    (task,) = bundle.tasks
    first = pymatgen_steps_of(VASP / "Si_old_double_relax" / "vasprun.xml.relax1.gz")
    second = pymatgen_steps_of(VASP / "Si_old_double_relax" / "vasprun.xml.relax2.gz")
    assert (len(first), len(second)) == (3, 1)
    np.testing.assert_array_equal(task.frames[2].lattice, first[-1]["structure"].lattice.matrix)
    np.testing.assert_array_equal(task.frames[3].lattice, second[0]["structure"].lattice.matrix)
    assert bundle.raw.format == "vasprun.xml.tar"
    (reference,) = bundle.references  # the converged second relaxation
    assert reference.task_external_id == task.external_id and reference.fidelity == "GGA"


def pymatgen_steps_of(path: Path) -> list[dict]:
    from pymatgen.io.vasp.outputs import Vasprun

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Vasprun(path, parse_dos=False, parse_eigen=False, parse_potcar_file=False).ionic_steps


def test_spin_polarised_moments_come_from_the_outcar():
    from pymatgen.io.vasp.outputs import Outcar

    (bundle,), _ = read(VASP / "magnetic_run")
    expected = [row["tot"] for row in Outcar(VASP / "magnetic_run" / "OUTCAR.gz").magnetization]
    np.testing.assert_array_equal(bundle.tasks[0].frames[-1].magmoms, expected)


def test_the_nscf_run_is_refused_with_its_reason():
    bundles, refusals = read(VASP / "Si_uniform")
    assert bundles == []
    (refusal,) = refusals
    assert refusal.location == str(VASP / "Si_uniform" / "vasprun.xml.gz")
    assert refusal.reason.startswith("non-self-consistent run (ICHARG = 11)")


def test_a_vasp6_directory_with_only_its_vaspout_h5_gives_the_same_frames(tmp_path):
    directory = tmp_path / "raw_vasp_with_h5"
    shutil.copytree(VASP / "raw_vasp_with_h5", directory)
    (directory / "vasprun.xml.gz").unlink()
    (from_xml,), _ = read(VASP / "raw_vasp_with_h5")
    (from_h5,), refusals = read(directory)
    assert refusals == [] and from_h5.raw.format == "vaspout.h5"
    xml_task, h5_task = from_xml.tasks[0], from_h5.tasks[0]
    assert (h5_task.fidelity, h5_task.run_type, h5_task.task_type) == (xml_task.fidelity, xml_task.run_type, "relax")
    assert h5_task.code_version == xml_task.code_version == "6.4.1"
    assert len(h5_task.frames) == len(xml_task.frames) == 3
    for a, b in zip(xml_task.frames, h5_task.frames, strict=True):
        assert abs(a.energy - b.energy) <= 1e-6  # vasprun.xml prints 8 decimals, the HDF5 file keeps doubles
        np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.stress, b.stress, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.lattice, b.lattice, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.frac_coords, b.frac_coords, rtol=0, atol=1e-6)
        assert b.magmoms is not None and b.scf_converged is None  # moments of every step; no electronic steps
    assert [r.energy_per_atom for r in from_h5.references] == pytest.approx(
        [r.energy_per_atom for r in from_xml.references], abs=1e-6
    )


def test_every_self_consistent_frame_of_the_real_vasp_runs_is_stored(database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["ingest", "vasp", str(VASP)])
    assert result.exit_code == 3, result.output  # the NSCF run is refused, with its reason
    with psycopg.connect(database_url) as conn:
        tasks, frames = conn.execute("SELECT count(*), (SELECT count(*) FROM frames) FROM tasks").fetchone()
        fidelities = sorted(f for (f,) in conn.execute("SELECT fidelity FROM tasks"))
        quantities = {q for (q,) in conn.execute("SELECT energy_quantity FROM tasks")}
        reasons = [r for (r,) in conn.execute("SELECT reason FROM quarantine")]
        strongest = conn.execute("SELECT max(max_force) FROM frames").fetchone()[0]
    assert (tasks, frames) == (len(SELF_CONSISTENT), sum(n for _, _, n in SELF_CONSISTENT.values())), reasons
    assert fidelities == sorted(f for f, _, _ in SELF_CONSISTENT.values()) and quantities == {"e_0_energy"}
    assert [r.split(":")[0] for r in reasons] == ["non-self-consistent run (ICHARG = 11)"]
    assert strongest > 1e4  # a badly started relaxation's first step is real output, stored as it is


def test_a_damaged_vaspout_h5_is_refused_whole(tmp_path):
    directory = tmp_path / "cut"
    directory.mkdir()
    whole = gzip.decompress((VASP / "raw_vasp_with_h5" / "vaspout.h5.gz").read_bytes())
    (directory / "vaspout.h5").write_bytes(whole[: len(whole) // 2])
    bundles, refusals = read(directory)
    assert bundles == []
    ((location, reason),) = [(r.location, r.reason) for r in refusals]
    assert location == str(directory / "vaspout.h5") and reason.startswith("unreadable vaspout.h5: ")
