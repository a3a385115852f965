"""Reading the PostgreSQL store: history pages, search, export and unread counts.

Each read borrows a connection from the readers' pool for one query (autocommit,
so it sees everything committed before it started, by any server) and gives it
back. Every query is parameterised: no name, room or word is ever put into SQL.

Search uses PostgreSQL's full-text search with the ``simple`` configuration (lower
case, no stemming, no stop words, whatever the language), like FTS5's default
tokenizer: a message matches when it holds every word. Unlike FTS5, PostgreSQL's
parser keeps e-mail addresses, host names, URLs and hyphenated words whole (and
their parts too for hyphenated words), and it does not strip accents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg_pool import ConnectionPool

from ...wire.names import fold
from ..base import StoredMessage, UnreadCount, utc_timestamp
from ..pages import SELECT_MESSAGES, HistoryPages
from .connections import store_errors

__all__ = ["PostgresReads"]


# Unread: others' messages after the account's read marker in each conversation.
_UNREAD_ROOMS = """SELECT r.name, count(m.id), min(m.id) FROM unnest(%s::text[]) AS j(room)
    JOIN rooms r ON r.name_fold = j.room JOIN messages m ON m.room = j.room
    AND m.sender <> %s AND m.id > coalesce((SELECT last_read FROM read_markers
        WHERE account = %s AND conversation = j.room), 0)
    GROUP BY j.room, r.name"""
_UNREAD_PRIVATE = """SELECT s.name, count(m.id), min(m.id)
    FROM messages m JOIN accounts s ON s.id = m.sender
    WHERE m.recipient = %s AND m.id > coalesce((SELECT last_read FROM read_markers
        WHERE account = %s AND conversation = m.pair), 0)
    GROUP BY m.pair, s.name"""
_UNREAD_PRIVATE_WHERE = """ WHERE m.recipient = %s AND m.id > coalesce((SELECT last_read
    FROM read_markers WHERE account = %s AND conversation = m.pair), 0) ORDER BY m.id LIMIT %s"""

_EXPORT_WHERE = (
    " WHERE m.id > %s AND (m.sender = %s OR m.recipient = %s OR m.room = ANY(%s::text[]))"
    " ORDER BY m.id LIMIT %s"
)
_VISIBLE = "(m.room = ANY(%s::text[]) OR (m.room IS NULL AND (m.sender = %s OR m.recipient = %s)))"


class PostgresReads(HistoryPages):
    """The read side of :class:`~securechat.store.postgres.PostgresStore` (a base class)."""

    _MARK = "%s"
    _pool: ConnectionPool

    def _rows(self, action: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with store_errors(action), self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _query(self, sql: str, params: Sequence[Any]) -> list[StoredMessage]:
        return [
            StoredMessage(r[0], utc_timestamp(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])
            for r in self._rows("read history", sql, params)
        ]

    def search(
        self, account_id: int, rooms: Sequence[str], words: Sequence[str], *, limit: int
    ) -> list[StoredMessage]:
        """Messages ``account_id`` may see (its rooms, its private messages) that contain
        every word, newest first."""
        # plainto_tsquery joins every word of its text with & (and ignores operators
        # and punctuation), so the words arrive as plain text, never as query syntax.
        sql = (
            f"{SELECT_MESSAGES} WHERE m.words @@ plainto_tsquery('simple', %s) AND {_VISIBLE} "
            "ORDER BY m.id DESC LIMIT %s"
        )
        visible = ([fold(r) for r in rooms], account_id, account_id)
        return self._query(sql, (" ".join(words), *visible, limit))

    def export_page(
        self, account_id: int, rooms: Sequence[str], *, after: int, limit: int
    ) -> list[StoredMessage]:
        """The next ``limit`` messages after id ``after`` that ``account_id`` sent or
        received (private messages both ways, and the messages of its rooms)."""
        params = (after, account_id, account_id, [fold(r) for r in rooms], limit)
        return self._query(SELECT_MESSAGES + _EXPORT_WHERE, params)

    def sent_count(self, account_id: int) -> int:
        """How many stored messages ``account_id`` sent."""
        ((count,),) = self._rows(
            "count messages", "SELECT count(*) FROM messages WHERE sender = %s", (account_id,)
        )
        return int(count)

    def unread(self, account_id: int, rooms: Sequence[str]) -> list[UnreadCount]:
        """Conversations with others' messages after the account's read marker: its
        ``rooms`` (folded names) and its private conversations."""
        with store_errors("count unread messages"), self._pool.connection() as conn:
            room_rows = conn.execute(_UNREAD_ROOMS, (list(rooms), account_id, account_id))
            counts = [UnreadCount(r[0], True, int(r[1]), int(r[2])) for r in room_rows]
            private_rows = conn.execute(_UNREAD_PRIVATE, (account_id, account_id))
            counts += [UnreadCount(r[0], False, int(r[1]), int(r[2])) for r in private_rows]
        return counts

    def unread_private(self, account_id: int, *, limit: int) -> list[StoredMessage]:
        """Private messages to the account after its read markers, oldest first."""
        return self._query(SELECT_MESSAGES + _UNREAD_PRIVATE_WHERE, (account_id, account_id, limit))
