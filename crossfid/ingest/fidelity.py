"""Fidelity from a calculation's inputs (VASP INCAR), not from anybody's label.

emmet-core's ``run_type`` does the functional recognition (GGA/METAGGA tags,
hybrid and vdW-DF parameter sets). Before calling it the INCAR is normalised the
way VASP reads it, because emmet compares raw values:

* keys upper-case; string booleans (``.TRUE.``, ``T``, ``false``) and numbers parsed;
* hybrid defaults filled in when ``LHFCALC`` is on (AEXX 0.25, AGGAX 1 − AEXX,
  AGGAC 1, ALDAC 1, HFSCREEN 0), so a plain ``LHFCALC/HFSCREEN = 0.2`` INCAR is HSE06
  and not emmet's catch-all "HFCus";
* no ``GGA``/``METAGGA`` tag means the POTCAR's functional: PBE for PBE POTCARs
  (how Materials Project INCARs are written), LDA only for LDA POTCARs.

Then crossfid adds what emmet leaves out: dispersion corrections set with ``IVDW``
(D3, D3(BJ), D4), rVV10 with any ``BPARAM`` (MP's r2SCAN-rVV10 uses 11.95, emmet
only knows 15.7), and the coarse fidelity of :mod:`crossfid.vocabulary`.
Hubbard U counts only when ``LDAU`` is on and some element has U ≠ 0.
Non-self-consistent runs (``ICHARG >= 10``) are refused: they have no valid total
energy or stress.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crossfid.ingest.records import RecordError
from crossfid.vocabulary import FIDELITY_NAMES

#: IVDW value → dispersion correction name (VASP wiki, IVDW)
IVDW_NAMES = {1: "D2", 10: "D2", 11: "D3", 12: "D3(BJ)", 13: "D4", 2: "TS", 20: "TS", 21: "TS", 4: "dDsC"}

#: emmet run type (without +U) → (coarse fidelity family name used in the vocabulary)
_BASE_FIDELITY = {
    "PBE": "GGA",
    "GGA": "GGA",
    "PBEsol": "PBEsol",
    "SCAN": "SCAN",
    "r2SCAN": "r2SCAN",
    "HSE06": "HSE06",
    "PBE0": "PBE0",
    "optB88-vdW": "optB88-vdW",
    "optB86b-vdW": "optB86b-vdW",
    "vdW-DF2": "vdW-DF2",
    "SCAN-rVV10": "SCAN-rVV10",
    "r2SCAN-rVV10": "r2SCAN-rVV10",
}


@dataclass(frozen=True)
class Classification:
    fidelity: str  # coarse, a row of the fidelities table, e.g. "GGA+U"
    run_type: str  # exact, e.g. "PBE+U", "r2SCAN-rVV10", "PBE-D3(BJ)"
    hubbards: dict[str, float] | None  # element → U (eV), only U ≠ 0
    task_type: str  # "relax" | "static"


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


def _with_vasp_defaults(incar: dict[str, Any], potcar_functional: str | None) -> dict[str, Any]:
    params = dict(incar)
    if "GGA" not in params and "METAGGA" not in params:
        lda = potcar_functional is not None and potcar_functional.upper().startswith("LDA")
        params["GGA"] = "CA" if lda else "PE"
    if isinstance(params.get("METAGGA"), str) and params["METAGGA"].strip().upper() in ("", "NONE", "--"):
        params.pop("METAGGA")
    if params.get("LHFCALC") is True:
        aexx = float(params.get("AEXX", 0.25))
        params.setdefault("AEXX", aexx)
        params.setdefault("AGGAX", round(1.0 - aexx, 10))
        params.setdefault("AGGAC", 1.0)
        params.setdefault("ALDAC", 1.0)
        params.setdefault("HFSCREEN", 0.0)
        if float(params["HFSCREEN"]) == 0.0:
            params.pop("HFSCREEN")  # emmet's PBE0 has no HFSCREEN key
    return params


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


def classify_incar(
    incar: Mapping[str, Any],
    *,
    species: Sequence[str] | None = None,
    hubbards: Mapping[str, float] | None = None,
    potcar_functional: str | None = None,
) -> Classification:
    """Coarse fidelity, exact run type, U values and task type of a VASP calculation.

    ``species``: element of each POSCAR species, in order (to read ``LDAUU``);
    ``hubbards``: element → U when the source already resolved them (MP task documents).
    Raises :class:`RecordError` for non-self-consistent runs and unsupported functionals.
    """
    from emmet.core.vasp.calc_types.utils import run_type as emmet_run_type

    params = normalize_incar(incar)
    task_type = task_type_from_incar(params)
    u_values = _hubbards(params, species, hubbards)
    plus_u = "+U" if u_values else ""

    base = emmet_run_type({**_with_vasp_defaults(params, potcar_functional), "LDAU": False}).value
    if params.get("LUSE_VDW") is True:
        # emmet matches vdW-DF parameter sets by exact float equality; vasprun.xml rounds them
        gga = str(params.get("GGA", "")).strip().upper()
        if base in ("SCAN", "r2SCAN"):
            base = f"{base}-rVV10"  # rVV10 with any BPARAM
        elif base in ("optB88", "optB86b") or gga == "ML":
            base = {"optB88": "optB88-vdW", "optB86b": "optB86b-vdW"}.get(base, "vdW-DF2")
    if base not in _BASE_FIDELITY:
        raise RecordError(f"functional {base!r} is not a supported fidelity")

    dispersion = None
    ivdw = int(params.get("IVDW", 0) or 0)
    if ivdw:
        dispersion = IVDW_NAMES.get(ivdw)
        if dispersion is None:
            raise RecordError(f"dispersion correction IVDW = {ivdw} is not supported")
    run_type = _BASE_FIDELITY[base] if base == "GGA" else base
    if base in ("PBE", "GGA"):
        run_type = "PBE"
    run_type = f"{run_type}{plus_u}" + (f"-{dispersion}" if dispersion else "")

    fidelity = _BASE_FIDELITY[base] + plus_u
    if dispersion:
        stem = "PBE" if fidelity.startswith("GGA") else _BASE_FIDELITY[base]
        fidelity = f"{stem}{plus_u}-{dispersion}"
    if fidelity not in FIDELITY_NAMES:
        raise RecordError(f"fidelity {fidelity!r} (run type {run_type}) is not in crossfid's vocabulary")
    return Classification(fidelity=fidelity, run_type=run_type, hubbards=u_values, task_type=task_type)


_LABELS = {
    "gga": "GGA",
    "pbe": "GGA",
    "gga+u": "GGA+U",
    "pbe+u": "GGA+U",
    "r2scan": "r2SCAN",
    "r2scan+u": "r2SCAN+U",
    "scan": "SCAN",
    "hse": "HSE06",
    "hse06": "HSE06",
    "pbesol": "PBEsol",
}


def fidelity_from_label(label: str) -> str:
    """A user-given fidelity label (case-insensitive; PBE ≡ GGA) → the vocabulary name."""
    text = label.strip()
    if text in FIDELITY_NAMES:
        return text
    for name in FIDELITY_NAMES:
        if name.lower() == text.lower():
            return name
    mapped = _LABELS.get(text.lower().replace(" ", ""))
    if mapped is None:
        raise RecordError(f"unknown fidelity {label!r}; known: {', '.join(FIDELITY_NAMES)}")
    return mapped
