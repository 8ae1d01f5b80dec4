"""Train/validation/test splits, pure: ratios, the seeded assignment of whole groups, nested subsets, structure groups.

No database access here; :mod:`crossfid.curation.split_store` creates, stores and looks up splits with it.

Assignment (:func:`split_by_group`)
-----------------------------------
A split never cuts a *group*: all frames of a group land in one part. Groups are
ordered by ``sha256(f"{seed}\\x00{group_key}")`` (:func:`crossfid.hashing.seeded_order_key`;
ties, which need a hash collision, by the key itself), which depends only on the seed and
the key strings, never on database ids or input order. Parts are then filled **by frame
count**: walking the groups in that order, frames occupy consecutive positions ``[c, c + n)`` of
``[0, N)``; a group goes to the first part (train, val, test) whose cumulative ratio
bound exceeds the group's midpoint ``(c + n / 2) / N`` (parts with ratio 0 never get a
group). Each part therefore holds its ratio of the frames to within half a group at
each boundary. Exact rational arithmetic is used, so ``8:1:1`` and ``0.8:0.1:0.1`` are
the same split. ``balance="groups"`` counts groups instead of frames.

Structure groups (:func:`structure_groups`): connected components of structures that
match with pymatgen's ``StructureMatcher`` at its default tolerances, stated explicitly in
:data:`DEFAULT_MATCHER` (``ltol=0.2`` fractional length, ``stol=0.3`` site tolerance in units
of (V/n)^(1/3), ``angle_tol=5`` degrees, primitive cells, volumes scaled, no supercells,
species compared exactly). Only structures with the same reduced composition and the same
number of sites after Niggli + primitive reduction (a necessary condition for a match
without supercells) are compared.

Hashes
------
Split (``crossfid-split-v1``, :func:`split_content_hash`)::

    sha256( b"crossfid-split-v1\\n" + for part in (train, val, test):
            f"{part} {n}\\n" + b"".join(h + b"\\n" for h in sorted(frame content hashes of part)) )

Nested subsets: training frames are ordered by ``sha256(f"{seed}\\x00{content_hash}")``
(ties by the hash); the subset of size k is the first k frames, so every subset
contains the smaller ones. Subset hash: :func:`crossfid.hashing.subset_content_hash`
(``crossfid-subset-v1`` over the subset's sorted content hashes).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from crossfid.errors import InputError
from crossfid.hashing import SPLIT_HASH_DOMAIN, hash_of_labelled_hashes, seeded_order_key

__all__ = [
    "DEFAULT_MATCHER",
    "PARTS",
    "STRATEGIES",
    "MatcherSettings",
    "SplitError",
    "check_subset_sizes",
    "composition_key",
    "nested_subsets",
    "normalize_ratios",
    "parse_ratios",
    "ratio_fractions",
    "ratio_text",
    "reduce_structure",
    "split_by_group",
    "split_content_hash",
    "structure_from_arrays",
    "structure_groups",
    "subset_order",
]

PARTS: tuple[str, str, str] = ("train", "val", "test")
STRATEGIES: tuple[str, str] = ("material", "structure-group")


class SplitError(InputError):
    """A split request that cannot be honoured; ``str(error)`` is a one-line reason."""


# --------------------------------------------------------------------------- ratios


def parse_ratios(value: str) -> tuple[Fraction, Fraction, Fraction]:
    """``"8:1:1"``, ``"0.8,0.1,0.1"`` or ``"80:10:10"`` → three exact fractions summing to 1."""
    parts = [p.strip() for p in re.split(r"[:,/]", value.strip())] if isinstance(value, str) else value
    return ratio_fractions(parts)


def _fraction(value: Any) -> Fraction:
    if isinstance(value, bool):
        raise SplitError(f"invalid ratio {value!r}")
    if isinstance(value, Fraction | int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SplitError(f"invalid ratio {value!r}")
        return Fraction(repr(value))  # the decimal the user wrote: 0.1 is 1/10, not its binary approximation
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise SplitError(f"invalid ratio {value!r}") from None
    raise SplitError(f"invalid ratio {value!r}")


def ratio_fractions(ratios: Any) -> tuple[Fraction, Fraction, Fraction]:
    """Three non-negative ratios (numbers or ``"8:1:1"``) → exact fractions summing to 1."""
    if isinstance(ratios, str):
        return parse_ratios(ratios)
    values = [_fraction(v) for v in ratios]
    if len(values) != 3:
        raise SplitError(f"expected three ratios (train:val:test), got {len(values)}")
    if any(v < 0 for v in values):
        raise SplitError("ratios must not be negative")
    total = sum(values)
    if total == 0:
        raise SplitError("ratios must not all be zero")
    return tuple(v / total for v in values)  # type: ignore[return-value]


def normalize_ratios(ratios: Any) -> tuple[float, float, float]:
    """Ratios as stored in ``splits.ratios``: fractions of 1 (``8:1:1`` → ``(0.8, 0.1, 0.1)``)."""
    return tuple(float(f) for f in ratio_fractions(ratios))  # type: ignore[return-value]


def ratio_text(ratios: Sequence[float]) -> str:
    """Stored ratios as text: ``(0.8, 0.1, 0.1)`` → ``"0.8:0.1:0.1"``."""
    return ":".join(f"{r:g}" for r in ratios)


# --------------------------------------------------------------------------- pure assignment


def split_by_group(
    groups: Mapping[Any, Sequence[Any]],
    ratios: Any = (8, 1, 1),
    seed: int = 0,
    *,
    balance: str = "frames",
) -> dict[str, list[Any]]:
    """Assign whole groups to train/val/test (see the module doc); return ``{part: [group keys]}``.

    ``groups``: group key → its frames (only their number is used with
    ``balance="frames"``). Keys are hashed as ``str(key)`` and must be distinct as
    strings. The result lists each part's groups in the seeded order and depends only
    on the keys, their sizes, the ratios and the seed.
    """
    fractions = ratio_fractions(ratios)
    if balance not in ("frames", "groups"):
        raise SplitError(f"balance must be 'frames' or 'groups', not {balance!r}")
    text_keys = {str(key): key for key in groups}
    if len(text_keys) != len(groups):
        raise SplitError("group keys must be distinct as strings")
    result: dict[str, list[Any]] = {part: [] for part in PARTS}
    if not groups:
        return result
    weights = {k: (len(groups[key]) if balance == "frames" else 1) for k, key in text_keys.items()}
    total = sum(weights.values())
    if total == 0:  # only empty groups: balance their number instead
        weights = dict.fromkeys(weights, 1)
        total = len(weights)
    bounds = (fractions[0], fractions[0] + fractions[1], Fraction(1))
    positive = [i for i in range(3) if fractions[i] > 0]
    cumulative = 0
    for k in sorted(text_keys, key=lambda k: (seeded_order_key(seed, k), k)):
        weight = weights[k]
        midpoint2 = 2 * cumulative + weight  # twice the midpoint, to stay in integers
        part = next((i for i in positive if midpoint2 < 2 * total * bounds[i]), positive[-1])
        result[PARTS[part]].append(text_keys[k])
        cumulative += weight
    return result


def subset_order(frame_hashes: Iterable[str], seed: int) -> list[str]:
    """Training frame hashes in the seeded order that nested subsets are prefixes of."""
    return sorted(frame_hashes, key=lambda h: (seeded_order_key(seed, h), h))


def check_subset_sizes(sizes: Iterable[int], n_train: float) -> list[int]:
    """Distinct subset sizes, sorted; each a positive integer at most ``n_train``, else :class:`SplitError`."""
    checked = set()
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size <= 0:
            raise SplitError(f"subset sizes must be positive integers, not {size!r}")
        checked.add(int(size))
    too_large = sorted(s for s in checked if s > n_train)
    if too_large:
        raise SplitError(
            f"subset size {', '.join(map(str, too_large))} is larger than the training part ({n_train} frames)"
        )
    return sorted(checked)


def nested_subsets(train_frame_hashes: Iterable[str], sizes: Iterable[int], seed: int = 0) -> dict[int, list[str]]:
    """Nested training subsets ``{size: [frame content hashes]}``: prefixes of :func:`subset_order`.

    Each subset contains every smaller one; sizes are exact. A size larger than the
    training part is a :class:`SplitError`.
    """
    hashes = list(train_frame_hashes)
    checked = check_subset_sizes(sizes, len(hashes))
    order = subset_order(hashes, seed)
    return {size: order[:size] for size in checked}


def split_content_hash(parts: Mapping[str, Iterable[str]]) -> str:
    """Content hash of a split from the frame content hashes of each part (recipe in the module doc)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown split parts {sorted(unknown)}")
    return hash_of_labelled_hashes(SPLIT_HASH_DOMAIN, ((part, parts.get(part, ())) for part in PARTS))


# --------------------------------------------------------------------------- structure matching


@dataclass(frozen=True)
class MatcherSettings:
    """``StructureMatcher`` tolerances: ``ltol`` fractional length, ``stol`` site (units of (V/n)^(1/3)),
    ``angle_tol`` degrees. Always primitive cells, scaled volumes, no supercells, exact species."""

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0

    def matcher(self):
        from pymatgen.analysis.structure_matcher import StructureMatcher

        return StructureMatcher(
            ltol=self.ltol,
            stol=self.stol,
            angle_tol=self.angle_tol,
            primitive_cell=True,
            scale=True,
            attempt_supercell=False,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ltol": self.ltol,
            "stol": self.stol,
            "angle_tol": self.angle_tol,
            "primitive_cell": True,
            "scale": True,
            "attempt_supercell": False,
            "comparator": "SpeciesComparator",
        }


#: pymatgen's defaults, written out
DEFAULT_MATCHER = MatcherSettings()


def structure_from_arrays(lattice: Sequence[float], atomic_numbers: Sequence[int], frac_coords: Sequence[float]):
    """pymatgen ``Structure`` from the database layout (lattice 9 floats row-major Å, fractional coordinates)."""
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice(np.reshape(np.asarray(lattice, dtype=float), (3, 3))),
        [int(z) for z in atomic_numbers],
        np.reshape(np.asarray(frac_coords, dtype=float), (-1, 3)),
    )


def composition_key(atomic_numbers: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Reduced composition as ``((Z, count), ...)``, e.g. Fe4O6 → ``((8, 3), (26, 2))``."""
    counts = Counter(int(z) for z in atomic_numbers)
    divisor = math.gcd(*counts.values()) if counts else 1
    return tuple(sorted((z, n // divisor) for z, n in counts.items()))


def reduce_structure(structure):
    """Niggli-reduced primitive cell, exactly as ``StructureMatcher`` reduces before matching."""
    return structure.get_reduced_structure(reduction_algo="niggli").get_primitive_structure()


def _bucket_key(reduced) -> tuple[str, int]:
    return reduced.composition.reduced_formula, len(reduced)


def structure_groups(structures: Mapping[str, Any], settings: MatcherSettings = DEFAULT_MATCHER) -> dict[str, str]:
    """Connected components of the "structures match" relation: ``{key: group key}``.

    The group key is the smallest key (code-point order) of the component. Only
    structures with the same reduced composition and number of reduced sites are
    compared; each structure is reduced once.
    """
    matcher = settings.matcher()
    reduced = {key: reduce_structure(structure) for key, structure in structures.items()}
    buckets: dict[tuple[str, int], list[str]] = defaultdict(list)
    for key in sorted(reduced):
        buckets[_bucket_key(reduced[key])].append(key)
    parent = {key: key for key in reduced}

    def find(key: str) -> str:
        root = key
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:
            parent[key], key = root, parent[key]
        return root

    for members in buckets.values():
        for i, key in enumerate(members):
            for other in members[:i]:
                a, b = find(other), find(key)
                if a == b:
                    continue
                if matcher.fit(reduced[other], reduced[key], skip_structure_reduction=True):
                    parent[max(a, b)] = min(a, b)
    return {key: find(key) for key in reduced}
