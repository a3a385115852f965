"""The SQLite engine of the store: the embedded default, one database file.

``store`` is the engine and its writes, ``maintenance`` the sliced steps of
indexing, erasure and retention, ``reads`` its queries, ``admin`` roles, bans,
invites and moderation, ``schema`` the migrations, ``files`` the checks on the
database file itself, ``backup`` a consistent copy of a live database.
"""

from __future__ import annotations

from .backup import backup
from .files import PRIVATE_MODE
from .schema import MIGRATIONS, SCHEMA_VERSION
from .store import SQLiteStore

__all__ = ["MIGRATIONS", "PRIVATE_MODE", "SCHEMA_VERSION", "SQLiteStore", "backup"]
