"""Fidelity classification from realistic INCARs, for every fidelity crossfid claims."""

from __future__ import annotations

import pytest
from pymatgen.io.vasp import Incar

from crossfid.ingest.fidelity import classify_incar, fidelity_from_label, normalize_incar
from crossfid.ingest.records import RecordError

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
        (MP_RELAX + "GGA = CA\n", "'LDA' is not a supported fidelity"),
        (MP_RELAX + "GGA = RP\n", "not a supported fidelity"),
        (MP_RELAX + "IVDW = 202\n", "IVDW = 202"),
        (MP_RELAX + MP_U, "species order"),  # LDAUU without knowing which element is which
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
