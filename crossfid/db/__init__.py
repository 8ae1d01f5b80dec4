"""Database layer: low-level engines (:mod:`.engine`), the embedded server, ORM models, migrations.

The configured database (embedded unless ``CROSSFID_DATABASE_URL`` is set) is reached through
:func:`crossfid.runtime.database.engine`.
"""
