"""Database access: settings → engine (embedded server or URL), ORM models, migrations.

Typical use::

    from crossfid.db import get_engine, session_factory
    engine = get_engine()            # embedded server unless CROSSFID_DATABASE_URL is set
    Session = session_factory(engine)
"""

from crossfid.db.engine import Target, get_engine, make_engine, resolve_target, session_factory

__all__ = ["Target", "get_engine", "make_engine", "resolve_target", "session_factory"]
