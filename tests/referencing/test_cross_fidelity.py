"""Cross-fidelity analysis (crossfid.referencing.cross_fidelity) and MP2020 corrections, synthetic data."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from crossfid.referencing.composition import N_ELEMENTS, SYMBOLS, column_of, fractions_from_formula
from crossfid.referencing.corrections import CorrectionInput, mp2020_corrections
from crossfid.referencing.cross_fidelity import (
    correlation,
    element_importance,
    elemental_references,
    formation_against_elements,
    formation_energies,
    referenced_correlation,
    shift_statistics,
    transferability_report,
)


def _json_roundtrip(data):
    return json.loads(json.dumps(data, allow_nan=False))


def _matrix(formulas: list[str]) -> np.ndarray:
    return np.vstack([fractions_from_formula(f) for f in formulas])


def _random_compositions(rng: np.random.Generator, n: int, elements: list[str], max_elements: int = 3) -> np.ndarray:
    c = np.zeros((n, N_ELEMENTS))
    for i in range(n):
        k = rng.integers(1, max_elements + 1)
        chosen = rng.choice(len(elements), size=k, replace=False)
        amounts = rng.integers(1, 5, size=k).astype(float)
        for idx, amount in zip(chosen, amounts, strict=True):
            c[i, column_of(elements[idx])] = amount
    return c / c.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------- correlation


def test_correlation_equals_scipy_on_random_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    result = correlation(x, y)
    assert result.n == 50
    assert result.pearson == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert result.spearman == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert _json_roundtrip(result.to_dict()) == {"pearson": result.pearson, "spearman": result.spearman, "n": 50}


def test_correlation_of_constant_input_is_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = correlation(np.ones(5), np.arange(5.0))
    assert math.isnan(result.pearson) and math.isnan(result.spearman)
    assert result.to_dict() == {"pearson": None, "spearman": None, "n": 5}


@pytest.mark.parametrize(
    ("x", "y"),
    [([1.0, 2.0], [1.0, 3.0]), ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [1.0, 2.0])],
)
def test_correlation_rejects_short_or_non_finite_input(x, y):
    with pytest.raises(ValueError):
        correlation(x, y)


def _two_fidelities(rng: np.random.Generator, n: int = 300):
    """Two fidelities differing by large per-element reference energies, sharing a small physical signal."""
    elements = ["H", "Li", "C", "N", "O", "F", "Na", "Mg", "Si", "S", "Cl", "Fe", "Ni", "Cu", "Zn", "Mo"]
    c = _random_compositions(rng, n, elements)
    source_atomref = np.full(N_ELEMENTS, np.nan)
    target_atomref = np.full(N_ELEMENTS, np.nan)
    for symbol in elements:
        source_atomref[column_of(symbol)] = rng.uniform(-10.0, -1.0)
        target_atomref[column_of(symbol)] = rng.uniform(-70.0, -5.0)
    signal = rng.normal(0.0, 0.3, n)  # formation-energy-like physics, shared by both fidelities
    used = c.any(axis=0)
    source = c[:, used] @ source_atomref[used] + signal
    target = c[:, used] @ target_atomref[used] + signal + rng.normal(0.0, 0.005, n)
    return c, source, target, source_atomref, target_atomref


def test_referenced_correlation_recovers_shared_signal():
    rng = np.random.default_rng(7)
    c, source, target, source_atomref, target_atomref = _two_fidelities(rng)
    result = referenced_correlation(c, source, target, source_atomref, target_atomref)
    assert result.n == len(source)
    assert abs(result.raw.pearson) < 0.5
    assert result.referenced.pearson > 0.99
    assert result.referenced.spearman > 0.99
    used = c.any(axis=0)
    np.testing.assert_allclose(result.source_referenced, source - c[:, used] @ source_atomref[used])
    np.testing.assert_allclose(result.target_referenced, target - c[:, used] @ target_atomref[used])
    data = _json_roundtrip(result.to_dict())
    assert set(data) == {"raw", "referenced", "n", "source_referenced", "target_referenced"}
    assert len(data["target_referenced"]) == len(source)


def test_referenced_correlation_refuses_atomref_without_value_for_a_used_element():
    rng = np.random.default_rng(7)
    c, source, target, source_atomref, target_atomref = _two_fidelities(rng, n=20)
    target_atomref[column_of("O")] = np.nan
    with pytest.raises(ValueError, match="no value for O"):
        referenced_correlation(c, source, target, source_atomref, target_atomref)


# ---------------------------------------------------------------------------- shifts


def test_shift_statistics_by_element_on_hand_built_case():
    c = _matrix(["FeO", "Fe", "NaCl", "Na2O"])
    source = np.array([-7.0, -8.0, -3.0, -4.0])
    target = source + np.array([1.0, 3.0, -2.0, 0.0])
    result = shift_statistics(c, source, target)

    overall = result.overall
    assert overall.n == 4
    assert overall.mean == pytest.approx(0.5)
    assert overall.median == pytest.approx(0.5)
    assert overall.std == pytest.approx(math.sqrt(3.25))
    assert (overall.min, overall.max) == pytest.approx((-2.0, 3.0))
    assert overall.mean_abs == pytest.approx(1.5)
    expected = np.percentile([1.0, 3.0, -2.0, 0.0], [5, 25, 75, 95])
    assert (overall.p05, overall.p25, overall.p75, overall.p95) == pytest.approx(tuple(expected))

    assert [e.symbol for e in result.by_element] == ["Cl", "Na", "O", "Fe"]  # by mean shift
    fe = result.element("Fe")
    assert (fe.n, fe.mean, fe.std, fe.median, fe.min, fe.max) == pytest.approx((2, 2.0, 1.0, 2.0, 1.0, 3.0))
    o = result.element("O")
    assert (o.n, o.mean, o.std, o.min, o.max) == pytest.approx((2, 0.5, 0.5, 0.0, 1.0))
    cl = result.element("Cl")
    assert (cl.n, cl.mean, cl.std) == pytest.approx((1, -2.0, 0.0))

    filtered = shift_statistics(c, source, target, min_count=2)
    assert [e.symbol for e in filtered.by_element] == ["Na", "O", "Fe"]
    data = _json_roundtrip(filtered.to_dict())
    assert data["overall"]["mean_abs"] == pytest.approx(1.5)
    assert data["by_element"][0]["symbol"] == "Na"


def test_shift_statistics_rejects_non_fractions():
    c = _matrix(["FeO"]) * 2
    with pytest.raises(ValueError, match="sum"):
        shift_statistics(c, [0.0], [1.0])


# ---------------------------------------------------------------------------- element importance


def _oxygen_driven(rng: np.random.Generator, per_level: int = 40):
    """Materials with O at a few fractions plus spectators; the difference depends only on the O fraction."""
    spectators = ["Na", "Si", "Fe", "Ni"]
    levels = [0.0, 0.2, 0.4, 0.5, 0.6]
    rows, x_o = [], []
    for level in levels:
        for _ in range(per_level):
            row = np.zeros(N_ELEMENTS)
            row[column_of("O")] = level
            chosen = rng.choice(len(spectators), size=rng.integers(1, 3), replace=False)
            weights = rng.uniform(0.2, 1.0, size=len(chosen))
            for idx, w in zip(chosen, weights / weights.sum() * (1.0 - level), strict=True):
                row[column_of(spectators[idx])] += w
            rows.append(row)
            x_o.append(level)
    x_o = np.array(x_o)
    difference = 0.4 * x_o**2 - 0.1 * x_o + 0.02  # eV/atom
    return np.vstack(rows), difference


def test_element_importance_picks_only_the_element_that_drives_the_difference():
    rng = np.random.default_rng(3)
    c, difference = _oxygen_driven(rng)
    result = element_importance(c, difference)
    assert set(result.symbols) == {"O", "Na", "Si", "Fe", "Ni"}
    assert result.raw["O"] == pytest.approx(1.0)
    for symbol in ("Na", "Si", "Fe", "Ni"):
        assert result.raw[symbol] == 0.0
        assert result.normalised[symbol] == 0.0
    assert result.normalised["O"] == pytest.approx(1.0)
    assert result.ranking() == [("O", pytest.approx(1.0))]
    assert result.r2 == pytest.approx(1.0)
    assert result.n == len(difference)
    assert result.depth >= 1 and result.n_leaves == 5  # one leaf per O level
    data = _json_roundtrip(result.to_dict())
    assert data["parameters"] == {"random_state": 0, "max_depth": None, "min_samples_leaf": 1}
    assert data["ranking"][0][0] == "O"


def test_element_importance_of_constant_difference_is_all_zero():
    rng = np.random.default_rng(3)
    c, difference = _oxygen_driven(rng, per_level=5)
    result = element_importance(c, np.full(len(difference), 0.25))
    assert all(v == 0.0 for v in result.raw.values())
    assert all(v == 0.0 for v in result.normalised.values())
    assert result.ranking() == []
    assert math.isnan(result.r2) and result.depth == 0
    assert _json_roundtrip(result.to_dict())["r2"] is None


def test_element_importance_normalises_by_atom_count():
    c = _matrix(["FeO", "Fe2O3", "NiO", "Fe", "Ni", "NiF2", "FeF3", "Ni2O3"])
    # the difference depends on O and Fe: both get a non-zero raw importance
    difference = 0.5 * c[:, column_of("O")] + 0.2 * (c[:, column_of("Fe")] > 0)
    by_materials = element_importance(c, difference)
    raw = by_materials.raw
    assert raw["O"] > 0 and raw["Fe"] > 0
    assert sum(raw.values()) == pytest.approx(1.0)

    def expected(counts: dict[str, float]) -> dict[str, float]:
        per_atom = {s: raw[s] / counts[s] for s in raw}
        total = sum(per_atom.values())
        return {s: v / total for s, v in per_atom.items()}

    materials = {s: float((c[:, column_of(s)] > 0).sum()) for s in raw}
    assert by_materials.normalised == pytest.approx(expected(materials))
    assert by_materials.atom_counts == materials

    atoms = np.vstack([fractions_from_formula(f) for f in ["FeO", "Fe2O3", "NiO", "Fe", "Ni", "NiF2", "FeF3", "Ni2O3"]])
    atoms = atoms * np.array([2, 5, 2, 1, 1, 3, 4, 5])[:, None]  # atoms per formula unit
    by_atoms = element_importance(c, difference, atom_counts=atoms)
    totals = {s: float(atoms[:, column_of(s)].sum()) for s in raw}
    assert by_atoms.normalised == pytest.approx(expected(totals))
    assert element_importance(c, difference, atom_counts=totals).normalised == pytest.approx(expected(totals))
    with pytest.raises(ValueError, match="F"):
        element_importance(c, difference, atom_counts={"Fe": 1.0, "Ni": 1.0, "O": 1.0})


# ---------------------------------------------------------------------------- formation energies


def test_formation_energies_against_hand_computation():
    mu = np.full(N_ELEMENTS, np.nan)
    mu[column_of("Fe")] = -8.0
    mu[column_of("O")] = -5.0
    mu[column_of("Na")] = -1.3
    c = _matrix(["FeO", "Fe2O3", "NaCl", "Fe"])
    e = np.array([-7.0, -6.8, -3.5, -7.9])
    result = formation_energies(c, e, mu)
    assert result[0] == pytest.approx(-7.0 - (0.5 * -8.0 + 0.5 * -5.0))  # -0.5
    assert result[1] == pytest.approx(-6.8 - (0.4 * -8.0 + 0.6 * -5.0))  # -0.6
    assert math.isnan(result[2])  # no Cl reference
    assert result[3] == pytest.approx(0.1)


def test_elemental_references_take_the_lowest_single_element_energy():
    c = _matrix(["Fe", "Fe", "O2", "FeO", "Na", "NaCl"])
    e = np.array([-8.0, -7.9, -4.9, -7.0, np.nan, -3.5])
    mu = elemental_references(c, e)
    assert mu.shape == (N_ELEMENTS,)
    assert mu[column_of("Fe")] == -8.0
    assert mu[column_of("O")] == -4.9
    assert np.isnan(mu[column_of("Na")])  # only a NaN energy
    assert np.isnan(mu[column_of("Cl")])
    assert np.isnan(np.delete(mu, [column_of("Fe"), column_of("O")])).all()
    ef = formation_energies(c, e, mu)
    assert ef[:4] == pytest.approx([0.0, 0.1, 0.0, -7.0 + 6.45])
    assert np.isnan(ef[4:]).all()


def test_formation_against_elements_leaves_out_and_lists_materials_without_elemental_references():
    from crossfid.referencing.package_atomrefs import package_atomref_values

    c = _matrix(["FeO", "Fe2O3", "NaCl", "Fe", "FeF2"])
    e = np.array([-7.0, -6.8, -3.5, -7.9, -5.0])
    elemental = _matrix(["Fe", "Fe", "O2", "Na"])
    result = formation_against_elements(c, e, elemental, [-8.0, -7.9, -4.9, -1.3])
    assert result.references == {"O": -4.9, "Na": -1.3, "Fe": -8.0}
    assert result.kept.tolist() == [True, True, False, True, False]
    assert result.formation[0] == pytest.approx(-7.0 - (0.5 * -8.0 + 0.5 * -4.9))
    assert result.formation[3] == pytest.approx(0.1)
    assert np.isnan(result.formation[[2, 4]]).all()  # no Cl, no F reference state: left out
    assert result.lacking == ((), (), ("Cl",), (), ("F",))
    assert result.n_left_out == 2 and result.left_out_by_element() == {"F": 1, "Cl": 1}
    # AtomRef values are fitted constants, not ground states: O is -8.39 in chgnet-0.3.0's, O2 about -4.9
    assert package_atomref_values("chgnet-0.3.0")[column_of("O")] == pytest.approx(-8.39, abs=0.01)
    no_oxygen = formation_against_elements(c[:2], e[:2], _matrix(["Fe"]), [-8.0])
    assert not no_oxygen.kept.any() and no_oxygen.left_out_by_element() == {"O": 2}
    nothing = formation_against_elements(c[:1], e[:1], np.zeros((0, N_ELEMENTS)), [])
    assert nothing.lacking == (("O", "Fe"),) and nothing.references == {}


# ---------------------------------------------------------------------------- transferability


def _report(c, source, target, source_atomref, target_atomref, *, source_elements, target_elements):
    corr = referenced_correlation(c, source, target, source_atomref, target_atomref)
    shifts = shift_statistics(c, source, target)
    return transferability_report(
        source_label="GGA/GGA+U",
        target_label="r2SCAN",
        correlation=corr,
        shifts=shifts,
        source_elements=source_elements,
        target_elements=target_elements,
    )


def test_transferability_flags_a_large_shift_and_lists_absent_elements():
    rng = np.random.default_rng(7)
    c, source, target, source_atomref, target_atomref = _two_fidelities(rng)
    present = {SYMBOLS[j] for j in np.flatnonzero(c.any(axis=0))}
    report = _report(
        c,
        source,
        target,
        source_atomref,
        target_atomref,
        source_elements=present - {"Zn", "H"},
        target_elements=present | {"Pu"},
    )
    assert report.needs_referencing
    assert len(report.reasons) == 2  # shift above accuracy and correlation gain
    assert report.mean_abs_shift > 1.0
    assert report.shift_to_accuracy == pytest.approx(report.mean_abs_shift / 0.030)
    assert report.absent_elements == ("H", "Zn", "Pu")  # periodic-table order
    assert report.referenced_pearson > 0.99 > abs(report.raw_pearson)
    assert report.referenced_std == pytest.approx(0.005, rel=0.2)
    assert "method 4" in report.verdict
    assert "H, Zn, Pu" in report.verdict
    assert "GGA/GGA+U" in report.verdict and "r2SCAN" in report.verdict
    assert 2 <= report.verdict.count(". ") + 1 <= 5
    data = _json_roundtrip(report.to_dict())
    assert data["needs_referencing"] is True
    assert data["absent_elements"] == ["H", "Zn", "Pu"]
    assert report.verdict in report.to_text()


def test_transferability_does_not_flag_a_tiny_shift():
    rng = np.random.default_rng(11)
    c, source, _, source_atomref, _ = _two_fidelities(rng, n=200)
    target = source + 0.002 + rng.normal(0.0, 0.001, len(source))
    present = {SYMBOLS[j] for j in np.flatnonzero(c.any(axis=0))}
    report = _report(
        c, source, target, source_atomref, source_atomref, source_elements=present, target_elements=present
    )
    assert not report.needs_referencing
    assert report.reasons == ()
    assert report.mean_abs_shift < 0.030
    assert report.absent_elements == ()
    assert "never" not in report.verdict
    assert "keep the existing AtomRef" in report.verdict


def test_transferability_refuses_shifts_of_other_materials():
    rng = np.random.default_rng(7)
    c, source, target, source_atomref, target_atomref = _two_fidelities(rng, n=30)
    corr = referenced_correlation(c, source, target, source_atomref, target_atomref)
    shifts = shift_statistics(c[:10], source[:10], target[:10])
    with pytest.raises(ValueError, match="same materials"):
        transferability_report(
            source_label="a",
            target_label="b",
            correlation=corr,
            shifts=shifts,
            source_elements=set(),
            target_elements=set(),
        )


# ---------------------------------------------------------------------------- MP2020 corrections


@pytest.fixture(scope="module")
def structures():
    from pymatgen.core import Lattice, Structure

    fe2o3 = Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(5.035, 13.747), ["Fe", "O"], [[0, 0, 0.3553], [0.3059, 0, 0.25]]
    )
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    return {"Fe2O3": fe2o3.as_dict(), "NaCl": nacl.as_dict(), "Si": si.as_dict()}


def test_mp2020_corrections_on_real_structures(structures):
    inputs = [
        CorrectionInput("fe2o3", structures["Fe2O3"], -6.8, "GGA+U", {"Fe": 5.3, "O": 0.0}),
        CorrectionInput("nacl", structures["NaCl"], -3.4, "GGA", None),
        CorrectionInput("si", structures["Si"], -5.42, "GGA", {}),
    ]
    fe2o3, nacl, si = mp2020_corrections(inputs)

    assert fe2o3.ok and fe2o3.reason is None
    terms = {t.name: t for t in fe2o3.corrections}
    oxide = terms["MP2020 anion correction (oxide)"]
    fe_u = terms["MP2020 GGA/GGA+U mixing correction (Fe)"]
    assert oxide.per_species_atom == pytest.approx(-0.687)
    assert fe_u.per_species_atom == pytest.approx(-2.256)
    assert oxide.species_atoms == 18 and fe_u.species_atoms == 12  # 30-atom hexagonal cell
    assert fe2o3.correction_per_atom == pytest.approx((3 * -0.687 + 2 * -2.256) / 5)
    assert fe2o3.corrected_energy_per_atom == pytest.approx(-6.8 + fe2o3.correction_per_atom)
    assert sum(t.energy_per_atom for t in fe2o3.corrections) == pytest.approx(fe2o3.correction_per_atom)

    assert nacl.ok
    assert [t.name for t in nacl.corrections] == ["MP2020 anion correction (Cl)"]
    assert nacl.corrections[0].per_species_atom == pytest.approx(-0.614)
    assert nacl.correction_per_atom == pytest.approx(-0.307)
    assert nacl.corrected_energy_per_atom == pytest.approx(-3.707)

    assert si.ok
    assert si.corrections == () and si.correction_per_atom == 0.0
    assert si.corrected_energy_per_atom == -5.42

    for result in (fe2o3, nacl, si):
        data = _json_roundtrip(result.to_dict())
        assert set(data) == {
            "identifier",
            "energy_per_atom",
            "corrected_energy_per_atom",
            "correction_per_atom",
            "corrections",
            "reason",
            "warnings",
        }


def test_mp2020_corrections_report_bad_entries_without_raising(structures):
    bad_structure = {"lattice": "not a lattice"}
    inputs = [
        CorrectionInput("no-structure", None, -6.8, "GGA"),
        CorrectionInput("r2scan", structures["Si"], -5.0, "r2SCAN"),
        CorrectionInput("fe2o3-without-u", structures["Fe2O3"], -6.8, "GGA"),
        CorrectionInput("fe2o3-wrong-u", structures["Fe2O3"], -6.8, "GGA+U", {"Fe": 4.0}),
        CorrectionInput("nacl-with-u", structures["NaCl"], -3.4, "GGA+U", {"Na": 3.0}),
        CorrectionInput("gga-with-u", structures["Fe2O3"], -6.8, "GGA", {"Fe": 5.3}),
        CorrectionInput("gga+u-without-u", structures["Fe2O3"], -6.8, "GGA+U", {"Fe": 0.0}),
        CorrectionInput("malformed", bad_structure, -6.8, "GGA"),
        CorrectionInput("nan-energy", structures["Si"], math.nan, "GGA"),
        CorrectionInput("si", structures["Si"], -5.42, "GGA"),
    ]
    results = mp2020_corrections(inputs)
    assert [r.identifier for r in results] == [i.identifier for i in inputs]
    *failed, si = results
    assert si.ok
    for result in failed:
        assert not result.ok, result.identifier
        assert result.corrected_energy_per_atom is None and result.correction_per_atom is None
        assert result.reason
        _json_roundtrip(result.to_dict())
    reasons = {r.identifier: r.reason for r in failed}
    assert "no structure" in reasons["no-structure"]
    assert "not GGA or GGA+U" in reasons["r2scan"]
    assert "Invalid U value of 0.0 on Fe" in reasons["fe2o3-without-u"]
    assert "expected 5.3" in reasons["fe2o3-wrong-u"]
    assert "Na" in reasons["nacl-with-u"]
    assert len(reasons["fe2o3-wrong-u"]) < 300  # pymatgen's entry dump is cut off
    assert "non-zero Hubbard U" in reasons["gga-with-u"]
    assert "no non-zero Hubbard U" in reasons["gga+u-without-u"]
    assert "structure could not be read" in reasons["malformed"]
    assert "finite" in reasons["nan-energy"]
    assert math.isnan(results[-2].energy_per_atom) and results[-2].to_dict()["energy_per_atom"] is None
