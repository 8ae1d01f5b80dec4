"""Fidelity from a calculation's inputs (VASP INCAR), not from anybody's label.

A fidelity is a functional ± Hubbard U ± a dispersion correction, named by the
grammar of :mod:`crossfid.vocabulary` (``HSE06+U-D3(BJ)``, ``HSE(AEXX=0.345)``,
``r2SCAN-rVV10``). The INCAR is first normalised the way VASP reads it (keys
upper-case; ``.TRUE.``/``T``/``false`` and numbers parsed), then read tag by tag:

* **functional**: ``METAGGA`` if set (SCAN, R2SCAN, RSCAN, TPSS, RTPSS, M06L, MS0-2),
  else ``GGA`` (CA/PZ LDA, PE PBE, RP RPBE, RE revPBE, PS PBEsol, 91 PW91, AM AM05);
  neither tag means the POTCAR's functional (PBE for PBE POTCARs and when unknown, as
  Materials Project INCARs are written; LDA for LDA POTCARs; PW91 for PAW_GGA).
* **hybrid** (``LHFCALC``): AEXX (default 0.25) and HFSCREEN (default 0, 1/Å) with the
  semilocal base; the mixing (AGGAX = ALDAX = 1 − AEXX, AGGAC = ALDAC = 1) must be
  the standard one, except B3LYP's (``GGA = B3``). Any screening > 0 is an HSE-type
  hybrid: ``HSE06`` (0.25, 0.2), ``HSE03`` (0.25, 0.3), ``HSEsol`` on PBEsol, otherwise
  named by its parameters (``HSE(HFSCREEN=0.207)``); unscreened: ``PBE0``, ``PBEsol0``,
  ``SCAN0``, ``r2SCAN0`` or ``PBE0(AEXX=0.3)``.
* **nonlocal vdW** (``LUSE_VDW``): rVV10 with SCAN/r2SCAN (any ``BPARAM``: MP's
  r2SCAN-rVV10 uses 11.95, emmet knows 15.7); with a GGA tag, the vdW-DF family by
  ``GGA`` + ``PARAM1``/``PARAM2``/``Zab_vdW``/``AGGAC = 0``, within 10⁻⁴ (vasprun.xml
  rounds them).
* **dispersion** (``IVDW``, VASP wiki): 1/10 D2, 11 D3, 12 D3(BJ), 13 D4, 2/20 TS,
  21 TS(HI), 202 MBD, 263 MBD(FI), 3 ulg, 4 dDsC.
* **Hubbard U** counts only when ``LDAU`` is on and some element has U ≠ 0.

Anything else is refused with the tag that could not be identified. Non-self-consistent
runs (``ICHARG >= 10``) are refused too: they have no valid total energy or stress.

emmet-core's ``run_type`` is not used at run time, because it compares raw values and
falls back silently: an unknown ``GGA`` tag becomes LDA, an unknown ``METAGGA`` is
ignored, a hybrid's ``GGA`` is ignored (HSEsol → HSE06), a screened hybrid whose
HFSCREEN is not 0.2 or 0.3 matches PBE0, vdW-DF parameters need exact floats, rVV10
needs BPARAM 15.7. ``tests/ingest/test_fidelity.py`` checks that every answer emmet
gets right agrees with this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crossfid.ingest.records import RecordError
from crossfid.vocabulary import (
    DISPERSIONS,
    FIDELITY_NAMES,
    FUNCTIONALS,
    SEMILOCAL_FUNCTIONALS,
    VDW_DF_FUNCTIONALS,
    FidelitySpec,
    canonical_hybrid,
    compose_fidelity,
    fidelity_spec,
    hybrid_functional,
)

#: IVDW value → dispersion correction (VASP wiki, IVDW)
IVDW_NAMES: dict[int, str] = {
    1: "D2",
    10: "D2",
    11: "D3",
    12: "D3(BJ)",
    13: "D4",
    2: "TS",
    20: "TS",
    21: "TS(HI)",
    202: "MBD",
    263: "MBD(FI)",
    3: "ulg",
    4: "dDsC",
}

#: absolute tolerance of hybrid mixing and vdW-DF parameters (vasprun.xml writes 8 decimals, users fewer)
TOLERANCE = 1e-4

#: VASP's defaults of the tags that tell the vdW-DF functionals apart
_VDW_DEFAULTS = {"AGGAC": 1.0, "ZAB_VDW": -0.8491, "PARAM1": 0.1234, "PARAM2": 1.0}


def _identifying_tags(functional: str) -> dict[str, Any]:
    spec = fidelity_spec(compose_fidelity(functional, hubbard=False, dispersion=None))
    assert spec is not None and spec.parameters is not None
    return {key.upper(): value for key, value in spec.parameters.items()}


#: (tag, value) → semilocal functional, from the vocabulary's parameters
_SEMILOCAL_BY_TAG: dict[tuple[str, str], str] = {
    next(iter(_identifying_tags(f).items())): f for f in SEMILOCAL_FUNCTIONALS
} | {("GGA", "PZ"): "LDA"}


def _vdw_df_by_gga() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    table: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name in VDW_DF_FUNCTIONALS:
        tags = _identifying_tags(name)
        table.setdefault(tags.pop("GGA"), []).append((name, tags))
    return table


#: GGA tag → vdW-DF functionals using that exchange, with the other tags that identify them
_VDW_DF_BY_GGA = _vdw_df_by_gga()

_B3LYP_TAGS = _identifying_tags("B3LYP")


@dataclass(frozen=True)
class Classification:
    fidelity: str  # a fidelity name of the vocabulary, e.g. "GGA+U", "HSE(AEXX=0.345)-D3"
    run_type: str  # exact, e.g. "PBE+U", "r2SCAN-rVV10", "PBE-D3(BJ)" (the fidelity with PBE named PBE)
    hubbards: dict[str, float] | None  # element → U (eV), only U ≠ 0
    task_type: str  # "relax" | "static"
    spec: FidelitySpec  # the fidelities row of ``fidelity``


def _parse_value(value: Any) -> Any:
    if isinstance(value, str) and len(value.split()) > 1:  # "5.3 0 0" or "2*0 5.3"
        items: list[Any] = []
        for token in value.split():
            count, star, item = token.partition("*")
            items.extend([_parse_value(item)] * int(count) if star else [_parse_value(token)])
        return items if all(isinstance(i, int | float) for i in items) else value.strip()
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower().strip(".")
        if lowered in ("true", "t"):
            return True
        if lowered in ("false", "f"):
            return False
        try:
            number = float(text.replace("d", "e").replace("D", "e"))
        except ValueError:
            return text
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if isinstance(value, list | tuple):
        return [_parse_value(v) for v in value]
    return value


def normalize_incar(incar: Mapping[str, Any]) -> dict[str, Any]:
    """Upper-case keys, VASP-style booleans and numbers."""
    return {str(key).upper(): _parse_value(value) for key, value in incar.items()}


def _hubbards(
    incar: dict[str, Any], species: Sequence[str] | None, given: Mapping[str, float] | None
) -> dict[str, float] | None:
    if not incar.get("LDAU", False):
        return None
    if given is not None:
        values = {str(k): float(v) for k, v in given.items()}
    else:
        u = incar.get("LDAUU")
        if u is None:
            raise RecordError("LDAU is on but LDAUU is missing")
        u = u if isinstance(u, list) else [u]
        if species is None or len(species) != len(u):
            raise RecordError(f"LDAUU has {len(u)} values but the species order is {species}")
        values = {}
        for element, value in zip(species, u, strict=True):
            values[element] = max(values.get(element, 0.0), float(value))
    nonzero = {k: v for k, v in sorted(values.items()) if v != 0.0}
    return nonzero or None


def task_type_from_incar(incar: Mapping[str, Any]) -> str:
    """``relax`` for ionic relaxations, ``static`` for single points; refuses NSCF and MD."""
    icharg = int(incar.get("ICHARG", 0) or 0)
    if icharg >= 10:
        raise RecordError(f"non-self-consistent run (ICHARG = {icharg}): no valid total energy or stress")
    nsw = int(incar.get("NSW", 0) or 0)
    ibrion = int(incar.get("IBRION", -1 if nsw == 0 else 0) or 0)
    if nsw == 0 or ibrion == -1:
        return "static"
    if ibrion in (1, 2, 3):
        return "relax"
    if ibrion == 0:
        raise RecordError("molecular-dynamics run (IBRION = 0): not a relax or static task")
    raise RecordError(f"IBRION = {ibrion} (phonon/linear-response run): not a relax or static task")


# --------------------------------------------------------------------------- functional


def _tag(params: Mapping[str, Any], key: str) -> str | None:
    """A string tag as VASP compares it (upper case); unset, empty, ``--`` and ``None`` are None."""
    value = params.get(key)
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().upper()
    return None if text in ("", "--", "NONE") else text


def _number(params: Mapping[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{key} = {value!r} is not a number") from None
    if not math.isfinite(number):
        raise RecordError(f"{key} = {value!r} is not finite")
    return number


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE


def _potcar_gga(potcar_functional: str | None) -> str:
    """The GGA tag VASP uses when the INCAR sets none: the POTCAR's functional (PBE when unknown)."""
    kind = (potcar_functional or "").strip().upper()
    if kind.startswith("LDA"):
        return "CA"
    if kind in ("PW91", "GGA"):  # PAW_GGA POTCARs are PW91
        return "91"
    return "PE"


def _semilocal(params: Mapping[str, Any], potcar_functional: str | None) -> tuple[str | None, str | None]:
    """(semilocal functional or None for a vdW-DF / B3 exchange tag, the GGA tag in effect)."""
    metagga = _tag(params, "METAGGA")
    if metagga is not None:
        if metagga in ("MBJ", "MBJL"):
            raise RecordError(f"METAGGA = {metagga} is a model potential: no total energy to learn")
        functional = _SEMILOCAL_BY_TAG.get(("METAGGA", metagga))
        if functional is None:
            raise RecordError(f"METAGGA = {metagga} is not a functional crossfid can identify")
        return functional, None
    gga = _tag(params, "GGA") or _potcar_gga(potcar_functional)
    functional = _SEMILOCAL_BY_TAG.get(("GGA", gga))
    if functional is not None or gga == "B3" or gga in _VDW_DF_BY_GGA:
        return functional, gga
    raise RecordError(f"GGA = {gga} is not a functional crossfid can identify")


def _vdw_df(params: Mapping[str, Any], gga: str | None) -> str:
    """The vdW-DF functional of a ``LUSE_VDW`` run with GGA exchange ``gga``."""
    values = {key: _number(params, key, default) for key, default in _VDW_DEFAULTS.items()}
    for name, tags in _VDW_DF_BY_GGA.get(gga or "", []):
        expected = {key: tags.get(key, default) for key, default in _VDW_DEFAULTS.items()}
        if gga not in ("BO", "MK"):  # PARAM1/PARAM2 shape only the optB88 and B86 exchanges
            expected.pop("PARAM1"), expected.pop("PARAM2")
        if all(_close(values[key], value) for key, value in expected.items()):
            return name
    shown = ", ".join(f"{'Zab_vdW' if k == 'ZAB_VDW' else k} = {v:g}" for k, v in values.items())
    raise RecordError(
        f"nonlocal vdW (LUSE_VDW) with GGA = {gga}, {shown}: not a vdW-DF functional crossfid can identify"
    )


def _hybrid(params: Mapping[str, Any], semilocal: str | None, gga: str | None) -> str:
    """The hybrid functional of an ``LHFCALC`` run."""
    a = _number(params, "AEXX", 0.25)
    w = _number(params, "HFSCREEN", 0.0)
    mixing = {
        "AGGAX": _number(params, "AGGAX", 1.0 - a),
        "ALDAX": _number(params, "ALDAX", 1.0 - a),
        "AGGAC": _number(params, "AGGAC", 1.0),
        "ALDAC": _number(params, "ALDAC", 1.0),
    }
    if gga == "B3":
        expected = {key: _B3LYP_TAGS.get(key, 1.0 - a) for key in mixing}
        if _close(a, _B3LYP_TAGS["AEXX"]) and w == 0.0 and all(_close(mixing[k], v) for k, v in expected.items()):
            return "B3LYP"
        raise RecordError(f"GGA = B3 hybrid with AEXX = {a:g}, HFSCREEN = {w:g}, {_shown(mixing)}: not B3LYP")
    if _close(a, 1.0) and _close(mixing["AGGAC"], 0.0) and _close(mixing["ALDAC"], 0.0):
        raise RecordError("Hartree-Fock (AEXX = 1, no DFT correlation): not a density-functional fidelity")
    standard = {"AGGAX": 1.0 - a, "ALDAX": 1.0 - a, "AGGAC": 1.0, "ALDAC": 1.0}
    off = {k: v for k, v in mixing.items() if not _close(v, standard[k])}
    if off:
        raise RecordError(
            f"hybrid with AEXX = {a:g} and non-standard mixing ({_shown(off)}; standard: AGGAX = ALDAX = "
            f"1 - AEXX, AGGAC = ALDAC = 1): not a functional crossfid can identify"
        )
    name = hybrid_functional(semilocal, a, w) if semilocal is not None else None
    if name is None:
        raise RecordError(
            f"hybrid of {semilocal or f'GGA = {gga}'} with AEXX = {a:g}, HFSCREEN = {w:g}: "
            "not a functional crossfid can identify"
        )
    return name


def _shown(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k} = {v:g}" for k, v in values.items())


def identify_functional(params: Mapping[str, Any], potcar_functional: str | None = None) -> tuple[str, str | None]:
    """(functional, dispersion) of normalised INCAR ``params``, both vocabulary names; RecordError if unidentified."""
    semilocal, gga = _semilocal(params, potcar_functional)
    hybrid = params.get("LHFCALC") is True
    nonlocal_vdw = params.get("LUSE_VDW") is True
    ivdw = int(_number(params, "IVDW", 1 if params.get("LVDW") is True else 0))
    dispersion: str | None = None
    if ivdw:
        dispersion = IVDW_NAMES.get(ivdw)
        if dispersion is None:
            raise RecordError(f"dispersion correction IVDW = {ivdw} is not one crossfid can identify")
    if nonlocal_vdw:
        if hybrid:
            raise RecordError("nonlocal vdW (LUSE_VDW) with a hybrid (LHFCALC): not a functional crossfid can identify")
        if dispersion is not None:
            raise RecordError(f"both nonlocal vdW (LUSE_VDW) and IVDW = {ivdw}: not a functional crossfid can identify")
        if semilocal in ("SCAN", "r2SCAN"):
            return semilocal, "rVV10"
        if int(_number(params, "IVDW_NL", 1)) == 2:
            raise RecordError(f"rVV10 kernel (IVDW_NL = 2) with GGA = {gga}: not a functional crossfid can identify")
        if gga is None:
            raise RecordError(f"nonlocal vdW (LUSE_VDW) with {semilocal}: not a functional crossfid can identify")
        functional = _vdw_df(params, gga)
        return functional, None
    if hybrid:
        return _hybrid(params, semilocal, gga), dispersion
    if semilocal is None:
        raise RecordError(f"GGA = {gga} without LUSE_VDW (or B3 without LHFCALC): not a functional on its own")
    return semilocal, dispersion


def classify_incar(
    incar: Mapping[str, Any],
    *,
    species: Sequence[str] | None = None,
    hubbards: Mapping[str, float] | None = None,
    potcar_functional: str | None = None,
) -> Classification:
    """Fidelity, exact run type, U values and task type of a VASP calculation.

    ``species``: element of each POSCAR species, in order (to read ``LDAUU``);
    ``hubbards``: element → U when the source already resolved them (MP task documents);
    ``potcar_functional``: ``PBE``, ``LDA``, ``PW91``, ... (used when neither GGA nor METAGGA is set).
    Raises :class:`RecordError` for non-self-consistent runs and what cannot be identified.
    """
    params = normalize_incar(incar)
    task_type = task_type_from_incar(params)
    u_values = _hubbards(params, species, hubbards)
    functional, dispersion = identify_functional(params, potcar_functional)
    try:
        fidelity = compose_fidelity(functional, hubbard=u_values is not None, dispersion=dispersion)
    except ValueError as exc:
        raise RecordError(f"{exc}: not a fidelity crossfid can name") from None
    spec = fidelity_spec(fidelity)
    assert spec is not None  # compose_fidelity gives canonical names
    run_type = "PBE" + fidelity[3:] if fidelity.startswith("GGA") else fidelity
    return Classification(fidelity=fidelity, run_type=run_type, hubbards=u_values, task_type=task_type, spec=spec)


# --------------------------------------------------------------------------- user labels

#: spellings of functionals in labels (lower case) → vocabulary name; includes emmet's run type names
_FUNCTIONAL_LABELS: dict[str, str] = {f.lower(): f for f in FUNCTIONALS} | {
    "gga": "PBE",
    "hse": "HSE06",
    "r²scan": "r2SCAN",
    "revpbe+pade": "RPBE",  # emmet's and pymatgen's name for GGA = RP
    "revpbe+padé": "RPBE",
    "revpbe-vdw": "vdW-DF",  # emmet's name for GGA = RE with LUSE_VDW
    "rtpss": "revTPSS",
    "m06l": "M06-L",
}

#: spellings of dispersion corrections in labels (lower case) → vocabulary name; includes pymatgen's
_DISPERSION_LABELS: dict[str, str] = {d.lower(): d for d in DISPERSIONS} | {
    "d3bj": "D3(BJ)",
    "d3-bj": "D3(BJ)",
    "dft-d2": "D2",
    "dft-d3": "D3",
    "dft-d3-bj": "D3(BJ)",
    "dft-d4": "D4",
    "vdw-dft-d2": "D2",
    "vdw-dft-d3": "D3",
    "vdw-dft-d3-bj": "D3(BJ)",
    "vdw-ts": "TS",
    "ts-h": "TS(HI)",
    "ts-hi": "TS(HI)",
    "vdw-ts-h": "TS(HI)",
    "vdw-mbd": "MBD",
    "vdw-ddsc": "dDsC",
}


def _label_parts(text: str) -> tuple[str, bool, str | None]:
    """``hse06+u+d3`` → (``hse06``, True, ``D3``); separators ``-`` or ``+``; ``+U`` before or after."""
    rest = text
    hubbard = rest.endswith("+u")
    rest = rest[:-2] if hubbard else rest
    dispersion = None
    for label in sorted(_DISPERSION_LABELS, key=len, reverse=True):
        if rest.endswith(("-" + label, "+" + label)):
            rest, dispersion = rest[: -len(label) - 1], _DISPERSION_LABELS[label]
            break
    if rest.endswith("+u"):
        rest, hubbard = rest[:-2], True
    return rest, hubbard, dispersion


def fidelity_from_label(label: str) -> str:
    """A user-given fidelity label → its vocabulary name.

    Case-insensitive; PBE ≡ GGA (``PBE+U`` → ``GGA+U``); ``+`` or ``-`` before a dispersion
    (``HSE06+D3`` → ``HSE06-D3``); emmet's run types (``revPBE+PADE`` → ``RPBE``,
    ``r2SCAN-rVV10+U`` → ``r2SCAN+U-rVV10``); tuned hybrids in any spelling
    (``hse(aexx=0.3450)`` → ``HSE(AEXX=0.345)``, ``HSE(AEXX=0.25)`` → ``HSE06``).
    """
    text = str(label).strip()
    if fidelity_spec(text) is not None:
        return text
    stem, hubbard, dispersion = _label_parts("".join(text.split()).lower())
    functional = _FUNCTIONAL_LABELS.get(stem) or canonical_hybrid(stem)
    if functional is not None:
        try:
            return compose_fidelity(functional, hubbard=hubbard, dispersion=dispersion)
        except ValueError:
            pass
    raise RecordError(
        f"unknown fidelity {label!r}; known: {', '.join(FIDELITY_NAMES)}, or FUNCTIONAL[+U][-DISPERSION] "
        f"with a functional among {', '.join(FUNCTIONALS)} or a tuned hybrid such as HSE(AEXX=0.3), "
        f"and a dispersion among {', '.join(DISPERSIONS)}"
    )
