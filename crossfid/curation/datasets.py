"""Dataset versions in the database: the accepted frames of a curation run, frozen and content-hashed.

``freeze_dataset`` turns the frames a curation run accepted (``frame_decisions.accepted``),
optionally only those of some task fidelities, into a new version of a named dataset,
in ONE transaction: the ``datasets`` row, its members (``dataset_frames``, by ``COPY``),
the counts, the elements and the content hash, then ``frozen = true``. From then on the
database itself refuses any change to the row, its membership, its frames and their tasks
and materials, and its curation run's decisions (triggers of revisions 0002 and 0006), so
a dataset version is immutable; :mod:`crossfid.curation.verify` recomputes its hash from
the stored frames to catch changes made with the triggers disabled.

The training energy is chosen when freezing (``energy_label``, stored in
``datasets.energy_label``): ``uncorrected`` (the frames' DFT energy) or ``mp2020`` (the
source's Materials Project 2020 corrected energy; every member frame must have one). A
dataset never mixes the two, nor frames whose energies are different VASP quantities
(``tasks.energy_quantity``). :func:`training_energy_sql` is the one place that turns the
label into the energy column that training and AtomRef fits read.

Content hash recipe (``crossfid-dataset-v2 <label>``, :func:`crossfid.hashing.dataset_content_hash`),
identical in every database because it only uses the label and the frames' own content hashes
(:func:`crossfid.hashing.frame_content_hash`), never database ids::

    sha256( b"crossfid-dataset-v2 uncorrected\\n"
            + b"".join(h.encode("ascii") + b"\\n" for h in sorted(frame_content_hashes)) )

``sorted`` is Python's code-point order of the 64-character lower-case hex digests;
the list is a multiset (two members with identical content both count). The result
is the lower-case hex digest. Datasets frozen before labels were chosen (``energy_label``
NULL) use the domain ``crossfid-dataset-v1``. Nested training subsets of splits use the same recipe
with the domain ``crossfid-subset-v1`` (:func:`crossfid.hashing.hash_of_hashes`).
A version's details with its splits: :func:`crossfid.curation.split_store.show_dataset`.

Dataset references (:func:`resolve_dataset`): ``"NAME"`` (latest version),
``"NAME:VERSION"`` or the numeric id (``17`` or ``"17"``). Names start with a letter
or digit, contain only letters, digits, ``.``, ``_`` and ``-``, and are not all digits.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.orm import Session

from crossfid.db.bulk import copy_rows
from crossfid.db.models import CurationRun, Dataset, Split
from crossfid.errors import InputError
from crossfid.hashing import dataset_content_hash
from crossfid.vocabulary import ENERGY_LABELS, FIDELITY_NAMES, is_fidelity

__all__ = [
    "DatasetError",
    "DatasetInfo",
    "as_session",
    "freeze_dataset",
    "training_energy_sql",
    "list_datasets",
    "resolve_dataset",
    "validate_name",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DatasetError(InputError):
    """A dataset request that cannot be honoured; ``str(error)`` is a one-line reason."""


# --------------------------------------------------------------------------- names


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid dataset name, else raise :class:`DatasetError`."""
    if not isinstance(name, str) or not _NAME.match(name) or name.isdigit():
        raise DatasetError(
            f"invalid dataset name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, not only digits)"
        )
    return name


# --------------------------------------------------------------------------- results


@dataclass
class DatasetInfo:
    """A dataset version as stored (counts of frames and materials; ``elements`` sorted symbols)."""

    id: int
    name: str
    version: int
    fidelities: list[str]
    curation_run_id: int
    config_hash: str
    content_hash: str | None
    n_frames: int
    n_materials: int
    n_elements: int
    elements: list[str]
    frozen: bool
    created_at: dt.datetime | None = None
    n_splits: int = 0
    #: the training energy chosen at freezing (None: frozen before labels were chosen)
    energy_label: str | None = None
    #: other versions (``NAME:VERSION``) with the same content hash (set by :func:`freeze_dataset`)
    identical_to: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def from_row(cls, row: Dataset, n_splits: int = 0) -> DatasetInfo:
        return cls(
            id=row.id,
            name=row.name,
            version=row.version,
            fidelities=list(row.fidelities),
            curation_run_id=row.curation_run_id,
            config_hash=row.config_hash,
            content_hash=row.content_hash,
            n_frames=row.n_frames,
            n_materials=row.n_materials,
            n_elements=row.n_elements,
            elements=list(row.elements),
            frozen=row.frozen,
            created_at=row.created_at,
            n_splits=n_splits,
            energy_label=row.energy_label,
        )


# --------------------------------------------------------------------------- freezing


def training_energy_sql(energy_label: str | None, frames: str = "f") -> str:
    """The SQL expression (eV, total) of a frame's training energy under a dataset's ``energy_label``.

    ``frames`` is the alias of the ``frames`` table. NULL label: datasets frozen before the label
    was chosen, whose label was the corrected energy where a frame had one.
    """
    if energy_label is None:
        return f"coalesce({frames}.corrected_energy, {frames}.energy)"
    if energy_label == "uncorrected":
        return f"{frames}.energy"
    if energy_label == "mp2020":
        return f"{frames}.corrected_energy"
    raise DatasetError(f"unknown energy label {energy_label!r}; one of {', '.join(ENERGY_LABELS)}")


def freeze_dataset(
    engine: Engine,
    run_id: int,
    name: str,
    fidelities: Sequence[str] | None = None,
    *,
    energy_label: str,
) -> DatasetInfo:
    """Freeze the frames curation run ``run_id`` accepted as the next version of dataset ``name``.

    ``energy_label``: the training energy, ``uncorrected`` or ``mp2020`` (every member frame
    must then have a corrected energy); members whose tasks state different VASP energy
    quantities are refused too, so a dataset never mixes energies.

    ``fidelities``: keep only frames whose task has one of these fidelities (names of
    the vocabulary; they must be fidelities of the run); None keeps every accepted
    frame. The version is 1 + the highest existing version of ``name``. The row, its
    members, counts, elements and content hash are written and frozen in one
    transaction; a run that is not completed, or a selection without frames, is a
    :class:`DatasetError` and writes nothing.
    """
    validate_name(name)
    if energy_label not in ENERGY_LABELS:
        raise DatasetError(f"unknown energy label {energy_label!r}; one of {', '.join(ENERGY_LABELS)}")
    wanted = _check_fidelities(fidelities)
    with engine.begin() as conn:
        session = as_session(conn)
        run = session.get(CurationRun, run_id)
        if run is None:
            raise DatasetError(f"curation run {run_id} does not exist")
        if run.status != "completed":
            raise DatasetError(f"curation run {run_id} is {run.status}: only a completed run can be frozen")
        if wanted is not None:
            foreign = [f for f in wanted if f not in run.fidelities]
            if foreign:
                raise DatasetError(
                    f"curation run {run_id} curated {', '.join(run.fidelities)}, not {', '.join(foreign)}"
                )
        # one freezer per name at a time, so that two concurrent freezes get consecutive versions
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"crossfid:{name}"})
        members = conn.exec_driver_sql(
            """
            SELECT f.id, t.material_id, f.content_hash, t.fidelity, f.corrected_energy IS NOT NULL, t.energy_quantity
              FROM frame_decisions d
              JOIN frames f ON f.id = d.frame_id
              JOIN tasks t ON t.id = f.task_id
             WHERE d.run_id = %(run)s AND d.accepted
               AND (%(fidelities)s::text[] IS NULL OR t.fidelity = ANY(%(fidelities)s::text[]))
            """,
            {"run": run_id, "fidelities": wanted},
        ).all()
        if not members:
            which = f" at fidelity {', '.join(wanted)}" if wanted else ""
            raise DatasetError(f"curation run {run_id} accepted no frames{which}: nothing to freeze")
        _check_energies(members, energy_label)

        version = conn.scalar(select(func.coalesce(func.max(Dataset.version), 0) + 1).where(Dataset.name == name))
        dataset_id = conn.scalar(
            insert(Dataset)
            .values(
                name=name,
                version=version,
                fidelities=sorted({row[3] for row in members}),
                curation_run_id=run_id,
                config=run.config,
                config_hash=run.config_hash,
                energy_label=energy_label,
            )
            .returning(Dataset.id)
        )
        copy_rows(
            conn,
            "dataset_frames",
            ((dataset_id, row[0], row[1]) for row in members),
            ["dataset_id", "frame_id", "material_id"],
        )
        material_ids = sorted({row[1] for row in members})
        element_lists = conn.exec_driver_sql(
            "SELECT DISTINCT unnest(elements) FROM materials WHERE id = ANY(%(ids)s)", {"ids": material_ids}
        ).scalars()
        elements = sorted(set(element_lists))
        content_hash = dataset_content_hash((row[2] for row in members), energy_label)
        conn.execute(
            update(Dataset)
            .where(Dataset.id == dataset_id)
            .values(
                content_hash=content_hash,
                n_frames=len(members),
                n_materials=len(material_ids),
                n_elements=len(elements),
                elements=elements,
                frozen=True,
            )
        )
        info = DatasetInfo.from_row(session.get(Dataset, dataset_id))
        same = conn.execute(
            select(Dataset.name, Dataset.version).where(Dataset.content_hash == content_hash, Dataset.id != dataset_id)
        ).all()
        info.identical_to = sorted(f"{n}:{v}" for n, v in same)
    return info


def _check_energies(members: Sequence[Any], energy_label: str) -> None:
    """Refuse a selection whose frames cannot share one training energy (rows: …, has corrected, quantity)."""
    quantities: dict[str, int] = {}
    for row in members:
        quantities[row[5]] = quantities.get(row[5], 0) + 1
    known = {q: n for q, n in quantities.items() if q != "unknown"}
    if len(known) > 1:
        counts = ", ".join(f"{n:,} {q}" for q, n in sorted(known.items()))
        raise DatasetError(
            f"the frames' energies are different VASP quantities ({counts} frames): "
            "freeze them as separate datasets (--fidelity) or re-ingest them with one quantity"
        )
    if energy_label == "mp2020":
        missing = [row for row in members if not row[4]]
        if missing:
            fidelities = sorted({row[3] for row in missing})
            raise DatasetError(
                f"{len(missing):,} of {len(members):,} frames ({', '.join(fidelities)}) have no MP2020-corrected "
                "energy: freeze with --energy-label uncorrected, or select fidelities whose frames all have one"
            )


def _check_fidelities(fidelities: Sequence[str] | None) -> list[str] | None:
    if fidelities is None:
        return None
    if isinstance(fidelities, str):
        fidelities = [fidelities]
    wanted = sorted(set(fidelities))
    if not wanted:
        return None
    unknown = [f for f in wanted if not is_fidelity(f)]
    if unknown:
        raise DatasetError(
            f"unknown fidelity {', '.join(unknown)}; known: {', '.join(FIDELITY_NAMES)} or FUNCTIONAL[+U][-DISPERSION]"
        )
    return wanted


# --------------------------------------------------------------------------- lookup


def as_session(conn: Connection | Session) -> Session:
    """``conn`` itself if it is a ``Session``, else a ``Session`` bound to the connection."""
    return conn if isinstance(conn, Session) else Session(bind=conn)


def resolve_dataset(conn: Connection | Session, ref: str | int) -> Dataset:
    """The dataset version ``ref`` names: ``"NAME"`` (latest), ``"NAME:VERSION"`` or an id."""
    session = as_session(conn)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        row = session.get(Dataset, int(ref))
        if row is None:
            raise DatasetError(f"no dataset with id {ref}")
        return row
    if not isinstance(ref, str) or not ref.strip():
        raise DatasetError(f"invalid dataset reference {ref!r}")
    name, sep, version = ref.strip().partition(":")
    query = select(Dataset).where(Dataset.name == name)
    if sep:
        if not version.isdigit():
            raise DatasetError(f"invalid dataset reference {ref!r}: expected NAME:VERSION with an integer version")
        row = session.scalars(query.where(Dataset.version == int(version))).one_or_none()
    else:
        row = session.scalars(query.order_by(Dataset.version.desc()).limit(1)).one_or_none()
    if row is None:
        names = sorted(set(session.scalars(select(Dataset.name))))
        known = f"; datasets: {', '.join(names)}" if names else "; there are no datasets yet"
        raise DatasetError(f"no dataset {ref!r}{known}")
    return row


def list_datasets(engine: Engine) -> list[DatasetInfo]:
    """Every dataset version, by name then version, with its number of splits."""
    with engine.connect() as conn:
        session = as_session(conn)
        n_splits = dict(session.execute(select(Split.dataset_id, func.count()).group_by(Split.dataset_id)).all())
        rows = session.scalars(select(Dataset)).all()
        infos = [DatasetInfo.from_row(row, n_splits.get(row.id, 0)) for row in rows]
    return sorted(infos, key=lambda info: (info.name, info.version))
