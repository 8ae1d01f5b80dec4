"""Low-level connecting: targets, URL normalisation and redaction, engines for a given URL.

Which database is *configured* (``CROSSFID_DATABASE_URL`` or the embedded server) is
resolved in one place only: :mod:`crossfid.runtime.database`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from crossfid.errors import InputError


@dataclass(frozen=True)
class Target:
    """The database crossfid talks to: its URL and whether it is the embedded server."""

    url: URL
    embedded: bool

    @property
    def redacted(self) -> str:
        """libpq URL with any password masked, safe to print."""
        return redact(self.url)

    @property
    def libpq_url(self) -> str:
        """The URL as libpq (``psql``, ``psycopg.connect``) understands it, password included."""
        return _render(self.url, hide_password=False)


def normalize_url(url: str | URL) -> URL:
    """Parse a PostgreSQL URL and force the psycopg 3 driver.

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+psycopg://``;
    refuses any other database, since crossfid relies on PostgreSQL features.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise InputError(f"crossfid needs PostgreSQL; got a {backend!r} URL")
    return parsed.set(drivername="postgresql+psycopg")


def redact(url: str | URL) -> str:
    """libpq form of ``url`` with the password replaced by ``***``."""
    return _render(make_url(url) if isinstance(url, str) else url, hide_password=True)


def _render(url: URL, *, hide_password: bool) -> str:
    text = url.set(drivername="postgresql").render_as_string(hide_password=hide_password)
    base, sep, query = text.partition("?")
    return base + sep + query.replace("%2F", "/")  # socket directories stay readable


def make_engine(target: Target | str | URL, **kwargs) -> Engine:
    """A SQLAlchemy engine (psycopg 3) for ``target``."""
    url = target.url if isinstance(target, Target) else normalize_url(target)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)
