"""Leakage audit: validation/test frames whose structure matches a training frame of a *different* material.

A split by material id keeps each material in one part, but the same crystal can be
in the database under two ids (polymorph duplicates, the same prototype entered
twice, one structure relaxed at two fidelities under different ids). Its frames then
sit in training and in validation/test, and the test error is optimistic.
:func:`audit_split` finds such pairs with pymatgen's ``StructureMatcher`` at explicit
tolerances.

How it stays fast
-----------------
1. Only materials whose reduced formula (``materials.formula``) occurs in training
   under another material id *and* in validation/test are looked at.
2. Representatives: with ``representatives="final"`` (default) a material's frames in
   one part are represented by the last frame (highest ionic step) of each of its
   tasks, so a relaxation trajectory costs one structure, not one per step; with
   ``"all"`` every frame is its own representative (thorough, slower).
   Representatives of one material with identical structures (a static run on the
   relaxed geometry) are merged exactly.
3. Each representative is converted to a ``Structure`` and Niggli + primitive-reduced
   once; only representatives with the same reduced composition and the same number
   of reduced sites are compared (a necessary condition for a match without
   supercells), with ``fit(..., skip_structure_reduction=True)``.
4. For each validation/test representative and each training material, training
   representatives are tried until the first match.
5. Given a Dask client (:func:`crossfid.runtime.dask.dask_client`), the comparisons run
   on its workers in chunks; without one, in this process. The result is the same.

Results: every matching pair (validation/test frame and material, training frame
and material, part, reduced formula), and per part the frames and materials
affected. A representative stands for the frames of its task in that part, so
"leaked frames" are the frames of tasks whose representative matched.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from crossfid.curation.split_store import resolve_split, split_info
from crossfid.curation.splits import MatcherSettings, composition_key, reduce_structure, structure_from_arrays
from crossfid.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["REPRESENTATIVES", "AuditFrame", "AuditReport", "LeakPair", "PartLeakage", "audit_split", "find_leaks"]

REPRESENTATIVES = ("final", "all")
EVAL_PARTS = ("val", "test")

#: (lattice 9 floats Å, atomic numbers, fractional coordinates 3n) of a frame
Arrays = tuple[Sequence[float], Sequence[int], Sequence[float]]


@dataclass(frozen=True)
class AuditFrame:
    """What the audit needs to know about a split member before loading its structure."""

    frame_id: int
    content_hash: str
    material: str  # external id
    part: str
    task: Any  # anything identifying the frame's task
    ionic_step: int
    formula: str  # reduced formula of the material


@dataclass(frozen=True)
class LeakPair:
    """A validation/test frame whose structure matches a training frame of another material."""

    part: str
    frame_id: int
    frame_hash: str
    material: str
    train_frame_id: int
    train_frame_hash: str
    train_material: str
    composition: str


@dataclass
class PartLeakage:
    n_frames: int = 0
    n_materials: int = 0
    n_leaked_frames: int = 0
    n_leaked_materials: int = 0


@dataclass
class AuditReport:
    split_id: int
    dataset: str
    strategy: str
    seed: int
    matcher: dict[str, Any]
    representatives: str
    pairs: list[LeakPair] = field(default_factory=list)
    parts: dict[str, PartLeakage] = field(default_factory=dict)
    n_representatives: int = 0
    n_comparisons: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.pairs

    @property
    def n_leaked_frames(self) -> int:
        return sum(p.n_leaked_frames for p in self.parts.values())

    @property
    def n_leaked_materials(self) -> int:
        return sum(p.n_leaked_materials for p in self.parts.values())


@dataclass
class _Representative:
    frame: AuditFrame
    represents: list[AuditFrame]
    numbers: tuple[int, ...] = ()
    reduced: Any = None


class _Comparer:
    """Compares one validation/test representative with the training representatives of other materials."""

    def __init__(self, reduced: Sequence[Any], settings: MatcherSettings) -> None:
        self.reduced = reduced
        self.matcher = settings.matcher()

    def __call__(self, item) -> tuple[int, list[tuple[str, int]], int]:
        eval_index, others = item
        structure = self.reduced[eval_index]
        matches: list[tuple[str, int]] = []
        n = 0
        for material, train_indices in others:
            for train_index in train_indices:  # until the first match with this material
                n += 1
                if self.matcher.fit(self.reduced[train_index], structure, skip_structure_reduction=True):
                    matches.append((material, train_index))
                    break
        return eval_index, matches, n


def _compare_chunk(items: Sequence, reduced: Sequence[Any], settings: MatcherSettings) -> list:
    """Results of :class:`_Comparer` for a chunk of work items (runs on a Dask worker)."""
    compare = _Comparer(reduced, settings)
    return [compare(item) for item in items]


def _fingerprint(arrays: Arrays) -> tuple:
    lattice, numbers, frac = arrays
    frac = np.mod(np.round(np.asarray(frac, dtype=float), 6), 1.0)
    return tuple(int(z) for z in numbers), np.round(np.asarray(lattice, dtype=float), 6).tobytes(), frac.tobytes()


def find_leaks(
    frames: Iterable[AuditFrame],
    load: Callable[[Sequence[int]], Mapping[int, Arrays]],
    *,
    settings: MatcherSettings,
    representatives: str = "final",
    client: Client | None = None,
) -> tuple[list[LeakPair], set[int], int, int]:
    """The matching pairs among ``frames`` (see the module doc).

    ``load(frame_ids)`` returns the arrays of the given frames. ``client``: Dask client whose
    workers compare the structures (None: this process); the result does not depend on it. Returns (pairs sorted by
    part, material, frame hash, training material; ids of leaked validation/test frames;
    number of representatives; number of ``StructureMatcher`` comparisons).
    """
    if representatives not in REPRESENTATIVES:
        raise InputError(f"representatives must be one of {REPRESENTATIVES}, not {representatives!r}")
    frames = list(frames)
    train_materials: dict[str, set[str]] = defaultdict(set)
    for f in frames:
        if f.part == "train":
            train_materials[f.formula].add(f.material)
    eval_frames = [f for f in frames if f.part in EVAL_PARTS and train_materials.get(f.formula, set()) - {f.material}]
    formulas = {f.formula for f in eval_frames}
    candidates = eval_frames + [f for f in frames if f.part == "train" and f.formula in formulas]

    # representatives: per (material, part, task) the last frame, or every frame
    by_task: dict[tuple, list[AuditFrame]] = defaultdict(list)
    for f in candidates:
        key = (f.material, f.part, f.task) if representatives == "final" else (f.material, f.part, f.frame_id)
        by_task[key].append(f)
    reps = [_Representative(max(group, key=lambda f: f.ionic_step), group) for group in by_task.values()]
    arrays = load(sorted({r.frame.frame_id for r in reps})) if reps else {}

    merged: dict[tuple, _Representative] = {}
    for rep in sorted(reps, key=lambda r: (r.frame.material, r.frame.part, r.frame.content_hash, r.frame.frame_id)):
        key = (rep.frame.material, rep.frame.part, _fingerprint(arrays[rep.frame.frame_id]))
        if key in merged:
            merged[key].represents.extend(rep.represents)
        else:
            merged[key] = rep
    reps = list(merged.values())

    buckets: dict[tuple, dict[str, list[_Representative]]] = defaultdict(lambda: {"eval": [], "train": []})
    for rep in reps:
        lattice, numbers, frac = arrays[rep.frame.frame_id]
        rep.numbers = tuple(int(z) for z in numbers)
        rep.reduced = reduce_structure(structure_from_arrays(lattice, numbers, frac))
        key = (composition_key(rep.numbers), len(rep.reduced))
        buckets[key]["train" if rep.frame.part == "train" else "eval"].append(rep)

    # work items: a validation/test representative and, per training material of its bucket, the representatives
    items: list[tuple[int, tuple[tuple[str, tuple[int, ...]], ...]]] = []
    index = {id(rep): i for i, rep in enumerate(reps)}
    for bucket in buckets.values():
        train_by_material: dict[str, list[int]] = defaultdict(list)
        for rep in bucket["train"]:
            train_by_material[rep.frame.material].append(index[id(rep)])
        for rep in bucket["eval"]:
            others = tuple(
                (material, tuple(train_by_material[material]))
                for material in sorted(train_by_material)
                if material != rep.frame.material
            )
            if others:
                items.append((index[id(rep)], others))
    reduced = [rep.reduced for rep in reps]
    if client is not None and len(items) > 1:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = max(1, len(items) // (workers * 8))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        [shared] = client.scatter([reduced], broadcast=True, hash=False)
        futures = client.map(_compare_chunk, chunks, reduced=shared, settings=settings, pure=False)
        results = [result for chunk in client.gather(futures) for result in chunk]
    else:
        compare = _Comparer(reduced, settings)
        results = [compare(item) for item in items]

    pairs: list[LeakPair] = []
    leaked: set[int] = set()
    comparisons = 0
    for eval_index, matches, n in results:
        comparisons += n
        rep = reps[eval_index]
        for material, train_index in matches:
            train = reps[train_index]
            pairs.append(
                LeakPair(
                    part=rep.frame.part,
                    frame_id=rep.frame.frame_id,
                    frame_hash=rep.frame.content_hash,
                    material=rep.frame.material,
                    train_frame_id=train.frame.frame_id,
                    train_frame_hash=train.frame.content_hash,
                    train_material=material,
                    composition=rep.frame.formula,
                )
            )
            leaked.update(f.frame_id for f in rep.represents)
    order = {part: i for i, part in enumerate(EVAL_PARTS)}
    pairs.sort(key=lambda p: (order[p.part], p.material, p.frame_hash, p.train_material, p.train_frame_hash))
    return pairs, leaked, len(reps), comparisons


def audit_split(
    engine: Engine,
    split_ref: str | int,
    *,
    ltol: float = 0.2,
    stol: float = 0.3,
    angle_tol: float = 5.0,
    representatives: str = "final",
    client: Client | None = None,
) -> AuditReport:
    """Audit a split for structure leaks between training and validation/test (see the module doc).

    ``ltol`` fractional length tolerance, ``stol`` site tolerance (in units of
    (V/n)^(1/3)), ``angle_tol`` degrees: ``StructureMatcher``'s defaults unless given.
    ``representatives``: ``final`` or ``all``; ``client``: see :func:`find_leaks`.
    """
    for name, value in (("ltol", ltol), ("stol", stol), ("angle_tol", angle_tol)):
        if not value > 0:
            raise InputError(f"{name} must be positive, not {value}")
    if representatives not in REPRESENTATIVES:
        raise InputError(f"representatives must be one of {REPRESENTATIVES}, not {representatives!r}")
    settings = MatcherSettings(ltol=float(ltol), stol=float(stol), angle_tol=float(angle_tol))
    started = time.perf_counter()
    with engine.connect() as conn:
        split = resolve_split(conn, split_ref)
        info = split_info(conn, split)
        frames = [
            AuditFrame(*row)
            for row in conn.exec_driver_sql(
                """
                SELECT sm.frame_id, f.content_hash, m.external_id, sm.part, f.task_id, f.ionic_step, m.formula
                  FROM split_members sm
                  JOIN frames f ON f.id = sm.frame_id
                  JOIN materials m ON m.id = sm.material_id
                 WHERE sm.split_id = %(id)s
                """,
                {"id": split.id},
            )
        ]

    def load(frame_ids: Sequence[int]) -> dict[int, Arrays]:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, lattice, atomic_numbers, frac_coords FROM frames WHERE id = ANY(%(ids)s)",
                {"ids": list(frame_ids)},
            ).all()
        return {frame_id: (lattice, numbers, frac) for frame_id, lattice, numbers, frac in rows}

    # no connection is held while the structures are compared
    pairs, leaked, n_reps, n_comparisons = find_leaks(
        frames, load, settings=settings, representatives=representatives, client=client
    )

    parts = {part: PartLeakage() for part in EVAL_PARTS}
    materials: dict[str, set[str]] = defaultdict(set)
    for f in frames:
        if f.part in parts:
            parts[f.part].n_frames += 1
            materials[f.part].add(f.material)
            if f.frame_id in leaked:
                parts[f.part].n_leaked_frames += 1
    for part, counts in parts.items():
        counts.n_materials = len(materials[part])
        counts.n_leaked_materials = len({p.material for p in pairs if p.part == part})
    return AuditReport(
        split_id=info.id,
        dataset=info.dataset,
        strategy=info.strategy,
        seed=info.seed,
        matcher=settings.as_dict(),
        representatives=representatives,
        pairs=pairs,
        parts=parts,
        n_representatives=n_reps,
        n_comparisons=n_comparisons,
        seconds=time.perf_counter() - started,
    )
