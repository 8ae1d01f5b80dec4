"""AtomRefs in the database: register chgnet's shipped ones, fit one on a split, resolve and load them.

Every stored AtomRef carries what it came from (split and dataset ids and content
hashes, the weighting, the fill and prior AtomRefs) and is immutable. A fit is
keyed by ``fit_key`` = SHA-256 of its inputs' hashes and settings, so fitting the
same split the same way again returns the existing row instead of a duplicate,
also when two processes fit at once.

Energy label: the frame's corrected energy when it has one (MP2020 for MP's
GGA/GGA+U), else its uncorrected energy, per atom: CHGNet's training label, so the
AtomRef fits exactly what a model trained on the split sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

import crossfid
from crossfid.curation.datasets import training_energy_sql
from crossfid.curation.split_store import resolve_split
from crossfid.db.models import AtomRefRow, Dataset, Split
from crossfid.errors import InputError
from crossfid.hashing import atomref_values_hash, json_digest
from crossfid.potentials.chgnet import SHIPPED_MODELS, chgnet_version
from crossfid.referencing.atomref import (
    AtomRefFit,
    Weighting,
    fit_atomref,
    values_from_list,
    values_to_list,
)
from crossfid.referencing.composition import SYMBOLS, column_of, composition_matrix
from crossfid.referencing.package_atomrefs import PACKAGE_ATOMREFS, package_atomref_values

#: a shipped AtomRef value this close to 0 eV/atom was never fitted (the element was not in its training data)
UNFITTED_BELOW = 1e-6

#: bump when the fit or its inputs change meaning, so old fit keys no longer match
FIT_VERSION = 1
ENERGY_LABEL = "corrected energy per atom when present, else uncorrected (CHGNet's training label)"


class AtomRefStoreError(InputError):
    """An AtomRef that does not exist, a name already taken, or a fit without data."""


@dataclass(frozen=True)
class StoredAtomRef:
    """An AtomRef row with its values as an array (eV/atom, NaN where absent)."""

    id: int
    name: str
    kind: str
    fidelities: tuple[str, ...]
    values: np.ndarray
    values_hash: str
    elements: tuple[str, ...]
    absent: tuple[str, ...]
    unidentifiable: tuple[str, ...]
    filled: tuple[str, ...]
    dataset: str | None
    split_id: int | None
    part: str | None
    weighting: str | None
    n_frames: int | None
    n_materials: int | None
    rank: int | None
    mae: float | None
    rmse: float | None
    max_abs_error: float | None
    statistics: dict[str, Any]
    provenance: dict[str, Any]

    @classmethod
    def from_row(cls, row: AtomRefRow, dataset: str | None = None) -> StoredAtomRef:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            fidelities=tuple(row.fidelities),
            values=values_from_list(row.energies),
            values_hash=row.values_hash,
            elements=tuple(row.elements),
            absent=tuple(row.absent_elements),
            unidentifiable=tuple(row.unidentifiable_elements),
            filled=tuple(row.filled_elements),
            dataset=dataset,
            split_id=row.split_id,
            part=row.part,
            weighting=row.weighting,
            n_frames=row.n_frames,
            n_materials=row.n_materials,
            rank=row.rank,
            mae=row.mae,
            rmse=row.rmse,
            max_abs_error=row.max_abs_error,
            statistics=dict(row.statistics or {}),
            provenance=dict(row.provenance or {}),
        )


def _dataset_label(session: Session, dataset_id: int | None) -> str | None:
    if dataset_id is None:
        return None
    dataset = session.get(Dataset, dataset_id)
    return f"{dataset.name}:{dataset.version}" if dataset else None


def _stored(session: Session, row: AtomRefRow) -> StoredAtomRef:
    return StoredAtomRef.from_row(row, _dataset_label(session, row.dataset_id))


# --------------------------------------------------------------------------- package AtomRefs


def ensure_package_atomref(session: Session, name: str) -> StoredAtomRef:
    """Register (once) and return an AtomRef shipped with chgnet (``chgnet-0.3.0``, ``chgnet-r2scan``).

    If a row of that name exists with other values (chgnet was upgraded and its
    model changed), that is an error rather than a silent switch.
    """
    ref = PACKAGE_ATOMREFS[name]
    row = session.scalars(select(AtomRefRow).where(AtomRefRow.name == name)).one_or_none()
    if row is not None and row.provenance.get("chgnet_version") == chgnet_version():
        return _stored(session, row)  # registered from this chgnet: no need to load the model again
    values = package_atomref_values(name)
    digest = atomref_values_hash(values)
    fitted = np.isfinite(values) & (np.abs(values) > UNFITTED_BELOW)
    present = [s for s, ok in zip(SYMBOLS, fitted, strict=True) if ok]
    absent = [s for s, ok in zip(SYMBOLS, fitted, strict=True) if not ok]
    stmt = (
        insert(AtomRefRow)
        .values(
            name=name,
            kind="package",
            fidelities=list(ref.fidelities),
            energies=values_to_list(values),
            values_hash=digest,
            elements=present,
            absent_elements=absent,
            solver="shipped with chgnet",
            provenance={
                "description": ref.description,
                "chgnet_version": chgnet_version(),
                "model": SHIPPED_MODELS[name].load_call,
                "composition_model": ref.composition_model,
            },
            fit_key=json_digest({"package": name, "values_hash": digest}),
            crossfid_version=crossfid.__version__,
        )
        .on_conflict_do_nothing()
    )
    session.execute(stmt)
    row = session.scalars(select(AtomRefRow).where(AtomRefRow.name == name)).one()
    if row.values_hash != digest:
        raise AtomRefStoreError(
            f"AtomRef {name!r} is stored with other values than the installed chgnet {chgnet_version()} ships "
            f"(stored {row.values_hash[:12]}, installed {digest[:12]})"
        )
    return _stored(session, row)


def ensure_package_atomrefs(session: Session) -> list[StoredAtomRef]:
    """Register both shipped AtomRefs."""
    return [ensure_package_atomref(session, name) for name in PACKAGE_ATOMREFS]


# --------------------------------------------------------------------------- resolving


def resolve_atomref(session: Session, ref: str | int) -> StoredAtomRef:
    """An AtomRef by id or name; chgnet's shipped ones are registered on first use."""
    if isinstance(ref, int) or str(ref).strip().isdigit():
        row = session.get(AtomRefRow, int(ref))
        if row is None:
            raise AtomRefStoreError(f"no AtomRef with id {ref}")
        return _stored(session, row)
    name = str(ref).strip()
    row = session.scalars(select(AtomRefRow).where(AtomRefRow.name == name)).one_or_none()
    if row is None and name in PACKAGE_ATOMREFS:
        return ensure_package_atomref(session, name)
    if row is None:
        names = list(session.scalars(select(AtomRefRow.name).order_by(AtomRefRow.id)))
        known = sorted(set(names) | set(PACKAGE_ATOMREFS))
        raise AtomRefStoreError(f"no AtomRef {name!r}; known: {', '.join(known)}")
    return _stored(session, row)


def list_atomrefs(session: Session) -> list[StoredAtomRef]:
    rows = session.scalars(select(AtomRefRow).order_by(AtomRefRow.id)).all()
    return [_stored(session, row) for row in rows]


# --------------------------------------------------------------------------- fitting on a split


@dataclass(frozen=True)
class SplitFrames:
    """Frames of one part of a split: composition (n, 94), energy label (eV/atom), material and frame hashes."""

    composition: np.ndarray
    energy_per_atom: np.ndarray
    materials: list[str]
    frame_hashes: list[str]
    fidelities: tuple[str, ...]


def split_frames(session: Session, split_id: int, part: str = "train") -> SplitFrames:
    """Read the frames of a split part in a stable order (by frame content hash); labels as the dataset chose."""
    split = session.get(Split, split_id)
    if split is None:
        raise InputError(f"no split with id {split_id}")
    energy = training_energy_sql(session.get(Dataset, split.dataset_id).energy_label)
    rows = session.execute(
        text(
            f"""
            SELECT f.atomic_numbers, {energy} / f.n_atoms AS label,
                   m.external_id, f.content_hash, t.fidelity
            FROM split_members sm
            JOIN frames f ON f.id = sm.frame_id
            JOIN tasks t ON t.id = f.task_id
            JOIN materials m ON m.id = sm.material_id
            WHERE sm.split_id = :split AND sm.part = :part
            ORDER BY f.content_hash, f.id
            """
        ),
        {"split": split_id, "part": part},
    ).all()
    return SplitFrames(
        composition=composition_matrix(r[0] for r in rows),
        energy_per_atom=np.array([r[1] for r in rows], dtype=float),
        materials=[r[2] for r in rows],
        frame_hashes=[r[3] for r in rows],
        fidelities=tuple(sorted({r[4] for r in rows})),
    )


def _default_name(dataset: Dataset, split: Split, part: str, weighting: str, extra: str) -> str:
    name = f"{dataset.name}:{dataset.version}/split-{split.id}/{part}"
    if weighting != "frame":
        name += f"/{weighting}-weighted"
    return name + extra


def fit_split_atomref(
    engine: Engine,
    split_ref: str | int,
    *,
    part: str = "train",
    weighting: Weighting = "frame",
    fill_from: str | int | None = None,
    prior: str | int | None = None,
    prior_weight: float = 0.0,
    name: str | None = None,
) -> tuple[StoredAtomRef, bool]:
    """Fit an AtomRef on one part of a split and store it; returns (the AtomRef, whether it is new).

    ``fill_from``: an AtomRef whose values are given to elements absent from the
    data; ``prior``: an AtomRef that unidentifiable combinations are pulled towards;
    ``prior_weight``: rows of the pure element the prior also counts as for every
    fitted element (a ridge towards it, see :func:`crossfid.referencing.atomref.fit_atomref`).
    """
    if part not in ("train", "val", "test"):
        raise AtomRefStoreError(f"unknown split part {part!r} (train, val or test)")
    with Session(engine) as session, session.begin():
        split = resolve_split(session, split_ref)
        dataset = session.get(Dataset, split.dataset_id)
        if split.content_hash is None:
            raise AtomRefStoreError(f"split {split.id} is not frozen: only frozen splits can be fitted on")
        fill = resolve_atomref(session, fill_from) if fill_from is not None else None
        pri = resolve_atomref(session, prior) if prior is not None else None
        if prior_weight and pri is None:
            raise AtomRefStoreError("--prior-weight needs --prior (the AtomRef to pull towards)")
        key_fields = {
            "fit_version": FIT_VERSION,
            "split_hash": split.content_hash,
            "part": part,
            "weighting": weighting,
            "fill": fill.values_hash if fill else None,
            "prior": pri.values_hash if pri else None,
        }
        if prior_weight:  # absent when 0, so the keys of the fits made before the option still match
            key_fields["prior_weight"] = float(prior_weight)
        key = json_digest(key_fields)
        existing = session.scalars(select(AtomRefRow).where(AtomRefRow.fit_key == key)).one_or_none()
        if existing is not None:
            return _stored(session, existing), False
        data = split_frames(session, split.id, part)
        if len(data.energy_per_atom) == 0:
            raise AtomRefStoreError(f"split {split.id} has no {part} frames to fit on")
        fit = fit_atomref(
            data.composition,
            data.energy_per_atom,
            groups=data.materials,
            weighting=weighting,
            prior=None if pri is None else pri.values,
            prior_weight=prior_weight,
            fill=None if fill is None else _fill_values(fill),
        )
        extra = "".join(f"/{label}-{ref.name}" for label, ref in (("fill", fill), ("prior", pri)) if ref)
        extra += f"-w{prior_weight:g}" if prior_weight else ""
        row_name = name or _default_name(dataset, split, part, weighting, extra)
        row = _insert_fit(
            session,
            fit,
            name=row_name,
            kind="split",
            fidelities=list(data.fidelities or dataset.fidelities),
            key=key,
            dataset=dataset,
            split=split,
            part=part,
            fill=fill,
            prior=pri,
            provenance={
                "energy_label": ENERGY_LABEL,
                "fit_version": FIT_VERSION,
                "fill_from": None if fill is None else fill.name,
                "prior": None if pri is None else pri.name,
                "prior_weight": float(prior_weight),
            },
        )
        return _stored(session, row), True


def _fill_values(fill: StoredAtomRef) -> np.ndarray:
    """A fill AtomRef's values with its own absent elements as NaN, so they are never copied as zeros."""
    values = fill.values.copy()
    for symbol in fill.absent:
        values[column_of(symbol)] = np.nan
    return values


def store_entries_fit(
    session: Session,
    fit: AtomRefFit,
    *,
    fidelities: Sequence[str],
    input_hash: str,
    dataset: Dataset | None = None,
    provenance: dict[str, Any] | None = None,
) -> StoredAtomRef:
    """Store (once) an AtomRef fitted on reference entries, keyed by the hash of its input data."""
    key = json_digest({"fit_version": FIT_VERSION, "entries": input_hash, "weighting": fit.weighting})
    existing = session.scalars(select(AtomRefRow).where(AtomRefRow.fit_key == key)).one_or_none()
    if existing is not None:
        return _stored(session, existing)
    name = f"entries:{'/'.join(fidelities)}:{input_hash[:12]}"
    row = _insert_fit(
        session,
        fit,
        name=name,
        kind="entries",
        fidelities=list(fidelities),
        key=key,
        dataset=dataset,
        provenance={"input_hash": input_hash, "fit_version": FIT_VERSION, **(provenance or {})},
    )
    return _stored(session, row)


def _insert_fit(
    session: Session,
    fit: AtomRefFit,
    *,
    name: str,
    kind: str,
    fidelities: list[str],
    key: str,
    dataset: Dataset | None = None,
    split: Split | None = None,
    part: str | None = None,
    fill: StoredAtomRef | None = None,
    prior: StoredAtomRef | None = None,
    provenance: dict[str, Any] | None = None,
) -> AtomRefRow:
    taken = session.scalars(select(AtomRefRow).where(AtomRefRow.name == name)).one_or_none()
    if taken is not None and taken.fit_key != key:
        raise AtomRefStoreError(f"an AtomRef named {name!r} already exists (id {taken.id}); choose another --name")
    stmt = (
        insert(AtomRefRow)
        .values(
            name=name,
            kind=kind,
            fidelities=fidelities,
            energies=values_to_list(fit.values),
            values_hash=fit.values_hash,
            elements=list(fit.elements),
            absent_elements=list(fit.absent),
            unidentifiable_elements=list(fit.unidentifiable),
            filled_elements=list(fit.filled),
            fill_from_id=None if fill is None else fill.id,
            prior_id=None if prior is None else prior.id,
            dataset_id=None if dataset is None else dataset.id,
            split_id=None if split is None else split.id,
            part=part,
            dataset_hash=None if dataset is None else dataset.content_hash,
            split_hash=None if split is None else split.content_hash,
            weighting=fit.weighting,
            n_frames=fit.n_rows,
            n_materials=fit.n_materials,
            rank=fit.rank,
            mae=fit.mae,
            rmse=fit.rmse,
            max_abs_error=fit.max_abs_error,
            solver=fit.solver,
            statistics=fit.statistics(),
            provenance=provenance or {},
            fit_key=key,
            crossfid_version=crossfid.__version__,
        )
        .on_conflict_do_nothing(index_elements=["fit_key"])
    )
    session.execute(stmt)
    return session.scalars(select(AtomRefRow).where(AtomRefRow.fit_key == key)).one()


def list_all_atomrefs(engine: Engine) -> list[StoredAtomRef]:
    """Every stored AtomRef, chgnet's shipped ones registered first (one transaction)."""
    with Session(engine) as session, session.begin():
        ensure_package_atomrefs(session)
        return list_atomrefs(session)


def load_atomrefs(engine: Engine, *refs: str | int) -> list[StoredAtomRef]:
    """The AtomRefs named by id or name, in the order given (see :func:`resolve_atomref`)."""
    with Session(engine) as session, session.begin():
        return [resolve_atomref(session, ref) for ref in refs]
