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
