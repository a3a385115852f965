"""Connections to PostgreSQL: the readers' pool, the writer's own connection, and errors.

Readers (worker threads) borrow connections from a :class:`~psycopg_pool.ConnectionPool`
that checks each one before lending it, so connections that died with a PostgreSQL
restart are replaced rather than handed out. The writer side has one connection of
its own, used under a lock: a commit never waits for a free connection behind
slow reads.

When PostgreSQL goes away every call fails with StoreError, quickly (connections
time out after ``CONNECT_TIMEOUT``); once it is back, calls work again without a
restart of the server. A writer transaction that finds its connection dead before
its COMMIT was sent is run once more on a new connection: nothing of it was
committed, so the group of messages in hand is stored rather than refused. One that
loses its connection during COMMIT is not retried: it may have committed, and only
idempotency keys make a resent message safe.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from ...errors import StoreError

__all__ = [
    "CONNECT_TIMEOUT",
    "POOL_TIMEOUT",
    "WriterConnection",
    "connect",
    "describe",
    "open_pool",
    "store_errors",
]

CONNECT_TIMEOUT = 5
"""Seconds to establish a connection (unless the URL sets ``connect_timeout``): a
server that is down or unreachable fails a call in this time, not TCP's minutes."""

POOL_TIMEOUT = 5.0
"""Seconds a reader waits for a pooled connection before its call fails."""

# How long the pool retries a lost connection with growing pauses before giving up
# on it until the next request: short, so that a PostgreSQL back after a long outage
# is reconnected to within seconds, not after the pause doubled for minutes.
_RECONNECT_TIMEOUT = 10.0

T = TypeVar("T")


def describe(url: str) -> str:
    """``url`` for messages and logs: host, port, database and user, never a password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(a URL that does not parse)"
    host = parts.get("host") or "localhost"
    where = f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or '(default database)'}"
    user = parts.get("user")
    return f"{where} as {user}" if user else where


def _options(url: str) -> dict[str, Any]:
    """Connection options securechat adds, unless the URL sets them itself."""
    given = conninfo_to_dict(url)
    options: dict[str, Any] = {"application_name": "securechat"}
    if "connect_timeout" not in given:
        options["connect_timeout"] = CONNECT_TIMEOUT
    return {k: v for k, v in options.items() if k not in given}


def connect(url: str) -> psycopg.Connection[Any]:
    """A new connection in autocommit mode (transactions are explicit)."""
    return psycopg.connect(url, autocommit=True, **_options(url))


def open_pool(url: str, *, size: int) -> ConnectionPool:
    """The readers' pool, open and holding one working connection; up to ``size``."""
    pool: ConnectionPool = ConnectionPool(
        url,
        kwargs={"autocommit": True, **_options(url)},
        min_size=1,
        max_size=size,
        open=False,
        # Checked before each loan: a connection PostgreSQL dropped (a restart) is
        # replaced, instead of failing the read that borrowed it.
        check=ConnectionPool.check_connection,
        timeout=POOL_TIMEOUT,
        reconnect_timeout=_RECONNECT_TIMEOUT,
        name="securechat-readers",
    )
    pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
    return pool


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Convert psycopg's errors (pool timeouts included) into StoreError, at this one
    boundary."""
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"cannot {action}: {exc}".rstrip()) from exc


class WriterConnection:
    """The writer side's one connection, used by one caller at a time and replaced
    when it breaks (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = connect(url)

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The open connection, for start-up work before anything else uses it."""
        assert self._conn is not None
        return self._conn

    def transaction(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work(conn)`` in one transaction; what it returns. Raises psycopg's errors
        (the caller converts them); a connection found dead before COMMIT is replaced
        and ``work`` run again, once."""
        with self._lock:
            retried = False
            while True:
                if self._conn is None:
                    self._conn = connect(self._url)
                conn = self._conn
                committing = False
                try:
                    with conn.transaction():
                        result = work(conn)
                        committing = True
                    return result
                except psycopg.OperationalError:
                    if not (conn.broken or conn.closed):
                        raise
                    conn.close()
                    self._conn = None
                    if committing or retried:
                        raise
                    retried = True

    def close(self) -> None:
        """Close the connection; the next call would open another."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
