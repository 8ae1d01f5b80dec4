"""Dataset versions, splits, leakage audit and exports, on real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections import Counter, defaultdict

import numpy as np
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from support.curation_corpus import (
    DUPLICATE_PAIRS,
    N_REGULAR,
    corpus,
    curate,
    load,
    make_bundle,
    make_trajectory,
    record_frames,
    rejected,
)
from typer.testing import CliRunner

from crossfid.cli.dataset import app as dataset_app
from crossfid.curation.audit import audit_split
from crossfid.curation.datasets import DatasetError, freeze_dataset, list_datasets, resolve_dataset
from crossfid.curation.export import ExportError, cartesian, export_split
from crossfid.curation.split_store import create_split, resolve_split, show_dataset
from crossfid.curation.splits import (
    PARTS,
    SplitError,
    nested_subsets,
    normalize_ratios,
    split_by_group,
    split_content_hash,
)
from crossfid.db import migrate
from crossfid.db.engine import make_engine
from crossfid.hashing import dataset_content_hash, subset_content_hash
from crossfid.ingest.records import Bundle, Frame

# --------------------------------------------------------------------------- synthetic corpus


@pytest.fixture(scope="module")
def bundles() -> list[Bundle]:
    return corpus()


@pytest.fixture
def loaded(engine: Engine, bundles: list[Bundle]) -> int:
    """The corpus in the test database and a completed curation run; returns the run id."""
    load(engine, bundles)
    return curate(engine)


@pytest.fixture
def other_engine(server_url: str):
    """A second fresh, migrated database on the same server."""
    name = f"crossfid_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = make_engine(make_url(server_url).set(database=name).render_as_string(hide_password=False))
    migrate.upgrade(engine)
    yield engine
    engine.dispose()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def expected_members(bundles: list[Bundle], fidelities=("GGA",)) -> dict[str, tuple[str, str, Frame, str]]:
    return {
        h: v
        for h, v in record_frames(bundles).items()
        if v[3] in fidelities and not rejected(v[0], v[1], v[2].ionic_step)
    }


def members_by_part(engine: Engine, split_id: int) -> dict[str, list[tuple[str, str]]]:
    """part → [(material, frame content hash)]"""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT sm.part, m.external_id, f.content_hash FROM split_members sm "
                "JOIN frames f ON f.id = sm.frame_id JOIN materials m ON m.id = sm.material_id WHERE sm.split_id = :id"
            ),
            {"id": split_id},
        ).all()
    parts: dict[str, list[tuple[str, str]]] = {p: [] for p in PARTS}
    for part, material, content_hash in rows:
        parts[part].append((material, content_hash))
    return parts


# --------------------------------------------------------------------------- pure functions


def test_dataset_hash_recipe_is_sorted_hashes_with_a_domain():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5)]
    manual = hashlib.sha256(b"crossfid-dataset-v1\n" + b"".join(h.encode() + b"\n" for h in sorted(hashes)))
    assert dataset_content_hash(hashes) == manual.hexdigest()
    assert dataset_content_hash(reversed(hashes)) == manual.hexdigest()
    assert dataset_content_hash(hashes + hashes[:1]) != manual.hexdigest()  # a multiset
    with pytest.raises(ValueError, match="SHA-256"):
        dataset_content_hash(["ABC"])
    # the training energy chosen at freezing is part of the recipe (v2): same frames, other label, other dataset
    for label in ("uncorrected", "mp2020"):
        labelled = hashlib.sha256(
            f"crossfid-dataset-v2 {label}\n".encode() + b"".join(h.encode() + b"\n" for h in sorted(hashes))
        )
        assert dataset_content_hash(hashes, label) == labelled.hexdigest()
    assert dataset_content_hash(hashes, "uncorrected") != dataset_content_hash(hashes, "mp2020")

    parts = {"train": hashes[:3], "val": hashes[3:4], "test": hashes[4:]}
    recipe = b"crossfid-split-v1\n"
    for part in PARTS:
        recipe += f"{part} {len(parts[part])}\n".encode() + b"".join(h.encode() + b"\n" for h in sorted(parts[part]))
    assert split_content_hash(parts) == hashlib.sha256(recipe).hexdigest()
    moved = {"train": hashes[:2], "val": hashes[2:4], "test": hashes[4:]}
    assert split_content_hash(moved) != split_content_hash(parts)


def test_split_by_group_keeps_groups_whole_balances_frames_and_is_deterministic():
    rng = random.Random(3)
    groups = {f"mp-{i}": [f"f{i}-{j}" for j in range(rng.randint(1, 9))] for i in range(400)}
    total = sum(len(v) for v in groups.values())
    largest = max(len(v) for v in groups.values())
    parts = split_by_group(groups, (8, 1, 1), seed=0)
    assigned = [g for p in PARTS for g in parts[p]]
    assert sorted(assigned) == sorted(groups) and len(set(assigned)) == len(assigned)  # disjoint, complete
    for part, target in zip(PARTS, (0.8, 0.1, 0.1), strict=True):
        n = sum(len(groups[g]) for g in parts[part])
        assert abs(n - target * total) <= largest, (part, n, target * total)

    shuffled = dict(rng.sample(list(groups.items()), len(groups)))
    assert split_by_group(shuffled, (8, 1, 1), seed=0) == parts  # input order does not matter
    assert split_by_group(groups, "0.8:0.1:0.1", seed=0) == parts  # same ratios, exact arithmetic
    assert split_by_group(groups, (8, 1, 1), seed=1) != parts
    assert normalize_ratios("8:1:1") == normalize_ratios((0.8, 0.1, 0.1)) == (0.8, 0.1, 0.1)

    no_val = split_by_group(groups, (9, 0, 1), seed=0)
    assert no_val["val"] == [] and no_val["test"]
    by_groups = split_by_group(groups, (8, 1, 1), seed=0, balance="groups")
    assert [len(by_groups[p]) for p in PARTS] == [320, 40, 40]
    tiny = split_by_group({"a": [1], "b": [2], "c": [3]}, (1, 1, 1), seed=5)
    assert sorted(len(v) for v in tiny.values()) == [1, 1, 1]
    for bad in [(1, 1), (-1, 1, 1), (0, 0, 0), "8:x:1"]:
        with pytest.raises(SplitError):
            split_by_group(groups, bad)


def test_nested_subsets_are_prefixes_of_a_seeded_permutation():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    subsets = nested_subsets(hashes, [40, 10, 25], seed=3)
    assert list(subsets) == [10, 25, 40]
    assert [len(s) for s in subsets.values()] == [10, 25, 40]
    assert subsets[40][:25] == subsets[25] and subsets[25][:10] == subsets[10]
    assert set(subsets[40]) <= set(hashes) and len(set(subsets[40])) == 40
    assert nested_subsets(list(reversed(hashes)), [10], seed=3)[10] == subsets[10]  # order independent
    assert nested_subsets(hashes, [10], seed=4)[10] != subsets[10]
    with pytest.raises(SplitError, match="larger than the training part"):
        nested_subsets(hashes, [10, 51], seed=0)
    with pytest.raises(SplitError, match="positive"):
        nested_subsets(hashes, [0], seed=0)
    assert subset_content_hash(subsets[10]) == subset_content_hash(sorted(subsets[10]))


# --------------------------------------------------------------------------- datasets


def test_freeze_counts_content_hash_versions_and_refusals(engine, loaded, bundles):
    info = freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    expected = expected_members(bundles)
    assert (info.name, info.version, info.fidelities) == ("demo", 1, ["GGA"])
    assert info.n_frames == len(expected)
    assert info.n_materials == len({v[0] for v in expected.values()}) == N_REGULAR + 2 * len(DUPLICATE_PAIRS)
    elements = sorted({e for b in bundles for e in b.material.elements})
    assert info.elements == elements and info.n_elements == len(elements)
    # the hash comes from the frames' own content hashes, computed here from the Python records
    assert info.content_hash == dataset_content_hash(expected, "uncorrected")
    assert info.energy_label == "uncorrected"
    assert info.frozen and info.config_hash == hashlib.sha256(b"test-config").hexdigest()

    everything = freeze_dataset(engine, loaded, "demo", energy_label="uncorrected")  # all fidelities of the run
    assert everything.version == 2 and everything.fidelities == ["GGA", "r2SCAN"]
    assert everything.n_frames == len(expected_members(bundles, ("GGA", "r2SCAN"))) > info.n_frames
    again = freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    assert again.version == 3 and again.content_hash == info.content_hash and again.identical_to == ["demo:1"]

    with engine.connect() as conn:
        assert resolve_dataset(conn, "demo").version == 3
        assert resolve_dataset(conn, "demo:2").id == everything.id
        assert resolve_dataset(conn, str(info.id)).version == 1
        with pytest.raises(DatasetError, match="no dataset 'nope'"):
            resolve_dataset(conn, "nope")
        view = conn.execute(
            text("SELECT name, version, n_frames, content_hash FROM v_datasets ORDER BY dataset_id")
        ).all()
    assert view[0] == ("demo", 1, info.n_frames, info.content_hash)
    assert [d.ref for d in list_datasets(engine)] == ["demo:1", "demo:2", "demo:3"]
    detail = show_dataset(engine, "demo:2")
    assert sum(n for n, _ in detail.by_fidelity.values()) == everything.n_frames and detail.run_status == "completed"

    with pytest.raises(DatasetError, match="does not exist"):
        freeze_dataset(engine, 999_999, "demo", energy_label="uncorrected")
    with pytest.raises(DatasetError, match="is running"):
        freeze_dataset(engine, curate(engine, status="running"), "demo", energy_label="uncorrected")
    with pytest.raises(DatasetError, match="accepted no frames"):
        freeze_dataset(engine, curate(engine, reject_all=True), "demo", energy_label="uncorrected")
    with pytest.raises(DatasetError, match="not HSE06"):
        freeze_dataset(engine, loaded, "demo", ["HSE06"], energy_label="uncorrected")
    with pytest.raises(DatasetError, match="invalid dataset name"):
        freeze_dataset(engine, loaded, "123", energy_label="uncorrected")
    assert [d.version for d in list_datasets(engine)] == [1, 2, 3]  # failures wrote nothing


def _refused(engine: Engine, statement: str, **params) -> str:
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(text(statement), params)
    return str(caught.value.orig)


def test_frozen_datasets_and_splits_are_immutable_in_the_database(engine, loaded):
    info = freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    split = create_split(engine, "demo", (8, 1, 1), 0, subset_sizes=[5])
    with engine.connect() as conn:
        frame_id = conn.scalar(text("SELECT min(frame_id) FROM dataset_frames WHERE dataset_id = :d"), {"d": info.id})
        outsider, material = conn.execute(
            text(
                "SELECT f.id, t.material_id FROM frames f JOIN tasks t ON t.id = f.task_id "
                "WHERE f.id NOT IN (SELECT frame_id FROM dataset_frames) LIMIT 1"
            )
        ).one()
    d = {"d": info.id}
    assert "is frozen" in _refused(engine, "DELETE FROM dataset_frames WHERE dataset_id = :d", **d)
    assert "is frozen" in _refused(engine, "UPDATE dataset_frames SET frame_id = frame_id WHERE dataset_id = :d", **d)
    assert "is frozen" in _refused(
        engine, "INSERT INTO dataset_frames VALUES (:d, :f, :m)", d=info.id, f=outsider, m=material
    )
    assert "is frozen" in _refused(engine, "UPDATE datasets SET name = 'other' WHERE id = :d", **d)
    assert "is frozen" in _refused(engine, "DELETE FROM datasets WHERE id = :d", **d)
    assert "cannot be truncated" in _refused(engine, "TRUNCATE dataset_frames CASCADE")
    s = {"s": split.id}
    assert "is frozen" in _refused(engine, "UPDATE split_members SET part = 'train' WHERE split_id = :s", **s)
    assert "is frozen" in _refused(engine, "DELETE FROM split_members WHERE split_id = :s", **s)
    assert "is frozen" in _refused(engine, "UPDATE splits SET seed = 7 WHERE id = :s", **s)
    assert "is frozen" in _refused(engine, "DELETE FROM split_subsets WHERE split_id = :s", **s)
    assert "cannot be truncated" in _refused(engine, "TRUNCATE split_members")
    with engine.connect() as conn:
        count = conn.scalar(text("SELECT count(*) FROM dataset_frames WHERE dataset_id = :d"), d)
        assert count == info.n_frames and frame_id is not None


# --------------------------------------------------------------------------- splits


def test_material_split_is_whole_deterministic_and_has_nested_subsets(engine, loaded, bundles):
    info = freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    split = create_split(engine, "demo", "8:1:1", seed=0, subset_sizes=[10, 30, 60])
    assert split.created and split.ratios == (0.8, 0.1, 0.1) and split.strategy == "material"
    parts = members_by_part(engine, split.id)
    hashes = [h for p in PARTS for _, h in parts[p]]
    assert sorted(hashes) == sorted(expected_members(bundles)) and len(hashes) == info.n_frames  # disjoint, complete
    part_of_material = defaultdict(set)
    for part in PARTS:
        for material, _ in parts[part]:
            part_of_material[material].add(part)
    assert all(len(p) == 1 for p in part_of_material.values())  # a material is never cut
    fractions = [len(parts[p]) / info.n_frames for p in PARTS]
    assert abs(fractions[0] - 0.8) < 0.1 and all(len(parts[p]) > 0 for p in PARTS)
    assert split.content_hash == split_content_hash({p: [h for _, h in parts[p]] for p in PARTS})
    assert {p: c.n_frames for p, c in split.parts.items()} == {p: len(parts[p]) for p in PARTS}

    # the pure function gives the same assignment
    groups = defaultdict(list)
    for part in PARTS:
        for material, h in parts[part]:
            groups[material].append(h)
    pure = split_by_group(groups, (8, 1, 1), 0)
    assert {p: sorted(pure[p]) for p in PARTS} == {p: sorted({m for m, _ in parts[p]}) for p in PARTS}

    # nested subsets
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT size, content_hash, frame_ids FROM split_subsets WHERE split_id = :s ORDER BY size"),
            {"s": split.id},
        ).all()
        hash_of = dict(conn.execute(text("SELECT id, content_hash FROM frames")).all())
        train_ids = set(
            conn.scalars(
                text("SELECT frame_id FROM split_members WHERE split_id = :s AND part = 'train'"), {"s": split.id}
            )
        )
    assert [r[0] for r in rows] == [10, 30, 60] and [len(r[2]) for r in rows] == [10, 30, 60]
    assert rows[2][2][:30] == rows[1][2] and rows[1][2][:10] == rows[0][2]
    assert set(rows[2][2]) <= train_ids
    for size, digest, ids in rows:
        assert digest == subset_content_hash(hash_of[i] for i in ids) == split.subsets[size]
    train_hashes = [h for _, h in parts["train"]]
    assert [hash_of[i] for i in rows[2][2]] == nested_subsets(train_hashes, [60], 0)[60]

    # identical arguments return the existing split; missing subset sizes are added to it
    same = create_split(engine, "demo:1", (0.8, 0.1, 0.1), seed=0, subset_sizes=[10, 20])
    assert not same.created and same.id == split.id and same.content_hash == split.content_hash
    assert list(same.subsets) == [10, 20, 30, 60]
    other = create_split(engine, "demo", (8, 1, 1), seed=1)
    assert other.created and other.content_hash != split.content_hash

    with pytest.raises(SplitError, match="larger than the training part"):
        create_split(engine, "demo", (8, 1, 1), seed=2, subset_sizes=[10_000])
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM splits")) == 2  # the refused split wrote nothing
        with pytest.raises(SplitError, match="matches 2 splits"):
            resolve_split(conn, "demo")
        assert resolve_split(conn, "demo/material@1").id == other.id
        assert resolve_split(conn, str(split.id)).id == split.id
        summary = conn.execute(
            text("SELECT part, n_frames FROM v_split_summary WHERE split_id = :s"), {"s": split.id}
        ).all()
    assert dict(summary) == {p: c.n_frames for p, c in split.parts.items()}


def test_structure_group_split_prevents_the_leak_the_audit_finds(engine, loaded, dask_client):
    freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.external_id, f.content_hash FROM dataset_frames df JOIN frames f ON f.id = df.frame_id "
                "JOIN materials m ON m.id = df.material_id"
            )
        ).all()
    groups = defaultdict(list)
    for material, h in rows:
        groups[material].append(h)

    def leaks(assignment) -> set[tuple[str, str, str]]:
        part = {m: p for p, ms in assignment.items() for m in ms}
        found = set()
        for a, b in DUPLICATE_PAIRS:
            for x, y in ((a, b), (b, a)):
                if part[x] != "train" and part[y] == "train":
                    found.add((part[x], x, y))
        return found

    seed = next(s for s in range(100) if leaks(split_by_group(groups, (8, 1, 1), s)))
    expected = leaks(split_by_group(groups, (8, 1, 1), seed))
    by_material = create_split(engine, "demo", (8, 1, 1), seed)
    report = audit_split(engine, by_material.id)
    assert {(p.part, p.material, p.train_material) for p in report.pairs} == expected
    assert not report.clean and report.n_leaked_materials == len({x for _, x, _ in expected})
    leaked_frames = sum(len(groups[x]) for _, x, _ in expected)
    assert report.n_leaked_frames == leaked_frames
    thorough = audit_split(engine, by_material.id, representatives="all")
    assert {(p.part, p.material, p.train_material) for p in thorough.pairs} == expected
    assert thorough.n_leaked_frames == leaked_frames and thorough.n_comparisons >= report.n_comparisons
    parallel = audit_split(engine, by_material.id, representatives="all", client=dask_client)
    assert parallel.pairs == thorough.pairs and parallel.n_comparisons == thorough.n_comparisons
    strict = audit_split(engine, by_material.id, ltol=0.001, stol=0.001, angle_tol=0.01)
    assert strict.clean  # the duplicates are close, not identical

    by_structure = create_split(engine, "demo", (8, 1, 1), seed, strategy="structure-group")
    parts = members_by_part(engine, by_structure.id)
    part_of = {m: p for p in PARTS for m, _ in parts[p]}
    assert all(part_of[a] == part_of[b] for a, b in DUPLICATE_PAIRS)
    assert by_structure.parameters["n_multi_material_groups"] == len(DUPLICATE_PAIRS)
    assert by_structure.parameters["structure_origin"] == {"last_relax_frame": 36, "reference_entry": 2}
    assert by_structure.parameters["structure_matcher"]["stol"] == 0.3
    clean = audit_split(engine, by_structure.id)
    assert clean.clean and clean.n_leaked_frames == 0
    assert (
        sum(c.n_frames for c in clean.parts.values())
        == by_structure.parts["val"].n_frames + by_structure.parts["test"].n_frames
    )


# --------------------------------------------------------------------------- exports


def _voigt_ev(stress_gpa: np.ndarray) -> np.ndarray:
    from ase.units import GPa

    s = np.asarray(stress_gpa)
    voigt = [s[0, 0], s[1, 1], s[2, 2], (s[1, 2] + s[2, 1]) / 2, (s[0, 2] + s[2, 0]) / 2, (s[0, 1] + s[1, 0]) / 2]
    return np.array(voigt) * GPa


def test_extxyz_export_reads_back_exactly_with_ase(engine, loaded, bundles, tmp_path):
    import ase.io

    freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    split = create_split(engine, "demo", (8, 1, 1), 0)
    paths = export_split(engine, split.id, tmp_path, "extxyz")
    assert [p.name for p in paths] == [f"demo-v1_material_0.8-0.1-0.1_seed0_{p}.extxyz" for p in PARTS]
    records = record_frames(bundles)
    seen = []
    for path, part in zip(paths, PARTS, strict=True):
        images = ase.io.read(path, index=":", format="extxyz")
        assert len(images) == split.parts[part].n_frames
        for atoms in images:
            material, task, frame, fidelity = records[atoms.info["frame_content_hash"]]
            seen.append(atoms.info["frame_content_hash"])
            assert atoms.calc is None and atoms.pbc.all()
            assert (atoms.info["material_id"], atoms.info["task_id"], atoms.info["ionic_step"]) == (
                material,
                task,
                frame.ionic_step,
            )
            assert atoms.info["fidelity"] == atoms.info["config_type"] == fidelity == "GGA"
            assert list(atoms.numbers) == list(frame.atomic_numbers)
            assert np.array_equal(atoms.cell.array, frame.lattice)
            assert np.array_equal(atoms.positions, cartesian(frame.lattice.ravel(), frame.frac_coords.ravel()))
            assert np.allclose(atoms.get_scaled_positions(wrap=False), frame.frac_coords, atol=1e-12)
            assert atoms.info["REF_energy"] == frame.energy  # eV, total, uncorrected
            assert atoms.info["REF_corrected_energy"] == frame.corrected_energy
            assert np.array_equal(atoms.arrays["REF_forces"], frame.forces)  # eV/Å
            stress = atoms.info["REF_stress"]  # Voigt, eV/Å³, ASE sign
            assert stress.shape == (6,) and np.array_equal(stress, _voigt_ev(frame.stress))
            assert np.allclose(stress[:3] * 160.21766208, np.diag(frame.stress), rtol=1e-12, atol=0)
            if frame.magmoms is None:
                assert "REF_magmoms" not in atoms.arrays
            else:
                assert np.array_equal(atoms.arrays["REF_magmoms"], frame.magmoms)
    assert sorted(seen) == sorted(expected_members(bundles))

    # a nested subset exports on its own
    subset = create_split(engine, "demo", (8, 1, 1), 0, subset_sizes=[7])
    (path,) = export_split(engine, subset.id, tmp_path, "extxyz", ["train"], subset=7)
    assert path.name.endswith("_train-7.extxyz") and len(ase.io.read(path, index=":")) == 7
    with pytest.raises(SplitError, match="no training subset of 8 frames"):
        export_split(engine, subset.id, tmp_path, "extxyz", ["train"], subset=8)
    with pytest.raises(ExportError, match="unknown export format"):
        export_split(engine, subset.id, tmp_path, "xyz")


def test_mptrj_export_reads_back_through_crossfid_and_chgnet(engine, loaded, bundles, tmp_path):
    from chgnet.data.dataset import StructureJsonData
    from chgnet.graph import CrystalGraphConverter

    from crossfid.ingest.mptrj import read_mptrj

    freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    split = create_split(engine, "demo", (8, 1, 1), 0)
    paths = export_split(engine, split.id, tmp_path, "mptrj")
    assert [p.suffix for p in paths] == [".json"] * 3
    records = record_frames(bundles)
    by_task = defaultdict(list)  # (material, task) → frames of the dataset, in ionic-step order
    for material, task, frame, _ in sorted(
        expected_members(bundles).values(), key=lambda v: (v[0], v[1], v[2].ionic_step)
    ):
        by_task[material, task].append(frame)

    for path, part in zip(paths, PARTS, strict=True):
        read = list(read_mptrj(path, "GGA"))
        assert all(isinstance(r, Bundle) for r in read)
        assert sum(len(t.frames) for b in read for t in b.tasks) == split.parts[part].n_frames
        for bundle in read:
            for task in bundle.tasks:
                original = by_task[bundle.material.external_id, task.external_id.removeprefix("mptrj:")]
                assert len(task.frames) == len(original)  # read_mptrj renumbers steps 0, 1, ...
                for got, frame in zip(task.frames, original, strict=True):
                    assert np.array_equal(got.lattice, frame.lattice)
                    assert np.array_equal(got.frac_coords, frame.frac_coords)
                    assert list(got.atomic_numbers) == list(frame.atomic_numbers)
                    assert got.energy == frame.energy and got.corrected_energy == frame.corrected_energy
                    assert np.array_equal(got.forces, frame.forces)
                    assert np.allclose(got.stress, frame.stress, rtol=1e-15, atol=1e-15)  # kBar and back
                    assert (got.magmoms is None and frame.magmoms is None) or np.array_equal(got.magmoms, frame.magmoms)

    # CHGNet's own MPtrj loader, unchanged: energy per atom, forces, stress (its ×(−0.1) gives GPa), |magmom|
    document = json.loads(paths[0].read_text())
    data = StructureJsonData(str(paths[0]), graph_converter=CrystalGraphConverter(), targets="efsm", shuffle=False)
    assert len(data) == split.parts["train"].n_frames
    for index, (mp_id, graph_id) in enumerate(data.keys):
        _, targets = data[index]
        label = document[mp_id][graph_id]
        task, _, step = graph_id.rsplit("-", 2)
        frame = next(f for f in by_task[mp_id, task] if f.ionic_step == int(step))
        assert records[frame.content_hash()][0] == mp_id == label["mp_id"]
        assert np.isclose(float(targets["e"]), frame.corrected_energy / frame.n_atoms, rtol=1e-6)
        assert np.allclose(targets["f"].numpy(), frame.forces, atol=1e-6)
        assert np.allclose(targets["s"].numpy(), frame.stress, rtol=1e-6, atol=1e-6)  # GPa, tensile positive
        if frame.magmoms is None:
            assert targets["m"] is None
        else:
            assert np.allclose(targets["m"].numpy(), np.abs(frame.magmoms), atol=1e-6)
    assert not data.failed_idx


def test_exports_are_byte_identical_across_exports_and_databases(engine, other_engine, loaded, bundles, tmp_path):
    first = freeze_dataset(engine, loaded, "demo", ["GGA"], energy_label="uncorrected")
    # the other database gets an unrelated material first (then deleted) and the corpus in reverse order: other ids
    rng = np.random.default_rng(99)
    numbers = [26, 8, 26, 8]
    noise = make_bundle(
        "mp-1", numbers, make_trajectory(rng, numbers, 2), static=False, r2scan=False, ref_structure=False
    )
    load(other_engine, [noise])
    with other_engine.begin() as conn:
        conn.execute(text("DELETE FROM materials WHERE external_id = 'mp-1'"))
    load(other_engine, list(reversed(bundles)))
    second = freeze_dataset(other_engine, curate(other_engine), "demo", ["GGA"], energy_label="uncorrected")
    with engine.connect() as a, other_engine.connect() as b:
        ids_a = sorted(a.scalars(text("SELECT frame_id FROM dataset_frames")))
        ids_b = sorted(b.scalars(text("SELECT frame_id FROM dataset_frames")))
    assert ids_a != ids_b  # different database ids ...
    assert first.content_hash == second.content_hash  # ... same content hash
    assert (first.n_frames, first.n_materials, first.elements) == (second.n_frames, second.n_materials, second.elements)

    for strategy in ("material", "structure-group"):
        one = create_split(engine, "demo", (8, 1, 1), 3, strategy, [5, 20])
        two = create_split(other_engine, "demo", (8, 1, 1), 3, strategy, [5, 20])
        assert one.content_hash == two.content_hash and one.subsets == two.subsets
        for fmt in ("extxyz", "mptrj"):
            a = export_split(engine, one.id, tmp_path / "a", fmt)
            again = export_split(engine, one.id, tmp_path / "again", fmt)
            b = export_split(other_engine, two.id, tmp_path / "b", fmt)
            for x, y, z in zip(a, again, b, strict=True):
                assert x.name == y.name == z.name
                assert x.read_bytes() == y.read_bytes() == z.read_bytes()
            sub_a = export_split(engine, one.id, tmp_path / "a", fmt, ["train"], subset=20)
            sub_b = export_split(other_engine, two.id, tmp_path / "b", fmt, ["train"], subset=20)
            assert sub_a[0].read_bytes() == sub_b[0].read_bytes()
    assert not list(tmp_path.rglob("*.partial"))


# --------------------------------------------------------------------------- command line


def test_dataset_commands(engine, loaded, database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(dataset_app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result

    assert "no datasets yet" in run("list").output
    frozen = run(
        "freeze", "--run", str(loaded), "--name", "demo", "--fidelity", "pbe", "--energy-label", "uncorrected"
    ).output
    assert "froze dataset demo:1" in frozen and "GGA" in frozen
    with engine.connect() as conn:
        content_hash = resolve_dataset(conn, "demo").content_hash
    assert content_hash in frozen
    assert "demo:1" in run("list").output

    made = run("split", "demo", "--ratios", "8:1:1", "--seed", "0", "--subsets", "5,10").output
    assert "created split" in made and "subset 10" in made
    assert "exists:" in run("split", "demo", "--ratios", "0.8:0.1:0.1").output
    run("split", "demo", "--seed", "0", "--strategy", "structure-group")
    shown = run("show", "demo").output
    assert content_hash in shown and "structure-group" in shown and "by fidelity" in shown

    audit = run("audit", "demo/structure-group@0", "--json", str(tmp_path / "audit.json")).output
    assert "no leak" in audit
    assert json.loads((tmp_path / "audit.json").read_text())["pairs"] == []
    material_audit = run("audit", "demo/material@0").output
    assert "leaked frames" in material_audit

    exported = run("export", "demo/material@0", "--out", str(tmp_path / "out"), "--format", "mptrj").output
    assert exported.count("wrote") == 3 and len(list((tmp_path / "out").glob("*.json"))) == 3
    run("export", "demo/material@0", "--out", str(tmp_path / "sub"), "--subset", "5")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["demo-v1_material_0.8-0.1-0.1_seed0_train-5.extxyz"]

    failed = runner.invoke(dataset_app, ["split", "nope"])
    assert failed.exit_code == 1 and "no dataset 'nope'" in str(failed.exception)
    failed = runner.invoke(dataset_app, ["audit", "demo"])
    assert failed.exit_code == 1 and "matches 2 splits" in str(failed.exception)
    assert Counter(d.version for d in list_datasets(engine)) == {1: 1}


# --------------------------------------------------------------------------- training energy (issue: one energy)


def test_the_training_energy_is_chosen_at_freezing_and_read_by_training(engine, loaded, bundles):
    from crossfid.training.data import load_split_frames

    plain = freeze_dataset(engine, loaded, "plain", ["GGA"], energy_label="uncorrected")
    corrected = freeze_dataset(engine, loaded, "corrected", ["GGA"], energy_label="mp2020")
    assert (plain.energy_label, corrected.energy_label) == ("uncorrected", "mp2020")
    assert plain.n_frames == corrected.n_frames
    assert plain.content_hash != corrected.content_hash and corrected.identical_to == []
    assert corrected.content_hash == dataset_content_hash(expected_members(bundles), "mp2020")

    frames = {h: v[2] for h, v in record_frames(bundles).items()}
    for info, attribute in ((plain, "energy"), (corrected, "corrected_energy")):
        split = create_split(engine, info.ref, ratios=(8, 1, 1), seed=0)
        with Session(engine) as session:
            loaded_frames = load_split_frames(session, split.id, "train")
        assert loaded_frames
        for frame in loaded_frames:
            record = frames[frame.content_hash]
            assert frame.energy_per_atom == pytest.approx(getattr(record, attribute) / record.n_atoms, abs=1e-12)


def _variant(bundles: list[Bundle], change) -> list[Bundle]:
    import copy

    changed = copy.deepcopy(bundles)
    for bundle in changed:
        for task in bundle.tasks:
            change(task)
    return changed


def test_mp2020_needs_a_corrected_energy_on_every_frame(engine, bundles):
    def drop_r2scan_corrections(task):
        if task.fidelity == "r2SCAN":
            for frame in task.frames:
                frame.corrected_energy = None

    load(engine, _variant(bundles, drop_r2scan_corrections))
    run = curate(engine)
    with pytest.raises(DatasetError, match=r"frames \(r2SCAN\) have no MP2020-corrected energy"):
        freeze_dataset(engine, run, "mixed", energy_label="mp2020")
    assert freeze_dataset(engine, run, "gga", ["GGA"], energy_label="mp2020").n_frames > 0  # all GGA frames have one
    assert freeze_dataset(engine, run, "both", energy_label="uncorrected").fidelities == ["GGA", "r2SCAN"]


def test_frames_of_different_energy_quantities_are_never_mixed(engine, bundles):
    def quantities(task):
        task.energy_quantity = "e_fr_energy" if task.fidelity == "r2SCAN" else "e_0_energy"

    load(engine, _variant(bundles, quantities))
    run = curate(engine)
    with pytest.raises(DatasetError, match=r"different VASP quantities \(.* e_0_energy, .* e_fr_energy frames\)"):
        freeze_dataset(engine, run, "mixed", energy_label="uncorrected")
    assert freeze_dataset(engine, run, "gga", ["GGA"], energy_label="uncorrected").n_frames > 0


def test_freeze_requires_an_energy_label_on_the_command_line(engine, loaded, database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    runner = CliRunner()
    result = runner.invoke(dataset_app, ["freeze", "--run", str(loaded), "--name", "demo"])
    assert result.exit_code == 2 and "--energy-label" in result.output
    result = runner.invoke(dataset_app, ["freeze", "--run", str(loaded), "--name", "demo", "--energy-label", "raw"])
    assert result.exit_code == 2
