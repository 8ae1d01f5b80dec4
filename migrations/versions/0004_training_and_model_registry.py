"""Training runs, their epochs and first-epoch gradient ranges, and the model registry.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "v_models": (
        "Registered models: base models shipped with chgnet and the best/last weights of training runs",
        """
        SELECT m.id, m.name, m.kind, m.role, m.fidelities, m.run_id, r.method, a.name AS atomref,
               m.epoch, m.n_parameters, m.sha256, m.path, m.created_at
        FROM models m
        LEFT JOIN training_runs r ON r.id = m.run_id
        LEFT JOIN atomrefs a ON a.id = m.atomref_id
        """,
    ),
    "v_training_runs": (
        "Training runs with their data, base model, AtomRef, progress and test MAEs (meV/atom, meV/A, GPa, muB)",
        """
        SELECT r.id, r.method, d.name || ':' || d.version AS dataset, r.split_id, r.subset_size,
               b.name AS base_model, a.name AS atomref, r.status, r.device, r.epochs_completed,
               (r.hyperparameters ->> 'epochs')::int AS epochs, r.n_train, r.n_val, r.n_test,
               r.best_epoch, r.best_val_energy_mae,
               (r.test_metrics ->> 'energy_mae')::float8 AS test_energy_mae,
               (r.test_metrics ->> 'force_mae')::float8 AS test_force_mae,
               (r.test_metrics ->> 'stress_mae')::float8 AS test_stress_mae,
               (r.test_metrics ->> 'magmom_mae')::float8 AS test_magmom_mae,
               r.started_at, r.finished_at
        FROM training_runs r
        JOIN splits s ON s.id = r.split_id
        JOIN datasets d ON d.id = s.dataset_id
        JOIN models b ON b.id = r.base_model_id
        LEFT JOIN atomrefs a ON a.id = r.atomref_id
        """,
    ),
}


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("family", sa.Text(), server_default="CHGNet", nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("fidelities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("atomref_id", sa.BigInteger(), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("n_parameters", sa.Integer(), nullable=False),
        sa.Column("provenance", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind <> 'trained' OR run_id IS NOT NULL", name=op.f("ck_models_trained_has_run")),
        sa.CheckConstraint("kind IN ('package', 'trained')", name=op.f("ck_models_kind")),
        sa.CheckConstraint(
            "length(sha256) = 64 AND ltrim(sha256, '0123456789abcdef') = ''", name=op.f("ck_models_sha256_hex")
        ),
        sa.CheckConstraint("role IN ('base', 'best', 'last')", name=op.f("ck_models_role")),
        sa.CheckConstraint("cardinality(fidelities) > 0", name=op.f("ck_models_has_fidelities")),
        sa.CheckConstraint("n_parameters > 0", name=op.f("ck_models_n_parameters_positive")),
        sa.ForeignKeyConstraint(["atomref_id"], ["atomrefs.id"], name=op.f("fk_models_atomref_id_atomrefs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_index(op.f("ix_models_atomref_id"), "models", ["atomref_id"], unique=False)
    op.create_index(op.f("ix_models_run_id"), "models", ["run_id"], unique=False)
    op.create_index(op.f("ix_models_sha256"), "models", ["sha256"], unique=False)
    op.create_table(
        "training_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("base_model_id", sa.BigInteger(), nullable=False),
        sa.Column("split_id", sa.BigInteger(), nullable=False),
        sa.Column("split_hash", sa.Text(), nullable=False),
        sa.Column("dataset_hash", sa.Text(), nullable=False),
        sa.Column("subset_size", sa.Integer(), nullable=True),
        sa.Column("subset_hash", sa.Text(), nullable=True),
        sa.Column("atomref_id", sa.BigInteger(), nullable=True),
        sa.Column("fidelities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("hyperparameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("warnings", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("device", sa.Text(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_val", sa.Integer(), nullable=False),
        sa.Column("n_test", sa.Integer(), nullable=False),
        sa.Column("epochs_completed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("best_val_energy_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("test_metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("graph_cache", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("checkpoint_dir", sa.Text(), nullable=False),
        sa.Column("versions", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "length(dataset_hash) = 64 AND ltrim(dataset_hash, '0123456789abcdef') = ''",
            name=op.f("ck_training_runs_dataset_hash_hex"),
        ),
        sa.CheckConstraint(
            "length(split_hash) = 64 AND ltrim(split_hash, '0123456789abcdef') = ''",
            name=op.f("ck_training_runs_split_hash_hex"),
        ),
        sa.CheckConstraint(
            "method IN ('scratch', 'tl-trainable-atomref', 'tl-frozen-atomref', 'tl-refit-atomref')",
            name=op.f("ck_training_runs_method"),
        ),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'interrupted')", name=op.f("ck_training_runs_status")
        ),
        sa.CheckConstraint("targets <> '' AND ltrim(targets, 'efsm') = ''", name=op.f("ck_training_runs_targets")),
        sa.CheckConstraint("epochs_completed >= 0", name=op.f("ck_training_runs_epochs_completed_nonnegative")),
        sa.CheckConstraint("n_train > 0 AND n_val >= 0 AND n_test >= 0", name=op.f("ck_training_runs_sizes")),
        sa.CheckConstraint(
            "subset_size IS NULL OR subset_size > 0", name=op.f("ck_training_runs_subset_size_positive")
        ),
        sa.ForeignKeyConstraint(["atomref_id"], ["atomrefs.id"], name=op.f("fk_training_runs_atomref_id_atomrefs")),
        sa.ForeignKeyConstraint(["base_model_id"], ["models.id"], name=op.f("fk_training_runs_base_model_id_models")),
        sa.ForeignKeyConstraint(["split_id"], ["splits.id"], name=op.f("fk_training_runs_split_id_splits")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    op.create_index(op.f("ix_training_runs_atomref_id"), "training_runs", ["atomref_id"], unique=False)
    op.create_index(op.f("ix_training_runs_base_model_id"), "training_runs", ["base_model_id"], unique=False)
    op.create_index(op.f("ix_training_runs_method"), "training_runs", ["method"], unique=False)
    op.create_index(op.f("ix_training_runs_split_id"), "training_runs", ["split_id"], unique=False)
    op.create_table(
        "training_epochs",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_energy_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("train_force_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("train_stress_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("train_magmom_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("train_loss", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("val_energy_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("val_force_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("val_stress_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("val_magmom_mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("val_loss", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("learning_rate", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("seconds", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("compute_seconds", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("val_seconds", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("other_seconds", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("epoch > 0", name=op.f("ck_training_epochs_epoch_positive")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["training_runs.id"], name=op.f("fk_training_epochs_run_id_training_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "epoch", name=op.f("pk_training_epochs")),
    )
    op.create_table(
        "training_gradients",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("parameter", sa.Text(), nullable=False),
        sa.Column("fraction", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("abs_min", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("abs_max", sa.DOUBLE_PRECISION(), nullable=False),
        sa.Column("abs_mean", sa.DOUBLE_PRECISION(), nullable=False),
        sa.CheckConstraint("abs_min <= abs_mean AND abs_mean <= abs_max", name=op.f("ck_training_gradients_ordered")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["training_runs.id"],
            name=op.f("fk_training_gradients_run_id_training_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "epoch", "step", "layer", name=op.f("pk_training_gradients")),
    )
    # models.run_id and training_runs.base_model_id refer to each other: the first key is added last
    op.create_foreign_key(
        op.f("fk_models_run_id_training_runs"), "models", "training_runs", ["run_id"], ["id"], ondelete="SET NULL"
    )
    for name, (comment, query) in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")
        op.execute(f"COMMENT ON VIEW {name} IS '{comment}'")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_constraint(op.f("fk_models_run_id_training_runs"), "models", type_="foreignkey")
    op.drop_table("training_gradients")
    op.drop_table("training_epochs")
    op.drop_index(op.f("ix_training_runs_split_id"), table_name="training_runs")
    op.drop_index(op.f("ix_training_runs_method"), table_name="training_runs")
    op.drop_index(op.f("ix_training_runs_base_model_id"), table_name="training_runs")
    op.drop_index(op.f("ix_training_runs_atomref_id"), table_name="training_runs")
    op.drop_table("training_runs")
    op.drop_index(op.f("ix_models_sha256"), table_name="models")
    op.drop_index(op.f("ix_models_run_id"), table_name="models")
    op.drop_index(op.f("ix_models_atomref_id"), table_name="models")
    op.drop_table("models")
