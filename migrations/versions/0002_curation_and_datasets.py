"""Curation runs and frame decisions; immutable dataset versions, splits and nested subsets; views.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen datasets and splits are immutable in the database itself: their rows and
# memberships refuse UPDATE and DELETE, new members cannot be added, and the
# membership tables refuse TRUNCATE.
TRIGGER_FUNCTIONS = {
    "crossfid_refuse_frozen_parent()": """
        CREATE FUNCTION crossfid_refuse_frozen_parent() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            parent_table text := TG_ARGV[0];
            parent_column text := TG_ARGV[1];
            parent_id bigint;
            is_frozen boolean;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                parent_id := (to_jsonb(NEW) ->> parent_column)::bigint;
            ELSE
                parent_id := (to_jsonb(OLD) ->> parent_column)::bigint;
            END IF;
            EXECUTE format('SELECT frozen FROM %I WHERE id = $1', parent_table) INTO is_frozen USING parent_id;
            IF is_frozen THEN
                RAISE EXCEPTION '% % is frozen: its members cannot be changed (%)', parent_table, parent_id, TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
        END
        $$
    """,
    "crossfid_refuse_frozen_row()": """
        CREATE FUNCTION crossfid_refuse_frozen_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.frozen THEN
                RAISE EXCEPTION '% % is frozen and cannot be changed (%)', TG_TABLE_NAME, OLD.id, TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
        END
        $$
    """,
    "crossfid_refuse_truncate()": """
        CREATE FUNCTION crossfid_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% holds frozen memberships and cannot be truncated', TG_TABLE_NAME
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
    """,
}

TRIGGERS = [
    ("datasets_frozen", "datasets", "BEFORE UPDATE OR DELETE", "FOR EACH ROW", "crossfid_refuse_frozen_row()"),
    ("splits_frozen", "splits", "BEFORE UPDATE OR DELETE", "FOR EACH ROW", "crossfid_refuse_frozen_row()"),
    (
        "dataset_frames_frozen",
        "dataset_frames",
        "BEFORE INSERT OR UPDATE OR DELETE",
        "FOR EACH ROW",
        "crossfid_refuse_frozen_parent('datasets', 'dataset_id')",
    ),
    (
        "split_members_frozen",
        "split_members",
        "BEFORE INSERT OR UPDATE OR DELETE",
        "FOR EACH ROW",
        "crossfid_refuse_frozen_parent('splits', 'split_id')",
    ),
    (
        "split_subsets_frozen",
        "split_subsets",
        "BEFORE UPDATE OR DELETE",
        "FOR EACH ROW",
        "crossfid_refuse_frozen_parent('splits', 'split_id')",
    ),
    (
        "dataset_frames_no_truncate",
        "dataset_frames",
        "BEFORE TRUNCATE",
        "FOR EACH STATEMENT",
        "crossfid_refuse_truncate()",
    ),
    (
        "split_members_no_truncate",
        "split_members",
        "BEFORE TRUNCATE",
        "FOR EACH STATEMENT",
        "crossfid_refuse_truncate()",
    ),
    (
        "split_subsets_no_truncate",
        "split_subsets",
        "BEFORE TRUNCATE",
        "FOR EACH STATEMENT",
        "crossfid_refuse_truncate()",
    ),
]

VIEWS = {
    "v_curation_summary": (
        "Decisions of each curation run counted per rule (accepted and rejected).",
        """
        SELECT d.run_id,
               r.fidelities,
               r.config_hash,
               d.accepted,
               d.rule,
               count(*) AS n_frames,
               count(DISTINCT d.material_id) AS n_materials
          FROM frame_decisions d
          JOIN curation_runs r ON r.id = d.run_id
         GROUP BY d.run_id, r.fidelities, r.config_hash, d.accepted, d.rule
        """,
    ),
    "v_frame_decisions": (
        "Every decision with its frame, material and task: why is frame X (not) in dataset Y?",
        """
        SELECT d.run_id,
               d.frame_id,
               f.content_hash,
               m.external_id AS material,
               t.external_id AS task,
               t.fidelity,
               f.ionic_step,
               d.accepted,
               d.rule,
               d.message,
               d.detail
          FROM frame_decisions d
          JOIN frames f ON f.id = d.frame_id
          JOIN tasks t ON t.id = f.task_id
          JOIN materials m ON m.id = d.material_id
        """,
    ),
    "v_datasets": (
        "Dataset versions with their counts, hashes and the curation run they came from.",
        """
        SELECT d.id AS dataset_id,
               d.name,
               d.version,
               d.fidelities,
               d.curation_run_id,
               d.config_hash,
               d.content_hash,
               d.n_frames,
               d.n_materials,
               d.n_elements,
               d.frozen,
               d.created_at,
               (SELECT count(*) FROM splits s WHERE s.dataset_id = d.id) AS n_splits
          FROM datasets d
        """,
    ),
    "v_split_summary": (
        "Per split part: frames, materials, elements, energy per atom (eV/atom) and max force (eV/Å) statistics.",
        """
        SELECT s.id AS split_id,
               d.name AS dataset,
               d.version,
               s.strategy,
               s.seed,
               sm.part,
               count(*) AS n_frames,
               count(DISTINCT sm.material_id) AS n_materials,
               (SELECT count(DISTINCT e) FROM split_members sm2 JOIN materials m2 ON m2.id = sm2.material_id,
                       unnest(m2.elements) AS e
                 WHERE sm2.split_id = s.id AND sm2.part = sm.part) AS n_elements,
               avg(f.energy_per_atom) AS mean_energy_per_atom,
               stddev(f.energy_per_atom) AS std_energy_per_atom,
               min(f.energy_per_atom) AS min_energy_per_atom,
               max(f.energy_per_atom) AS max_energy_per_atom,
               avg(f.max_force) AS mean_max_force,
               max(f.max_force) AS max_max_force
          FROM split_members sm
          JOIN splits s ON s.id = sm.split_id
          JOIN datasets d ON d.id = s.dataset_id
          JOIN frames f ON f.id = sm.frame_id
         GROUP BY s.id, d.name, d.version, s.strategy, s.seed, sm.part
        """,
    ),
}


def upgrade() -> None:
    op.create_table(
        "curation_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("fidelities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("selection", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("config_hash", sa.Text(), nullable=False),
        sa.Column("dedupe", sa.Text(), server_default="fast", nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("crossfid_version", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("n_materials", sa.Integer(), nullable=True),
        sa.Column("n_frames", sa.Integer(), nullable=True),
        sa.Column("n_accepted", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("dedupe IN ('fast', 'reference')", name=op.f("ck_curation_runs_dedupe")),
        sa.CheckConstraint(
            "length(config_hash) = 64 AND ltrim(config_hash, '0123456789abcdef') = ''",
            name=op.f("ck_curation_runs_config_hash_hex"),
        ),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed')", name=op.f("ck_curation_runs_status")),
        sa.CheckConstraint("cardinality(fidelities) > 0", name=op.f("ck_curation_runs_has_fidelities")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_curation_runs")),
    )
    op.create_index(op.f("ix_curation_runs_config_hash"), "curation_runs", ["config_hash"], unique=False)
    op.create_table(
        "datasets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fidelities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("curation_run_id", sa.BigInteger(), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("config_hash", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=True),
        sa.Column("n_frames", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_materials", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_elements", sa.Integer(), server_default="0", nullable=False),
        sa.Column("elements", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("frozen", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "content_hash IS NULL OR (length(content_hash) = 64 AND ltrim(content_hash, '0123456789abcdef') = '')",
            name=op.f("ck_datasets_content_hash_hex"),
        ),
        sa.CheckConstraint("NOT frozen OR content_hash IS NOT NULL", name=op.f("ck_datasets_frozen_has_hash")),
        sa.CheckConstraint("version > 0", name=op.f("ck_datasets_version_positive")),
        sa.ForeignKeyConstraint(
            ["curation_run_id"], ["curation_runs.id"], name=op.f("fk_datasets_curation_run_id_curation_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_datasets_name_version")),
    )
    op.create_index(op.f("ix_datasets_content_hash"), "datasets", ["content_hash"], unique=False)
    op.create_index(op.f("ix_datasets_curation_run_id"), "datasets", ["curation_run_id"], unique=False)
    op.create_table(
        "splits",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("strategy", sa.Text(), nullable=False),
        sa.Column("ratios", postgresql.ARRAY(sa.DOUBLE_PRECISION()), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=True),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("frozen", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "content_hash IS NULL OR (length(content_hash) = 64 AND ltrim(content_hash, '0123456789abcdef') = '')",
            name=op.f("ck_splits_content_hash_hex"),
        ),
        sa.CheckConstraint("strategy IN ('material', 'structure-group')", name=op.f("ck_splits_strategy")),
        sa.CheckConstraint("NOT frozen OR content_hash IS NOT NULL", name=op.f("ck_splits_frozen_has_hash")),
        sa.CheckConstraint("cardinality(ratios) = 3", name=op.f("ck_splits_three_parts")),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_splits_dataset_id_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_splits")),
        sa.UniqueConstraint(
            "dataset_id", "strategy", "ratios", "seed", name=op.f("uq_splits_dataset_id_strategy_ratios_seed")
        ),
    )
    op.create_index(op.f("ix_splits_dataset_id"), "splits", ["dataset_id"], unique=False)
    op.create_table(
        "split_subsets",
        sa.Column("split_id", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("frame_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.CheckConstraint(
            "length(content_hash) = 64 AND ltrim(content_hash, '0123456789abcdef') = ''",
            name=op.f("ck_split_subsets_content_hash_hex"),
        ),
        sa.CheckConstraint("size > 0 AND cardinality(frame_ids) = size", name=op.f("ck_split_subsets_size")),
        sa.ForeignKeyConstraint(["split_id"], ["splits.id"], name=op.f("fk_split_subsets_split_id_splits")),
        sa.PrimaryKeyConstraint("split_id", "size", name=op.f("pk_split_subsets")),
    )
    op.create_table(
        "dataset_frames",
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("frame_id", sa.BigInteger(), nullable=False),
        sa.Column("material_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_frames_dataset_id_datasets")),
        sa.ForeignKeyConstraint(["frame_id"], ["frames.id"], name=op.f("fk_dataset_frames_frame_id_frames")),
        sa.ForeignKeyConstraint(
            ["material_id"], ["materials.id"], name=op.f("fk_dataset_frames_material_id_materials")
        ),
        sa.PrimaryKeyConstraint("dataset_id", "frame_id", name=op.f("pk_dataset_frames")),
    )
    op.create_index(
        "ix_dataset_frames_dataset_id_material_id", "dataset_frames", ["dataset_id", "material_id"], unique=False
    )
    op.create_index(op.f("ix_dataset_frames_frame_id"), "dataset_frames", ["frame_id"], unique=False)
    op.create_table(
        "frame_decisions",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("frame_id", sa.BigInteger(), nullable=False),
        sa.Column("material_id", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_frame_decisions_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["material_id"], ["materials.id"], name=op.f("fk_frame_decisions_material_id_materials"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["curation_runs.id"], name=op.f("fk_frame_decisions_run_id_curation_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "frame_id", name=op.f("pk_frame_decisions")),
    )
    op.create_index(op.f("ix_frame_decisions_frame_id"), "frame_decisions", ["frame_id"], unique=False)
    op.create_index("ix_frame_decisions_run_id_material_id", "frame_decisions", ["run_id", "material_id"], unique=False)
    op.create_index("ix_frame_decisions_run_id_rule", "frame_decisions", ["run_id", "rule"], unique=False)
    op.create_table(
        "split_members",
        sa.Column("split_id", sa.BigInteger(), nullable=False),
        sa.Column("frame_id", sa.BigInteger(), nullable=False),
        sa.Column("material_id", sa.BigInteger(), nullable=False),
        sa.Column("part", sa.Text(), nullable=False),
        sa.CheckConstraint("part IN ('train', 'val', 'test')", name=op.f("ck_split_members_part")),
        sa.ForeignKeyConstraint(["frame_id"], ["frames.id"], name=op.f("fk_split_members_frame_id_frames")),
        sa.ForeignKeyConstraint(["material_id"], ["materials.id"], name=op.f("fk_split_members_material_id_materials")),
        sa.ForeignKeyConstraint(["split_id"], ["splits.id"], name=op.f("fk_split_members_split_id_splits")),
        sa.PrimaryKeyConstraint("split_id", "frame_id", name=op.f("pk_split_members")),
    )
    op.create_index("ix_split_members_split_id_part", "split_members", ["split_id", "part"], unique=False)

    for ddl in TRIGGER_FUNCTIONS.values():
        op.execute(ddl)
    for name, table, when, level, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {when} ON {table} {level} EXECUTE FUNCTION {function}")
    for name, (comment, query) in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")
        op.execute(f"COMMENT ON VIEW {name} IS '{comment}'")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")

    op.drop_index("ix_split_members_split_id_part", table_name="split_members")
    op.drop_table("split_members")
    op.drop_index("ix_frame_decisions_run_id_rule", table_name="frame_decisions")
    op.drop_index("ix_frame_decisions_run_id_material_id", table_name="frame_decisions")
    op.drop_index(op.f("ix_frame_decisions_frame_id"), table_name="frame_decisions")
    op.drop_table("frame_decisions")
    op.drop_index(op.f("ix_dataset_frames_frame_id"), table_name="dataset_frames")
    op.drop_index("ix_dataset_frames_dataset_id_material_id", table_name="dataset_frames")
    op.drop_table("dataset_frames")
    op.drop_table("split_subsets")
    op.drop_index(op.f("ix_splits_dataset_id"), table_name="splits")
    op.drop_table("splits")
    op.drop_index(op.f("ix_datasets_curation_run_id"), table_name="datasets")
    op.drop_index(op.f("ix_datasets_content_hash"), table_name="datasets")
    op.drop_table("datasets")
    op.drop_index(op.f("ix_curation_runs_config_hash"), table_name="curation_runs")
    op.drop_table("curation_runs")

    for signature in TRIGGER_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
