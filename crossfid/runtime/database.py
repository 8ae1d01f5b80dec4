"""The configured database: the one place that resolves ``CROSSFID_DATABASE_URL`` (or the embedded server) and migrates.

Cheap to import: SQLAlchemy and the migrations load on the first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossfid.config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from crossfid.db.engine import Target


def target(settings: Settings | None = None) -> Target:
    """Where to connect: ``CROSSFID_DATABASE_URL``, or the embedded server in ``$CROSSFID_HOME`` (started if needed)."""
    from crossfid.db.engine import Target, normalize_url

    settings = settings or Settings.from_env()
    if settings.database_url:
        return Target(url=normalize_url(settings.database_url), embedded=False)
    from crossfid.db.embedded import ensure_server

    server = ensure_server(settings.home)
    return Target(url=normalize_url(server.url()), embedded=True)


def engine(settings: Settings | None = None, *, migrate: bool = True) -> Engine:
    """A SQLAlchemy engine for :func:`target`; with ``migrate`` the schema is created or upgraded to head first."""
    from crossfid.db.engine import make_engine

    result = make_engine(target(settings))
    if migrate:
        from crossfid.db.migrate import upgrade

        upgrade(result)
    return result
