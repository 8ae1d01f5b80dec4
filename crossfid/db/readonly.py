"""Read-only SQL for people: ``crossfid sql`` and the analysts' reader role."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_TIMEOUT_S = 60.0


class ReadOnlyViolation(RuntimeError):
    """The statement tried to write (or to leave the read-only transaction)."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def run_read_only(
    libpq_url: str, query: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int | None = None
) -> QueryResult:
    """Run one statement in a READ ONLY transaction with a statement timeout.

    The statement is sent with the extended query protocol, so it is exactly one
    statement (``SELECT 1; COMMIT; INSERT ...`` is refused by the server), and the
    transaction is rolled back whatever happens. Raises :class:`ReadOnlyViolation`
    for writes and ``psycopg.errors.QueryCanceled`` on timeout.
    """
    with psycopg.connect(libpq_url, autocommit=False) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_s * 1000))))
        try:
            with conn.cursor() as cur:
                # binary=True forces the extended protocol: one statement, no smuggled COMMIT
                cur.execute(query.encode(), binary=True)
                if cur.description is None:
                    return QueryResult(columns=[], rows=[], truncated=False)
                columns = [c.name for c in cur.description]
                if max_rows is None:
                    rows = cur.fetchall()
                    truncated = False
                else:
                    rows = cur.fetchmany(max_rows + 1)
                    truncated = len(rows) > max_rows
                    rows = rows[:max_rows]
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise ReadOnlyViolation(
                "crossfid sql is read-only: the statement tries to write "
                f"({exc.diag.message_primary}); use the Python API or a migration to change data"
            ) from exc
        except psycopg.errors.SyntaxError as exc:
            if "multiple commands" in str(exc):
                raise ReadOnlyViolation("crossfid sql runs exactly one statement") from exc
            raise
        finally:
            conn.rollback()
    return QueryResult(columns=columns, rows=[tuple(r) for r in rows], truncated=truncated)


_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_reader(libpq_url: str, role: str, password: str | None = None) -> bool:
    """Create (or update) a login role that can read every crossfid table and view, and nothing else.

    The role gets CONNECT on the database, USAGE on ``public``, SELECT on all current
    and future tables and views there, and ``default_transaction_read_only``.
    Returns True when the role was created, False when it existed and was updated.
    """
    if not _ROLE_NAME.match(role):
        raise ValueError(f"invalid role name {role!r}: use lower-case letters, digits and _")
    with psycopg.connect(libpq_url, autocommit=False) as conn:
        ident = sql.Identifier(role)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
        if exists:
            superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0]
            if superuser:
                raise ValueError(f"role {role!r} is a superuser; refusing to turn it into a reader")
        else:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(ident))
        if password is not None:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
        database = conn.execute("SELECT current_database()").fetchone()[0]
        statements = [
            "GRANT CONNECT ON DATABASE {db} TO {role}",
            "GRANT USAGE ON SCHEMA public TO {role}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
            "ALTER ROLE {role} IN DATABASE {db} SET default_transaction_read_only = on",
        ]
        for statement in statements:
            conn.execute(sql.SQL(statement).format(db=sql.Identifier(database), role=ident))
        conn.commit()
    return not exists
