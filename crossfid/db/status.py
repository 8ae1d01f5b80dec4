"""What ``crossfid db status`` reports: server, URL, schema revision, row counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, inspect, text

from crossfid.db import migrate
from crossfid.db.engine import Target


@dataclass(frozen=True)
class DatabaseStatus:
    server: str  # "embedded (<pgdata>)" or "external"
    url: str  # password masked
    server_version: str
    database: str
    revision: str | None
    head: str
    row_counts: dict[str, int] = field(default_factory=dict)

    @property
    def up_to_date(self) -> bool:
        return self.revision == self.head


def collect_status(engine: Engine, target: Target) -> DatabaseStatus:
    """Inspect the database behind ``engine`` (read-only)."""
    revision = migrate.current_revision(engine)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        tables = sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
        counts = {name: conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one() for name in tables}
    if target.embedded:
        host = target.url.query.get("host", "")
        server = f"embedded (socket in {host})"
    else:
        server = "external"
    return DatabaseStatus(
        server=server,
        url=target.redacted,
        server_version=version,
        database=database,
        revision=revision,
        head=migrate.head_revision(),
        row_counts=counts,
    )
