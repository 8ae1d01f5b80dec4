"""The forgetting benchmark: errors of a model on the source fidelity's test frames, energy after referencing."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from crossfid.benchmarks.forgetting import DEFAULT_SOURCE, Forgetting, referenced_energy_errors
from crossfid.benchmarks.registry import Context, NotApplicable
from crossfid.potentials.base import load_potential
from crossfid.training.data import LabelledFrame
from crossfid.training.registry import ensure_package_model, model_spec


@pytest.fixture
def r2scan_split(demo_engine, database_url, dask_client, monkeypatch, tmp_path):
    """The demo corpus curated at r2SCAN (frozen, split 3:1:1) and at GGA/GGA+U (the source fidelities)."""
    from crossfid.curation.datasets import freeze_dataset
    from crossfid.curation.pipeline import run_curation
    from crossfid.curation.split_store import create_split

    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    target = run_curation(demo_engine, database_url, ["r2SCAN"], client=dask_client)
    freeze_dataset(demo_engine, target.run_id, "target", energy_label="uncorrected")
    split = create_split(demo_engine, "target", (3, 1, 1), seed=0).id
    source = run_curation(demo_engine, database_url, list(DEFAULT_SOURCE), client=dask_client)
    return demo_engine, split, source.run_id


def test_the_source_test_set_is_the_test_materials_at_the_source_fidelity(r2scan_split):
    engine, split, source_run = r2scan_split
    with Session(engine) as session:
        prepared = Forgetting().prepare(session, split)
    with engine.connect() as conn:
        expected = set(
            conn.execute(
                text(
                    "SELECT f.id FROM frames f JOIN tasks t ON t.id = f.task_id "
                    "JOIN frame_decisions d ON d.frame_id = f.id AND d.run_id = :run AND d.accepted "
                    "WHERE t.fidelity IN ('GGA', 'GGA+U') AND t.material_id IN "
                    "(SELECT material_id FROM split_members WHERE split_id = :split AND part = 'test')"
                ),
                {"run": source_run, "split": split},
            ).scalars()
        )
        rejected = conn.execute(
            text("SELECT count(*) FROM frame_decisions WHERE run_id = :run AND NOT accepted"), {"run": source_run}
        ).scalar_one()
    assert expected and {f.frame_id for f in prepared.payload} == expected
    assert prepared.data["curation_run"] == source_run and prepared.data["n"] == len(expected)
    assert rejected > 0  # the demo's flaws: the source set is the curated one, not every frame
    assert prepared.labelled_by and all(name for name in prepared.labelled_by)
    with Session(engine) as session:
        assert Forgetting(["GGA", "GGA+U"]).prepare(session, split).data_hash == prepared.data_hash
        with pytest.raises(NotApplicable, match="fidelities of dataset"):
            Forgetting(["r2SCAN"]).prepare(session, split)
        with pytest.raises(NotApplicable, match="has frames at"):
            Forgetting(["PBEsol"]).prepare(session, split)


def test_forgetting_metrics_equal_a_direct_computation(r2scan_split):
    engine, split, _ = r2scan_split
    benchmark = Forgetting()
    with Session(engine) as session, session.begin():
        prepared = benchmark.prepare(session, split)
        row = ensure_package_model(session, "chgnet-r2scan")
        session.expunge(row)
    metrics, items = benchmark.run(Context(engine=engine), row, prepared)
    got = {m.name: m for m in metrics}
    frames: list[LabelledFrame] = prepared.payload
    predictions = load_potential(model_spec(row)).predict([f.structure() for f in frames])
    labelled = [(f, p) for f, p in zip(frames, predictions, strict=True) if f.forces is not None]
    force = np.concatenate([np.abs(p.forces - f.forces).ravel() for f, p in labelled])
    assert got["force_mae"].value == pytest.approx(1000 * force.mean(), rel=1e-3)
    # energy after the per-element offset that best explains DFT − model on these frames (least squares)
    with_energy = [(f, p) for f, p in zip(frames, predictions, strict=True) if np.isfinite(f.energy_per_atom)]
    elements = sorted({int(z) for f, _ in with_energy for z in f.atomic_numbers})
    design = np.array([[np.mean(f.atomic_numbers == z) for z in elements] for f, _ in with_energy])
    residual = np.array([f.energy_per_atom - p.energy for f, p in with_energy])
    offsets, *_ = np.linalg.lstsq(design, residual, rcond=None)
    referenced = np.abs(residual - design @ offsets)
    assert got["energy_mae"].value == pytest.approx(1000 * referenced.mean(), rel=1e-3, abs=1e-3)
    assert got["raw_energy_mae"].value == pytest.approx(1000 * np.abs(residual).mean(), rel=1e-3)
    assert got["energy_mae"].value <= got["raw_energy_mae"].value
    assert len(items) == len(frames) and all("referenced_energy_error" in i.result for i in items)


def test_referencing_removes_a_constant_shift_per_element():
    """A model off by a constant per element has forgotten nothing by the referenced energy MAE."""
    rng = np.random.default_rng(0)
    frames, predicted = [], []
    shift = {8: -0.3, 12: 0.2, 26: 1.1}  # eV/atom per element
    for i in range(12):
        numbers = rng.choice(list(shift), size=int(rng.integers(2, 6)))
        energy = float(rng.normal(-5, 1))
        frames.append(
            LabelledFrame(i, f"{i:064x}", str(i), np.eye(3) * 5, numbers, rng.random((len(numbers), 3)), energy)
        )
        predicted.append(energy - float(np.mean([shift[z] for z in numbers])))
    errors, offsets = referenced_energy_errors(frames, predicted)
    assert np.max(errors) < 1e-9
    assert offsets == pytest.approx({"O": -0.3, "Mg": 0.2, "Fe": 1.1})
