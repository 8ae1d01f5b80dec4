"""Train/validation/test splits of a dataset version, by material or by structure group, and nested subsets.

Pure assignment (:func:`split_by_group`)
----------------------------------------
A split never cuts a *group*: all frames of a group land in one part. Groups are
ordered by ``sha256(f"{seed}\\x00{group_key}")`` (ties, which need a hash collision,
by the key itself), which depends only on the seed and the key strings, never on
database ids or input order. Parts are then filled **by frame count**: walking the
groups in that order, frames occupy consecutive positions ``[c, c + n)`` of
``[0, N)``; a group goes to the first part (train, val, test) whose cumulative ratio
bound exceeds the group's midpoint ``(c + n / 2) / N`` (parts with ratio 0 never get a
group). Each part therefore holds its ratio of the frames to within half a group at
each boundary. Exact rational arithmetic is used, so ``8:1:1`` and ``0.8:0.1:0.1`` are
the same split. ``balance="groups"`` counts groups instead of frames.

Group keys (:func:`create_split`)
---------------------------------
* ``material``: ``materials.external_id``.
* ``structure-group``: connected components of materials whose relaxed structures
  match with pymatgen's ``StructureMatcher`` at its default tolerances, stated
  explicitly in :data:`DEFAULT_MATCHER` (``ltol=0.2`` fractional length,
  ``stol=0.3`` site tolerance in units of (V/n)^(1/3), ``angle_tol=5`` degrees,
  primitive cells, volumes scaled, no supercells, species compared exactly). The group
  key is the smallest material id of the component. The relaxed structure of a
  material is, in this order: its ``reference_entries.structure`` at the dataset's
  fidelities (the first fidelity in sorted order when several), else the last frame
  of its last ``relax`` task at those fidelities (latest ``completed_at``, then task
  id), else its last dataset frame. Only structures with the same reduced
  composition and the same number of sites after Niggli + primitive reduction (a
  necessary condition for a match without supercells) are compared.

Hashes
------
Split (``crossfid-split-v1``)::

    sha256( b"crossfid-split-v1\\n" + for part in (train, val, test):
            f"{part} {n}\\n" + b"".join(h + b"\\n" for h in sorted(frame content hashes of part)) )

Nested subsets: training frames are ordered by ``sha256(f"{seed}\\x00{content_hash}")``
(ties by the hash); the subset of size k is the first k frames, so every subset
contains the smaller ones. Frames of identical content take their ids in their stable
order (material, task, source, ionic step). A frozen split accepts a new subset only
when it is exactly this one (the database recomputes it: revision 0006), which is how
:func:`create_split` adds a size to an existing split. Subset hash: :func:`crossfid.curation.datasets.hash_of_hashes`
with the domain ``crossfid-subset-v1`` over the subset's sorted content hashes.

Split references (:func:`resolve_split`): the numeric id, or
``DATASET[:VERSION][/STRATEGY][@SEED]`` when that names exactly one split.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.orm import Session

from crossfid.curation.datasets import hash_of_hashes, resolve_dataset
from crossfid.db.bulk import copy_rows
from crossfid.db.models import Dataset, Split, SplitSubset

__all__ = [
    "DEFAULT_MATCHER",
    "PARTS",
    "STRATEGIES",
    "MatcherSettings",
    "PartCounts",
    "SplitError",
    "SplitInfo",
    "composition_key",
    "create_split",
    "group_order_key",
    "list_splits",
    "nested_subsets",
    "normalize_ratios",
    "parse_ratios",
    "reduce_structure",
    "resolve_split",
    "split_by_group",
    "split_content_hash",
    "split_info",
    "structure_from_arrays",
    "structure_groups",
    "subset_content_hash",
    "subset_order",
]

PARTS: tuple[str, str, str] = ("train", "val", "test")
STRATEGIES: tuple[str, str] = ("material", "structure-group")
SPLIT_HASH_DOMAIN = "crossfid-split-v1"
SUBSET_HASH_DOMAIN = "crossfid-subset-v1"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SPLIT_REF = re.compile(r"^(?P<dataset>[^/@]+)(?:/(?P<strategy>[A-Za-z-]+))?(?:@(?P<seed>-?\d+))?$")
_INT32 = (-(2**31), 2**31 - 1)


class SplitError(ValueError):
    """A split request that cannot be honoured; ``str(error)`` is a one-line reason."""


# --------------------------------------------------------------------------- ratios


def parse_ratios(value: str) -> tuple[Fraction, Fraction, Fraction]:
    """``"8:1:1"``, ``"0.8,0.1,0.1"`` or ``"80:10:10"`` → three exact fractions summing to 1."""
    parts = [p.strip() for p in re.split(r"[:,/]", value.strip())] if isinstance(value, str) else value
    return _ratio_fractions(parts)


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


def _ratio_fractions(ratios: Any) -> tuple[Fraction, Fraction, Fraction]:
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
    return tuple(float(f) for f in _ratio_fractions(ratios))  # type: ignore[return-value]


def _ratio_text(ratios: Sequence[float]) -> str:
    return ":".join(f"{r:g}" for r in ratios)


# --------------------------------------------------------------------------- pure assignment


def group_order_key(seed: int, key: str) -> bytes:
    """Sort key of a group (or frame) under ``seed``: ``sha256(f"{seed}\\x00{key}")`` digest."""
    return hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()


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
    fractions = _ratio_fractions(ratios)
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
    for k in sorted(text_keys, key=lambda k: (group_order_key(seed, k), k)):
        weight = weights[k]
        midpoint2 = 2 * cumulative + weight  # twice the midpoint, to stay in integers
        part = next((i for i in positive if midpoint2 < 2 * total * bounds[i]), positive[-1])
        result[PARTS[part]].append(text_keys[k])
        cumulative += weight
    return result


def subset_order(frame_hashes: Iterable[str], seed: int) -> list[str]:
    """Training frame hashes in the seeded order that nested subsets are prefixes of."""
    return sorted(frame_hashes, key=lambda h: (group_order_key(seed, h), h))


def _subset_sizes(sizes: Iterable[int], n_train: int) -> list[int]:
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
    checked = _subset_sizes(sizes, len(hashes))
    order = subset_order(hashes, seed)
    return {size: order[:size] for size in checked}


def split_content_hash(parts: Mapping[str, Iterable[str]]) -> str:
    """Content hash of a split from the frame content hashes of each part (recipe in the module doc)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown split parts {sorted(unknown)}")
    digest = hashlib.sha256(SPLIT_HASH_DOMAIN.encode() + b"\n")
    for part in PARTS:
        hashes = sorted(parts.get(part, ()))
        digest.update(f"{part} {len(hashes)}\n".encode())
        for value in hashes:
            if not isinstance(value, str) or not _HEX64.match(value):
                raise ValueError(f"not a lower-case hex SHA-256: {value!r}")
            digest.update(value.encode("ascii") + b"\n")
    return digest.hexdigest()


def subset_content_hash(frame_hashes: Iterable[str]) -> str:
    """Content hash of a nested subset (order does not matter)."""
    return hash_of_hashes(SUBSET_HASH_DOMAIN, frame_hashes)


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


# --------------------------------------------------------------------------- results and lookup


@dataclass
class PartCounts:
    n_frames: int = 0
    n_materials: int = 0


@dataclass
class SplitInfo:
    """A split as stored: parts' counts and nested subsets (``{size: content hash}``)."""

    id: int
    dataset_id: int
    dataset: str  # NAME:VERSION
    strategy: str
    ratios: tuple[float, float, float]
    seed: int
    content_hash: str | None
    parameters: dict[str, Any]
    parts: dict[str, PartCounts]
    subsets: dict[int, str] = field(default_factory=dict)
    frozen: bool = True
    #: True when this call created the split, False when an identical split already existed
    created: bool = False

    @property
    def ref(self) -> str:
        return f"{self.dataset}/{self.strategy}@{self.seed}"

    @property
    def ratio_text(self) -> str:
        return _ratio_text(self.ratios)

    @property
    def n_frames(self) -> int:
        return sum(p.n_frames for p in self.parts.values())


def _session(conn: Connection | Session) -> Session:
    return conn if isinstance(conn, Session) else Session(bind=conn)


def split_info(conn: Connection | Session, split: Split | int) -> SplitInfo:
    """:class:`SplitInfo` of a split row (or id), with counts from ``split_members``."""
    session = _session(conn)
    row = session.get(Split, split) if isinstance(split, int) else split
    if row is None:
        raise SplitError(f"no split with id {split}")
    dataset = session.get(Dataset, row.dataset_id)
    counts = session.execute(
        text(
            "SELECT part, count(*), count(DISTINCT material_id) FROM split_members WHERE split_id = :id GROUP BY part"
        ),
        {"id": row.id},
    ).all()
    parts = {part: PartCounts() for part in PARTS}
    for part, n_frames, n_materials in counts:
        parts[part] = PartCounts(n_frames, n_materials)
    subsets = dict(
        session.execute(select(SplitSubset.size, SplitSubset.content_hash).where(SplitSubset.split_id == row.id)).all()
    )
    return SplitInfo(
        id=row.id,
        dataset_id=row.dataset_id,
        dataset=f"{dataset.name}:{dataset.version}",
        strategy=row.strategy,
        ratios=tuple(row.ratios),  # type: ignore[arg-type]
        seed=row.seed,
        content_hash=row.content_hash,
        parameters=dict(row.parameters),
        parts=parts,
        subsets=dict(sorted(subsets.items())),
        frozen=row.frozen,
    )


def list_splits(conn: Connection | Session, dataset_id: int) -> list[SplitInfo]:
    """Every split of a dataset version, oldest first."""
    session = _session(conn)
    rows = session.scalars(select(Split).where(Split.dataset_id == dataset_id).order_by(Split.id)).all()
    return [split_info(session, row) for row in rows]


def resolve_split(conn: Connection | Session, ref: str | int) -> Split:
    """The split ``ref`` names: its id, or ``DATASET[:VERSION][/STRATEGY][@SEED]`` naming exactly one split."""
    session = _session(conn)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        row = session.get(Split, int(ref))
        if row is None:
            raise SplitError(f"no split with id {ref}")
        return row
    match = _SPLIT_REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise SplitError(f"invalid split reference {ref!r}: use an id or DATASET[:VERSION][/STRATEGY][@SEED]")
    dataset = resolve_dataset(session, match["dataset"])
    query = select(Split).where(Split.dataset_id == dataset.id)
    if match["strategy"]:
        if match["strategy"] not in STRATEGIES:
            raise SplitError(f"unknown split strategy {match['strategy']!r}; known: {', '.join(STRATEGIES)}")
        query = query.where(Split.strategy == match["strategy"])
    if match["seed"] is not None:
        query = query.where(Split.seed == int(match["seed"]))
    rows = session.scalars(query.order_by(Split.id)).all()
    if not rows:
        raise SplitError(f"dataset {dataset.name}:{dataset.version} has no split matching {ref!r}")
    if len(rows) > 1:
        listed = "; ".join(f"{r.id} ({r.strategy} {_ratio_text(r.ratios)} seed {r.seed})" for r in rows)
        raise SplitError(f"{ref!r} matches {len(rows)} splits, use an id: {listed}")
    return rows[0]


# --------------------------------------------------------------------------- creating a split


@dataclass(frozen=True)
class _Member:
    frame_id: int
    material_id: int
    material: str  # external id
    content_hash: str
    task: str  # external id
    source: str
    ionic_step: int

    @property
    def stable_key(self) -> tuple[str, str, str, int, str]:
        """Database-independent order of frames (material, task, source, ionic step)."""
        return self.material, self.task, self.source, self.ionic_step, self.content_hash


_MEMBER_COLUMNS = """
    SELECT df.frame_id, df.material_id, m.external_id, f.content_hash, t.external_id, s.name, f.ionic_step
      FROM {table} df
      JOIN frames f ON f.id = df.frame_id
      JOIN tasks t ON t.id = f.task_id
      JOIN sources s ON s.id = t.source_id
      JOIN materials m ON m.id = df.material_id
"""


def _dataset_members(conn: Connection, dataset_id: int) -> list[_Member]:
    query = _MEMBER_COLUMNS.format(table="dataset_frames") + " WHERE df.dataset_id = %(id)s"
    return [_Member(*row) for row in conn.exec_driver_sql(query, {"id": dataset_id}).all()]


def _train_members(conn: Connection, split_id: int) -> list[_Member]:
    query = _MEMBER_COLUMNS.format(table="split_members") + " WHERE df.split_id = %(id)s AND df.part = 'train'"
    return [_Member(*row) for row in conn.exec_driver_sql(query, {"id": split_id}).all()]


def create_split(
    engine: Engine,
    dataset_ref: str | int,
    ratios: Any = (8, 1, 1),
    seed: int = 0,
    strategy: str = "material",
    subset_sizes: Iterable[int] = (),
    *,
    matcher: MatcherSettings = DEFAULT_MATCHER,
) -> SplitInfo:
    """Split a frozen dataset version into train/val/test (whole groups, see the module doc) and freeze it.

    ``ratios``: three non-negative numbers or ``"8:1:1"``; ``strategy``: ``material``
    or ``structure-group``; ``subset_sizes``: nested training subsets (frames). Members,
    subsets and the hash are written and the split frozen in one transaction. If a
    split with the same dataset, strategy, ratios and seed exists it is returned
    (``created=False``) and only subset sizes it lacks are added (subsets are
    deterministic, so they are the same as if made at creation). ``matcher`` is for
    tests; the tolerances are recorded in ``splits.parameters``.
    """
    if strategy not in STRATEGIES:
        raise SplitError(f"unknown split strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not _INT32[0] <= seed <= _INT32[1]:
        raise SplitError(f"seed must be a 32-bit integer, not {seed!r}")
    seed = int(seed)
    fractions = _ratio_fractions(ratios)
    stored_ratios = [float(f) for f in fractions]
    sizes = list(subset_sizes)
    _subset_sizes(sizes, math.inf)  # type checks before touching the database
    with engine.begin() as conn:
        session = _session(conn)
        dataset = resolve_dataset(session, dataset_ref)
        if not dataset.frozen:
            raise SplitError(f"dataset {dataset.name}:{dataset.version} is not frozen")
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"crossfid:split:{dataset.id}"}
        )
        existing = session.scalars(
            select(Split).where(
                Split.dataset_id == dataset.id,
                Split.strategy == strategy,
                Split.ratios == stored_ratios,
                Split.seed == seed,
            )
        ).one_or_none()
        if existing is not None:
            if sizes:
                have = set(session.scalars(select(SplitSubset.size).where(SplitSubset.split_id == existing.id)))
                missing = [s for s in _subset_sizes(sizes, math.inf) if s not in have]
                if missing:
                    _write_subsets(conn, existing.id, _train_members(conn, existing.id), missing, seed)
            info = split_info(session, existing)
            info.created = False
            return info

        members = _dataset_members(conn, dataset.id)
        parameters: dict[str, Any] = {
            "balance": "frames",
            "order": "sha256(f'{seed}\\x00{group key}')",
            "hash": SPLIT_HASH_DOMAIN,
            "subset_hash": SUBSET_HASH_DOMAIN,
        }
        if strategy == "material":
            group_of = {m.material: m.material for m in members}
            parameters["group_key"] = "materials.external_id"
        else:
            structures, origins = _relaxed_structures(conn, dataset, members)
            group_of = structure_groups(structures, matcher)
            sizes_of_groups = Counter(group_of.values())
            parameters.update(
                group_key="smallest materials.external_id of the structure group",
                structure_matcher=matcher.as_dict(),
                structure_origin=dict(sorted(origins.items())),
                n_structure_groups=len(sizes_of_groups),
                n_multi_material_groups=sum(1 for n in sizes_of_groups.values() if n > 1),
            )
        groups: dict[str, list[str]] = defaultdict(list)
        for m in members:
            groups[group_of[m.material]].append(m.content_hash)
        assignment = split_by_group(groups, fractions, seed)
        part_of_group = {g: part for part, keys in assignment.items() for g in keys}
        parameters["n_groups"] = {part: len(assignment[part]) for part in PARTS}
        part_of = {m.frame_id: part_of_group[group_of[m.material]] for m in members}
        train = [m for m in members if part_of[m.frame_id] == "train"]
        checked_sizes = _subset_sizes(sizes, len(train))

        split_id = conn.scalar(
            insert(Split)
            .values(dataset_id=dataset.id, strategy=strategy, ratios=stored_ratios, seed=seed, parameters=parameters)
            .returning(Split.id)
        )
        copy_rows(
            conn,
            "split_members",
            ((split_id, m.frame_id, m.material_id, part_of[m.frame_id]) for m in members),
            ["split_id", "frame_id", "material_id", "part"],
        )
        if checked_sizes:
            _write_subsets(conn, split_id, train, checked_sizes, seed)
        by_part: dict[str, list[str]] = {part: [] for part in PARTS}
        for m in members:
            by_part[part_of[m.frame_id]].append(m.content_hash)
        conn.execute(
            update(Split).where(Split.id == split_id).values(content_hash=split_content_hash(by_part), frozen=True)
        )
        info = split_info(session, split_id)
        info.created = True
        return info


def _write_subsets(conn: Connection, split_id: int, train: list[_Member], sizes: list[int], seed: int) -> None:
    """Nested subsets of the training members; identical-content frames take ids in their stable order."""
    subsets = nested_subsets([m.content_hash for m in train], sizes, seed)
    ids_of_hash: dict[str, list[int]] = defaultdict(list)
    for m in sorted(train, key=lambda m: m.stable_key):
        ids_of_hash[m.content_hash].append(m.frame_id)
    largest = subsets[max(subsets)]
    used: Counter[str] = Counter()
    frame_ids: list[int] = []
    for h in largest:
        frame_ids.append(ids_of_hash[h][used[h]])
        used[h] += 1
    rows = [
        {"split_id": split_id, "size": size, "content_hash": subset_content_hash(hashes), "frame_ids": frame_ids[:size]}
        for size, hashes in subsets.items()
    ]
    conn.execute(insert(SplitSubset), rows)


def _relaxed_structures(conn: Connection, dataset: Dataset, members: list[_Member]) -> tuple[dict[str, Any], Counter]:
    """One relaxed structure per material of the dataset (see the module doc for the order of sources)."""
    from pymatgen.core import Structure

    fidelities = sorted(dataset.fidelities)
    rank = {f: i for i, f in enumerate(fidelities)}
    external = {m.material_id: m.material for m in members}
    material_ids = sorted(external)
    structures: dict[str, Any] = {}
    origins: Counter[str] = Counter()

    chosen: dict[int, tuple[int, dict]] = {}
    for material_id, fidelity, document in conn.exec_driver_sql(
        "SELECT material_id, fidelity, structure FROM reference_entries "
        "WHERE material_id = ANY(%(ids)s) AND fidelity = ANY(%(fidelities)s) AND structure IS NOT NULL",
        {"ids": material_ids, "fidelities": fidelities},
    ):
        if material_id not in chosen or rank[fidelity] < chosen[material_id][0]:
            chosen[material_id] = (rank[fidelity], document)
    for material_id, (_, document) in chosen.items():
        try:
            structure = Structure.from_dict(document)
            structure.remove_oxidation_states()
        except Exception:  # noqa: BLE001 - an unreadable reference structure falls back to the frames
            continue
        structures[external[material_id]] = structure
        origins["reference_entry"] += 1

    missing = [mid for mid in material_ids if external[mid] not in structures]
    if missing:
        last_task: dict[int, tuple[tuple, int]] = {}
        for task_id, material_id, task_external, source, completed in conn.exec_driver_sql(
            "SELECT t.id, t.material_id, t.external_id, s.name, t.completed_at FROM tasks t "
            "JOIN sources s ON s.id = t.source_id "
            "WHERE t.material_id = ANY(%(ids)s) AND t.task_type = 'relax' AND t.fidelity = ANY(%(fidelities)s)",
            {"ids": missing, "fidelities": fidelities},
        ):
            key = (completed is not None, completed.timestamp() if completed else 0.0, task_external, source)
            if material_id not in last_task or key > last_task[material_id][0]:
                last_task[material_id] = (key, task_id)
        task_material = {task_id: material_id for material_id, (_, task_id) in last_task.items()}
        if task_material:
            for task_id, lattice, numbers, frac in conn.exec_driver_sql(
                "SELECT DISTINCT ON (task_id) task_id, lattice, atomic_numbers, frac_coords FROM frames "
                "WHERE task_id = ANY(%(ids)s) ORDER BY task_id, ionic_step DESC",
                {"ids": sorted(task_material)},
            ):
                structures[external[task_material[task_id]]] = structure_from_arrays(lattice, numbers, frac)
                origins["last_relax_frame"] += 1

    missing = [mid for mid in material_ids if external[mid] not in structures]
    if missing:
        last_member: dict[int, _Member] = {}
        for m in members:
            if m.material_id in missing and (
                m.material_id not in last_member or m.stable_key > last_member[m.material_id].stable_key
            ):
                last_member[m.material_id] = m
        frame_material = {m.frame_id: m.material_id for m in last_member.values()}
        for frame_id, lattice, numbers, frac in conn.exec_driver_sql(
            "SELECT id, lattice, atomic_numbers, frac_coords FROM frames WHERE id = ANY(%(ids)s)",
            {"ids": sorted(frame_material)},
        ):
            structures[external[frame_material[frame_id]]] = structure_from_arrays(lattice, numbers, frac)
            origins["last_dataset_frame"] += 1
    return structures, origins
