"""SQLAlchemy 2.0 ORM models of the ingestion core.

The schema itself is owned by Alembic (``migrations/``); these models mirror it
exactly (a test runs Alembic's autogenerate comparison and requires no
difference). Integrity lives in the database: foreign keys, unique keys that make
re-ingestion idempotent, and CHECK constraints on shapes and finiteness.

Array layout (all PostgreSQL ``double precision[]``, one dimension, row-major):

* ``lattice``: 9 values, lattice vectors a, b, c as rows, Å
* ``frac_coords``: 3 × n_atoms fractional coordinates
* ``forces``: 3 × n_atoms, eV/Å
* ``stress``: 9 values, 3×3 tensor in GPa with the physical sign convention of
  ASE and CHGNet (tensile positive; VASP's kBar output is converted as
  ``stress_GPa = -0.1 × stress_kBar``)
* ``magmoms``: n_atoms values, μB
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from crossfid.vocabulary import (
    COMPRESSIONS,
    ENERGY_LABELS,
    ENERGY_QUANTITIES,
    FIDELITY_FAMILIES,
    MATERIAL_RULES,
    METHOD_NAMES,
    MODEL_KINDS,
    MODEL_ROLES,
    RUN_STATUSES,
    TASK_TYPES,
    TRAINING_STATUSES,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Float8 = DOUBLE_PRECISION


class Float8Array(TypeDecorator):
    """``double precision[]`` that accepts any numeric sequence (lists of ints, numpy arrays of
    any shape) and stores it flattened, row-major, as Python floats."""

    impl = ARRAY(DOUBLE_PRECISION)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return [float(x) for x in np.asarray(value, dtype=float).ravel()]


def finite(column: str) -> str:
    """SQL that is true when a float8 column is NULL or finite (not NaN, not ±Infinity)."""
    return f"{column} IS NULL OR {column} NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"


def finite_array(column: str) -> str:
    """SQL that is true when a float8[] column is NULL or holds only finite values."""
    return f"{column} IS NULL OR crossfid_all_finite({column})"


def hex64(column: str) -> str:
    """SQL that is true for a lower-case hex SHA-256 (cheaper per row than a regular expression)."""
    return f"length({column}) = 64 AND ltrim({column}, '0123456789abcdef') = ''"


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL that is true when a text column holds one of ``values`` (a vocabulary of :mod:`crossfid.vocabulary`)."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def created_at() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Fidelity(Base):
    """A fidelity: the seeded list, and every composed one (functional ± U ± dispersion) the loader met.

    ``exact_exchange`` is a fraction, ``screening`` in 1/Å (hybrids only); ``parameters``
    holds the INCAR tags that identify the functional (see :func:`crossfid.vocabulary.fidelity_spec`).
    """

    __tablename__ = "fidelities"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    family: Mapped[str] = mapped_column(Text, nullable=False)
    hubbard: Mapped[bool] = mapped_column(Boolean, nullable=False)
    dispersion: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    functional: Mapped[str | None] = mapped_column(Text)
    exact_exchange: Mapped[float | None] = mapped_column(Float8)
    screening: Mapped[float | None] = mapped_column(Float8)
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (
        CheckConstraint(one_of("family", FIDELITY_FAMILIES), name="family"),
        CheckConstraint(
            "exact_exchange IS NULL OR (exact_exchange >= 0 AND exact_exchange <= 1)", name="exact_exchange_fraction"
        ),
        CheckConstraint("screening IS NULL OR screening >= 0", name="screening_non_negative"),
    )


class Source(Base):
    """Where data comes from (``materials-project``, ``mptrj``, ``demo``, a VASP tree ...)."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()


class IngestRun(Base):
    """One ``crossfid ingest`` invocation: what was asked, what it added."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), nullable=False, index=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="running")
    arguments: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    crossfid_version: Mapped[str] = mapped_column(Text, nullable=False)
    hostname: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    n_tasks_added: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_frames_added: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_reference_entries_added: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_already_present: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_quarantined: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(one_of("status", RUN_STATUSES), name="status"),
        CheckConstraint(
            "n_tasks_added >= 0 AND n_frames_added >= 0 AND n_reference_entries_added >= 0 "
            "AND n_already_present >= 0 AND n_quarantined >= 0",
            name="counts_non_negative",
        ),
    )


class RawDocument(Base):
    """An original input record, content-addressed by the SHA-256 of its uncompressed bytes."""

    __tablename__ = "raw_documents"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sha256: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), nullable=False, index=True)
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id", ondelete="SET NULL"), index=True)
    format: Mapped[str] = mapped_column(Text, nullable=False)
    compression: Mapped[str] = mapped_column(Text, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    location: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        CheckConstraint(hex64("sha256"), name="sha256_hex"),
        CheckConstraint(one_of("compression", COMPRESSIONS), name="compression"),
        CheckConstraint("size_bytes >= 0", name="size_non_negative"),
    )


class Material(Base):
    """A material (e.g. ``mp-149``): formula, chemical system and elements for filtering."""

    __tablename__ = "materials"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    external_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    formula: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    chemsys: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    elements: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    n_elements: Mapped[int] = mapped_column(Integer, Computed("cardinality(elements)", persisted=True))
    created_at: Mapped[dt.datetime] = created_at()

    tasks: Mapped[list[Task]] = relationship(back_populates="material")

    __table_args__ = (
        Index("ix_materials_elements", "elements", postgresql_using="gin"),
        CheckConstraint("cardinality(elements) > 0", name="has_elements"),
        CheckConstraint("chemsys = array_to_string(elements, '-')", name="chemsys_matches_elements"),
    )


class Task(Base):
    """One DFT calculation of a material at one fidelity (a relaxation or a static run)."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id", ondelete="CASCADE"), nullable=False)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), nullable=False)
    external_id: Mapped[str] = mapped_column(Text, nullable=False)
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id", ondelete="SET NULL"), index=True)
    raw_document_id: Mapped[int | None] = mapped_column(ForeignKey("raw_documents.id", ondelete="SET NULL"), index=True)
    fidelity: Mapped[str] = mapped_column(ForeignKey("fidelities.name"), nullable=False, index=True)
    run_type: Mapped[str] = mapped_column(Text, nullable=False)
    source_run_type: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(Text, nullable=False)
    input_parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    hubbards: Mapped[dict[str, float] | None] = mapped_column(JSONB)
    is_hubbard: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    code: Mapped[str] = mapped_column(Text, nullable=False, server_default="VASP")
    code_version: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: how the task got its material (MATERIAL_RULES); NULL for tasks stored before revision 0009
    material_rule: Mapped[str | None] = mapped_column(Text)
    #: stored from a document with only its output (no ionic steps): one frame, no trajectory
    final_frame_only: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    #: which VASP energy ``frames.energy`` is (ENERGY_QUANTITIES)
    energy_quantity: Mapped[str] = mapped_column(Text, nullable=False, server_default="unknown")
    created_at: Mapped[dt.datetime] = created_at()

    material: Mapped[Material] = relationship(back_populates="tasks")
    frames: Mapped[list[Frame]] = relationship(back_populates="task", order_by="Frame.ionic_step")

    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        Index("ix_tasks_material_id_fidelity", "material_id", "fidelity"),
        CheckConstraint(one_of("task_type", TASK_TYPES), name="task_type"),
        CheckConstraint(one_of("material_rule", MATERIAL_RULES), name="material_rule"),
        CheckConstraint(one_of("energy_quantity", ENERGY_QUANTITIES), name="energy_quantity"),
        CheckConstraint("is_hubbard = (hubbards IS NOT NULL AND hubbards <> '{}'::jsonb)", name="hubbard_flag"),
    )


class Frame(Base):
    """One ionic step of a task: structure, energy, forces, stress, magmoms (see module doc for units)."""

    __tablename__ = "frames"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False)
    ionic_step: Mapped[int] = mapped_column(Integer, nullable=False)
    n_atoms: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    lattice: Mapped[list[float]] = mapped_column(Float8Array(), nullable=False)
    atomic_numbers: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger), nullable=False)
    frac_coords: Mapped[list[float]] = mapped_column(Float8Array(), nullable=False)
    volume: Mapped[float] = mapped_column(Float8, Computed("crossfid_cell_volume(lattice)", persisted=True))
    energy: Mapped[float | None] = mapped_column(Float8)
    energy_per_atom: Mapped[float | None] = mapped_column(
        Float8, Computed("energy / NULLIF(n_atoms, 0)", persisted=True), index=True
    )
    corrected_energy: Mapped[float | None] = mapped_column(Float8)
    forces: Mapped[list[float] | None] = mapped_column(Float8Array())
    max_force: Mapped[float | None] = mapped_column(
        Float8, Computed("crossfid_max_force(forces)", persisted=True), index=True
    )
    stress: Mapped[list[float] | None] = mapped_column(Float8Array())
    magmoms: Mapped[list[float] | None] = mapped_column(Float8Array())
    n_electronic_steps: Mapped[int | None] = mapped_column(Integer)
    scf_converged: Mapped[bool | None] = mapped_column(Boolean)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    created_at: Mapped[dt.datetime] = created_at()

    task: Mapped[Task] = relationship(back_populates="frames")

    __table_args__ = (
        UniqueConstraint("task_id", "ionic_step"),
        # covering index of the labels analysts aggregate by task (revision 0011)
        Index("ix_frames_task_id_labels", "task_id", postgresql_include=["n_atoms", "energy_per_atom", "max_force"]),
        CheckConstraint("ionic_step >= 0", name="ionic_step_non_negative"),
        CheckConstraint("n_atoms > 0", name="n_atoms_positive"),
        CheckConstraint("cardinality(lattice) = 9", name="lattice_shape"),
        CheckConstraint("cardinality(atomic_numbers) = n_atoms", name="atomic_numbers_shape"),
        CheckConstraint("0 < ALL(atomic_numbers) AND 119 > ALL(atomic_numbers)", name="atomic_numbers_range"),
        CheckConstraint("cardinality(frac_coords) = 3 * n_atoms", name="frac_coords_shape"),
        CheckConstraint("forces IS NULL OR cardinality(forces) = 3 * n_atoms", name="forces_shape"),
        CheckConstraint("stress IS NULL OR cardinality(stress) = 9", name="stress_shape"),
        CheckConstraint("magmoms IS NULL OR cardinality(magmoms) = n_atoms", name="magmoms_shape"),
        CheckConstraint("crossfid_all_finite(lattice) AND crossfid_all_finite(frac_coords)", name="structure_finite"),
        CheckConstraint("crossfid_cell_volume(lattice) > 0", name="volume_positive"),
        CheckConstraint(finite("energy"), name="energy_finite"),
        CheckConstraint(finite("corrected_energy"), name="corrected_energy_finite"),
        CheckConstraint(finite_array("forces"), name="forces_finite"),
        CheckConstraint(finite_array("stress"), name="stress_finite"),
        CheckConstraint(finite_array("magmoms"), name="magmoms_finite"),
        CheckConstraint(
            "n_electronic_steps IS NULL OR n_electronic_steps >= 0", name="n_electronic_steps_non_negative"
        ),
        CheckConstraint(hex64("content_hash"), name="content_hash_hex"),
    )


class ReferenceEntry(Base):
    """The primary relaxed entry of a material at a fidelity (MP's thermo / main entry)."""

    __tablename__ = "reference_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id", ondelete="CASCADE"), nullable=False)
    fidelity: Mapped[str] = mapped_column(ForeignKey("fidelities.name"), nullable=False, index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), nullable=False)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), index=True)
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id", ondelete="SET NULL"), index=True)
    entry_id: Mapped[str | None] = mapped_column(Text)
    energy_per_atom: Mapped[float] = mapped_column(Float8, nullable=False)
    corrected_energy_per_atom: Mapped[float | None] = mapped_column(Float8)
    formation_energy_per_atom: Mapped[float | None] = mapped_column(Float8)
    energy_above_hull: Mapped[float | None] = mapped_column(Float8)
    n_atoms: Mapped[int | None] = mapped_column(Integer)
    structure: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    correction_scheme: Mapped[str | None] = mapped_column(Text)
    #: which VASP energy ``energy_per_atom`` is (ENERGY_QUANTITIES); NULL for entries stored before revision 0009
    energy_quantity: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        UniqueConstraint("material_id", "fidelity"),
        CheckConstraint(one_of("energy_quantity", ENERGY_QUANTITIES), name="energy_quantity"),
        CheckConstraint(finite("energy_per_atom"), name="energy_per_atom_finite"),
        CheckConstraint(finite("corrected_energy_per_atom"), name="corrected_energy_per_atom_finite"),
        CheckConstraint(finite("formation_energy_per_atom"), name="formation_energy_per_atom_finite"),
        CheckConstraint(finite("energy_above_hull"), name="energy_above_hull_finite"),
        CheckConstraint("n_atoms IS NULL OR n_atoms > 0", name="n_atoms_positive"),
    )


class Quarantine(Base):
    """Input that was refused, with where it was and why; never silently dropped."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), nullable=False, index=True)
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id", ondelete="SET NULL"), index=True)
    location: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    raw_text: Mapped[str | None] = mapped_column(Text)
    raw_document: Mapped[Any | None] = mapped_column(JSONB)
    fingerprint: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        CheckConstraint("reason <> ''", name="reason_not_empty"),
        CheckConstraint(hex64("fingerprint"), name="fingerprint_hex"),
    )


#: tables of the ingestion core, in dependency order (used by ``crossfid db status``)
CORE_TABLES: tuple[str, ...] = (
    "fidelities",
    "sources",
    "ingest_runs",
    "raw_documents",
    "materials",
    "tasks",
    "frames",
    "reference_entries",
    "quarantine",
)


# --------------------------------------------------------------------------- curation and datasets (revision 0002)


class CurationRun(Base):
    """One application of the curation rules to the frames of some fidelities."""

    __tablename__ = "curation_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    fidelities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    selection: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    config_hash: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    dedupe: Mapped[str] = mapped_column(Text, nullable=False, server_default="fast")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="running")
    crossfid_version: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    n_materials: Mapped[int | None] = mapped_column(Integer)
    n_frames: Mapped[int | None] = mapped_column(Integer)
    n_accepted: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("cardinality(fidelities) > 0", name="has_fidelities"),
        CheckConstraint(one_of("status", RUN_STATUSES), name="status"),
        CheckConstraint("dedupe IN ('fast', 'reference')", name="dedupe"),
        CheckConstraint(hex64("config_hash"), name="config_hash_hex"),
    )


class FrameDecision(Base):
    """The decision of a curation run on one frame: accepted, or rejected by a named rule (and why)."""

    __tablename__ = "frame_decisions"

    run_id: Mapped[int] = mapped_column(ForeignKey("curation_runs.id", ondelete="CASCADE"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True, index=True)
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id", ondelete="CASCADE"), nullable=False)
    accepted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    rule: Mapped[str] = mapped_column(Text, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")

    __table_args__ = (
        Index("ix_frame_decisions_run_id_rule", "run_id", "rule"),
        Index("ix_frame_decisions_run_id_material_id", "run_id", "material_id"),
    )


class Dataset(Base):
    """An immutable, content-hashed dataset version made of the accepted frames of a curation run."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    fidelities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    curation_run_id: Mapped[int] = mapped_column(ForeignKey("curation_runs.id"), nullable=False, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    config_hash: Mapped[str] = mapped_column(Text, nullable=False)
    content_hash: Mapped[str | None] = mapped_column(Text, index=True)
    n_frames: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_materials: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_elements: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    elements: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    frozen: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    #: the training energy (ENERGY_LABELS) chosen at freezing; NULL: frozen before revision 0009, when it was
    #: the corrected energy where a frame had one and the uncorrected energy otherwise
    energy_label: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint(one_of("energy_label", ENERGY_LABELS), name="energy_label"),
        CheckConstraint("version > 0", name="version_positive"),
        CheckConstraint(f"content_hash IS NULL OR ({hex64('content_hash')})", name="content_hash_hex"),
        CheckConstraint("NOT frozen OR content_hash IS NOT NULL", name="frozen_has_hash"),
    )


class DatasetFrame(Base):
    """Membership of a frame in a dataset version (immutable once the dataset is frozen)."""

    __tablename__ = "dataset_frames"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), primary_key=True, index=True)
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id"), nullable=False)

    __table_args__ = (
        Index("ix_dataset_frames_dataset_id_material_id", "dataset_id", "material_id", postgresql_include=["frame_id"]),
    )


class Split(Base):
    """A train/val/test split of a dataset (by material, or by structure group), with its own hash."""

    __tablename__ = "splits"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), nullable=False, index=True)
    strategy: Mapped[str] = mapped_column(Text, nullable=False)
    ratios: Mapped[list[float]] = mapped_column(ARRAY(DOUBLE_PRECISION), nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    frozen: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        UniqueConstraint("dataset_id", "strategy", "ratios", "seed"),
        CheckConstraint("strategy IN ('material', 'structure-group')", name="strategy"),
        CheckConstraint("cardinality(ratios) = 3", name="three_parts"),
        CheckConstraint(f"content_hash IS NULL OR ({hex64('content_hash')})", name="content_hash_hex"),
        CheckConstraint("NOT frozen OR content_hash IS NOT NULL", name="frozen_has_hash"),
    )


class SplitMember(Base):
    """Which part (train, val, test) a frame of the split's dataset belongs to."""

    __tablename__ = "split_members"

    split_id: Mapped[int] = mapped_column(ForeignKey("splits.id"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), primary_key=True)
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id"), nullable=False)
    part: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (
        Index("ix_split_members_split_id_part", "split_id", "part"),
        CheckConstraint("part IN ('train', 'val', 'test')", name="part"),
    )


class SplitSubset(Base):
    """Nested training subsets of a split for scaling-law studies: every subset contains the smaller ones."""

    __tablename__ = "split_subsets"

    split_id: Mapped[int] = mapped_column(ForeignKey("splits.id"), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    frame_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)

    __table_args__ = (
        CheckConstraint("size > 0 AND cardinality(frame_ids) = size", name="size"),
        CheckConstraint(hex64("content_hash"), name="content_hash_hex"),
    )


CURATION_TABLES: tuple[str, ...] = (
    "curation_runs",
    "frame_decisions",
    "datasets",
    "dataset_frames",
    "splits",
    "split_members",
    "split_subsets",
)


# --------------------------------------------------------------------------- energy referencing (revision 0003)


class AtomRefRow(Base):
    """Per-element reference energies: ``energies`` holds 94 values (H..Pu, eV/atom), NULL for elements
    absent from the fit data.

    Rows are immutable once written (a trigger refuses UPDATE); ``values_hash`` is
    the content identity and ``fit_key`` makes a repeated fit return the same row.
    """

    __tablename__ = "atomrefs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    fidelities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    energies: Mapped[list[float | None]] = mapped_column(ARRAY(DOUBLE_PRECISION), nullable=False)
    values_hash: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    elements: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    absent_elements: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    unidentifiable_elements: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    filled_elements: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    fill_from_id: Mapped[int | None] = mapped_column(ForeignKey("atomrefs.id"), index=True)
    prior_id: Mapped[int | None] = mapped_column(ForeignKey("atomrefs.id"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    split_id: Mapped[int | None] = mapped_column(ForeignKey("splits.id"), index=True)
    part: Mapped[str | None] = mapped_column(Text)
    dataset_hash: Mapped[str | None] = mapped_column(Text)
    split_hash: Mapped[str | None] = mapped_column(Text)
    weighting: Mapped[str | None] = mapped_column(Text)
    n_frames: Mapped[int | None] = mapped_column(Integer)
    n_materials: Mapped[int | None] = mapped_column(Integer)
    rank: Mapped[int | None] = mapped_column(Integer)
    mae: Mapped[float | None] = mapped_column(Float8)
    rmse: Mapped[float | None] = mapped_column(Float8)
    max_abs_error: Mapped[float | None] = mapped_column(Float8)
    solver: Mapped[str | None] = mapped_column(Text)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    fit_key: Mapped[str | None] = mapped_column(Text, unique=True)
    crossfid_version: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        CheckConstraint("kind IN ('split', 'entries', 'package')", name="kind"),
        CheckConstraint("cardinality(energies) = 94", name="energies_94"),
        CheckConstraint("crossfid_all_finite(energies)", name="energies_finite"),
        CheckConstraint("cardinality(fidelities) > 0", name="has_fidelities"),
        CheckConstraint(hex64("values_hash"), name="values_hash_hex"),
        CheckConstraint("weighting IS NULL OR weighting IN ('frame', 'material')", name="weighting"),
        CheckConstraint("part IS NULL OR part IN ('train', 'val', 'test')", name="part"),
        CheckConstraint(
            "kind <> 'split' OR (split_id IS NOT NULL AND part IS NOT NULL AND weighting IS NOT NULL)",
            name="split_fit_has_split",
        ),
        CheckConstraint("mae IS NULL OR mae >= 0", name="mae_nonnegative"),
    )


class CrossFidelityAnalysis(Base):
    """A stored cross-fidelity analysis: what it compared, with which AtomRefs, its numbers and figures."""

    __tablename__ = "cross_fidelity_analyses"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    source_fidelities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    target_fidelities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    split_id: Mapped[int | None] = mapped_column(ForeignKey("splits.id"), index=True)
    source_atomref_id: Mapped[int | None] = mapped_column(ForeignKey("atomrefs.id"), index=True)
    target_atomref_id: Mapped[int | None] = mapped_column(ForeignKey("atomrefs.id"), index=True)
    corrections: Mapped[str] = mapped_column(Text, nullable=False, server_default="none")
    n_materials: Mapped[int] = mapped_column(Integer, nullable=False)
    input_hash: Mapped[str] = mapped_column(Text, nullable=False)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    figures: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    crossfid_version: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        CheckConstraint("kind IN ('correlation', 'shifts', 'importance', 'transferability')", name="kind"),
        CheckConstraint("corrections IN ('none', 'mp2020', 'both')", name="corrections"),
        CheckConstraint("cardinality(source_fidelities) > 0 AND cardinality(target_fidelities) > 0", name="fidelities"),
        CheckConstraint(hex64("input_hash"), name="input_hash_hex"),
        CheckConstraint("n_materials >= 0", name="n_materials_nonnegative"),
    )


REFERENCING_TABLES: tuple[str, ...] = ("atomrefs", "cross_fidelity_analyses")


# --------------------------------------------------------------------------- training, model registry (revision 0004)


class ModelRow(Base):
    """A registered model: a CHGNet shipped with chgnet (a base model), weights a training run wrote, or a peer
    (another family's shipped model, or any ASE calculator: ``factory`` ``module:callable`` with ``options``).

    ``sha256`` identifies what the model computes: its weights file's SHA-256, or for a calculator the digest of
    its factory, options and weights file (``provenance.weights_sha256``). ``n_parameters`` is NULL for a
    calculator that does not say. A peer has no AtomRef and is never fine-tuned.
    """

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    family: Mapped[str] = mapped_column(Text, nullable=False, server_default="CHGNet")
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    fidelities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    sha256: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL", use_alter=True), index=True
    )
    atomref_id: Mapped[int | None] = mapped_column(ForeignKey("atomrefs.id"), index=True)
    epoch: Mapped[int | None] = mapped_column(Integer)
    n_parameters: Mapped[int | None] = mapped_column(Integer)
    factory: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (
        CheckConstraint(one_of("kind", MODEL_KINDS), name="kind"),
        CheckConstraint(one_of("role", MODEL_ROLES), name="role"),
        CheckConstraint(hex64("sha256"), name="sha256_hex"),
        CheckConstraint("kind <> 'trained' OR run_id IS NOT NULL", name="trained_has_run"),
        CheckConstraint("cardinality(fidelities) > 0", name="has_fidelities"),
        CheckConstraint("n_parameters IS NULL OR n_parameters > 0", name="n_parameters_positive"),
        CheckConstraint("n_parameters IS NOT NULL OR kind = 'calculator'", name="has_n_parameters"),
        CheckConstraint("(kind = 'calculator') = (factory IS NOT NULL)", name="calculator_has_factory"),
        CheckConstraint("kind <> 'calculator' OR role = 'peer'", name="calculator_is_peer"),
        CheckConstraint("role <> 'peer' OR (atomref_id IS NULL AND run_id IS NULL)", name="peer_not_trained"),
    )


class TrainingRun(Base):
    """One fine-tuning (or from-scratch) run of CHGNet on a split, with everything it was made from."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    method: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False, index=True)
    split_id: Mapped[int] = mapped_column(ForeignKey("splits.id"), nullable=False, index=True)
    split_hash: Mapped[str] = mapped_column(Text, nullable=False)
    dataset_hash: Mapped[str] = mapped_column(Text, nullable=False)
    subset_size: Mapped[int | None] = mapped_column(Integer)
    subset_hash: Mapped[str | None] = mapped_column(Text)
    atomref_id: Mapped[int | None] = mapped_column(ForeignKey("atomrefs.id"), index=True)
    fidelities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    targets: Mapped[str] = mapped_column(Text, nullable=False)
    warnings: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    device: Mapped[str] = mapped_column(Text, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="running")
    n_train: Mapped[int] = mapped_column(Integer, nullable=False)
    n_val: Mapped[int] = mapped_column(Integer, nullable=False)
    n_test: Mapped[int] = mapped_column(Integer, nullable=False)
    epochs_completed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    best_val_energy_mae: Mapped[float | None] = mapped_column(Float8)
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    graph_cache: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    checkpoint_dir: Mapped[str] = mapped_column(Text, nullable=False)
    versions: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    host: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(one_of("method", METHOD_NAMES), name="method"),
        CheckConstraint(one_of("status", TRAINING_STATUSES), name="status"),
        CheckConstraint(hex64("split_hash"), name="split_hash_hex"),
        CheckConstraint(hex64("dataset_hash"), name="dataset_hash_hex"),
        CheckConstraint("subset_size IS NULL OR subset_size > 0", name="subset_size_positive"),
        CheckConstraint("n_train > 0 AND n_val >= 0 AND n_test >= 0", name="sizes"),
        CheckConstraint("epochs_completed >= 0", name="epochs_completed_nonnegative"),
        CheckConstraint("targets <> '' AND ltrim(targets, 'efsm') = ''", name="targets"),
    )


class TrainingEpoch(Base):
    """Metrics of one completed epoch: MAEs in meV/atom (energy), meV/Å (force), GPa (stress), μB (magmom)."""

    __tablename__ = "training_epochs"

    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_energy_mae: Mapped[float | None] = mapped_column(Float8)
    train_force_mae: Mapped[float | None] = mapped_column(Float8)
    train_stress_mae: Mapped[float | None] = mapped_column(Float8)
    train_magmom_mae: Mapped[float | None] = mapped_column(Float8)
    train_loss: Mapped[float | None] = mapped_column(Float8)
    val_energy_mae: Mapped[float | None] = mapped_column(Float8)
    val_force_mae: Mapped[float | None] = mapped_column(Float8)
    val_stress_mae: Mapped[float | None] = mapped_column(Float8)
    val_magmom_mae: Mapped[float | None] = mapped_column(Float8)
    val_loss: Mapped[float | None] = mapped_column(Float8)
    learning_rate: Mapped[float] = mapped_column(Float8, nullable=False)
    seconds: Mapped[float] = mapped_column(Float8, nullable=False)
    compute_seconds: Mapped[float] = mapped_column(Float8, nullable=False)  # forward, backward, optimiser step
    val_seconds: Mapped[float] = mapped_column(Float8, nullable=False)  # validation
    other_seconds: Mapped[float] = mapped_column(Float8, nullable=False)  # batching, moving data, metrics
    created_at: Mapped[dt.datetime] = created_at()

    __table_args__ = (CheckConstraint("epoch > 0", name="epoch_positive"),)


class TrainingGradient(Base):
    """Range of |gradient| of a named layer at one optimiser step of the first epoch (the study's Fig. 3a)."""

    __tablename__ = "training_gradients"

    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    layer: Mapped[str] = mapped_column(Text, primary_key=True)
    parameter: Mapped[str] = mapped_column(Text, nullable=False)
    fraction: Mapped[float] = mapped_column(Float8, nullable=False)
    abs_min: Mapped[float] = mapped_column(Float8, nullable=False)
    abs_max: Mapped[float] = mapped_column(Float8, nullable=False)
    abs_mean: Mapped[float] = mapped_column(Float8, nullable=False)

    __table_args__ = (CheckConstraint("abs_min <= abs_mean AND abs_mean <= abs_max", name="ordered"),)


TRAINING_TABLES: tuple[str, ...] = ("models", "training_runs", "training_epochs", "training_gradients")


# --------------------------------------------------------------------------- benchmarks (revision 0005)


class BenchmarkRun(Base):
    """One benchmark of one model on one piece of benchmark data; ``key`` says exactly what was computed.

    ``key`` = SHA-256 over (benchmark, version, model weights sha256, data hash,
    parameters): a leaderboard refresh runs a (model × benchmark) pair only when
    no completed run has its current key, so a cell is never silently stale.
    """

    __tablename__ = "benchmark_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    benchmark: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    model_sha256: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str | None] = mapped_column(Text)
    split_id: Mapped[int | None] = mapped_column(ForeignKey("splits.id"), index=True)
    data_hash: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    #: the models (crossfid names) that labelled the benchmark data (tasks' ``input_parameters.label_model``)
    labelled_by: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    key: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="running")
    n_structures: Mapped[int | None] = mapped_column(Integer)
    n_failed: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    crossfid_version: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(one_of("status", RUN_STATUSES), name="status"),
        CheckConstraint(hex64("key"), name="key_hex"),
        CheckConstraint(hex64("data_hash"), name="data_hash_hex"),
        CheckConstraint("model_id IS NOT NULL OR method IS NOT NULL", name="has_subject"),
        Index(
            "uq_benchmark_runs_key_completed",
            "key",
            unique=True,
            postgresql_where=text("status = 'completed'"),
        ),
    )


class BenchmarkMetric(Base):
    """One number of a benchmark run: name, value, unit and how many items it is over."""

    __tablename__ = "benchmark_metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("benchmark_runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float8)
    unit: Mapped[str] = mapped_column(Text, nullable=False)
    n: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (CheckConstraint(finite("value"), name="value_finite"),)


class BenchmarkItem(Base):
    """The result for one structure (or material) of a benchmark run, or why it failed."""

    __tablename__ = "benchmark_items"

    run_id: Mapped[int] = mapped_column(ForeignKey("benchmark_runs.id", ondelete="CASCADE"), primary_key=True)
    item: Mapped[str] = mapped_column(Text, primary_key=True)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    failure: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")

    __table_args__ = (CheckConstraint("ok OR failure IS NOT NULL", name="failure_has_reason"),)


class LeaderboardColumn(Base):
    """A metric column of the ``leaderboard`` view (revision 0007), in view order.

    The rows are the frozen copy of :func:`crossfid.benchmarks.registry.leaderboard_columns` that
    the migrations wrote; ``crossfid_leaderboard_view()`` rebuilds the view from them: a pivoted
    column per row, a rank column when ``ranked`` (by ``better``), and the composite score, the mean
    of ``value / scale`` over the rows with a ``scale`` (a typical error of a foundation potential, in ``unit``).
    """

    __tablename__ = "leaderboard_columns"

    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    column_name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    benchmark: Mapped[str] = mapped_column(Text, nullable=False)
    metric: Mapped[str] = mapped_column(Text, nullable=False)
    unit: Mapped[str] = mapped_column(Text, nullable=False)
    better: Mapped[str | None] = mapped_column(Text)
    ranked: Mapped[bool] = mapped_column(Boolean, nullable=False)
    scale: Mapped[float | None] = mapped_column(Float8)

    __table_args__ = (
        UniqueConstraint("benchmark", "metric"),
        CheckConstraint("better IS NULL OR better IN ('lower', 'higher')", name="better"),
        CheckConstraint("NOT ranked OR better IS NOT NULL", name="ranked_has_direction"),
        CheckConstraint("scale IS NULL OR (scale > 0 AND better = 'lower')", name="scale"),
        CheckConstraint("column_name ~ '^[a-z][a-z0-9_]*$'", name="column_name"),
    )


BENCHMARK_TABLES: tuple[str, ...] = ("benchmark_runs", "benchmark_metrics", "benchmark_items", "leaderboard_columns")
