"""Schema migrations driven from Python (``crossfid db init``), Alembic underneath."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

import crossfid


def migrations_dir() -> Path:
    """The Alembic script directory: inside an installed wheel, or beside the source tree."""
    package = Path(crossfid.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("crossfid's Alembic migrations were not found")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


#: pg_advisory_xact_lock key that serialises concurrent migrations of one database
MIGRATION_LOCK_KEY = 0x63726F7373666964  # "crossfid"


def _run(engine: Engine, fn, *args) -> None:
    """Run an Alembic command in one transaction, holding the migration lock.

    Two processes that migrate at once queue on the lock; the second then finds
    the schema at head and does nothing.
    """
    cfg = alembic_config()
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        fn(cfg, *args)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` (one transaction)."""
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, command.downgrade, revision)
