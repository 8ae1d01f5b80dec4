"""Benchmarks and the leaderboard on real PostgreSQL, real Dask and the two CHGNet models shipped with chgnet."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from support.tiny_split import make_tiny_split

from crossfid.benchmarks.leaderboard import parse_interval, read_leaderboard, refresh, run_every
from crossfid.benchmarks.registry import default_benchmarks
from crossfid.benchmarks.relax_jobs import RelaxSettings
from crossfid.benchmarks.suite import Density, TestSetMae
from crossfid.benchmarks.testset_rmse import TestSetRmse
from crossfid.db.models import BenchmarkItem, BenchmarkMetric, BenchmarkRun, ModelRow
from crossfid.potentials.base import load_potential
from crossfid.training.data import load_split_frames

QUICK = RelaxSettings(fmax=0.05, steps=200)
CRYSTALS = [
    "Cu-fcc",
    "Al-fcc",
    "Fe-bcc",
    "W-bcc",
    "Si-diamond",
    "NaCl-rocksalt",
    "MgO-rocksalt",
    "GaAs-zincblende",
    "ZnO-wurtzite",
    "CaF2-fluorite",
    "SrTiO3-perovskite",
    "TiO2-rutile",
]


@pytest.fixture
def split_engine(engine, database_url, r2scan_corpus, dask_client, monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    make_tiny_split(engine, database_url, r2scan_corpus, dask_client)
    return engine


def _metrics(engine, model: str, benchmark: str) -> dict[str, float | None]:
    with Session(engine) as session:
        rows = session.execute(
            select(BenchmarkMetric.name, BenchmarkMetric.value)
            .join(BenchmarkRun, BenchmarkRun.id == BenchmarkMetric.run_id)
            .join(ModelRow, ModelRow.id == BenchmarkRun.model_id)
            .where(ModelRow.name == model, BenchmarkRun.benchmark == benchmark, BenchmarkRun.status == "completed")
        ).all()
    return dict(rows)


def test_test_mae_and_rmse_equal_a_direct_computation_with_chgnet(split_engine, dask_client):
    suite = {"test-mae": TestSetMae(), "test-rmse": TestSetRmse()}
    summary = refresh(split_engine, "tiny", benchmarks=suite, client=dask_client)
    assert {(m, b) for m, b, _ in summary.ran} == {(m, b) for m in ("chgnet-0.3.0", "chgnet-r2scan") for b in suite}
    with Session(split_engine) as session:
        frames = load_split_frames(session, 1, "test")
    model = load_potential("chgnet-0.3.0")
    energy_errors, force_errors = [], []
    for frame, p in zip(frames, model.predict([frame.structure() for frame in frames]), strict=True):
        energy_errors.append(abs(p.energy - frame.energy_per_atom))
        force_errors.append(np.abs(p.forces - frame.forces).ravel())
    got = _metrics(split_engine, "chgnet-0.3.0", "test-mae")
    assert got["energy_mae"] == pytest.approx(1000 * np.mean(energy_errors), rel=1e-4)
    assert got["force_mae"] == pytest.approx(1000 * np.mean(np.concatenate(force_errors)), rel=1e-4)
    assert any(name.startswith("energy_mae:") for name in got)
    rmse = _metrics(split_engine, "chgnet-0.3.0", "test-rmse")
    assert rmse["energy_rmse"] == pytest.approx(1000 * np.sqrt(np.mean(np.square(energy_errors))), rel=1e-4)
    assert rmse["force_rmse"] == pytest.approx(1000 * np.sqrt(np.mean(np.concatenate(force_errors) ** 2)), rel=1e-4)
    assert rmse["energy_rmse"] >= got["energy_mae"] and rmse["force_rmse"] >= got["force_mae"]
    # the view shows them as registered (revision 0008)
    _, rows = read_leaderboard(split_engine)
    row = next(r for r in rows if r["model"] == "chgnet-0.3.0")
    assert row["test_energy_rmse"] == pytest.approx(rmse["energy_rmse"])
    assert row["test_force_rmse"] == pytest.approx(rmse["force_rmse"])
    assert row["test_energy_mae"] == pytest.approx(got["energy_mae"])
    # the demo's r2SCAN labels come from the shipped r2SCAN model itself
    assert _metrics(split_engine, "chgnet-r2scan", "test-mae")["energy_mae"] < 1e-3


def test_refresh_runs_only_what_is_missing_and_overlapping_refreshes_do_not_double_run(split_engine, dask_client):
    suite = {"test-mae": TestSetMae()}
    results = []

    def one():
        results.append(refresh(split_engine, "tiny", benchmarks=suite, client=dask_client))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ran = sorted(len(r.ran) for r in results)
    assert ran == [0, 2], ran  # one refresh ran both models, the other waited for the lock and found them fresh
    again = refresh(split_engine, "tiny", benchmarks=suite, client=dask_client)
    assert again.ran == [] and len(again.fresh) == 2
    with Session(split_engine) as session:
        assert session.scalar(select(func.count()).select_from(BenchmarkRun)) == 2

    # a new benchmark version makes every stored result of it stale
    class NewVersion(TestSetMae):
        version = 2

    bumped = refresh(split_engine, "tiny", benchmarks={"test-mae": NewVersion()}, client=dask_client)
    assert len(bumped.ran) == 2


def test_a_failing_pair_is_recorded_and_the_others_go_on(split_engine, dask_client, tmp_path):
    with Session(split_engine) as session, session.begin():
        base = session.scalars(select(ModelRow)).all()  # none yet: refresh registers the shipped models
        assert base == []
    refresh(split_engine, "tiny", benchmarks={"test-mae": TestSetMae()}, client=dask_client)
    missing = tmp_path / "gone.pt"
    with Session(split_engine) as session, session.begin():
        row = session.scalars(select(ModelRow).where(ModelRow.name == "chgnet-0.3.0")).one()
        session.execute(
            text(
                "INSERT INTO models (name, kind, role, fidelities, sha256, path, n_parameters) "
                "VALUES ('broken', 'package', 'base', '{GGA}', :sha, :path, 1)"
            ),
            {"sha": "0" * 64, "path": str(missing)},
        )
        assert row.kind == "package"
    summary = refresh(split_engine, "tiny", benchmarks={"test-mae": TestSetMae()}, client=dask_client)
    assert [m for m, _, _ in summary.failed] == ["broken"]
    assert len(summary.fresh) == 2
    with Session(split_engine) as session:
        failed = session.scalars(select(BenchmarkRun).where(BenchmarkRun.status == "failed")).one()
        assert "broken" in failed.error or "KeyError" in failed.error


def test_density_benchmark_reproduces_the_studys_finding(split_engine, dask_client):
    suite = {"density": Density(QUICK, CRYSTALS)}
    summary = refresh(split_engine, "tiny", benchmarks=suite, client=dask_client)
    assert len(summary.ran) == 2 and not summary.failed
    gga = _metrics(split_engine, "chgnet-0.3.0", "density")
    r2scan = _metrics(split_engine, "chgnet-r2scan", "density")
    assert gga["failed_relaxations"] == 0 and r2scan["failed_relaxations"] == 0
    # GGA-pretrained CHGNet underestimates densities more often than the r2SCAN model
    assert gga["fraction_less_dense"] > r2scan["fraction_less_dense"]
    assert gga["ratio_mean"] > r2scan["ratio_mean"]
    assert 0.9 < r2scan["ratio_mean"] < 1.1
    with Session(split_engine) as session:
        items = session.scalars(select(BenchmarkItem)).all()
    assert len(items) == 2 * len(CRYSTALS) and all(0.8 < i.result["ratio"] < 1.2 for i in items)


def test_thermodynamic_benchmarks_and_the_leaderboard_view(split_engine, dask_client, tmp_path):
    suite = default_benchmarks(QUICK, CRYSTALS[:3])
    summary = refresh(split_engine, "tiny", benchmarks=suite, client=dask_client)
    assert not summary.failed, summary.failed
    assert len(summary.ran) == 2 * len(suite)
    for model in ("chgnet-0.3.0", "chgnet-r2scan"):
        formation = _metrics(split_engine, model, "formation-energy")
        decomposition = _metrics(split_engine, model, "decomposition-energy")
        assert "formation_mae" in formation and "failed_relaxations" in formation
        assert {"decomposition_mae", "precision", "recall", "f1", "failed_relaxations"} <= set(decomposition)
    columns, rows = read_leaderboard(split_engine)
    assert {"model", "test_energy_mae", "density_mae", "composite_score", "rank_test_energy_mae"} <= set(columns)
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"chgnet-0.3.0", "chgnet-r2scan"}
    assert by_model["chgnet-r2scan"]["rank_test_energy_mae"] == 1  # it labelled the demo data
    assert rows[0]["composite_score"] <= rows[1]["composite_score"]

    from crossfid.benchmarks.page import build_page

    page = build_page(split_engine, tmp_path / "board.html")
    html = page.read_text()
    assert "chgnet-0.3.0" in html and "chgnet-r2scan" in html and "data:image/png;base64," in html


def test_schedule_runs_until_stopped_and_a_sigterm_ends_the_scheduler_cleanly(tmp_path):
    assert parse_interval("6h").total_seconds() == 21600 and parse_interval("90s").total_seconds() == 90
    with pytest.raises(ValueError, match="invalid interval"):
        parse_interval("soon")
    calls = []
    stop = threading.Event()

    def job():
        calls.append(time.monotonic())
        if len(calls) == 3:
            stop.set()

    assert run_every(parse_interval("0.01s"), job, stop=stop, announce=lambda _m: None) == 3

    code = (
        "from crossfid.benchmarks.leaderboard import parse_interval, run_every\n"
        "say = lambda m: print(m, flush=True)\n"
        "run_every(parse_interval('1h'), lambda: say('refreshed'), announce=say)\n"
    )
    env = {**os.environ, "CROSSFID_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    assert lines[0].strip() == "refreshed" and lines[1].startswith("next refresh at")
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "scheduler stopped" in out


def test_scaling_law_trains_each_size_once_and_stores_the_fits(
    engine, database_url, r2scan_corpus, dask_client, monkeypatch, tmp_path
):
    from crossfid.benchmarks.scaling_runs import fit_and_store, scaling_points
    from crossfid.db.models import TrainingRun
    from crossfid.training.hyperparameters import Hyperparameters

    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    split_id = make_tiny_split(engine, database_url, r2scan_corpus, dask_client, subsets=(8, 16))
    hp = Hyperparameters(epochs=1, batch_size=8)
    methods = ["scratch", "tl-refit-atomref"]
    points = scaling_points(engine, split_id, methods, [8, 16], hp, device="cpu")
    assert [(p.method, p.size) for p in points] == [(m, s) for m in methods for s in (8, 16)]
    assert all(p.val_energy_mae is not None for p in points)
    result = fit_and_store(engine, split_id, points, min_size=0)
    assert result["fits"]["scratch"]["energy"].n == 2
    assert ("scratch", "tl-refit-atomref", "energy") in result["crossovers"]

    again = scaling_points(engine, split_id, methods, [8, 16], hp, device="cpu")
    assert [p.run_id for p in again] == [p.run_id for p in points]  # completed runs are reused, not retrained
    fit_and_store(engine, split_id, again, min_size=0)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 4
        runs = session.scalars(select(BenchmarkRun).where(BenchmarkRun.benchmark == "scaling-law")).all()
    assert sorted(r.method for r in runs) == methods and all(r.status == "completed" for r in runs)
    slopes = _method_metrics(engine, "scratch")
    assert {"energy_slope", "energy_intercept", "energy_r2", "energy_crossover:tl-refit-atomref"} <= set(slopes)
    with pytest.raises(ValueError, match="no nested training subsets of sizes"):
        scaling_points(engine, split_id, methods, [999], hp, device="cpu")


def _method_metrics(engine, method: str) -> dict[str, float | None]:
    with Session(engine) as session:
        rows = session.execute(
            select(BenchmarkMetric.name, BenchmarkMetric.value)
            .join(BenchmarkRun, BenchmarkRun.id == BenchmarkMetric.run_id)
            .where(BenchmarkRun.method == method, BenchmarkRun.benchmark == "scaling-law")
        ).all()
    return dict(rows)
