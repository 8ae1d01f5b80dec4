"""Benchmarks and the leaderboard on real PostgreSQL, real Dask and the two CHGNet models shipped with chgnet."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from support.tiny_split import make_tiny_split

from crossfid.benchmarks.leaderboard import parse_interval, read_leaderboard, refresh, run_every
from crossfid.benchmarks.registry import BenchmarkError, Options, default_benchmarks
from crossfid.benchmarks.relax_jobs import RelaxSettings
from crossfid.benchmarks.suite import DecompositionEnergy, Density, FormationEnergy, TestSetMae, load_entries
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
    # this corpus's r2SCAN labels come from the shipped r2SCAN model itself: every run records it as the labeller
    assert _metrics(split_engine, "chgnet-r2scan", "test-mae")["energy_mae"] < 1e-3
    with Session(split_engine) as session:
        assert set(session.scalars(select(func.array_to_string(BenchmarkRun.labelled_by, ",")))) == {"chgnet-r2scan"}
    assert {r["model"] for r in rows if r["labeller"]} == {"chgnet-r2scan"}


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
    # an r2SCAN-only corpus has no source-fidelity frames: forgetting does not apply, and says so
    assert [name for name, _ in summary.skipped] == ["forgetting"] and "GGA" in summary.skipped[0][1]
    assert len(summary.ran) == 2 * (len(suite) - 1)
    failures = {"failed_relaxations", "failed_scored", "failed_share", "no_dft_value"}
    for model in ("chgnet-0.3.0", "chgnet-r2scan"):
        formation = _metrics(split_engine, model, "formation-energy")
        decomposition = _metrics(split_engine, model, "decomposition-energy")
        assert {"formation_mae", *failures} <= set(formation)
        assert {"decomposition_mae", "precision", "recall", "f1", *failures} <= set(decomposition)
    columns, rows = read_leaderboard(split_engine)
    assert {"model", "test_energy_mae", "density_mae", "composite_score", "rank_test_energy_mae"} <= set(columns)
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"chgnet-0.3.0", "chgnet-r2scan"}
    # chgnet-r2scan labelled this corpus: shown last, unranked, without a score; the other model is ranked
    labeller, ranked = by_model["chgnet-r2scan"], by_model["chgnet-0.3.0"]
    assert labeller["labeller"] and labeller["rank_test_energy_mae"] is None and labeller["composite_score"] is None
    assert ranked["rank_test_energy_mae"] == 1 and ranked["composite_score"] is not None
    assert [r["model"] for r in rows] == ["chgnet-0.3.0", "chgnet-r2scan"]

    from crossfid.benchmarks.page import build_page

    page = build_page(split_engine, tmp_path / "board.html")
    html = page.read_text()
    assert "chgnet-0.3.0" in html and "chgnet-r2scan" in html and "data:image/png;base64," in html


# --------------------------------------------------------------------------- the study's scoring

#: elemental phases and one extra compound added as r2SCAN reference entries (not in the split)
PHASES = {
    "ref-O": (
        "O2",
        lambda: Structure(Lattice.cubic(8.0), ["O", "O"], [[0, 0, 0], [1.21, 0, 0]], coords_are_cartesian=True),
    ),
    "ref-Ni": ("Ni", lambda: _cubic(3.52, "Ni", FCC)),
    "ref-Mn": ("Mn", lambda: _cubic(2.86, "Mn", BCC)),
    "ref-Cr": ("Cr", lambda: _cubic(2.88, "Cr", BCC)),
    "ref-V": ("V", lambda: _cubic(3.03, "V", BCC)),
    "ref-Sr": ("Sr", lambda: _cubic(6.08, "Sr", FCC)),
    "ref-Mg": ("Mg", lambda: _hcp(3.21, 5.21, "Mg")),
    "ref-Zr": ("Zr", lambda: _hcp(3.23, 5.15, "Zr")),
    "ref-Cr2O3": ("Cr2O3", lambda: _catalogue("Cr2O3")),
}
FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
BCC = [[0, 0, 0], [0.5, 0.5, 0.5]]


def _cubic(a, element, sites):
    return Structure(Lattice.cubic(a), [element] * len(sites), sites)


def _hcp(a, c, element):
    return Structure(Lattice.hexagonal(a, c), [element] * 2, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])


def _catalogue(formula):
    from crossfid.structures.prototypes import CATALOGUE, build_prototype

    return build_prototype(next(p for p in CATALOGUE if p.formula == formula))


def _add_reference_phases(engine) -> None:
    """Relax each phase with chgnet-r2scan (the tiny corpus' labeller) and store it as an r2SCAN reference entry."""
    from crossfid.benchmarks.relax import relax_structure
    from crossfid.ingest.loader import ingest
    from crossfid.ingest.records import Bundle, Material, ReferenceEntry

    model = load_potential("chgnet-r2scan")
    bundles = []
    for material_id, (_, build) in PHASES.items():
        relaxed = relax_structure(model, build(), fmax=0.05, steps=200)
        assert relaxed.ok, (material_id, relaxed.failure)
        structure = Structure.from_dict(relaxed.structure)
        reference = ReferenceEntry(
            fidelity="r2SCAN",
            energy_per_atom=relaxed.energy_per_atom,
            n_atoms=len(structure),
            structure=relaxed.structure,
            entry_id=material_id,
        )
        material = Material.from_atomic_numbers(material_id, structure.atomic_numbers)
        bundles.append(Bundle(material=material, location=f"test:{material_id}", references=[reference]))
    assert ingest(engine, "reference-phases", "demo", bundles).quarantined == 0


def _runs(engine, benchmark: str) -> list[BenchmarkRun]:
    with Session(engine) as session:
        runs = session.scalars(
            select(BenchmarkRun).where(BenchmarkRun.benchmark == benchmark).order_by(BenchmarkRun.id)
        ).all()
        for run in runs:
            session.expunge(run)
    return runs


def _items(engine, run_id: int) -> dict[str, BenchmarkItem]:
    with Session(engine) as session:
        items = session.scalars(select(BenchmarkItem).where(BenchmarkItem.run_id == run_id)).all()
        for item in items:
            session.expunge(item)
    return {i.item: i for i in items}


def _truth_from_the_database(engine, split_id, scored, quantity):
    from crossfid.benchmarks.thermo import decomposition_truth, formation_truth

    with Session(engine) as session:
        entries = [(e.material, e.formula, e.energy_per_atom) for e in load_entries(session, split_id)]
    return (formation_truth if quantity == "formation" else decomposition_truth)(entries, scored), entries


def test_the_studys_scored_sets_and_failures_that_never_change_the_dft_truth(split_engine, dask_client):
    _add_reference_phases(split_engine)
    tiny = refresh(
        split_engine,
        "tiny",
        benchmarks={"formation-energy": FormationEnergy(QUICK), "decomposition-energy": DecompositionEnergy(QUICK)},
        models=["chgnet-0.3.0"],
        client=dask_client,
    )
    assert not tiny.failed and len(tiny.ran) == 2
    [formation_run], [decomposition_run] = (
        _runs(split_engine, "formation-energy"),
        _runs(split_engine, "decomposition-energy"),
    )
    # the scored set is a parameter stored with the run; its size and what lacks a DFT value are in its data
    assert formation_run.parameters["scored"] == "all" and decomposition_run.parameters["scored"] == "test"
    assert formation_run.version == decomposition_run.version == 2
    assert formation_run.data["n_scored"] == 19 and formation_run.data["n_with_dft_value"] == 18
    assert formation_run.data["elements_without_elemental_entry"] == ["Ga", "As"]

    # formation energy: every material of the fidelity (the split's 10 and the 9 added entries), GaAs without DFT value
    formation = _items(split_engine, formation_run.id)
    assert set(formation) == {f"demo-{i:04d}" for i in range(1, 11)} | set(PHASES)
    assert formation["demo-0002"].failure == "no DFT value: no elemental reference entry for Ga, As"
    truth, _ = _truth_from_the_database(split_engine, 1, sorted(formation), "formation")
    assert {m: i.result["dft"] for m, i in formation.items() if i.ok} == truth.values
    metrics = _metrics(split_engine, "chgnet-0.3.0", "formation-energy")
    assert metrics["no_dft_value"] == 1 and metrics["failed_scored"] == 0 and metrics["failed_share"] == 0

    # decomposition energy: scored on the test materials (CrO2, Fe) only, on hulls of every r2SCAN entry
    decomposition = _items(split_engine, decomposition_run.id)
    assert set(decomposition) == {"demo-0001", "demo-0004"} and all(i.ok for i in decomposition.values())
    truth, entries = _truth_from_the_database(split_engine, 1, ["demo-0001", "demo-0004"], "decomposition")
    assert {m: i.result["dft"] for m, i in decomposition.items()} == truth.values
    from crossfid.benchmarks.thermo import decomposition_truth

    without_cr2o3 = decomposition_truth([e for e in entries if e[0] != "ref-Cr2O3"], ["demo-0001"])
    assert without_cr2o3.values["demo-0001"] != pytest.approx(truth.values["demo-0001"])  # Cr2O3 is on CrO2's hull
    assert decomposition_run.data["n_relaxed"] == 5  # CrO2, Cr, O2, Cr2O3, and Fe

    # a model whose Sr, Mg and Zr phases "fail" (an atom farther than 3 Å from its nearest neighbour)
    tight = RelaxSettings(fmax=0.05, steps=200, max_nn_distance=3.0)
    refresh(
        split_engine,
        "tiny",
        benchmarks={"formation-energy": FormationEnergy(tight), "decomposition-energy": DecompositionEnergy(tight)},
        models=["chgnet-0.3.0"],
        client=dask_client,
    )
    failing = _runs(split_engine, "formation-energy")[-1]
    assert failing.data_hash == formation_run.data_hash and failing.data == formation_run.data
    items = _items(split_engine, failing.id)
    dft = {m: i.result["dft"] for m, i in items.items() if "dft" in i.result}
    assert dft == {m: i.result["dft"] for m, i in formation.items() if i.ok}  # the same DFT truth
    own = {"ref-Sr", "ref-Mg", "ref-Zr"}
    assert all(items[m].failure.startswith("relaxation failed: ") for m in own)
    for material, element in (("demo-0007", "Sr"), ("demo-0006", "Mg"), ("demo-0008", "Zr")):
        assert items[material].failure.startswith(f"no model reference state for {element}")
        assert items[material].result["cause"] == "model"
    with Session(split_engine) as session:
        counts = dict(
            session.execute(
                select(BenchmarkMetric.name, BenchmarkMetric.value).where(BenchmarkMetric.run_id == failing.id)
            ).all()
        )
        n = session.scalar(
            select(BenchmarkMetric.n).where(
                BenchmarkMetric.run_id == failing.id, BenchmarkMetric.name == "failed_share"
            )
        )
    assert counts["failed_scored"] == 6 and n == 18 and counts["failed_share"] == pytest.approx(6 / 18)
    assert counts["failed_relaxations"] == 3 and counts["no_dft_value"] == 1
    again = _runs(split_engine, "decomposition-energy")[-1]
    assert {m: i.result["dft"] for m, i in _items(split_engine, again.id).items()} == truth.values


def test_the_scored_set_is_a_parameter_and_an_empty_benchmark_is_an_error(split_engine, dask_client):
    assert FormationEnergy().parameters()["scored"] == "all" and DecompositionEnergy().parameters()["scored"] == "test"
    chosen = SimpleNamespace(relax=QUICK, crystals=None, scored={"formation-energy": "test"})  # the command line's
    assert FormationEnergy.from_options(chosen).parameters() == {"relax": QUICK.__dict__, "scored": "test"}
    assert DecompositionEnergy.from_options(Options(QUICK)).scored == "test"
    with pytest.raises(BenchmarkError, match="unknown scored set 'train'"):
        DecompositionEnergy(scored="train")

    with Session(split_engine) as session:
        on_test = FormationEnergy(QUICK, scored="test").prepare(session, 1)
        on_all = FormationEnergy(QUICK).prepare(session, 1)
    assert on_test.payload.truth.scored == ("demo-0001", "demo-0004") and len(on_all.payload.truth.scored) == 10
    assert on_test.data_hash != on_all.data_hash and on_test.data["scored"] == "test"

    def refused(statement: str, benchmark, message: str) -> None:
        with Session(split_engine) as session:
            session.execute(text(statement))
            with pytest.raises(BenchmarkError, match=message):
                benchmark.prepare(session, 1)
            session.rollback()

    elemental = "SELECT id FROM materials WHERE n_elements = 1"
    test = "SELECT material_id FROM split_members WHERE part = 'test'"
    for benchmark in (FormationEnergy(QUICK), DecompositionEnergy(QUICK)):
        refused(
            "UPDATE reference_entries SET structure = NULL", benchmark, "no reference entry with a structure at r2SCAN"
        )
        refused(
            f"DELETE FROM reference_entries WHERE material_id IN ({elemental})",
            benchmark,
            "no elemental reference entry at r2SCAN",
        )
    refused(
        f"DELETE FROM reference_entries WHERE material_id IN ({test})",
        DecompositionEnergy(QUICK),
        "none of the 2 test materials of split 1 has a reference entry with a structure at r2SCAN",
    )
    refused(
        "DELETE FROM reference_entries WHERE material_id = (SELECT id FROM materials WHERE formula = 'Fe')",
        FormationEnergy(QUICK, scored="test"),
        r"none of the 2 scored materials \(test\) has a DFT formation energy at r2SCAN: "
        "no elemental reference entry for O, Cr",
    )
    # the refresh records it as a failure to prepare, naming what is missing, and runs nothing
    with split_engine.begin() as conn:
        conn.execute(text("UPDATE reference_entries SET structure = NULL"))
    summary = refresh(split_engine, "tiny", benchmarks={"formation-energy": FormationEnergy(QUICK)}, client=dask_client)
    assert not summary.ran and len(summary.failed) == 2
    assert all("no reference entry with a structure at r2SCAN" in error for _, _, error in summary.failed)


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
