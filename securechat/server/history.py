"""Serving stored history to clients: replay, paging, search and export.

The hub decides *what* a user may read (room membership, the two parties of
a private conversation) while holding its lock; this module then fetches it
on a small pool of reader threads and streams it, so a 500-message page never
holds up an I/O loop or the hub. Each result is an ordinary ``message`` or
``private`` frame marked ``history: true`` and carrying the request's ``rid``
with ``more: true``; a ``history_end`` frame closes the answer.

Streaming waits while the client's outbox is more than half full, so a
large answer never overflows a slow reader's queue and memory stays bounded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from ..errors import StoreError
from ..store.sqlite import Store, StoredMessage
from ..wire.protocol import encode

__all__ = [
    "EXPORT_PAGE",
    "MAX_HISTORY",
    "MAX_SEARCH",
    "HistoryService",
    "Recipient",
    "history_frame",
]

log = logging.getLogger(__name__)

MAX_HISTORY = 500
"""Most messages one /history answer holds (the client pages for more)."""

MAX_SEARCH = 100
"""Most search results, newest first."""

EXPORT_PAGE = 500
"""Messages per export page; the client asks for the next page."""

_STREAM_BACKLOG = 1024 * 1024
_SLICE = 100  # rows per queued write: at most ~1.6 MB even for maximum-size messages
_STREAM_WAIT = 30.0
_STREAM_POLL = 0.01  # seconds between looks at a slow reader's backlog


class Recipient(Protocol):
    """Where an answer goes: a session's link."""

    def send(self, data: bytes) -> bool:
        """Queue encoded frames; False once the connection is closing."""

    def backlog(self) -> int:
        """Bytes queued and not yet written."""


def history_frame(message: StoredMessage, **extra: Any) -> bytes:
    """``message`` as a replayed ``message``/``private`` frame."""
    return encode(message.frame_type, history=True, **extra, **message.wire_fields())


class HistoryService:
    """Runs history reads on a pool and streams the answers."""

    def __init__(self, store: Store, pool: Executor) -> None:
        self.store = store
        self._pool = pool
        self._closed = threading.Event()

    def close(self) -> None:
        """The server is stopping: answers being streamed end at once, so that no
        reader thread waits for a client that stopped reading."""
        self._closed.set()

    def answer(
        self,
        to: Recipient,
        rid: int | None,
        query: Callable[[], list[StoredMessage]],
        *,
        end: dict[str, Any],
        mark: str = "",
    ) -> None:
        """Run ``query`` on the pool and stream its rows, then ``history_end``.

        ``mark`` (``search`` or ``export``) is added as ``mark: true`` to each row.
        """
        self._pool.submit(self._answer, to, rid, query, end, mark)

    def _answer(
        self,
        to: Recipient,
        rid: int | None,
        query: Callable[[], list[StoredMessage]],
        end: dict[str, Any],
        mark: str,
    ) -> None:
        try:
            rows = query()
        except StoreError as exc:
            log.error("history query failed: %s", exc)
            to.send(
                encode("error", rid=rid, code="unavailable", text=f"cannot read history: {exc}")
            )
            return
        extra: dict[str, Any] = {"rid": rid, "more": True}
        if mark:
            extra[mark] = True
        if not self._stream(to, rows, extra):
            return
        last = rows[-1].id if rows else None
        to.send(encode("history_end", rid=rid, count=len(rows), last=last, **end))

    def _stream(self, to: Recipient, rows: Sequence[StoredMessage], extra: dict[str, Any]) -> bool:
        # Rows go out in slices, each one queued write: a 500-row answer costs a
        # handful of queue operations and wake-ups, not 500.
        for start in range(0, len(rows), _SLICE):
            waited = 0.0
            while to.backlog() > _STREAM_BACKLOG:
                if waited > _STREAM_WAIT:
                    return False  # the reader is stuck; the outbox will drop it
                if self._closed.wait(_STREAM_POLL):
                    return False
                waited += _STREAM_POLL
            data = b"".join(history_frame(row, **extra) for row in rows[start : start + _SLICE])
            if not to.send(data):
                return False
        return True

    def run(self, fn: Callable[[], None]) -> None:
        """Run a read-only job (such as a status count) on the pool."""

        def _guarded() -> None:
            try:
                fn()
            except Exception:
                log.exception("history job failed")

        self._pool.submit(_guarded)
