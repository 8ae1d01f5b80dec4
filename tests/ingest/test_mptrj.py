"""MPtrj reference entries carry the structure of their matched frame (the thermodynamic benchmarks need it)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from pymatgen.core import Structure
from support.source_files import collect, good_mptrj, mptrj_frame, write_json

from crossfid.ingest.loader import ingest
from crossfid.ingest.mptrj import read_mptrj


def test_reference_entry_has_the_structure_of_its_matched_frame(tmp_path: Path) -> None:
    document = good_mptrj()
    # two frames of one material at different lattices: only the second matches e_per_atom_relaxed
    document["mp-1"] = {
        "mp-1-0-0": mptrj_frame(["Si", "Si"], -10.0, a=5.50, e_relaxed=-5.4),
        "mp-1-0-1": mptrj_frame(["Si", "Si"], -10.3, a=5.43, e_relaxed=-5.4),
    }
    # a relaxed energy that no frame has: the entry is kept, without a structure
    document["mp-2"] = {"mp-2-0-0": mptrj_frame(["Si", "Si"], -10.0, e_relaxed=-7.0)}
    good, refused, _ = collect(read_mptrj(write_json(tmp_path / "mptrj.json", document), "GGA"))
    assert refused == []
    references = {b.material.external_id: b.references[0] for b in good}

    si = references["mp-149"]  # frame mp-149-0-1 (corrected −11.3 eV / 2 atoms) is the reference frame
    assert Structure.from_dict(si.structure) == Structure.from_dict(document["mp-149"]["mp-149-0-1"]["structure"])
    assert si.n_atoms == 2

    matched = references["mp-1"]
    assert matched.task_external_id == "mptrj:mp-1"
    structure = Structure.from_dict(matched.structure)
    assert structure == Structure.from_dict(document["mp-1"]["mp-1-0-1"]["structure"])
    assert structure.lattice.a != Structure.from_dict(document["mp-1"]["mp-1-0-0"]["structure"]).lattice.a

    unmatched = references["mp-2"]
    assert unmatched.structure is None and unmatched.task_external_id is None and unmatched.n_atoms is None
    assert unmatched.corrected_energy_per_atom == -7.0


def test_stored_mptrj_entries_are_usable_by_the_thermodynamic_benchmarks(engine, database_url, tmp_path: Path) -> None:
    path = write_json(tmp_path / "mptrj.json", good_mptrj())
    summary = ingest(engine, "mptrj", "mptrj", read_mptrj(path, "GGA"))
    assert summary.references_added == 2 and summary.quarantined == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            # the condition of crossfid.benchmarks.suite's entries query
            "SELECT m.external_id, r.structure, r.n_atoms FROM reference_entries r "
            "JOIN materials m ON m.id = r.material_id WHERE r.structure IS NOT NULL ORDER BY 1"
        ).fetchall()
    assert [(material, n_atoms) for material, _, n_atoms in rows] == [("mp-149", 2), ("mp-22862", 2)]
    stored = Structure.from_dict(rows[0][1])
    assert stored == Structure.from_dict(good_mptrj()["mp-149"]["mp-149-0-1"]["structure"])
