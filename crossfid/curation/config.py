"""Thresholds of the MPtrj-style curation rules (docs: ``CURATION_RULES.md``).

A :class:`CurationConfig` is stored with every curation run: :meth:`CurationConfig.to_dict`
is canonical (sorted keys, JSON-safe, stable across Python versions) and
:meth:`CurationConfig.config_hash` is the SHA-256 of its canonical JSON, so two runs
with the same hash applied exactly the same rules with exactly the same numbers.

Comparison conventions (how each threshold is applied; see :mod:`crossfid.curation.rules`):

* rule 2, final-frame agreement: kept when ``|E_last - E_ref| < final_frame_threshold`` (strict)
* rule 5, energy window: rejected when ``ΔE < energy_window_lower`` or ``ΔE > energy_window_upper``
  (so ΔE exactly at a bound is kept)
* rule 6, reference frame: ``|E_frame - E_ref| <= reference_frame_tolerance``
* rule 7, energy pre-check: a frame is energy-unique when ``|E - E_a| > energy_threshold``
  for every accepted frame ``a``
* safety rule ``min_distance`` (not an MPtrj rule): rejected when the shortest distance
  between two atoms, periodic images included, is ``< min_interatomic_distance`` (strict;
  Å; ``None`` turns the rule off)
* dedupe tiers: the tier used for a candidate is the last tier whose
  ``min_accepted_exclusive`` is *strictly below* the number of frames accepted so far
  (the reference frame included); with 0 accepted frames, the first tier.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from crossfid.errors import InputError
from crossfid.hashing import sha256_text

#: bump when the meaning of a rule changes (part of :meth:`CurationConfig.to_dict` and so of the hash).
#: 2: the ``min_distance`` safety rule (``min_interatomic_distance``); a version-1 configuration had no such
#: rule, so :meth:`CurationConfig.from_dict` reads it with the rule off.
RULES_VERSION = 2
#: rules versions :meth:`CurationConfig.from_dict` reads
READABLE_RULES_VERSIONS = (1, 2)

#: default of ``min_interatomic_distance`` (Å): well below any bond length (H2: 0.74 Å) and far above numerical noise
DEFAULT_MIN_INTERATOMIC_DISTANCE = 0.5


class DedupeTier(NamedTuple):
    """StructureMatcher / energy tolerances of rule 7 once more than ``min_accepted_exclusive`` frames are accepted."""

    min_accepted_exclusive: int
    ltol: float
    stol: float
    angle_tol: float  # degrees
    energy_threshold: float  # eV/atom


#: MPtrj's table: "up to 10" accepted frames → tier 0, "more than 10" → tier 1, "more than 30" → 2, "more than 50" → 3
DEFAULT_DEDUPE_TIERS: tuple[DedupeTier, ...] = (
    DedupeTier(0, 0.002, 0.001, 0.05, 0.002),
    DedupeTier(10, 0.01, 0.01, 0.1, 0.005),
    DedupeTier(30, 0.1, 0.1, 1.0, 0.01),
    DedupeTier(50, 0.3, 0.2, 3.0, 0.03),
)


def _positive(value: float, name: str) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive finite number, got {value!r}")


_FLOAT_FIELDS = (
    "final_frame_threshold",
    "energy_window_lower",
    "energy_window_upper",
    "reference_frame_tolerance",
    "hubbard_u_tolerance",
)


@dataclass(frozen=True)
class CurationConfig:
    """Every number the curation rules use. Defaults are MPtrj's.

    Energies are eV/atom. ``hubbard_u_tolerance`` (eV) is how close two U values must
    be to count as "the same U" (JSON round trips of 5.3 vs 5.300000001).
    ``min_interatomic_distance`` (Å) is the threshold of the extra safety rule
    ``min_distance`` (overlapping atoms; not one of MPtrj's rules), ``None`` to turn it off.
    The StructureMatcher options are pymatgen's defaults except ``scale=False``, as in
    MPtrj; ``primitive_cell=True`` reduces high-symmetry supercells before matching
    (CHGNET_NOTES pitfall 8) and is kept on purpose to reproduce MPtrj's decisions.
    """

    final_frame_threshold: float = 0.02
    energy_window_lower: float = -0.01
    energy_window_upper: float = 1.0
    reference_frame_tolerance: float = 1e-5
    require_stress: bool = True
    hubbard_consistency: bool = True
    hubbard_u_tolerance: float = 1e-6
    dedupe_tiers: tuple[DedupeTier, ...] = field(default=DEFAULT_DEDUPE_TIERS)
    primitive_cell: bool = True
    scale: bool = False
    attempt_supercell: bool = False
    allow_subset: bool = False
    min_interatomic_distance: float | None = DEFAULT_MIN_INTERATOMIC_DISTANCE

    def __post_init__(self) -> None:
        _positive(self.final_frame_threshold, "final_frame_threshold")
        if self.min_interatomic_distance is not None:
            _positive(self.min_interatomic_distance, "min_interatomic_distance")
            object.__setattr__(self, "min_interatomic_distance", float(self.min_interatomic_distance))
        _positive(self.reference_frame_tolerance, "reference_frame_tolerance")
        _positive(self.hubbard_u_tolerance, "hubbard_u_tolerance")
        for name in ("energy_window_lower", "energy_window_upper"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        if not self.energy_window_lower < self.energy_window_upper:
            raise InputError("energy_window_lower must be below energy_window_upper")
        for name in (
            "require_stress",
            "hubbard_consistency",
            "primitive_cell",
            "scale",
            "attempt_supercell",
            "allow_subset",
        ):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be a bool")
        # 1 and 1.0 must give the same canonical JSON (and hash)
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.attempt_supercell and self.allow_subset:
            raise InputError("pymatgen's StructureMatcher cannot combine attempt_supercell and allow_subset")
        tiers = tuple(_tier_from(tier) for tier in self.dedupe_tiers)
        if not tiers:
            raise InputError("dedupe_tiers must not be empty")
        if tiers[0].min_accepted_exclusive != 0:
            raise InputError("the first dedupe tier must start at 0 accepted frames")
        for previous, tier in zip(tiers, tiers[1:], strict=False):
            if tier.min_accepted_exclusive <= previous.min_accepted_exclusive:
                raise InputError("dedupe tiers must be ordered by strictly increasing min_accepted_exclusive")
        for tier in tiers:
            count = tier.min_accepted_exclusive
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InputError(
                    f"min_accepted_exclusive must be a non-negative int, got {tier.min_accepted_exclusive!r}"
                )
            for name in ("ltol", "stol", "angle_tol", "energy_threshold"):
                _positive(getattr(tier, name), f"dedupe tier {name}")
        normalised = tuple(
            DedupeTier(
                int(t.min_accepted_exclusive),
                float(t.ltol),
                float(t.stol),
                float(t.angle_tol),
                float(t.energy_threshold),
            )
            for t in tiers
        )
        object.__setattr__(self, "dedupe_tiers", normalised)

    # ------------------------------------------------------------------ rule 7 helpers

    def tier_index(self, n_accepted: int) -> int:
        """Index of the dedupe tier used when ``n_accepted`` frames are accepted so far (see module doc)."""
        index = 0
        for i, tier in enumerate(self.dedupe_tiers):
            if n_accepted > tier.min_accepted_exclusive:
                index = i
        return index

    def tier(self, n_accepted: int) -> DedupeTier:
        return self.dedupe_tiers[self.tier_index(n_accepted)]

    def structure_matcher_options(self, tier: DedupeTier) -> dict[str, Any]:
        """Keyword arguments of ``pymatgen``'s ``StructureMatcher`` for one tier (everything explicit)."""
        return {
            "ltol": tier.ltol,
            "stol": tier.stol,
            "angle_tol": tier.angle_tol,
            "primitive_cell": self.primitive_cell,
            "scale": self.scale,
            "attempt_supercell": self.attempt_supercell,
            "allow_subset": self.allow_subset,
        }

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-safe form (sorted keys; tiers as dicts in table order)."""
        out: dict[str, Any] = {"rules_version": RULES_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dedupe_tiers":
                value = [dict(sorted(tier._asdict().items())) for tier in value]
            out[f.name] = value
        return dict(sorted(out.items()))

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def config_hash(self) -> str:
        """SHA-256 (hex) of :meth:`canonical_json`."""
        return sha256_text(self.canonical_json())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurationConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error.

        A configuration of rules version 1 (stored before the ``min_distance`` rule existed) is
        read with that rule off, which is what such a run applied.
        """
        data = dict(data)
        version = data.pop("rules_version", RULES_VERSION)
        if version not in READABLE_RULES_VERSIONS:
            raise InputError(f"curation config of rules version {version}, this crossfid implements {RULES_VERSION}")
        if version == 1:
            if "min_interatomic_distance" in data:
                raise InputError("min_interatomic_distance is not a setting of rules version 1")
            data["min_interatomic_distance"] = None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown curation config keys: {', '.join(unknown)}")
        if "dedupe_tiers" in data:
            data["dedupe_tiers"] = tuple(_tier_from(item) for item in data["dedupe_tiers"])
        return cls(**data)


def _tier_from(item: Mapping[str, Any] | Sequence[Any]) -> DedupeTier:
    if isinstance(item, Mapping):
        return DedupeTier(**item)
    return DedupeTier(*item)
