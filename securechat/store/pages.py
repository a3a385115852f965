"""History pages, the same SQL on every engine: a room's or a private conversation's
messages before or after an id, or after a sequence number.

An engine's read side inherits :class:`HistoryPages` and gives its parameter
placeholder (``?`` for SQLite, ``%s`` for psycopg) and ``_query``, which runs a
statement selecting ``SELECT_MESSAGES`` columns and returns the rows as
:class:`~securechat.store.base.StoredMessage`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..wire.names import fold
from .base import StoredMessage, pair_key

__all__ = ["SELECT_MESSAGES", "HistoryPages"]

SELECT_MESSAGES = """SELECT m.id, m.ts, s.name, m.room_name, r.name, m.text, m.seq,
    m.action
    FROM messages m JOIN accounts s ON s.id = m.sender LEFT JOIN accounts r ON r.id = m.recipient"""
"""The columns every read returns, with the accounts' current names."""


class HistoryPages:
    """``room_history`` and ``private_history`` for an SQL engine (a base class)."""

    _MARK = "?"
    """The engine's parameter placeholder."""

    def _query(self, sql: str, params: Sequence[Any]) -> list[StoredMessage]:
        raise NotImplementedError

    def room_history(
        self,
        room: str,
        *,
        before: int | None = None,
        after: int | None = None,
        after_seq: int | None = None,
        limit: int,
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of ``room`` (any case), oldest first.

        Without ``before``/``after``/``after_seq``: the latest. With ``after`` (an
        id) or ``after_seq``: the first ones after it.
        """
        return self._page(
            "m.room", fold(room), before=before, after=after, after_seq=after_seq, limit=limit
        )

    def private_history(
        self,
        a: int,
        b: int,
        *,
        before: int | None = None,
        after: int | None = None,
        after_seq: int | None = None,
        limit: int,
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages between accounts ``a`` and ``b``, oldest first."""
        return self._page(
            "m.pair", pair_key(a, b), before=before, after=after, after_seq=after_seq, limit=limit
        )

    def _page(
        self,
        column: str,
        key: str,
        *,
        before: int | None,
        after: int | None,
        after_seq: int | None,
        limit: int,
    ) -> list[StoredMessage]:
        mark = self._MARK
        where = f"{column} = {mark}"
        params: tuple[Any, ...] = (key,)
        if after_seq is not None:
            # Numbers rise with ids within a conversation: find the id of the last
            # message at or below the number by walking back from the newest, so
            # the cost is the messages missed, not the whole conversation.
            inner = column.replace("m.", "m2.")
            where += (
                " AND m.id > coalesce((SELECT m2.id FROM messages m2 WHERE "  # noqa: S608
                f"{inner} = {mark} AND m2.seq <= {mark} ORDER BY m2.id DESC LIMIT 1), 0)"
            )
            params += (key, after_seq)
        if before is not None:
            where += f" AND m.id < {mark}"
            params += (before,)
        if after is not None:
            where += f" AND m.id > {mark}"
            params += (after,)
        order = "ASC" if after is not None or after_seq is not None else "DESC"
        rows = self._query(
            f"{SELECT_MESSAGES} WHERE {where} ORDER BY m.id {order} LIMIT {mark}",
            (*params, limit),
        )
        return rows if order == "ASC" else rows[::-1]
