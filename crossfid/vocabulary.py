"""The controlled vocabularies of crossfid, defined once.

The database enforces them: fidelities are rows of the ``fidelities`` table
(``tasks.fidelity`` and ``reference_entries.fidelity`` are foreign keys to it),
the other word lists are CHECK constraints. Fidelities are a grammar, not a list:
:data:`FIDELITIES` are the rows the migrations seed, and any other name that
:func:`is_fidelity` accepts (a functional ± U ± dispersion, :func:`fidelity_spec`)
is inserted by the loader when it first meets it. Migrations never import this module:
each one that sets a vocabulary keeps a frozen copy (``VOCABULARIES`` in the
migration file), and ``tests/db/test_migrate.py`` requires the newest frozen copy
of every vocabulary to equal the one here, so changing a word list here without a
migration fails the tests. The exact functional string (e.g. ``PBE+U``,
``r2SCAN``) of a calculation lives next to its coarse fidelity in ``tasks.run_type``.
Benchmarks and their metrics are a registry, :mod:`crossfid.benchmarks.registry`.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, NamedTuple


class FidelitySpec(NamedTuple):
    """A fidelity: a functional, ± Hubbard U, ± a dispersion correction; one row of ``fidelities``."""

    name: str
    family: str  # FIDELITY_FAMILIES: LDA | GGA | meta-GGA | hybrid
    hubbard: bool
    dispersion: str | None  # a DISPERSIONS name (D3, rVV10, ...), the vdW-DF functional itself, or None
    description: str
    functional: str | None = None  # e.g. "PBE", "r2SCAN", "HSE(AEXX=0.345)", "optB88-vdW"
    exact_exchange: float | None = None  # fraction of exact exchange (AEXX); hybrids only
    screening: float | None = None  # range separation HFSCREEN (1/Å); hybrids only, 0 for global hybrids
    parameters: dict[str, Any] | None = None  # the INCAR tags (and values) that identify it


# A fidelity name is  FUNCTIONAL ["+U"] ["-" DISPERSION]  (e.g. "HSE06+U-D3(BJ)", "r2SCAN-rVV10"), except
# that plain PBE keeps its historical names "GGA" / "GGA+U" and is "PBE" only with a dispersion ("PBE-D3").
# Every functional has exactly one name: parsing a name and composing it again gives the same string.


class _Functional(NamedTuple):
    family: str
    description: str
    parameters: dict[str, Any]  # VASP INCAR tags
    nonlocal_vdw: bool = False  # a vdW-DF functional: its correlation is nonlocal, no dispersion on top
    exact_exchange: float | None = None
    screening: float | None = None


#: semilocal functionals by the GGA / METAGGA tag that selects them (VASP wiki, GGA and METAGGA)
_SEMILOCAL: dict[str, _Functional] = {
    "LDA": _Functional("LDA", "LDA (Ceperley-Alder, Perdew-Zunger)", {"GGA": "CA"}),
    "PBE": _Functional("GGA", "PBE generalised-gradient approximation", {"GGA": "PE"}),
    "RPBE": _Functional("GGA", "RPBE GGA (Hammer, Hansen, Nørskov)", {"GGA": "RP"}),
    "revPBE": _Functional("GGA", "revPBE GGA (Zhang, Yang)", {"GGA": "RE"}),
    "PBEsol": _Functional("GGA", "PBEsol GGA", {"GGA": "PS"}),
    "PW91": _Functional("GGA", "Perdew-Wang 91 GGA", {"GGA": "91"}),
    "AM05": _Functional("GGA", "AM05 GGA (Armiento, Mattsson)", {"GGA": "AM"}),
    "SCAN": _Functional("meta-GGA", "SCAN meta-GGA", {"METAGGA": "SCAN"}),
    "r2SCAN": _Functional("meta-GGA", "r2SCAN meta-GGA", {"METAGGA": "R2SCAN"}),
    "rSCAN": _Functional("meta-GGA", "rSCAN meta-GGA", {"METAGGA": "RSCAN"}),
    "TPSS": _Functional("meta-GGA", "TPSS meta-GGA", {"METAGGA": "TPSS"}),
    "revTPSS": _Functional("meta-GGA", "revTPSS meta-GGA", {"METAGGA": "RTPSS"}),
    "M06-L": _Functional("meta-GGA", "M06-L meta-GGA", {"METAGGA": "M06L"}),
    "MS0": _Functional("meta-GGA", "MS0 meta-GGA (made simple)", {"METAGGA": "MS0"}),
    "MS1": _Functional("meta-GGA", "MS1 meta-GGA (made simple)", {"METAGGA": "MS1"}),
    "MS2": _Functional("meta-GGA", "MS2 meta-GGA (made simple)", {"METAGGA": "MS2"}),
}

_NONLOCAL = {"LUSE_VDW": True, "AGGAC": 0.0}  # vdW-DF kernel, LDA correlation only

#: the vdW-DF family (VASP wiki, "Nonlocal vdW-DF functionals"; the parameter sets emmet matches)
_VDW_DF: dict[str, _Functional] = {
    "vdW-DF": _Functional(
        "GGA", "vdW-DF: revPBE exchange with vdW-DF nonlocal (Dion et al.)", {"GGA": "RE", **_NONLOCAL}, True
    ),
    "optPBE-vdW": _Functional("GGA", "optPBE exchange with vdW-DF nonlocal", {"GGA": "OR", **_NONLOCAL}, True),
    "optB88-vdW": _Functional(
        "GGA",
        "optB88 exchange with vdW-DF nonlocal",
        {"GGA": "BO", "PARAM1": 0.1833333333, "PARAM2": 0.22, **_NONLOCAL},
        True,
    ),
    "optB86b-vdW": _Functional(
        "GGA",
        "optB86b exchange with vdW-DF nonlocal",
        {"GGA": "MK", "PARAM1": 0.1234, "PARAM2": 1.0, **_NONLOCAL},
        True,
    ),
    "vdW-DF2": _Functional(
        "GGA", "rPW86 exchange with vdW-DF2 nonlocal", {"GGA": "ML", "Zab_vdW": -1.8867, **_NONLOCAL}, True
    ),
    "rev-vdW-DF2": _Functional(
        "GGA",
        "B86R exchange with vdW-DF2 nonlocal (rev-vdW-DF2)",
        {"GGA": "MK", "PARAM1": 0.1234, "PARAM2": 0.711357, "Zab_vdW": -1.8867, **_NONLOCAL},
        True,
    ),
}

#: hybrids with a name of their own → (semilocal base, AEXX, HFSCREEN in 1/Å)
_NAMED_HYBRIDS: dict[str, tuple[str, float, float]] = {
    "HSE06": ("PBE", 0.25, 0.2),
    "HSE03": ("PBE", 0.25, 0.3),
    "PBE0": ("PBE", 0.25, 0.0),
    "HSEsol": ("PBEsol", 0.25, 0.2),
    "PBEsol0": ("PBEsol", 0.25, 0.0),
    "SCAN0": ("SCAN", 0.25, 0.0),
    "r2SCAN0": ("r2SCAN", 0.25, 0.0),
}

#: stem of tuned hybrids, e.g. ``HSE(AEXX=0.345)`` → (semilocal base, default AEXX, default HFSCREEN; None: global)
_TUNED_HYBRIDS: dict[str, tuple[str, float, float | None]] = {
    "HSE": ("PBE", 0.25, 0.2),
    "HSEsol": ("PBEsol", 0.25, 0.2),
    "PBE0": ("PBE", 0.25, None),
    "PBEsol0": ("PBEsol", 0.25, None),
    "SCAN0": ("SCAN", 0.25, None),
    "r2SCAN0": ("r2SCAN", 0.25, None),
}
_TUNED_RE = re.compile(r"^(" + "|".join(sorted(_TUNED_HYBRIDS, key=len, reverse=True)) + r")\(([^()]*)\)$")

#: B3LYP as VASP sets it (GGA = B3, VWN3 correlation); emmet's parameter set
_B3LYP = _Functional(
    "hybrid",
    "B3LYP hybrid (20% exact exchange, VWN3 LDA correlation)",
    {"GGA": "B3", "LHFCALC": True, "AEXX": 0.2, "AGGAX": 0.72, "AGGAC": 0.81, "ALDAC": 0.19},
    exact_exchange=0.2,
    screening=0.0,
)


class _Dispersion(NamedTuple):
    description: str
    parameters: dict[str, Any]


#: dispersion corrections (VASP wiki, IVDW; rVV10 is LUSE_VDW with a meta-GGA)
_DISPERSIONS: dict[str, _Dispersion] = {
    "D2": _Dispersion("Grimme D2", {"IVDW": 1}),
    "D3": _Dispersion("Grimme D3 (zero damping)", {"IVDW": 11}),
    "D3(BJ)": _Dispersion("Grimme D3 (Becke-Johnson damping)", {"IVDW": 12}),
    "D4": _Dispersion("Grimme D4", {"IVDW": 13}),
    "TS": _Dispersion("Tkatchenko-Scheffler", {"IVDW": 2}),
    "TS(HI)": _Dispersion("Tkatchenko-Scheffler with iterative Hirshfeld partitioning", {"IVDW": 21}),
    "MBD": _Dispersion("many-body dispersion (MBD@rsSCS)", {"IVDW": 202}),
    "MBD(FI)": _Dispersion("many-body dispersion with fractionally ionic polarizabilities (MBD@rSC/FI)", {"IVDW": 263}),
    "dDsC": _Dispersion("dDsC density-dependent dispersion", {"IVDW": 4}),
    "ulg": _Dispersion("DFT-ulg dispersion", {"IVDW": 3}),
    "rVV10": _Dispersion("rVV10 nonlocal correlation (b = BPARAM)", {"LUSE_VDW": True}),
}

#: dispersion suffixes of fidelity names
DISPERSIONS: tuple[str, ...] = tuple(_DISPERSIONS)

#: LDA, GGA and meta-GGA functionals, each selected by one GGA or METAGGA tag (its ``parameters``)
SEMILOCAL_FUNCTIONALS: tuple[str, ...] = tuple(_SEMILOCAL)

#: the vdW-DF family: GGA exchange with nonlocal correlation (no dispersion suffix on top)
VDW_DF_FUNCTIONALS: tuple[str, ...] = tuple(_VDW_DF)

#: hybrids with a name of their own; tuned ones (``HSE(AEXX=0.345)``) come from :func:`hybrid_functional`
NAMED_HYBRIDS: tuple[str, ...] = (*_NAMED_HYBRIDS, "B3LYP")

#: functionals with a fixed name
FUNCTIONALS: tuple[str, ...] = (*SEMILOCAL_FUNCTIONALS, *VDW_DF_FUNCTIONALS, *NAMED_HYBRIDS)

#: hybrid parameters are compared and named at this precision (fractions, 1/Å): finer than any published
#: tuning, coarser than the 8 decimals of vasprun.xml
HYBRID_DECIMALS = 4


def _quantize(value: float) -> float:
    return round(float(value), HYBRID_DECIMALS) + 0.0  # + 0.0: no "-0.0"


def _number(value: float) -> str:
    """Canonical text of a hybrid parameter: the shortest repr of the quantized value (0.345, 0.2, 1.0)."""
    return repr(_quantize(value))


def hybrid_functional(base: str, exact_exchange: float, screening: float = 0.0) -> str | None:
    """The one name of a hybrid of ``base`` with AEXX = ``exact_exchange`` and HFSCREEN = ``screening`` (1/Å).

    ``("PBE", 0.25, 0.2)`` → ``HSE06``; ``("PBE", 0.345, 0.2)`` → ``HSE(AEXX=0.345)``;
    ``("PBE", 0.25, 0.207)`` → ``HSE(HFSCREEN=0.207)``; ``("PBEsol", 0.25, 0.2)`` → ``HSEsol``;
    ``("PBE", 0.3, 0)`` → ``PBE0(AEXX=0.3)``. Any screening > 0 is an HSE-type hybrid. None when
    the hybrid has no name here (a screened meta-GGA hybrid, a hybrid of RPBE, AEXX outside (0, 1]).
    """
    a, w = _quantize(exact_exchange), _quantize(screening)
    if not (0.0 < a <= 1.0) or w < 0.0:
        return None
    for name, (named_base, named_a, named_w) in _NAMED_HYBRIDS.items():
        if (named_base, named_a, named_w) == (base, a, w):
            return name
    stem = next(
        (s for s, (b, _, dw) in _TUNED_HYBRIDS.items() if b == base and (dw is None) == (w == 0.0)),
        None,
    )
    if stem is None:
        return None
    _, default_a, default_w = _TUNED_HYBRIDS[stem]
    args = [f"AEXX={_number(a)}"] if a != default_a else []
    if w != 0.0 and w != default_w:
        args.append(f"HFSCREEN={_number(w)}")
    return f"{stem}({','.join(args)})"


def _tuned_arguments(stem: str, text: str) -> tuple[float, float] | None:
    """``AEXX=0.3,HFSCREEN=0.15`` of a tuned hybrid → (AEXX, HFSCREEN) with the stem's defaults; None if malformed."""
    _, a, w = _TUNED_HYBRIDS[stem]
    allowed = {"AEXX"} | ({"HFSCREEN"} if w is not None else set())
    seen: set[str] = set()
    for item in text.split(","):
        key, equals, value = item.partition("=")
        key = key.strip().upper()
        if not equals or key not in allowed or key in seen:
            return None
        seen.add(key)
        try:
            number = float(value)
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        if key == "AEXX":
            a = number
        else:
            w = number
    return a, (w or 0.0)


def _hybrid_entry(base: str, a: float, w: float, name: str) -> _Functional:
    a, w = _quantize(a), _quantize(w)
    kind = "screened (HSE-type)" if w else "global"
    range_text = f"screening {_number(w)} 1/Å" if w else "unscreened"
    params = {**_SEMILOCAL[base].parameters, "LHFCALC": True, "AEXX": a, "HFSCREEN": w}
    description = f"{name}: {kind} hybrid of {base}, {a * 100:g}% exact exchange, {range_text}"
    return _Functional("hybrid", description, params, exact_exchange=a, screening=w)


@functools.lru_cache(maxsize=4096)
def _functional_entry(name: str) -> _Functional | None:
    """The functional of canonical name ``name`` (None for anything else, e.g. ``HSE(AEXX=0.25)``)."""
    if name in _SEMILOCAL:
        return _SEMILOCAL[name]
    if name in _VDW_DF:
        return _VDW_DF[name]
    if name == "B3LYP":
        return _B3LYP
    if name in _NAMED_HYBRIDS:
        base, a, w = _NAMED_HYBRIDS[name]
        return _hybrid_entry(base, a, w, name)
    match = _TUNED_RE.match(name)
    if match is None:
        return None
    values = _tuned_arguments(match.group(1), match.group(2))
    if values is None:
        return None
    base = _TUNED_HYBRIDS[match.group(1)][0]
    if hybrid_functional(base, *values) != name:
        return None
    return _hybrid_entry(base, *values, name)


def canonical_hybrid(text: str) -> str | None:
    """A tuned-hybrid name in any spelling (``hse(aexx=0.3450)``, ``HSE(AEXX=0.25)``) → its one name (``HSE06``)."""
    match = re.match(r"^\s*([A-Za-z0-9]+)\s*\((.*)\)\s*$", text)
    if match is None:
        return None
    stem = next((s for s in _TUNED_HYBRIDS if s.lower() == match.group(1).lower()), None)
    if stem is None:
        return None
    values = _tuned_arguments(stem, match.group(2).replace(" ", "")) if match.group(2).strip() else None
    return None if values is None else hybrid_functional(_TUNED_HYBRIDS[stem][0], *values)


def compose_fidelity(functional: str, *, hubbard: bool, dispersion: str | None) -> str:
    """The fidelity name of ``functional`` ± U ± ``dispersion`` (a :data:`DISPERSIONS` name).

    ``("PBE", hubbard=True, dispersion=None)`` → ``GGA+U``; ``("PBE", False, "D3")`` → ``PBE-D3``;
    ``("HSE06", True, "D3(BJ)")`` → ``HSE06+U-D3(BJ)``. ``"GGA"`` is accepted for PBE.
    Raises ValueError for an unknown functional or dispersion, or a dispersion on a vdW-DF functional.
    """
    if functional == "GGA":
        functional = "PBE"
    entry = _functional_entry(functional)
    if entry is None:
        raise ValueError(f"unknown functional {functional!r}")
    if dispersion is not None:
        if dispersion not in _DISPERSIONS:
            raise ValueError(f"unknown dispersion correction {dispersion!r}; known: {', '.join(DISPERSIONS)}")
        if entry.nonlocal_vdw:
            raise ValueError(f"{functional} has nonlocal vdW correlation already: no {dispersion} on top")
    stem = "GGA" if functional == "PBE" and dispersion is None else functional
    return stem + ("+U" if hubbard else "") + (f"-{dispersion}" if dispersion else "")


def _split_fidelity(name: str) -> tuple[str, bool, str | None]:
    rest, dispersion = name, None
    for candidate in sorted(DISPERSIONS, key=len, reverse=True):
        if rest.endswith("-" + candidate):
            rest, dispersion = rest[: -len(candidate) - 1], candidate
            break
    hubbard = rest.endswith("+U")
    rest = rest[:-2] if hubbard else rest
    return ("PBE" if rest == "GGA" else rest), hubbard, dispersion


@functools.lru_cache(maxsize=4096)
def _spec(name: str) -> FidelitySpec | None:
    functional, hubbard, dispersion = _split_fidelity(name)
    try:
        if compose_fidelity(functional, hubbard=hubbard, dispersion=dispersion) != name:
            return None  # e.g. "PBE", "GGA-D3", "HSE(AEXX=0.25)": not the one name
    except ValueError:
        return None
    entry = _functional_entry(functional)
    assert entry is not None  # compose_fidelity accepted it
    parameters = dict(entry.parameters)
    description = entry.description
    if hubbard:
        parameters["LDAU"] = True
        description += " + Hubbard U"
    if dispersion is not None:
        parameters.update(_DISPERSIONS[dispersion].parameters)
        description += " + " + _DISPERSIONS[dispersion].description
    return FidelitySpec(
        name=name,
        family=entry.family,
        hubbard=hubbard,
        dispersion=functional if entry.nonlocal_vdw else dispersion,
        description=_SEEDED.get(name, description),
        functional=functional,
        exact_exchange=entry.exact_exchange,
        screening=entry.screening,
        parameters=parameters,
    )


def fidelity_spec(name: str) -> FidelitySpec | None:
    """The parts of fidelity ``name`` (``HSE(AEXX=0.345)+U-D3``), or None when it is not a canonical fidelity name.

    Pure: no database, no emmet. The spec's ``parameters`` are a fresh dict.
    """
    spec = _spec(name) if isinstance(name, str) else None
    return None if spec is None else spec._replace(parameters=dict(spec.parameters or {}))


def is_fidelity(name: object) -> bool:
    """Whether ``name`` is a canonical fidelity name (seeded or composed)."""
    return isinstance(name, str) and _spec(name) is not None


#: the fidelities seeded by the migrations (revision 0001), with their original descriptions
_SEEDED: dict[str, str] = {
    "GGA": "PBE generalised-gradient approximation",
    "GGA+U": "PBE with Hubbard U (Dudarev)",
    "PBEsol": "PBEsol GGA",
    "PBEsol+U": "PBEsol with Hubbard U",
    "SCAN": "SCAN meta-GGA",
    "SCAN+U": "SCAN with Hubbard U",
    "r2SCAN": "r2SCAN meta-GGA",
    "r2SCAN+U": "r2SCAN with Hubbard U",
    "HSE06": "HSE06 screened hybrid (25% exact exchange, 0.2 1/Å)",
    "HSE06+U": "HSE06 with Hubbard U",
    "PBE0": "PBE0 hybrid",
    "PBE-D3": "PBE with Grimme D3 (zero damping)",
    "PBE-D3(BJ)": "PBE with Grimme D3, Becke-Johnson damping",
    "PBE+U-D3": "PBE+U with Grimme D3",
    "PBE+U-D3(BJ)": "PBE+U with Grimme D3(BJ)",
    "optB88-vdW": "optB88 exchange with vdW-DF nonlocal",
    "optB86b-vdW": "optB86b exchange with vdW-DF nonlocal",
    "vdW-DF2": "rPW86 exchange with vdW-DF2 nonlocal",
    "SCAN-rVV10": "SCAN with rVV10 nonlocal",
    "r2SCAN-rVV10": "r2SCAN with rVV10 nonlocal",
    "r2SCAN-D4": "r2SCAN with Grimme D4",
    "r2SCAN+U-rVV10": "r2SCAN+U with rVV10 nonlocal",
}

#: the rows seeded by the migrations; any other name that :func:`is_fidelity` accepts is inserted on first use
FIDELITIES: tuple[FidelitySpec, ...] = tuple(_spec(name) for name in _SEEDED)  # type: ignore[misc]

FIDELITY_NAMES: tuple[str, ...] = tuple(f.name for f in FIDELITIES)

#: ``fidelities.family``
FIDELITY_FAMILIES: tuple[str, ...] = ("LDA", "GGA", "meta-GGA", "hybrid")

#: ``tasks.task_type``
TASK_TYPES: tuple[str, ...] = ("relax", "static")

#: ``tasks.energy_quantity`` / ``reference_entries.energy_quantity``: which VASP energy a stored energy is.
#: ``e_fr_energy`` is the free energy (TOTEN), the quantity consistent with the forces; ``e_0_energy`` is
#: the energy extrapolated to σ → 0, which pymatgen's ``Vasprun.final_energy`` and so Materials Project
#: entries and task ``output.energy`` use; ``e_wo_entrp`` the energy without the entropy term.
ENERGY_QUANTITIES: tuple[str, ...] = ("e_fr_energy", "e_0_energy", "e_wo_entrp", "unknown")

#: ``tasks.material_rule``: how a task got its material (docs/ingestion.md, "Materials from tasks")
MATERIAL_RULES: tuple[str, ...] = (
    "source",  # the record itself names the material
    "material-map",  # --material-map FILE
    "mp-materials",  # a Materials Project materials document lists the task in task_ids
    "structure-match-stored",  # emmet's grouping matched a material already in the database
    "structure-match-new",  # a new material formed by emmet's grouping of the input's tasks
)

#: ``dataset_versions.energy_label``: the training energy of a frozen dataset
ENERGY_LABELS: tuple[str, ...] = ("uncorrected", "mp2020")

#: ``status`` of ingest, curation and benchmark runs
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed")

#: ``training_runs.status``: a run stopped by a signal is ``interrupted`` and can be resumed
TRAINING_STATUSES: tuple[str, ...] = (*RUN_STATUSES, "interrupted")

#: ``raw_documents.compression`` (the loader stores gzip)
COMPRESSIONS: tuple[str, ...] = ("gzip", "none")

#: ``models.kind``: a model shipped with its family's package (by name), weights a training run wrote, or any
#: ASE calculator built by a ``module:callable`` factory with options
MODEL_KINDS: tuple[str, ...] = ("package", "trained", "calculator")

#: ``models.role``: a shipped model crossfid fine-tunes (``base``), a training run's ``best`` and ``last``
#: weights, and a ``peer``: another family's model or a calculator, benchmarked for comparison, never fine-tuned
MODEL_ROLES: tuple[str, ...] = ("base", "best", "last", "peer")


class TrainingMethod(NamedTuple):
    """A transfer method of the study: where the GNN weights start and which AtomRef the model carries.

    ``label`` is the study's number (``m1``..``m4``) used where a table must be narrow.
    """

    name: str
    label: str
    from_scratch: bool  # random GNN weights in the base model's architecture, instead of the base model's
    target_atomref: bool  # the AtomRef is replaced by the target-fidelity fit
    atomref_trainable: bool  # the AtomRef is trained with the GNN
    description: str


#: ``training_runs.method``; :mod:`crossfid.training.methods` sets models up from these flags
TRAINING_METHODS: tuple[TrainingMethod, ...] = (
    TrainingMethod("scratch", "m1", True, True, False, "random GNN weights, target AtomRef frozen"),
    TrainingMethod("tl-trainable-atomref", "m2", False, False, True, "base model, its AtomRef trainable"),
    TrainingMethod("tl-frozen-atomref", "m3", False, False, False, "base model, its AtomRef frozen"),
    TrainingMethod("tl-refit-atomref", "m4", False, True, False, "base model, target AtomRef frozen"),
)

METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in TRAINING_METHODS)

#: the ``method`` of a shipped (not trained) model on the leaderboard
PRETRAINED = "pretrained"

#: short method labels of narrow tables: ``shipped`` for a model crossfid did not train (a base model or a
#: peer), the study's ``m1``..``m4`` otherwise
METHOD_LABELS: dict[str, str] = {PRETRAINED: "shipped", **{m.name: m.label for m in TRAINING_METHODS}}
