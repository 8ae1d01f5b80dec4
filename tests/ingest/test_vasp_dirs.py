"""The VASP-directory source on vasprun.xml files written by ``tests/support/vasp_files.py``."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support.vasp_files import Run, Step, feo_run, outcar, vasprun_xml, write_vasprun

from crossfid.errors import InputError
from crossfid.ingest.records import Bundle, Refusal, validate_bundle
from crossfid.ingest.vasp_dirs import (
    find_calculations,
    read_vasp_dirs,
    sigma0_energy,
    vaspout_incar,
    vasprun_files,
)

U_INCAR = {"LDAU": True, "LDAUTYPE": 2, "LDAUL": [2, -1], "LDAUU": [5.3, 0.0], "LDAUJ": [0.0, 0.0], "LMAXMIX": 4}
R2SCAN_INCAR = {"METAGGA": "R2scan", "LASPH": True, "ALGO": "All", "ENCUT": 680.0}
HSE_INCAR = {"GGA": "PE", "LHFCALC": True, "HFSCREEN": 0.2, "ALGO": "All", "NSW": 0, "IBRION": -1}
# what VASP writes into <parameters> for those runs (LDAU* mangled, METAGGA absent: emmet issue #960)
HSE_PARAMETERS = {
    "GGA": "PE",
    "LHFCALC": True,
    "AEXX": 0.25,
    "AGGAX": 0.75,
    "AGGAC": 1.0,
    "ALDAC": 1.0,
    "HFSCREEN": 0.2,
    "NSW": 0,
    "IBRION": -1,
}


def records(*roots: Path, **kwargs) -> tuple[list[Bundle], list[Refusal]]:
    out = list(read_vasp_dirs(list(roots), **kwargs))
    return [r for r in out if isinstance(r, Bundle)], [r for r in out if isinstance(r, Refusal)]


def e0(step: Step) -> float:
    """The σ → 0 energy the generated file holds for ``step`` (tests/support/vasp_files.py's default)."""
    return step.e_fr_energy + 0.0125 if step.e_0_energy is None else step.e_0_energy


def only_bundle(*roots: Path, **kwargs) -> Bundle:
    bundles, refusals = records(*roots, **kwargs)
    assert refusals == []
    assert len(bundles) == 1
    return bundles[0]


def test_generated_file_is_read_by_pymatgen(tmp_path: Path) -> None:
    from pymatgen.io.vasp.outputs import Vasprun

    run = feo_run(U_INCAR)
    vasprun = Vasprun(write_vasprun(tmp_path, run), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    assert vasprun.atomic_symbols == ["Fe", "O"]
    assert vasprun.potcar_symbols == ["PAW_PBE Fe_pv 06Sep2000", "PAW_PBE O 08Apr2002"]
    assert vasprun.incar["LDAUU"] == [5.3, 0.0] and vasprun.parameters["LDAU"] is False  # mangled like VASP
    assert len(vasprun.ionic_steps) == 3 and vasprun.converged
    assert vasprun.vasp_version == "6.3.2"


def test_every_ionic_step_round_trips_exactly(tmp_path: Path) -> None:
    run = feo_run(n_steps=3, seed=3)
    run.steps[1].stress_kbar = [[10.0, 0.5, -1.25], [0.5, -20.0, 0.0], [-1.25, 0.0, 3.3]]  # +10 kBar = compressive
    path = write_vasprun(tmp_path / "FeO", run)
    bundle = only_bundle(tmp_path)
    (task,) = bundle.tasks
    assert [f.ionic_step for f in task.frames] == [0, 1, 2]
    for frame, step in zip(task.frames, run.steps, strict=True):
        assert frame.energy == e0(step)  # the energy extrapolated to σ → 0, bit for bit
        assert frame.energy != step.e_fr_energy
        np.testing.assert_array_equal(frame.forces, np.asarray(step.forces))
        np.testing.assert_array_equal(frame.stress, np.asarray(step.stress_kbar) * -0.1)
        np.testing.assert_array_equal(frame.lattice, np.asarray(step.lattice))
        np.testing.assert_array_equal(frame.frac_coords, np.asarray(step.frac_coords))
        np.testing.assert_array_equal(frame.atomic_numbers, [26, 8])
        assert frame.magmoms is None  # no OUTCAR
    assert task.frames[1].stress[0, 0] == -1.0  # GPa, tensile positive
    assert task.frames[1].stress[1, 1] == 2.0
    assert (task.fidelity, task.run_type, task.task_type, task.hubbards) == ("GGA", "PBE", "relax", None)
    assert task.code == "VASP" and task.code_version == "6.3.2"
    assert task.input_parameters == {**run.incar}  # the user's INCAR, JSON-safe
    assert task.energy_quantity == "e_0_energy" and not task.final_frame_only
    assert bundle.material.formula == "FeO" and bundle.material.elements == ("Fe", "O")
    # a VASP directory names no material: the grouping step gives it one
    assert bundle.material.external_id == "" and task.material_rule is None
    assert task.external_id.startswith("vasp:FeO#") and len(task.external_id.split("#")[1]) == 12
    assert bundle.raw.content == path.read_bytes() and bundle.raw.format == "vasprun.xml"
    assert bundle.raw.location == str(path)
    (reference,) = bundle.references
    assert reference.fidelity == "GGA" and reference.task_external_id == task.external_id
    assert reference.energy_per_atom == e0(run.steps[-1]) / 2 and reference.n_atoms == 2
    assert reference.energy_quantity == "e_0_energy"  # the same quantity as the frames
    cleaned, problems = validate_bundle(bundle)
    assert cleaned is None and ["material has no id" in p.reason for p in problems] == [True]
    named = only_bundle(tmp_path, material_id="mp-18905")
    cleaned, problems = validate_bundle(named)
    assert problems == [] and cleaned is not None
    assert named.material.external_id == "mp-18905" and named.tasks[0].material_rule == "source"


def test_vasp5_wrong_sigma0_energy_is_repaired_like_pymatgen_final_energy(tmp_path: Path) -> None:
    """VASP 5 writes a wrong e_0_energy per ionic step (0.0 in 5.2): the last electronic step's is used."""
    from pymatgen.io.vasp.outputs import Vasprun

    run = feo_run(n_steps=2, seed=4)
    text = re.sub(r'(?m)^   <i name="e_0_energy">.*$', '   <i name="e_0_energy">    0.00000000 </i>', vasprun_xml(run))
    path = tmp_path / "v5" / "vasprun.xml"
    path.parent.mkdir()
    path.write_text(text)
    task = only_bundle(tmp_path).tasks[0]
    pymatgen = Vasprun(path, parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    assert [s["e_0_energy"] for s in pymatgen.ionic_steps] == [0.0, 0.0]  # what the file says
    assert task.frames[-1].energy == pymatgen.final_energy  # pymatgen's repaired final energy, exactly
    for frame, step in zip(task.frames, run.steps, strict=True):
        assert frame.energy == pytest.approx(e0(step), abs=2e-8)


def test_sigma0_energy_of_one_step() -> None:
    electronic = [{"e_fr_energy": -9.0, "e_0_energy": -9.1}, {"e_fr_energy": -10.0, "e_0_energy": -10.025}]
    assert sigma0_energy({"e_fr_energy": -10.0, "e_0_energy": -10.025, "electronic_steps": electronic}) == -10.025
    assert sigma0_energy({"e_fr_energy": -10.0, "e_0_energy": 0.0, "electronic_steps": electronic}) == -10.025
    assert sigma0_energy({"e_fr_energy": -10.0, "e_0_energy": -10.02, "electronic_steps": []}) == -10.02
    assert sigma0_energy({"e_fr_energy": -10.0}) is None


def test_vaspout_logical_tags_become_booleans() -> None:
    incar = {
        "LHFCALC": 1,
        "LASPH": 0,
        "LORBIT": 11,
        "LMAXMIX": 1,
        "LREAL": 0,
        "ISPIN": 2,
        "NSW": 1,
        "METAGGA": "R2scan",
    }
    assert vaspout_incar(incar) == {
        "LHFCALC": True,
        "LASPH": False,
        "LORBIT": 11,
        "LMAXMIX": 1,  # an integer tag stays an integer
        "LREAL": False,
        "ISPIN": 2,
        "NSW": 1,
        "METAGGA": "R2scan",
    }


def test_electronic_steps_against_nelm(tmp_path: Path) -> None:
    write_vasprun(tmp_path / "a", feo_run(nelm=20, scsteps=[20, 19, 20]))
    bundle = only_bundle(tmp_path)
    frames = bundle.tasks[0].frames
    assert [f.n_electronic_steps for f in frames] == [20, 19, 20]
    assert [f.scf_converged for f in frames] == [False, True, False]
    assert bundle.references == []  # the final step did not converge electronically


@pytest.mark.parametrize(
    ("incar", "parameters", "fidelity", "run_type", "hubbards", "task_type"),
    [
        ({}, {}, "GGA", "PBE", None, "relax"),
        (U_INCAR, {}, "GGA+U", "PBE+U", {"Fe": 5.3}, "relax"),
        (R2SCAN_INCAR, {"LASPH": True}, "r2SCAN", "r2SCAN", None, "relax"),
        ({**R2SCAN_INCAR, **U_INCAR}, {"LASPH": True}, "r2SCAN+U", "r2SCAN+U", {"Fe": 5.3}, "relax"),
        (HSE_INCAR, HSE_PARAMETERS, "HSE06", "HSE06", None, "static"),
        ({"GGA": "PS"}, {"GGA": "PS"}, "PBEsol", "PBEsol", None, "relax"),
    ],
    ids=["GGA", "GGA+U", "r2SCAN", "r2SCAN+U", "HSE06", "PBEsol"],
)
def test_fidelity_from_incar_and_parameters(
    tmp_path: Path, incar, parameters, fidelity, run_type, hubbards, task_type
) -> None:
    n_steps = 1 if task_type == "static" else 3
    write_vasprun(tmp_path / "calc", feo_run(incar, parameters=parameters, n_steps=n_steps))
    bundle = only_bundle(tmp_path)
    (task,) = bundle.tasks
    assert (task.fidelity, task.run_type, task.hubbards, task.task_type) == (fidelity, run_type, hubbards, task_type)
    assert [r.fidelity for r in bundle.references] == ([fidelity] if task_type == "relax" else [])


def test_hse_without_explicit_gga_tag(tmp_path: Path) -> None:
    incar = {k: v for k, v in HSE_INCAR.items() if k != "GGA"}
    parameters = {**HSE_PARAMETERS, "GGA": "--"}
    write_vasprun(tmp_path / "hse", feo_run(incar, parameters=parameters, n_steps=1))
    assert only_bundle(tmp_path).tasks[0].fidelity == "HSE06"


def test_nscf_run_is_refused(tmp_path: Path) -> None:
    nscf = {"ICHARG": 11, "NSW": 0, "IBRION": -1, "LORBIT": 11}
    path = write_vasprun(tmp_path / "bands", feo_run(nscf, parameters={"ICHARG": 11, "NSW": 0}, n_steps=1))
    bundles, refusals = records(tmp_path)
    assert bundles == []
    (refusal,) = refusals
    assert refusal.location == str(path)
    assert "non-self-consistent" in refusal.reason and "ICHARG = 11" in refusal.reason


def test_md_run_is_refused(tmp_path: Path) -> None:
    write_vasprun(tmp_path / "md", feo_run({"IBRION": 0, "NSW": 3}, parameters={"IBRION": 0, "NSW": 3}))
    bundles, refusals = records(tmp_path)
    assert bundles == [] and "molecular-dynamics" in refusals[0].reason


def test_truncated_file_keeps_complete_steps_and_reports_the_rest(tmp_path: Path) -> None:
    run = feo_run(n_steps=3)
    text = vasprun_xml(run)
    cut = text.rfind("<calculation>") + 900  # inside the third ionic step
    path = tmp_path / "killed" / "vasprun.xml"
    path.parent.mkdir()
    path.write_text(text[:cut])
    bundles, refusals = records(tmp_path)
    (bundle,) = bundles
    (task,) = bundle.tasks
    assert [f.energy for f in task.frames] == [e0(s) for s in run.steps[:2]]
    (refusal,) = refusals
    assert refusal.location == f"{path} ionic step 2"
    assert "truncated" in refusal.reason and "dropped" in refusal.reason
    assert bundle.references == []  # the relaxation never finished
    assert bundle.raw.content == text[:cut].encode()


def test_truncated_between_steps_and_at_the_end(tmp_path: Path) -> None:
    run = feo_run(n_steps=3)
    text = vasprun_xml(run)
    end_of_second = text.rfind("</calculation>", 0, text.rfind("<calculation>")) + len("</calculation>")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "vasprun.xml").write_text(text[:end_of_second])  # third step never started
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "vasprun.xml").write_text(text[:-30])  # all steps, no final structure
    bundles, refusals = records(tmp_path)
    assert refusals == []
    assert [len(b.tasks[0].frames) for b in bundles] == [2, 3]
    assert [b.references for b in bundles] == [[], []]


def test_unparseable_files_are_one_refusal_each(tmp_path: Path) -> None:
    text = vasprun_xml(feo_run())
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "vasprun.xml").write_text(text[: text.find("<calculation>") + 200])
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "vasprun.xml").write_bytes(b"this is not XML at all\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "vasprun.xml.gz").write_bytes(gzip.compress(b""))
    bundles, refusals = records(tmp_path)
    assert bundles == []
    assert sorted(Path(r.location).parent.name for r in refusals) == ["early", "empty", "garbage"]
    early = next(r for r in refusals if "early" in r.location)
    assert "truncated before its first complete ionic step" in early.reason


def test_gzip_and_truncated_gzip(tmp_path: Path) -> None:
    run = feo_run()
    write_vasprun(tmp_path / "plain", run)
    write_vasprun(tmp_path / "gz", run, "vasprun.xml.gz")
    plain, gz = (only_bundle(tmp_path / name) for name in ("plain", "gz"))
    assert plain.raw.content == gz.raw.content == vasprun_xml(run).encode()
    # same content, same task (the id does not depend on compression), same frames
    assert plain.tasks[0].external_id.split("#")[1] == gz.tasks[0].external_id.split("#")[1]
    assert [f.content_hash() for f in plain.tasks[0].frames] == [f.content_hash() for f in gz.tasks[0].frames]

    for name, compress in [("vasprun.xml.bz2", bz2.compress), ("vasprun.xml.xz", lzma.compress)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / name).write_bytes(compress(vasprun_xml(run).encode()))
        assert only_bundle(tmp_path / name).tasks[0].external_id == f"vasp:{name}#{gz.tasks[0].external_id[-12:]}"

    compressed = gzip.compress(vasprun_xml(run).encode(), mtime=0)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "vasprun.xml.gz").write_bytes(compressed[: int(len(compressed) * 0.85)])
    bundles, refusals = records(tmp_path / "cut")
    (bundle,) = bundles
    assert 1 <= len(bundle.tasks[0].frames) < 3
    assert all("truncated" in r.reason for r in refusals) and len(refusals) == 1

    long_run = feo_run(n_steps=8)
    damaged = bytearray(gzip.compress(vasprun_xml(long_run).encode(), mtime=0))
    middle = len(damaged) * 2 // 3
    damaged[middle : middle + 50] = bytes(50)  # corrupt, not truncated
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "vasprun.xml.gz").write_bytes(bytes(damaged))
    bundles, refusals = records(tmp_path / "corrupt")
    (bundle,) = bundles
    kept = bundle.tasks[0].frames
    assert 1 <= len(kept) < 8 and [f.energy for f in kept] == [e0(s) for s in long_run.steps[: len(kept)]]
    assert len(refusals) == 1  # garbage after the damage may even repeat <calculation>: a range is reported
    assert re.search(rf"ionic steps? {len(kept)}(-\d+)?$", refusals[0].location)
    assert bundle.references == []


def test_relax1_relax2_are_one_task_in_suffix_order(tmp_path: Path) -> None:
    first, second = feo_run(seed=1), feo_run(seed=2, n_steps=2)
    directory = tmp_path / "double"
    write_vasprun(directory, second, "vasprun.xml.relax2.gz")  # written first: order must not follow mtime
    write_vasprun(directory, first, "vasprun.xml.relax1.gz")
    (directory / "OUTCAR.relax2.gz").write_bytes(
        gzip.compress(outcar([4.1, 0.2], second.steps[-1].e_fr_energy).encode())
    )
    (directory / "OUTCAR.relax1").write_text(outcar([9.0, 9.0], first.steps[-1].e_fr_energy))
    bundle = only_bundle(tmp_path)
    (task,) = bundle.tasks
    assert [f.ionic_step for f in task.frames] == [0, 1, 2, 3, 4]
    assert [f.energy for f in task.frames] == [e0(s) for s in first.steps + second.steps]
    np.testing.assert_array_equal(task.frames[-1].magmoms, [4.1, 0.2])  # relax2's OUTCAR, last frame only
    assert all(f.magmoms is None for f in task.frames[:-1])
    assert bundle.references[0].energy_per_atom == e0(second.steps[-1]) / 2
    assert bundle.raw.format == "vasprun.xml.tar"
    with tarfile.open(fileobj=io.BytesIO(bundle.raw.content)) as tar:
        assert tar.getnames() == ["vasprun.xml.relax1", "vasprun.xml.relax2"]
        assert tar.extractfile("vasprun.xml.relax1").read() == vasprun_xml(first).encode()
    again = only_bundle(tmp_path)
    assert again.raw.sha256 == bundle.raw.sha256 and again.material == bundle.material


def test_suffix_order_is_natural_and_bare_file_last(tmp_path: Path) -> None:
    for name in ["vasprun.xml", "vasprun.xml.relax10", "vasprun.xml.relax2.gz", "vasprun.xml.relax1", "OUTCAR"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "vasprun.xml.relax1.gz").write_bytes(b"duplicate of relax1, compressed")
    (tmp_path / "vasprun.xml.orig.bak").write_text("not a vasprun")
    names = [p.name for p in vasprun_files(tmp_path)]
    assert names == ["vasprun.xml.relax1", "vasprun.xml.relax2.gz", "vasprun.xml.relax10", "vasprun.xml"]


def test_different_functionals_in_one_directory_are_separate_tasks(tmp_path: Path) -> None:
    directory = tmp_path / "metagga_opt"
    write_vasprun(directory, feo_run({"GGA": "PS"}, parameters={"GGA": "PS"}, seed=1), "vasprun.xml.relax1")
    write_vasprun(directory, feo_run(R2SCAN_INCAR, parameters={"LASPH": True}, seed=2), "vasprun.xml.relax2")
    bundle = only_bundle(tmp_path)
    assert [t.fidelity for t in bundle.tasks] == ["PBEsol", "r2SCAN"]
    assert len({t.external_id for t in bundle.tasks}) == 2
    assert sorted(r.fidelity for r in bundle.references) == ["PBEsol", "r2SCAN"]
    assert all(len(t.frames) == 3 and t.frames[0].ionic_step == 0 for t in bundle.tasks)


def test_outcar_magmoms_only_when_they_belong_to_the_run(tmp_path: Path) -> None:
    run = feo_run()
    write_vasprun(tmp_path / "good", run)
    (tmp_path / "good" / "OUTCAR").write_text(outcar([4.25, -0.05], run.steps[-1].e_fr_energy))
    write_vasprun(tmp_path / "stale", run)
    (tmp_path / "stale" / "OUTCAR").write_text(outcar([4.25, -0.05], run.steps[-1].e_fr_energy - 0.5))
    write_vasprun(tmp_path / "unpolarised", feo_run({"ISPIN": 1}, parameters={"ISPIN": 1}))
    (tmp_path / "unpolarised" / "OUTCAR").write_text(outcar([4.25, -0.05], run.steps[-1].e_fr_energy))
    (tmp_path / "broken").mkdir()
    write_vasprun(tmp_path / "broken", run)
    (tmp_path / "broken" / "OUTCAR").write_text("not an OUTCAR\n")
    bundles, refusals = records(tmp_path)
    assert refusals == []
    by_dir = {Path(b.location).name: b.tasks[0].frames for b in bundles}
    np.testing.assert_array_equal(by_dir["good"][-1].magmoms, [4.25, -0.05])
    assert by_dir["good"][0].magmoms is None
    assert by_dir["stale"][-1].magmoms is None
    assert by_dir["unpolarised"][-1].magmoms is None
    assert by_dir["broken"][-1].magmoms is None


def test_rereading_gives_identical_ids_and_a_changed_file_a_new_task(tmp_path: Path) -> None:
    write_vasprun(tmp_path / "Si" / "relax", feo_run(seed=5))
    write_vasprun(tmp_path / "other", feo_run(seed=6), "vasprun.xml.gz")

    def ids() -> list[tuple[str, str, list[str]]]:
        bundles, _ = records(tmp_path)
        return [
            (b.material.external_id, t.external_id, [f.content_hash() for f in t.frames])
            for b in bundles
            for t in b.tasks
        ]

    first = ids()
    assert first == ids()
    assert [task_id.split("#")[0] for _, task_id, _ in first] == ["vasp:Si/relax", "vasp:other"]
    run = feo_run(seed=5)
    run.steps[-1].e_fr_energy -= 1e-6
    write_vasprun(tmp_path / "Si" / "relax", run)
    changed = ids()
    assert changed[0][1] != first[0][1]
    assert changed[1] == first[1]


def test_find_calculations_and_roots(tmp_path: Path) -> None:
    write_vasprun(tmp_path / "a" / "x", feo_run())
    write_vasprun(tmp_path / "a", feo_run(seed=2), "vasprun.xml.relax1.gz")
    write_vasprun(tmp_path / "b" / "deep" / "er", feo_run(seed=3))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "OUTCAR").write_text("no vasprun here")
    assert find_calculations([tmp_path]) == [tmp_path / "a", tmp_path / "a" / "x", tmp_path / "b" / "deep" / "er"]
    # overlapping roots: each directory once, relative to the first root that holds it
    assert find_calculations([tmp_path / "a", tmp_path]) == find_calculations([tmp_path])
    bundles, _ = records(tmp_path / "a", tmp_path)
    assert sorted(t.external_id.split("#")[0] for b in bundles for t in b.tasks) == [
        "vasp:a",
        "vasp:b/deep/er",
        "vasp:x",
    ]
    with pytest.raises(FileNotFoundError):
        find_calculations([tmp_path / "missing"])


def test_a_root_without_a_calculation_names_the_files_looked_for(tmp_path: Path) -> None:
    write_vasprun(tmp_path / "a", feo_run())
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "OUTCAR").write_text("no vasprun here")
    (tmp_path / "c" / "vasprun.xml.orig.bak").write_text("not a calculation file name")
    for roots in ([tmp_path / "c"], [tmp_path / "a", tmp_path / "c"]):
        with pytest.raises(InputError) as caught:
            find_calculations(roots)
        message = str(caught.value)
        assert str(tmp_path / "c") in message
        for name in ("vasprun.xml[.gz|.bz2|.xz]", "vasprun.xml.relax1", "vaspout.h5"):
            assert name in message
    with pytest.raises(InputError, match="vaspout.h5"):
        find_calculations([tmp_path / "c" / "OUTCAR"])
    with pytest.raises(InputError):
        list(read_vasp_dirs([tmp_path / "c"]))


def test_material_id_argument(tmp_path: Path) -> None:
    write_vasprun(tmp_path / "one", feo_run(seed=1))
    write_vasprun(tmp_path / "two", feo_run(seed=2))
    bundles, _ = records(tmp_path, material_id="mp-18905")
    assert [b.material.external_id for b in bundles] == ["mp-18905", "mp-18905"]
    assert [t.material_rule for b in bundles for t in b.tasks] == ["source", "source"]
    assert bundles[0].material.formula == "FeO"
    default, _ = records(tmp_path)
    assert [b.material.external_id for b in default] == ["", ""]  # the grouping step decides
    assert [t.material_rule for b in default for t in b.tasks] == [None, None]


def test_si_cell_with_one_species(tmp_path: Path) -> None:
    a = 5.43
    lattice = [[0.0, a / 2, a / 2], [a / 2, 0.0, a / 2], [a / 2, a / 2, 0.0]]
    frac = [[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]]
    step = Step(
        frac_coords=frac,
        e_fr_energy=-10.84237416,
        forces=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        stress_kbar=[[-3.2, 0.0, 0.0], [0.0, -3.2, 0.0], [0.0, 0.0, -3.2]],
    )
    incar = {"ISPIN": 1, "NSW": 0, "IBRION": -1, "ENCUT": 520.0}
    run = Run(lattice, ["Si", "Si"], frac, [step], incar=incar, parameters={"ISPIN": 1, "NSW": 0, "IBRION": -1})
    write_vasprun(tmp_path / "Si", run)
    bundle = only_bundle(tmp_path)
    (frame,) = bundle.tasks[0].frames
    assert bundle.tasks[0].task_type == "static" and bundle.references == []
    np.testing.assert_allclose(frame.stress, np.eye(3) * 0.32)
    assert bundle.material.formula == "Si"


def test_vasprun_is_read_before_vaspout_and_a_lone_bad_vaspout_is_refused(tmp_path: Path) -> None:
    run = feo_run()
    write_vasprun(tmp_path / "both", run)
    (tmp_path / "both" / "vaspout.h5").write_bytes(b"not read: the vasprun.xml of the same suffix wins")
    (tmp_path / "h5only").mkdir()
    (tmp_path / "h5only" / "vaspout.h5").write_bytes(b"this is not HDF5")
    (tmp_path / "h5gz").mkdir()
    (tmp_path / "h5gz" / "vaspout.h5.relax1.gz").write_bytes(gzip.compress(b"\x89HDF\r\n\x1a\n" + bytes(64))[:30])
    assert [p.name for p in vasprun_files(tmp_path / "both")] == ["vasprun.xml"]
    assert find_calculations([tmp_path]) == [tmp_path / "both", tmp_path / "h5gz", tmp_path / "h5only"]
    bundles, refusals = records(tmp_path)
    (bundle,) = bundles
    assert bundle.raw.format == "vasprun.xml" and [f.energy for f in bundle.tasks[0].frames] == [
        e0(s) for s in run.steps
    ]
    reasons = {Path(r.location).parent.name: r.reason for r in refusals}
    assert reasons == {
        "h5only": "not a vaspout.h5 (no HDF5 signature)",
        "h5gz": "vaspout.h5 is truncated or its compressed stream is damaged (HDF5 is read whole)",
    }


def test_the_command_exits_non_zero_for_a_directory_without_a_calculation(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "OUTCAR").write_text("an OUTCAR alone is not read")
    env = {"PATH": "/usr/bin:/bin", "CROSSFID_HOME": str(tmp_path / "home"), "COLUMNS": "400"}
    command = [sys.executable, "-m", "crossfid.cli", "ingest", "vasp", str(tmp_path / "empty")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"error: no VASP calculation in {tmp_path / 'empty'}")
    for name in ("vasprun.xml[.gz|.bz2|.xz]", "vasprun.xml.relax1", "vaspout.h5"):
        assert name in line
