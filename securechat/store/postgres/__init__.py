"""The PostgreSQL engine of the store: one database that several servers share.

``store`` is the engine with its account and chat-state writes, ``numbering`` the
transaction that numbers and stores messages, ``reads`` its queries,
``maintenance`` erasure and retention (and what they leave in PostgreSQL's files),
``schema`` the migrations, ``connections`` the pool, the writer's connection and
the conversion of errors.
"""

from __future__ import annotations

from .schema import MIGRATIONS, SCHEMA_VERSION, migrate
from .store import PostgresStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "migrate"]
