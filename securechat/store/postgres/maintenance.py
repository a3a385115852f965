"""Maintenance of the PostgreSQL store: erasure and retention in slices, then VACUUM.

What an erasure guarantees on PostgreSQL
----------------------------------------
``forget_sender`` and ``delete_older_than`` delete rows in short transactions,
a slice at a time, like the SQLite engine. Once a slice commits, its messages
are gone for every query of every server: history, search (the text and its
words are in the row, so the search index can no longer find them) and export.

They are not yet gone from the files. PostgreSQL never overwrites in place: a
deleted row stays in its table page as a dead tuple until VACUUM prunes it, and
even then only its space is marked free: the bytes stay in the page until a new
row is written over them. The search index (GIN) keeps the deleted message's
words as keys, no longer pointing at any row, until a REINDEX. The write-ahead
log holds every row as written (and whole page images) until its segments are
recycled, and WAL archives, base backups and replicas keep their own copies on
their own schedule.

So ``truncate_wal`` (which the writer calls at the end of every erasure) asks
for a ``VACUUM messages``, run on a thread of its own so that messages keep
flowing meanwhile; the erasure is answered without waiting for it. VACUUM makes
the dead rows' space reusable soon rather than whenever autovacuum gets to the
table; it is not a secure deletion. An operator who needs the bytes gone from
the primary's files runs ``VACUUM FULL messages`` (or pg_repack) and
``REINDEX TABLE messages``, then a CHECKPOINT, and waits for the old WAL to be
recycled; backups and replicas follow their own retention.

``index_pending`` and ``merge_index`` have nothing to do: rows are indexed as
they are inserted (a generated ``tsvector`` column with a GIN index), and GIN
needs no merging for deleted rows to stop matching.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import threading
from typing import Any

import psycopg

from .connections import WriterConnection, connect, store_errors

__all__ = ["PostgresMaintenance", "Vacuum"]

log = logging.getLogger(__name__)

_VACUUM_STOP_TIMEOUT = 5.0  # seconds close() waits for a cancelled VACUUM to end


class Vacuum:
    """``VACUUM messages`` on a thread of its own, after each erasure. Requests made
    while one runs are served by one more run after it."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._wanted = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Have the table vacuumed soon (starting the thread the first time)."""
        with self._lock:
            if self._closing:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vacuum", daemon=True)
                self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self._lock:
                if self._closing:
                    return
            try:
                # VACUUM cannot run inside a transaction: a connection in autocommit.
                with connect(self._url) as conn:
                    with self._lock:
                        self._conn = conn
                    conn.execute("VACUUM messages")
            except psycopg.Error as exc:
                if not self._closing:
                    log.warning("VACUUM after an erasure failed (autovacuum will do it): %s", exc)
            finally:
                with self._lock:
                    self._conn = None

    def close(self) -> None:
        """Cancel a VACUUM in progress and end the thread."""
        with self._lock:
            self._closing = True
            thread, conn = self._thread, self._conn
            if conn is not None:
                conn.cancel()
        self._wanted.set()
        if thread is not None:
            thread.join(_VACUUM_STOP_TIMEOUT)


class PostgresMaintenance:
    """The maintenance side of :class:`~securechat.store.postgres.PostgresStore`
    (a base class)."""

    _writer: WriterConnection
    _vacuum: Vacuum

    def index_pending(self, limit: int | None = None) -> int:
        """Nothing waits to be indexed: the search index is kept as rows are inserted
        (their ``tsvector`` is a generated column under a GIN index). Returns 0."""
        return 0

    def forget_sender(self, account_id: int, *, upto: int, limit: int) -> int:
        """Delete up to ``limit`` of the messages ``account_id`` sent with ids up to
        ``upto``, oldest first, in one transaction; how many.

        Once committed they are gone for every query on every server; see the module
        docstring for what stays in PostgreSQL's files, and for how long.
        """

        def _delete(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE sender = %s AND id <= %s ORDER BY id LIMIT %s)",
                (account_id, upto, limit),
            )
            return cur.rowcount

        with store_errors("erase messages"):
            return self._writer.transaction(_delete)

    def delete_older_than(self, cutoff: str, *, limit: int) -> int:
        """Retention: delete up to ``limit`` messages stamped before ``cutoff`` (ISO UTC),
        oldest first, in one transaction; how many (fewer than ``limit``: none is left).

        Messages are stamped by the database's clock under the same lock that gives
        them their ids, so the expired ones are the first rows by id: each call
        deletes from the front and stops at the first message still kept, reading
        no more rows than it deletes (``ts`` has no index).
        """
        limit_ts = datetime.datetime.fromisoformat(cutoff)

        def _delete(conn: psycopg.Connection[Any]) -> int:
            rows = conn.execute(
                "SELECT id, ts FROM messages ORDER BY id LIMIT %s", (limit,)
            ).fetchall()
            expired = list(itertools.takewhile(lambda row: row[1] < limit_ts, rows))
            if expired:
                conn.execute("DELETE FROM messages WHERE id <= %s", (expired[-1][0],))
            return len(expired)

        with store_errors("apply retention"):
            return self._writer.transaction(_delete)

    def merge_index(self, pages: int) -> int:
        """Nothing to merge: a GIN index drops a deleted row's entries when VACUUM
        runs, and no query finds a deleted row meanwhile. Returns 0."""
        return 0

    def truncate_wal(self) -> bool:
        """Ask for a ``VACUUM messages`` (on its own thread, see the module docstring);
        True at once. PostgreSQL's write-ahead log is its own to recycle: no client
        can truncate it."""
        self._vacuum.request()
        return True
