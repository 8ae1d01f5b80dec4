"""Training runs from database splits: methods 3 vs 4, epoch and gradient rows, graph cache, registry, resume, CLI.

Real PostgreSQL, real Dask curation, the real CHGNet models from the chgnet package, a tiny split of
r2SCAN-labelled demo frames, one or two epochs on CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from support.tiny_split import make_tiny_split
from typer.testing import CliRunner

from crossfid.db.models import ModelRow, TrainingEpoch, TrainingGradient, TrainingRun
from crossfid.hashing import sha256_file
from crossfid.plots.pngdata import read_data
from crossfid.potentials.base import load_potential
from crossfid.training import runs as runs_module
from crossfid.training.data import frame_targets, load_split_frames
from crossfid.training.hyperparameters import Hyperparameters
from crossfid.training.loop import TrainingError, evaluate
from crossfid.training.registry import model_spec
from crossfid.training.runs import TrainRequest, resume_run, run_training, start_run, train_split

HP = Hyperparameters(epochs=1, batch_size=8)


@pytest.fixture
def split_engine(engine, database_url, r2scan_corpus, dask_client, monkeypatch, tmp_path):
    """r2SCAN demo frames curated, frozen as ``tiny`` and split 6:2:2; CROSSFID_HOME in the test's directory."""
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    split_id = make_tiny_split(engine, database_url, r2scan_corpus, dask_client)
    with Session(engine) as session:
        counts = runs_module._part_counts(session, split_id)
    assert min(counts.values()) > 0, counts  # every part has frames
    return engine


def _rows(engine, model, run_id):
    with Session(engine) as session:
        return session.scalars(select(model).where(model.run_id == run_id)).all()


def test_a_peer_model_is_not_a_base_model(split_engine):
    request = TrainRequest(split="tiny", method="tl-frozen-atomref", base="sevennet-0", hyperparameters=HP)
    with pytest.raises(TrainingError, match="sevennet-0 is a peer model: peers are benchmarked, not fine-tuned"):
        start_run(split_engine, request)
    with Session(split_engine) as session:
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 0


def test_method_4_beats_method_3_and_everything_is_recorded(split_engine):
    engine = split_engine
    m3 = train_split(engine, TrainRequest(split="tiny", method="tl-frozen-atomref", hyperparameters=HP, device="cpu"))
    m4 = train_split(engine, TrainRequest(split="tiny", method="tl-refit-atomref", hyperparameters=HP, device="cpu"))
    assert m3.status == m4.status == "completed"

    val = {}
    for summary in (m3, m4):
        epochs = _rows(engine, TrainingEpoch, summary.run_id)
        assert [e.epoch for e in epochs] == [1]
        val[summary.run_id] = epochs[0].val_energy_mae
        assert epochs[0].seconds >= epochs[0].compute_seconds > 0
        grads = _rows(engine, TrainingGradient, summary.run_id)
        assert {g.layer for g in grads} >= {"atom embedding", "bond embedding", "first readout MLP layer"}
        assert "AtomRef" not in {g.layer for g in grads}  # frozen in both methods
        assert all(g.epoch == 1 and g.abs_min <= g.abs_mean <= g.abs_max for g in grads)
    # the study's effect: the refitted target AtomRef leaves far less to learn than the frozen source one
    assert val[m4.run_id] < val[m3.run_id] / 3, val

    # the second run on the same split converted nothing
    assert m3.graph_cache["misses"] > 0
    assert m4.graph_cache["misses"] == 0 and m4.graph_cache["hits"] == m3.graph_cache["misses"]

    with Session(engine) as session:
        run3, run4 = session.get(TrainingRun, m3.run_id), session.get(TrainingRun, m4.run_id)
        assert run3.atomref_id != run4.atomref_id
        assert run3.hyperparameters["epochs"] == 1 and run3.versions["chgnet"]
        best = session.scalars(select(ModelRow).where(ModelRow.name == f"run-{m4.run_id}-best")).one()
        assert best.sha256 == sha256_file(best.path) and best.run_id == m4.run_id
        assert session.scalar(select(func.count()).select_from(ModelRow).where(ModelRow.run_id == m4.run_id)) == 2
        stored = run4.test_metrics
        model = load_potential(model_spec(best)).model
        test = load_split_frames(session, run4.split_id, "test")
    items = [
        (model.graph_converter(f.structure(), graph_id=f.content_hash), frame_targets(f, run4.targets)) for f in test
    ]
    again = evaluate(model, items, run4.targets, HP, "cpu")
    assert again.energy_mae == pytest.approx(stored["energy_mae"], rel=1e-5)
    assert again.force_mae == pytest.approx(stored["force_mae"], rel=1e-5)


def test_a_crashed_run_resumes_from_its_checkpoint_without_duplicate_epochs(split_engine, monkeypatch):
    engine = split_engine
    hp = Hyperparameters(epochs=2, batch_size=8)
    request = TrainRequest(split="tiny", method="tl-refit-atomref", hyperparameters=hp, device="cpu")
    straight = train_split(engine, request)

    write_epoch = runs_module._write_epoch

    def crash_after_first_epoch(engine_, run_id, result, state):
        write_epoch(engine_, run_id, result, state)
        if result.epoch == 1:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(runs_module, "_write_epoch", crash_after_first_epoch)
    run_id = start_run(engine, request)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(engine, run_id)
    monkeypatch.setattr(runs_module, "_write_epoch", write_epoch)
    with Session(engine) as session:
        assert session.get(TrainingRun, run_id).status == "failed"
    with pytest.raises(TrainingError, match="resume"):
        run_training(engine, run_id)

    resumed = resume_run(engine, run_id)
    assert resumed.status == "completed" and resumed.epochs_completed == 2
    rows = _rows(engine, TrainingEpoch, run_id)
    assert [r.epoch for r in rows] == [1, 2]
    reference = {r.epoch: r for r in _rows(engine, TrainingEpoch, straight.run_id)}
    for row in rows:
        assert row.val_energy_mae == pytest.approx(reference[row.epoch].val_energy_mae, rel=1e-4)
        assert row.train_loss == pytest.approx(reference[row.epoch].train_loss, rel=1e-4)
    steps = {g.step for g in _rows(engine, TrainingGradient, run_id)}
    assert steps == {g.step for g in _rows(engine, TrainingGradient, straight.run_id)}
    with pytest.raises(TrainingError, match="already completed"):
        resume_run(engine, run_id)


def test_train_runs_and_plots_commands(split_engine, database_url, monkeypatch, tmp_path):
    from crossfid.cli import app

    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    trained = run("train", "--split", "tiny", "--method", "scratch", "--epochs", "1", "--batch-size", "8")
    assert "completed after 1 epochs" in trained and "test MAE" in trained
    assert "registered models" in trained
    listed = run("runs", "list", "--format", "json")
    assert '"method": "scratch"' in listed
    shown = run("runs", "show", "1")
    assert "MAEs" in shown and "scratch" in shown
    run("plots", "training", "1", "--out", str(tmp_path / "figs"))
    curves = read_data(tmp_path / "figs" / "training-curves-1.png")
    epochs = _rows(split_engine, TrainingEpoch, 1)
    assert curves["runs"][0]["val_energy_mae"] == [e.val_energy_mae for e in epochs]
    gradients = read_data(tmp_path / "figs" / "gradient-ranges-1.png")
    assert "atom embedding" in gradients["layers"]
    failed = runner.invoke(app, ["train", "--split", "tiny"])
    assert failed.exit_code != 0
    assert np.isfinite(curves["runs"][0]["train_energy_mae"][0])
