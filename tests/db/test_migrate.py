"""Alembic owns the schema: upgrade/downgrade round trip, and models == migrations."""

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from crossfid.benchmarks.registry import BOARD_COLUMNS, board_columns, leaderboard_columns
from crossfid.db import migrate
from crossfid.db.models import (
    BENCHMARK_TABLES,
    CORE_TABLES,
    CURATION_TABLES,
    REFERENCING_TABLES,
    TRAINING_TABLES,
    Base,
)
from crossfid.vocabulary import (
    COMPRESSIONS,
    ENERGY_LABELS,
    ENERGY_QUANTITIES,
    FIDELITIES,
    FIDELITY_FAMILIES,
    FIDELITY_NAMES,
    MATERIAL_RULES,
    METHOD_NAMES,
    MODEL_KINDS,
    MODEL_ROLES,
    RUN_STATUSES,
    TASK_TYPES,
    TRAINING_STATUSES,
)

VIEWS = {
    "v_frames",
    "v_tasks",
    "v_materials",
    "v_curation_summary",
    "v_frame_decisions",
    "v_datasets",
    "v_split_summary",
    "v_atomrefs",
    "v_atomref_energies",
    "v_cross_fidelity_analyses",
    "v_models",
    "v_training_runs",
    "leaderboard",
}


def _schema_objects(engine):
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
        views = set(inspect(conn).get_view_names())
        functions = set(
            conn.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE :p"), {"p": "crossfid%"}).scalars()
        )
    return tables, views, functions


def test_upgrade_downgrade_upgrade_on_empty_database(empty_engine):
    assert migrate.current_revision(empty_engine) is None
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision()
    tables, views, functions = _schema_objects(empty_engine)
    assert (
        set(CORE_TABLES) | set(CURATION_TABLES) | set(REFERENCING_TABLES) | set(TRAINING_TABLES) | set(BENCHMARK_TABLES)
    ) <= tables
    assert views >= VIEWS
    assert {"crossfid_all_finite", "crossfid_cell_volume", "crossfid_max_force", "crossfid_refuse_update"} <= functions

    migrate.downgrade(empty_engine, "base")
    assert migrate.current_revision(empty_engine) is None
    assert _schema_objects(empty_engine) == (set(), set(), set())

    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision()


def test_autogenerate_finds_no_difference_after_upgrade(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_fidelity_vocabulary_is_seeded_and_matches_python(engine):
    with engine.connect() as conn:
        names = set(conn.execute(text("SELECT name FROM fidelities")).scalars())
        rows = set(conn.execute(text("SELECT name, family, hubbard, dispersion, description FROM fidelities")).all())
    assert names == set(FIDELITY_NAMES)
    assert rows == {tuple(f)[:5] for f in FIDELITIES}
    with engine.connect() as conn:
        identified = {
            row[0]: tuple(row[1:])
            for row in conn.execute(
                text("SELECT name, functional, exact_exchange, screening, parameters FROM fidelities")
            ).all()
        }
    assert identified == {f.name: (f.functional, f.exact_exchange, f.screening, f.parameters) for f in FIDELITIES}
    assert {"GGA", "GGA+U", "r2SCAN", "r2SCAN+U", "HSE06", "PBE-D3", "r2SCAN-rVV10", "optB88-vdW"} <= names


def _triggers(engine) -> dict[str, str]:
    """Non-internal triggers: name → table."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname")
        ).all()
    return dict(rows)


def test_frozen_data_guards_downgrade_to_0005_and_back(engine):
    head = _triggers(engine)
    guards = {
        "frames_frozen": "frames",
        "tasks_frozen": "tasks",
        "materials_frozen": "materials",
        "curation_runs_frozen": "curation_runs",
        "frame_decisions_frozen": "frame_decisions",
        "frame_decisions_frozen_insert": "frame_decisions",
        "splits_freeze_check": "splits",
        "split_subsets_frozen": "split_subsets",
        "frames_no_truncate_frozen": "frames",
    }
    assert guards.items() <= head.items()
    migrate.downgrade(engine, "0005")
    assert migrate.current_revision(engine) == "0005"
    before = _triggers(engine)
    assert set(head) - set(before) == set(guards) - {"split_subsets_frozen"} | {
        f"{t}_no_truncate_frozen"
        for t in ("materials", "tasks", "curation_runs", "frame_decisions", "datasets", "splits")
    }
    assert before["split_subsets_frozen"] == "split_subsets"  # revision 0002's trigger is back
    _, _, functions = _schema_objects(engine)
    assert "crossfid_refuse_frozen_source" not in functions and "crossfid_refuse_frozen_parent" in functions
    migrate.upgrade(engine)
    assert _triggers(engine) == head


# --------------------------------------------------------------------------- vocabularies (revision 0007)

#: the live word list of each key of a migration's ``VOCABULARIES``
LIVE_VOCABULARIES = {
    "FIDELITY_FAMILIES": FIDELITY_FAMILIES,
    "TASK_TYPES": TASK_TYPES,
    "COMPRESSIONS": COMPRESSIONS,
    "RUN_STATUSES:ingest_runs": RUN_STATUSES,
    "RUN_STATUSES:curation_runs": RUN_STATUSES,
    "RUN_STATUSES:benchmark_runs": RUN_STATUSES,
    "TRAINING_STATUSES": TRAINING_STATUSES,
    "METHOD_NAMES": METHOD_NAMES,
    "ENERGY_QUANTITIES:tasks": ENERGY_QUANTITIES,
    "ENERGY_QUANTITIES:reference_entries": ENERGY_QUANTITIES,
    "MATERIAL_RULES": MATERIAL_RULES,
    "ENERGY_LABELS": ENERGY_LABELS,
    "MODEL_KINDS": MODEL_KINDS,
    "MODEL_ROLES": MODEL_ROLES,
}


def _frozen_vocabularies() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """The newest frozen copy of each vocabulary: from the newest revision whose ``VOCABULARIES`` has its key."""
    frozen: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for script in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions():  # head first
        for key, value in getattr(script.module, "VOCABULARIES", {}).items():
            frozen.setdefault(key, value)
    return frozen


def test_the_newest_frozen_vocabularies_equal_the_python_ones():
    """A word list changed in crossfid/vocabulary.py without a migration that freezes it fails here."""
    frozen = _frozen_vocabularies()
    assert {key: values for key, (_, _, values) in frozen.items()} == LIVE_VOCABULARIES


def test_check_constraints_hold_the_vocabularies(engine):
    with engine.connect() as conn:
        for table, column, values in _frozen_vocabularies().values():
            definition = conn.execute(
                text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :n"),
                {"n": f"ck_{table}_{column}"},
            ).scalar_one()
            assert tuple(re.findall(r"'([^']*)'::text", definition)) == values, definition
    # the ORM writes the same constraints (autogenerate does not compare CHECKs)
    for table, column, values in _frozen_vocabularies().values():
        check = next(c for c in Base.metadata.tables[table].constraints if c.name == f"ck_{table}_{column}")
        assert str(check.sqltext) == f"{column} IN ({', '.join(repr(v) for v in values)})"


def test_leaderboard_columns_equal_the_benchmark_registry(engine):
    """A board column, rank or composite term changed in the registry without a migration fails here."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT position, column_name, benchmark, metric, unit, better, ranked, scale "
                "FROM leaderboard_columns ORDER BY position"
            )
        ).all()
        view = [c["name"] for c in inspect(conn).get_columns("leaderboard")]
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert [tuple(r[1:]) for r in rows] == leaderboard_columns()
    metrics = [c.spec.column for c in board_columns()]
    ranks = [f"rank_{c.spec.column}" for c in board_columns() if c.spec.ranked]
    expected = [*BOARD_COLUMNS, *metrics, *ranks, "composite_score", "benchmark_data_hashes", "latest_benchmark_run"]
    assert view == expected


def test_revision_0007_rebuilds_revision_0005s_leaderboard_view(engine):
    def definition() -> str:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_get_viewdef('leaderboard'::regclass, true)")).scalar_one()

    migrate.downgrade(engine, "0006")
    original = definition()
    migrate.upgrade(engine, "0007")
    assert definition() == original
    migrate.downgrade(engine, "0006")
    assert definition() == original
    migrate.upgrade(engine)


def test_revision_0010_round_trip_removes_peers_and_restores_the_board(engine):
    """Downgrading to 0009 drops peer models (their runs with them) and the view's new columns; upgrading restores
    them. A calculator is a peer with a factory, never a base model."""
    from sqlalchemy.exc import IntegrityError

    def view_columns() -> list[str]:
        with engine.connect() as conn:
            return [c["name"] for c in inspect(conn).get_columns("leaderboard")]

    insert_peer = text(
        "INSERT INTO models (name, family, kind, role, fidelities, sha256, path, factory) "
        "VALUES ('emt', 'ASE', 'calculator', :role, '{GGA}', repeat('a', 64), '', 'ase.calculators.emt:EMT')"
    )
    with engine.begin() as conn:
        conn.execute(insert_peer, {"role": "peer"})
    with engine.begin() as conn, pytest.raises(IntegrityError, match="calculator_is_peer"):
        conn.execute(text("UPDATE models SET role = 'base' WHERE name = 'emt'"))
    head = view_columns()
    assert {"family", "origin", "labeller", "forgetting_force_mae"} <= set(head)
    migrate.downgrade(engine, "0009")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM models")).scalar_one() == 0
        columns = {c["name"] for c in inspect(conn).get_columns("benchmark_runs")}
    assert "labelled_by" not in columns
    assert not {"family", "origin", "labeller", "forgetting_force_mae"} & set(view_columns())
    migrate.upgrade(engine)
    assert view_columns() == head
