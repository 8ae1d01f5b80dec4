"""Frozen datasets and splits cannot be changed indirectly (revision 0006), and ``dataset verify`` catches
what was changed behind the triggers' back. Plain SQL, as a superuser connection would send it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from support.curation_corpus import corpus, curate, load, make_bundle, make_trajectory
from typer.testing import CliRunner

from crossfid.benchmarks.leaderboard import refresh
from crossfid.cli.dataset import app as dataset_app
from crossfid.curation.datasets import freeze_dataset
from crossfid.curation.split_store import create_split
from crossfid.curation.verify import VerificationError, require_verified_split, verify_dataset
from crossfid.hashing import subset_content_hash
from crossfid.ingest.records import Bundle, Frame, Material, ReferenceEntry, Task


@pytest.fixture(scope="module")
def bundles() -> list[Bundle]:
    return corpus()


@dataclass
class Frozen:
    run: int
    dataset: int  # demo:1, GGA frames of the run
    split: int  # 8:1:1 seed 0 with a subset of 5
    frame: int  # a member frame of demo:1
    task: int  # its task
    material: int  # its material
    outsider: int  # an r2SCAN frame of the run, in no dataset


@pytest.fixture
def frozen(engine: Engine, bundles: list[Bundle]) -> Frozen:
    load(engine, bundles)
    run = curate(engine)
    info = freeze_dataset(engine, run, "demo", ["GGA"], energy_label="uncorrected")
    split = create_split(engine, "demo", (8, 1, 1), 0, subset_sizes=[5])
    with engine.connect() as conn:
        frame, task, material = conn.execute(
            text(
                "SELECT f.id, f.task_id, t.material_id FROM dataset_frames df JOIN frames f ON f.id = df.frame_id "
                "JOIN tasks t ON t.id = f.task_id WHERE df.dataset_id = :d ORDER BY f.id LIMIT 1"
            ),
            {"d": info.id},
        ).one()
        outsider = conn.scalar(
            text("SELECT f.id FROM frames f JOIN tasks t ON t.id = f.task_id WHERE t.fidelity = 'r2SCAN' LIMIT 1")
        )
    return Frozen(run, info.id, split.id, frame, task, material, outsider)


def refused(engine: Engine, *statements: str, **params) -> str:
    """Run ``statements`` in one transaction, require an integrity error; its message."""
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)
    return str(caught.value.orig)


def run_sql(engine: Engine, *statements: str, **params) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def scalar(engine: Engine, statement: str, **params):
    with engine.connect() as conn:
        return conn.scalar(text(statement), params)


def scratch_dataset(engine: Engine, run: int, fidelity: str = "r2SCAN") -> int:
    """An unfrozen dataset holding the run's frames of ``fidelity``."""
    with engine.begin() as conn:
        dataset = conn.scalar(
            text(
                "INSERT INTO datasets (name, version, fidelities, curation_run_id, config, config_hash) "
                "VALUES ('scratch', 1, ARRAY[:fidelity], :run, '{}', repeat('0', 64)) RETURNING id"
            ),
            {"run": run, "fidelity": fidelity},
        )
        conn.execute(
            text(
                "INSERT INTO dataset_frames (dataset_id, frame_id, material_id) "
                "SELECT :d, f.id, t.material_id FROM frames f JOIN tasks t ON t.id = f.task_id "
                "WHERE t.fidelity = :fidelity"
            ),
            {"d": dataset, "fidelity": fidelity},
        )
    return dataset


def scratch_split(engine: Engine, dataset: int, seed: int = 99, n_members: int = 3) -> int:
    """An unfrozen split of ``dataset`` with its first ``n_members`` frames in 'test'."""
    with engine.begin() as conn:
        split = conn.scalar(
            text(
                "INSERT INTO splits (dataset_id, strategy, ratios, seed) "
                "VALUES (:d, 'material', '{0.5,0.25,0.25}', :seed) RETURNING id"
            ),
            {"d": dataset, "seed": seed},
        )
        conn.execute(
            text(
                "INSERT INTO split_members (split_id, frame_id, material_id, part) "
                "SELECT :s, frame_id, material_id, 'test' FROM dataset_frames WHERE dataset_id = :d "
                "ORDER BY frame_id LIMIT :n"
            ),
            {"s": split, "d": dataset, "n": n_members},
        )
    return split


def train_ids(engine: Engine, split: int) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text("SELECT frame_id FROM split_members WHERE split_id = :s AND part = 'train' ORDER BY frame_id"),
                {"s": split},
            )
        )


# --------------------------------------------------------------------------- memberships


def test_members_cannot_be_moved_into_a_frozen_dataset(engine, frozen):
    scratch = scratch_dataset(engine, frozen.run)
    n_frozen = scalar(engine, "SELECT count(*) FROM dataset_frames WHERE dataset_id = :d", d=frozen.dataset)
    message = refused(
        engine, "UPDATE dataset_frames SET dataset_id = :d WHERE dataset_id = :s", d=frozen.dataset, s=scratch
    )
    assert "dataset demo:1" in message and "is frozen" in message and "UPDATE on dataset_frames" in message
    # and the other way (OLD side), and a single row
    assert "demo:1" in refused(
        engine, "UPDATE dataset_frames SET dataset_id = :s WHERE dataset_id = :d", d=frozen.dataset, s=scratch
    )
    assert "demo:1" in refused(
        engine,
        "UPDATE dataset_frames SET dataset_id = :d WHERE dataset_id = :s AND frame_id = :f",
        d=frozen.dataset,
        s=scratch,
        f=frozen.outsider,
    )
    assert "demo:1" in refused(
        engine,
        "INSERT INTO dataset_frames SELECT :d, frame_id, material_id FROM dataset_frames WHERE dataset_id = :s",
        d=frozen.dataset,
        s=scratch,
    )
    assert scalar(engine, "SELECT count(*) FROM dataset_frames WHERE dataset_id = :d", d=frozen.dataset) == n_frozen

    # the scratch dataset itself is not frozen: it can be changed and deleted
    run_sql(engine, "UPDATE dataset_frames SET material_id = material_id WHERE dataset_id = :s", s=scratch)
    run_sql(engine, "DELETE FROM dataset_frames WHERE dataset_id = :s", "DELETE FROM datasets WHERE id = :s", s=scratch)
    assert scalar(engine, "SELECT count(*) FROM datasets WHERE id = :s", s=scratch) == 0


def test_members_cannot_be_moved_into_a_frozen_split(engine, frozen):
    scratch = scratch_split(engine, frozen.dataset)
    message = refused(engine, "UPDATE split_members SET split_id = :f WHERE split_id = :s", f=frozen.split, s=scratch)
    assert f"split {frozen.split} of dataset demo:1 is frozen" in message and "UPDATE on split_members" in message
    assert "is frozen" in refused(
        engine, "UPDATE split_members SET split_id = :s WHERE split_id = :f", f=frozen.split, s=scratch
    )
    assert "is frozen" in refused(
        engine,
        "INSERT INTO split_members SELECT :f, frame_id, material_id, 'train' FROM dataset_frames WHERE dataset_id = :d "
        "AND frame_id NOT IN (SELECT frame_id FROM split_members WHERE split_id = :f)",
        f=frozen.split,
        d=scratch_dataset(engine, frozen.run),
    )
    # the unfrozen split can still be edited and deleted
    run_sql(engine, "UPDATE split_members SET part = 'val' WHERE split_id = :s", s=scratch)
    run_sql(engine, "DELETE FROM split_members WHERE split_id = :s", "DELETE FROM splits WHERE id = :s", s=scratch)


def test_a_split_can_only_be_frozen_over_a_frozen_dataset_with_exactly_its_frames(engine, frozen):
    digest = "ab" * 32
    partial = scratch_split(engine, frozen.dataset)
    message = refused(engine, "UPDATE splits SET frozen = true, content_hash = :h WHERE id = :s", s=partial, h=digest)
    assert "cannot be frozen" in message and "not exactly" in message and "demo:1" in message
    scratch = scratch_dataset(engine, frozen.run)
    over_scratch = scratch_split(engine, scratch, n_members=10**6)  # all its frames
    message = refused(
        engine, "UPDATE splits SET frozen = true, content_hash = :h WHERE id = :s", s=over_scratch, h=digest
    )
    assert "scratch:1" in message and "is not frozen" in message
    assert "cannot be frozen" in refused(
        engine,
        "INSERT INTO splits (dataset_id, strategy, ratios, seed, frozen, content_hash) "
        "VALUES (:d, 'material', '{1,0,0}', 5, true, :h)",
        d=frozen.dataset,
        h=digest,
    )


# --------------------------------------------------------------------------- subsets


def test_subsets_of_a_frozen_split_are_only_its_deterministic_ones(engine, frozen):
    with engine.connect() as conn:
        hash_of = dict(conn.execute(text("SELECT id, content_hash FROM frames")).all())
    stored = scalar(engine, "SELECT frame_ids FROM split_subsets WHERE split_id = :s AND size = 5", s=frozen.split)
    test_ids = scalar(
        engine, "SELECT array_agg(frame_id) FROM split_members WHERE split_id = :s AND part = 'test'", s=frozen.split
    )

    def insert(size: int, ids: list[int], digest: str | None = None) -> str:
        digest = digest or subset_content_hash(hash_of[i] for i in ids)
        return refused(
            engine,
            "INSERT INTO split_subsets (split_id, size, content_hash, frame_ids) VALUES (:s, :n, :h, :ids)",
            s=frozen.split,
            n=size,
            h=digest,
            ids=ids,
        )

    assert "deterministic nested training subset" in insert(2, test_ids[:2])  # test frames into training
    assert "deterministic" in insert(3, list(reversed(stored[:3])))  # right frames, wrong order
    assert "deterministic" in insert(3, stored[:3], "cd" * 32)  # right frames, wrong hash
    assert "deterministic" in insert(4, [i for i in train_ids(engine, frozen.split) if i not in stored][:4])
    message = refused(engine, "UPDATE split_subsets SET frame_ids = frame_ids WHERE split_id = :s", s=frozen.split)
    assert "is frozen" in message and "subsets" in message
    scratch = scratch_split(engine, frozen.dataset)
    run_sql(
        engine,
        "INSERT INTO split_subsets (split_id, size, content_hash, frame_ids) VALUES (:s, 1, :h, :ids)",
        s=scratch,
        h=subset_content_hash([hash_of[test_ids[0]]]),
        ids=test_ids[:1],
    )  # an unfrozen split's subsets are free ...
    assert "is frozen" in refused(
        engine, "UPDATE split_subsets SET split_id = :f WHERE split_id = :s", f=frozen.split, s=scratch
    )
    assert "cannot be truncated" in refused(engine, "TRUNCATE split_subsets")

    # ... and a frozen split gets exactly the subsets create_split computes (the SQL check agrees with Python)
    again = create_split(engine, "demo", (8, 1, 1), 0, subset_sizes=[3, 7, 5])
    assert not again.created and list(again.subsets) == [3, 5, 7]
    seven = scalar(engine, "SELECT frame_ids FROM split_subsets WHERE split_id = :s AND size = 7", s=frozen.split)
    assert seven[:5] == stored and len(seven) == 7
    assert verify_dataset(engine, "demo").ok


def _twin_bundles() -> list[Bundle]:
    """Six materials in three pairs whose frames have identical content: ties of the subset order on the hash."""
    bundles = []
    for k in range(3):
        rng = np.random.default_rng(70 + k)
        numbers = [12 + k, 8] * 2
        frames = make_trajectory(rng, numbers, 3)
        for twin in (0, 1):
            copies = [Frame(**{**f.__dict__}) for f in frames]
            bundles.append(
                make_bundle(
                    f"mp-{700 + 10 * twin + k}", numbers, copies, static=False, r2scan=False, ref_structure=False
                )
            )
    return bundles


def test_subset_ties_between_identical_frames_follow_the_stable_frame_order(engine):
    bundles = _twin_bundles()
    load(engine, bundles)
    freeze_dataset(engine, curate(engine), "twins", energy_label="uncorrected")
    split = create_split(engine, "twins", (1, 0, 0), 4)
    n_train = split.parts["train"].n_frames
    n_distinct = scalar(
        engine,
        "SELECT count(DISTINCT f.content_hash) FROM split_members sm JOIN frames f ON f.id = sm.frame_id "
        "WHERE sm.split_id = :s",
        s=split.id,
    )
    assert n_train > n_distinct > 1  # identical frames in the training part
    for size in range(1, n_train + 1):  # each size is added to the frozen split and checked by the trigger
        create_split(engine, "twins", (1, 0, 0), 4, subset_sizes=[size])
    result = verify_dataset(engine, "twins")
    assert result.ok and len(result.checks) == 2 + n_train


# --------------------------------------------------------------------------- frames, tasks, materials


def test_frames_tasks_and_materials_of_a_frozen_dataset_cannot_be_changed(engine, frozen):
    f = {"f": frozen.frame}
    for statement in (
        "UPDATE frames SET energy = energy + 1 WHERE id = :f",
        "UPDATE frames SET forces = NULL WHERE id = :f",
        "UPDATE frames SET content_hash = repeat('a', 64) WHERE id = :f",
        "DELETE FROM frames WHERE id = :f",
    ):
        message = refused(engine, statement, **f)
        assert f"frame {frozen.frame} is a member of frozen dataset demo:1 (id {frozen.dataset})" in message, message
        assert "cannot be changed" in message
    t = {"t": frozen.task}
    for statement in (
        "UPDATE tasks SET fidelity = 'r2SCAN' WHERE id = :t",
        "UPDATE tasks SET hubbards = '{\"Fe\": 5.3}', is_hubbard = true WHERE id = :t",
        "DELETE FROM tasks WHERE id = :t",
    ):
        message = refused(engine, statement, **t)
        assert f"task {frozen.task}" in message and "frozen dataset demo:1" in message, message
    m = {"m": frozen.material}
    for statement in (
        "UPDATE materials SET formula = 'Xx' WHERE id = :m",
        "UPDATE materials SET external_id = 'mp-renamed' WHERE id = :m",
        "DELETE FROM materials WHERE id = :m",
    ):
        message = refused(engine, statement, **m)
        assert "material mp-" in message and "frozen dataset demo:1" in message, message
    for table in ("frames", "tasks", "materials"):
        assert "cannot be truncated" in refused(engine, f"TRUNCATE {table} CASCADE")

    # a whole-table update is refused at the first frozen row
    assert "frozen dataset demo:1" in refused(engine, "UPDATE frames SET magmoms = NULL")
    # updates that change nothing a dataset depends on pass: no-ops, provenance set NULL by deleting an ingest run
    run_sql(engine, "UPDATE frames SET energy = energy WHERE id = :f", **f)
    run_sql(engine, "UPDATE materials SET formula = formula WHERE id = :m", **m)
    run_sql(engine, "DELETE FROM ingest_runs")
    assert scalar(engine, "SELECT ingest_run_id FROM tasks WHERE id = :t", **t) is None
    # frames of the run that no dataset holds can be changed, but not deleted: the run's decision on them is frozen
    run_sql(engine, "UPDATE frames SET magmoms = NULL WHERE id = :o", o=frozen.outsider)
    message = refused(engine, "DELETE FROM frames WHERE id = :o", o=frozen.outsider)
    assert f"decision of curation run {frozen.run} on frame {frozen.outsider}" in message and "demo:1" in message


def test_decisions_and_run_of_a_frozen_dataset_cannot_be_changed(engine, frozen, bundles):
    r = {"r": frozen.run}
    for statement in (
        "UPDATE frame_decisions SET accepted = NOT accepted WHERE run_id = :r",
        "UPDATE frame_decisions SET rule = 'other' WHERE run_id = :r AND frame_id = (SELECT min(frame_id) "
        "FROM frame_decisions WHERE run_id = :r)",
        "DELETE FROM frame_decisions WHERE run_id = :r",
        "UPDATE curation_runs SET config_hash = repeat('1', 64) WHERE id = :r",
        "UPDATE curation_runs SET status = 'failed' WHERE id = :r",
        "DELETE FROM curation_runs WHERE id = :r",
    ):
        message = refused(engine, statement, **r)
        assert f"curation run {frozen.run}" in message and "frozen dataset demo:1" in message, message
    assert "cannot be truncated" in refused(engine, "TRUNCATE frame_decisions")
    assert "cannot be truncated" in refused(engine, "TRUNCATE curation_runs CASCADE")

    # a later run: its decisions can be written, changed, and not moved into the frozen run
    later = curate(engine)
    run_sql(engine, "UPDATE frame_decisions SET message = 'checked' WHERE run_id = :l", l=later)
    message = refused(
        engine,
        "UPDATE frame_decisions SET run_id = :r WHERE run_id = :l AND frame_id = :f",
        l=later,
        f=frozen.outsider,
        **r,
    )
    assert "frozen dataset demo:1" in message
    # a new frame (ingested after the freeze) cannot get a decision in the frozen run
    rng = np.random.default_rng(5)
    numbers = [26, 8, 26, 8]
    load(
        engine,
        [
            make_bundle(
                "mp-5000", numbers, make_trajectory(rng, numbers, 2), static=False, r2scan=False, ref_structure=False
            )
        ],
    )
    with engine.connect() as conn:
        new_frame, new_material = conn.execute(
            text(
                "SELECT f.id, t.material_id FROM frames f JOIN tasks t ON t.id = f.task_id "
                "JOIN materials m ON m.id = t.material_id WHERE m.external_id = 'mp-5000' LIMIT 1"
            )
        ).one()
    message = refused(
        engine,
        "INSERT INTO frame_decisions (run_id, frame_id, material_id, accepted, rule, message) "
        "VALUES (:r, :f, :m, true, 'energy_unique', '')",
        f=new_frame,
        m=new_material,
        **r,
    )
    assert f"curation run {frozen.run} is the run of frozen dataset demo:1" in message


def test_legitimate_writes_still_work(engine, frozen):
    # another version from the same run, another split with subsets of an existing one
    second = freeze_dataset(engine, frozen.run, "demo", ["GGA", "r2SCAN"], energy_label="uncorrected")
    assert second.version == 2 and second.frozen
    assert create_split(engine, "demo:1", (8, 1, 1), 1, subset_sizes=[4]).created
    assert create_split(engine, "demo:2", (6, 2, 2), 0, "structure-group", [3]).created
    # ingest new tasks; change and delete frames no frozen dataset holds and no frozen run decided
    rng = np.random.default_rng(8)
    numbers = [29, 9, 29, 9]
    new = make_bundle(
        "mp-6000", numbers, make_trajectory(rng, numbers, 3), static=True, r2scan=False, ref_structure=False
    )
    load(engine, [new])
    material = Material.from_atomic_numbers("mp-6001", [30, 9])
    extra = Frame(0, np.eye(3) * 4, np.array([30, 9], dtype=np.int16), np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), -7.0)
    load(
        engine,
        [
            Bundle(
                material=material,
                location="x",
                tasks=[Task("t-6001", "GGA", "PBE", "relax", [extra])],
                references=[ReferenceEntry(fidelity="GGA", energy_per_atom=-3.5)],
            )
        ],
    )
    run_sql(
        engine,
        "UPDATE frames SET energy = -7.5 WHERE task_id IN (SELECT t.id FROM tasks t JOIN materials m "
        "ON m.id = t.material_id WHERE m.external_id = 'mp-6001')",
    )
    run_sql(engine, "DELETE FROM materials WHERE external_id = 'mp-6001'")
    # a new curation run over everything, frozen as a new dataset
    later = curate(engine)
    third = freeze_dataset(engine, later, "later", energy_label="uncorrected")
    assert third.n_frames > second.n_frames
    # a scratch dataset is made, changed and deleted
    scratch = scratch_dataset(engine, later, "GGA")
    run_sql(engine, "DELETE FROM dataset_frames WHERE dataset_id = :s", "DELETE FROM datasets WHERE id = :s", s=scratch)
    for name in ("demo:1", "demo:2", "later"):
        assert verify_dataset(engine, name).ok, name


# --------------------------------------------------------------------------- verify


@pytest.fixture
def cli(database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(dataset_app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result.output

    return run


def test_verify_passes_on_intact_data(engine, frozen, cli):
    output = cli("verify", "demo")
    lines = output.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["OK", "OK", "OK"]
    assert "dataset demo:1" in lines[0] and f"split {frozen.split} of demo:1" in lines[1] and "subset 5" in lines[2]
    content_hash = scalar(engine, "SELECT content_hash FROM datasets WHERE id = :d", d=frozen.dataset)
    assert content_hash in lines[0]
    assert "all 3 objects match" in lines[-1]
    assert cli("verify", "demo@1") == output == cli("verify", "demo:1") == cli("verify", str(frozen.dataset))
    summary = require_verified_split(engine, frozen.split)
    assert summary.ok and [c.kind for c in summary.checks] == ["dataset", "split", "subset"]


def test_verify_fails_after_a_frame_changed_behind_the_triggers_back(engine, frozen, cli):
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # triggers do not fire
        conn.execute(text("UPDATE frames SET energy = energy + 0.5 WHERE id = :f"), {"f": frozen.frame})
    output = cli("verify", "demo@1", code=4)
    mismatch = [line for line in output.splitlines() if line.startswith("MISMATCH")]
    assert mismatch[0].startswith("MISMATCH dataset demo:1")
    assert "1 of" in mismatch[0] and str(frozen.frame) in mismatch[0] and "content hash stored" in mismatch[0]
    assert any(f"split {frozen.split}" in line for line in mismatch)
    assert "dataset demo:1:" in output and "do not match" in output

    # the leaderboard refuses to benchmark on it, before touching any model
    with pytest.raises(VerificationError, match=r"demo:1.*failed verification.*MISMATCH dataset demo:1"):
        refresh(engine, frozen.split, benchmarks={"unused": object()})

    # rewriting the frame's stored hash too does not hide the change
    from crossfid.curation.verify import frame_hash_from_row

    with engine.begin() as conn:
        row = conn.execute(text("SELECT * FROM frames WHERE id = :f"), {"f": frozen.frame}).one()
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text("UPDATE frames SET content_hash = :h WHERE id = :f"),
            {"h": frame_hash_from_row(row), "f": frozen.frame},
        )
    result = verify_dataset(engine, "demo")
    assert not result.ok and result.checks[0].problems == [] and result.checks[0].stored != result.checks[0].computed


def test_verify_fails_after_a_split_member_moved_with_its_trigger_disabled(engine, frozen, cli):
    run_sql(
        engine,
        "ALTER TABLE split_members DISABLE TRIGGER split_members_frozen",
        "UPDATE split_members SET part = 'train' WHERE split_id = :s AND part = 'test'",
        "ALTER TABLE split_members ENABLE TRIGGER split_members_frozen",
        s=frozen.split,
    )
    output = cli("verify", "demo", code=4)
    lines = output.splitlines()
    assert lines[0].startswith("OK dataset demo:1")  # the frames are intact ...
    assert lines[1].startswith(f"MISMATCH split {frozen.split} of demo:1")  # ... the split is not
    with pytest.raises(VerificationError, match=f"split {frozen.split}"):
        require_verified_split(engine, frozen.split)
    cli("verify", "nope", code=1)
