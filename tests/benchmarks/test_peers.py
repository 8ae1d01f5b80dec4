"""Peer models: SevenNet shipped with sevenn and any ASE calculator, registered, loaded and benchmarked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crossfid.benchmarks import testset_mae
from crossfid.benchmarks.leaderboard import BOARD_PEERS, leaderboard_models, read_leaderboard, refresh
from crossfid.benchmarks.registry import Context
from crossfid.benchmarks.relax_jobs import RelaxSettings
from crossfid.benchmarks.suite import Density, frame_predictions
from crossfid.db.models import BenchmarkMetric, BenchmarkRun, ModelRow
from crossfid.errors import CrossfidError
from crossfid.hashing import sha256_file
from crossfid.potentials.base import load_potential
from crossfid.training.data import LabelledFrame
from crossfid.training.registry import (
    RegistryError,
    ensure_peer_model,
    model_spec,
    register_calculator,
    resolve_model,
)

EMT = "ase.calculators.emt:EMT"


def _copper_frame() -> LabelledFrame:
    """A strained fcc Cu cell with made-up labels (the errors are what is checked)."""
    a = 3.7
    lattice = np.array([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    forces = np.array([[0.1, -0.2, 0.3]])
    return LabelledFrame(1, "0" * 64, "cu", lattice, np.array([29]), np.zeros((1, 3)), -3.5, forces, np.eye(3), [0.5])


def test_register_an_ase_calculator_as_a_peer(engine):
    with Session(engine) as session, session.begin():
        row = register_calculator(session, "emt", EMT, {}, None, ["GGA"])
        first = (row.id, row.sha256)
        assert (row.kind, row.role, row.family, row.factory, row.options) == ("calculator", "peer", "ASE", EMT, {})
        assert row.atomref_id is None and row.n_parameters is None and row.fidelities == ["GGA"]
        again = register_calculator(session, "emt", EMT, {}, None, ["GGA"])  # the same definition: the same row
        assert (again.id, again.sha256) == first
        with pytest.raises(RegistryError, match="registered already"):
            register_calculator(session, "emt", EMT, {"asap_cutoff": True}, None, ["GGA"])
        other = register_calculator(session, "emt-asap", EMT, {"asap_cutoff": True}, None, ["GGA"])
        assert other.sha256 != row.sha256 and other.options == {"asap_cutoff": True}
        with pytest.raises(RegistryError, match="unknown fidelities"):
            register_calculator(session, "emt-x", EMT, {}, None, ["PBE2000"])
        with pytest.raises(RegistryError, match="fidelities"):
            register_calculator(session, "emt-x", EMT, {}, None, [])
        with pytest.raises(CrossfidError, match="not found"):
            register_calculator(session, "broken", "ase.calculators.emt:NoSuchCalculator", {}, None, ["GGA"])
        with pytest.raises(RegistryError, match="shipped"):
            register_calculator(session, "sevennet-0", EMT, {}, None, ["GGA"])
        spec = model_spec(row)
    assert (spec.kind, spec.factory, spec.family) == ("calculator", EMT, "ASE")
    frame = _copper_frame()
    prediction = load_potential(spec).predict([frame.structure()])[0]
    from ase.build import bulk
    from ase.calculators.emt import EMT as AseEmt

    atoms = bulk("Cu", "fcc", a=3.7)
    atoms.calc = AseEmt()
    assert prediction.energy == pytest.approx(atoms.get_potential_energy() / len(atoms))
    with Session(engine) as session:
        assert session.scalar(select(ModelRow.id).where(ModelRow.name == "broken")) is None


def emt_from_file(path, **options):
    """A calculator factory that reads a weights file (JSON keyword arguments of ASE's EMT) first."""
    import json

    from ase.calculators.emt import EMT as AseEmt

    return AseEmt(**{**json.loads(Path(path).read_text()), **options})


def test_register_a_calculator_with_a_weights_file_records_its_sha256(engine, tmp_path):
    """A weights file is passed to the factory first; its SHA-256 is the spec's, and part of the model's identity."""
    weights = tmp_path / "params.json"
    weights.write_text('{"asap_cutoff": true}')
    factory = f"{__name__}:emt_from_file"  # this module, as pytest imported it
    with Session(engine) as session, session.begin():
        row = register_calculator(session, "emt-w", factory, {}, weights, ["GGA"])
        spec = model_spec(row)
        assert row.provenance["weights_sha256"] == sha256_file(weights) == spec.sha256
        assert spec.path == str(weights.resolve())
        assert load_potential(spec).model.parameters["asap_cutoff"] is True
        weights.write_text('{"asap_cutoff": false}')
        with pytest.raises(RegistryError, match="registered already"):  # other weights under the same name
            register_calculator(session, "emt-w", factory, {}, weights, ["GGA"])


def test_shipped_sevennet_peers_are_registered_with_their_provenance(engine):
    with Session(engine) as session, session.begin():
        pbe = ensure_peer_model(session, "sevennet-mf-0-pbe")
        r2scan = resolve_model(session, "sevennet-mf-0-r2scan")  # shipped peers are registered on first use
        zero = ensure_peer_model(session, "sevennet-0")
        assert ensure_peer_model(session, "sevennet-0").id == zero.id
        rows = [pbe, r2scan, zero]
        assert all(r.role == "peer" and r.kind == "package" and r.family == "SevenNet" for r in rows)
        assert all(r.atomref_id is None and r.n_parameters > 0 for r in rows)
        assert r2scan.fidelities == ["r2SCAN"] and pbe.fidelities == ["GGA", "GGA+U"]
        # one checkpoint, two modalities: two models with their own identity
        assert (
            pbe.provenance["weights_sha256"] == r2scan.provenance["weights_sha256"] != zero.provenance["weights_sha256"]
        )
        assert len({r.sha256 for r in rows}) == 3
        assert r2scan.provenance["modal"] == "R2SCAN" and "modal='R2SCAN'" in r2scan.provenance["load_call"]
        assert r2scan.provenance["sevenn_version"]
        with pytest.raises(RegistryError, match="known"):
            ensure_peer_model(session, "sevennet-9")
        assert {m.name for m in leaderboard_models(session, peers=True)} >= set(BOARD_PEERS)
        assert not {m.name for m in leaderboard_models(session)} & set(BOARD_PEERS)


def test_a_model_without_magnetic_moments_has_no_magmom_metric(engine):
    """SevenNet predicts no magnetic moments: the test-set metrics of a peer have none, the others are raw."""
    with Session(engine) as session, session.begin():
        row = ensure_peer_model(session, "sevennet-0")
        session.expunge(row)
    frame = _copper_frame()
    predictions = frame_predictions(Context(engine=engine), row, [frame], "copper")
    assert predictions[0]["m"] is None
    metrics, _ = testset_mae.testset_metrics([frame], predictions)
    names = {m.name: m for m in metrics}
    assert "magmom_mae" not in names
    direct = load_potential(model_spec(row)).predict([frame.structure()])[0]
    assert names["energy_mae"].value == pytest.approx(1000 * abs(direct.energy - frame.energy_per_atom))
    assert names["force_mae"].value == pytest.approx(1000 * np.mean(np.abs(direct.forces - frame.forces)))


def test_density_relaxes_with_a_calculator(engine):
    """The generic ASE path through the relaxation benchmarks: EMT relaxes Cu close to its own lattice constant."""
    with Session(engine) as session, session.begin():
        row = register_calculator(session, "emt", EMT, {}, None, ["GGA"])
        session.expunge(row)
    density = Density(RelaxSettings(fmax=0.02, steps=300), ["Cu-fcc"])
    with Session(engine) as session:
        prepared = density.prepare(session, 0)
    metrics, items = density.run(Context(engine=engine), row, prepared)
    assert items[0].ok
    from ase.build import bulk
    from ase.calculators.emt import EMT as AseEmt
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    atoms = bulk("Cu", "fcc", a=3.61)
    atoms.calc = AseEmt()
    FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.001, steps=500)
    emt_density = sum(atoms.get_masses()) / atoms.get_volume() * 1.66053906660
    assert items[0].result["predicted"] == pytest.approx(emt_density, rel=5e-3)


def test_refresh_benchmarks_the_peers_and_marks_the_labeller(split_engine, dask_client):
    """On the tiny r2SCAN split (labelled by a shipped model), the peers run next to the CHGNet models; the model
    that labelled the data is the labeller, the others are ranked."""
    from crossfid.benchmarks.suite import TestSetMae

    suite = {"test-mae": TestSetMae()}
    names = ["chgnet-0.3.0", "chgnet-r2scan", *BOARD_PEERS]
    summary = refresh(split_engine, "tiny", benchmarks=suite, client=dask_client, models=names, peers=True)
    assert not summary.failed
    assert {m for m, _, _ in summary.ran} == set(names)
    with Session(split_engine) as session:
        labelled = set().union(*session.scalars(select(BenchmarkRun.labelled_by)).all())
    assert len(labelled) == 1
    _, rows = read_leaderboard(split_engine)
    board = {r["model"]: r for r in rows if r["model"] in names}
    assert {board[n]["origin"] for n in BOARD_PEERS} == {"peer"} and board["chgnet-0.3.0"]["origin"] == "base"
    for name, row in board.items():
        if name in labelled:
            assert row["labeller"] and row["rank_test_energy_mae"] is None and row["composite_score"] is None
            assert row["test_energy_mae"] < 1.0  # its own labels, up to the corpus' float rounding
        else:
            assert not row["labeller"] and row["rank_test_energy_mae"] is not None
    ranked = sorted(r["rank_test_energy_mae"] for r in board.values() if not r["labeller"])
    assert ranked == list(range(1, len(ranked) + 1))
    with Session(split_engine) as session:
        peer_metrics = session.scalars(
            select(BenchmarkMetric.name)
            .join(BenchmarkRun, BenchmarkRun.id == BenchmarkMetric.run_id)
            .where(BenchmarkRun.model_id == board["sevennet-0"]["model_id"])
        ).all()
    assert {"energy_mae", "force_mae", "stress_mae"} <= set(peer_metrics) and "magmom_mae" not in peer_metrics
    again = refresh(split_engine, "tiny", benchmarks=suite, client=dask_client, models=names, peers=True)
    assert not again.ran and len(again.fresh) == len(names)


@pytest.fixture
def split_engine(engine, database_url, r2scan_corpus, dask_client, monkeypatch, tmp_path):
    from support.tiny_split import make_tiny_split

    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    make_tiny_split(engine, database_url, r2scan_corpus, dask_client)
    return engine


def test_models_register_and_list_on_the_command_line(engine, invoke):
    import json

    result = invoke("models", "register", "emt", "--calculator", EMT, "--option", "asap_cutoff=true", "-f", "GGA")
    assert result.exit_code == 0, result.output
    assert "registered emt" in result.output
    listed = invoke("models", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert (row["name"], row["kind"], row["role"], row["family"]) == ("emt", "calculator", "peer", "ASE")
    assert row["options"] == {"asap_cutoff": True} and row["fidelities"] == "GGA"
    broken = invoke("models", "register", "bad", "--calculator", "ase.calculators.emt", "-f", "GGA")
    assert isinstance(broken.exception, CrossfidError) and "module:callable" in str(broken.exception)
    board = invoke("leaderboard", "show")
    assert board.exit_code == 0, board.output
    assert "emt" in board.output and "peer" in board.output
