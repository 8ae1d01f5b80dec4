"""Training data from database splits: labelled frames, CHGNet targets, validation, the graph cache.

One database per module (per server): the small demo corpus, its GGA/GGA+U frames
(labelled by CHGNet v0.3.0) curated on a real Dask cluster, frozen and split by
material with nested training subsets. The tests only read it.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
import torch
from dask.distributed import Client, LocalCluster
from psycopg import sql
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from crossfid.curation.datasets import freeze_dataset
from crossfid.curation.pipeline import run_curation
from crossfid.curation.split_store import create_split
from crossfid.db import migrate
from crossfid.db.engine import make_engine
from crossfid.db.models import Frame, Material, SplitMember, SplitSubset
from crossfid.potentials.base import ModelSpec, load_potential
from crossfid.training.data import (
    PARTS,
    LabelledFrame,
    available_targets,
    frame_targets,
    load_split_frames,
    validate_frames,
)
from crossfid.training.graph_cache import GraphCache, converter_key

FIDELITIES = ["GGA", "GGA+U"]
SUBSET_SIZES = (2, 5)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def split_db(server_url, demo_corpus, client):
    """(engine, split id): the demo corpus's GGA/GGA+U frames curated, frozen as ``demo`` and split 3:1:1."""
    from crossfid.ingest.demo import read_demo_corpus
    from crossfid.ingest.loader import ingest

    name = f"crossfid_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        assert ingest(engine, "demo", "demo", read_demo_corpus(demo_corpus.path)).quarantined == 0
        summary = run_curation(engine, url, FIDELITIES, client=client)
        freeze_dataset(engine, summary.run_id, "demo", energy_label="uncorrected")
        split = create_split(engine, "demo", (3, 1, 1), seed=0, subset_sizes=SUBSET_SIZES)
        assert all(split.parts[part].n_frames > 0 for part in PARTS)
        yield engine, split.id
    finally:
        engine.dispose()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine
    chgnet = load_potential("chgnet-0.3.0").model
    chgnet.eval()
    yield chgnet
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_frames(split_db):
    engine, split_id = split_db
    with Session(engine) as session:
        return load_split_frames(session, split_id, "train")


def _hash(i: int) -> str:
    return f"{i:064x}"


def _frame(i: int = 1, **changes) -> LabelledFrame:
    """A 2-atom NaCl frame with every label (forces eV/Å, stress GPa, magmoms μB); ``changes`` override fields."""
    fields = dict(
        frame_id=i,
        content_hash=_hash(i),
        material=f"demo-{i}",
        lattice=np.eye(3) * 4.0,
        atomic_numbers=np.array([11, 17]),
        frac_coords=np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]),
        energy_per_atom=-3.5,
        forces=np.array([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]]),
        stress=np.diag([1.0, 2.0, 3.0]),
        magmoms=np.array([-0.2, 0.3]),
    )
    fields.update(changes)
    return LabelledFrame(**fields)


# --------------------------------------------------------------------------- loading


def test_each_part_holds_exactly_its_members_with_the_stored_labels(split_db):
    engine, split_id = split_db
    with Session(engine) as session:
        loaded_ids = set()
        for part in PARTS:
            frames = load_split_frames(session, split_id, part)
            members = dict(
                session.execute(
                    select(SplitMember.frame_id, Material.external_id)
                    .join(Material, Material.id == SplitMember.material_id)
                    .where(SplitMember.split_id == split_id, SplitMember.part == part)
                ).all()
            )
            assert len(frames) == len(members) > 0
            assert {f.frame_id for f in frames} == set(members)
            assert [(f.content_hash, f.frame_id) for f in frames] == sorted(
                (f.content_hash, f.frame_id) for f in frames
            )
            loaded_ids |= set(members)
            for frame in frames:
                row = session.get(Frame, frame.frame_id)
                n = row.n_atoms
                label = (row.corrected_energy if row.corrected_energy is not None else row.energy) / n
                assert frame.material == members[frame.frame_id] and frame.content_hash == row.content_hash
                assert frame.energy_per_atom == label
                assert np.array_equal(frame.lattice, np.reshape(row.lattice, (3, 3)))
                assert np.array_equal(frame.atomic_numbers, row.atomic_numbers) and frame.atomic_numbers.shape == (n,)
                assert np.array_equal(frame.frac_coords, np.reshape(row.frac_coords, (n, 3)))
                for name, shape in (("forces", (n, 3)), ("stress", (3, 3)), ("magmoms", (n,))):
                    stored, value = getattr(row, name), getattr(frame, name)
                    assert (value is None) == (stored is None), name
                    if stored is not None:
                        assert value.shape == shape and np.array_equal(value.ravel(), stored), name
                assert not frame.lattice.flags.writeable
        n_members = session.scalar(text("SELECT count(*) FROM split_members WHERE split_id = :id"), {"id": split_id})
        assert len(loaded_ids) == n_members
        assert validate_frames(load_split_frames(session, split_id, "train")) == []


def test_energy_label_is_the_datasets_choice_not_whatever_a_frame_has(split_db):
    """The split's dataset was frozen with --energy-label uncorrected: a corrected energy on a frame is not read
    (the mp2020 label is tested in tests/curation/test_datasets.py)."""
    engine, split_id = split_db
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn)
        first = load_split_frames(session, split_id, "train")[0]
        row = session.get(Frame, first.frame_id)
        assert row.corrected_energy is None  # the demo corpus has no corrections
        conn.execute(text("ALTER TABLE frames DISABLE TRIGGER frames_frozen"))  # the frame is frozen; rolled back
        conn.execute(update(Frame).where(Frame.id == first.frame_id).values(corrected_energy=row.energy - 1.5))
        again = load_split_frames(session, split_id, "train")[0]
        assert again.frame_id == first.frame_id
        assert again.energy_per_atom == pytest.approx(row.energy / row.n_atoms, rel=0, abs=1e-12)
        assert again.energy_per_atom == first.energy_per_atom
        session.close()
        outer.rollback()


def test_nested_subsets_are_selected_and_a_missing_one_is_a_clear_error(split_db):
    engine, split_id = split_db
    with Session(engine) as session:
        train_ids = {f.frame_id for f in load_split_frames(session, split_id, "train")}
        previous: set[int] = set()
        for size in SUBSET_SIZES:
            frames = load_split_frames(session, split_id, "train", subset_size=size)
            stored = session.scalar(
                select(SplitSubset.frame_ids).where(SplitSubset.split_id == split_id, SplitSubset.size == size)
            )
            ids = {f.frame_id for f in frames}
            assert len(frames) == size and ids == set(stored) and previous <= ids <= train_ids
            assert [f.content_hash for f in frames] == sorted(f.content_hash for f in frames)
            previous = ids
        with pytest.raises(ValueError, match=r"no training subset of size 3; subset sizes: 2, 5"):
            load_split_frames(session, split_id, "train", subset_size=3)
        with pytest.raises(ValueError, match="subsets of the training part"):
            load_split_frames(session, split_id, "val", subset_size=2)
        with pytest.raises(ValueError, match="unknown split part 'validation'"):
            load_split_frames(session, split_id, "validation")
        with pytest.raises(ValueError, match="no split with id 999999"):
            load_split_frames(session, 999999, "train")


# --------------------------------------------------------------------------- targets


def test_available_targets_drops_absent_labels_and_keeps_partial_ones():
    full, bare = _frame(1, magmoms=None), _frame(2, forces=None, magmoms=None)
    targets, warnings = available_targets([full, bare])
    assert targets == "efs"
    assert len(warnings) == 2
    assert "Only 1 of 2 frames have force labels" in warnings[0] and "NaN loss" in warnings[0]
    assert warnings[1].startswith("No frame has magmom labels") and "dropped" in warnings[1]

    assert available_targets([full, bare], "se") == ("es", [])
    with_m = _frame(3)
    targets, warnings = available_targets([with_m, bare], "mfe")
    assert targets == "efm" and len(warnings) == 2 and "NaN loss" not in warnings[1]
    assert available_targets([with_m], "efsm") == ("efsm", [])

    for bad, message in (("fs", "must include the energy"), ("efx", "distinct letters"), ("eef", "distinct letters")):
        with pytest.raises(ValueError, match=message):
            available_targets([full], bad)
    with pytest.raises(ValueError, match="no frames"):
        available_targets([])
    with pytest.raises(ValueError, match="none of the 1 frames has an energy"):
        available_targets([_frame(4, energy_per_atom=None)])


def test_frame_targets_have_chgnet_shapes_units_and_nan_for_missing_labels():
    from chgnet.data.dataset import TORCH_DTYPE, collate_graphs

    frame = _frame(1)
    targets = frame_targets(frame, "efsm")
    assert list(targets) == ["e", "f", "s", "m"]
    assert all(t.dtype == TORCH_DTYPE for t in targets.values())
    assert targets["e"].shape == () and targets["e"].item() == pytest.approx(-3.5)
    assert torch.equal(targets["f"], torch.tensor(frame.forces, dtype=TORCH_DTYPE))
    assert torch.equal(targets["s"], torch.tensor(np.diag([1.0, 2.0, 3.0]), dtype=TORCH_DTYPE))  # GPa, not ×(-0.1)
    assert torch.equal(targets["m"], torch.tensor([0.2, 0.3], dtype=TORCH_DTYPE))  # abs(), as chgnet
    assert list(frame_targets(frame, "ef")) == ["e", "f"]

    missing = frame_targets(_frame(2, forces=None, stress=None, magmoms=None), "efsm")
    assert missing["f"].shape == (2, 3) and missing["s"].shape == (3, 3) and missing["m"].shape == (2,)
    assert all(torch.isnan(missing[k]).all() for k in "fsm")

    _, batch = collate_graphs([(None, targets), (None, missing)])
    assert batch["e"].shape == (2,) and len(batch["f"]) == 2 and len(batch["m"]) == 2

    with pytest.raises(ValueError, match=r"forces have shape \(3, 3\), expected \(2, 3\)"):
        frame_targets(_frame(3, forces=np.zeros((3, 3))), "ef")
    with pytest.raises(ValueError, match="must include the energy"):
        frame_targets(frame, "f")


def test_targets_equal_the_labellers_predictions_on_a_strained_frame(split_db, model):
    """Demo GGA/GGA+U labels come from SevenNet-MF-0's PBE modality: its prediction must reproduce our
    targets, in chgnet's units and stress sign (the same as CHGNet's own output, checked on its prediction)."""
    engine, split_id = split_db
    with Session(engine) as session:
        frames = [f for part in PARTS for f in load_split_frames(session, split_id, part) if f.stress is not None]
    frame = max(frames, key=lambda f: np.abs(f.stress).max())
    assert np.abs(frame.stress).max() > 0.5  # GPa: a strained cell, so a sign error could not hide
    (labels,) = load_potential(ModelSpec("sevennet-mf-0-pbe", family="SevenNet")).predict([frame.structure()])
    targets = frame_targets(frame, "efs")
    assert labels.stress == pytest.approx(targets["s"].numpy(), abs=1e-3, rel=1e-4)
    assert labels.energy == pytest.approx(targets["e"].item(), abs=1e-5)
    assert labels.forces == pytest.approx(targets["f"].numpy(), abs=1e-4)
    # chgnet's own stress has the targets' sign: compressed cells push outwards in both
    prediction = model.predict_structure(frame.structure(), task="efs")
    assert np.sign(np.trace(prediction["s"])) == np.sign(np.trace(targets["s"].numpy()))


def test_chgnet_loss_skips_nan_labels_but_is_nan_for_a_batch_without_any(model):
    """What the warnings of available_targets say, measured on chgnet's CombinedLoss."""
    from chgnet.data.dataset import collate_graphs
    from chgnet.trainer.trainer import CombinedLoss

    labelled = _frame(1, forces=np.array([[0.3, 0.1, 0.0], [-0.3, -0.1, 0.0]]))
    unlabelled = _frame(2, forces=None, stress=None, magmoms=None, energy_per_atom=None)
    graph = model.graph_converter(labelled.structure(), graph_id="g")
    loss = CombinedLoss(target_str="efsm", allow_missing_labels=True)

    def losses(frames):
        graphs, targets = collate_graphs([(graph, frame_targets(f, "efsm")) for f in frames])
        return loss(targets, model(graphs, task="efsm"))

    both, alone = losses([labelled, unlabelled]), losses([labelled])
    for key in ("loss", "e_MAE", "f_MAE", "s_MAE", "m_MAE"):
        assert both[key].item() == pytest.approx(alone[key].item(), rel=1e-5), key
    nothing = losses([unlabelled])  # MSE of an empty tensor is NaN
    assert torch.isnan(nothing["loss"]) and torch.isnan(nothing["f_MAE"]) and nothing["m_MAE_size"] == 0
    model.zero_grad()
    nothing["loss"].backward()  # but no NaN reaches the weights' gradients
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()


def test_validate_frames_names_each_unusable_frame_and_why():
    good = _frame(1)
    assert validate_frames([good]) == []
    bad = {
        2: (_frame(2, atomic_numbers=np.array([11, 95])), "atomic numbers [95] are outside CHGNet's 1..94"),
        3: (_frame(3, forces=np.array([[np.nan, 0, 0], [0, 0, 0]])), "forces are not all finite"),
        4: (_frame(4, forces=np.zeros((3, 3))), "forces have shape (3, 3), expected (2, 3)"),
        5: (_frame(5, energy_per_atom=float("inf")), "energy per atom is not finite"),
        6: (_frame(6, frac_coords=np.zeros((1, 3))), "fractional coordinates have shape (1, 3), expected (2, 3)"),
        7: (_frame(7, lattice=np.zeros((3, 3))), "lattice has no volume"),
        8: (_frame(8, magmoms=np.zeros(3)), "magmoms have shape (3,), expected (2,)"),
        9: (_frame(9, stress=np.zeros(9)), "stresses have shape (9,), expected (3, 3)"),
        10: (_frame(10, atomic_numbers=np.array([11.0, 17.0])), "atomic numbers are float64, not integers"),
    }
    reasons = validate_frames([good, *(frame for frame, _ in bad.values())])
    assert reasons == [f"frame {i} (demo-{i}, {_hash(i)[:12]}): {why}" for i, (_, why) in bad.items()]


# --------------------------------------------------------------------------- graph cache


def _assert_same_graph(a, b) -> None:
    for name, value in a.to_dict().items():
        other = getattr(b, name)
        if isinstance(value, torch.Tensor):
            assert value.dtype == other.dtype and value.requires_grad == other.requires_grad, name
            assert torch.equal(value, other), name
        else:
            assert value == other, name


def test_graph_cache_converts_each_frame_once_and_returns_identical_graphs(train_frames, model, tmp_path):
    converter = model.graph_converter
    unique = len({f.content_hash for f in train_frames})
    first = GraphCache(tmp_path, converter)
    graphs = first.graphs(train_frames)
    assert first.misses == unique and first.hits == len(train_frames) - unique and first.convert_seconds > 0

    second = GraphCache(tmp_path, converter)
    cached = second.graphs(train_frames)
    assert second.key == first.key and (second.hits, second.misses) == (len(train_frames), 0)
    assert second.convert_seconds == 0 and second.load_seconds > 0
    for frame, graph, again in zip(train_frames, graphs, cached, strict=True):
        fresh = converter(frame.structure(), graph_id=frame.content_hash, mp_id=frame.material)
        _assert_same_graph(fresh, graph)
        _assert_same_graph(fresh, again)
        assert again.graph_id == frame.content_hash and again.mp_id == frame.material

    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    expected = {Path(first.key[:16]) / f.content_hash[:2] / f"{f.content_hash}.pt" for f in train_frames}
    assert set(files) == expected  # nothing else: no temporary files left behind


def test_other_converter_settings_use_another_key_directory(model, tmp_path):
    from chgnet.graph import CrystalGraphConverter

    default = model.graph_converter
    same = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3, algorithm="fast")
    other = CrystalGraphConverter(atom_graph_cutoff=5, bond_graph_cutoff=3, algorithm="fast")
    legacy = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3, algorithm="legacy")
    assert converter_key(same) == converter_key(default)
    assert len({converter_key(c) for c in (default, other, legacy)}) == 3

    frame = _frame(1)
    GraphCache(tmp_path, default).graph(frame)
    cache = GraphCache(tmp_path, other)
    graph = cache.graph(frame)
    assert cache.misses == 1 and graph.atom_graph_cutoff == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({converter_key(default)[:16], cache.key[:16]})
    with pytest.raises(ValueError, match="not a content hash"):
        cache.path("../" + "0" * 61)


def test_unreadable_or_inconsistent_cache_files_are_converted_again(model, tmp_path, caplog):
    converter = model.graph_converter
    frame = _frame(1)
    reference = GraphCache(tmp_path, converter).graph(frame)
    path = GraphCache(tmp_path, converter).path(frame.content_hash)
    good = path.read_bytes()

    others = []  # graphs of other structures stored under this frame's name
    for i, changed in enumerate((dict(atomic_numbers=np.array([12, 8])), dict(lattice=np.eye(3) * 4.1))):
        other = GraphCache(tmp_path / f"other-{i}", converter)
        other.graph(_frame(1, **changed))
        others.append(other.path(_hash(1)).read_bytes())
    for content in (b"", good[: len(good) // 2], b"not a torch file", *others):
        path.write_bytes(content)
        cache = GraphCache(tmp_path, converter)
        with caplog.at_level(logging.WARNING, logger="crossfid.training.graph_cache"):
            graph = cache.graph(frame)
        assert (cache.hits, cache.misses) == (0, 1)
        assert "unusable" in caplog.text
        caplog.clear()
        _assert_same_graph(reference, graph)
        assert path.read_bytes() != content  # rewritten
        reread = GraphCache(tmp_path, converter)
        _assert_same_graph(reference, reread.graph(frame))
        assert reread.hits == 1


def test_a_failed_write_leaves_no_file_and_still_returns_the_graph(model, tmp_path, monkeypatch, caplog):
    real_save = torch.save

    def failing_save(obj, fh, *args, **kwargs):
        fh.write(b"half a file")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    cache = GraphCache(tmp_path, model.graph_converter)
    with caplog.at_level(logging.WARNING, logger="crossfid.training.graph_cache"):
        graph = cache.graph(_frame(1))
    assert graph.graph_id == _hash(1) and "no space left" in caplog.text
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []

    monkeypatch.setattr(torch, "save", real_save)
    cache.graph(_frame(1))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{_hash(1)}.pt"]
