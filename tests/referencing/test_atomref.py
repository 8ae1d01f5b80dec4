"""AtomRef: the least-squares fit (pure) and agreement with chgnet's own composition model."""

from __future__ import annotations

import numpy as np
import pytest

from crossfid.hashing import atomref_values_hash
from crossfid.referencing.atomref import (
    AtomRefError,
    fit_atomref,
    material_weights,
    reference_energies,
    referenced_energies,
    values_from_list,
    values_to_list,
)
from crossfid.referencing.composition import (
    N_ELEMENTS,
    SYMBOLS,
    CompositionError,
    column_of,
    composition_matrix,
    fractions_from_atomic_numbers,
    fractions_from_formula,
)


def _random_structures(rng, elements: list[int], n: int, max_atoms: int = 10) -> list[list[int]]:
    out = []
    for _ in range(n):
        k = rng.integers(1, min(4, len(elements)) + 1)
        chosen = rng.choice(elements, size=k, replace=False)
        out.append(list(rng.choice(chosen, size=rng.integers(k, max_atoms + 1))) + list(chosen))
    return out


def test_composition_fractions_follow_chgnet_convention():
    row = fractions_from_atomic_numbers([26, 26, 8, 8, 8])
    assert row.shape == (N_ELEMENTS,)
    assert row[25] == pytest.approx(0.4) and row[7] == pytest.approx(0.6) and row.sum() == pytest.approx(1.0)
    assert np.array_equal(fractions_from_formula("Fe2O3"), row)
    assert SYMBOLS[0] == "H" and SYMBOLS[-1] == "Pu" and column_of("Fe") == 25
    with pytest.raises(CompositionError, match="1..94"):
        fractions_from_atomic_numbers([95])
    with pytest.raises(CompositionError):
        fractions_from_atomic_numbers([])
    with pytest.raises(CompositionError, match="outside"):
        column_of("Am")


def test_fit_recovers_known_element_energies_exactly_and_marks_absent_elements():
    rng = np.random.default_rng(0)
    elements = [3, 8, 9, 12, 14, 26, 29, 38, 74]  # Li O F Mg Si Fe Cu Sr W
    truth = np.full(N_ELEMENTS, np.nan)
    truth[np.array(elements) - 1] = rng.uniform(-12, -1, len(elements))
    comp = composition_matrix(_random_structures(rng, elements, 200))
    energy = comp[:, np.array(elements) - 1] @ truth[np.array(elements) - 1]

    exact = fit_atomref(comp, energy)
    assert np.allclose(exact.values[np.array(elements) - 1], truth[np.array(elements) - 1], atol=1e-10)
    assert exact.mae < 1e-12 and exact.rank == len(elements) and exact.unidentifiable == ()
    assert set(exact.elements) == {SYMBOLS[z - 1] for z in elements}
    assert len(exact.absent) == N_ELEMENTS - len(elements) and "H" in exact.absent
    assert np.isnan(exact.values[0])  # absent: NaN, never a silent zero

    noisy = fit_atomref(comp, energy + rng.normal(0, 0.005, energy.shape))
    assert np.allclose(noisy.values[np.array(elements) - 1], truth[np.array(elements) - 1], atol=0.01)
    assert 0.001 < noisy.mae < 0.01 and noisy.rmse >= noisy.mae


def test_fit_on_rank_deficient_compositions_predicts_exactly_and_names_the_inseparable_elements():
    # Na and Cl only ever occur together as NaCl; Mg and O vary independently
    structures = [[11, 17]] * 5 + [[12, 8]] * 3 + [[12, 12, 8]] * 2 + [[12]] * 2 + [[8, 8, 12, 11, 17]]
    truth = {"Na": -1.3, "Cl": -1.8, "Mg": -1.6, "O": -4.9}
    comp = composition_matrix(structures)
    vector = np.full(N_ELEMENTS, np.nan)
    for symbol, value in truth.items():
        vector[column_of(symbol)] = value
    energy = reference_energies(comp, vector)

    fit = fit_atomref(comp, energy)
    assert fit.rank == 3 and set(fit.unidentifiable) == {"Na", "Cl"}
    assert fit.values[column_of("Mg")] == pytest.approx(-1.6) and fit.values[column_of("O")] == pytest.approx(-4.9)
    assert fit.values[column_of("Na")] + fit.values[column_of("Cl")] == pytest.approx(-3.1)  # only the sum is fixed
    assert fit.values[column_of("Na")] == pytest.approx(fit.values[column_of("Cl")])  # minimum norm splits it evenly
    assert np.allclose(reference_energies(comp, fit.values), energy) and fit.max_abs_error < 1e-12

    prior = np.zeros(N_ELEMENTS)
    prior[column_of("Na")], prior[column_of("Cl")] = -1.0, -2.0
    pulled = fit_atomref(comp, energy, prior=prior)  # closest to the prior on the inseparable direction
    assert pulled.values[column_of("Na")] == pytest.approx(-1.05) and pulled.values[column_of("Cl")] == pytest.approx(
        -2.05
    )
    assert np.allclose(reference_energies(comp, pulled.values), energy)


def test_material_weighting_gives_every_material_equal_weight():
    # material A: 9 frames with energy offset +0.1 (a long trajectory); B and C: one frame each
    comp = composition_matrix([[8, 12]] * 9 + [[8, 12]] + [[8, 12]])
    energy = np.array([0.1] * 9 + [0.0, -0.1])
    groups = ["A"] * 9 + ["B", "C"]
    by_frame = fit_atomref(comp, energy, groups=groups, weighting="frame")
    by_material = fit_atomref(comp, energy, groups=groups, weighting="material")
    ref = comp[0] @ np.nan_to_num(by_material.values)
    assert ref == pytest.approx(0.0, abs=1e-12)  # (0.1 + 0 - 0.1) / 3
    assert comp[0] @ np.nan_to_num(by_frame.values) == pytest.approx(0.8 / 11)
    assert by_material.n_materials == 3 and np.allclose(material_weights(groups)[:9], 1 / 9)
    with pytest.raises(AtomRefError, match="groups"):
        fit_atomref(comp, energy, weighting="material")


def test_fill_supplies_absent_elements_and_applying_without_them_is_an_error():
    comp = composition_matrix([[8, 12], [8, 8, 12], [12]])
    energy = np.array([-5.0, -6.0, -1.5])
    fit = fit_atomref(comp, energy)
    fe_oxide = fractions_from_formula("FeO")
    with pytest.raises(AtomRefError, match="no value for Fe"):
        reference_energies(fe_oxide, fit.values)
    fill = np.full(N_ELEMENTS, -3.0)
    filled = fit_atomref(comp, energy, fill=fill)
    assert "Fe" in filled.filled and "Mg" not in filled.filled and not np.isnan(filled.values).any()
    assert filled.values[column_of("Mg")] == pytest.approx(fit.values[column_of("Mg")])
    assert referenced_energies([-4.0], fe_oxide, filled.values)[0] == pytest.approx(
        -4.0 - 0.5 * (-3.0 + fit.values[column_of("O")])
    )


def test_bad_inputs_are_refused_clearly():
    comp = composition_matrix([[8, 12], [12]])
    with pytest.raises(AtomRefError, match="2 compositions but 3 energies"):
        fit_atomref(comp, [1.0, 2.0, 3.0])
    with pytest.raises(AtomRefError, match="finite"):
        fit_atomref(comp, [1.0, np.nan])
    with pytest.raises(AtomRefError, match="no data"):
        fit_atomref(np.zeros((0, N_ELEMENTS)), [])
    with pytest.raises(AtomRefError, match="shape"):
        fit_atomref(np.ones((2, 3)), [1.0, 2.0])
    with pytest.raises(AtomRefError, match="94 values"):
        reference_energies(comp, [1.0, 2.0])


def test_values_round_trip_through_storage_form_and_hash_is_content_identity():
    values = np.linspace(-10, 0, N_ELEMENTS)
    values[5] = np.nan
    stored = values_to_list(values)
    assert stored[5] is None and len(stored) == N_ELEMENTS
    back = values_from_list(stored)
    assert np.array_equal(np.isnan(back), np.isnan(values)) and np.allclose(
        back[~np.isnan(back)], values[~np.isnan(values)]
    )
    assert atomref_values_hash(back) == atomref_values_hash(values)
    values[0] += 1e-12
    assert atomref_values_hash(values) != atomref_values_hash(back)


# --------------------------------------------------------------------------- chgnet's own composition model


@pytest.mark.parametrize("name", ["chgnet-0.3.0", "chgnet-r2scan"])
def test_referenced_energies_equal_chgnet_composition_model_output(name):
    import torch
    from pymatgen.core import Lattice, Structure

    from crossfid.potentials.base import load_potential
    from crossfid.referencing.package_atomrefs import package_atomref_values

    model = load_potential(name).model
    values = package_atomref_values(name)
    structures = [
        Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.cubic(3.0), ["Fe", "Fe", "Ni"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.75]]),
        Structure(Lattice.cubic(5.6), ["Na", "Cl", "Cl", "K"], [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]),
        Structure(Lattice.cubic(3.2), ["W"], [[0, 0, 0]]),
    ]
    graphs = [model.graph_converter(s) for s in structures]
    with torch.no_grad():
        expected = model.composition_model(graphs).double().numpy()
    comp = composition_matrix([s.atomic_numbers for s in structures])
    assert np.allclose(reference_energies(comp, values), expected, rtol=0, atol=1e-5)

    energies = np.array([-5.0, -8.0, -3.5, -13.0])
    assert np.allclose(referenced_energies(energies, comp, values), energies - expected, atol=1e-5)


def test_fit_reproduces_chgnet_atomref_fit_on_well_posed_data():
    from chgnet.model.composition_model import AtomRef
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(3)
    species = ["Li", "O", "Mg", "Fe", "Si"]
    structures = []
    for _ in range(40):
        n = int(rng.integers(2, 7))
        structures.append(Structure(Lattice.cubic(4.0), list(rng.choice(species, n)), rng.random((n, 3))))
    energies = rng.normal(-5, 1, len(structures))
    theirs = AtomRef()
    theirs.fit(structures, energies)
    ours = fit_atomref(composition_matrix([s.atomic_numbers for s in structures]), energies)
    cols = [column_of(s) for s in species]
    assert np.allclose(ours.values[cols], theirs.fc.weight.detach().double().numpy().ravel()[cols], atol=1e-4)


def test_prior_weight_is_a_ridge_towards_the_prior_counted_in_rows_of_the_pure_element():
    # 4 frames of pure Fe at -5.0 eV/atom and a prior of -4.0: with weight λ the value is (4·(-5) + λ·(-4)) / (4 + λ)
    comp = composition_matrix([[26, 26]] * 4)
    energy = np.full(4, -5.0)
    prior = np.full(N_ELEMENTS, np.nan)
    prior[column_of("Fe")] = -4.0
    assert fit_atomref(comp, energy, prior=prior).values[column_of("Fe")] == pytest.approx(-5.0)
    assert fit_atomref(comp, energy, prior=prior, prior_weight=4).values[column_of("Fe")] == pytest.approx(-4.5)
    assert fit_atomref(comp, energy, prior=prior, prior_weight=1e9).values[column_of("Fe")] == pytest.approx(-4.0)
    with pytest.raises(AtomRefError, match="needs a prior"):
        fit_atomref(comp, energy, prior_weight=1.0)
    with pytest.raises(AtomRefError, match="prior_weight"):
        fit_atomref(comp, energy, prior=prior, prior_weight=-1.0)


def test_prior_weight_keeps_a_well_sampled_element_and_settles_a_poorly_sampled_one():
    # Mg and O are sampled by many MgO frames and an O2 frame; Ti only by 2 frames of TiO2 in a small
    # fraction with a 0.5 eV/atom error: least squares moves Ti by 1.5 eV, the ridge keeps it near the prior
    truth = {"Mg": -1.6, "O": -4.9, "Ti": -7.8}
    structures = [[12, 8]] * 200 + [[8, 8]] * 50 + [[22, 8, 8]] * 2
    comp = composition_matrix(structures)
    vector = np.full(N_ELEMENTS, np.nan)
    for symbol, value in truth.items():
        vector[column_of(symbol)] = value
    energy = reference_energies(comp, vector)
    energy[-2:] -= 0.5  # the two TiO2 frames carry a formation energy the linear model cannot hold
    prior = vector.copy()
    plain = fit_atomref(comp, energy, prior=prior)
    ridge = fit_atomref(comp, energy, prior=prior, prior_weight=10.0)
    assert plain.values[column_of("Ti")] == pytest.approx(-7.8 - 1.5)
    assert abs(ridge.values[column_of("Ti")] + 7.8) < 0.3
    for symbol in ("Mg", "O"):
        assert abs(ridge.values[column_of(symbol)] - truth[symbol]) < 0.01
    assert ridge.rank == plain.rank == 3 and ridge.unidentifiable == ()  # rank describes the data alone
