"""Ingestion core: sources, ingest runs, raw documents, materials, tasks, frames,
reference entries, quarantine; the fidelity vocabulary; SQL helper functions; views.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Immutable helpers used by CHECK constraints and generated columns. Arrays are
# one-dimensional, row-major (see crossfid/db/models.py). The SQL ones are not
# STRICT so that PostgreSQL can inline them (several times cheaper per row); a
# NULL argument gives NULL, which a CHECK accepts.
FUNCTIONS = {
    "crossfid_all_finite(double precision[])": """
        CREATE FUNCTION crossfid_all_finite(values_ double precision[]) RETURNS boolean
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN NOT (values_ && ARRAY['NaN', 'Infinity', '-Infinity']::double precision[])
    """,
    "crossfid_cell_volume(double precision[])": """
        CREATE FUNCTION crossfid_cell_volume(m double precision[]) RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN abs(m[1] * (m[5] * m[9] - m[6] * m[8])
                 - m[2] * (m[4] * m[9] - m[6] * m[7])
                 + m[3] * (m[4] * m[8] - m[5] * m[7]))
    """,
    # plpgsql with one statement per atom: several times faster per row than a SQL
    # subquery over generate_series, which cannot be inlined
    "crossfid_max_force(double precision[])": """
        CREATE FUNCTION crossfid_max_force(f double precision[]) RETURNS double precision
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
        DECLARE
            largest double precision := 0;
            i integer;
        BEGIN
            FOR i IN 1 .. cardinality(f) - 2 BY 3 LOOP
                largest := greatest(largest, f[i] * f[i] + f[i + 1] * f[i + 1] + f[i + 2] * f[i + 2]);
            END LOOP;
            RETURN sqrt(largest);
        END
        $$
    """,
}

# The fidelity vocabulary at this revision (a later revision adds rows, never edits these).
FIDELITIES = [
    ("GGA", "GGA", False, None, "PBE generalised-gradient approximation"),
    ("GGA+U", "GGA", True, None, "PBE with Hubbard U (Dudarev)"),
    ("PBEsol", "GGA", False, None, "PBEsol GGA"),
    ("PBEsol+U", "GGA", True, None, "PBEsol with Hubbard U"),
    ("SCAN", "meta-GGA", False, None, "SCAN meta-GGA"),
    ("SCAN+U", "meta-GGA", True, None, "SCAN with Hubbard U"),
    ("r2SCAN", "meta-GGA", False, None, "r2SCAN meta-GGA"),
    ("r2SCAN+U", "meta-GGA", True, None, "r2SCAN with Hubbard U"),
    ("HSE06", "hybrid", False, None, "HSE06 screened hybrid (25% exact exchange, 0.2 1/Å)"),
    ("HSE06+U", "hybrid", True, None, "HSE06 with Hubbard U"),
    ("PBE0", "hybrid", False, None, "PBE0 hybrid"),
    ("PBE-D3", "GGA", False, "D3", "PBE with Grimme D3 (zero damping)"),
    ("PBE-D3(BJ)", "GGA", False, "D3(BJ)", "PBE with Grimme D3, Becke-Johnson damping"),
    ("PBE+U-D3", "GGA", True, "D3", "PBE+U with Grimme D3"),
    ("PBE+U-D3(BJ)", "GGA", True, "D3(BJ)", "PBE+U with Grimme D3(BJ)"),
    ("optB88-vdW", "GGA", False, "optB88-vdW", "optB88 exchange with vdW-DF nonlocal"),
    ("optB86b-vdW", "GGA", False, "optB86b-vdW", "optB86b exchange with vdW-DF nonlocal"),
    ("vdW-DF2", "GGA", False, "vdW-DF2", "rPW86 exchange with vdW-DF2 nonlocal"),
    ("SCAN-rVV10", "meta-GGA", False, "rVV10", "SCAN with rVV10 nonlocal"),
    ("r2SCAN-rVV10", "meta-GGA", False, "rVV10", "r2SCAN with rVV10 nonlocal"),
    ("r2SCAN-D4", "meta-GGA", False, "D4", "r2SCAN with Grimme D4"),
    ("r2SCAN+U-rVV10", "meta-GGA", True, "rVV10", "r2SCAN+U with rVV10 nonlocal"),
]

VIEWS = {
    "v_frames": (
        "One row per frame: material, formula, chemical system, fidelity, run type, "
        "n_atoms, energies (eV, eV/atom), max |force| (eV/Å).",
        """
        SELECT f.id AS frame_id,
               m.external_id AS material,
               m.formula,
               m.chemsys,
               m.elements,
               t.fidelity,
               t.run_type,
               t.task_type,
               t.external_id AS task,
               s.name AS source,
               f.ionic_step,
               f.n_atoms,
               f.volume,
               f.energy,
               f.energy_per_atom,
               f.corrected_energy,
               f.max_force,
               f.scf_converged,
               f.n_electronic_steps,
               f.content_hash
          FROM frames f
          JOIN tasks t ON t.id = f.task_id
          JOIN materials m ON m.id = t.material_id
          JOIN sources s ON s.id = t.source_id
        """,
    ),
    "v_tasks": (
        "One row per task with its material, fidelity, run types and frame count.",
        """
        SELECT t.id AS task_id,
               t.external_id AS task,
               m.external_id AS material,
               m.formula,
               m.chemsys,
               t.fidelity,
               t.run_type,
               t.source_run_type,
               t.task_type,
               t.is_hubbard,
               t.hubbards,
               s.name AS source,
               t.ingest_run_id,
               (SELECT count(*) FROM frames f WHERE f.task_id = t.id) AS n_frames
          FROM tasks t
          JOIN materials m ON m.id = t.material_id
          JOIN sources s ON s.id = t.source_id
        """,
    ),
    "v_materials": (
        "One row per material and fidelity: task and frame counts and the reference energy (eV/atom).",
        """
        SELECT m.external_id AS material,
               m.formula,
               m.chemsys,
               m.elements,
               t.fidelity,
               count(DISTINCT t.id) AS n_tasks,
               count(f.id) AS n_frames,
               r.energy_per_atom AS reference_energy_per_atom,
               r.energy_above_hull
          FROM materials m
          JOIN tasks t ON t.material_id = m.id
          LEFT JOIN frames f ON f.task_id = t.id
          LEFT JOIN reference_entries r ON r.material_id = m.id AND r.fidelity = t.fidelity
         GROUP BY m.id, t.fidelity, r.energy_per_atom, r.energy_above_hull
        """,
    ),
}


def upgrade() -> None:
    for ddl in FUNCTIONS.values():
        op.execute(ddl)
    op.create_table(
        "fidelities",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("family", sa.Text(), nullable=False),
        sa.Column("hubbard", sa.Boolean(), nullable=False),
        sa.Column("dispersion", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.CheckConstraint("family IN ('GGA', 'meta-GGA', 'hybrid')", name=op.f("ck_fidelities_family")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_fidelities")),
    )
    op.create_table(
        "materials",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("formula", sa.Text(), nullable=False),
        sa.Column("chemsys", sa.Text(), nullable=False),
        sa.Column("elements", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column(
            "n_elements",
            sa.Integer(),
            sa.Computed("cardinality(elements)", persisted=True),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "chemsys = array_to_string(elements, '-')",
            name=op.f("ck_materials_chemsys_matches_elements"),
        ),
        sa.CheckConstraint("cardinality(elements) > 0", name=op.f("ck_materials_has_elements")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_materials")),
        sa.UniqueConstraint("external_id", name=op.f("uq_materials_external_id")),
    )
    op.create_index(op.f("ix_materials_chemsys"), "materials", ["chemsys"], unique=False)
    op.create_index("ix_materials_elements", "materials", ["elements"], unique=False, postgresql_using="gin")
    op.create_index(op.f("ix_materials_formula"), "materials", ["formula"], unique=False)
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_sources_name")),
    )
    op.create_table(
        "ingest_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column(
            "arguments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("crossfid_version", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("n_tasks_added", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_frames_added", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_reference_entries_added", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_already_present", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_quarantined", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed')", name=op.f("ck_ingest_runs_status")),
        sa.CheckConstraint(
            "n_tasks_added >= 0 AND n_frames_added >= 0 AND n_reference_entries_added >= 0 AND n_already_present >= 0 AND n_quarantined >= 0",
            name=op.f("ck_ingest_runs_counts_non_negative"),
        ),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_ingest_runs_source_id_sources")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_runs")),
    )
    op.create_index(op.f("ix_ingest_runs_source_id"), "ingest_runs", ["source_id"], unique=False)
    op.create_table(
        "quarantine",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("ingest_run_id", sa.BigInteger(), nullable=True),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw_text", sa.Text(), nullable=True),
        sa.Column("raw_document", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "length(fingerprint) = 64 AND ltrim(fingerprint, '0123456789abcdef') = ''",
            name=op.f("ck_quarantine_fingerprint_hex"),
        ),
        sa.CheckConstraint("reason <> ''", name=op.f("ck_quarantine_reason_not_empty")),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_runs.id"],
            name=op.f("fk_quarantine_ingest_run_id_ingest_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_quarantine_source_id_sources")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_quarantine_fingerprint")),
    )
    op.create_index(op.f("ix_quarantine_ingest_run_id"), "quarantine", ["ingest_run_id"], unique=False)
    op.create_index(op.f("ix_quarantine_source_id"), "quarantine", ["source_id"], unique=False)
    op.create_table(
        "raw_documents",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("ingest_run_id", sa.BigInteger(), nullable=True),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("compression", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("compression IN ('gzip', 'none')", name=op.f("ck_raw_documents_compression")),
        sa.CheckConstraint(
            "length(sha256) = 64 AND ltrim(sha256, '0123456789abcdef') = ''", name=op.f("ck_raw_documents_sha256_hex")
        ),
        sa.CheckConstraint("size_bytes >= 0", name=op.f("ck_raw_documents_size_non_negative")),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_runs.id"],
            name=op.f("fk_raw_documents_ingest_run_id_ingest_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_raw_documents_source_id_sources")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_documents")),
        sa.UniqueConstraint("sha256", name=op.f("uq_raw_documents_sha256")),
    )
    op.create_index(op.f("ix_raw_documents_ingest_run_id"), "raw_documents", ["ingest_run_id"], unique=False)
    op.create_index(op.f("ix_raw_documents_source_id"), "raw_documents", ["source_id"], unique=False)
    op.create_table(
        "tasks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("material_id", sa.BigInteger(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("ingest_run_id", sa.BigInteger(), nullable=True),
        sa.Column("raw_document_id", sa.BigInteger(), nullable=True),
        sa.Column("fidelity", sa.Text(), nullable=False),
        sa.Column("run_type", sa.Text(), nullable=False),
        sa.Column("source_run_type", sa.Text(), nullable=True),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column(
            "input_parameters",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("hubbards", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("is_hubbard", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("code", sa.Text(), server_default="VASP", nullable=False),
        sa.Column("code_version", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "is_hubbard = (hubbards IS NOT NULL AND hubbards <> '{}'::jsonb)",
            name=op.f("ck_tasks_hubbard_flag"),
        ),
        sa.CheckConstraint("task_type IN ('relax', 'static')", name=op.f("ck_tasks_task_type")),
        sa.ForeignKeyConstraint(["fidelity"], ["fidelities.name"], name=op.f("fk_tasks_fidelity_fidelities")),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_runs.id"],
            name=op.f("fk_tasks_ingest_run_id_ingest_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["material_id"],
            ["materials.id"],
            name=op.f("fk_tasks_material_id_materials"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["raw_document_id"],
            ["raw_documents.id"],
            name=op.f("fk_tasks_raw_document_id_raw_documents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_tasks_source_id_sources")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("source_id", "external_id", name=op.f("uq_tasks_source_id_external_id")),
    )
    op.create_index(op.f("ix_tasks_fidelity"), "tasks", ["fidelity"], unique=False)
    op.create_index(op.f("ix_tasks_ingest_run_id"), "tasks", ["ingest_run_id"], unique=False)
    op.create_index("ix_tasks_material_id_fidelity", "tasks", ["material_id", "fidelity"], unique=False)
    op.create_index(op.f("ix_tasks_raw_document_id"), "tasks", ["raw_document_id"], unique=False)
    op.create_table(
        "frames",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("ionic_step", sa.Integer(), nullable=False),
        sa.Column("n_atoms", sa.Integer(), nullable=False),
        sa.Column("lattice", postgresql.ARRAY(sa.DOUBLE_PRECISION()), nullable=False),
        sa.Column("atomic_numbers", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("frac_coords", postgresql.ARRAY(sa.DOUBLE_PRECISION()), nullable=False),
        sa.Column(
            "volume",
            sa.DOUBLE_PRECISION(),
            sa.Computed("crossfid_cell_volume(lattice)", persisted=True),
            nullable=False,
        ),
        sa.Column("energy", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column(
            "energy_per_atom",
            sa.DOUBLE_PRECISION(),
            sa.Computed("energy / NULLIF(n_atoms, 0)", persisted=True),
            nullable=True,
        ),
        sa.Column("corrected_energy", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("forces", postgresql.ARRAY(sa.DOUBLE_PRECISION()), nullable=True),
        sa.Column(
            "max_force",
            sa.DOUBLE_PRECISION(),
            sa.Computed("crossfid_max_force(forces)", persisted=True),
            nullable=True,
        ),
        sa.Column("stress", postgresql.ARRAY(sa.DOUBLE_PRECISION()), nullable=True),
        sa.Column("magmoms", postgresql.ARRAY(sa.DOUBLE_PRECISION()), nullable=True),
        sa.Column("n_electronic_steps", sa.Integer(), nullable=True),
        sa.Column("scf_converged", sa.Boolean(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "length(content_hash) = 64 AND ltrim(content_hash, '0123456789abcdef') = ''",
            name=op.f("ck_frames_content_hash_hex"),
        ),
        sa.CheckConstraint(
            "corrected_energy IS NULL OR corrected_energy NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            name=op.f("ck_frames_corrected_energy_finite"),
        ),
        sa.CheckConstraint(
            "energy IS NULL OR energy NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            name=op.f("ck_frames_energy_finite"),
        ),
        sa.CheckConstraint(
            "0 < ALL(atomic_numbers) AND 119 > ALL(atomic_numbers)",
            name=op.f("ck_frames_atomic_numbers_range"),
        ),
        sa.CheckConstraint("cardinality(atomic_numbers) = n_atoms", name=op.f("ck_frames_atomic_numbers_shape")),
        sa.CheckConstraint("cardinality(frac_coords) = 3 * n_atoms", name=op.f("ck_frames_frac_coords_shape")),
        sa.CheckConstraint("cardinality(lattice) = 9", name=op.f("ck_frames_lattice_shape")),
        sa.CheckConstraint(
            "crossfid_all_finite(lattice) AND crossfid_all_finite(frac_coords)",
            name=op.f("ck_frames_structure_finite"),
        ),
        sa.CheckConstraint("crossfid_cell_volume(lattice) > 0", name=op.f("ck_frames_volume_positive")),
        sa.CheckConstraint(
            "forces IS NULL OR cardinality(forces) = 3 * n_atoms",
            name=op.f("ck_frames_forces_shape"),
        ),
        sa.CheckConstraint("forces IS NULL OR crossfid_all_finite(forces)", name=op.f("ck_frames_forces_finite")),
        sa.CheckConstraint("ionic_step >= 0", name=op.f("ck_frames_ionic_step_non_negative")),
        sa.CheckConstraint(
            "magmoms IS NULL OR cardinality(magmoms) = n_atoms",
            name=op.f("ck_frames_magmoms_shape"),
        ),
        sa.CheckConstraint("magmoms IS NULL OR crossfid_all_finite(magmoms)", name=op.f("ck_frames_magmoms_finite")),
        sa.CheckConstraint("n_atoms > 0", name=op.f("ck_frames_n_atoms_positive")),
        sa.CheckConstraint(
            "n_electronic_steps IS NULL OR n_electronic_steps >= 0",
            name=op.f("ck_frames_n_electronic_steps_non_negative"),
        ),
        sa.CheckConstraint("stress IS NULL OR cardinality(stress) = 9", name=op.f("ck_frames_stress_shape")),
        sa.CheckConstraint("stress IS NULL OR crossfid_all_finite(stress)", name=op.f("ck_frames_stress_finite")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_frames_task_id_tasks"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frames")),
        sa.UniqueConstraint("task_id", "ionic_step", name=op.f("uq_frames_task_id_ionic_step")),
    )
    op.create_index(op.f("ix_frames_content_hash"), "frames", ["content_hash"], unique=False)
    op.create_index(op.f("ix_frames_energy_per_atom"), "frames", ["energy_per_atom"], unique=False)
    op.create_index(op.f("ix_frames_max_force"), "frames", ["max_force"], unique=False)
    op.create_index(op.f("ix_frames_n_atoms"), "frames", ["n_atoms"], unique=False)
    op.create_table(
        "reference_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("material_id", sa.BigInteger(), nullable=False),
        sa.Column("fidelity", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.Column("ingest_run_id", sa.BigInteger(), nullable=True),
        sa.Column("entry_id", sa.Text(), nullable=True),
        sa.Column("energy_per_atom", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("corrected_energy_per_atom", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("formation_energy_per_atom", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("energy_above_hull", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("n_atoms", sa.Integer(), nullable=True),
        sa.Column("structure", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("correction_scheme", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "corrected_energy_per_atom IS NULL OR corrected_energy_per_atom NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            name=op.f("ck_reference_entries_corrected_energy_per_atom_finite"),
        ),
        sa.CheckConstraint(
            "energy_above_hull IS NULL OR energy_above_hull NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            name=op.f("ck_reference_entries_energy_above_hull_finite"),
        ),
        sa.CheckConstraint(
            "energy_per_atom IS NULL OR energy_per_atom NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            name=op.f("ck_reference_entries_energy_per_atom_finite"),
        ),
        sa.CheckConstraint(
            "formation_energy_per_atom IS NULL OR formation_energy_per_atom NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            name=op.f("ck_reference_entries_formation_energy_per_atom_finite"),
        ),
        sa.CheckConstraint("n_atoms IS NULL OR n_atoms > 0", name=op.f("ck_reference_entries_n_atoms_positive")),
        sa.ForeignKeyConstraint(
            ["fidelity"], ["fidelities.name"], name=op.f("fk_reference_entries_fidelity_fidelities")
        ),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_runs.id"],
            name=op.f("fk_reference_entries_ingest_run_id_ingest_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["material_id"],
            ["materials.id"],
            name=op.f("fk_reference_entries_material_id_materials"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_reference_entries_source_id_sources")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_reference_entries_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_entries")),
        sa.UniqueConstraint("material_id", "fidelity", name=op.f("uq_reference_entries_material_id_fidelity")),
    )
    op.create_index(op.f("ix_reference_entries_fidelity"), "reference_entries", ["fidelity"], unique=False)
    op.create_index(
        op.f("ix_reference_entries_ingest_run_id"),
        "reference_entries",
        ["ingest_run_id"],
        unique=False,
    )
    op.create_index(op.f("ix_reference_entries_task_id"), "reference_entries", ["task_id"], unique=False)
    fidelities = sa.table(
        "fidelities",
        sa.column("name", sa.Text),
        sa.column("family", sa.Text),
        sa.column("hubbard", sa.Boolean),
        sa.column("dispersion", sa.Text),
        sa.column("description", sa.Text),
    )
    op.bulk_insert(
        fidelities,
        [dict(zip(("name", "family", "hubbard", "dispersion", "description"), row, strict=True)) for row in FIDELITIES],
    )
    for name, (comment, query) in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")
        op.execute(f"COMMENT ON VIEW {name} IS '{comment}'")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")

    op.drop_index(op.f("ix_reference_entries_task_id"), table_name="reference_entries")
    op.drop_index(op.f("ix_reference_entries_ingest_run_id"), table_name="reference_entries")
    op.drop_index(op.f("ix_reference_entries_fidelity"), table_name="reference_entries")
    op.drop_table("reference_entries")
    op.drop_index(op.f("ix_frames_n_atoms"), table_name="frames")
    op.drop_index(op.f("ix_frames_max_force"), table_name="frames")
    op.drop_index(op.f("ix_frames_energy_per_atom"), table_name="frames")
    op.drop_index(op.f("ix_frames_content_hash"), table_name="frames")
    op.drop_table("frames")
    op.drop_index(op.f("ix_tasks_raw_document_id"), table_name="tasks")
    op.drop_index("ix_tasks_material_id_fidelity", table_name="tasks")
    op.drop_index(op.f("ix_tasks_ingest_run_id"), table_name="tasks")
    op.drop_index(op.f("ix_tasks_fidelity"), table_name="tasks")
    op.drop_table("tasks")
    op.drop_index(op.f("ix_raw_documents_source_id"), table_name="raw_documents")
    op.drop_index(op.f("ix_raw_documents_ingest_run_id"), table_name="raw_documents")
    op.drop_table("raw_documents")
    op.drop_index(op.f("ix_quarantine_source_id"), table_name="quarantine")
    op.drop_index(op.f("ix_quarantine_ingest_run_id"), table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_index(op.f("ix_ingest_runs_source_id"), table_name="ingest_runs")
    op.drop_table("ingest_runs")
    op.drop_table("sources")
    op.drop_index(op.f("ix_materials_formula"), table_name="materials")
    op.drop_index("ix_materials_elements", table_name="materials", postgresql_using="gin")
    op.drop_index(op.f("ix_materials_chemsys"), table_name="materials")
    op.drop_table("materials")
    op.drop_table("fidelities")
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
