"""The fidelity grammar of crossfid.vocabulary: one name per functional ± U ± dispersion, names ↔ specs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crossfid.vocabulary import (
    DISPERSIONS,
    FIDELITIES,
    FIDELITY_FAMILIES,
    FIDELITY_NAMES,
    FUNCTIONALS,
    VDW_DF_FUNCTIONALS,
    canonical_hybrid,
    compose_fidelity,
    fidelity_spec,
    hybrid_functional,
    is_fidelity,
)

# the rows revision 0001 seeded, exactly (name, family, hubbard, dispersion, description)
SEEDED = [
    ("GGA", "GGA", False, None, "PBE generalised-gradient approximation"),
    ("GGA+U", "GGA", True, None, "PBE with Hubbard U (Dudarev)"),
    ("PBEsol", "GGA", False, None, "PBEsol GGA"),
    ("PBEsol+U", "GGA", True, None, "PBEsol with Hubbard U"),
    ("SCAN", "meta-GGA", False, None, "SCAN meta-GGA"),
    ("SCAN+U", "meta-GGA", True, None, "SCAN with Hubbard U"),
    ("r2SCAN", "meta-GGA", False, None, "r2SCAN meta-GGA"),
    ("r2SCAN+U", "meta-GGA", True, None, "r2SCAN with Hubbard U"),
    ("HSE06", "hybrid", False, None, "HSE06 screened hybrid (25% exact exchange, 0.2 1/Å)"),
    ("HSE06+U", "hybrid", True, None, "HSE06 with Hubbard U"),
    ("PBE0", "hybrid", False, None, "PBE0 hybrid"),
    ("PBE-D3", "GGA", False, "D3", "PBE with Grimme D3 (zero damping)"),
    ("PBE-D3(BJ)", "GGA", False, "D3(BJ)", "PBE with Grimme D3, Becke-Johnson damping"),
    ("PBE+U-D3", "GGA", True, "D3", "PBE+U with Grimme D3"),
    ("PBE+U-D3(BJ)", "GGA", True, "D3(BJ)", "PBE+U with Grimme D3(BJ)"),
    ("optB88-vdW", "GGA", False, "optB88-vdW", "optB88 exchange with vdW-DF nonlocal"),
    ("optB86b-vdW", "GGA", False, "optB86b-vdW", "optB86b exchange with vdW-DF nonlocal"),
    ("vdW-DF2", "GGA", False, "vdW-DF2", "rPW86 exchange with vdW-DF2 nonlocal"),
    ("SCAN-rVV10", "meta-GGA", False, "rVV10", "SCAN with rVV10 nonlocal"),
    ("r2SCAN-rVV10", "meta-GGA", False, "rVV10", "r2SCAN with rVV10 nonlocal"),
    ("r2SCAN-D4", "meta-GGA", False, "D4", "r2SCAN with Grimme D4"),
    ("r2SCAN+U-rVV10", "meta-GGA", True, "rVV10", "r2SCAN+U with rVV10 nonlocal"),
]

TUNED = [
    "HSE(AEXX=0.345)",
    "HSE(HFSCREEN=0.207)",
    "HSE(AEXX=0.3,HFSCREEN=0.15)",
    "PBE0(AEXX=0.3)",
    "HSEsol(AEXX=0.3)",
    "HSEsol(HFSCREEN=0.1)",
    "PBEsol0(AEXX=0.2)",
    "SCAN0(AEXX=0.1)",
    "r2SCAN0(AEXX=0.1)",
]


def all_composed_names() -> list[tuple[str, str, bool, str | None]]:
    """(name, functional, hubbard, dispersion) for every functional × U × dispersion the grammar allows."""
    names = []
    for functional in (*FUNCTIONALS, *TUNED):
        for hubbard in (False, True):
            for dispersion in (None, *DISPERSIONS):
                if dispersion is not None and functional in VDW_DF_FUNCTIONALS:
                    continue
                name = compose_fidelity(functional, hubbard=hubbard, dispersion=dispersion)
                names.append((name, functional, hubbard, dispersion))
    return names


COMPOSED = all_composed_names()


def test_the_seeded_fidelities_are_unchanged():
    assert [tuple(f)[:5] for f in FIDELITIES] == SEEDED
    assert tuple(row[0] for row in SEEDED) == FIDELITY_NAMES


def test_every_seeded_fidelity_is_a_composed_name_with_its_functional():
    for spec in FIDELITIES:
        assert fidelity_spec(spec.name) == spec
        assert spec.functional is not None and spec.parameters
    assert fidelity_spec("GGA").functional == "PBE"
    assert fidelity_spec("PBE+U-D3").parameters == {"GGA": "PE", "LDAU": True, "IVDW": 11}
    hse = fidelity_spec("HSE06")
    assert (hse.exact_exchange, hse.screening) == (0.25, 0.2)
    assert hse.parameters == {"GGA": "PE", "LHFCALC": True, "AEXX": 0.25, "HFSCREEN": 0.2}
    assert fidelity_spec("PBE0").screening == 0.0


@pytest.mark.parametrize(("name", "functional", "hubbard", "dispersion"), COMPOSED, ids=[c[0] for c in COMPOSED])
def test_round_trip_name_spec_name(name, functional, hubbard, dispersion):
    spec = fidelity_spec(name)
    assert spec is not None and is_fidelity(name)
    assert (spec.name, spec.functional, spec.hubbard) == (name, functional, hubbard)
    assert spec.dispersion == (functional if functional in VDW_DF_FUNCTIONALS else dispersion)
    again = compose_fidelity(spec.functional, hubbard=spec.hubbard, dispersion=dispersion)
    assert again == name
    assert spec.family in FIDELITY_FAMILIES
    assert ("+U" in name) == hubbard == (spec.parameters.get("LDAU") is True)
    if spec.family == "hybrid":
        assert 0 < spec.exact_exchange <= 1 and spec.screening >= 0
        assert spec.parameters["LHFCALC"] is True and spec.parameters["AEXX"] == spec.exact_exchange
    else:
        assert spec.exact_exchange is None and spec.screening is None


def test_composed_names_are_distinct():
    names = [c[0] for c in COMPOSED]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("functional", "hubbard", "dispersion", "name"),
    [
        ("PBE", False, None, "GGA"),
        ("GGA", True, None, "GGA+U"),
        ("PBE", False, "D3", "PBE-D3"),
        ("PBE", True, "D3(BJ)", "PBE+U-D3(BJ)"),
        ("LDA", False, None, "LDA"),
        ("RPBE", True, "D3", "RPBE+U-D3"),
        ("HSE06", False, "D3", "HSE06-D3"),
        ("HSE06", True, "D3(BJ)", "HSE06+U-D3(BJ)"),
        ("HSE(AEXX=0.345)", True, "TS(HI)", "HSE(AEXX=0.345)+U-TS(HI)"),
        ("r2SCAN", True, "rVV10", "r2SCAN+U-rVV10"),
        ("optB88-vdW", True, None, "optB88-vdW+U"),
        ("B3LYP", False, "D3(BJ)", "B3LYP-D3(BJ)"),
        ("SCAN", False, "MBD(FI)", "SCAN-MBD(FI)"),
    ],
)
def test_compose(functional, hubbard, dispersion, name):
    assert compose_fidelity(functional, hubbard=hubbard, dispersion=dispersion) == name


@pytest.mark.parametrize(
    ("functional", "dispersion", "message"),
    [
        ("B3LYP-ish", None, "unknown functional"),
        ("HSE(AEXX=0.25)", None, "unknown functional"),  # not the one name: that is HSE06
        ("PBE", "D5", "unknown dispersion"),
        ("optB88-vdW", "D3", "nonlocal vdW correlation already"),
    ],
)
def test_compose_refuses(functional, dispersion, message):
    with pytest.raises(ValueError, match=message):
        compose_fidelity(functional, hubbard=False, dispersion=dispersion)


@pytest.mark.parametrize(
    "name",
    [
        "PBE",  # plain PBE is GGA
        "PBE+U",
        "GGA-D3",  # PBE with dispersion is PBE-D3
        "GGA+U-D3",
        "HSE(AEXX=0.25)",  # HSE06
        "HSE(HFSCREEN=0.3)",  # HSE03
        "HSE(AEXX=0.3450)",  # HSE(AEXX=0.345)
        "HSE(HFSCREEN=0.15,AEXX=0.3)",  # order AEXX, HFSCREEN
        "HSE(AEXX=0.3, HFSCREEN=0.15)",
        "HSE()",
        "HSE(AEXX=0)",
        "HSE(AEXX=1.5)",
        "HSE(AEXX=nan)",
        "HSE(AEXX=0.3,AEXX=0.3)",
        "PBE0(HFSCREEN=0.2)",  # a screened hybrid is HSE-type, never PBE0
        "SCAN0(HFSCREEN=0.2)",
        "optB88-vdW-D3",
        "SCAN+U+U",
        "HSE06-D3+U",
        "hse06",
        "HSE06-D5",
        "",
        "GGA ",
    ],
)
def test_non_canonical_names_are_not_fidelities(name):
    assert fidelity_spec(name) is None and not is_fidelity(name)


def test_non_strings_are_not_fidelities():
    assert not is_fidelity(None) and not is_fidelity(3) and fidelity_spec(None) is None


@pytest.mark.parametrize(
    ("base", "aexx", "hfscreen", "name"),
    [
        ("PBE", 0.25, 0.2, "HSE06"),
        ("PBE", 0.25, 0.3, "HSE03"),
        ("PBE", 0.25, 0.0, "PBE0"),
        ("PBE", 0.345, 0.2, "HSE(AEXX=0.345)"),
        ("PBE", 0.34500000, 0.20000000, "HSE(AEXX=0.345)"),  # vasprun.xml writes 8 decimals
        ("PBE", 0.345000004, 0.2, "HSE(AEXX=0.345)"),
        ("PBE", 0.25, 0.207, "HSE(HFSCREEN=0.207)"),  # screening > 0: HSE-type, never PBE0
        ("PBE", 0.3, 0.15, "HSE(AEXX=0.3,HFSCREEN=0.15)"),
        ("PBE", 0.3, 0.3, "HSE(AEXX=0.3,HFSCREEN=0.3)"),
        ("PBE", 0.3, 0.0, "PBE0(AEXX=0.3)"),
        ("PBE", 1.0, 0.0, "PBE0(AEXX=1.0)"),
        ("PBEsol", 0.25, 0.2, "HSEsol"),
        ("PBEsol", 0.25, 0.0, "PBEsol0"),
        ("PBEsol", 0.3, 0.2, "HSEsol(AEXX=0.3)"),
        ("SCAN", 0.25, 0.0, "SCAN0"),
        ("r2SCAN", 0.1, 0.0, "r2SCAN0(AEXX=0.1)"),
        ("SCAN", 0.25, 0.2, None),  # screened meta-GGA hybrids have no name here
        ("RPBE", 0.25, 0.2, None),
        ("PBE", 0.0, 0.2, None),
        ("PBE", 1.2, 0.0, None),
        ("PBE", 0.25, -0.1, None),
    ],
)
def test_hybrid_names_are_canonical(base, aexx, hfscreen, name):
    assert hybrid_functional(base, aexx, hfscreen) == name
    if name is not None:
        assert is_fidelity(name)
        spec = fidelity_spec(name)
        assert spec.exact_exchange == pytest.approx(aexx, abs=1e-4)
        assert spec.screening == pytest.approx(hfscreen, abs=1e-4)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("hse(aexx=0.3450)", "HSE(AEXX=0.345)"),
        ("HSE(AEXX=0.25)", "HSE06"),
        ("HSE(HFSCREEN=0.3)", "HSE03"),
        ("HSE( HFSCREEN = 0.15 , AEXX = 0.30 )", "HSE(AEXX=0.3,HFSCREEN=0.15)"),
        ("pbe0(aexx=0.25)", "PBE0"),
        ("HSE(AEXX=2)", None),
        ("HSE(FOO=1)", None),
        ("B3LYP(AEXX=0.2)", None),
    ],
)
def test_canonical_hybrid(text, name):
    assert canonical_hybrid(text) == name


def test_vocabulary_imports_without_emmet():
    code = (
        "import sys; sys.modules['emmet'] = None; sys.modules['pymatgen'] = None\n"
        "from crossfid.vocabulary import fidelity_spec, is_fidelity\n"
        "assert is_fidelity('HSE(AEXX=0.345)+U-D3') and fidelity_spec('LDA').family == 'LDA'\n"
        "assert 'emmet.core' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
