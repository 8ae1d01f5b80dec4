"""File sources: MPtrj JSON, MatPES JSON / JSON lines, extxyz / ASE trajectories.

Real files are written in tmp_path in each format and read back; labels must round
trip exactly in crossfid's units (eV, eV/Å, GPa tensile positive, μB), and every bad
input must end up refused — by the source or by ``validate_bundle`` — with a reason
of its own, while good records in the same file still come through.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from pymatgen.core import Structure
from support.source_files import (
    bad_matpes_docs,
    bad_mptrj_frames,
    collect,
    good_mptrj,
    matpes_doc,
    mptrj_frame,
    refusal_at,
    write_json,
    write_matpes,
)

from crossfid.ingest.ase_traj import EV_PER_A3_TO_GPA, read_ase_trajectory
from crossfid.ingest.matpes import read_matpes
from crossfid.ingest.mptrj import MP_GGA_AUTO, read_mptrj
from crossfid.ingest.records import Bundle, Refusal

# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- MPtrj


@pytest.mark.parametrize("gz", [False, True], ids=["json", "json.gz"])
def test_mptrj_round_trip(tmp_path: Path, gz: bool) -> None:
    document = good_mptrj()
    path = write_json(tmp_path / ("mptrj.json.gz" if gz else "mptrj.json"), document, gz=gz)
    good, refused, raw = collect(read_mptrj(path, "GGA"))
    assert refused == []
    assert [b.material.external_id for b in good] == ["mp-149", "mp-22862"]
    si = good[0]
    assert si.material.formula == "Si" and si.material.elements == ("Si",)
    assert si.location == f"{path.name}#mp-149"
    [task] = si.tasks
    assert task.external_id == "mptrj:mp-149"
    assert (task.fidelity, task.run_type, task.task_type, task.hubbards) == ("GGA", "PBE", "relax", None)
    order = ["mp-149-1-0", "mp-149-1-1", "mp-149-0-0", "mp-149-0-1"]
    assert [f.ionic_step for f in task.frames] == [0, 1, 2, 3]
    for frame, frame_id in zip(task.frames, order, strict=True):
        source = document["mp-149"][frame_id]
        assert frame.energy == source["uncorrected_total_energy"]
        assert frame.corrected_energy == source["corrected_total_energy"]
        np.testing.assert_array_equal(frame.forces, source["force"])
        np.testing.assert_array_equal(frame.magmoms, source["magmom"])
        # VASP kBar, compressive positive → GPa, tensile positive: +10 kBar → −1 GPa
        np.testing.assert_allclose(frame.stress, [[-1.0, -0.1, 0.0], [-0.1, 2.0, 0.0], [0.0, 0.0, -0.5]], rtol=1e-15)
        expected = Structure.from_dict(source["structure"])
        np.testing.assert_array_equal(frame.lattice, expected.lattice.matrix)
        np.testing.assert_array_equal(frame.frac_coords, expected.frac_coords)
        assert frame.atomic_numbers.tolist() == [14, 14]
        assert frame.to_structure() == expected
    [reference] = si.references
    assert reference.fidelity == "GGA"
    assert reference.corrected_energy_per_atom == pytest.approx(-5.65)
    assert reference.energy_per_atom == pytest.approx(-5.4)  # uncorrected: correction −0.5 eV / 2 atoms removed
    assert reference.formation_energy_per_atom == -0.25
    assert reference.task_external_id == "mptrj:mp-149"
    assert reference.correction_scheme == "MP2020"
    # unparseable frame ids: one task per material in file order; magmom null stays None
    nacl = good[1]
    [task] = nacl.tasks
    assert task.external_id == "mptrj:mp-22862"
    assert [f.energy for f in task.frames] == [-6.0, -6.5]
    assert all(f.magmoms is None for f in task.frames)
    assert nacl.references[0].energy_per_atom == pytest.approx(-3.0)
    assert nacl.references[0].task_external_id == "mptrj:mp-22862"  # frame "weird-id" is the reference frame
    # the raw document is the original record
    assert json.loads(raw[0].raw.content) == json.loads(json.dumps({"mp-149": document["mp-149"]}))
    assert raw[0].raw.location == si.location


def test_mptrj_gga_auto_and_run_type(tmp_path: Path) -> None:
    document = {
        "mp-19770": {"mp-1-0-0": mptrj_frame(["Fe", "Fe", "O"], -20.0, e_relaxed=-7.0)},
        "mp-149": {"mp-2-0-0": mptrj_frame(["Si", "Si"], -10.0, e_relaxed=-5.25)},
    }
    path = write_json(tmp_path / "mixed.json", document)
    good, refused, _ = collect(read_mptrj(path, MP_GGA_AUTO))
    assert refused == []
    feo, si = good
    assert (feo.tasks[0].fidelity, feo.tasks[0].run_type, feo.tasks[0].hubbards) == ("GGA+U", "PBE+U", {"Fe": 5.3})
    assert feo.references[0].fidelity == "GGA+U"
    assert (si.tasks[0].fidelity, si.tasks[0].run_type, si.tasks[0].hubbards) == ("GGA", "PBE", None)
    good, _, _ = collect(read_mptrj(path, "r2SCAN"))
    assert {t.fidelity for b in good for t in b.tasks} == {"r2SCAN"}
    assert good[0].references[0].correction_scheme is None
    with pytest.raises(ValueError, match="unknown fidelity"):
        read_mptrj(path, "HFCus")


def test_mptrj_bad_records_are_refused_and_good_ones_kept(tmp_path: Path) -> None:
    document = {"mp-1": {"mp-1-0-0": mptrj_frame(["Si", "Si"], -10.0, e_relaxed=-5.25)}}
    for frame_id, frame in bad_mptrj_frames().items():
        mp_id = frame_id.rsplit("-", 2)[0]
        # each bad frame sits next to a good frame of the same material
        document[mp_id] = {frame_id: frame, f"{mp_id}-0-1": mptrj_frame(["Si", "Si"], -10.1, e_relaxed=-5.3)}
    document["mp-2"] = "not an object"
    document["mp-3"] = {}
    document["mp-4"] = {"mp-4-0-0": mptrj_frame(["Si", "Si"], -10.0), "mp-4-0-1": mptrj_frame(["Na", "Cl"], -6.0)}
    document["mp-999"] = {"mp-999-0-0": mptrj_frame(["Na", "Cl"], -6.0, e_relaxed=-3.25)}
    path = write_json(tmp_path / "bad.json", document)
    assert "NaN" in path.read_text() and "Infinity" in path.read_text()

    good, refused, _ = collect(read_mptrj(path, "GGA"))
    name = path.name
    reasons = {
        "nan energy": refusal_at(refused, f"{name}#mp-901 task mptrj:mp-901 ionic step 0").reason,
        "no force": refusal_at(refused, f"{name}#mp-902/mp-902-0-0").reason,
        "bad shape": refusal_at(refused, "mp-903 task mptrj:mp-903 ionic step 0").reason,
        "Xx": refusal_at(refused, f"{name}#mp-904/mp-904-0-0").reason,
        "zero volume": refusal_at(refused, "mp-905 task mptrj:mp-905 ionic step 0").reason,
        "empty": refusal_at(refused, f"{name}#mp-906/mp-906-0-0").reason,
        "inf stress": refusal_at(refused, "mp-907 task mptrj:mp-907 ionic step 0").reason,
        "not an object": refusal_at(refused, f"{name}#mp-2").reason,
        "no frames": refusal_at(refused, f"{name}#mp-3").reason,
        "composition": refusal_at(refused, f"{name}#mp-4/mp-4-0-1").reason,
    }
    assert reasons["nan energy"] == "energy is not finite (nan)"
    assert reasons["no force"] == "frame has no 'force'"
    assert reasons["bad shape"] == "forces has shape (2, 2), expected (2, 3)"
    assert reasons["Xx"] == "unknown element symbol 'Xx' at site 1"
    assert "zero-volume cell" in reasons["zero volume"]
    assert "empty structure" in reasons["empty"]
    assert reasons["inf stress"] == "stress contains non-finite values"
    assert "composition NaCl differs" in reasons["composition"]
    assert len(set(reasons.values())) == len(reasons), reasons
    assert len(refused) == len(reasons)
    # every good frame, including the good neighbours of bad frames, is kept
    kept = {b.material.external_id: sum(len(t.frames) for t in b.tasks) for b in good}
    assert kept == {"mp-1": 1, **{f"mp-90{i}": 1 for i in range(1, 8)}, "mp-4": 1, "mp-999": 1}


def test_mptrj_streams_and_refuses_a_corrupt_tail(tmp_path: Path) -> None:
    document = {f"mp-{i}": {f"mp-{i}-0-0": mptrj_frame(["Si", "Si"], -10.0 - i)} for i in range(1, 4)}
    text = json.dumps(document)
    path = tmp_path / "tail.json"
    path.write_text(text[:-1] + ', "mp-4": {"mp-4-0-0": {"structure": [1, 2,, }' + "x" * 100_000)
    records = read_mptrj(path, "GGA")
    first = next(records)  # yielded before the parser has seen the corrupt tail
    assert isinstance(first, Bundle) and first.material.external_id == "mp-1"
    rest = list(records)
    assert [r.material.external_id for r in rest if isinstance(r, Bundle)] == ["mp-2", "mp-3"]
    last = rest[-1]
    assert isinstance(last, Refusal)
    assert last.location == f"{path.name}#after mp-3"
    assert last.reason.startswith("malformed JSON") and "3 item(s) were read" in last.reason


def test_mptrj_truncated_gzip(tmp_path: Path) -> None:
    # enough data that the truncation falls well after the first materials
    rng = np.random.default_rng(0)
    document = {
        f"mp-{i}": {f"mp-{i}-0-{j}": mptrj_frame(["Si", "Si"], float(rng.normal(-10.0, 0.1))) for j in range(20)}
        for i in range(60)
    }
    blob = gzip.compress(json.dumps(document).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(blob[: int(len(blob) * 0.7)])
    records = list(read_mptrj(path, "GGA"))
    bundles = [r for r in records if isinstance(r, Bundle)]
    assert 5 < len(bundles) < 60
    assert [b.material.external_id for b in bundles] == [f"mp-{i}" for i in range(len(bundles))]
    assert isinstance(records[-1], Refusal)
    assert records[-1].reason.startswith("file is truncated: the compressed stream")
    assert sum(isinstance(r, Refusal) for r in records) == 1
    # a plain JSON file cut in the middle is told apart
    plain = tmp_path / "cut.json"
    plain.write_text(json.dumps(document)[:5000])
    last = list(read_mptrj(plain, "GGA"))[-1]
    assert last.reason.startswith("file is truncated: the JSON ends in the middle of a record"), last.reason
    plain.write_text(json.dumps(document)[:5000] + "}")  # ends like a whole file, but the material never closes
    last = list(read_mptrj(plain, "GGA"))[-1]
    assert last.reason.startswith(("file is truncated", "malformed JSON")) and "truncated" in last.reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "file not found"),
        (b"", "file is empty"),
        (b"  [1, 2]", "not an MPtrj file: top level is a JSON array"),
        (b"hello", "not an MPtrj file: top level is not JSON"),
        (b"\x1f\x8bnot really gzip", "corrupt gzip data"),
    ],
)
def test_mptrj_unreadable_file_is_one_refusal(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "f.json"
    if content is not None:
        path.write_bytes(content)
    [refusal] = list(read_mptrj(path, "GGA"))
    assert refusal.location == "f.json" and refusal.reason.startswith(reason), refusal.reason


# --------------------------------------------------------------------------- MatPES


@pytest.mark.parametrize("lines", [False, True], ids=["array", "jsonl"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_matpes_round_trip(tmp_path: Path, lines: bool, gz: bool) -> None:
    documents = [matpes_doc(0), matpes_doc(1, functional="r2SCAN"), matpes_doc(2, functional="PBE+U", magmoms=None)]
    del documents[1]["provenance"]
    path = write_matpes(tmp_path / ("m.jsonl" if lines else "m.json"), documents, lines=lines, gz=gz)
    good, refused, raw = collect(read_matpes(path))
    assert refused == []
    assert [b.material.external_id for b in good] == ["mp-999484", "matpes:matpes-20240214_999484_1", "mp-999484"]
    assert [(b.tasks[0].fidelity, b.tasks[0].run_type) for b in good] == [
        ("GGA", "PBE"),
        ("r2SCAN", "r2SCAN"),
        ("GGA+U", "PBE+U"),
    ]
    for bundle, doc in zip(good, documents, strict=True):
        [task] = bundle.tasks
        assert task.external_id == f"matpes:{doc['matpes_id']}" and task.task_type == "static"
        assert task.source_run_type == doc["functional"]
        assert bundle.location == f"{path.name}#{doc['matpes_id']}"
        assert bundle.references == []
        [frame] = task.frames
        assert frame.ionic_step == 0
        assert frame.energy == doc["energy"]
        np.testing.assert_array_equal(frame.forces, doc["forces"])
        # kBar VASP sign → GPa tensile positive, Voigt (xx, yy, zz, yz, xz, xy)
        np.testing.assert_allclose(
            frame.stress, [[-1.0, -0.4, -0.3], [-0.4, 0.5, -0.2], [-0.3, -0.2, -1.36]], rtol=1e-14, atol=1e-15
        )
        if doc["magmoms"] is None:
            assert frame.magmoms is None
        else:
            np.testing.assert_array_equal(frame.magmoms, doc["magmoms"])
        assert frame.to_structure() == Structure.from_dict(doc["structure"])
        assert bundle.material.formula == "YTi"
    assert json.loads(raw[0].raw.content) == json.loads(json.dumps(documents[0]))


def test_matpes_stress_in_gpa(tmp_path: Path) -> None:
    path = write_matpes(tmp_path / "m.json", [matpes_doc(0)], lines=False, gz=False)
    [bundle] = list(read_matpes(path, stress_unit="gpa_ase"))
    np.testing.assert_array_equal(np.diag(bundle.tasks[0].frames[0].stress), [10.0, -5.0, 13.6])
    with pytest.raises(ValueError, match="stress_unit"):
        read_matpes(path, stress_unit="bar")


@pytest.mark.parametrize("lines", [False, True], ids=["array", "jsonl"])
def test_matpes_bad_documents(tmp_path: Path, lines: bool) -> None:
    documents = [matpes_doc(0), *bad_matpes_docs(), [1, 2, 3], matpes_doc(1)]
    raw_lines = {3: '{"matpes_id": "broken", "energy": -1.0,,}', 5: "not json at all"} if lines else None
    path = write_matpes(tmp_path / "bad.jsonl", documents, lines=lines, gz=False, raw_lines=raw_lines)
    good, refused, _ = collect(read_matpes(path))
    assert [b.tasks[0].external_id for b in good] == [
        "matpes:matpes-20240214_999484_0",
        "matpes:matpes-20240214_999484_1",
    ]
    # a single-frame task whose frame is refused by validate_bundle is also refused as a task
    follow_ups = [r for r in refused if r.reason == "task has no valid frame"]
    assert {r.location.split("#")[1].split(" ")[0] for r in follow_ups} == {
        f"matpes-20240214_999484_{i}" for i in (11, 13, 15)
    }
    refused = [r for r in refused if r.reason != "task has no valid frame"]
    name = path.name

    def reason(i: int) -> str:
        return refusal_at(refused, f"matpes-20240214_999484_{i}").reason

    reasons = {
        "nan energy": reason(11),
        "no forces": reason(12),
        "forces shape": reason(13),
        "Xx": reason(14),
        "zero volume": reason(15),
        "empty": reason(16),
        "unknown functional": reason(17),
        "no functional": reason(18),
        "ragged forces": reason(19),
    }
    assert reasons["nan energy"] == "energy is not finite (nan)"
    assert reasons["no forces"] == "document has no 'forces'"
    assert reasons["forces shape"] == "forces has shape (1, 3), expected (2, 3)"
    assert reasons["Xx"] == "unknown element symbol 'Xx' at site 0"
    assert reasons["unknown functional"] == (
        "unknown functional 'B3LYP-ish' (expected PBE, PBE+U, r2SCAN or another fidelity name)"
    )
    assert reasons["ragged forces"] == "forces is not a numeric array"
    if lines:
        not_object = refusal_at(refused, f"{name}:line 13")
        reasons["broken line"] = refusal_at(refused, f"{name}:line 4").reason
        reasons["garbage line"] = refusal_at(refused, f"{name}:line 6").reason
        assert reasons["broken line"].startswith("malformed JSON on line 4: Expecting property name")
        assert refusal_at(refused, f"{name}:line 4").raw_text.startswith('{"matpes_id": "broken"')
    else:
        not_object = refusal_at(refused, f"{name}#item 10")
    reasons["not an object"] = not_object.reason
    assert not_object.raw_document == [1, 2, 3]
    assert len(set(reasons.values())) == len(reasons), reasons
    assert len(refused) == len(reasons)


def test_matpes_truncated_and_garbage_files(tmp_path: Path) -> None:
    documents = [matpes_doc(i) for i in range(300)]
    for lines in (False, True):
        blob = gzip.compress(
            json.dumps(documents).encode() if not lines else b"".join(json.dumps(d).encode() + b"\n" for d in documents)
        )
        path = tmp_path / f"cut-{lines}.json.gz"
        path.write_bytes(blob[: len(blob) // 2])
        records = list(read_matpes(path))
        assert sum(isinstance(r, Bundle) for r in records) > 10
        assert isinstance(records[-1], Refusal) and "truncated" in records[-1].reason
        assert sum(isinstance(r, Refusal) for r in records) == 1
    path = tmp_path / "x.json"
    path.write_text("<html>")
    [refusal] = list(read_matpes(path))
    assert refusal.reason.startswith("not a MatPES file")


# --------------------------------------------------------------------------- extxyz / ASE


def atoms_frame(symbols: str, scale: float, energy: float, *, stress=None, info=None, magmoms=True) -> Atoms:
    n = len(Atoms(symbols))
    atoms = Atoms(
        symbols,
        cell=[[4.0 * scale, 0.0, 0.0], [0.2, 4.1 * scale, 0.0], [0.1, 0.3, 3.9 * scale]],
        scaled_positions=[[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.25, 0.75, 0.5], [0.1, 0.2, 0.3]][:n],
        pbc=True,
    )
    results = {
        "energy": energy,
        "forces": np.arange(3 * n, dtype=float).reshape(n, 3) * 0.125 - 0.5,
        "stress": np.array(stress if stress is not None else [0.01, -0.02, 0.005, 0.001, 0.002, 0.003]),
    }
    if magmoms:
        results["magmoms"] = np.arange(n, dtype=float) + 0.5
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(info or {})
    return atoms


def test_extxyz_round_trip(tmp_path: Path) -> None:
    import ase.io

    frames = [atoms_frame("FeO", 1.0 + 0.01 * i, -10.0 - i, info={"fidelity": "GGA+U"}) for i in range(3)]
    frames.insert(1, atoms_frame("NaClNaCl", 1.3, -20.0, info={"functional": "r2SCAN"}))
    path = tmp_path / "traj.extxyz"
    ase.io.write(path, frames, format="extxyz")
    good, refused, raw = collect(read_ase_trajectory(path))
    assert refused == []
    feo, nacl = good
    assert feo.material.formula == "FeO" and nacl.material.formula == "NaCl"
    assert feo.material.external_id.startswith("file:") and len(feo.material.external_id) == 17
    assert feo.material.external_id != nacl.material.external_id
    again = [b.material.external_id for b in read_ase_trajectory(path)]
    assert again == [feo.material.external_id, nacl.material.external_id]  # deterministic ids
    [task] = feo.tasks
    assert (task.fidelity, task.run_type, task.task_type) == ("GGA+U", "PBE+U", "relax")
    assert task.external_id.startswith("ase:")
    assert [f.ionic_step for f in task.frames] == [0, 1, 2]
    assert (nacl.tasks[0].fidelity, nacl.tasks[0].task_type, nacl.tasks[0].source_run_type) == (
        "r2SCAN",
        "static",
        "r2SCAN",
    )
    for frame, atoms in zip(task.frames, [frames[0], frames[2], frames[3]], strict=True):
        assert frame.energy == atoms.get_potential_energy()
        np.testing.assert_array_equal(frame.forces, atoms.get_forces())
        np.testing.assert_array_equal(frame.magmoms, atoms.calc.results["magmoms"])
        np.testing.assert_allclose(frame.lattice, atoms.cell[:], rtol=0, atol=1e-12)
        np.testing.assert_allclose(frame.frac_coords, atoms.get_scaled_positions(wrap=False), atol=1e-12)
        assert frame.atomic_numbers.tolist() == [26, 8]
        # ASE eV/Å³, tensile positive → GPa, same sign: 0.01 eV/Å³ = 1.6021766208 GPa
        assert frame.stress[0, 0] == pytest.approx(1.6021766208, rel=1e-12)
        assert frame.stress[1, 1] == pytest.approx(-0.02 * EV_PER_A3_TO_GPA, rel=1e-12)
        assert frame.stress[1, 2] == frame.stress[2, 1] == pytest.approx(0.001 * EV_PER_A3_TO_GPA, rel=1e-12)
        assert frame.stress[0, 1] == pytest.approx(0.003 * EV_PER_A3_TO_GPA, rel=1e-12)
    # the raw document is the exact bytes of the bundle's frames
    assert raw[0].raw.format == "extxyz"
    reread = ase.io.read(__import__("io").StringIO(raw[0].raw.content.decode()), index=":", format="extxyz")
    assert [a.get_potential_energy() for a in reread] == [-10.0, -11.0, -12.0]
    # gzip-compressed extxyz (detected by the magic bytes) gives the same records
    gz = tmp_path / "traj.extxyz.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    zipped, refused, _ = collect(read_ase_trajectory(gz))
    assert refused == []
    assert [b.material.external_id for b in zipped] == [feo.material.external_id, nacl.material.external_id]
    assert [f.content_hash() for f in zipped[0].tasks[0].frames] == [f.content_hash() for f in task.frames]


def test_ase_trajectory_arguments_and_other_formats(tmp_path: Path) -> None:
    import ase.io

    frames = [atoms_frame("SiC", 1.0, -15.0 - i, magmoms=False) for i in range(2)]
    path = tmp_path / "relax.traj"  # ASE's binary trajectory format, read with iread
    ase.io.write(path, frames)
    [bundle] = list(read_ase_trajectory(path, fidelity="PBEsol", material_id="mp-8062", task_id="my-relax"))
    assert bundle.material.external_id == "mp-8062"
    [task] = bundle.tasks
    assert (task.external_id, task.fidelity, task.run_type) == ("my-relax", "PBEsol", "PBEsol")
    assert [f.energy for f in task.frames] == [-15.0, -16.0]
    assert task.frames[0].magmoms is None
    assert bundle.raw.format == "json"
    # stress conventions
    [kbar] = list(read_ase_trajectory(path, fidelity="GGA", stress_convention="vasp_kbar"))
    assert kbar.tasks[0].frames[0].stress[0, 0] == pytest.approx(-0.001)
    with pytest.raises(ValueError, match="unknown fidelity"):
        read_ase_trajectory(path, fidelity="PBE")
    with pytest.raises(ValueError, match="stress_convention"):
        read_ase_trajectory(path, stress_convention="kbar")
    # an unreadable file is one refusal
    junk = tmp_path / "junk.traj"
    junk.write_bytes(b"\x00\x01 not a trajectory")
    [refusal] = list(read_ase_trajectory(junk, fidelity="GGA"))
    assert refusal.location == "junk.traj" and refusal.reason.startswith("cannot read the file as an ASE trajectory")
    [missing] = list(read_ase_trajectory(tmp_path / "missing.xyz", fidelity="GGA"))
    assert missing.reason.startswith("file not found")


def test_extxyz_bad_frames(tmp_path: Path) -> None:
    import ase.io

    good = atoms_frame("FeO", 1.0, -10.0, info={"fidelity": "GGA"})
    nan_energy = atoms_frame("FeO", 1.01, float("nan"), info={"fidelity": "GGA"})
    no_fidelity = atoms_frame("FeO", 1.02, -10.2)
    bad_fidelity = atoms_frame("FeO", 1.02, -10.2, info={"fidelity": "LDA-ish"})
    no_forces = Atoms("FeO", cell=np.eye(3) * 4, scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], pbc=True)
    no_forces.info.update({"fidelity": "GGA", "energy": -9.0})
    flat = atoms_frame("FeO", 1.0, -10.3, info={"fidelity": "GGA"})
    flat.set_cell([[4.0, 0, 0], [4.0, 0, 0], [0, 0, 4.0]], scale_atoms=False)
    inf_stress = atoms_frame("FeO", 1.03, -10.4, info={"fidelity": "GGA"}, stress=[np.inf, 0, 0, 0, 0, 0])
    wrong_material = atoms_frame("NaCl", 1.0, -5.0, info={"fidelity": "GGA", "material_id": "mp-19770"})
    right_material = atoms_frame("FeO", 1.0, -10.5, info={"fidelity": "GGA", "material_id": "mp-19770"})
    frames = [good, nan_energy, no_fidelity, bad_fidelity, no_forces, flat, inf_stress, right_material, wrong_material]
    path = tmp_path / "bad.xyz"
    ase.io.write(path, frames, format="extxyz")
    text = path.read_text()
    # unknown element symbol in frame 9, then a good frame, then a truncated frame
    ase.io.write(tmp_path / "one.xyz", atoms_frame("FeO", 1.04, -10.6, info={"fidelity": "GGA"}), format="extxyz")
    one = (tmp_path / "one.xyz").read_text()
    xx = one.replace("\nFe ", "\nXx ", 1)
    truncated = "\n".join(one.splitlines()[:3]) + "\n"
    path.write_text(text + xx + one + truncated)

    good_bundles, refused, _ = collect(read_ase_trajectory(path))
    name = path.name
    reasons = {
        "nan energy": refusal_at(refused, "ionic step 1").reason,
        "no fidelity": refusal_at(refused, f"{name}:frame 2").reason,
        "bad fidelity": refusal_at(refused, f"{name}:frame 3").reason,
        "no forces": refusal_at(refused, f"{name}:frame 4").reason,
        "zero volume": refusal_at(refused, f"{name}:frame 5").reason,
        "inf stress": refusal_at(refused, "ionic step 2").reason,
        "composition": refusal_at(refused, f"{name}:frame 8").reason,
        "Xx": refusal_at(refused, f"{name}:frame 9").reason,
        "truncated": refusal_at(refused, f"{name}:frame 11").reason,
    }
    assert reasons["nan energy"] == "energy is not finite (nan)"
    assert reasons["no fidelity"] == "no fidelity: pass --fidelity or set info['fidelity']"
    assert reasons["no forces"].startswith("frame has no forces")
    assert "zero-volume cell" in reasons["zero volume"]
    assert reasons["composition"].startswith("composition NaCl differs from material mp-19770's FeO")
    assert reasons["Xx"] == "unknown element symbol 'Xx'"
    assert reasons["truncated"] == "frame 11 is truncated: the file ends after 1 of 2 atom lines"
    assert len(set(reasons.values())) == len(reasons), reasons
    assert len(refused) == len(reasons)
    assert refusal_at(refused, f"{name}:frame 9").raw_text.splitlines()[2].startswith("Xx")
    kept = sorted((b.material.external_id, [f.energy for t in b.tasks for f in t.frames]) for b in good_bundles)
    derived = [k for k in kept if k[0].startswith("file:")]
    assert kept == sorted([*derived, ("mp-19770", [-10.5])])
    assert derived[0][1] == [-10.0, -10.6]  # the good frames around the bad ones (NaN, inf stress refused)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4099])
@pytest.mark.parametrize("indent", [None, 0, 3])
def test_non_finite_tokens_survive_any_chunking(tmp_path: Path, monkeypatch, chunk: int, indent: int | None) -> None:
    """Bare NaN/Infinity tokens are parsed wherever the read boundaries fall; strings are untouched."""
    from crossfid.ingest import sourceio as mptrj

    monkeypatch.setattr(mptrj, "_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    specials = [float("nan"), float("inf"), -float("inf")]
    document = {}
    for i in range(40):
        values = [float(v) for v in rng.normal(size=5)]
        for k in rng.choice(5, size=2, replace=False):
            values[int(k)] = specials[int(rng.integers(3))]
        document[f"k{i}"] = {"v": values, "x": values[0], "label": "NaN, x: Infinity", "n": [[values[1]]]}
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(document, indent=indent))
    items = list(mptrj.iter_json_stream(path, "object"))
    assert not any(isinstance(item, Refusal) for item in items), items[-1]
    assert [key for key, _ in items] == list(document)
    for key, value in items:
        expected = document[key]
        assert value["label"] == "NaN, x: Infinity"
        got = np.asarray(value["v"], dtype=float)  # quoted tokens come back as "NaN"/"Infinity" strings
        np.testing.assert_array_equal(got, expected["v"])
        assert np.asarray(value["x"], dtype=float) == expected["x"] or np.isnan(expected["x"])
        np.testing.assert_array_equal(np.asarray(value["n"], dtype=float), expected["n"])


def test_non_finite_token_inside_a_string_is_kept(tmp_path: Path) -> None:
    """Records are parsed by ``json.loads`` itself: NaN tokens are floats, and text that looks like one stays text."""
    from crossfid.ingest import sourceio

    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"a": {"x": float("nan")}, "b": {"label": "odd [NaN] text", "y": ": NaN,"}}))
    items = list(sourceio.iter_json_stream(path, "object"))
    assert items[0][0] == "a" and np.isnan(items[0][1]["x"])
    assert items[1] == ("b", {"label": "odd [NaN] text", "y": ": NaN,"})
