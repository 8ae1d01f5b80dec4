"""Peer models on the leaderboard, the labeller left out of the ranking, and forgetting columns.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

* ``models.kind`` may be ``calculator`` (any ASE calculator: ``models.factory``
  ``module:callable`` and ``models.options``, its keyword arguments); ``models.role`` may be
  ``peer``: another family's shipped model or a calculator, benchmarked for comparison,
  never fine-tuned (no AtomRef, no training run). ``n_parameters`` is NULL for a
  calculator that does not say.
* ``benchmark_runs.labelled_by``: the models (crossfid names) that labelled the data a
  run benchmarked on (``tasks.input_parameters ->> 'label_model'``), recorded when the
  benchmark data are prepared.
* The ``leaderboard`` view gains ``family``, ``origin`` (``crossfid`` for crossfid's own
  fine-tunes, ``base`` for the shipped models crossfid fine-tunes, ``peer``) and
  ``labeller`` (the model labelled the data of one of its latest benchmark runs). A
  labeller gets NULL ranks and no composite score, and the others are ranked among
  themselves; peers are on the board next to the base and best models.
* ``leaderboard_columns`` gains the forgetting benchmark's columns (errors on the source
  fidelity's test frames): ``forgetting_energy_mae``, ``forgetting_force_mae``,
  ``forgetting_stress_mae``.

The downgrade removes peer models (and their benchmark runs) first: revision 0009 cannot hold them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: frozen copy of the word lists of crossfid/vocabulary.py: key → (table, column, values)
VOCABULARIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "MODEL_KINDS": ("models", "kind", ("package", "trained", "calculator")),
    "MODEL_ROLES": ("models", "role", ("base", "best", "last", "peer")),
}
#: the word lists before this revision (revision 0004's CHECK constraints)
PREVIOUS: dict[str, tuple[str, ...]] = {"MODEL_KINDS": ("package", "trained"), "MODEL_ROLES": ("base", "best", "last")}

#: frozen rows of leaderboard_columns added here: (position, column, benchmark, metric, unit, better, ranked, scale)
ADDED = (
    (14, "forgetting_energy_mae", "forgetting", "energy_mae", "meV/atom", "lower", False, None),
    (15, "forgetting_force_mae", "forgetting", "force_mae", "meV/Å", "lower", False, None),
    (16, "forgetting_stress_mae", "forgetting", "stress_mae", "GPa", "lower", False, None),
)
KEYS = ("position", "column_name", "benchmark", "metric", "unit", "better", "ranked", "scale")

#: CHECK constraints of ``models`` added here: name → condition
MODEL_CHECKS = {
    "has_n_parameters": "n_parameters IS NOT NULL OR kind = 'calculator'",
    "calculator_has_factory": "(kind = 'calculator') = (factory IS NOT NULL)",
    "calculator_is_peer": "kind <> 'calculator' OR role = 'peer'",
    "peer_not_trained": "role <> 'peer' OR (atomref_id IS NULL AND run_id IS NULL)",
}

#: builds the view from leaderboard_columns: revision 0007's, plus family, origin and labeller, peers on the board,
#: labellers unranked and without a composite score
LEADERBOARD_VIEW_FUNCTION = r"""
CREATE OR REPLACE FUNCTION crossfid_leaderboard_view() RETURNS void LANGUAGE plpgsql AS $fn$
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
           string_agg(format('CASE WHEN b.%1$I IS NULL OR b.labeller THEN NULL '
                             'ELSE rank() OVER (PARTITION BY b.labeller ORDER BY b.%1$I %2$s NULLS LAST) '
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
                   r.model_id, r.benchmark, m.name AS metric, m.value, r.data_hash, r.id AS run_id,
                   mo.name = ANY(r.labelled_by) AS labelled
            FROM benchmark_runs r JOIN benchmark_metrics m ON m.run_id = r.id JOIN models mo ON mo.id = r.model_id
            WHERE r.status = 'completed' AND r.model_id IS NOT NULL
            ORDER BY r.model_id, r.benchmark, m.name, r.finished_at DESC, r.id DESC
        ), pivot AS (
            SELECT model_id, %s
               array_agg(DISTINCT data_hash) AS benchmark_data_hashes,
               max(run_id) AS latest_benchmark_run,
               bool_or(labelled) AS labeller
            FROM latest GROUP BY model_id
        ), board AS (
            SELECT mo.id AS model_id, mo.name AS model, mo.kind, mo.family,
                   CASE mo.role WHEN 'peer' THEN 'peer' WHEN 'base' THEN 'base' ELSE 'crossfid' END AS origin,
                   coalesce(p.labeller, false) AS labeller, mo.fidelities, mo.sha256,
                   coalesce(base.name, mo.name) AS base_model, coalesce(tr.method, 'pretrained') AS method,
                   tr.dataset_hash AS training_data_hash, tr.n_train AS training_size,
                   %s p.benchmark_data_hashes, p.latest_benchmark_run
            FROM models mo
            LEFT JOIN training_runs tr ON tr.id = mo.run_id
            LEFT JOIN models base ON base.id = tr.base_model_id
            LEFT JOIN pivot p ON p.model_id = mo.id
            WHERE mo.role IN ('base', 'best', 'peer') AND tr.subset_size IS NULL
        )
        SELECT b.model_id, b.model, b.kind, b.family, b.origin, b.labeller, b.fidelities, b.base_model, b.method,
               b.training_data_hash, b.training_size, b.sha256, %s %s
               CASE WHEN b.labeller THEN NULL ELSE %s END AS composite_score,
               b.benchmark_data_hashes, b.latest_benchmark_run
        FROM board b
        $view$,
        coalesce(pivots, ''), coalesce(board_columns, ''), coalesce(outer_columns, ''), coalesce(ranks, ''),
        coalesce('(SELECT avg(x) FROM (VALUES ' || terms || ') v(x))', 'NULL::double precision'));
    EXECUTE format('COMMENT ON VIEW leaderboard IS %L',
        'One row per base model, best model of a full-training-set run and peer model: provenance, origin '
        '(crossfid, base, peer), labeller (it labelled the data of one of its latest benchmark runs), the latest '
        'completed metric per benchmark (the columns of leaderboard_columns), ranks (1 = best, labellers unranked) '
        'and a composite score (none for a labeller), the mean over the benchmarks a model has of '
        || coalesce(note, 'nothing') || ' (lower is better); made by crossfid_leaderboard_view()');
END
$fn$
"""

#: revision 0007's function, restored by the downgrade
REVISION_0007_FUNCTION = r"""
CREATE OR REPLACE FUNCTION crossfid_leaderboard_view() RETURNS void LANGUAGE plpgsql AS $fn$
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


def _replace_check(table: str, column: str, values: tuple[str, ...]) -> None:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    name = op.f(f"ck_{table}_{column}")
    op.drop_constraint(name, table, type_="check")
    op.create_check_constraint(name, table, f"{column} IN ({quoted})")


def upgrade() -> None:
    for table, column, values in VOCABULARIES.values():
        _replace_check(table, column, values)
    op.add_column("models", sa.Column("factory", sa.Text(), nullable=True))
    op.add_column(
        "models",
        sa.Column("options", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
    )
    op.alter_column("models", "n_parameters", existing_type=sa.Integer(), nullable=True)
    op.drop_constraint(op.f("ck_models_n_parameters_positive"), "models", type_="check")
    op.create_check_constraint(
        op.f("ck_models_n_parameters_positive"), "models", "n_parameters IS NULL OR n_parameters > 0"
    )
    for name, condition in MODEL_CHECKS.items():
        op.create_check_constraint(op.f(f"ck_models_{name}"), "models", condition)
    op.add_column(
        "benchmark_runs",
        sa.Column("labelled_by", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
    )
    table = sa.table("leaderboard_columns", *(sa.column(k) for k in KEYS))
    op.bulk_insert(table, [dict(zip(KEYS, row, strict=True)) for row in ADDED])
    op.execute(LEADERBOARD_VIEW_FUNCTION)
    op.execute("SELECT crossfid_leaderboard_view()")


def downgrade() -> None:
    positions = ", ".join(str(row[0]) for row in ADDED)
    op.execute(f"DELETE FROM leaderboard_columns WHERE position IN ({positions})")
    op.execute(REVISION_0007_FUNCTION)
    op.execute("SELECT crossfid_leaderboard_view()")
    op.drop_column("benchmark_runs", "labelled_by")
    op.execute("DELETE FROM models WHERE role = 'peer'")  # their benchmark runs go with them (ON DELETE CASCADE)
    for name in MODEL_CHECKS:
        op.drop_constraint(op.f(f"ck_models_{name}"), "models", type_="check")
    op.drop_constraint(op.f("ck_models_n_parameters_positive"), "models", type_="check")
    op.create_check_constraint(op.f("ck_models_n_parameters_positive"), "models", "n_parameters > 0")
    op.alter_column("models", "n_parameters", existing_type=sa.Integer(), nullable=False)
    op.drop_column("models", "options")
    op.drop_column("models", "factory")
    for key, (table, column, _) in VOCABULARIES.items():
        _replace_check(table, column, PREVIOUS[key])
