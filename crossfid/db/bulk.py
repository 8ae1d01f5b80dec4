"""Fast, idempotent bulk writes: ``COPY`` into a staging table, then one ``INSERT ... ON CONFLICT``.

:func:`copy_insert` streams rows with psycopg 3's ``COPY FROM STDIN`` into a
temporary table that has exactly the requested columns and their types (no
constraints, defaults, identity or generated columns), then moves them into the
target with a single ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. All CHECK,
foreign-key and unique constraints of the target therefore apply unchanged, and
re-loading rows that are already present is a no-op that is counted, not an error.
With ``conflict_columns`` the INSERT first skips rows whose key already exists
(an anti-join on the unique index), so a re-load does not even re-evaluate CHECKs
and generated columns.

Everything runs inside the caller's transaction and nothing is committed here:
one bad row makes the whole statement fail and the caller's rollback leaves the
target untouched.

Errors are SQLAlchemy exceptions whatever their origin, so that callers can tell
data from infrastructure: a value psycopg cannot encode (a string with a lone
surrogate, an integer out of range for its column, which the binary format would
otherwise truncate silently) raises ``sqlalchemy.exc.DataError`` like a value the
server refuses, and an error that
lost the connection is raised with ``connection_invalidated=True`` after the
SQLAlchemy connection is invalidated, so that its pool reconnects.

The COPY uses PostgreSQL's binary format, typed by the staging table's columns
(text format when some column type has no psycopg binary dumper), so values must
be of the Python type matching their column: ``float``/``int`` for ``float8``,
lists for arrays (e.g. ``float8[]``), ``datetime`` for ``timestamptz``, ``str``
for ``text``. numpy arrays and scalars are converted with ``tolist()``, and values
of ``json`` / ``jsonb`` columns (dicts, lists, scalars) are wrapped in ``Json`` /
``Jsonb`` automatically. Generated columns (``volume``, ``energy_per_atom``,
``max_force``, ``n_elements``) must not be written; leave them out of ``columns``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Json, Jsonb
from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

#: accepted values of ``copy_insert(conflict=...)``
CONFLICT_MODES = ("do_nothing", "error")

_JSON_WRAPPERS: dict[int, type] = {
    psycopg.postgres.types["json"].oid: Json,
    psycopg.postgres.types["jsonb"].oid: Jsonb,
}


@dataclass(frozen=True)
class BulkResult:
    """Outcome of one bulk insert.

    ``returned_rows`` holds the ``RETURNING`` values of the rows actually inserted
    (rows skipped by ``ON CONFLICT DO NOTHING`` return nothing), as tuples in the
    order of ``returning``. Their order is not guaranteed to follow the input:
    return a key column as well when rows must be matched.
    """

    n_input: int
    n_inserted: int
    returned_rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def n_already_present(self) -> int:
        """Input rows not inserted because they conflicted (with the table or within the batch)."""
        return self.n_input - self.n_inserted


def staging_name(prefix: str = "crossfid_staging") -> str:
    """A fresh temporary-table name, unique within the session and so within its transaction.

    Temporary tables are private to a session, so a random suffix is enough to let
    several bulk inserts share one transaction.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    if len(name) > 63:  # PostgreSQL would silently truncate, defeating the uniqueness
        raise ValueError(f"staging table prefix {prefix!r} is too long")
    return name


def copy_insert(
    conn: Connection | Session,
    table: str | Table | Any,
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    columns: Sequence[str],
    *,
    conflict: str = "do_nothing",
    conflict_columns: Sequence[str] | None = None,
    returning: Sequence[str] | None = None,
) -> BulkResult:
    """Insert ``rows`` into ``table`` through ``COPY`` and a staging table; return the counts.

    ``conn``: a SQLAlchemy ``Connection`` (or ``Session``); a transaction is begun on
    it if none is active, and it is left open for the caller to commit.
    ``table``: a table name (``"frames"`` or ``"schema.table"``), a ``Table`` or an
    ORM model class. ``rows``: mappings keyed by column name or sequences ordered
    like ``columns``; any iterable, consumed once while streaming.
    ``conflict``: ``"do_nothing"`` skips rows that violate a unique constraint (only
    those of ``conflict_columns`` if given), ``"error"`` lets them raise.
    ``returning``: columns of the inserted rows to return, e.g. ``["id"]``.

    Database errors are raised as SQLAlchemy exceptions (``sqlalchemy.exc.IntegrityError``
    for a CHECK, foreign-key or unique violation) whose ``orig`` is the psycopg error;
    the transaction is then aborted and must be rolled back.
    """
    if isinstance(conn, Session):
        conn = conn.connection()
    columns = list(columns)
    conflict_columns = list(conflict_columns or [])
    returning = list(returning or [])
    if not columns:
        raise ValueError("copy_insert needs at least one column")
    if len(set(columns)) != len(columns):
        raise ValueError(f"duplicate columns in {columns}")
    if conflict not in CONFLICT_MODES:
        raise ValueError(f"conflict must be one of {CONFLICT_MODES}, not {conflict!r}")
    if conflict_columns and conflict != "do_nothing":
        raise ValueError("conflict_columns only apply with conflict='do_nothing'")
    target = _target_identifier(table, columns, conflict_columns, returning)

    stage = sql.Identifier(staging_name())
    cols = _identifiers(columns)
    create = sql.SQL("CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {target} WITH NO DATA")
    copy = sql.SQL("COPY {stage} ({cols}) FROM STDIN")
    insert = sql.SQL("INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} AS _new{absent}{on_conflict}{returning}")
    drop = sql.SQL("DROP TABLE {stage}")
    names = {"stage": stage, "cols": cols, "target": target}
    names["absent"] = names["on_conflict"] = names["returning"] = sql.SQL("")
    if conflict == "do_nothing" and conflict_columns:
        # skip known rows before the INSERT evaluates their CHECKs and generated columns;
        # ON CONFLICT still catches duplicates within the batch and concurrent writers
        same_key = sql.SQL(" AND ").join(
            sql.SQL("_old.{name} = _new.{name}").format(name=sql.Identifier(name)) for name in conflict_columns
        )
        names["absent"] = sql.SQL(" WHERE NOT EXISTS (SELECT 1 FROM {target} AS _old WHERE {same_key})").format(
            target=target, same_key=same_key
        )
        names["on_conflict"] = sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(_identifiers(conflict_columns))
    elif conflict == "do_nothing":
        names["on_conflict"] = sql.SQL(" ON CONFLICT DO NOTHING")
    if returning:
        names["returning"] = sql.SQL(" RETURNING {}").format(_identifiers(returning))

    if not conn.in_transaction():  # otherwise Connection.commit() would silently do nothing
        conn.begin()
    pg: psycopg.Connection = conn.connection.driver_connection
    statement = create
    try:
        # an autocommit connection would drop the ON COMMIT DROP table right away
        with pg.transaction() if pg.autocommit else nullcontext(), pg.cursor(row_factory=tuple_row) as cur:
            cur.execute(create.format(**names))
            statement = copy
            n_input = _stream_rows(pg, cur, stage, cols, rows, columns)
            statement = insert
            cur.execute(insert.format(**names))
            n_inserted = cur.rowcount
            returned = cur.fetchall() if returning else []
            statement = drop
            cur.execute(drop.format(**names))
    except psycopg.Error as err:
        raise _database_error(conn, pg, statement.format(**names), err) from err
    return BulkResult(n_input=n_input, n_inserted=n_inserted, returned_rows=returned)


def copy_rows(
    conn: Connection | Session,
    table: str | Table | Any,
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    columns: Sequence[str],
) -> int:
    """``COPY`` rows straight into ``table`` (no staging, no conflict handling); return how many.

    For rows that cannot conflict, e.g. the frames of tasks created in the same
    transaction. Constraints apply as usual; a violation aborts the transaction.
    """
    if isinstance(conn, Session):
        conn = conn.connection()
    columns = list(columns)
    target = _target_identifier(table, columns, [], [])
    cols = _identifiers(columns)
    if not conn.in_transaction():
        conn.begin()
    pg: psycopg.Connection = conn.connection.driver_connection
    try:
        with pg.transaction() if pg.autocommit else nullcontext(), pg.cursor() as cur:
            return _stream_rows(pg, cur, target, cols, rows, columns)
    except psycopg.Error as err:
        raise _database_error(conn, pg, sql.SQL("COPY {} ({}) FROM STDIN").format(target, cols), err) from err


def copy_encoded(
    conn: Connection | Session, table: str | Table | Any, columns: Sequence[str], chunks: Iterable[bytes]
) -> int:
    """``COPY`` pre-encoded binary rows (see :mod:`crossfid.db.pgbinary`) straight into ``table``.

    The fastest path, for array-heavy rows that cannot conflict; the caller's
    encoders must match the column types exactly. Each chunk holds one or more
    whole rows. Returns the number of bytes sent.
    """
    from crossfid.db import pgbinary

    if isinstance(conn, Session):
        conn = conn.connection()
    columns = list(columns)
    target = _target_identifier(table, columns, [], [])
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, _identifiers(columns))
    if not conn.in_transaction():
        conn.begin()
    pg: psycopg.Connection = conn.connection.driver_connection
    n = 0
    try:
        with (
            pg.transaction() if pg.autocommit else nullcontext(),
            pg.cursor() as cur,
            cur.copy(statement) as stream,
        ):
            stream.write(pgbinary.COPY_SIGNATURE)
            buffer: list[bytes] = []
            size = 0
            for chunk in chunks:
                buffer.append(chunk)
                size += len(chunk)
                n += len(chunk)
                if size > 1 << 20:
                    stream.write(b"".join(buffer))
                    buffer, size = [], 0
            buffer.append(pgbinary.COPY_TRAILER)
            stream.write(b"".join(buffer))
    except psycopg.Error as err:
        raise _database_error(conn, pg, statement, err) from err
    return n


def _stream_rows(
    pg: psycopg.Connection,
    cur: psycopg.Cursor,
    table: sql.Composable,
    cols: sql.Composable,
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    columns: list[str],
) -> int:
    """COPY ``rows`` into ``table``: binary format typed from the table's columns when possible."""
    cur.execute(sql.SQL("SELECT {} FROM {} LIMIT 0").format(cols, table))
    oids = [column.type_code for column in cur.description or ()]
    adapt = [_adapter(oid) for oid in oids]
    binary = all(_has_binary_dumper(pg, oid) for oid in oids)
    statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(table, cols, sql.SQL(" (FORMAT BINARY)" if binary else ""))
    n = 0
    with cur.copy(statement) as stream:
        if binary:
            stream.set_types(oids)
        for row in rows:
            values = _row_values(row, columns)
            adapted = [fn(value) for fn, value in zip(adapt, values, strict=True)]
            try:
                stream.write_row(adapted)
            except _ENCODING_ERRORS as exc:  # the value, not the database: report it as a data error
                raise psycopg.DataError(f"cannot send row {n + 1} to PostgreSQL: {type(exc).__name__}: {exc}") from exc
            n += 1
    return n


#: what psycopg raises while dumping a value it cannot encode for its column (before the server sees it)
_ENCODING_ERRORS = (UnicodeError, ValueError, TypeError, OverflowError, AttributeError)


def _database_error(
    conn: Connection, pg: psycopg.Connection, statement: sql.Composable, err: psycopg.Error
) -> DBAPIError:
    """``err`` as SQLAlchemy raises it; when it cost the connection, invalidate ``conn`` so the pool reconnects."""
    disconnect = bool(pg.closed or pg.broken)
    try:
        text = statement.as_string(None if disconnect else pg)
    except Exception:  # quoting needs a live connection; fall back to the plain form
        text = repr(statement)
    if disconnect:
        with suppress(Exception):  # already invalidated or closed: nothing more to do
            conn.invalidate(err)
    return DBAPIError.instance(text, None, err, psycopg.Error, connection_invalidated=disconnect, dialect=conn.dialect)


def _identifiers(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _target_identifier(
    table: str | Table | Any, columns: list[str], conflict_columns: list[str], returning: list[str]
) -> sql.Identifier:
    """Quoted target name; for a ``Table`` (or model) also check the column names up front."""
    table = getattr(table, "__table__", table)  # an ORM model class
    if isinstance(table, str):
        return sql.Identifier(*table.split("."))
    if not isinstance(table, Table):
        raise TypeError(f"table must be a name, a Table or an ORM model, not {type(table).__name__}")
    unknown = sorted(set(columns + conflict_columns + returning) - set(table.columns.keys()))
    if unknown:
        raise ValueError(f"table {table.name!r} has no column(s) {unknown}")
    generated = [name for name in columns if table.columns[name].computed is not None]
    if generated:
        raise ValueError(f"generated column(s) {generated} of {table.name!r} cannot be written")
    return sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)


def _row_values(row: Mapping[str, Any] | Sequence[Any], columns: list[str]) -> list[Any]:
    if isinstance(row, Mapping):
        try:
            return [row[name] for name in columns]
        except KeyError as err:
            raise KeyError(f"row has no value for column {err.args[0]!r}") from None
    values = list(row)
    if len(values) != len(columns):
        raise ValueError(f"row has {len(values)} values for {len(columns)} columns")
    return values


def _has_binary_dumper(pg: psycopg.Connection, oid: int) -> bool:
    try:
        pg.adapters.get_dumper_by_oid(oid, psycopg.pq.Format.BINARY)
    except psycopg.ProgrammingError:
        return False
    return True


def _plain(value: Any) -> Any:
    """numpy arrays and scalars to Python lists and numbers; anything else unchanged."""
    return value.tolist() if hasattr(value, "tolist") else value


#: integer column types → (name, bound): values must lie in [-bound, bound - 1]
_INTEGER_RANGES: dict[int, tuple[str, int]] = {
    psycopg.postgres.types["int2"].oid: ("smallint", 2**15),
    psycopg.postgres.types["int4"].oid: ("integer", 2**31),
    psycopg.postgres.types["int8"].oid: ("bigint", 2**63),
}


def _adapter(type_oid: int) -> Callable[[Any], Any]:
    integer = _INTEGER_RANGES.get(type_oid)
    if integer is not None:
        name, bound = integer

        def checked_integer(value: Any) -> Any:
            # the binary dumper of a column typed int2/int4 would silently keep only the low bytes
            value = _plain(value)
            if isinstance(value, int) and not -bound <= value < bound:
                raise psycopg.DataError(f"{value} is out of range for type {name}")
            return value

        return checked_integer
    wrapper = _JSON_WRAPPERS.get(type_oid)
    if wrapper is None:
        return _plain

    def wrap_json(value: Any) -> Any:
        if value is None or isinstance(value, Json | Jsonb):
            return value
        return wrapper(_plain(value))

    return wrap_json
