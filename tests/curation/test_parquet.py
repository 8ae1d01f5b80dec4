"""Parquet export of datasets and splits, read back by pyarrow, pandas, polars and Hugging Face datasets."""

from __future__ import annotations

import math
import uuid

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
from ase.data import chemical_symbols
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from support.curation_corpus import corpus, curate, load, make_bundle, make_trajectory, record_frames
from typer.testing import CliRunner

from crossfid.cli.dataset import app as dataset_app
from crossfid.curation.datasets import freeze_dataset
from crossfid.curation.export import ExportError, cartesian, export_split
from crossfid.curation.parquet import METADATA_KEY, export_parquet, is_split_reference, read_metadata
from crossfid.curation.split_store import create_split
from crossfid.curation.splits import PARTS, SplitError
from crossfid.db import migrate
from crossfid.db.engine import make_engine
from crossfid.ingest.records import Bundle, Frame

SOURCE = "synthetic"  # the source name support.curation_corpus.load ingests under


def _unlabelled(bundles: list[Bundle]) -> list[Bundle]:
    """The corpus plus a material whose frames lack forces, stress, magmoms and a corrected energy."""
    rng = np.random.default_rng(3)
    numbers = [26, 8, 26]
    frames = make_trajectory(rng, numbers, 3)
    bare = [
        Frame(
            ionic_step=f.ionic_step,
            lattice=f.lattice,
            atomic_numbers=f.atomic_numbers,
            frac_coords=f.frac_coords,
            energy=f.energy,
            forces=f.forces if f.ionic_step == 1 else None,
            stress=None,
            magmoms=None,
            corrected_energy=None,
        )
        for f in frames
    ]
    return [*bundles, make_bundle("mp-77", numbers, bare, static=False, r2scan=False, ref_structure=False)]


@pytest.fixture(scope="module")
def bundles() -> list[Bundle]:
    return _unlabelled(corpus())


@pytest.fixture
def frozen(engine: Engine, bundles: list[Bundle]):
    """The corpus curated and frozen as dataset ``demo`` (GGA and r2SCAN frames)."""
    load(engine, bundles)
    return freeze_dataset(engine, curate(engine), "demo", energy_label="uncorrected")


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


def _members(engine: Engine, dataset_id: int) -> list[str]:
    """Content hashes of a dataset's frames in the export's order, computed in Python."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.external_id, t.external_id, s.name, f.ionic_step, f.content_hash FROM dataset_frames df "
                "JOIN frames f ON f.id = df.frame_id JOIN tasks t ON t.id = f.task_id "
                "JOIN sources s ON s.id = t.source_id JOIN materials m ON m.id = df.material_id "
                "WHERE df.dataset_id = :id"
            ),
            {"id": dataset_id},
        ).all()
    return [row[4] for row in sorted(rows, key=tuple)]


def _same(got, expected) -> bool:
    """Exact float64 equality of an exported value and a record's (None ↔ null)."""
    if expected is None:
        return got is None
    return got is not None and np.array_equal(np.asarray(got, dtype=float), np.asarray(expected, dtype=float))


def _check_row(row: dict, records: dict) -> None:
    material, task, frame, fidelity = records[row["frame_content_hash"]]
    assert (row["material_id"], row["task_id"], row["source"], row["fidelity"]) == (material, task, SOURCE, fidelity)
    assert row["ionic_step"] == frame.ionic_step and row["n_atoms"] == frame.n_atoms
    assert list(row["atomic_numbers"]) == list(frame.atomic_numbers)
    assert list(row["species"]) == [chemical_symbols[z] for z in frame.atomic_numbers]
    assert _same(row["lattice"], frame.lattice)  # Å, rows are lattice vectors
    assert _same(row["frac_coords"], frame.frac_coords)
    assert np.array_equal(np.asarray(row["positions"]), cartesian(frame.lattice.ravel(), frame.frac_coords.ravel()))
    assert list(row["pbc"]) == [True, True, True]
    assert row["energy"] == frame.energy  # eV, bit for bit
    assert row["corrected_energy"] == frame.corrected_energy
    assert row["energy_per_atom"] == frame.energy / frame.n_atoms
    assert _same(row["forces"], frame.forces)  # eV/Å
    assert _same(row["stress"], frame.stress)  # GPa, tensile positive
    assert _same(row["magmoms"], frame.magmoms)  # μB


def _rows(table) -> list[dict]:
    """pyarrow rows as dicts of plain Python values (nested lists)."""
    return table.to_pylist()


# --------------------------------------------------------------------------- a dataset version


def test_dataset_export_round_trips_exactly_with_metadata_and_row_groups(engine, frozen, bundles, tmp_path):
    result = export_parquet(engine, "demo", tmp_path, row_group_size=7)
    assert result.path.name == "demo-v1.parquet" and result.n_frames == frozen.n_frames
    assert not list(tmp_path.glob("*.partial"))
    file = pq.ParquetFile(result.path)
    assert file.metadata.num_rows == frozen.n_frames
    assert file.metadata.num_row_groups == result.n_row_groups == math.ceil(frozen.n_frames / 7)
    assert all(file.metadata.row_group(i).num_rows == 7 for i in range(file.metadata.num_row_groups - 1))

    # units in the field metadata, the dataset's hashes and provenance in the file metadata
    schema = file.schema_arrow
    assert "part" not in schema.names
    units = {f.name: f.metadata[b"unit"].decode() for f in schema}
    assert units["energy"] == units["corrected_energy"] == "eV" and units["energy_per_atom"] == "eV/atom"
    assert (units["forces"], units["stress"], units["magmoms"]) == ("eV/Å", "GPa", "μB")
    assert units["lattice"] == units["positions"] == "Å"
    assert b"description" in schema.field("stress").metadata
    meta = read_metadata(result.path)
    assert meta == result.metadata
    dataset = meta["dataset"]
    assert (dataset["name"], dataset["version"], dataset["content_hash"]) == ("demo", 1, frozen.content_hash)
    assert dataset["energy_label"] == "uncorrected" and meta["training_energy"] == "energy"
    assert dataset["fidelities"] == ["GGA", "r2SCAN"] and dataset["n_frames"] == frozen.n_frames
    assert dataset["curation"]["config_hash"] == frozen.config_hash and dataset["curation"]["crossfid_version"]
    assert meta["split"] is None and meta["format_version"] == 1
    assert METADATA_KEY.encode() in schema.metadata

    table = pq.read_table(result.path)
    assert table.column("frame_content_hash").to_pylist() == _members(engine, frozen.id)  # the export's order
    records = record_frames(bundles)
    rows = _rows(table)
    for row in rows:
        _check_row(row, records)
    bare = [r for r in rows if r["material_id"] == "mp-77"]  # nulls where a frame has no label
    assert [r["forces"] is None for r in bare] == [True, False, True]
    assert all(r["stress"] is None and r["magmoms"] is None and r["corrected_energy"] is None for r in bare)


def test_pandas_polars_and_hugging_face_datasets_read_the_export(engine, frozen, bundles, tmp_path, monkeypatch):
    import datasets
    import pandas as pd
    import polars as pl

    path = export_parquet(engine, "demo:1", tmp_path / "out", row_group_size=5).path
    records = record_frames(bundles)
    order = _members(engine, frozen.id)

    frame = pd.read_parquet(path)
    assert list(frame["frame_content_hash"]) == order
    assert frame["energy"].dtype == np.float64
    for row in frame.to_dict("records"):
        row = {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
        for key in ("lattice", "stress", "forces", "frac_coords", "positions"):  # arrays of arrays → 2-D
            if row[key] is not None:
                row[key] = np.stack(row[key])
        _check_row(row, records)

    polar = pl.read_parquet(path)
    assert polar["frame_content_hash"].to_list() == order
    assert polar.schema["forces"] == pl.List(pl.Array(pl.Float64, 3))
    assert polar.schema["lattice"] == pl.Array(pl.Float64, (3, 3))
    for row in polar.to_dicts():
        _check_row(row, records)
    assert pl.read_parquet_metadata(path)[METADATA_KEY] == pq.read_schema(path).metadata[b"crossfid"].decode()

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows == frozen.n_frames
    assert hf["frame_content_hash"][:] == order
    for row in hf:
        _check_row(row, records)


# --------------------------------------------------------------------------- splits


def test_split_export_has_parts_in_the_extxyz_order(engine, frozen, bundles, tmp_path):
    import ase.io

    split = create_split(engine, "demo", (8, 1, 1), 0, subset_sizes=[6])
    everything = export_parquet(engine, "demo@0", tmp_path, row_group_size=4)
    assert everything.path.name == "demo-v1_material_0.8-0.1-0.1_seed0.parquet"
    meta = everything.metadata["split"]
    assert (meta["strategy"], meta["seed"], meta["content_hash"], meta["parts"]) == (
        "material",
        0,
        split.content_hash,
        list(PARTS),
    )
    table = pq.read_table(everything.path)
    assert table.schema.names[0] == "part"
    parts = table.column("part").to_pylist()
    hashes = table.column("frame_content_hash").to_pylist()
    # parts follow each other (train, val, test), each in the order of its extxyz file
    assert parts == sorted(parts, key=PARTS.index)
    for path, part in zip(export_split(engine, split.id, tmp_path / "xyz", "extxyz"), PARTS, strict=True):
        in_xyz = [atoms.info["frame_content_hash"] for atoms in ase.io.read(path, index=":")]
        assert [h for h, p in zip(hashes, parts, strict=True) if p == part] == in_xyz
        assert len(in_xyz) == split.parts[part].n_frames
    records = record_frames(bundles)
    for row in _rows(table):
        _check_row(row, records)

    only = export_parquet(engine, split.id, tmp_path, ["test", "val", "test"])
    assert only.path.name.endswith("_seed0_val-test.parquet") and only.metadata["split"]["parts"] == ["val", "test"]
    assert pq.read_table(only.path).column("part").to_pylist() == [p for p in parts if p != "train"]

    subset = export_parquet(engine, "demo@0", tmp_path, ["train"], subset=6)
    assert subset.path.name.endswith("_train-6.parquet") and subset.n_frames == 6
    assert subset.metadata["split"]["subset"] == {"size": 6, "content_hash": split.subsets[6]}
    assert set(pq.read_table(subset.path).column("part").to_pylist()) == {"train"}

    with pytest.raises(SplitError, match="no training subset of 7 frames"):
        export_parquet(engine, "demo@0", tmp_path, ["train"], subset=7)
    with pytest.raises(ExportError, match="names a dataset"):
        export_parquet(engine, "demo", tmp_path, ["test"])
    with pytest.raises(ExportError, match="unknown split part"):
        export_parquet(engine, "demo@0", tmp_path, ["holdout"])
    assert not list(tmp_path.glob("*.partial"))


def test_split_references_are_told_from_dataset_references():
    assert is_split_reference(3) and is_split_reference("12") and is_split_reference("demo@0")
    assert is_split_reference("demo:2/structure-group") and is_split_reference("demo:2/material@1")
    assert not is_split_reference("demo") and not is_split_reference("demo:2")


def test_exports_are_byte_identical_across_exports_and_databases(engine, other_engine, frozen, bundles, tmp_path):
    # the other database gets an unrelated material first (then deleted) and the corpus in reverse order
    rng = np.random.default_rng(99)
    noise = make_bundle(
        "mp-1", [26, 8, 26, 8], make_trajectory(rng, [26, 8, 26, 8], 2), static=False, r2scan=False, ref_structure=False
    )
    load(other_engine, [noise])
    with other_engine.begin() as conn:
        conn.execute(text("DELETE FROM materials WHERE external_id = 'mp-1'"))
    load(other_engine, list(reversed(bundles)))
    second = freeze_dataset(other_engine, curate(other_engine), "demo", energy_label="uncorrected")
    assert second.content_hash == frozen.content_hash

    a = export_parquet(engine, "demo", tmp_path / "a", row_group_size=9).path
    again = export_parquet(engine, "demo", tmp_path / "again", row_group_size=9).path
    b = export_parquet(other_engine, "demo", tmp_path / "b", row_group_size=9).path
    assert a.read_bytes() == again.read_bytes() == b.read_bytes()
    create_split(engine, "demo", (8, 1, 1), 2)
    create_split(other_engine, "demo", (8, 1, 1), 2)
    one = export_parquet(engine, "demo@2", tmp_path / "a").path
    two = export_parquet(other_engine, "demo@2", tmp_path / "b").path
    assert one.read_bytes() == two.read_bytes()


def test_round_trips_row_groups_and_arrival_order_do_not_change_the_file(
    engine, frozen, database_url, monkeypatch, tmp_path
):
    """Many small round trips merged into decoded chunks, row groups across chunks, frames arriving out of order."""
    import crossfid.curation.parquet as parquet

    reference = export_parquet(engine, "demo", tmp_path / "reference", row_group_size=7).path
    monkeypatch.setattr(parquet, "_FETCH", 2)  # two frames per query, some without forces, stress or magmoms
    monkeypatch.setattr(parquet, "_DECODE", 5)  # five frames decoded at once: row groups of 7 span chunks
    small = export_parquet(engine, "demo", tmp_path / "small", row_group_size=7)
    assert small.path.read_bytes() == reference.read_bytes()
    assert {pq.ParquetFile(small.path).metadata.row_group(i).num_rows for i in range(small.n_row_groups - 1)} == {7}

    # a hash join returns the frames in table order, not in the order asked for: the file is the same
    shuffled = make_engine(database_url, connect_args={"options": "-c enable_nestloop=off -c enable_mergejoin=off"})
    with shuffled.connect() as conn:  # the one round trip of the export below, as it arrives
        by_hash = dict(conn.execute(text("SELECT content_hash, id FROM frames")).all())
        ids = [by_hash[h] for h in _members(engine, frozen.id)]
        arrived = conn.exec_driver_sql(parquet._FRAMES_QUERY, ("{" + ",".join(map(str, ids)) + "}",)).one()
    assert parquet._array(arrived[1], ">i8").tolist() != list(range(1, len(ids) + 1))  # out of order
    monkeypatch.setattr(parquet, "_FETCH", 512)
    monkeypatch.setattr(parquet, "_DECODE", 8192)
    again = export_parquet(shuffled, "demo", tmp_path / "shuffled", row_group_size=7).path
    shuffled.dispose()
    assert again.read_bytes() == reference.read_bytes()


def test_a_failing_query_leaves_no_file_and_no_thread(engine, frozen, monkeypatch, tmp_path):
    import threading

    import crossfid.curation.parquet as parquet

    before = threading.active_count()
    monkeypatch.setattr(parquet, "_FETCH", 3)
    monkeypatch.setattr(parquet, "_DECODE", 6)
    # the server refuses every round trip that holds one of the frames loaded after the twelfth
    with engine.connect() as conn:
        ids = sorted(conn.execute(text("SELECT frame_id FROM dataset_frames")).scalars())
    refused = parquet._FRAMES_QUERY.replace(
        "JOIN frames f ON f.id = o.id", f"JOIN frames f ON f.id = o.id AND 1 / (f.id < {ids[12]})::int = 1"
    )
    monkeypatch.setattr(parquet, "_FRAMES_QUERY", refused)
    with pytest.raises(psycopg.errors.DivisionByZero):
        export_parquet(engine, "demo", tmp_path, row_group_size=6)
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == before


# --------------------------------------------------------------------------- command line


def test_export_command_writes_parquet_and_keeps_the_other_formats(engine, frozen, database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(dataset_app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result

    wrote = run("export", "demo", "--format", "parquet", "--out", str(tmp_path), "--row-group-size", "10").output
    assert "demo-v1.parquet" in wrote and f"{frozen.n_frames:,} frames" in wrote
    assert pq.ParquetFile(tmp_path / "demo-v1.parquet").metadata.num_row_groups == math.ceil(frozen.n_frames / 10)

    run("split", "demo", "--seed", "0")
    run("export", "demo@0", "-f", "parquet", "-o", str(tmp_path), "--part", "val,test")
    assert (tmp_path / "demo-v1_material_0.8-0.1-0.1_seed0_val-test.parquet").exists()
    # extxyz still takes a dataset name that has one split, and writes a file per part
    extxyz = run("export", "demo", "--out", str(tmp_path / "xyz")).output
    assert extxyz.count("wrote") == 3 and len(list((tmp_path / "xyz").glob("*.extxyz"))) == 3

    failed = runner.invoke(dataset_app, ["export", "demo", "-f", "parquet", "-o", str(tmp_path), "--part", "test"])
    assert failed.exit_code == 1 and "names a dataset" in str(failed.exception)
    failed = runner.invoke(dataset_app, ["export", "nope", "-f", "parquet", "-o", str(tmp_path)])
    assert failed.exit_code == 1 and "no dataset 'nope'" in str(failed.exception)
