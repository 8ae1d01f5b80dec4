"""Verify frozen dataset versions and their splits against the hashes stored when they were frozen.

The database refuses changes to frozen data (triggers of revisions 0002 and 0006), but
triggers can be bypassed by a superuser (``session_replication_role = replica``,
``ALTER TABLE ... DISABLE TRIGGER``) or by restoring a tampered dump. Verification
recomputes everything from the stored rows with the same functions that froze them:

* every member frame's content hash from its stored arrays and labels
  (:meth:`crossfid.ingest.records.Frame.content_hash`, the ingestion recipe), compared
  with ``frames.content_hash``;
* the dataset's content hash from those frame hashes
  (:func:`crossfid.hashing.dataset_content_hash`, what ``freeze_dataset``
  uses), compared with ``datasets.content_hash``; also its frame, material and element
  counts, and that each membership row names its frame's material;
* for each frozen split of the dataset: its members are exactly the dataset's frames,
  and its content hash (:func:`crossfid.curation.splits.split_content_hash`);
* for each nested subset: its frames are distinct training frames, its content hash
  (:func:`crossfid.hashing.subset_content_hash`), and it holds the frames the
  seeded order gives (:func:`crossfid.curation.splits.nested_subsets`).

A frame whose data were changed keeps its old ``content_hash`` value unless the
tamperer also rewrote it; either way the recomputed dataset hash differs from the
stored one, so both kinds of change are reported as a MISMATCH of the dataset.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from crossfid.curation.datasets import DatasetError, resolve_dataset
from crossfid.curation.split_store import resolve_split
from crossfid.curation.splits import PARTS, nested_subsets, ratio_text, split_content_hash
from crossfid.db.models import Dataset, Split, SplitSubset
from crossfid.hashing import dataset_content_hash, subset_content_hash
from crossfid.ingest.records import Frame

__all__ = [
    "Check",
    "DatasetVerification",
    "VerificationError",
    "dataset_reference",
    "frame_hash_from_row",
    "require_verified_split",
    "verify_dataset",
    "verify_split",
]

#: frames read per round trip while streaming a dataset
BATCH_FRAMES = 2000
#: problems listed per object (the count is always given)
MAX_LISTED = 5

_AT_VERSION = re.compile(r"^(?P<name>[^@:/]+)@(?P<version>\d+)$")


class VerificationError(DatasetError):
    """Frozen data no longer match their stored hashes; ``str(error)`` says which and how."""


@dataclass
class Check:
    """One verified object: a dataset, a split or a nested subset."""

    kind: str  # "dataset", "split" or "subset"
    label: str
    stored: str | None
    computed: str | None
    problems: list[str] = field(default_factory=list)
    #: what was checked, for the OK line (e.g. "57 frames")
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and self.stored is not None and self.stored == self.computed

    def line(self) -> str:
        """``OK <object>: ...`` or ``MISMATCH <object>: <every problem>``."""
        if self.ok:
            return f"OK {self.label}: {self.summary}, content hash {self.stored}"
        problems = list(self.problems)
        if self.stored != self.computed:
            problems.insert(0, f"content hash stored {self.stored or 'none'}, recomputed {self.computed or 'none'}")
        return f"MISMATCH {self.label}: " + "; ".join(problems)


@dataclass
class DatasetVerification:
    """The checks of one dataset version and the splits verified with it."""

    dataset: str  # NAME:VERSION
    dataset_id: int
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def lines(self) -> list[str]:
        return [check.line() for check in self.checks]


# --------------------------------------------------------------------------- frames


_FRAME_COLUMNS = """
    SELECT df.frame_id, df.material_id, t.material_id AS task_material_id, f.content_hash, f.ionic_step,
           f.lattice, f.atomic_numbers, f.frac_coords, f.energy, f.forces, f.stress, f.magmoms,
           f.corrected_energy, f.n_electronic_steps, f.scf_converged
      FROM dataset_frames df
      JOIN frames f ON f.id = df.frame_id
      JOIN tasks t ON t.id = f.task_id
     WHERE df.dataset_id = :id
"""


def _array(value, dtype=float) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=dtype)


def frame_hash_from_row(row) -> str:
    """The content hash of a stored frame, recomputed with the ingestion recipe from its columns.

    ``row`` has the columns of ``frames`` (flat arrays as stored); the recipe is
    :meth:`crossfid.ingest.records.Frame.content_hash`, which hashes the exact float bytes,
    so an untouched frame gives back its stored ``content_hash``.
    """
    n = len(row.atomic_numbers)
    frame = Frame(
        ionic_step=int(row.ionic_step),
        lattice=np.reshape(np.asarray(row.lattice, dtype=float), (3, 3)),
        atomic_numbers=np.asarray(row.atomic_numbers, dtype=np.int16),
        frac_coords=np.reshape(np.asarray(row.frac_coords, dtype=float), (n, 3)),
        energy=None if row.energy is None else float(row.energy),
        forces=_array(row.forces),
        stress=_array(row.stress),
        magmoms=_array(row.magmoms),
        corrected_energy=None if row.corrected_energy is None else float(row.corrected_energy),
        n_electronic_steps=None if row.n_electronic_steps is None else int(row.n_electronic_steps),
        scf_converged=None if row.scf_converged is None else bool(row.scf_converged),
    )
    return frame.content_hash()


def _listed(items: list[str], total: int) -> str:
    more = f" and {total - len(items)} more" if total > len(items) else ""
    return ", ".join(items) + more


def _verify_frames(conn: Connection, dataset: Dataset) -> tuple[Check, dict[int, str]]:
    """Stream the dataset's frames, recompute their hashes; the dataset check and frame id → recomputed hash."""
    hashes: dict[int, str] = {}
    changed: list[str] = []
    n_changed = 0
    wrong_material: list[str] = []
    n_wrong_material = 0
    materials: set[int] = set()
    result = conn.execute(text(_FRAME_COLUMNS).execution_options(yield_per=BATCH_FRAMES), {"id": dataset.id})
    for row in result:
        recomputed = frame_hash_from_row(row)
        hashes[row.frame_id] = recomputed
        materials.add(row.material_id)
        if recomputed != row.content_hash:
            n_changed += 1
            if len(changed) < MAX_LISTED:
                changed.append(str(row.frame_id))
        if row.material_id != row.task_material_id:
            n_wrong_material += 1
            if len(wrong_material) < MAX_LISTED:
                wrong_material.append(str(row.frame_id))
    result.close()

    problems: list[str] = []
    if not dataset.frozen:
        problems.append("the dataset is not frozen")
    if n_changed:
        problems.append(
            f"{n_changed} of {len(hashes)} frames no longer match their content hash "
            f"(their stored data were changed; frame ids {_listed(changed, n_changed)})"
        )
    if n_wrong_material:
        problems.append(
            f"{n_wrong_material} memberships name another material than their frame's task "
            f"(frame ids {_listed(wrong_material, n_wrong_material)})"
        )
    if len(hashes) != dataset.n_frames:
        problems.append(f"{len(hashes)} member frames, the dataset records {dataset.n_frames}")
    if len(materials) != dataset.n_materials:
        problems.append(f"{len(materials)} materials, the dataset records {dataset.n_materials}")
    elements = sorted(
        set(
            conn.execute(
                text("SELECT DISTINCT unnest(elements) FROM materials WHERE id = ANY(:ids)"), {"ids": sorted(materials)}
            ).scalars()
        )
    )
    if elements != sorted(dataset.elements) or len(elements) != dataset.n_elements:
        problems.append(
            f"elements of its materials are {' '.join(elements)}, the dataset records {' '.join(dataset.elements)}"
        )
    check = Check(
        kind="dataset",
        label=f"dataset {dataset.name}:{dataset.version} (id {dataset.id})",
        stored=dataset.content_hash,
        computed=dataset_content_hash(hashes.values(), dataset.energy_label),
        problems=problems,
        summary=f"{len(hashes):,} frames",
    )
    return check, hashes


# --------------------------------------------------------------------------- splits


def _verify_split(conn: Connection, session: Session, dataset: Dataset, split: Split, hashes: dict[int, str]):
    ratios = ratio_text(split.ratios)
    label = f"split {split.id} of {dataset.name}:{dataset.version} ({split.strategy}, {ratios}, seed {split.seed})"
    members = conn.execute(
        text("SELECT frame_id, material_id, part FROM split_members WHERE split_id = :id"), {"id": split.id}
    ).all()
    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    train: dict[int, str] = {}
    foreign = [frame_id for frame_id, _, _ in members if frame_id not in hashes]
    for frame_id, _, part in members:
        if frame_id in hashes:
            parts[part].append(hashes[frame_id])
            if part == "train":
                train[frame_id] = hashes[frame_id]
    problems: list[str] = []
    if not split.frozen:
        problems.append("the split is not frozen")
    if foreign:
        shown = [str(i) for i in foreign[:MAX_LISTED]]
        problems.append(
            f"{len(foreign)} members are not frames of the dataset (frame ids {_listed(shown, len(foreign))})"
        )
    missing = len(hashes) - (len(members) - len(foreign))
    if missing:
        problems.append(f"{missing} frames of the dataset are in no part of the split")
    split_check = Check(
        kind="split",
        label=label,
        stored=split.content_hash,
        computed=split_content_hash(parts) if not foreign else None,
        problems=problems,
        summary="/".join(f"{len(parts[p]):,}" for p in PARTS) + " frames train/val/test",
    )

    checks = [split_check]
    subsets = session.scalars(select(SplitSubset).where(SplitSubset.split_id == split.id).order_by(SplitSubset.size))
    for subset in subsets:
        ids = list(subset.frame_ids)
        outside = [i for i in ids if i not in train]
        problems = []
        if outside:
            shown = [str(i) for i in outside[:MAX_LISTED]]
            problems.append(f"{len(outside)} frames are not training frames (frame ids {_listed(shown, len(outside))})")
        if len(set(ids)) != len(ids) or len(ids) != subset.size:
            problems.append(f"{len(ids)} frame ids ({len(set(ids))} distinct) for size {subset.size}")
        computed = None
        if not outside:
            members_hashes = [train[i] for i in ids]
            computed = subset_content_hash(members_hashes)
            if subset.size <= len(train):
                expected = nested_subsets(train.values(), [subset.size], split.seed)[subset.size]
                if Counter(expected) != Counter(members_hashes):
                    problems.append("its frames are not the first frames of the seeded training order")
        checks.append(
            Check(
                kind="subset",
                label=f"subset {subset.size} of split {split.id}",
                stored=subset.content_hash,
                computed=computed,
                problems=problems,
                summary=f"{len(ids):,} training frames",
            )
        )
    return checks


# --------------------------------------------------------------------------- entry points


def dataset_reference(ref: str | int) -> str | int:
    """``NAME@VERSION`` is accepted beside the usual ``NAME:VERSION`` (``NAME``: latest; an id)."""
    if isinstance(ref, str):
        match = _AT_VERSION.match(ref.strip())
        if match:
            return f"{match['name']}:{match['version']}"
    return ref


def verify_dataset(engine: Engine, ref: str | int, *, splits: Iterable[int] | None = None) -> DatasetVerification:
    """Recompute the hashes of dataset version ``ref`` and of its frozen splits (or only the ``splits`` ids).

    Reads only; a mismatch is reported in the result (``ok`` False), never raised.
    """
    with engine.connect() as conn:
        session = Session(bind=conn)
        dataset = resolve_dataset(session, dataset_reference(ref))
        dataset_check, hashes = _verify_frames(conn, dataset)
        checks = [dataset_check]
        query = select(Split).where(Split.dataset_id == dataset.id).order_by(Split.id)
        which = Split.frozen if splits is None else Split.id.in_(list(splits))
        for split in session.scalars(query.where(which)).all():
            checks += _verify_split(conn, session, dataset, split, hashes)
        return DatasetVerification(f"{dataset.name}:{dataset.version}", dataset.id, checks)


def verify_split(engine: Engine, split_ref: str | int) -> DatasetVerification:
    """Verify one split and the dataset version it splits (see :func:`verify_dataset`)."""
    with Session(engine) as session:
        split = resolve_split(session, split_ref)
        split_id, dataset_id = split.id, split.dataset_id
    return verify_dataset(engine, dataset_id, splits=[split_id])


def require_verified_split(engine: Engine, split_ref: str | int) -> DatasetVerification:
    """:func:`verify_split`, raising :class:`VerificationError` (naming every mismatch) unless all match."""
    result = verify_split(engine, split_ref)
    if not result.ok:
        failed = " | ".join(check.line() for check in result.failed)
        raise VerificationError(
            f"dataset {result.dataset} or its split failed verification, refusing to use it: {failed} "
            f"(details: crossfid dataset verify {result.dataset})"
        )
    return result
