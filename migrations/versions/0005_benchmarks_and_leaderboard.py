"""Benchmark runs, their metrics and per-structure results; the leaderboard view.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: fixed normalisation of the composite score (lower is better): each metric divided by a typical
#: accuracy of a foundation potential, then averaged over the metrics a model has
COMPOSITE = "(test_energy_mae / 30.0), (test_force_mae / 50.0), (formation_mae / 50.0), (decomposition_mae / 50.0), (density_mae / 0.3)"

VIEWS = {
    "leaderboard": (
        "One row per base model and best model of a full-training-set run: training provenance and the latest completed metric per benchmark, "
        "ranks (1 = best) and a composite score with fixed normalisation (energy 30 meV/atom, force 50 meV/A, "
        "formation and decomposition 50 meV/atom, density 0.3 g/cm3; lower is better)",
        f"""
        WITH latest AS (
            SELECT DISTINCT ON (r.model_id, r.benchmark, m.name)
                   r.model_id, r.benchmark, m.name AS metric, m.value, r.data_hash, r.id AS run_id
            FROM benchmark_runs r JOIN benchmark_metrics m ON m.run_id = r.id
            WHERE r.status = 'completed' AND r.model_id IS NOT NULL
            ORDER BY r.model_id, r.benchmark, m.name, r.finished_at DESC, r.id DESC
        ), pivot AS (
            SELECT model_id,
               max(value) FILTER (WHERE benchmark = 'test-mae' AND metric = 'energy_mae') AS test_energy_mae,
               max(value) FILTER (WHERE benchmark = 'test-mae' AND metric = 'force_mae') AS test_force_mae,
               max(value) FILTER (WHERE benchmark = 'test-mae' AND metric = 'stress_mae') AS test_stress_mae,
               max(value) FILTER (WHERE benchmark = 'test-mae' AND metric = 'magmom_mae') AS test_magmom_mae,
               max(value) FILTER (WHERE benchmark = 'formation-energy' AND metric = 'formation_mae') AS formation_mae,
               max(value) FILTER (WHERE benchmark = 'decomposition-energy' AND metric = 'decomposition_mae') AS decomposition_mae,
               max(value) FILTER (WHERE benchmark = 'decomposition-energy' AND metric = 'f1') AS decomposition_f1,
               max(value) FILTER (WHERE benchmark = 'decomposition-energy' AND metric = 'failed_relaxations') AS failed_relaxations,
               max(value) FILTER (WHERE benchmark = 'density' AND metric = 'density_mae') AS density_mae,
               max(value) FILTER (WHERE benchmark = 'density' AND metric = 'ratio_mean') AS density_ratio_mean,
               max(value) FILTER (WHERE benchmark = 'density' AND metric = 'fraction_less_dense') AS density_less_dense_fraction,
               array_agg(DISTINCT data_hash) AS benchmark_data_hashes,
               max(run_id) AS latest_benchmark_run
            FROM latest GROUP BY model_id
        ), board AS (
            SELECT mo.id AS model_id, mo.name AS model, mo.kind, mo.fidelities, mo.sha256,
                   coalesce(base.name, mo.name) AS base_model, coalesce(tr.method, 'pretrained') AS method,
                   tr.dataset_hash AS training_data_hash, tr.n_train AS training_size,
                   p.test_energy_mae, p.test_force_mae, p.test_stress_mae, p.test_magmom_mae, p.formation_mae, p.decomposition_mae, p.decomposition_f1, p.failed_relaxations, p.density_mae, p.density_ratio_mean, p.density_less_dense_fraction, p.benchmark_data_hashes, p.latest_benchmark_run
            FROM models mo
            LEFT JOIN training_runs tr ON tr.id = mo.run_id
            LEFT JOIN models base ON base.id = tr.base_model_id
            LEFT JOIN pivot p ON p.model_id = mo.id
            WHERE mo.role IN ('base', 'best') AND tr.subset_size IS NULL
        )
        SELECT b.model_id, b.model, b.kind, b.fidelities, b.base_model, b.method, b.training_data_hash,
               b.training_size, b.sha256,
               b.test_energy_mae, b.test_force_mae, b.test_stress_mae, b.test_magmom_mae, b.formation_mae, b.decomposition_mae, b.decomposition_f1, b.failed_relaxations, b.density_mae, b.density_ratio_mean, b.density_less_dense_fraction,
               CASE WHEN b.test_energy_mae IS NULL THEN NULL ELSE rank() OVER (ORDER BY b.test_energy_mae ASC NULLS LAST) END AS rank_test_energy_mae,
               CASE WHEN b.test_force_mae IS NULL THEN NULL ELSE rank() OVER (ORDER BY b.test_force_mae ASC NULLS LAST) END AS rank_test_force_mae,
               CASE WHEN b.formation_mae IS NULL THEN NULL ELSE rank() OVER (ORDER BY b.formation_mae ASC NULLS LAST) END AS rank_formation_mae,
               CASE WHEN b.decomposition_mae IS NULL THEN NULL ELSE rank() OVER (ORDER BY b.decomposition_mae ASC NULLS LAST) END AS rank_decomposition_mae,
               CASE WHEN b.density_mae IS NULL THEN NULL ELSE rank() OVER (ORDER BY b.density_mae ASC NULLS LAST) END AS rank_density_mae,
               (SELECT avg(x) FROM (VALUES {COMPOSITE}) v(x)) AS composite_score,
               b.benchmark_data_hashes, b.latest_benchmark_run
        FROM board b
        """,
    ),
}


def upgrade() -> None:
    op.create_table(
        "benchmark_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("benchmark", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=True),
        sa.Column("model_sha256", sa.Text(), nullable=True),
        sa.Column("method", sa.Text(), nullable=True),
        sa.Column("split_id", sa.BigInteger(), nullable=True),
        sa.Column("data_hash", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("n_structures", sa.Integer(), nullable=True),
        sa.Column("n_failed", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("crossfid_version", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "length(data_hash) = 64 AND ltrim(data_hash, '0123456789abcdef') = ''",
            name=op.f("ck_benchmark_runs_data_hash_hex"),
        ),
        sa.CheckConstraint(
            "length(key) = 64 AND ltrim(key, '0123456789abcdef') = ''", name=op.f("ck_benchmark_runs_key_hex")
        ),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed')", name=op.f("ck_benchmark_runs_status")),
        sa.CheckConstraint("model_id IS NOT NULL OR method IS NOT NULL", name=op.f("ck_benchmark_runs_has_subject")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_benchmark_runs_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["split_id"], ["splits.id"], name=op.f("fk_benchmark_runs_split_id_splits")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_benchmark_runs")),
    )
    op.create_index(op.f("ix_benchmark_runs_benchmark"), "benchmark_runs", ["benchmark"], unique=False)
    op.create_index(op.f("ix_benchmark_runs_key"), "benchmark_runs", ["key"], unique=False)
    op.create_index(op.f("ix_benchmark_runs_model_id"), "benchmark_runs", ["model_id"], unique=False)
    op.create_index(op.f("ix_benchmark_runs_split_id"), "benchmark_runs", ["split_id"], unique=False)
    op.create_index(
        "uq_benchmark_runs_key_completed",
        "benchmark_runs",
        ["key"],
        unique=True,
        postgresql_where=sa.text("status = 'completed'"),
    )
    op.create_table(
        "benchmark_items",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("item", sa.Text(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.CheckConstraint("ok OR failure IS NOT NULL", name=op.f("ck_benchmark_items_failure_has_reason")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["benchmark_runs.id"], name=op.f("fk_benchmark_items_run_id_benchmark_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "item", name=op.f("pk_benchmark_items")),
    )
    op.create_table(
        "benchmark_metrics",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "value IS NULL OR value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            name=op.f("ck_benchmark_metrics_value_finite"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["benchmark_runs.id"],
            name=op.f("fk_benchmark_metrics_run_id_benchmark_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "name", name=op.f("pk_benchmark_metrics")),
    )
    for name, (comment, query) in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")
        op.execute(f"COMMENT ON VIEW {name} IS '{comment}'")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("benchmark_metrics")
    op.drop_table("benchmark_items")
    op.drop_index(
        "uq_benchmark_runs_key_completed", table_name="benchmark_runs", postgresql_where=sa.text("status = 'completed'")
    )
    op.drop_index(op.f("ix_benchmark_runs_split_id"), table_name="benchmark_runs")
    op.drop_index(op.f("ix_benchmark_runs_model_id"), table_name="benchmark_runs")
    op.drop_index(op.f("ix_benchmark_runs_key"), table_name="benchmark_runs")
    op.drop_index(op.f("ix_benchmark_runs_benchmark"), table_name="benchmark_runs")
    op.drop_table("benchmark_runs")
