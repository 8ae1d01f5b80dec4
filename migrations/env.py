"""Alembic environment: the connection comes from crossfid (or an explicit URL)."""

from alembic import context

from crossfid.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # crossfid.db.migrate passes an open connection
        _run(connection)
        return
    from crossfid.db.engine import make_engine, resolve_target

    url = config.get_main_option("sqlalchemy.url")
    engine = make_engine(url) if url else make_engine(resolve_target())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("crossfid migrations run online only: use `crossfid db init`")
run_migrations_online()
