"""Alembic owns the schema: upgrade/downgrade round trip, and models == migrations."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from crossfid.db import migrate
from crossfid.db.models import (
    BENCHMARK_TABLES,
    CORE_TABLES,
    CURATION_TABLES,
    REFERENCING_TABLES,
    TRAINING_TABLES,
    Base,
)
from crossfid.db.vocabulary import FIDELITY_NAMES

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
    assert names == set(FIDELITY_NAMES)
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
