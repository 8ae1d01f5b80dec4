"""Materials for records that name none: MP's grouping with emmet, stored materials, the material map.

Structures are real pymatgen structures (Si diamond, strained; other polymorphs; rock salts);
grouping runs emmet-core's own ``group_structures``. The database tests ingest synthetic MP task
documents through the real ``crossfid ingest mp-docs`` command.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import psycopg
import pytest
from pymatgen.core import Lattice, Structure

from crossfid.errors import InputError
from crossfid.ingest import grouping
from crossfid.ingest.grouping import (
    NEW_MATERIAL_PREFIX,
    MaterialMap,
    assign_materials,
    group_bundles,
    parse_material_map,
    read_material_map,
    task_key,
)
from crossfid.ingest.material_store import stored_final_structures
from crossfid.ingest.mp_docs import document_task_id, format_mp_id
from crossfid.ingest.mp_ids import mp_id_sort_key
from crossfid.ingest.records import Bundle, Frame, Material, ReferenceEntry, Refusal, Task

A_SI = 5.468


# --------------------------------------------------------------------------- structures and records


def diamond_si(strain: float = 0.0) -> Structure:
    """Conventional diamond Si (Fd-3m, 8 atoms), the lattice stretched by ``strain`` along a."""
    structure = Structure.from_spacegroup("Fd-3m", Lattice.cubic(A_SI), ["Si"], [[0, 0, 0]])
    matrix = structure.lattice.matrix.copy()
    matrix[0] *= 1 + strain
    return Structure(Lattice(matrix), structure.species, structure.frac_coords)


def primitive_si() -> Structure:
    """Diamond Si in its 2-atom primitive cell (the same material as :func:`diamond_si`)."""
    return diamond_si().get_primitive_structure()


def bcc_si() -> Structure:
    """A different Si polymorph (bcc, Im-3m)."""
    return Structure(Lattice.cubic(3.08), ["Si", "Si"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def hexagonal_si() -> Structure:
    """Lonsdaleite-type Si (P6_3/mmc): another polymorph."""
    a, c = 3.84, 6.27
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(a, c), ["Si"], [[1 / 3, 2 / 3, 0.0625]])


def rocksalt(cation: str, anion: str, a: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def bundle(task_id: str, structures: list[Structure], *, material_id: str = "", rule: str | None = None) -> Bundle:
    """A bundle of one relaxation through ``structures`` (the last is its final structure)."""
    frames = [
        Frame.from_structure(s, ionic_step=i, energy=-5.4 * len(s) - 0.01 * i, forces=np.zeros((len(s), 3)))
        for i, s in enumerate(structures)
    ]
    task = Task(
        external_id=task_id,
        fidelity="GGA",
        run_type="PBE",
        task_type="relax",
        frames=frames,
        material_rule=rule,
        energy_quantity="e_0_energy",
    )
    material = Material.from_atomic_numbers(material_id, frames[0].atomic_numbers)
    return Bundle(material=material, location=f"test#{task_id}", tasks=[task])


def assigned(records) -> dict[str, tuple[str, str | None]]:
    """Task id → (material id, rule) of every bundle; refusals as (reason, None) under their location."""
    result: dict[str, tuple[str, str | None]] = {}
    for record in records:
        if isinstance(record, Refusal):
            result[record.location] = (record.reason, None)
            continue
        for task in record.tasks:
            result[task.external_id] = (record.material.external_id, task.material_rule)
    return result


# --------------------------------------------------------------------------- MP's grouping


def test_a_slightly_strained_structure_is_the_same_material_and_a_polymorph_is_another():
    records = [
        bundle("mp-20", [diamond_si(0.02), diamond_si(0.01)]),
        bundle("mp-7", [diamond_si(0.0)]),
        bundle("mp-31", [bcc_si()]),
        bundle("mp-44", [diamond_si(0.03), hexagonal_si()]),  # only the final structure counts
    ]
    got = assigned(assign_materials(records))
    new = "structure-match-new"
    assert got == {
        "mp-20": (f"{NEW_MATERIAL_PREFIX}mp-7", new),  # named after the lowest task id of the group
        "mp-7": (f"{NEW_MATERIAL_PREFIX}mp-7", new),
        "mp-31": (f"{NEW_MATERIAL_PREFIX}mp-31", new),
        "mp-44": (f"{NEW_MATERIAL_PREFIX}mp-44", new),
    }


def test_a_primitive_cell_and_a_conventional_cell_are_one_material():
    got = assigned(assign_materials([bundle("mp-2", [diamond_si()]), bundle("mp-10", [primitive_si()])]))
    assert got["mp-2"][0] == got["mp-10"][0] == f"{NEW_MATERIAL_PREFIX}mp-2"


def test_ids_follow_mp_order_not_text_order():
    """mp-9 < mp-10 as MP orders ids (by number), although "mp-10" < "mp-9" as text; AlphaID forms agree."""
    got = assigned(assign_materials([bundle("mp-10", [diamond_si()]), bundle("mp-9", [diamond_si(0.01)])]))
    assert got["mp-10"][0] == f"{NEW_MATERIAL_PREFIX}mp-9"
    assert mp_id_sort_key("mp-9") < mp_id_sort_key("mp-10") < mp_id_sort_key("mp-aaaaaaft")  # mp-149


def test_grouping_does_not_depend_on_the_order_of_the_input():
    structures = {
        "mp-5": [diamond_si(0.015)],
        "mp-3": [diamond_si(-0.01)],
        "mp-12": [bcc_si()],
        "mp-8": [hexagonal_si()],
        "mp-1": [diamond_si(0.0)],
        "mp-4": [rocksalt("Na", "Cl", 5.64)],
    }
    answers = set()
    for order in itertools.permutations(structures):
        got = assigned(assign_materials([bundle(t, structures[t]) for t in order]))
        answers.add(tuple(sorted(got.items())))
    assert len(answers) == 1
    (answer,) = answers
    assert dict(answer)["mp-5"] == (f"{NEW_MATERIAL_PREFIX}mp-1", "structure-match-new")


def test_grouping_is_per_formula_and_never_compares_different_formulas(monkeypatch):
    """NaCl and KCl share a prototype and a space group; they are never handed to emmet together."""
    calls: list[set[str]] = []
    real = grouping.group_final_structures

    def recording(structures):
        calls.append({s.composition.reduced_formula for s in structures})
        return real(structures)

    monkeypatch.setattr(grouping, "group_final_structures", recording)
    records = [
        bundle("mp-1", [rocksalt("Na", "Cl", 5.64)]),
        bundle("mp-2", [rocksalt("K", "Cl", 6.29)]),
        bundle("mp-3", [rocksalt("Na", "Cl", 5.66)]),
        bundle("mp-4", [diamond_si()]),
    ]
    got = assigned(assign_materials(records))
    assert got["mp-3"][0] == got["mp-1"][0] == f"{NEW_MATERIAL_PREFIX}mp-1"
    assert got["mp-2"][0] == f"{NEW_MATERIAL_PREFIX}mp-2"
    assert calls and all(len(formulas) == 1 for formulas in calls)


def test_records_that_name_their_material_stream_through_and_keep_it():
    """Refusals and named bundles are yielded before the input ends; only "" bundles wait for it."""
    consumed: list[str] = []

    def records():
        for item in [
            Refusal("file#1", "broken"),
            bundle("mp-1", [diamond_si()], material_id="mp-149"),
            bundle("mp-2", [diamond_si(0.01)], material_id="mp-149", rule="mp-materials"),
            bundle("mp-3", [diamond_si(0.02)]),
        ]:
            consumed.append(getattr(item, "location", ""))
            yield item

    stream = assign_materials(records())
    first = next(stream)
    assert isinstance(first, Refusal) and consumed == ["file#1"]
    second = next(stream)
    assert second.tasks[0].material_rule == "source" and len(consumed) == 2
    third = next(stream)
    assert third.tasks[0].material_rule == "mp-materials"  # a rule the source set is kept
    (last,) = list(stream)
    # the "" bundle matches a material named by the same input
    assert (last.material.external_id, last.tasks[0].material_rule) == ("mp-149", "structure-match-stored")


def test_a_stored_material_is_adopted_and_the_lowest_matching_id_wins():
    stored = {"Si": [("mp-900", diamond_si(0.005)), ("mp-149", diamond_si(0.0)), ("mp-34", bcc_si())]}
    got = assigned(
        assign_materials([bundle("mp-5", [diamond_si(0.01)]), bundle("mp-6", [hexagonal_si()])], stored=stored)
    )
    assert got["mp-5"] == ("mp-149", "structure-match-stored")
    assert got["mp-6"] == (f"{NEW_MATERIAL_PREFIX}mp-6", "structure-match-new")


def test_the_identical_structure_of_a_stored_task_adopts_its_material():
    """Ingesting a record again gives it the material it got the first time, even if a lower id also matches."""
    again = bundle("mp-5", [diamond_si(0.01)])
    final = again.tasks[0].frames[-1].to_structure()
    stored = {"Si": [("mp-1", diamond_si(0.0)), (f"{NEW_MATERIAL_PREFIX}mp-5", final)]}
    assert assigned(assign_materials([again], stored=stored))["mp-5"] == (
        f"{NEW_MATERIAL_PREFIX}mp-5",
        "structure-match-stored",
    )


def test_the_stored_lookup_is_called_once_with_the_formulas_to_group():
    asked: list[list[str]] = []

    def lookup(formulas):
        asked.append(list(formulas))
        return {}

    records = [bundle("mp-1", [diamond_si()]), bundle("mp-2", [rocksalt("Na", "Cl", 5.64)])]
    list(assign_materials(records, stored=lookup))
    assert asked == [["NaCl", "Si"]]
    asked.clear()
    list(assign_materials([bundle("mp-3", [diamond_si()], material_id="mp-149")], stored=lookup))
    assert asked == []  # nothing to group: no query


def test_the_material_map_wins_over_structure_matching():
    stored = {"Si": [("mp-149", diamond_si())]}
    mapping = parse_material_map("task_id,material_id\naaaaaaaf,mp-777\n")  # AlphaID of task mp-5
    records = [bundle("mp-5", [diamond_si(0.01)]), bundle("mp-6", [diamond_si(0.01)])]
    got = assigned(assign_materials(records, material_map=mapping, stored=stored))
    assert got == {"mp-5": ("mp-777", "material-map"), "mp-6": ("mp-149", "structure-match-stored")}


def test_the_material_map_knows_vasp_directories_by_name():
    mapping = MaterialMap({task_key("Si_relax"): "mp-149"})
    record = bundle("vasp:Si_relax#0123456789ab", [diamond_si()])
    assert assigned(assign_materials([record], material_map=mapping))["vasp:Si_relax#0123456789ab"] == (
        "mp-149",
        "material-map",
    )


def test_a_record_whose_tasks_the_map_puts_in_two_materials_is_refused():
    record = bundle("mp-5", [diamond_si()])
    record.tasks.append(
        Task("mp-5/relax1", "GGA", "PBE", "relax", frames=list(record.tasks[0].frames), energy_quantity="e_0_energy")
    )
    mapping = parse_material_map(json.dumps({"mp-5": "mp-149", "mp-5/relax1": "mp-150"}))
    (refusal,) = assign_materials([record], material_map=mapping)
    assert isinstance(refusal, Refusal) and "different materials" in refusal.reason and "mp-150" in refusal.reason


def test_the_final_structure_is_the_task_holding_the_final_calculation():
    """An MP document's split-off pre-relaxation ("<id>/<name>", listed after its task) does not count."""
    record = bundle("mp-5", [diamond_si(0.02)])
    pre = bundle("x", [bcc_si()]).tasks[0]
    record.tasks.append(
        Task("mp-5/relax1", "PBEsol", "PBEsol", "relax", frames=pre.frames, energy_quantity="e_0_energy")
    )
    stored = {"Si": [("mp-149", diamond_si())]}
    assert assigned(assign_materials([record], stored=stored))["mp-5"] == ("mp-149", "structure-match-stored")


def test_reference_entries_without_tasks_are_grouped_by_their_structure_and_without_one_refused():
    with_structure = Bundle(
        material=Material("", "Si", ("Si",)),
        location="entries#0",
        references=[ReferenceEntry("GGA", -5.42, n_atoms=8, structure=diamond_si().as_dict(), entry_id="e-1")],
    )
    without = Bundle(
        material=Material("", "Si", ("Si",)), location="entries#1", references=[ReferenceEntry("GGA", -5.4, n_atoms=2)]
    )
    out = list(assign_materials([with_structure, without], stored={"Si": [("mp-149", primitive_si())]}))
    assert out[0].material.external_id == "mp-149"
    assert isinstance(out[1], Refusal) and "no structure" in out[1].reason


def test_group_bundles_is_pure():
    records = [bundle("mp-2", [diamond_si()]), bundle("mp-1", [diamond_si(0.01)])]
    before = [(b.material.external_id, b.tasks[0].material_rule) for b in records]
    assert group_bundles(records) == group_bundles(list(reversed(records)))[::-1]
    assert [(b.material.external_id, b.tasks[0].material_rule) for b in records] == before


# --------------------------------------------------------------------------- ids and the material map file


def test_every_form_of_an_mp_task_id_has_one_key():
    forms = ["mp-149", "mp-aaaaaaft", "aaaaaaft", "mp-ft", "149", 149]
    assert {task_key(f) for f in forms} == {"mp-149"}
    assert document_task_id("aaaaaaft") == "mp-149"  # how MP's tasks collection writes task ids
    assert document_task_id("115880") == "115880"  # a bare number is no MP task id form
    assert format_mp_id("mvc-12") == "mvc-12" and task_key("mvc-12") != task_key("mp-12")
    assert task_key("vasp:Si#abc") == "vasp:Si#abc"


def test_material_maps_in_csv_and_json_agree(tmp_path):
    csv_file = tmp_path / "map.csv"
    csv_file.write_text("task_id,material_id\nmp-5,mp-149\n\n aaaaaaag , 1234\nvasp:x#1,my-material\n")
    json_file = tmp_path / "map.json"
    json_file.write_text(json.dumps({"5": "mp-aaaaaaft", "mp-6": 1234, "vasp:x#1": "my-material"}))
    expected = {"mp-5": "mp-149", "mp-6": "mp-1234", "vasp:x#1": "my-material"}
    assert dict(read_material_map(csv_file).materials) == expected
    assert dict(read_material_map(json_file).materials) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task,material\nmp-1,mp-2\n", "line 1: expected the header 'task_id,material_id'"),
        ("", "expected the header"),
        ("task_id,material_id\nmp-1,mp-2\nmp-3\n", "line 3: expected two fields"),
        ("task_id,material_id\nmp-1,\n", "line 2: a material id must be a non-empty"),
        (
            "task_id,material_id\nmp-1,mp-2\naaaaaaab,mp-3\n",
            "line 3: task 'aaaaaaab' is mapped to 'mp-3' here and to 'mp-2'",
        ),
        ('{"mp-1": ["mp-2"]}', "a material id must be a non-empty text or a number"),
        ('["mp-1"]', "is an object"),
        ('{"mp-1": ', "not valid JSON"),
    ],
)
def test_a_bad_material_map_is_refused_with_the_place_of_the_problem(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_material_map(text)


# --------------------------------------------------------------------------- through the database


def si_task_doc(task_id: str, structures: list[Structure], *, e0_shift: float = 0.0) -> dict:
    """An MP task document (tasks collection layout: no material_id) of a PBE relaxation through ``structures``."""
    steps = []
    for k, structure in enumerate(structures):
        e_fr = -5.42 * len(structure) - 0.003 * k
        steps.append(
            {
                "structure": structure.as_dict(),
                "e_fr_energy": e_fr,
                "e_0_energy": e_fr + e0_shift,
                "e_wo_entrp": e_fr,
                "forces": np.full((len(structure), 3), 0.01 * (k + 1)).tolist(),
                "stress": [[2.0 - k, 0.0, 0.0], [0.0, 2.0 - k, 0.0], [0.0, 0.0, 2.0 - k]],
                "electronic_steps": [{"e_fr_energy": e_fr, "e_0_energy": e_fr + e0_shift}] * 7,
            }
        )
    calc = {
        "task_name": "relax2",
        "input": {
            "incar": {"ENCUT": 520, "IBRION": 2, "NSW": 99, "ISPIN": 1, "ISMEAR": -5},
            "potcar": ["Si"],
            "potcar_type": ["PAW_PBE"],
        },
        "output": {"ionic_steps": steps, "structure": structures[-1].as_dict()},
    }
    return {"task_id": task_id, "calcs_reversed": [calc], "formula_pretty": "Si"}


def material_rows(database_url) -> list[tuple[str, str, str]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT t.external_id, m.external_id, t.material_rule "
            "FROM tasks t JOIN materials m ON m.id = t.material_id ORDER BY t.external_id"
        ).fetchall()


def test_grouped_materials_are_stored_with_their_rule_and_reingest_is_idempotent(invoke, database_url, tmp_path):
    first = tmp_path / "first.json"
    first.write_text(
        json.dumps(
            [
                si_task_doc("mp-20", [diamond_si(0.02), diamond_si(0.01)]),
                si_task_doc("mp-aaaaaaah", [diamond_si(0.0)]),  # mp-7 in AlphaID form
                si_task_doc("mp-31", [bcc_si()]),
            ]
        )
    )
    result = invoke("ingest", "mp-docs", str(first))
    assert result.exit_code == 0, result.output
    new = "structure-match-new"
    expected = [("mp-20", "grouped:mp-7", new), ("mp-31", "grouped:mp-31", new), ("mp-7", "grouped:mp-7", new)]
    assert material_rows(database_url) == expected

    again = invoke("ingest", "mp-docs", str(first))
    assert again.exit_code == 0, again.output
    assert material_rows(database_url) == expected  # same materials; nothing added, nothing conflicting
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM materials").fetchone() == (2,)

    # a later task of the same material adopts the stored one; the map names another task's material
    later = tmp_path / "later.json"
    later.write_text(json.dumps([si_task_doc("mp-3", [diamond_si(-0.01)]), si_task_doc("mp-4", [diamond_si(0.0)])]))
    mapping = tmp_path / "map.csv"
    mapping.write_text("task_id,material_id\n4,mp-149\n")
    result = invoke("ingest", "mp-docs", str(later), "--material-map", str(mapping))
    assert result.exit_code == 0, result.output
    rows = dict((task, (material, rule)) for task, material, rule in material_rows(database_url))
    assert rows["mp-3"] == ("grouped:mp-7", "structure-match-stored")
    assert rows["mp-4"] == ("mp-149", "material-map")


def test_a_bad_material_map_is_a_usage_error_and_nothing_runs(invoke, database_url, tmp_path):
    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps([si_task_doc("mp-1", [diamond_si()])]))
    mapping = tmp_path / "map.csv"
    mapping.write_text("task_id,material_id\nmp-1,mp-2,mp-3\n")
    result = invoke("ingest", "mp-docs", str(docs), "--material-map", str(mapping))
    assert result.exit_code == 2
    shown = " ".join(result.output.replace("│", " ").split())  # rich wraps the message in a box
    assert "line 2: expected two fields" in shown and "--material-map" in shown
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('tasks')").fetchone() == (None,)  # not even migrated


def test_stored_final_structures_gives_every_tasks_last_frame_and_entry_structures(engine):
    from crossfid.ingest.loader import ingest

    relax = bundle("mp-1", [diamond_si(0.03), diamond_si(0.01)], material_id="mp-149")
    relax.references.append(ReferenceEntry("GGA", -5.4, n_atoms=2, structure=primitive_si().as_dict()))
    other = bundle("mp-2", [bcc_si()], material_id="mp-34")
    salt = bundle("mp-3", [rocksalt("Na", "Cl", 5.64)], material_id="mp-22862")
    summary = ingest(engine, "test", "test", [relax, other, salt])
    assert summary.quarantined == 0

    found = stored_final_structures(engine, ["Si", "KCl"])
    assert set(found) == {"Si"}  # formulas with nothing stored are absent; NaCl was not asked for
    by_material: dict[str, list[Structure]] = {}
    for material_id, structure in found["Si"]:
        by_material.setdefault(material_id, []).append(structure)
    assert sorted(by_material) == ["mp-149", "mp-34"]
    assert len(by_material["mp-149"]) == 2  # the task's final frame and the entry's structure
    final = relax.tasks[0].frames[-1]
    stored_final = next(s for s in by_material["mp-149"] if len(s) == 8)
    np.testing.assert_array_equal(stored_final.lattice.matrix, final.lattice)  # bit for bit
    np.testing.assert_array_equal(stored_final.frac_coords, final.frac_coords)
    assert grouping.structure_key(stored_final) == grouping.structure_key(final.to_structure())
