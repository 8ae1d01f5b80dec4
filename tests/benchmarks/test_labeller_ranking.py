"""The leaderboard view's origin and labeller: a model that labelled the benchmark data is shown, not ranked."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from crossfid.benchmarks.leaderboard import labeller_note, origin_label, read_leaderboard
from crossfid.benchmarks.store import Metric, finish_run, labellers, start_run
from crossfid.db.models import ModelRow
from crossfid.hashing import json_digest

#: (name, family, kind, role, test energy MAE meV/atom, test force MAE meV/Å)
MODELS = (
    ("base-a", "CHGNet", "package", "base", 40.0, 80.0),
    ("peer-b", "SevenNet", "package", "peer", 20.0, 60.0),
    ("peer-c", "SevenNet", "package", "peer", 0.0, 0.0),  # labels its own data: errors 0 by construction
)


def _board(engine, labelled_by: list[str]) -> dict[str, dict]:
    with Session(engine) as session, session.begin():
        for name, family, kind, role, *_ in MODELS:
            session.add(
                ModelRow(
                    name=name,
                    family=family,
                    kind=kind,
                    role=role,
                    fidelities=["r2SCAN"],
                    sha256=json_digest(name),
                    path="",
                    n_parameters=1,
                )
            )
    with engine.connect() as conn:
        ids = dict(conn.execute(text("SELECT name, id FROM models")).all())
    for name, _, _, _, energy, force in MODELS:
        run = start_run(
            engine,
            benchmark="test-mae",
            version=1,
            key=json_digest(["run", name]),
            data_hash=json_digest("data"),
            data={},
            parameters={},
            model_id=ids[name],
            model_sha256=json_digest(name),
            labelled_by=labelled_by,
        )
        finish_run(
            engine, run, [Metric("energy_mae", energy, "meV/atom", 4), Metric("force_mae", force, "meV/Å", 12)], []
        )
    _, rows = read_leaderboard(engine)
    return {r["model"]: r for r in rows}


def test_the_labeller_is_shown_unranked_and_the_others_ranked_among_themselves(engine):
    board = _board(engine, ["peer-c"])
    labeller = board["peer-c"]
    assert labeller["labeller"] is True
    assert labeller["test_energy_mae"] == 0.0  # its numbers are there ...
    assert labeller["rank_test_energy_mae"] is None and labeller["rank_test_force_mae"] is None  # ... not its ranks
    assert labeller["composite_score"] is None
    assert (board["peer-b"]["rank_test_energy_mae"], board["base-a"]["rank_test_energy_mae"]) == (1, 2)
    assert board["peer-b"]["composite_score"] == pytest.approx((20 / 30 + 60 / 50) / 2)
    assert [board[m]["origin"] for m in ("base-a", "peer-b", "peer-c")] == ["base", "peer", "peer"]
    assert origin_label(labeller) == "peer · labeller" and origin_label(board["base-a"]) == "base"
    assert list(board) == ["peer-b", "base-a", "peer-c"]  # best score first, the labeller last
    assert "peer-c" in labeller_note(list(board.values()))


def test_without_a_labeller_every_model_is_ranked(engine):
    board = _board(engine, [])  # DFT data: no task names a labelling model
    assert not any(r["labeller"] for r in board.values())
    assert [board[m]["rank_test_energy_mae"] for m in ("peer-c", "peer-b", "base-a")] == [1, 2, 3]
    assert all(r["composite_score"] is not None for r in board.values())
    assert labeller_note(list(board.values())) is None


def test_a_model_that_labelled_other_data_is_not_the_labeller(engine):
    board = _board(engine, ["sevennet-mf-0-pbe"])  # labelled by a model that is not on the board
    assert not any(r["labeller"] for r in board.values())


def test_labellers_are_read_from_the_tasks_of_the_split(demo_engine, database_url, dask_client):
    """The demo corpus names its labelling model in every task: the labellers of a split part at a fidelity."""
    from crossfid.curation.datasets import freeze_dataset
    from crossfid.curation.pipeline import run_curation
    from crossfid.curation.split_store import create_split

    summary = run_curation(demo_engine, database_url, ["r2SCAN"], client=dask_client)
    freeze_dataset(demo_engine, summary.run_id, "lab", energy_label="uncorrected")
    split = create_split(demo_engine, "lab", (3, 1, 1), seed=0).id
    with demo_engine.connect() as conn:
        expected = {
            fidelity: tuple(
                sorted(
                    conn.execute(
                        text(
                            "SELECT DISTINCT t.input_parameters ->> 'label_model' FROM tasks t "
                            "WHERE t.fidelity = ANY(:f) AND t.material_id IN "
                            "(SELECT material_id FROM split_members WHERE split_id = :s)"
                        ),
                        {"f": list(fidelity), "s": split},
                    ).scalars()
                )
            )
            for fidelity in (("r2SCAN",), ("GGA", "GGA+U"))
        }
    with Session(demo_engine) as session:
        r2scan = labellers(session, split, ["r2SCAN"], ["train", "val", "test"])
        source = labellers(session, split, ["GGA", "GGA+U"], ["train", "val", "test"])
    assert r2scan == expected[("r2SCAN",)] and len(r2scan) == 1
    assert source == expected[("GGA", "GGA+U")] and source and not set(source) & set(r2scan)
