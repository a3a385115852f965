"""Reading the SQLite store: history pages, search, export and unread counts.

Every reading thread gets a connection of its own (query-only), so a long
read never waits for a commit and a commit never waits for a read (WAL mode).
Every query is parameterised: no name or room is ever interpolated into SQL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ...errors import StoreError
from ...wire.names import fold
from ..base import StoredMessage, UnreadCount
from ..pages import SELECT_MESSAGES, HistoryPages

__all__ = ["SQLiteReads", "store_errors"]


# Unread: others' messages after the account's read marker in each conversation.
_UNREAD_ROOMS = """SELECT r.name, count(m.id), min(m.id) FROM json_each(?) j
    JOIN rooms r ON r.name_fold = j.value JOIN messages m ON m.room = j.value
    AND m.sender != ? AND m.id > coalesce((SELECT last_read FROM read_markers
        WHERE account = ? AND conversation = j.value), 0)
    GROUP BY j.value"""
_UNREAD_PRIVATE = """SELECT s.name, count(m.id), min(m.id)
    FROM messages m JOIN accounts s ON s.id = m.sender
    WHERE m.recipient = ? AND m.id > coalesce((SELECT last_read FROM read_markers
        WHERE account = ? AND conversation = m.pair), 0)
    GROUP BY m.pair"""
_UNREAD_PRIVATE_WHERE = """ WHERE m.recipient = ? AND m.id > coalesce((SELECT last_read
    FROM read_markers WHERE account = ? AND conversation = m.pair), 0) ORDER BY m.id LIMIT ?"""

_EXPORT_WHERE = (
    " WHERE m.id > ? AND (m.sender = ? OR m.recipient = ? "
    "OR m.room IN (SELECT value FROM json_each(?))) ORDER BY m.id LIMIT ?"
)


class SQLiteReads(HistoryPages):
    """The read side of :class:`~securechat.store.sqlite.SQLiteStore` (a base class)."""

    has_fts: bool
    _local: threading.local
    _readers: list[sqlite3.Connection]
    _readers_lock: threading.Lock

    def _connect(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            db.execute("PRAGMA query_only=ON")
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def _query(self, sql: str, params: Sequence[Any]) -> list[StoredMessage]:
        with store_errors("read history"):
            rows = self._reader().execute(sql, params).fetchall()
        # SQLite has no boolean: the last column (action) reads back as 0 or 1.
        return [StoredMessage(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]

    def search(
        self, account_id: int, rooms: Sequence[str], words: Sequence[str], *, limit: int
    ) -> list[StoredMessage]:
        """Messages ``account_id`` may see (its rooms, its private messages) that contain
        every word, newest first."""
        visible = (
            "(m.room IN (SELECT value FROM json_each(?)) "
            "OR (m.room IS NULL AND (m.sender = ? OR m.recipient = ?)))"
        )
        params: list[Any] = [json.dumps([fold(r) for r in rooms]), account_id, account_id]
        if self.has_fts:
            match = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            sql = (
                f"{SELECT_MESSAGES} JOIN messages_fts f ON f.rowid = m.id "
                f"WHERE f.messages_fts MATCH ? AND {visible} ORDER BY m.id DESC LIMIT ?"
            )
            return self._query(sql, [match, *params, limit])
        likes = " AND ".join("m.text LIKE ? ESCAPE '\\'" for _ in words)
        patterns = ["%" + _escape_like(w) + "%" for w in words]
        sql = f"{SELECT_MESSAGES} WHERE {likes} AND {visible} ORDER BY m.id DESC LIMIT ?"
        return self._query(sql, [*patterns, *params, limit])

    def export_page(
        self, account_id: int, rooms: Sequence[str], *, after: int, limit: int
    ) -> list[StoredMessage]:
        """The next ``limit`` messages after id ``after`` that ``account_id`` sent or
        received (private messages both ways, and the messages of its rooms)."""
        sql = SELECT_MESSAGES + _EXPORT_WHERE
        rooms_json = json.dumps([fold(r) for r in rooms])
        return self._query(sql, [after, account_id, account_id, rooms_json, limit])

    def sent_count(self, account_id: int) -> int:
        """How many stored messages ``account_id`` sent."""
        with store_errors("count messages"):
            (count,) = (
                self._reader()
                .execute("SELECT count(*) FROM messages WHERE sender = ?", (account_id,))
                .fetchone()
            )
        return int(count)

    def unread(self, account_id: int, rooms: Sequence[str]) -> list[UnreadCount]:
        """Conversations with others' messages after the account's read marker: its
        ``rooms`` (folded names) and its private conversations."""
        with store_errors("count unread messages"):
            db = self._reader()
            rooms_json = json.dumps(list(rooms))
            room_rows = db.execute(_UNREAD_ROOMS, (rooms_json, account_id, account_id)).fetchall()
            private_rows = db.execute(_UNREAD_PRIVATE, (account_id, account_id)).fetchall()
        return [UnreadCount(r[0], True, int(r[1]), int(r[2])) for r in room_rows] + [
            UnreadCount(r[0], False, int(r[1]), int(r[2])) for r in private_rows
        ]

    def unread_private(self, account_id: int, *, limit: int) -> list[StoredMessage]:
        """Private messages to the account after its read markers, oldest first."""
        return self._query(SELECT_MESSAGES + _UNREAD_PRIVATE_WHERE, (account_id, account_id, limit))


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Convert sqlite3 errors into StoreError at this one boundary."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"cannot {action}: {exc}") from exc
