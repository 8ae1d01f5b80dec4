"""Fidelity classification from realistic INCARs, for every functional ± U ± dispersion crossfid names.

Also checked against emmet-core's own ``run_type`` wherever emmet has an answer, and
on the real VASP runs of ../shared/data/real (skipped when that folder is absent).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
from emmet.core.vasp.calc_types.utils import run_type as emmet_run_type
from pymatgen.io.vasp import Incar, Vasprun

from crossfid.ingest.fidelity import classify_incar, fidelity_from_label, normalize_incar
from crossfid.ingest.records import RecordError
from crossfid.vocabulary import VDW_DF_FUNCTIONALS, compose_fidelity, fidelity_spec

REAL_VASP = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "vasp_dirs"

# Materials Project style relaxation INCAR (MPRelaxSet, abridged), Fe2O3 with POSCAR species Fe O
MP_RELAX = """
ALGO = Fast
EDIFF = 0.0001
ENCUT = 520
IBRION = 2
ISIF = 3
ISMEAR = -5
ISPIN = 2
LASPH = True
LORBIT = 11
LREAL = Auto
LWAVE = False
NELM = 100
NSW = 99
PREC = Accurate
SIGMA = 0.05
MAGMOM = 2*5 3*0.6
"""

MP_U = "LDAU = True\nLDAUJ = 0 0\nLDAUL = 2 0\nLDAUTYPE = 2\nLDAUU = 5.3 0\nLMAXMIX = 4\n"

MP_R2SCAN = """
ALGO = All
EDIFF = 1e-05
ENAUG = 1360
ENCUT = 680
IBRION = 2
ISIF = 3
ISMEAR = 0
KSPACING = 0.22
LASPH = True
LMIXTAU = True
METAGGA = R2scan
NELM = 200
NSW = 99
"""

HSE_STATIC = """
ALGO = All
GGA = PE
HFSCREEN = 0.2
LHFCALC = .TRUE.
NSW = 0
PRECFOCK = Fast
ISMEAR = 0
"""


def incar(text: str) -> dict:
    return Incar.from_str(text).as_dict()


CASES = [
    ("MP GGA relax", MP_RELAX, None, "GGA", "PBE", "relax", None),
    ("MP GGA+U relax", MP_RELAX + MP_U, ["Fe", "O"], "GGA+U", "PBE+U", "relax", {"Fe": 5.3}),
    ("MP GGA static", MP_RELAX.replace("NSW = 99", "NSW = 0"), None, "GGA", "PBE", "static", None),
    ("MP r2SCAN relax", MP_R2SCAN, None, "r2SCAN", "r2SCAN", "relax", None),
    ("r2SCAN+U", MP_R2SCAN + MP_U, ["Fe", "O"], "r2SCAN+U", "r2SCAN+U", "relax", {"Fe": 5.3}),
    ("HSE06 static", HSE_STATIC, None, "HSE06", "HSE06", "static", None),
    (
        "HSE06 string flags",
        HSE_STATIC.replace(".TRUE.", "T").replace("GGA = PE\n", ""),
        None,
        "HSE06",
        "HSE06",
        "static",
        None,
    ),
    ("HSE06+U", HSE_STATIC + MP_U, ["Fe", "O"], "HSE06+U", "HSE06+U", "static", {"Fe": 5.3}),
    ("PBE0", HSE_STATIC.replace("HFSCREEN = 0.2\n", ""), None, "PBE0", "PBE0", "static", None),
    ("PBE-D3", MP_RELAX + "GGA = PE\nIVDW = 11\n", None, "PBE-D3", "PBE-D3", "relax", None),
    ("PBE-D3(BJ)", MP_RELAX + "IVDW = 12\n", None, "PBE-D3(BJ)", "PBE-D3(BJ)", "relax", None),
    ("PBE+U-D3", MP_RELAX + MP_U + "IVDW = 11\n", ["Fe", "O"], "PBE+U-D3", "PBE+U-D3", "relax", {"Fe": 5.3}),
    (
        "r2SCAN-rVV10 (MP BPARAM)",
        MP_R2SCAN + "LUSE_VDW = True\nBPARAM = 11.95\n",
        None,
        "r2SCAN-rVV10",
        "r2SCAN-rVV10",
        "relax",
        None,
    ),
    (
        "r2SCAN-rVV10 (emmet BPARAM)",
        MP_R2SCAN + "LUSE_VDW = True\nBPARAM = 15.7\n",
        None,
        "r2SCAN-rVV10",
        "r2SCAN-rVV10",
        "relax",
        None,
    ),
    ("r2SCAN-D4", MP_R2SCAN + "IVDW = 13\n", None, "r2SCAN-D4", "r2SCAN-D4", "relax", None),
    (
        "optB88-vdW",
        MP_RELAX + "GGA = BO\nPARAM1 = 0.1833333333\nPARAM2 = 0.22\nLUSE_VDW = .TRUE.\nAGGAC = 0.0\n",
        None,
        "optB88-vdW",
        "optB88-vdW",
        "relax",
        None,
    ),
    (
        "optB88-vdW rounded",
        MP_RELAX + "GGA = BO\nPARAM1 = 0.18333333\nPARAM2 = 0.22\nLUSE_VDW = T\nAGGAC = 0\n",
        None,
        "optB88-vdW",
        "optB88-vdW",
        "relax",
        None,
    ),
    (
        "vdW-DF2",
        MP_RELAX + "GGA = ML\nLUSE_VDW = T\nAGGAC = 0.0\nZab_vdW = -1.8867\n",
        None,
        "vdW-DF2",
        "vdW-DF2",
        "relax",
        None,
    ),
    ("PBEsol", MP_RELAX + "GGA = PS\n", None, "PBEsol", "PBEsol", "relax", None),
    ("SCAN", MP_R2SCAN.replace("R2scan", "SCAN"), None, "SCAN", "SCAN", "relax", None),
    ("LDAU on, all U zero", MP_RELAX + MP_U.replace("5.3 0", "0 0"), ["Fe", "O"], "GGA", "PBE", "relax", None),
    # refused before issue 13, identified by pymatgen/emmet: now fidelities
    ("LDA by GGA = CA", MP_RELAX + "GGA = CA\n", None, "LDA", "LDA", "relax", None),
    ("RPBE", MP_RELAX + "GGA = RP\n", None, "RPBE", "RPBE", "relax", None),
    ("revPBE", MP_RELAX + "GGA = RE\n", None, "revPBE", "revPBE", "relax", None),
    ("PBE-MBD", MP_RELAX + "IVDW = 202\n", None, "PBE-MBD", "PBE-MBD", "relax", None),
    (
        "tuned hybrid (emmet: HFCus)",
        HSE_STATIC + "AEXX = 0.345\n",
        None,
        "HSE(AEXX=0.345)",
        "HSE(AEXX=0.345)",
        "static",
        None,
    ),
    (
        "tuned hybrid as vasprun.xml writes it",
        HSE_STATIC + "AEXX = 0.34500000\nAGGAX = 0.65500000\nAGGAC = 1.0\nALDAC = 1.0\n",
        None,
        "HSE(AEXX=0.345)",
        "HSE(AEXX=0.345)",
        "static",
        None,
    ),
    ("HSE06 with D3", HSE_STATIC + "IVDW = 11\n", None, "HSE06-D3", "HSE06-D3", "static", None),
    (
        "HSE06+U with D3(BJ)",
        HSE_STATIC + MP_U + "IVDW = 12\n",
        ["Fe", "O"],
        "HSE06+U-D3(BJ)",
        "HSE06+U-D3(BJ)",
        "static",
        {"Fe": 5.3},
    ),
    # the two misclassifications of the review
    (
        "HFSCREEN 0.207 is HSE-type, not PBE0",
        HSE_STATIC.replace("HFSCREEN = 0.2", "HFSCREEN = 0.207"),
        None,
        "HSE(HFSCREEN=0.207)",
        "HSE(HFSCREEN=0.207)",
        "static",
        None,
    ),
    ("GGA = PS hybrid is HSEsol", HSE_STATIC.replace("GGA = PE", "GGA = PS"), None, "HSEsol", "HSEsol", "static", None),
    ("HSE03", HSE_STATIC.replace("HFSCREEN = 0.2", "HFSCREEN = 0.3"), None, "HSE03", "HSE03", "static", None),
    (
        "tuned AEXX and HFSCREEN",
        HSE_STATIC.replace("HFSCREEN = 0.2", "HFSCREEN = 0.15") + "AEXX = 0.3\n",
        None,
        "HSE(AEXX=0.3,HFSCREEN=0.15)",
        "HSE(AEXX=0.3,HFSCREEN=0.15)",
        "static",
        None,
    ),
    (
        "tuned PBE0",
        HSE_STATIC.replace("HFSCREEN = 0.2\n", "AEXX = 0.3\n"),
        None,
        "PBE0(AEXX=0.3)",
        "PBE0(AEXX=0.3)",
        "static",
        None,
    ),
    ("r2SCAN0", MP_R2SCAN + "LHFCALC = T\n", None, "r2SCAN0", "r2SCAN0", "relax", None),
    (
        "B3LYP",
        HSE_STATIC.replace("GGA = PE", "GGA = B3").replace("HFSCREEN = 0.2\n", "")
        + "AEXX = 0.2\nAGGAX = 0.72\nAGGAC = 0.81\nALDAC = 0.19\n",
        None,
        "B3LYP",
        "B3LYP",
        "static",
        None,
    ),
    ("obsolete LVDW is D2", MP_RELAX + "LVDW = .TRUE.\n", None, "PBE-D2", "PBE-D2", "relax", None),
    ("IVDW = 10 is D2", MP_RELAX + "IVDW = 10\n", None, "PBE-D2", "PBE-D2", "relax", None),
    ("IVDW = 20 is TS", MP_RELAX + "IVDW = 20\n", None, "PBE-TS", "PBE-TS", "relax", None),
    (
        "vdW-DF (emmet: revPBE-vdW)",
        MP_RELAX + "GGA = RE\nLUSE_VDW = T\nAGGAC = 0.0\n",
        None,
        "vdW-DF",
        "vdW-DF",
        "relax",
        None,
    ),
    (
        "rev-vdW-DF2 rounded",
        MP_RELAX + "GGA = MK\nPARAM1 = 0.1234\nPARAM2 = 0.7114\nZab_vdW = -1.8867\nLUSE_VDW = T\nAGGAC = 0\n",
        None,
        "rev-vdW-DF2",
        "rev-vdW-DF2",
        "relax",
        None,
    ),
    (
        "optB88-vdW+U",
        MP_RELAX + MP_U + "GGA = BO\nPARAM1 = 0.1833333333\nPARAM2 = 0.22\nLUSE_VDW = T\nAGGAC = 0.0\n",
        ["Fe", "O"],
        "optB88-vdW+U",
        "optB88-vdW+U",
        "relax",
        {"Fe": 5.3},
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "species", "fidelity", "run_type", "task_type", "hubbards"), CASES, ids=[c[0] for c in CASES]
)
def test_classification(name, text, species, fidelity, run_type, task_type, hubbards):
    result = classify_incar(incar(text), species=species)
    assert (result.fidelity, result.run_type, result.task_type, result.hubbards) == (
        fidelity,
        run_type,
        task_type,
        hubbards,
    )


def test_hubbards_given_by_the_source_win_over_ldauu():
    result = classify_incar(incar(MP_RELAX + MP_U), hubbards={"Fe": 5.3, "O": 0.0})
    assert result.hubbards == {"Fe": 5.3} and result.fidelity == "GGA+U"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (MP_RELAX.replace("NSW = 99", "NSW = 0") + "ICHARG = 11\n", "non-self-consistent"),
        (MP_RELAX.replace("IBRION = 2", "IBRION = 0"), "molecular-dynamics"),
        (MP_RELAX.replace("IBRION = 2", "IBRION = 7"), "IBRION = 7"),
        (MP_RELAX + MP_U, "species order"),  # LDAUU without knowing which element is which
        (MP_RELAX + "METAGGA = FOO\n", "METAGGA = FOO is not a functional crossfid can identify"),
        (MP_RELAX + "METAGGA = MBJ\n", "model potential"),
        (MP_RELAX + "GGA = XX\n", "GGA = XX is not a functional crossfid can identify"),
        (MP_RELAX + "IVDW = 99\n", "IVDW = 99 is not one crossfid can identify"),
        (MP_RELAX + "IVDW = 14\n", "IVDW = 14"),  # libMBD: the method is another tag's choice
        (MP_RELAX + "GGA = BO\n", "GGA = BO without LUSE_VDW"),  # optB88 exchange alone
        (MP_RELAX + "LUSE_VDW = T\nAGGAC = 0.0\n", "not a vdW-DF functional"),  # PBE exchange + vdW-DF
        (  # the vdW-DF kernel on top of PBE correlation: AGGAC not 0
            MP_RELAX + "GGA = BO\nPARAM1 = 0.1833333333\nPARAM2 = 0.22\nLUSE_VDW = T\n",
            "AGGAC = 1",
        ),
        (MP_RELAX + "GGA = MK\nPARAM1 = 0.1234\nPARAM2 = 0.5\nLUSE_VDW = T\nAGGAC = 0\n", "PARAM2 = 0.5"),
        (MP_R2SCAN + "LUSE_VDW = T\nIVDW = 11\n", "both nonlocal vdW"),
        (MP_RELAX + "GGA = ML\nLUSE_VDW = T\nIVDW_NL = 2\nBPARAM = 6.3\n", "IVDW_NL = 2"),  # rVV10 of rPW86-PBE
        (MP_RELAX + "METAGGA = TPSS\nLUSE_VDW = T\n", "with TPSS"),
        (HSE_STATIC + "LUSE_VDW = T\n", "with a hybrid"),
        (HSE_STATIC + "AGGAX = 0.5\n", "non-standard mixing (AGGAX = 0.5"),
        (HSE_STATIC.replace("HFSCREEN = 0.2\n", "") + "AEXX = 1.0\nAGGAC = 0.0\nALDAC = 0.0\n", "Hartree-Fock"),
        (MP_R2SCAN + "LHFCALC = T\nHFSCREEN = 0.2\n", "hybrid of r2SCAN with AEXX = 0.25, HFSCREEN = 0.2"),
        (HSE_STATIC.replace("GGA = PE", "GGA = RP"), "hybrid of RPBE"),
        (HSE_STATIC.replace("GGA = PE", "GGA = B3"), "not B3LYP"),
        (HSE_STATIC + "AEXX = 0\n", "AEXX = 0"),
    ],
)
def test_refusals(text, reason):
    with pytest.raises(RecordError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        classify_incar(incar(text))


def test_normalize_incar_parses_vasp_values():
    parsed = normalize_incar({"lhfcalc": ".TRUE.", "ldauu": "2*0 5.3", "encut": "520", "algo": "Fast", "x": "F"})
    assert parsed == {"LHFCALC": True, "LDAUU": [0, 0, 5.3], "ENCUT": 520, "ALGO": "Fast", "X": False}


@pytest.mark.parametrize(
    ("label", "fidelity"),
    [("PBE", "GGA"), ("gga+u", "GGA+U"), ("R2SCAN", "r2SCAN"), ("hse", "HSE06"), ("PBE-D3", "PBE-D3")],
)
def test_labels(label, fidelity):
    assert fidelity_from_label(label) == fidelity


def test_unknown_label():
    with pytest.raises(RecordError, match="unknown fidelity"):
        fidelity_from_label("B3LYP-ish")


@pytest.mark.parametrize(
    ("label", "fidelity"),
    [
        ("HSE06+D3", "HSE06-D3"),
        ("hse06+u+d3bj", "HSE06+U-D3(BJ)"),
        ("PBE+U+D3", "PBE+U-D3"),
        ("GGA-D3", "PBE-D3"),
        ("r2SCAN+rVV10", "r2SCAN-rVV10"),
        ("r2SCAN-rVV10+U", "r2SCAN+U-rVV10"),  # emmet puts +U last
        ("revPBE+PADE", "RPBE"),  # emmet's and pymatgen's name for GGA = RP
        ("revPBE-vdW", "vdW-DF"),
        ("PBE+U+vdW-DFT-D3-BJ", "PBE+U-D3(BJ)"),  # pymatgen's Vasprun.run_type
        ("HSE(AEXX=0.25)", "HSE06"),
        ("hse(aexx=0.3450)+u", "HSE(AEXX=0.345)+U"),
        ("LDA", "LDA"),
        ("M06L", "M06-L"),
        ("HSE(AEXX=0.345)-D3", "HSE(AEXX=0.345)-D3"),
    ],
)
def test_loose_labels(label, fidelity):
    assert fidelity_from_label(label) == fidelity


@pytest.mark.parametrize("label", ["HFCus", "optB88-vdW-D3", "HSE(AEXX=2)", "PBE-D5", "SCAN0(HFSCREEN=0.2)", ""])
def test_labels_without_a_fidelity(label):
    with pytest.raises(RecordError, match="unknown fidelity"):
        fidelity_from_label(label)


def test_labels_round_trip_in_lower_case():
    for name in ("GGA+U", "HSE(AEXX=0.3,HFSCREEN=0.15)+U-TS(HI)", "SCAN-MBD(FI)", "rev-vdW-DF2+U", "PBE-dDsC"):
        assert fidelity_from_label(name) == name
        assert fidelity_from_label(name.lower()) == name


# --------------------------------------------------------------------------- every functional ± U ± dispersion

#: the INCAR tags of every functional (base: MP_RELAX, which sets no GGA tag: the POTCAR's PBE)
FUNCTIONAL_TAGS = {
    "LDA": "GGA = CA\n",
    "PBE": "GGA = PE\n",
    "RPBE": "GGA = RP\n",
    "revPBE": "GGA = RE\n",
    "PBEsol": "GGA = PS\n",
    "PW91": "GGA = 91\n",
    "AM05": "GGA = AM\n",
    "SCAN": "METAGGA = SCAN\n",
    "r2SCAN": "METAGGA = R2scan\n",
    "rSCAN": "METAGGA = RSCAN\n",
    "TPSS": "METAGGA = TPSS\n",
    "revTPSS": "METAGGA = RTPSS\n",
    "M06-L": "METAGGA = M06L\n",
    "MS0": "METAGGA = MS0\n",
    "MS1": "METAGGA = MS1\n",
    "MS2": "METAGGA = MS2\n",
    "HSE06": "GGA = PE\nLHFCALC = .TRUE.\nHFSCREEN = 0.2\n",
    "HSE03": "LHFCALC = .TRUE.\nHFSCREEN = 0.3\n",
    "HSEsol": "GGA = PS\nLHFCALC = .TRUE.\nHFSCREEN = 0.2\n",
    "PBE0": "LHFCALC = .TRUE.\n",
    "PBEsol0": "GGA = PS\nLHFCALC = .TRUE.\nAEXX = 0.25\n",
    "SCAN0": "METAGGA = SCAN\nLHFCALC = .TRUE.\n",
    "r2SCAN0": "METAGGA = R2SCAN\nLHFCALC = .TRUE.\nHFSCREEN = 0\n",
    "B3LYP": "GGA = B3\nLHFCALC = .TRUE.\nAEXX = 0.2\nAGGAX = 0.72\nAGGAC = 0.81\nALDAC = 0.19\n",
    "HSE(AEXX=0.345)": "LHFCALC = .TRUE.\nAEXX = 0.345\nHFSCREEN = 0.2\n",
    "HSE(HFSCREEN=0.207)": "LHFCALC = .TRUE.\nHFSCREEN = 0.207\n",
    "HSE(AEXX=0.3,HFSCREEN=0.15)": "LHFCALC = .TRUE.\nAEXX = 0.3\nHFSCREEN = 0.15\nAGGAX = 0.7\n",
    "PBE0(AEXX=0.3)": "GGA = PE\nLHFCALC = .TRUE.\nAEXX = 0.3\n",
    "HSEsol(AEXX=0.3)": "GGA = PS\nLHFCALC = .TRUE.\nAEXX = 0.3\nHFSCREEN = 0.2\n",
    "r2SCAN0(AEXX=0.1)": "METAGGA = R2SCAN\nLHFCALC = .TRUE.\nAEXX = 0.1\n",
    "vdW-DF": "GGA = RE\nLUSE_VDW = .TRUE.\nAGGAC = 0.0\n",
    "optPBE-vdW": "GGA = OR\nLUSE_VDW = .TRUE.\nAGGAC = 0.0\n",
    "optB88-vdW": "GGA = BO\nPARAM1 = 0.1833333333\nPARAM2 = 0.22\nLUSE_VDW = .TRUE.\nAGGAC = 0.0\n",
    "optB86b-vdW": "GGA = MK\nPARAM1 = 0.1234\nPARAM2 = 1.0\nLUSE_VDW = .TRUE.\nAGGAC = 0.0\n",
    "vdW-DF2": "GGA = ML\nLUSE_VDW = .TRUE.\nAGGAC = 0.0\nZab_vdW = -1.8867\n",
    "rev-vdW-DF2": "GGA = MK\nPARAM1 = 0.1234\nPARAM2 = 0.711357\nZab_vdW = -1.8867\nLUSE_VDW = .TRUE.\nAGGAC = 0.0\n",
}

DISPERSION_TAGS = {
    None: "",
    "D2": "IVDW = 1\n",
    "D3": "IVDW = 11\n",
    "D3(BJ)": "IVDW = 12\n",
    "D4": "IVDW = 13\n",
    "TS": "IVDW = 2\n",
    "TS(HI)": "IVDW = 21\n",
    "MBD": "IVDW = 202\n",
    "MBD(FI)": "IVDW = 263\n",
    "ulg": "IVDW = 3\n",
    "dDsC": "IVDW = 4\n",
    "rVV10": "LUSE_VDW = .TRUE.\nBPARAM = 15.7\nLASPH = .TRUE.\n",
}

GRID = [
    (f, u, d)
    for f in FUNCTIONAL_TAGS
    for u in (False, True)
    for d in DISPERSION_TAGS
    if not (d == "rVV10" and f in VDW_DF_FUNCTIONALS)  # LUSE_VDW twice: the same INCAR
]


def _expected(functional: str, hubbard: bool, dispersion: str | None) -> str | None:
    """The fidelity, or None where the combination is not a functional (refused)."""
    if dispersion is not None and functional in VDW_DF_FUNCTIONALS:
        return None  # nonlocal correlation plus a dispersion correction
    if dispersion == "rVV10" and functional not in ("SCAN", "r2SCAN"):
        return None  # LUSE_VDW means rVV10 only with SCAN/r2SCAN
    return compose_fidelity(functional, hubbard=hubbard, dispersion=dispersion)


def _agrees(expected: object, found: object) -> bool:
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        return isinstance(found, float | int) and math.isclose(expected, found, abs_tol=1e-4)
    if isinstance(expected, str):
        return str(found).strip().upper() == expected.upper()
    return expected == found


@pytest.mark.parametrize(("functional", "hubbard", "dispersion"), GRID, ids=[f"{f}|{u}|{d}" for f, u, d in GRID])
def test_every_functional_with_and_without_u_and_dispersion(functional, hubbard, dispersion):
    text = MP_RELAX + FUNCTIONAL_TAGS[functional] + (MP_U if hubbard else "") + DISPERSION_TAGS[dispersion]
    expected = _expected(functional, hubbard, dispersion)
    species = ["Fe", "O"] if hubbard else None
    if expected is None:
        with pytest.raises(RecordError, match="not a functional crossfid can identify|not a vdW-DF functional"):
            classify_incar(incar(text), species=species)
        return
    result = classify_incar(incar(text), species=species)
    assert result.fidelity == expected
    assert result.run_type == ("PBE" + expected[3:] if expected.startswith("GGA") else expected)
    assert result.spec == fidelity_spec(expected)
    assert result.hubbards == ({"Fe": 5.3} if hubbard else None)
    # the identifying tags recorded in the spec are the ones of this INCAR (where it sets them)
    params = normalize_incar(incar(text))
    recorded = {key.upper(): value for key, value in result.spec.parameters.items()}
    assert recorded.keys() & params.keys(), recorded
    for key, value in recorded.items():
        if key in params:
            assert _agrees(value, params[key]), (key, value, params[key])


@pytest.mark.parametrize(
    ("potcar", "fidelity"),
    [("LDA", "LDA"), ("PBE", "GGA"), ("PBE_54", "GGA"), ("PW91", "PW91"), ("GGA", "PW91"), (None, "GGA")],
)
def test_no_gga_tag_means_the_potcar_functional(potcar, fidelity):
    assert classify_incar(incar(MP_RELAX), potcar_functional=potcar).fidelity == fidelity
    # a GGA tag wins over the POTCAR
    assert classify_incar(incar(MP_RELAX + "GGA = PS\n"), potcar_functional=potcar).fidelity == "PBEsol"


# --------------------------------------------------------------------------- against emmet's run_type

#: what vasprun.xml reports when nothing is set (VASP's defaults of the tags emmet compares)
VASPRUN_DEFAULTS = {
    "GGA": "--",
    "LHFCALC": False,
    "AEXX": 0.0,
    "AGGAX": 1.0,
    "AGGAC": 1.0,
    "ALDAC": 1.0,
    "HFSCREEN": 0.0,
    "LUSE_VDW": False,
    "PARAM1": 0.1234,
    "PARAM2": 1.0,
    "Zab_vdW": -0.8491,
    "LASPH": False,
    "LDAU": False,
    "NSW": 0,
}
_HYBRID = {"LHFCALC": True, "AEXX": 0.25, "AGGAX": 0.75, "AGGAC": 1.0, "ALDAC": 1.0}

#: parameter sets as vasprun.xml holds them, for which emmet's run_type is right
EMMET_CASES = {
    "POTCAR default": {},
    "PBE": {"GGA": "PE"},
    "LDA": {"GGA": "CA"},
    "RPBE": {"GGA": "RP"},
    "revPBE": {"GGA": "RE"},
    "PBEsol": {"GGA": "PS"},
    "AM05": {"GGA": "AM"},
    **{m: {"METAGGA": m} for m in ("SCAN", "R2SCAN", "TPSS", "RTPSS", "M06L", "MS0", "MS1", "MS2")},
    "HSE06": {"GGA": "PE", **_HYBRID, "HFSCREEN": 0.2},
    "HSE03": {"GGA": "PE", **_HYBRID, "HFSCREEN": 0.3},
    "PBE0": {"GGA": "PE", **_HYBRID},
    "B3LYP": {"GGA": "B3", **_HYBRID, "AEXX": 0.2, "AGGAX": 0.72, "AGGAC": 0.81, "ALDAC": 0.19},
    "vdW-DF": {"GGA": "RE", "LUSE_VDW": True, "AGGAC": 0.0, "LASPH": True},
    "optPBE-vdW": {"GGA": "OR", "LUSE_VDW": True, "AGGAC": 0.0, "LASPH": True},
    "optB88-vdW": {"GGA": "BO", "PARAM1": 0.1833333333, "PARAM2": 0.22, "LUSE_VDW": True, "AGGAC": 0.0},
    "optB86b-vdW": {"GGA": "MK", "PARAM1": 0.1234, "PARAM2": 1.0, "LUSE_VDW": True, "AGGAC": 0.0, "LASPH": True},
    "vdW-DF2": {"GGA": "ML", "Zab_vdW": -1.8867, "LUSE_VDW": True, "AGGAC": 0.0, "LASPH": True},
    "rev-vdW-DF2": {
        "GGA": "MK",
        "PARAM1": 0.1234,
        "PARAM2": 0.711357,
        "Zab_vdW": -1.8867,
        "LUSE_VDW": True,
        "AGGAC": 0.0,
        "LASPH": True,
    },
    "SCAN-rVV10": {"METAGGA": "SCAN", "LUSE_VDW": True, "BPARAM": 15.7, "LASPH": True},
    "r2SCAN-rVV10": {"METAGGA": "R2SCAN", "LUSE_VDW": True, "BPARAM": 15.7, "LASPH": True},
}
EMMET_GRID = [(name, u) for name in EMMET_CASES for u in (False, True)]


@pytest.mark.parametrize(("case", "hubbard"), EMMET_GRID, ids=[f"{c}|{u}" for c, u in EMMET_GRID])
def test_agrees_with_emmet_where_emmet_has_an_answer(case, hubbard):
    params = {**VASPRUN_DEFAULTS, **EMMET_CASES[case], "LDAU": hubbard}
    emmet = emmet_run_type(params).value
    ours = classify_incar(params, hubbards={"Fe": 5.3} if hubbard else None, potcar_functional="PBE")
    assert fidelity_from_label(emmet) == ours.fidelity, (emmet, ours.fidelity)


# --------------------------------------------------------------------------- real VASP runs

#: folder (and vasprun suffix) → fidelity, or the start of the refusal
REAL_EXPECTED = {
    "Si_old_double_relax/vasprun.xml.relax1.gz": "GGA",
    "Si_old_double_relax/vasprun.xml.relax2.gz": "GGA",
    "Si_uniform/vasprun.xml.gz": "non-self-consistent run (ICHARG = 11)",
    "chgnet_parse-vasp-no-magmoms/vasprun.xml.gz": "GGA",
    "chgnet_parse-vasp-with-magmoms/vasprun.xml.gz": "PBE-D3",  # IVDW = 11
    "defect_run/vasprun.xml.gz": "HSE06",
    "lda_calc/vasprun.xml.gz": "LDA",  # LDA POTCARs, no GGA tag: refused until issue 13
    "magnetic_run/vasprun.xml.gz": "RPBE",  # GGA = RP: refused until issue 13
    "raw_vasp_with_h5/vasprun.xml.gz": "r2SCAN",
}


@pytest.mark.skipif(
    not REAL_VASP.is_dir(), reason=f"the public records folder {REAL_VASP} is absent (a fresh clone has none)"
)
@pytest.mark.parametrize("relative", sorted(REAL_EXPECTED))
def test_real_vasp_runs(relative):
    path = REAL_VASP / relative
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vasprun = Vasprun(path, parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    # vasprun.xml's full parameter set with the INCAR on top, as vasp_dirs reads it (LDAU* only from the INCAR)
    params = {k: v for k, v in vasprun.parameters.items() if not k.startswith("LDAU")} | dict(vasprun.incar)
    kind = vasprun.potcar_symbols[0].split()[0]
    potcar = "LDA" if kind in ("PAW", "US") else kind.partition("_")[2]
    expected = REAL_EXPECTED[relative]
    if " " in expected:
        with pytest.raises(RecordError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            classify_incar(params, potcar_functional=potcar)
        return
    result = classify_incar(params, potcar_functional=potcar)
    assert result.fidelity == expected
    if not params.get("IVDW"):  # emmet reads no IVDW
        assert fidelity_from_label(emmet_run_type({**vasprun.parameters, **vasprun.incar}).value) == expected
