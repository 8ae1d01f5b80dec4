"""Density benchmark: predicted vs experimental densities of well-known crystals.

The study's protocol (``SCIENCE.md``, "Reported results"): every lattice vector of
an experimental structure strained by −10%, relaxed to 0.03 eV/Å, and the relaxed
density compared with the experimental one; a ratio experimental/predicted above
1 means the model is less dense than experiment (the GGA-pretrained model
underestimates densities most).

* ``data/crystals.json`` — the bundled table: well-known crystals with
  experimental room-temperature lattice (Å) and Wyckoff (fractional) parameters
  and a reference each; :func:`load_crystals` reads and validates it;
* :func:`build_crystal` — the pymatgen Structure of an entry (≤ 12 atoms;
  primitive cells for the cubic close-packed prototypes), built with the
  prototype builders of :mod:`crossfid.structures.prototypes`;
* :func:`experimental_density` (g/cm³), :func:`density_ratio_stats`;
* :func:`density_benchmark` — strain, relax (:func:`crossfid.benchmarks.relax.relax_structure`) and compare.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossfid.benchmarks.relax import relax_structure, strained
from crossfid.structures.prototypes import Prototype, build_prototype

if TYPE_CHECKING:
    from crossfid.potentials.base import Potential

#: the bundled table
CRYSTALS_PATH = Path(__file__).with_name("data") / "crystals.json"

#: prototype → (builder of crossfid.structures.prototypes, lattice parameters, Wyckoff parameters, reduce to primitive)
PROTOTYPES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], bool]] = {
    "fcc": ("fcc", ("a",), (), True),
    "bcc": ("bcc", ("a",), (), True),
    "diamond": ("zincblende", ("a",), (), True),
    "rocksalt": ("rocksalt", ("a",), (), True),
    "zincblende": ("zincblende", ("a",), (), True),
    "fluorite": ("fluorite", ("a",), (), True),
    "antifluorite": ("antifluorite", ("a",), (), True),
    "wurtzite": ("wurtzite", ("a", "c"), ("u",), False),
    "perovskite": ("perovskite", ("a",), (), False),
    "ReO3": ("ReO3", ("a",), (), False),
    "rutile": ("rutile", ("a", "c"), ("x",), False),
    "corundum": ("corundum", ("a", "c"), ("z", "x"), False),
}

_N_SPECIES = {"fcc": 1, "bcc": 1, "diamond": 1, "perovskite": 3}

MAX_ATOMS = 12


def _plain(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------------------- the table


def _proto(entry: Mapping[str, Any]) -> Prototype:
    """The prototype of a table entry (ValueError when malformed)."""
    for key in ("id", "formula", "prototype", "species", "lattice", "reference"):
        if key not in entry:
            raise ValueError(f"crystal entry {entry.get('id', '?')!r} has no {key!r}")
    name = str(entry["prototype"])
    if name not in PROTOTYPES:
        raise ValueError(f"crystal {entry['id']!r}: unknown prototype {name!r} (known: {', '.join(PROTOTYPES)})")
    kind, lattice_keys, wyckoff_keys, _ = PROTOTYPES[name]
    species = [str(s) for s in entry["species"]]
    if len(species) != _N_SPECIES.get(name, 2):
        raise ValueError(f"crystal {entry['id']!r}: a {name} entry lists {_N_SPECIES.get(name, 2)} species")
    if name == "diamond":
        species = species * 2
    lattice = entry["lattice"]
    wyckoff = entry.get("wyckoff") or {}
    try:
        params = [float(lattice[k]) for k in lattice_keys] + [float(wyckoff[k]) for k in wyckoff_keys]
    except KeyError as exc:
        raise ValueError(f"crystal {entry['id']!r}: missing {name} parameter {exc.args[0]!r}") from None
    if not all(math.isfinite(p) for p in params) or any(float(lattice[k]) <= 0 for k in lattice_keys):
        raise ValueError(f"crystal {entry['id']!r}: parameters must be finite, lattice lengths positive")
    return Prototype(str(entry["formula"]), kind, tuple(species), tuple(params))


def build_crystal(entry: Mapping[str, Any]):
    """The pymatgen ``Structure`` of a table entry, ≤ 12 atoms (sorted sites).

    fcc, bcc, diamond, rocksalt, zincblende, (anti)fluorite: primitive cell
    (``get_primitive_structure()``: 1, 1, 2, 2, 2 and 3 atoms); the others as
    built by :func:`crossfid.structures.prototypes.build_prototype` (corundum: 10-atom
    rhombohedral cell). Raises ValueError when the entry is malformed or the
    structure's composition does not match ``formula``.
    """
    from pymatgen.core import Composition

    proto = _proto(entry)
    structure = build_prototype(proto)
    if PROTOTYPES[str(entry["prototype"])][3]:
        structure = structure.get_primitive_structure().get_sorted_structure()
    if structure.composition.reduced_composition != Composition(str(entry["formula"])).reduced_composition:
        raise ValueError(
            f"crystal {entry['id']!r}: built {structure.composition.reduced_formula}, expected {entry['formula']}"
        )
    if len(structure) > MAX_ATOMS:
        raise ValueError(f"crystal {entry['id']!r} has {len(structure)} atoms, more than {MAX_ATOMS}")
    return structure


def experimental_density(entry: Mapping[str, Any]) -> float:
    """Density (g/cm³) of the experimental structure of a table entry (``Structure.density``)."""
    return float(build_crystal(entry).density)


@cache
def _load(path: str) -> tuple[dict[str, Any], ...]:
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    crystals = document.get("crystals") if isinstance(document, dict) else None
    if not isinstance(crystals, list):
        raise ValueError(f"{path}: expected an object with a 'crystals' list")
    seen: set[str] = set()
    for entry in crystals:
        _proto(entry)
        if not str(entry["reference"]).strip():
            raise ValueError(f"crystal {entry['id']!r} has an empty reference")
        if entry["id"] in seen:
            raise ValueError(f"duplicate crystal id {entry['id']!r}")
        seen.add(entry["id"])
    return tuple(crystals)


def load_crystals(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The crystal table (default: the bundled ``data/crystals.json``) as a list of entry dicts (fresh copies).

    Each entry: ``id``, ``formula``, ``prototype`` (a key of :data:`PROTOTYPES`),
    ``species`` (in the prototype's site order), ``lattice`` (Å), ``wyckoff``
    (fractional, when the prototype has free parameters), ``reference``, optional
    ``note``. Raises ValueError when an entry is malformed, an id repeats or a reference is empty.
    """
    crystals = _load(str(Path(path) if path is not None else CRYSTALS_PATH))
    return json.loads(json.dumps(crystals))


def crystal(crystal_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """One entry of the table by id (KeyError if absent)."""
    for entry in load_crystals(path):
        if entry["id"] == crystal_id:
            return entry
    raise KeyError(crystal_id)


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class DensityStats:
    """Experimental/predicted density ratios and errors over ``n`` structures (densities g/cm³).

    ``ratios``: experimental/predicted per structure (> 1: the model is less dense
    than experiment); std is ddof=0; ``mae``: mean |predicted − experimental|
    (g/cm³); ``fraction_less_dense``: share of ratios > 1; ``n_missing``: pairs
    left out because a value was non-finite (e.g. a failed relaxation).
    """

    n: int
    mean: float
    median: float
    std: float
    min: float
    max: float
    p05: float
    p25: float
    p75: float
    p95: float
    mae: float
    fraction_less_dense: float
    n_missing: int
    ratios: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            f: _plain(getattr(self, f)) if isinstance(getattr(self, f), float) else getattr(self, f)
            for f in self.__dataclass_fields__
            if f != "ratios"
        }
        out["ratios"] = [_plain(r) for r in self.ratios]
        out["units"] = {"mae": "g/cm³", "ratios": "experimental/predicted"}
        return out


def density_ratio_stats(experimental: Sequence[float], predicted: Sequence[float]) -> DensityStats:
    """Statistics of ``experimental / predicted`` densities (g/cm³), pair by pair.

    Pairs with a non-finite value on either side are left out (``n_missing``);
    the remaining values must be positive, and at least one pair is needed (ValueError otherwise).
    """
    exp = np.asarray(experimental, dtype=float).ravel()
    pred = np.asarray(predicted, dtype=float).ravel()
    if exp.shape != pred.shape:
        raise ValueError(f"experimental and predicted differ in length: {exp.size} vs {pred.size}")
    finite = np.isfinite(exp) & np.isfinite(pred)
    exp, pred = exp[finite], pred[finite]
    if exp.size == 0:
        raise ValueError("density statistics need at least one pair of finite densities")
    if (exp <= 0).any() or (pred <= 0).any():
        raise ValueError("densities must be positive")
    ratio = exp / pred
    p05, p25, p75, p95 = np.percentile(ratio, [5, 25, 75, 95])
    return DensityStats(
        n=int(ratio.size),
        mean=float(ratio.mean()),
        median=float(np.median(ratio)),
        std=float(ratio.std()),
        min=float(ratio.min()),
        max=float(ratio.max()),
        p05=float(p05),
        p25=float(p25),
        p75=float(p75),
        p95=float(p95),
        mae=float(np.abs(pred - exp).mean()),
        fraction_less_dense=float((ratio > 1).mean()),
        n_missing=int((~finite).sum()),
        ratios=tuple(float(r) for r in ratio),
    )


# ---------------------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class DensityRecord:
    """One crystal of :func:`density_benchmark`: densities g/cm³ (predicted None when the relaxation failed)."""

    id: str
    formula: str
    experimental: float
    predicted: float | None
    ratio: float | None
    ok: bool
    converged: bool
    n_steps: int
    failure: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            f: _plain(v) if isinstance(v, float) else v
            for f, v in ((f, getattr(self, f)) for f in self.__dataclass_fields__)
        }


@dataclass(frozen=True)
class DensityBenchmark:
    """Per-crystal records and the ratio statistics over the successful relaxations (``stats`` None if none)."""

    records: tuple[DensityRecord, ...]
    stats: DensityStats | None
    strain: float
    fmax: float

    @property
    def n_failed(self) -> int:
        return sum(not r.ok for r in self.records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": [r.to_dict() for r in self.records],
            "stats": None if self.stats is None else self.stats.to_dict(),
            "strain": self.strain,
            "fmax": self.fmax,
            "n_failed": self.n_failed,
        }


def density_benchmark(
    potential: Potential,
    entries: Sequence[Mapping[str, Any]] | None = None,
    *,
    strain: float = -0.10,
    fmax: float = 0.03,
    steps: int = 500,
) -> DensityBenchmark:
    """Strain every lattice vector of each crystal by ``strain``, relax it with ``potential`` and compare densities.

    ``entries``: table entries (default: the whole bundled table, ~3-4 s per
    crystal on 2 CPU threads). Relaxations use :func:`relax_structure`
    (FIRE + FrechetCellFilter, ``fmax`` eV/Å); failed ones are kept as records
    with ``predicted=None`` and left out of the statistics; unconverged ones are kept.
    """
    from pymatgen.core import Structure

    records: list[DensityRecord] = []
    for entry in load_crystals() if entries is None else entries:
        start = build_crystal(entry)
        rho_exp = float(start.density)
        result = relax_structure(potential, strained(start, strain), fmax=fmax, steps=steps)
        rho = float(Structure.from_dict(result.structure).density) if result.ok and result.structure else None
        records.append(
            DensityRecord(
                id=str(entry["id"]),
                formula=str(entry["formula"]),
                experimental=rho_exp,
                predicted=rho,
                ratio=None if rho is None else rho_exp / rho,
                ok=result.ok,
                converged=result.converged,
                n_steps=result.n_steps,
                failure=result.failure,
            )
        )
    good = [r for r in records if r.predicted is not None]
    stats = density_ratio_stats([r.experimental for r in good], [r.predicted for r in good]) if good else None
    return DensityBenchmark(records=tuple(records), stats=stats, strain=float(strain), fmax=float(fmax))
