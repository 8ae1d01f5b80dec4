"""pymatgen ComputedEntry / ComputedStructureEntry JSON as reference entries (crossfid.ingest.entries)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
from monty.serialization import loadfn
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import (
    CompositionEnergyAdjustment,
    ComputedEntry,
    ComputedStructureEntry,
)

from crossfid.errors import InputError
from crossfid.ingest.entries import correction_scheme, read_entries
from crossfid.ingest.loader import ingest
from crossfid.ingest.records import Bundle, Refusal, validate_bundle

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "entries"
needs_real = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"the public records folder {REAL} is absent (a fresh clone has none)"
)
MP2020 = {"@module": "pymatgen.entries.compatibility", "@class": "MaterialsProject2020Compatibility"}


def split(records) -> tuple[list[Bundle], list[Refusal]]:
    out = list(records)
    return [r for r in out if isinstance(r, Bundle)], [r for r in out if isinstance(r, Refusal)]


def fe2o3(entry_id="mp-19770", run_type="GGA+U", is_hubbard=True, **kwargs) -> ComputedStructureEntry:
    structure = Structure(
        Lattice.hexagonal(5.03, 13.7),
        ["Fe", "Fe", "O", "O", "O"],
        [[0, 0, 0.35], [0, 0, 0.65], [0.3, 0, 0.25], [0, 0.3, 0.25], [0.7, 0.7, 0.25]],
    )
    adjustment = CompositionEnergyAdjustment(-0.687, 3, name="MP2020 anion correction (oxide)", cls=MP2020)
    return ComputedStructureEntry(
        structure,
        -38.123456789,
        energy_adjustments=[adjustment],
        parameters={"run_type": run_type, "is_hubbard": is_hubbard, "hubbards": {"Fe": 5.3} if is_hubbard else {}},
        data={"material_id": entry_id, "formation_energy_per_atom": -1.7},
        entry_id=f"{entry_id}-{run_type}" if entry_id else None,
        **kwargs,
    )


def write(path: Path, document) -> Path:
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    return path


# --------------------------------------------------------------------------- the public entry sets


@needs_real
@pytest.mark.parametrize(
    ("name", "fidelity", "n_entries"),
    [("Li-Fe-O_entries.json.gz", None, 375), ("LiCoO2_battery_entries.json.gz", "GGA/GGA+U", 22)],
)
def test_every_real_entry_is_read_as_pymatgen_reads_it(name, fidelity, n_entries):
    expected = loadfn(REAL / name)  # pymatgen's own parse of the file, independent of crossfid
    bundles, refusals = split(read_entries([REAL / name], fidelity=fidelity))
    assert refusals == [] and len(bundles) == len(expected) == n_entries
    for bundle, entry in zip(bundles, expected, strict=True):
        (reference,) = bundle.references
        assert bundle.tasks == []
        assert abs(reference.energy_per_atom - entry.uncorrected_energy_per_atom) <= 1e-6
        assert abs(reference.corrected_energy_per_atom - entry.energy_per_atom) <= 1e-6
        assert Structure.from_dict(reference.structure) == entry.structure
        assert reference.n_atoms == len(entry.structure)
        assert reference.entry_id == entry.entry_id
        assert reference.energy_quantity == "e_0_energy"  # MP entries: Vasprun.final_energy
        assert bundle.material.external_id == entry.data.get("material_id", entry.entry_id)
        assert bundle.material.formula == entry.composition.reduced_formula
        if "run_type" in entry.parameters:  # Li-Fe-O: MP's own run types
            assert reference.fidelity == entry.parameters["run_type"]
            assert reference.correction_scheme == ("MP2020" if entry.energy_adjustments else None)
        else:  # LiCoO2: no parameters; the Materials Project rule by composition, legacy corrections
            assert reference.fidelity == ("GGA+U" if {"Co", "O"} <= set(bundle.material.elements) else "GGA")
            assert reference.correction_scheme == ("unknown" if entry.correction else None)
        cleaned, problems = validate_bundle(bundle)
        assert problems == [] and cleaned is not None


@needs_real
def test_entries_without_a_functional_need_the_fidelity_argument():
    bundles, refusals = split(read_entries(REAL / "LiCoO2_battery_entries.json.gz"))
    assert bundles == [] and len(refusals) == 22
    assert all("names no functional (parameters.run_type)" in r.reason for r in refusals)
    assert refusals[0].location == "LiCoO2_battery_entries.json.gz#item 0"


@needs_real
def test_real_entries_are_stored_with_their_structures(engine, database_url):
    summary = ingest(engine, "entries", "entries", read_entries([REAL / "Li-Fe-O_entries.json.gz"]))
    assert (summary.references_added, summary.quarantined, summary.tasks_added) == (375, 0, 0)
    expected = {(e.data["material_id"], e.parameters["run_type"]): e for e in loadfn(REAL / "Li-Fe-O_entries.json.gz")}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT m.external_id, r.fidelity, r.energy_per_atom, r.corrected_energy_per_atom, r.structure,"
            " r.energy_quantity, r.correction_scheme FROM reference_entries r JOIN materials m ON m.id = r.material_id"
        ).fetchall()
    assert len(rows) == 375
    for material, fidelity, energy, corrected, structure, quantity, _ in rows:
        entry = expected[(material, fidelity)]
        assert abs(energy - entry.uncorrected_energy_per_atom) <= 1e-6
        assert abs(corrected - entry.energy_per_atom) <= 1e-6
        assert Structure.from_dict(structure) == entry.structure and quantity == "e_0_energy"
    again = ingest(engine, "entries", "entries", read_entries([REAL / "Li-Fe-O_entries.json.gz"]))
    assert (again.references_added, again.references_already_present) == (0, 375)


# --------------------------------------------------------------------------- layouts and rules


def test_a_computed_structure_entry_becomes_a_reference_entry(tmp_path):
    entry = fe2o3()
    bundles, refusals = split(read_entries(write(tmp_path / "e.json.gz", [entry.as_dict()])))
    assert refusals == []
    ((bundle,),) = [bundles]
    (reference,) = bundle.references
    assert bundle.material.external_id == "mp-19770" and bundle.material.formula == "Fe2O3"
    assert bundle.material.elements == ("Fe", "O") and bundle.location == "e.json.gz#item 0"
    assert reference.fidelity == "GGA+U" and reference.correction_scheme == "MP2020"
    assert reference.energy_per_atom == pytest.approx(-38.123456789 / 5, abs=1e-12)
    assert reference.corrected_energy_per_atom == pytest.approx((-38.123456789 - 0.687 * 3) / 5, abs=1e-12)
    assert reference.formation_energy_per_atom == -1.7 and reference.n_atoms == 5
    assert reference.entry_id == "mp-19770-GGA+U" and reference.task_external_id is None
    assert Structure.from_dict(reference.structure) == entry.structure
    assert json.loads(bundle.raw.content) == json.loads(json.dumps(entry.as_dict()))


def test_file_layouts(tmp_path):
    one = fe2o3().as_dict()
    for name, document in [
        ("list.json", [one]),
        ("object.json", {"entries": [one], "note": "a dumpfn'd dict"}),
        ("diagram.json", {"@class": "PhaseDiagram", "all_entries": [one], "elements": []}),
        ("single.json", one),
    ]:
        (tmp_path / name).write_text(json.dumps(document))
        bundles, refusals = split(read_entries([tmp_path / name]))
        assert refusals == [] and [b.material.external_id for b in bundles] == ["mp-19770"], name
    (tmp_path / "other.json").write_text(json.dumps({"materials": [1, 2]}))
    (tmp_path / "number.json").write_text("3.5")
    bundles, refusals = split(read_entries([tmp_path / "other.json", tmp_path / "number.json"]))
    assert bundles == []
    assert ["no entries list" in refusals[0].reason, "not an entries file" in refusals[1].reason] == [True, True]


def test_material_ids(tmp_path):
    documents = [
        fe2o3(entry_id="mp-aaaaaaft").as_dict(),  # AlphaID: stored in legacy form
        fe2o3(entry_id=None).as_dict(),  # no id at all: the grouping step names the material
        ComputedEntry("Fe2O3", -38.0, parameters={"run_type": "GGA+U"}, entry_id="mp-19770").as_dict(),
        ComputedEntry("Fe2O3", -38.0, parameters={"run_type": "GGA+U"}, entry_id="my-own-7").as_dict(),
    ]
    documents[1]["data"].pop("material_id")
    bundles, refusals = split(read_entries([write(tmp_path / "ids.json.gz", documents)]))
    assert [b.material.external_id for b in bundles] == ["mp-149", "", "mp-19770"]
    assert [b.references[0].energy_quantity for b in bundles] == ["e_0_energy", "unknown", "e_0_energy"]
    assert bundles[1].references[0].structure is not None  # where the grouping step finds the structure
    # a ComputedEntry has no structure: stored without one
    assert bundles[2].references[0].structure is None and bundles[2].references[0].n_atoms == 5
    (refusal,) = refusals
    assert refusal.location == "ids.json.gz#item 3"
    assert "neither an MP material id" in refusal.reason and "cannot be grouped" in refusal.reason


def test_bad_entries_are_refused_alone(tmp_path):
    good = fe2o3().as_dict()
    foreign = fe2o3().as_dict()
    foreign["data"]["payload"] = {"@module": "os", "@class": "system", "args": ["true"]}
    contradiction = fe2o3(run_type="GGA", is_hubbard=True).as_dict()
    disordered = fe2o3().as_dict()
    disordered["structure"]["sites"][0]["species"] = [{"element": "Fe", "occu": 0.5}]
    disordered["composition"] = {"Fe": 1.5, "O": 3.0}
    wrong_class = {**fe2o3().as_dict(), "@class": "GibbsComputedStructureEntry"}
    no_energy = {k: v for k, v in fe2o3().as_dict().items() if k != "energy"}
    nan_energy = {**fe2o3().as_dict(), "energy": float("nan")}
    documents = [good, foreign, contradiction, disordered, wrong_class, no_energy, nan_energy, "text", good]
    (tmp_path / "mixed.json").write_text(json.dumps(documents))  # Python writes a bare NaN token
    bundles, refusals = split(read_entries([tmp_path / "mixed.json"]))
    assert len(bundles) == 2
    reasons = {int(r.location.rsplit(" ", 1)[1]): r.reason for r in refusals}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert "@module 'os'" in reasons[1]
    assert "contradicts parameters.is_hubbard" in reasons[2]
    assert "disordered" in reasons[3]
    assert "GibbsComputedStructureEntry" in reasons[4]
    assert "no 'energy'" in reasons[5]
    assert "not finite" in reasons[6]
    assert "not an object" in reasons[7]


def test_fidelity_argument(tmp_path):
    bare = ComputedStructureEntry(fe2o3().structure, -38.0, entry_id="mp-19770").as_dict()
    path = tmp_path / "bare.json"
    path.write_text(json.dumps([bare]))
    assert [b.references[0].fidelity for b in split(read_entries([path], fidelity="r2scan"))[0]] == ["r2SCAN"]
    assert [b.references[0].fidelity for b in split(read_entries([path], fidelity="GGA/GGA+U"))[0]] == ["GGA+U"]
    with pytest.raises(InputError, match="unknown fidelity"):
        read_entries([path], fidelity="B97-XYZ")


def test_correction_scheme():
    plain = ComputedEntry("Fe2O3", -38.0)
    assert correction_scheme(plain) is None
    assert correction_scheme(ComputedEntry("Fe2O3", -38.0, correction=-2.0)) == "unknown"  # legacy correction
    assert correction_scheme(fe2o3()) == "MP2020"
    other = CompositionEnergyAdjustment(-0.1, 2, cls={"@class": "MyCompatibility"})
    mixed = ComputedEntry("Fe2O3", -38.0, energy_adjustments=[*fe2o3().energy_adjustments, other])
    assert correction_scheme(mixed) == "MP2020+MyCompatibility"
    assert np.isclose(mixed.correction, -0.687 * 3 - 0.2)
