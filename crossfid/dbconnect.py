"""What commands call to reach the database; cheap to import (SQLAlchemy loads on the first call)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from crossfid.config import Settings


def migrated_engine(settings: Settings | None = None) -> Engine:
    """Engine for the configured database (embedded unless a URL is set), schema created or upgraded first."""
    from crossfid.db.engine import get_engine
    from crossfid.db.migrate import upgrade

    engine = get_engine(settings)
    upgrade(engine)
    return engine
