"""Read-only SQL for people: ``crossfid sql``, the ``crossfid_reader`` role and analysts' reader logins.

Least privilege (docs/security.md):

* ``crossfid db init`` creates the role :data:`READER_ROLE` (``crossfid_reader``):
  not a superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, SELECT on the
  schema's tables and views and nothing else, transactions read-only by default.
  It also takes from PUBLIC, in crossfid's database only, what would let any role
  write without a table privilege: creating large objects (``lo_from_bytea``,
  ``lo_create``, ``lo_creat``, ``lo_import``), temporary tables (TEMPORARY on the
  database) and CREATE on schema ``public``. The application role keeps TEMPORARY.
* ``crossfid sql`` *logs in* as that role (never as the application's possibly
  superuser role followed by ``SET ROLE``: a superuser session can leave a role it
  switched to within the same statement, ``SELECT set_config('role', 'postgres',
  true), pg_read_file(...)``), checks that the session really is unprivileged, and
  runs one statement in a READ ONLY transaction with a statement timeout.
* ``crossfid db grant-reader NAME`` makes a login role a member of the reader role
  after stripping what it must not have (attributes, table and schema privileges,
  other memberships); it refuses superusers and roles that own objects.

The reader's password (only servers with password authentication use one) is made
by ``db init`` when it creates the role and kept in ``$CROSSFID_HOME/reader.pgpass``
(libpq password-file format, mode 0600); ``CROSSFID_READER_PASSWORD`` overrides it.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossfid.errors import InputError, StateError

if TYPE_CHECKING:
    import psycopg

DEFAULT_TIMEOUT_S = 60.0
#: shortest statement timeout that can be asked for (s); 0 means "no limit"
MIN_TIMEOUT_S = 0.001
#: the group role that holds read access (SELECT on crossfid's tables and views)
READER_ROLE = "crossfid_reader"
#: largest temporary-file space one reader query may use (set when db init runs as a superuser)
READER_TEMP_FILE_LIMIT = "4GB"

#: functions with which any role (PUBLIC) can create data outside tables: large objects
_PUBLIC_WRITE_FUNCTIONS = (
    "lo_from_bytea(oid, bytea)",
    "lo_create(oid)",
    "lo_creat(integer)",
    "lo_import(text)",
    "lo_import(text, oid)",
)
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ReadOnlyViolation(StateError):
    """The statement tried to write (or to leave the read-only transaction)."""


class ReaderUnavailable(StateError):
    """``crossfid sql`` cannot log in as the reader role (or the login turned out privileged)."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def timeout_ms(timeout_s: float) -> int:
    """Statement timeout in ms for a timeout in seconds; 0 means no limit.

    Raises ValueError for a negative timeout or one below :data:`MIN_TIMEOUT_S`
    (it would round to 0 ms, which PostgreSQL reads as "no limit").
    """
    if timeout_s != timeout_s or timeout_s < 0:  # NaN or negative
        raise InputError(f"timeout must be 0 (no limit) or at least {MIN_TIMEOUT_S} s; got {timeout_s}")
    if timeout_s == 0:
        return 0
    if timeout_s < MIN_TIMEOUT_S:
        raise InputError(f"timeout {timeout_s} s is below 1 ms; use 0 for no limit")
    return max(1, round(timeout_s * 1000))


def run_read_only(
    libpq_url: str,
    query: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int | None = None,
    require_unprivileged: bool = False,
) -> QueryResult:
    """Run one statement in a READ ONLY transaction with a statement timeout.

    The statement is sent as an unnamed prepared statement (extended protocol), so it
    is exactly one statement (``SELECT 1; COMMIT; INSERT ...`` is refused by the
    server), results come back as text for types the client has no loader for
    (``point``, ``tsquery``, ``tid`` ...), and the transaction is rolled back whatever
    happens. With ``require_unprivileged`` the session's role is checked first and
    :class:`ReaderUnavailable` raised when it is a superuser or can create roles or
    databases. Raises :class:`ReadOnlyViolation` for writes and
    ``psycopg.errors.QueryCanceled`` on timeout.
    """
    import psycopg
    from psycopg import sql

    statement_timeout = timeout_ms(timeout_s)
    with psycopg.connect(libpq_url, autocommit=False) as conn:
        if require_unprivileged:
            _check_unprivileged(conn)
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(statement_timeout)))
        try:
            with conn.cursor() as cur:
                cur.execute(query.encode(), prepare=True)
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


def run_as_reader(libpq_url: str, passfile: Path, query: str, **options: Any) -> tuple[QueryResult, ReaderSetup | None]:
    """``crossfid sql``: make sure the reader role is ready, log in as it and run ``query`` read-only.

    ``libpq_url`` is the application's URL (used only to prepare the role);
    ``options`` go to :func:`run_read_only`. Returns the result and the setup, when
    one had to be done (its notes say what could not be).
    """
    import psycopg

    setup = ensure_reader(libpq_url, passfile)
    try:
        result = run_read_only(reader_url(libpq_url, passfile), query, require_unprivileged=True, **options)
    except psycopg.OperationalError as exc:
        if exc.sqlstate is not None or "connection" not in str(exc) or READER_ROLE not in str(exc):
            raise
        detail = " ".join(str(exc).split())
        raise ReaderUnavailable(
            f"cannot log in as {READER_ROLE} ({detail[:200]}): set CROSSFID_READER_PASSWORD to its password "
            "(run `crossfid db init` with it set to give the role that password)"
        ) from exc
    return result, setup


def _check_unprivileged(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    memberships = conn.execute(
        "SELECT count(*) FROM pg_auth_members WHERE member = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()[0]
    conn.rollback()
    if row is None or any(row[1:]) or memberships:
        raise ReaderUnavailable(
            f"refusing to run: the session's role {row[0] if row else '?'} is privileged "
            "(superuser, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS or a member of other roles)"
        )


# --------------------------------------------------------------------------- the reader role


@dataclass
class ReaderSetup:
    """What :func:`secure_database` did, and what it could not do (and why)."""

    created: bool = False
    password_saved: Path | None = None
    notes: list[str] = field(default_factory=list)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _pgpass_password(path: Path) -> str | None:
    """The reader's password from a libpq password file written by :func:`secure_database`."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    prefix = f"*:*:*:{READER_ROLE}:"
    for line in lines:
        if line.startswith(prefix):
            return line[len(prefix) :].replace("\\:", ":").replace("\\\\", "\\")
    return None


def _save_password(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"*:*:*:{READER_ROLE}:{_pgpass_escape(password)}\n")
    os.replace(tmp, path)


def reader_password(passfile: Path) -> str | None:
    """The reader's password: ``CROSSFID_READER_PASSWORD``, else the one ``db init`` saved, else None."""
    return os.environ.get("CROSSFID_READER_PASSWORD") or _pgpass_password(passfile)


def reader_url(libpq_url: str, passfile: Path) -> str:
    """The application's libpq URL with the reader role (and its password, if any) as the user."""
    from sqlalchemy.engine import make_url

    url = make_url(libpq_url).set(username=READER_ROLE, password=reader_password(passfile))
    text = url.set(drivername="postgresql").render_as_string(hide_password=False)
    base, sep, query = text.partition("?")
    return base + sep + query.replace("%2F", "/")


def _is_superuser(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]


def secure_database(libpq_url: str, passfile: Path) -> ReaderSetup:
    """Create or refresh the reader role and take write paths outside tables from PUBLIC (idempotent).

    Runs as the application's role. What needs more rights than it has (creating a
    role needs CREATEROLE; revoking the large-object functions needs a superuser) is
    skipped and said in :attr:`ReaderSetup.notes`.
    """
    import psycopg
    from psycopg import sql

    setup = ReaderSetup()
    ident = sql.Identifier(READER_ROLE)
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        superuser = _is_superuser(conn)
        app_role = conn.execute("SELECT current_user").fetchone()[0]
        database = conn.execute("SELECT current_database()").fetchone()[0]
        row = conn.execute(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls "
            "FROM pg_roles WHERE rolname = %s",
            (READER_ROLE,),
        ).fetchone()
        if row is None:
            password = os.environ.get("CROSSFID_READER_PASSWORD") or secrets.token_urlsafe(24)
            try:
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                        " NOBYPASSRLS NOINHERIT"
                    ).format(ident, sql.Literal(password))
                )
                setup.created = True
                _save_password(passfile, password)
                setup.password_saved = passfile
            except psycopg.errors.DuplicateObject:
                pass  # created by a concurrent db init
            except psycopg.errors.InsufficientPrivilege:
                setup.notes.append(
                    f"role {READER_ROLE} is missing and {app_role} may not create roles: "
                    f"an administrator runs `CREATE ROLE {READER_ROLE} LOGIN` and then `crossfid db init` again"
                )
                return setup
        elif row[0]:
            raise ReaderUnavailable(
                f"role {READER_ROLE} exists with privileged attributes (superuser, CREATEROLE, CREATEDB, "
                "REPLICATION or BYPASSRLS): it cannot serve as the read-only role; drop or fix it"
            )
        elif os.environ.get("CROSSFID_READER_PASSWORD"):
            try:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        ident, sql.Literal(os.environ["CROSSFID_READER_PASSWORD"])
                    )
                )
            except psycopg.errors.InsufficientPrivilege:
                setup.notes.append(f"{app_role} may not set the password of {READER_ROLE}")
        grants = [
            "GRANT CONNECT ON DATABASE {db} TO {role}",
            "GRANT USAGE ON SCHEMA public TO {role}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
            "ALTER ROLE {role} IN DATABASE {db} SET default_transaction_read_only = on",
        ]
        for statement in grants:
            conn.execute(sql.SQL(statement).format(db=sql.Identifier(database), role=ident))
        # what PUBLIC may do without any table privilege, taken away in this database
        for statement, why in (
            ("REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC", "temporary tables"),
            ("REVOKE CREATE ON SCHEMA public FROM PUBLIC", "CREATE in schema public"),
        ):
            try:
                conn.execute(sql.SQL(statement).format(db=sql.Identifier(database)))
            except psycopg.errors.InsufficientPrivilege:
                setup.notes.append(f"{app_role} may not revoke {why} from PUBLIC (it does not own them)")
        conn.execute(
            sql.SQL("GRANT TEMPORARY ON DATABASE {db} TO {app}").format(
                db=sql.Identifier(database), app=sql.Identifier(app_role)
            )
        )
        if superuser:
            for function in _PUBLIC_WRITE_FUNCTIONS:
                conn.execute(f"REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC")
            conn.execute(
                sql.SQL("ALTER ROLE {} SET temp_file_limit = {}").format(ident, sql.Literal(READER_TEMP_FILE_LIMIT))
            )
        else:
            open_functions = [
                f
                for f in _PUBLIC_WRITE_FUNCTIONS
                if conn.execute(
                    "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (READER_ROLE, f"pg_catalog.{f}")
                ).fetchone()[0]
            ]
            if open_functions:
                setup.notes.append(
                    "readers can still create large objects ("
                    + ", ".join(f.split("(")[0] for f in open_functions)
                    + "): a superuser runs `REVOKE EXECUTE ON FUNCTION ... FROM PUBLIC` in this database"
                    " (docs/security.md)"
                )
    return setup


def ensure_reader(libpq_url: str, passfile: Path) -> ReaderSetup | None:
    """Run :func:`secure_database` unless the reader role exists and can read every table and view.

    One catalogue query when nothing is to do (so ``crossfid sql`` can call it every
    time); returns the setup when it ran.
    """
    import psycopg

    with psycopg.connect(libpq_url, autocommit=True) as conn:
        ready = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s) AND coalesce(("
            " SELECT bool_and(has_table_privilege(%(role)s, c.oid, 'SELECT')) FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')), true)",
            {"role": READER_ROLE},
        ).fetchone()[0]
    return None if ready else secure_database(libpq_url, passfile)


def grant_reader(libpq_url: str, role: str, password: str | None = None) -> tuple[bool, list[str]]:
    """Make ``role`` a read-only login: a member of :data:`READER_ROLE` and nothing more.

    A new role is created with LOGIN and no other rights. An existing role is
    stripped of CREATEDB, CREATEROLE, REPLICATION and BYPASSRLS, of every privilege
    on this database's tables, sequences, schema ``public`` and the database itself,
    and of its memberships in other roles; a superuser, or a role that owns objects
    in this database, is refused. Returns (created, what was stripped).
    """
    import psycopg
    from psycopg import sql

    if not _ROLE_NAME.match(role):
        raise InputError(f"invalid role name {role!r}: use lower-case letters, digits and _")
    if role == READER_ROLE:
        raise InputError(f"{READER_ROLE} is crossfid's own reader role; name an analyst's login role")
    ident = sql.Identifier(role)
    stripped: list[str] = []
    with psycopg.connect(libpq_url, autocommit=False) as conn:
        database = conn.execute("SELECT current_database()").fetchone()[0]
        db = sql.Identifier(database)
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, oid "
            "FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone() is None:
            raise ReaderUnavailable(f"role {READER_ROLE} does not exist: run `crossfid db init` first")
        if row is None:
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
                ).format(ident)
            )
        else:
            superuser, createrole, createdb, replication, bypassrls, oid = row
            if superuser:
                raise InputError(f"role {role!r} is a superuser; refusing to turn it into a reader")
            owned = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relowner = %s AND relnamespace = 'public'::regnamespace",
                (oid,),
            ).fetchone()[0]
            owns_db = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = current_database() AND datdba = %s", (oid,)
            ).fetchone()
            if owned or owns_db:
                what = "this database" if owns_db else f"{owned} table(s), view(s) or sequence(s)"
                raise InputError(
                    f"role {role!r} owns {what} and an owner can always write: refusing to call it a reader"
                )
            attributes = {
                "CREATEROLE": createrole,
                "CREATEDB": createdb,
                "REPLICATION": replication,
                "BYPASSRLS": bypassrls,
            }
            for name, has in attributes.items():
                if has:
                    conn.execute(sql.SQL(f"ALTER ROLE {{}} NO{name}").format(ident))
                    stripped.append(name)
            table_privileges = conn.execute(
                "SELECT DISTINCT privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = %s AND table_schema = 'public' AND privilege_type <> 'SELECT' ORDER BY 1",
                (role,),
            ).fetchall()
            stripped += [f"{p} on tables" for (p,) in table_privileges]
            memberships = conn.execute(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                "WHERE m.member = %s AND r.rolname <> %s ORDER BY 1",
                (oid, READER_ROLE),
            ).fetchall()
            for (granted,) in memberships:
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(granted), ident))
                stripped.append(f"membership in {granted}")
            schema_create = conn.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (role,)).fetchone()[0]
            for statement in (
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
                "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
                "REVOKE CREATE ON SCHEMA public FROM {role}",
                "REVOKE CREATE, TEMPORARY ON DATABASE {db} FROM {role}",
            ):
                conn.execute(sql.SQL(statement).format(role=ident, db=db))
            if (
                schema_create
                and not conn.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (role,)).fetchone()[0]
            ):
                stripped.append("CREATE on schema public")
        if password is not None:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
        for statement in (
            "GRANT {reader} TO {role}",
            "ALTER ROLE {role} INHERIT",
            "ALTER ROLE {role} IN DATABASE {db} SET default_transaction_read_only = on",
        ):
            conn.execute(sql.SQL(statement).format(reader=sql.Identifier(READER_ROLE), role=ident, db=db))
        conn.commit()
    return row is None, stripped
