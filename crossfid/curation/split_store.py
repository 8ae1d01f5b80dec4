"""Splits in the database: creating and freezing them, looking them up, and dataset details with their splits.

The assignment, ratios, nested subsets and structure groups are pure functions of
:mod:`crossfid.curation.splits`; the hashes are :mod:`crossfid.hashing` recipes.

Group keys (:func:`create_split`)
---------------------------------
* ``material``: ``materials.external_id``.
* ``structure-group``: :func:`crossfid.curation.splits.structure_groups` of the materials'
  relaxed structures; the group key is the smallest material id of the component. The
  relaxed structure of a material is, in this order: its ``reference_entries.structure`` at
  the dataset's fidelities (the first fidelity in sorted order when several), else the last
  frame of its last ``relax`` task at those fidelities (latest ``completed_at``, then task
  id), else its last dataset frame.

Members, subsets and the content hash are written and the split frozen in one transaction.
Frames of identical content take their ids in nested subsets in their stable order
(material, task, source, ionic step). A frozen split accepts a new subset only when it is
exactly the one the seeded order gives (the database recomputes it: revision 0006), which is
how :func:`create_split` adds a size to an existing split.

Split references (:func:`resolve_split`): the numeric id, or
``DATASET[:VERSION][/STRATEGY][@SEED]`` when that names exactly one split.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.orm import Session

from crossfid.curation.datasets import DatasetInfo, as_session, resolve_dataset
from crossfid.curation.splits import (
    DEFAULT_MATCHER,
    PARTS,
    STRATEGIES,
    MatcherSettings,
    SplitError,
    check_subset_sizes,
    nested_subsets,
    ratio_fractions,
    ratio_text,
    split_by_group,
    split_content_hash,
    structure_from_arrays,
    structure_groups,
)
from crossfid.db.bulk import copy_rows
from crossfid.db.models import CurationRun, Dataset, Split, SplitSubset
from crossfid.hashing import SPLIT_HASH_DOMAIN, SUBSET_HASH_DOMAIN, subset_content_hash

__all__ = [
    "DatasetDetail",
    "PartCounts",
    "SplitInfo",
    "create_split",
    "list_splits",
    "resolve_split",
    "show_dataset",
    "split_info",
]

_SPLIT_REF = re.compile(r"^(?P<dataset>[^/@]+)(?:/(?P<strategy>[A-Za-z-]+))?(?:@(?P<seed>-?\d+))?$")
_INT32 = (-(2**31), 2**31 - 1)


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
        return ratio_text(self.ratios)

    @property
    def n_frames(self) -> int:
        return sum(p.n_frames for p in self.parts.values())


def split_info(conn: Connection | Session, split: Split | int) -> SplitInfo:
    """:class:`SplitInfo` of a split row (or id), with counts from ``split_members``."""
    session = as_session(conn)
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
    session = as_session(conn)
    rows = session.scalars(select(Split).where(Split.dataset_id == dataset_id).order_by(Split.id)).all()
    return [split_info(session, row) for row in rows]


def resolve_split(conn: Connection | Session, ref: str | int) -> Split:
    """The split ``ref`` names: its id, or ``DATASET[:VERSION][/STRATEGY][@SEED]`` naming exactly one split."""
    session = as_session(conn)
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
        listed = "; ".join(f"{r.id} ({r.strategy} {ratio_text(r.ratios)} seed {r.seed})" for r in rows)
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
    fractions = ratio_fractions(ratios)
    stored_ratios = [float(f) for f in fractions]
    sizes = list(subset_sizes)
    check_subset_sizes(sizes, math.inf)  # type checks before touching the database
    with engine.begin() as conn:
        session = as_session(conn)
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
                missing = [s for s in check_subset_sizes(sizes, math.inf) if s not in have]
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
        checked_sizes = check_subset_sizes(sizes, len(train))

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


# --------------------------------------------------------------------------- a dataset with its splits


@dataclass
class DatasetDetail:
    """Everything ``crossfid dataset show`` prints about one version."""

    info: DatasetInfo
    config: dict[str, Any]
    run_status: str
    run_dedupe: str
    run_fidelities: list[str]
    #: frames and materials per task fidelity: {fidelity: (n_frames, n_materials)}
    by_fidelity: dict[str, tuple[int, int]]
    #: every split of the version
    splits: list[SplitInfo]


def show_dataset(engine: Engine, ref: str | int) -> DatasetDetail:
    """Details of one dataset version: counts per fidelity, configuration, curation run, splits."""
    with engine.connect() as conn:
        session = as_session(conn)
        row = resolve_dataset(session, ref)
        run = session.get(CurationRun, row.curation_run_id)
        by_fidelity = conn.exec_driver_sql(
            """
            SELECT t.fidelity, count(*), count(DISTINCT df.material_id)
              FROM dataset_frames df
              JOIN frames f ON f.id = df.frame_id
              JOIN tasks t ON t.id = f.task_id
             WHERE df.dataset_id = %(id)s
             GROUP BY t.fidelity
            """,
            {"id": row.id},
        ).all()
        splits = list_splits(session, row.id)
        info = DatasetInfo.from_row(row, len(splits))
        return DatasetDetail(
            info=info,
            config=dict(row.config),
            run_status=run.status,
            run_dedupe=run.dedupe,
            run_fidelities=list(run.fidelities),
            by_fidelity={fidelity: (n_frames, n_materials) for fidelity, n_frames, n_materials in sorted(by_fidelity)},
            splits=splits,
        )
