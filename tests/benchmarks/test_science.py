"""Benchmark science: relaxations, hulls, the density table and scaling laws (no database)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crossfid.benchmarks.density import (
    PROTOTYPES,
    build_crystal,
    crystal,
    density_benchmark,
    density_ratio_stats,
    experimental_density,
    load_crystals,
)
from crossfid.benchmarks.relax import (
    FAILURE_DIVERGED,
    FAILURE_ISOLATED,
    nearest_neighbour_distances,
    relax_structure,
    strained,
)
from crossfid.benchmarks.scaling import crossover, fit_scaling_law
from crossfid.benchmarks.thermo import (
    NO_ENTRY,
    decomposition_energies,
    decomposition_metrics,
    decomposition_truth,
    formation_energies_by_id,
    formation_energy_mae,
    formation_truth,
    needed_entries,
    score_decomposition,
    score_formation,
)

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
LI_FE_O = REAL / "entries" / "Li-Fe-O_entries.json.gz"


@pytest.fixture(scope="module")
def chgnet():
    from crossfid.potentials.base import load_potential

    return load_potential("chgnet-0.3.0")


def _json_ready(document) -> None:
    json.dumps(document, allow_nan=False)


# ---------------------------------------------------------------------------- relaxation


def test_nearest_neighbour_distances_and_strain():
    nacl = build_crystal(crystal("NaCl-rocksalt"))
    a = 5.6402
    assert nearest_neighbour_distances(nacl) == pytest.approx([a / 2, a / 2])
    assert np.isinf(nearest_neighbour_distances(nacl, radius=2.0)).all()  # none within 2 Å: counts as > 2 Å
    cu = build_crystal(crystal("Cu-fcc"))
    assert len(cu) == 1
    assert nearest_neighbour_distances(cu) == pytest.approx([3.6149 / math.sqrt(2)])  # periodic images

    squeezed = strained(nacl, -0.10)
    assert squeezed.lattice.matrix == pytest.approx(0.9 * nacl.lattice.matrix)
    assert squeezed.frac_coords == pytest.approx(nacl.frac_coords)
    assert squeezed.volume == pytest.approx(0.729 * nacl.volume)
    with pytest.raises(ValueError):
        strained(nacl, -1.0)


def test_relaxation_from_strain_recovers_the_relaxed_density(chgnet):
    fe = build_crystal(crystal("Fe-bcc"))
    assert len(fe) == 1
    first = relax_structure(chgnet, fe)
    assert first.ok and first.converged and first.failure is None
    relaxed = Structure.from_dict(first.structure)

    second = relax_structure(chgnet, strained(relaxed, -0.10))
    assert second.ok and second.converged and second.failure is None
    assert second.n_steps >= 1
    again = Structure.from_dict(second.structure)
    assert relaxed.density / again.density == pytest.approx(1.0, abs=0.01)
    assert second.energy_per_atom == pytest.approx(first.energy_per_atom, abs=0.005)  # eV/atom
    assert second.max_nn_distance == pytest.approx(nearest_neighbour_distances(again).max())
    _json_ready(second.to_dict())


def test_isolated_atom_is_a_failed_relaxation(chgnet):
    before = chgnet.model.graph_converter.on_isolated_atoms
    far = Structure(Lattice.cubic(20.0), ["Na", "Cl"], [[0, 0, 0], [0.4, 0, 0]])  # 8 Å apart
    result = relax_structure(chgnet, far, relax_cell=False, steps=1)
    assert not result.ok
    assert result.failure == FAILURE_ISOLATED
    assert result.max_nn_distance == pytest.approx(8.0)
    assert result.energy_per_atom is not None and result.structure is not None
    assert chgnet.model.graph_converter.on_isolated_atoms == before  # the model's setting is restored
    # the criterion is the caller's: 10 Å tolerates the same structure
    assert relax_structure(chgnet, far, relax_cell=False, steps=1, max_nn_distance=10.0).ok


def test_bad_structures_fail_as_diverged_without_raising(chgnet):
    nan = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [np.nan, 0.5, 0.5]])
    result = relax_structure(chgnet, nan)
    assert not result.ok and result.failure == FAILURE_DIVERGED
    assert result.energy_per_atom is None and result.structure is None
    assert "non-finite" in result.message
    _json_ready(result.to_dict())

    # an exception inside the optimiser (americium is outside CHGNet's 94 elements): message kept
    americium = Structure(Lattice.cubic(3.5), ["Am"], [[0, 0, 0]])
    crashed = relax_structure(chgnet, americium)
    assert crashed.failure == FAILURE_DIVERGED and crashed.message and ":" in crashed.message

    assert relax_structure(chgnet, {"not": "a structure"}).failure == FAILURE_DIVERGED


# ---------------------------------------------------------------------------- formation and decomposition


#: hand-made Li-O energies (eV/atom): stable Li, O, Li2O; unstable Li2O2, LiO2 and two polymorphs
LI_O = [
    ("Li", "Li", -1.90),
    ("Li-b", "Li", -1.88),
    ("O", "O2", -4.95),
    ("Li2O", "Li2O", -4.80),
    ("Li2O-b", "Li2O", -4.75),
    ("Li2O2", "Li2O2", -4.70),
    ("LiO2", "LiO2", -4.60),
]


def _shifted(entries, shifts):
    return [(i, f, e + shifts.get(i, 0.0)) for i, f, e in entries]


def test_decomposition_energies_of_a_hand_made_hull():
    e_d = decomposition_energies(LI_O)
    assert set(e_d) == {i for i, _, _ in LI_O} and not e_d.missing
    assert e_d.values == dict(e_d.items()) and "Li2O" in e_d and len(e_d) == len(LI_O)
    assert e_d["Li"] == 0.0 and e_d["O"] == 0.0
    assert e_d["Li2O"] == pytest.approx(-1.0333333, abs=1e-6)  # below the Li–Li2O2 tie line
    assert e_d["Li-b"] == pytest.approx(0.02)
    assert e_d["Li2O-b"] == pytest.approx(0.05)  # an unstable polymorph: energy above hull, not negative
    assert e_d["Li2O2"] == pytest.approx(0.1375)
    assert e_d["LiO2"] == pytest.approx(0.275)
    _json_ready(e_d.to_dict())


def test_dft_hull_against_itself_is_perfect():
    dft = decomposition_energies(LI_O)
    metrics = decomposition_metrics(dft, decomposition_energies(LI_O))
    assert metrics.mae == 0.0 and metrics.n == len(LI_O)
    assert metrics.f1 == 1.0 and metrics.precision == 1.0 and metrics.recall == 1.0
    assert metrics.confusion == (3, 0, 0, 4)
    _json_ready(metrics.to_dict())


def test_shifted_model_energies_give_known_errors():
    dft = decomposition_energies(LI_O)
    # unstable entries no stable one competes with, moved up: only their own e_d moves, by the shift
    model = decomposition_energies(_shifted(LI_O, {"Li-b": 0.010, "LiO2": 0.030}))
    metrics = decomposition_metrics(model, dft)
    assert metrics.mae == pytest.approx(40.0 / 7)  # meV/atom
    assert metrics.f1 == 1.0
    # Li2O2 up by 10 meV: its e_d, and Li2O's (measured from the Li–Li2O2 tie line, 2/3 of the shift at x_O = 1/3)
    model = decomposition_energies(_shifted(LI_O, {"Li2O2": 0.010}))
    assert model["Li2O"] - dft["Li2O"] == pytest.approx(-0.010 * 2 / 3)
    assert decomposition_metrics(model, dft).mae == pytest.approx((10.0 + 20.0 / 3) / 7)

    # Li2O2 pushed below the hull: one false "stable"
    model = decomposition_energies(_shifted(LI_O, {"Li2O2": -0.2}))
    assert model["Li2O2"] < 0
    metrics = decomposition_metrics(model, dft)
    assert metrics.confusion == (3, 1, 0, 3)
    assert metrics.precision == pytest.approx(0.75) and metrics.recall == 1.0
    assert metrics.f1 == pytest.approx(6 / 7)


def test_a_per_element_gauge_shift_changes_no_difference():
    """Energies + x_Li·a + x_O·b (a different AtomRef): formation and decomposition energies are unchanged."""
    from pymatgen.core import Composition

    def gauge(entries):
        out = []
        for i, f, e in entries:
            c = Composition(f).fractional_composition
            out.append((i, f, e + 7.0 * c["Li"] - 3.0 * c["O"]))
        return out

    metrics = decomposition_metrics(decomposition_energies(gauge(LI_O)), decomposition_energies(LI_O))
    assert metrics.mae == pytest.approx(0.0, abs=1e-6) and metrics.f1 == 1.0
    mae = formation_energy_mae(formation_energies_by_id(gauge(LI_O)), formation_energies_by_id(LI_O))
    assert mae["mae"] == pytest.approx(0.0, abs=1e-6) and mae["n"] == len(LI_O)


def test_formation_energies_and_their_mae():
    e_f = formation_energies_by_id(LI_O)
    assert e_f["Li"] == 0.0 and e_f["Li-b"] == pytest.approx(0.02)
    assert e_f["Li2O"] == pytest.approx(-4.80 - (2 * -1.90 + -4.95) / 3)
    model = formation_energies_by_id(_shifted(LI_O, {"Li2O2": 0.014}))
    model["extra"] = -1.0  # only on one side
    result = formation_energy_mae(model, e_f)
    assert result == {"mae": pytest.approx(2.0), "n": 7, "n_missing": 1, "unit": "meV/atom"}
    assert formation_energy_mae([0.1, math.nan], [0.2, -1.0]) == {
        "mae": pytest.approx(100.0),
        "n": 1,
        "n_missing": 1,
        "unit": "meV/atom",
    }
    assert formation_energy_mae({}, {})["mae"] is None


def test_missing_elemental_entry_gives_nan_with_a_reason():
    entries = [("Fe", "Fe", -8.3), ("FeO", "FeO", -7.0), ("Fe2O3", "Fe2O3", -6.9), ("bad", "FeO", math.nan)]
    e_d = decomposition_energies(entries)
    assert e_d["Fe"] == 0.0
    for material_id in ("FeO", "Fe2O3"):
        assert math.isnan(e_d[material_id])
        assert "O" in e_d.missing[material_id] and "Fe-O" in e_d.missing[material_id]
    assert math.isnan(e_d["bad"]) and "non-finite" in e_d.missing["bad"]
    assert e_d.to_dict()["values"]["FeO"] is None
    assert set(e_d.finite()) == {"Fe"}

    metrics = decomposition_metrics(e_d, {"Fe": 0.0, "FeO": -0.5, "Fe2O3": -0.4})
    assert metrics.n == 1 and metrics.n_missing == 3
    with pytest.raises(ValueError, match="duplicate"):
        decomposition_energies([("x", "Fe", -8.3), ("x", "Fe", -8.2)])


# ---------------------------------------------------------------------------- the study's scoring


def test_decomposition_truth_scores_the_test_materials_on_hulls_of_all_entries():
    test = ["Li2O-b", "Li2O2"]
    truth = decomposition_truth(LI_O, test)
    assert truth.scored == tuple(test) and set(truth.values) == set(test) and not truth.missing
    everything = decomposition_energies(LI_O)
    assert truth.values == {m: everything[m] for m in test}  # the hull of every entry, scored on two
    # a hull of the test materials and the elements alone misses the stable Li2O: Li2O-b would look stable
    alone = decomposition_energies([e for e in LI_O if e[0] in {"Li", "O", *test}])
    assert alone["Li2O-b"] < 0 < truth.values["Li2O-b"] == pytest.approx(0.05)
    assert needed_entries(LI_O, test) == [i for i, _, _ in LI_O]  # every Li-O entry is on their hull
    assert needed_entries(LI_O + [("Fe", "Fe", -8.3)], ["Li2O2"]) == [i for i, _, _ in LI_O]


def test_formation_truth_scores_every_material_and_names_what_lacks_a_reference():
    scored = [i for i, _, _ in LI_O] + ["FeO", "absent"]
    truth = formation_truth(LI_O + [("FeO", "FeO", -7.0)], scored)
    assert truth.values == {i: v for i, v in formation_energies_by_id(LI_O).items()}
    assert truth.missing == {"FeO": "no elemental reference entry for Fe", "absent": NO_ENTRY}
    assert truth.missing_elements() == ["Fe"] and truth.n_missing == 2
    nothing = formation_truth([("FeO", "FeO", -7.0), ("Fe2O3", "Fe2O3", -6.9)], ["FeO", "Fe2O3"])
    assert nothing.values == {} and nothing.missing_elements() == ["O", "Fe"]


def _model_energies(entries, seed=0, noise=0.02):
    """A model's relaxed energies (eV/atom): the DFT ones with Gaussian noise."""
    rng = np.random.default_rng(seed)
    return {i: e + float(rng.normal(0.0, noise)) for i, _, e in entries}


def test_a_failed_relaxation_never_changes_the_dft_truth_and_is_counted():
    test = ["Li2O", "Li2O-b", "Li2O2", "LiO2"]
    truth = decomposition_truth(LI_O, test)
    before = dict(truth.values)
    energies = _model_energies(LI_O)
    clean = score_decomposition(LI_O, energies, {}, truth)
    assert set(clean.values) == set(test) and not clean.failures and clean.failed_share == 0.0

    # LiO2's own relaxation fails and so does the higher Li polymorph: LiO2 is a failure of the model, counted
    failures = {"LiO2": "an atom ends 7.1 Å from its nearest neighbour", "Li-b": "diverged"}
    partial = {i: e for i, e in energies.items() if i not in failures}
    score = score_decomposition(LI_O, partial, failures, truth)
    assert truth.values == before == decomposition_truth(LI_O, test).values  # the truth never moves
    assert set(score.failures) == {"LiO2"} and score.failures["LiO2"].startswith("relaxation failed: an atom")
    assert score.n_scored == 4 and score.failed_share == pytest.approx(0.25)
    assert score.values == pytest.approx({m: clean.values[m] for m in score.values}, abs=1e-12)

    # every elemental O entry fails: the model has no O reference state, so every scored Li-O material fails
    score = score_decomposition(LI_O, {i: e for i, e in energies.items() if i != "O"}, {"O": "diverged"}, truth)
    assert set(score.failures) == set(test) and score.values == {} and score.failed_share == 1.0
    assert all("no model reference state for O" in r and "O: diverged" in r for r in score.failures.values())
    assert truth.values == before

    formation = formation_truth(LI_O, [i for i, _, _ in LI_O])
    score = score_formation(LI_O, {i: e for i, e in energies.items() if i != "O"}, {"O": "diverged"}, formation)
    assert set(score.values) == {"Li", "Li-b"} and score.failures["O"] == "relaxation failed: diverged"
    assert score.failures["Li2O"].startswith("no model reference state for O")
    assert score.failed_share == pytest.approx(5 / 7)


@pytest.mark.skipif(not LI_FE_O.exists(), reason=f"real entries not found at {LI_FE_O} (../shared is absent)")
def test_the_studys_scoring_on_the_real_li_fe_o_phase_diagram():
    from monty.serialization import loadfn
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    real = loadfn(LI_FE_O)
    entries = [(e.entry_id, e.composition.formula, e.energy_per_atom) for e in real]
    by_id = {e.entry_id: e for e in real}
    test = [i for i, _, _ in entries][::8]
    truth = decomposition_truth(entries, test)
    assert set(truth.values) == set(test)
    diagram = PhaseDiagram(real)  # pymatgen's own hull of all 375 MP entries
    for material_id in test:
        entry = by_id[material_id]
        expected = (
            diagram.get_decomp_and_phase_separation_energy(entry)[1]
            if entry in diagram.stable_entries
            else diagram.get_e_above_hull(entry)
        )
        assert truth.values[material_id] == pytest.approx(expected, abs=1e-9)
    formation = formation_truth(entries, [i for i, _, _ in entries])
    assert len(formation.values) == len(real)
    for material_id in test:
        assert formation.values[material_id] == pytest.approx(diagram.get_form_energy_per_atom(by_id[material_id]))

    # a model with noise, whose relaxations of every elemental Li phase and of one Fe-O compound fail
    energies = _model_energies(entries, seed=1)
    lithium = {i for i in by_id if by_id[i].composition.reduced_formula == "Li"}
    fe_o = next(i for i in test if by_id[i].composition.chemical_system == "Fe-O")
    failed = {i: "diverged" for i in lithium | {fe_o}}
    score = score_decomposition(entries, {i: e for i, e in energies.items() if i not in failed}, failed, truth)
    assert decomposition_truth(entries, test).values == truth.values
    with_li = {i for i in test if "Li" in by_id[i].composition.chemical_system.split("-")}
    assert set(score.failures) == with_li | {fe_o}
    assert set(score.values) == set(test) - with_li - {fe_o}
    assert score.failed_share == pytest.approx(len(score.failures) / len(test))
    metrics = decomposition_metrics(score.values, {m: truth.values[m] for m in score.values})
    assert metrics.n == len(score.values) and 0 < metrics.mae < 200


# ---------------------------------------------------------------------------- density table


def test_crystal_table_is_complete_and_every_entry_builds():
    crystals = load_crystals()
    assert len(crystals) >= 44
    assert len({c["id"] for c in crystals}) == len(crystals)
    assert {c["prototype"] for c in crystals} == set(PROTOTYPES)
    sizes = {}
    for entry in crystals:
        assert entry["reference"].strip()
        structure = build_crystal(entry)
        assert 1 <= len(structure) <= 12
        assert structure.is_valid(tol=1.0)  # no two atoms closer than 1 Å
        sizes[entry["id"]] = len(structure)
    assert sizes["Cu-fcc"] == 1 and sizes["NaCl-rocksalt"] == 2 and sizes["CaF2-fluorite"] == 3  # primitive cells


@pytest.mark.parametrize(
    ("crystal_id", "density"),
    [
        ("Si-diamond", 2.329),
        ("Cu-fcc", 8.96),
        ("NaCl-rocksalt", 2.165),
        ("MgO-rocksalt", 3.58),
        ("Al2O3-corundum", 3.98),
        ("Fe-bcc", 7.874),
        ("GaAs-zincblende", 5.32),
        ("TiO2-rutile", 4.25),
        ("SrTiO3-perovskite", 5.12),
        ("ZnO-wurtzite", 5.61),
    ],
)
def test_experimental_densities_match_handbook_values(crystal_id, density):
    assert experimental_density(crystal(crystal_id)) == pytest.approx(density, rel=0.03)


def test_malformed_tables_are_refused(tmp_path):
    entry = dict(crystal("Cu-fcc"))
    entry["reference"] = " "
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"crystals": [entry]}), encoding="utf-8")
    with pytest.raises(ValueError, match="reference"):
        load_crystals(path)
    broken = dict(crystal("TiO2-rutile"))
    del broken["wyckoff"]
    with pytest.raises(ValueError, match="'x'"):
        build_crystal(broken)


def test_density_ratio_statistics():
    stats = density_ratio_stats([2.0, 4.0, 3.0, 5.0], [1.0, 4.0, math.nan, 5.0])
    assert stats.n == 3 and stats.n_missing == 1
    assert stats.ratios == pytest.approx((2.0, 1.0, 1.0))
    assert stats.mean == pytest.approx(4 / 3) and stats.median == pytest.approx(1.0)
    assert stats.std == pytest.approx(np.std([2.0, 1.0, 1.0]))
    assert stats.mae == pytest.approx(1 / 3)  # g/cm³
    assert stats.fraction_less_dense == pytest.approx(1 / 3)
    assert stats.min == 1.0 and stats.max == 2.0 and stats.p25 <= stats.median <= stats.p75
    _json_ready(stats.to_dict())
    with pytest.raises(ValueError):
        density_ratio_stats([1.0], [math.nan])
    with pytest.raises(ValueError):
        density_ratio_stats([1.0, 2.0], [1.0])


def test_density_benchmark_on_one_crystal(chgnet):
    run = density_benchmark(chgnet, [crystal("Cu-fcc")])
    (record,) = run.records
    assert record.ok and record.converged and run.n_failed == 0
    assert record.experimental == pytest.approx(8.935, abs=0.01)
    assert record.ratio == pytest.approx(1.0, abs=0.1)
    assert run.stats is not None and run.stats.n == 1
    _json_ready(run.to_dict())


# ---------------------------------------------------------------------------- scaling law


SIZES = [300, 1000, 2000, 5000, 10_000, 30_000, 100_000, 190_560]


def test_scaling_fit_recovers_a_power_law():
    maes = [10**2.7 * s**-0.615 for s in SIZES]
    fit = fit_scaling_law(SIZES, maes)
    assert fit.slope == pytest.approx(-0.615, abs=1e-10)
    assert fit.intercept == pytest.approx(2.7, abs=1e-9)
    assert fit.r2 == 1.0
    assert fit.n == 6 and fit.sizes_used[0] == 2000  # only sizes above 1000
    assert fit.predict(50_000) == pytest.approx(10**2.7 * 50_000**-0.615)
    _json_ready(fit.to_dict())


def test_scaling_fit_with_noise():
    rng = np.random.default_rng(0)
    sizes = np.geomspace(2000, 200_000, 12)
    maes = 10**2.7 * sizes**-0.301 * 10 ** rng.normal(0.0, 0.02, sizes.size)
    fit = fit_scaling_law(sizes, maes)
    assert fit.slope == pytest.approx(-0.301, abs=0.03)
    assert 0.9 < fit.r2 < 1.0


def test_scaling_fit_needs_two_sizes_above_the_threshold():
    with pytest.raises(ValueError, match="at least 2"):
        fit_scaling_law([500, 1000, 5000], [30, 20, 10])
    with pytest.raises(ValueError):
        fit_scaling_law([2000, 5000], [30, -1])
    assert fit_scaling_law([2000, 5000], [30, 20]).r2 == 1.0


@pytest.mark.parametrize(("scratch", "transfer", "expected"), [(-0.615, -0.301, 720_000), (-0.394, -0.134, 317_000)])
def test_study_crossovers(scratch, transfer, expected):
    """Lines through the study's slopes that meet at its extrapolated crossover sizes (energy, force)."""
    sizes = [2000, 10_000, 50_000, 190_560]
    transfer_maes = [15.0 * (s / 190_560) ** transfer for s in sizes]
    scratch_maes = [15.0 * (s / expected) ** scratch * (expected / 190_560) ** transfer for s in sizes]
    a, b = fit_scaling_law(sizes, scratch_maes), fit_scaling_law(sizes, transfer_maes)
    assert a.slope == pytest.approx(scratch) and b.slope == pytest.approx(transfer)
    assert all(s > t for s, t in zip(scratch_maes, transfer_maes, strict=True))  # transfer wins over the data
    size = crossover(a, b)
    assert size == pytest.approx(expected, rel=1e-6)
    assert a.predict(size) == pytest.approx(b.predict(size))
    assert crossover(b, a) == pytest.approx(expected, rel=1e-6)


def test_crossover_edge_cases():
    sizes = [2000, 20_000]
    a = fit_scaling_law(sizes, [100.0 * (s / 2000) ** -0.5 for s in sizes])
    parallel = fit_scaling_law(sizes, [50.0 * (s / 2000) ** -0.5 for s in sizes])
    assert crossover(a, parallel) is None
    # lines that met at 200 frames, before any data, only diverge afterwards
    diverging = fit_scaling_law(sizes, [100.0 * (200 / 2000) ** -0.5 * (s / 200) ** -0.2 for s in sizes])
    assert crossover(a, diverging) is None
