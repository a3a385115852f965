"""Maintenance of the SQLite store, in steps short enough to run between message commits.

Indexing, erasure (``forget``) and retention each run as a series of small
transactions that the message writer interleaves with commits of messages:
``index_pending`` a batch at a time, ``forget_sender`` and ``delete_older_than``
a slice of rows at a time, then ``merge_index`` until the search index holds no
deleted word, then ``truncate_wal`` so no older page image survives in the log.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from .reads import store_errors

__all__ = ["SQLiteMaintenance"]


class SQLiteMaintenance:
    """The maintenance side of :class:`~securechat.store.sqlite.SQLiteStore` (a base class)."""

    has_fts: bool
    _db: sqlite3.Connection
    _lock: threading.Lock

    def _write(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        raise NotImplementedError

    def index_pending(self, limit: int | None = None) -> int:
        """Add up to ``limit`` (default: all) not yet indexed messages to the search
        index, in one transaction; returns how many. Idempotent after a crash."""
        if not self.has_fts:
            return 0
        with self._lock, store_errors("index messages"):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                (done,) = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'indexed_id'"
                ).fetchone()
                (top, count) = self._db.execute(
                    "SELECT max(id), count(*) FROM (SELECT id FROM messages WHERE id > ? "
                    "ORDER BY id LIMIT ?)",
                    (done, -1 if limit is None else limit),
                ).fetchone()
                if count:
                    self._db.execute(
                        "INSERT INTO messages_fts (rowid, text) "
                        "SELECT id, text FROM messages WHERE id > ? AND id <= ?",
                        (done, top),
                    )
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'indexed_id'", (top,))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return int(count)

    def forget_sender(self, account_id: int, *, upto: int, limit: int) -> int:
        """Delete up to ``limit`` of the messages ``account_id`` sent with ids up to
        ``upto``, in one transaction; how many.

        ``secure_delete`` overwrites the rows, but their words stay in the search
        index and older page images in the write-ahead log until ``merge_index``
        and ``truncate_wal`` have run to the end: only then is the erasure complete.

        One gap remains, SQLite's: ``secure_delete`` clears deleted cells and freed
        pages, not the unused space of a page that a rebalance rebuilt, so a copy of
        a row (or index block) moved before its deletion can survive there; a large
        deletion leaves a few, one DELETE as much as many small ones. Only VACUUM
        rewrites every page.
        """
        with self._lock, store_errors("erase messages"):
            cur = self._write(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE sender = ? AND id <= ? ORDER BY id LIMIT ?)",
                (account_id, upto, limit),
            )
        return int(cur.rowcount)

    def delete_older_than(self, cutoff: str, *, limit: int) -> int:
        """Retention: delete up to ``limit`` messages stamped before ``cutoff`` (ISO UTC),
        oldest first, in one transaction; how many (fewer than ``limit``: none is left).

        Messages are stamped in id order, so the expired ones are the first rows by
        id: each call deletes from the front and stops at the first message still
        kept, reading no more rows than it deletes (``ts`` has no index). A clock
        stepped back can only delay a deletion, never make one early. As with
        ``forget_sender``, ``merge_index`` and ``truncate_wal`` finish the erasure.
        """
        with self._lock, store_errors("apply retention"):
            rows = self._db.execute(
                "SELECT id, ts FROM messages ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            expired = list(itertools.takewhile(lambda row: row[1] < cutoff, rows))
            if expired:
                self._write("DELETE FROM messages WHERE id <= ?", (expired[-1][0],))
        return len(expired)

    def merge_index(self, pages: int) -> int:
        """Merge about ``pages`` pages of the search index in one transaction; how many
        rows it wrote (about one per page): under 2 once the index is one segment.

        A deleted row only adds a tombstone to FTS5: its words stay in the older
        segments until those are merged with it. Repeated until it returns less
        than 2, this ends as FTS5's 'optimize' does (one segment, no deleted words)
        but in short steps: a negative 'merge' takes every segment into the merge,
        and with nothing else writing to the index meanwhile (the writer thread
        does both) the steps run that merge to its end.
        """
        if not self.has_fts:
            return 0
        with self._lock, store_errors("merge the search index"):
            before = self._db.total_changes
            self._write(
                "INSERT INTO messages_fts (messages_fts, rank) VALUES ('merge', ?)", (-pages,)
            )
            return self._db.total_changes - before

    def truncate_wal(self) -> bool:
        """Copy the write-ahead log into the database and truncate it to nothing, so no
        older page image survives there; False, at once, if a reader still uses part
        of it (call again shortly).

        The passive checkpoint copies back what it can without waiting; the
        truncating one then has nothing left to copy, so it takes a moment, and
        readers that start meanwhile read the database file, not the log. Neither
        waits for a reader while holding up message commits.
        """
        with self._lock, store_errors("truncate the write-ahead log"):
            (patience,) = self._db.execute("PRAGMA busy_timeout").fetchone()
            self._db.execute("PRAGMA busy_timeout = 0")
            try:
                busy, logged, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy or logged != copied:
                    return False
                (busy, _, _) = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                return not busy
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {int(patience):d}")
