"""Vocabularies from one frozen copy: CHECK constraints of the word lists, and a leaderboard view built from a table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

The Python vocabularies live in ``crossfid/vocabulary.py`` and the benchmark registry
(``crossfid/benchmarks/registry.py``); a migration never imports them. This revision
keeps a frozen copy (``VOCABULARIES``, ``LEADERBOARD_COLUMNS``) and generates from it:

* the CHECK constraints of the word lists (same values as revisions 0001-0005, now
  written from one copy);
* the table ``leaderboard_columns`` (one row per metric column of the view: benchmark,
  metric, unit, direction, rank, composite normalisation) and the function
  ``crossfid_leaderboard_view()``, which (re)creates the ``leaderboard`` view from that
  table. The view it creates from these rows has the columns and numbers of revision
  0005's.

``tests/db/test_migrate.py`` requires the newest frozen copy of each vocabulary (the
newest revision whose ``VOCABULARIES`` has the key) and the ``leaderboard_columns``
rows to equal the live Python ones. The rule: a later revision that changes a word
list copies this one's ``_replace_check`` and sets its own ``VOCABULARIES`` entry; one
that changes the board inserts/deletes ``leaderboard_columns`` rows and runs
``SELECT crossfid_leaderboard_view()``. A new benchmark, or a new version of one,
whose metrics are not view columns needs no revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: frozen copy of the word lists of crossfid/vocabulary.py: key → (table, column, values)
VOCABULARIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "FIDELITY_FAMILIES": ("fidelities", "family", ("GGA", "meta-GGA", "hybrid")),
    "TASK_TYPES": ("tasks", "task_type", ("relax", "static")),
    "COMPRESSIONS": ("raw_documents", "compression", ("gzip", "none")),
    "RUN_STATUSES:ingest_runs": ("ingest_runs", "status", ("running", "completed", "failed")),
    "RUN_STATUSES:curation_runs": ("curation_runs", "status", ("running", "completed", "failed")),
    "RUN_STATUSES:benchmark_runs": ("benchmark_runs", "status", ("running", "completed", "failed")),
    "TRAINING_STATUSES": ("training_runs", "status", ("running", "completed", "failed", "interrupted")),
    "METHOD_NAMES": (
        "training_runs",
        "method",
        ("scratch", "tl-trainable-atomref", "tl-frozen-atomref", "tl-refit-atomref"),
    ),
}

#: frozen copy of crossfid.benchmarks.registry.leaderboard_columns():
#: (column, benchmark, metric, unit, better, ranked, composite scale)
LEADERBOARD_COLUMNS: tuple[tuple[str, str, str, str, str | None, bool, float | None], ...] = (
    ("test_energy_mae", "test-mae", "energy_mae", "meV/atom", "lower", True, 30.0),
    ("test_force_mae", "test-mae", "force_mae", "meV/Å", "lower", True, 50.0),
    ("test_stress_mae", "test-mae", "stress_mae", "GPa", "lower", False, None),
    ("test_magmom_mae", "test-mae", "magmom_mae", "μB", "lower", False, None),
    ("formation_mae", "formation-energy", "formation_mae", "meV/atom", "lower", True, 50.0),
    ("decomposition_mae", "decomposition-energy", "decomposition_mae", "meV/atom", "lower", True, 50.0),
    ("decomposition_f1", "decomposition-energy", "f1", "fraction", "higher", False, None),
    ("failed_relaxations", "decomposition-energy", "failed_relaxations", "count", "lower", False, None),
    ("density_mae", "density", "density_mae", "g/cm³", "lower", True, 0.3),
    ("density_ratio_mean", "density", "ratio_mean", "ratio", None, False, None),
    ("density_less_dense_fraction", "density", "fraction_less_dense", "fraction", None, False, None),
)

#: builds the view from leaderboard_columns; the fixed parts are revision 0005's view
LEADERBOARD_VIEW_FUNCTION = r"""
CREATE FUNCTION crossfid_leaderboard_view() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    pivots text;
    board_columns text;
    outer_columns text;
    ranks text;
    terms text;
    note text;
BEGIN
    SELECT string_agg(format('max(value) FILTER (WHERE benchmark = %L AND metric = %L) AS %I',
                             benchmark, metric, column_name) || ', ', '' ORDER BY position),
           string_agg(format('p.%I, ', column_name), '' ORDER BY position),
           string_agg(format('b.%I, ', column_name), '' ORDER BY position),
           string_agg(format('CASE WHEN b.%1$I IS NULL THEN NULL ELSE rank() OVER (ORDER BY b.%1$I %2$s NULLS LAST) '
                             'END AS %3$I, ', column_name, CASE better WHEN 'higher' THEN 'DESC' ELSE 'ASC' END,
                             'rank_' || column_name), '' ORDER BY position) FILTER (WHERE ranked),
           string_agg(format('(b.%I / %s)', column_name,
                             CASE WHEN scale::text ~ '[.eE]' THEN scale::text ELSE scale::text || '.0' END),
                      ', ' ORDER BY position) FILTER (WHERE scale IS NOT NULL),
           string_agg(format('%s/%s %s', column_name, scale, unit), ', ' ORDER BY position)
               FILTER (WHERE scale IS NOT NULL)
      INTO pivots, board_columns, outer_columns, ranks, terms, note
      FROM leaderboard_columns;
    DROP VIEW IF EXISTS leaderboard;
    EXECUTE format($view$
        CREATE VIEW leaderboard AS
        WITH latest AS (
            SELECT DISTINCT ON (r.model_id, r.benchmark, m.name)
                   r.model_id, r.benchmark, m.name AS metric, m.value, r.data_hash, r.id AS run_id
            FROM benchmark_runs r JOIN benchmark_metrics m ON m.run_id = r.id
            WHERE r.status = 'completed' AND r.model_id IS NOT NULL
            ORDER BY r.model_id, r.benchmark, m.name, r.finished_at DESC, r.id DESC
        ), pivot AS (
            SELECT model_id, %s
               array_agg(DISTINCT data_hash) AS benchmark_data_hashes,
               max(run_id) AS latest_benchmark_run
            FROM latest GROUP BY model_id
        ), board AS (
            SELECT mo.id AS model_id, mo.name AS model, mo.kind, mo.fidelities, mo.sha256,
                   coalesce(base.name, mo.name) AS base_model, coalesce(tr.method, 'pretrained') AS method,
                   tr.dataset_hash AS training_data_hash, tr.n_train AS training_size,
                   %s p.benchmark_data_hashes, p.latest_benchmark_run
            FROM models mo
            LEFT JOIN training_runs tr ON tr.id = mo.run_id
            LEFT JOIN models base ON base.id = tr.base_model_id
            LEFT JOIN pivot p ON p.model_id = mo.id
            WHERE mo.role IN ('base', 'best') AND tr.subset_size IS NULL
        )
        SELECT b.model_id, b.model, b.kind, b.fidelities, b.base_model, b.method, b.training_data_hash,
               b.training_size, b.sha256, %s %s
               %s AS composite_score,
               b.benchmark_data_hashes, b.latest_benchmark_run
        FROM board b
        $view$,
        coalesce(pivots, ''), coalesce(board_columns, ''), coalesce(outer_columns, ''), coalesce(ranks, ''),
        coalesce('(SELECT avg(x) FROM (VALUES ' || terms || ') v(x))', 'NULL::double precision'));
    EXECUTE format('COMMENT ON VIEW leaderboard IS %L',
        'One row per base model and best model of a full-training-set run: training provenance and the latest '
        'completed metric per benchmark (the columns of leaderboard_columns), ranks (1 = best) and a composite '
        'score, the mean over the benchmarks a model has of ' || coalesce(note, 'nothing') || ' (lower is better); '
        'made by crossfid_leaderboard_view()');
END
$fn$
"""


#: the view's comment in revision 0005, restored by the downgrade
REVISION_0005_COMMENT = (
    "One row per base model and best model of a full-training-set run: training provenance and the latest completed "
    "metric per benchmark, ranks (1 = best) and a composite score with fixed normalisation (energy 30 meV/atom, force "
    "50 meV/A, formation and decomposition 50 meV/atom, density 0.3 g/cm3; lower is better)"
)


def _replace_check(table: str, column: str, values: tuple[str, ...]) -> None:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    name = op.f(f"ck_{table}_{column}")
    op.drop_constraint(name, table, type_="check")
    op.create_check_constraint(name, table, f"{column} IN ({quoted})")


def upgrade() -> None:
    for table, column, values in VOCABULARIES.values():
        _replace_check(table, column, values)
    columns = op.create_table(
        "leaderboard_columns",
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("column_name", sa.Text(), nullable=False),
        sa.Column("benchmark", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("better", sa.Text(), nullable=True),
        sa.Column("ranked", sa.Boolean(), nullable=False),
        sa.Column("scale", postgresql.DOUBLE_PRECISION(), nullable=True),
        sa.CheckConstraint(
            "better IS NULL OR better IN ('lower', 'higher')", name=op.f("ck_leaderboard_columns_better")
        ),
        sa.CheckConstraint(
            "NOT ranked OR better IS NOT NULL", name=op.f("ck_leaderboard_columns_ranked_has_direction")
        ),
        sa.CheckConstraint(
            "scale IS NULL OR (scale > 0 AND better = 'lower')", name=op.f("ck_leaderboard_columns_scale")
        ),
        sa.CheckConstraint("column_name ~ '^[a-z][a-z0-9_]*$'", name=op.f("ck_leaderboard_columns_column_name")),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_leaderboard_columns")),
        sa.UniqueConstraint("benchmark", "metric", name=op.f("uq_leaderboard_columns_benchmark_metric")),
        sa.UniqueConstraint("column_name", name=op.f("uq_leaderboard_columns_column_name")),
    )
    keys = ("column_name", "benchmark", "metric", "unit", "better", "ranked", "scale")
    op.bulk_insert(
        columns, [{"position": i, **dict(zip(keys, row, strict=True))} for i, row in enumerate(LEADERBOARD_COLUMNS, 1)]
    )
    op.execute(LEADERBOARD_VIEW_FUNCTION)
    op.execute("SELECT crossfid_leaderboard_view()")


def downgrade() -> None:
    # the rows are revision 0005's columns again (later revisions removed theirs): recreate that view, then drop
    # the machinery (the view does not depend on the table or the function)
    op.execute("SELECT crossfid_leaderboard_view()")
    op.execute("DROP FUNCTION crossfid_leaderboard_view()")
    op.drop_table("leaderboard_columns")
    op.execute(f"COMMENT ON VIEW leaderboard IS '{REVISION_0005_COMMENT}'")
    # revisions 0001-0005 had the same values: the CHECK constraints stay as they are
