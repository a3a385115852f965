"""Choosing the engine: the one place that knows which store a server runs on."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Store
from .postgres import PostgresStore
from .sqlite import SQLiteStore

__all__ = ["SHARED_SCHEMES", "open_store"]

SHARED_SCHEMES = ("postgresql", "postgres")
"""URL schemes of a store several servers can share (PostgreSQL, as libpq spells it)."""


def open_store(url: str | None, *, db: Path, durability: str = "normal") -> Store:
    """The store at ``url`` (``postgresql://...``), or without one the SQLite file ``db``
    (``durability`` is SQLite's: normal or full). ConfigError for any other URL, or
    a store that cannot be opened."""
    if url is None:
        return SQLiteStore(db, durability=durability)
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() in SHARED_SCHEMES:
        return PostgresStore(url)
    # Only the scheme is repeated: the rest of a URL may hold a password.
    given = f"scheme {scheme!r}" if sep else "a value that is not a URL"
    raise ConfigError(
        f"--store takes a postgresql:// URL (postgresql://user@host:5432/dbname), not "
        f"{given}; leave --store out to keep everything in the SQLite file of --db"
    )
