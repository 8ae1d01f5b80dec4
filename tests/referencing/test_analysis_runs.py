"""Energy referencing on real PostgreSQL: stored AtomRefs and cross-fidelity analyses on a demo corpus.

The corpus spans the demo generator's whole catalogue (58 materials, short
relaxations, no flaws), so correlations are computed over a realistic spread of
chemistries: GGA/GGA+U labels from CHGNet v0.3.0, r2SCAN labels from the shipped
r2SCAN model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dask.distributed import Client, LocalCluster
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from crossfid.cli.analyze import app as analyze_app
from crossfid.cli.atomref import app as atomref_app
from crossfid.curation.datasets import freeze_dataset
from crossfid.curation.pipeline import run_curation
from crossfid.curation.split_store import create_split
from crossfid.plots.pngdata import read_data
from crossfid.referencing.analysis_runs import (
    AnalysisError,
    get_analysis,
    run_correlation,
    run_importance,
    run_shifts,
    run_transferability,
)
from crossfid.referencing.atomref import fit_atomref
from crossfid.referencing.composition import N_ELEMENTS, SYMBOLS
from crossfid.referencing.package_atomrefs import package_atomref_values
from crossfid.referencing.store import (
    AtomRefStoreError,
    fit_split_atomref,
    list_atomrefs,
    resolve_atomref,
    split_frames,
)

SOURCE, TARGET = ["GGA", "GGA+U"], ["r2SCAN"]


@pytest.fixture(scope="module")
def catalogue_corpus(tmp_path_factory):
    from crossfid.demo.generator import DemoSettings, FlawRates, generate_demo_corpus
    from crossfid.structures.prototypes import CATALOGUE

    settings = DemoSettings(
        max_steps=3,
        elemental_phases=False,
        labeller="chgnet",
        static_rate=0.0,
        single_fidelity_fraction=0.0,
        flaws=FlawRates(
            final_energy_mismatch=0.0, high_energy=0.0, scf_unconverged=0.0, missing_forces=0.0, near_duplicate=0.0
        ),
    )
    path = tmp_path_factory.mktemp("catalogue") / "catalogue.jsonl.gz"
    return generate_demo_corpus(path, n_materials=len(CATALOGUE), seed=5, settings=settings)


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture
def split_engine(engine, database_url, catalogue_corpus, client):
    """A database with the catalogue corpus, its r2SCAN frames curated, frozen as ``cat`` and split 8:1:1."""
    from crossfid.ingest.demo import read_demo_corpus
    from crossfid.ingest.loader import ingest

    assert ingest(engine, "demo", "demo", read_demo_corpus(catalogue_corpus.path)).quarantined == 0
    summary = run_curation(engine, database_url, TARGET, client=client)
    freeze_dataset(engine, summary.run_id, "cat", energy_label="uncorrected")
    create_split(engine, "cat", (8, 1, 1), seed=0)
    return engine


def resolve_prior(engine, name: str) -> np.ndarray:
    with Session(engine) as session:
        return resolve_atomref(session, name).values


def test_split_atomref_is_stored_once_traceable_and_immutable(split_engine):
    engine = split_engine
    ref, created = fit_split_atomref(engine, "cat")
    again, created_again = fit_split_atomref(engine, "cat")
    assert created and not created_again and again.id == ref.id and again.values_hash == ref.values_hash

    with Session(engine) as session:
        data = split_frames(session, ref.split_id, "train")
        split_hash, dataset_hash = session.execute(
            text("SELECT s.content_hash, d.content_hash FROM splits s JOIN datasets d ON d.id = s.dataset_id")
        ).one()
    expected = fit_atomref(data.composition, data.energy_per_atom, groups=data.materials)
    assert np.array_equal(np.isnan(ref.values), np.isnan(expected.values))
    assert np.allclose(ref.values[~np.isnan(ref.values)], expected.values[~np.isnan(expected.values)], rtol=0, atol=0)
    assert ref.n_frames == len(data.energy_per_atom) and ref.mae == pytest.approx(expected.mae)
    assert ref.fidelities == ("r2SCAN",) and ref.part == "train"
    assert ref.split_id is not None and ref.dataset == "cat:1"
    assert len(ref.absent) + len(ref.elements) == N_ELEMENTS and "H" in ref.absent

    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT split_hash, dataset_hash FROM atomrefs WHERE id = :id"), {"id": ref.id}
        ).one()
        assert tuple(stored) == (split_hash, dataset_hash)
        long_form = conn.execute(
            text("SELECT element, energy_ev_per_atom FROM v_atomref_energies WHERE atomref_id = :id"), {"id": ref.id}
        ).all()
    assert len(long_form) == N_ELEMENTS
    assert dict(long_form)["H"] is None and dict(long_form)["O"] == pytest.approx(ref.values[7])

    weighted, created = fit_split_atomref(engine, "cat", weighting="material", fill_from="chgnet-r2scan")
    assert created and weighted.id != ref.id and "H" in weighted.filled
    with Session(engine) as session:
        unfitted_in_fill = set(resolve_atomref(session, "chgnet-r2scan").absent)
    assert unfitted_in_fill >= {"Yb", "Ra"}  # ≈0 in the shipped model: never fitted, so never copied
    missing = {SYMBOLS[j] for j in np.flatnonzero(np.isnan(weighted.values))}
    assert missing == unfitted_in_fill - set(weighted.elements)
    with pytest.raises(AtomRefStoreError, match="already exists"):
        fit_split_atomref(engine, "cat", weighting="material", name=ref.name)

    # a ridge towards the prior is a different fit: its own key, name and recorded weight
    pulled, created = fit_split_atomref(engine, "cat", prior="chgnet-r2scan", prior_weight=100)
    plain_prior, _ = fit_split_atomref(engine, "cat", prior="chgnet-r2scan")
    assert created and pulled.id not in (ref.id, plain_prior.id) and pulled.name.endswith("/prior-chgnet-r2scan-w100")
    assert pulled.provenance["prior_weight"] == 100 and plain_prior.provenance["prior_weight"] == 0
    expected = fit_atomref(
        data.composition, data.energy_per_atom, prior=resolve_prior(engine, "chgnet-r2scan"), prior_weight=100
    )
    assert np.allclose(pulled.values[~np.isnan(pulled.values)], expected.values[~np.isnan(expected.values)])
    again, created_again = fit_split_atomref(engine, "cat", prior="chgnet-r2scan", prior_weight=100)
    assert (again.id, created_again) == (pulled.id, False)
    with pytest.raises(AtomRefStoreError, match="needs --prior"):
        fit_split_atomref(engine, "cat", prior_weight=1)

    with pytest.raises(DBAPIError, match="immutable"), engine.begin() as conn:
        conn.execute(text("UPDATE atomrefs SET name = 'changed' WHERE id = :id"), {"id": ref.id})


def test_shipped_atomrefs_are_registered_with_the_models_values(engine):
    with Session(engine) as session, session.begin():
        gga = resolve_atomref(session, "chgnet-0.3.0")
        r2scan = resolve_atomref(session, "chgnet-r2scan")
        assert resolve_atomref(session, "chgnet-0.3.0").id == gga.id  # registered once
        assert {r.name for r in list_atomrefs(session)} == {"chgnet-0.3.0", "chgnet-r2scan"}
        with pytest.raises(AtomRefStoreError, match="no AtomRef 'nope'"):
            resolve_atomref(session, "nope")
    assert np.array_equal(gga.values, package_atomref_values("chgnet-0.3.0"))
    assert np.array_equal(r2scan.values, package_atomref_values("chgnet-r2scan"))
    assert gga.fidelities == ("GGA", "GGA+U") and gga.provenance["composition_model"] == "MPtrj"
    assert r2scan.values[25] - gga.values[25] == pytest.approx(-6.02, abs=0.01)  # Fe, CHGNET_NOTES


def test_referenced_correlation_on_the_demo_corpus_is_much_higher_than_raw(split_engine, tmp_path):
    outcome = run_correlation(
        split_engine, SOURCE, TARGET, source_atomref="chgnet-0.3.0", target_atomref="chgnet-r2scan", out_dir=tmp_path
    )
    raw, referenced = outcome.result["raw"]["pearson"], outcome.result["referenced"]["pearson"]
    assert outcome.n_materials >= 50
    assert referenced > 0.85 and referenced - raw > 0.2, (raw, referenced)

    stored = get_analysis(split_engine, outcome.id)
    assert stored.kind == "correlation" and stored.n_materials == outcome.n_materials
    assert stored.result["raw"]["pearson"] == raw and stored.source_atomref_id == outcome.source_atomref.id
    figure = Path(stored.figures["energy_scatter"])
    assert figure.stat().st_size > 10_000
    shown = read_data(figure)
    assert shown["pearson_raw"] == pytest.approx(raw) and shown["pearson_referenced"] == pytest.approx(referenced)
    assert shown["source"] == stored.result["source_energy"] and shown["material_ids"] == stored.result["material_ids"]
    assert shown["target_referenced"] == stored.result["target_referenced"]

    auto = run_correlation(split_engine, SOURCE, TARGET, out_dir=tmp_path, plot=False)
    assert auto.result["raw"]["pearson"] == raw and len(auto.notes) == 2  # each note says which AtomRef and why

    with pytest.raises(AnalysisError, match="at least 3"):
        run_correlation(split_engine, ["HSE06"], TARGET, out_dir=tmp_path)


#: the catalogue's elemental phases are metals and semiconductors: O2 and F2 are added (in a box) at both fidelities
GASES = {"O": 1.21, "F": 1.42}  # bond lengths (Å) of the starting dimers


def _add_gas_references(engine) -> dict[str, dict[str, float]]:
    """Relax O2 and F2 with each fidelity's demo labeller and store them as reference entries; μ by fidelity."""
    from pymatgen.core import Lattice, Structure

    from crossfid.benchmarks.relax import relax_structure
    from crossfid.ingest.loader import ingest
    from crossfid.ingest.records import Bundle, Material, ReferenceEntry
    from crossfid.potentials.base import load_potential

    labellers = {"GGA": load_potential("chgnet-0.3.0"), "r2SCAN": load_potential("chgnet-r2scan")}
    bundles, energies = [], {}
    for element, bond in GASES.items():
        dimer = Structure(Lattice.cubic(8.0), [element] * 2, [[0, 0, 0], [bond, 0, 0]], coords_are_cartesian=True)
        references = []
        for fidelity, model in labellers.items():
            relaxed = relax_structure(model, dimer, fmax=0.05, steps=200, relax_cell=False)
            assert relaxed.ok, (element, fidelity, relaxed.failure)
            energies.setdefault(fidelity, {})[element] = relaxed.energy_per_atom
            references.append(ReferenceEntry(fidelity, relaxed.energy_per_atom, n_atoms=2, structure=relaxed.structure))
        material = Material.from_atomic_numbers(f"ref-{element}2", dimer.atomic_numbers)
        bundles.append(Bundle(material=material, location=f"test:{element}2", references=references))
    assert ingest(engine, "reference-gases", "demo", bundles).quarantined == 0
    return energies


def test_shifts_importance_and_their_figures_match_the_stored_numbers(split_engine, tmp_path):
    from pymatgen.core import Composition

    shifts = run_shifts(split_engine, SOURCE, TARGET)
    overall = shifts.result["overall"]
    assert overall["n"] == shifts.n_materials and overall["mean"] < -0.5  # r2SCAN sits eV/atom below GGA here
    assert {item["symbol"] for item in shifts.result["by_element"]} >= {"O", "Fe", "W"}

    # the catalogue's elemental entries are metals and semiconductors only: no compound has references for all its
    # elements, and an element's own phases have nothing to rank
    with pytest.raises(AnalysisError, match=r"only 0 of the \d+ materials shared .* are compounds .* O.* at r2SCAN"):
        run_importance(split_engine, SOURCE, TARGET, plot=False)
    gases = _add_gas_references(split_engine)
    outcome = run_importance(split_engine, SOURCE, TARGET, corrections="both", out_dir=tmp_path)
    variants = outcome.result["variants"]
    assert set(variants) == {"none", "mp2020"}
    for name, variant in variants.items():
        assert sum(variant["normalised"].values()) == pytest.approx(1.0)
        assert len(variant["difference"]) == len(variant["material_ids"])
        shown = read_data(outcome.figures[f"importance_{name}"])
        assert shown["importance"] == pytest.approx(variant["normalised"])

    # only materials whose every element has an elemental entry at both fidelities; the others counted, never
    # referenced to an AtomRef value
    with Session(split_engine) as session:
        rows = session.execute(
            text(
                "SELECT m.external_id, m.formula, m.n_elements, r.fidelity, r.energy_per_atom FROM reference_entries r "
                "JOIN materials m ON m.id = r.material_id"
            )
        ).all()
    energy = {(r.external_id, "r2SCAN" if r.fidelity == "r2SCAN" else "GGA"): r.energy_per_atom for r in rows}
    formula = {r.external_id: r.formula for r in rows}
    mu: dict[str, dict[str, float]] = {"GGA": {}, "r2SCAN": {}}
    for r in rows:
        if r.n_elements == 1:
            side = mu["r2SCAN" if r.fidelity == "r2SCAN" else "GGA"]
            element = Composition(r.formula).elements[0].symbol
            side[element] = min(side.get(element, np.inf), r.energy_per_atom)
    assert {e: mu[f][e] for f in mu for e in GASES} == {e: gases[f][e] for f in gases for e in GASES}
    referenced = set(mu["GGA"]) & set(mu["r2SCAN"])
    shared = sorted({m for m, f in energy if f == "GGA"} & {m for m, f in energy if f == "r2SCAN"})
    usable = [m for m in shared if {el.symbol for el in Composition(formula[m]).elements} <= referenced]
    record = outcome.result["left_out_no_elemental_reference"]
    assert record["n"] == len(shared) - len(usable) > 10 and record["of"] == len(shared) == outcome.n_materials
    assert set(record["materials"]) == set(shared) - set(usable)
    assert record["by_element"]["r2SCAN"]["Sr"] == sum("Sr" in formula[m] for m in shared)
    assert variants["none"]["material_ids"] == usable and len(usable) >= 15
    assert {"NiO", "WO3", "LiF", "FeF2"} <= {formula[m] for m in usable}

    def formation(m, fidelity):
        fractions = Composition(formula[m]).fractional_composition
        return energy[(m, fidelity)] - sum(x * mu[fidelity][el.symbol] for el, x in fractions.items())

    expected = [formation(m, "GGA") - formation(m, "r2SCAN") for m in usable]
    assert variants["none"]["difference"] == pytest.approx(expected, abs=1e-9)
    assert variants["none"]["n_left_out_no_elemental_reference"] == record["n"]
    assert any("left out" in note for note in outcome.notes)
    # MP2020 corrections change the oxides' and fluorides' formation energies, so the difference changes
    assert variants["mp2020"]["difference"] != variants["none"]["difference"]

    with pytest.raises(AnalysisError, match="never AtomRef values"):
        run_importance(split_engine, SOURCE, TARGET, source_atomref="chgnet-0.3.0", plot=False)
    # without elemental entries at r2SCAN nothing is left to compare: an error naming what is missing
    with split_engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM reference_entries WHERE fidelity = 'r2SCAN' "
                "AND material_id IN (SELECT id FROM materials WHERE n_elements = 1)"
            )
        )
    with pytest.raises(AnalysisError, match=r"only 0 of the \d+ materials shared .* \(none for .*O.* at r2SCAN\)"):
        run_importance(split_engine, SOURCE, TARGET, plot=False)


def test_transferability_report_recommends_referencing(split_engine, tmp_path):
    outcome = run_transferability(split_engine, SOURCE, "cat", out_dir=tmp_path)
    report = outcome.report
    assert report.needs_referencing and report.mean_abs_shift > 0.5
    assert "AtomRef" in report.verdict and "method 4" in report.verdict
    assert outcome.source_atomref.name == "chgnet-0.3.0"
    assert outcome.result["referenced_pearson"] > outcome.result["raw_pearson"]
    stored = get_analysis(split_engine, outcome.id)
    assert stored.kind == "transferability" and stored.split_id is not None
    assert stored.result["verdict"] == report.verdict and Path(stored.figures["energy_scatter"]).exists()
    with split_engine.connect() as conn:
        row = conn.execute(
            text("SELECT verdict, pearson_raw FROM v_cross_fidelity_analyses WHERE id = :id"), {"id": outcome.id}
        ).one()
    assert row.verdict == report.verdict and row.pearson_raw == pytest.approx(report.raw_pearson)


def test_atomref_and_analyze_commands(split_engine, database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def run(app, *args: str, code: int = 0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result

    fitted = run(atomref_app, "fit", "cat").output
    assert "fitted AtomRef" in fitted and "cat:1/split-" in fitted and "absent" in fitted
    assert "exists:" in run(atomref_app, "fit", "cat").output
    listed = run(atomref_app, "list").output
    assert "chgnet-0.3.0" in listed and "chgnet-r2scan" in listed
    shown = json.loads(
        run(atomref_app, "show", "chgnet-r2scan", "--compare", "chgnet-0.3.0", "--format", "json").output
    )
    assert shown["energies"]["Fe"] == pytest.approx(package_atomref_values("chgnet-r2scan")[25])
    assert "difference" in run(atomref_app, "show", "chgnet-r2scan", "--compare", "chgnet-0.3.0").output

    correlation = run(analyze_app, "correlation", "--source", "GGA,GGA+U", "--target", "r2SCAN").output
    assert "raw" in correlation and "referenced" in correlation
    assert (tmp_path / "home" / "figures").is_dir()
    report = run(analyze_app, "transferability", "--source", "GGA,GGA+U", "--target", "cat").output
    assert "needs referencing" in report and "yes" in report
    run(analyze_app, "shifts", "--source", "pbe", "--target", "r2scan")
    failed = runner.invoke(atomref_app, ["fit", "nope"])
    assert failed.exit_code == 1 and "no dataset 'nope'" in str(failed.exception)
