"""Long answers: history pages, join replays, search results and exports.

The hub decides *what* a user may read (room membership, the two parties of
a private conversation) while it holds its lock; the :class:`Streamer` then
runs the query on a small pool of reader threads and hands the rows to the
connection as an :class:`AnswerStream`. The connection's own I/O loop pulls
the stream one slice at a time, only when everything queued before it has
been written (see :mod:`securechat.outbox`): no thread ever waits for a slow
reader, memory holds one slice per answer, and a closed connection simply
drops its streams. A query takes a reader thread only for as long as the
database needs to answer it.

Each row is an ordinary ``message`` or ``private`` frame marked
``history: true`` and carrying the request's ``rid`` with ``more: true``; a
``history_end`` frame closes the answer. A session may have at most
``MAX_STREAMS`` answers in flight; more get ``busy``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ..errors import ChatError
from ..store.base import StoredMessage
from ..wire.protocol import encode
from .sessions import Session

__all__ = [
    "EXPORT_PAGE",
    "MAX_HISTORY",
    "MAX_SEARCH",
    "MAX_STREAMS",
    "AnswerStream",
    "Streamer",
    "history_frame",
]

log = logging.getLogger(__name__)

MAX_HISTORY = 500
"""Most messages one /history answer holds (the client pages for more)."""

MAX_SEARCH = 100
"""Most search results, newest first."""

EXPORT_PAGE = 500
"""Messages per export page; the client asks for the next page."""

MAX_STREAMS = 4
"""Streaming answers one session may have in flight: enough for a client that
pages history while it exports, few enough that one user cannot queue work
for every reader thread."""

BUSY_RETRY = 1.0
"""Seconds a client is told to wait after ``busy``."""

_SLICE = 100  # rows per pull: at most ~1.6 MB even for maximum-size messages
# Bytes encoded ahead on the reader thread: a whole typical answer (500 short
# messages), so the connection's thread only writes it.
_HEAD_START = 256 * 1024

Query = Callable[[], list[StoredMessage]]
OnEnd = Callable[[list[StoredMessage] | None], None]
"""Called once when an answer is complete (with its rows; none if the query failed) or
abandoned because the connection closed (None)."""


def history_frame(message: StoredMessage, **extra: Any) -> bytes:
    """``message`` as a replayed ``message``/``private`` frame."""
    return encode(message.frame_type, history=True, **extra, **message.wire_fields())


class AnswerStream:
    """Rows and a closing frame, encoded a slice at a time as the connection pulls them.

    :meth:`prepare` encodes the first slices ahead, on the reader thread: a
    typical answer is then written by the connection at once, while a large one
    still costs memory for one slice at a time beyond that head start.
    """

    def __init__(
        self,
        rows: Sequence[StoredMessage],
        *,
        extra: dict[str, Any],
        end: bytes,
        on_end: Callable[[bool], None],
    ) -> None:
        self._rows = rows
        self._extra = extra
        self._end: bytes | None = end
        self._next = 0
        self._ready: deque[bytes] = deque()
        self._on_end: Callable[[bool], None] | None = on_end

    def prepare(self, budget: int) -> None:
        """Encode slices ahead until about ``budget`` bytes are ready."""
        size = 0
        while size < budget and (encoded := self._encode()) is not None:
            self._ready.append(encoded)
            size += len(encoded)

    def next_slice(self) -> bytes | None:
        """The next slice of rows, then the closing frame, then None."""
        if self._ready:
            return self._ready.popleft()
        encoded = self._encode()
        if encoded is not None:
            return encoded
        if self._end is not None:
            end, self._end = self._end, None
            if end:
                return end
        self._finish(True)
        return None

    def cancel(self) -> None:
        """The connection closed first."""
        self._ready.clear()
        self._finish(False)

    def _encode(self) -> bytes | None:
        if self._next >= len(self._rows):
            return None
        rows = self._rows[self._next : self._next + _SLICE]
        self._next += len(rows)
        return b"".join(history_frame(row, **self._extra) for row in rows)

    def _finish(self, complete: bool) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(complete)


class Streamer:
    """Runs history queries on a pool and streams their answers.

    ``lock`` is the hub's lock, which guards each session's count of answers
    in flight; ``answer`` is called with it held.
    """

    def __init__(self, pool: Executor, lock: threading.RLock) -> None:
        self._pool = pool
        self._lock = lock

    def answer(
        self,
        session: Session,
        rid: int | None,
        query: Query,
        *,
        end: dict[str, Any] | None,
        mark: str = "",
        on_end: OnEnd | None = None,
        via: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """Run ``query`` and stream its rows, then ``history_end`` with ``end``'s fields.

        ``end=None`` streams the rows alone: a replay the server sends by itself,
        which does not count against the session's budget. ``mark`` (``search``
        or ``export``) is added as ``mark: true`` to each row. Raises ChatError
        ``busy`` when the session has too many answers in flight. ``via``, if
        given, is handed the function that starts the query, to call when ready.
        """
        job = _Job(session, rid, query, end, mark, on_end)

        def start() -> None:
            self._pool.submit(self._run, job)

        if end is None:
            start()
            return
        if session.streams >= MAX_STREAMS:
            raise ChatError(
                "busy",
                f"you have {MAX_STREAMS} history requests in progress; wait for one to finish",
                retry_after=BUSY_RETRY,
            )
        session.streams += 1
        if via is None:
            start()
        else:
            via(start)

    def run(self, job: Callable[[], None]) -> None:
        """Run a short read-only job (a count, a summary) on the pool."""
        self._pool.submit(_guarded, job)

    def _run(self, job: _Job) -> None:
        session, rid, end = job.session, job.rid, job.end
        try:
            rows = job.query()
        except Exception as exc:  # every request gets exactly one answer
            log.error("history query failed: %s", exc)
            # Complete, with nothing: a replay's held live messages still go out.
            self._done(job, [])
            if end is not None:
                session.send(
                    encode("error", rid=rid, code="unavailable", text=f"cannot read history: {exc}")
                )
            return
        extra: dict[str, Any] = {"rid": rid, "more": True} if end is not None else {}
        if job.mark:
            extra[job.mark] = True
        closing = b""
        if end is not None:
            last = rows[-1].id if rows else None
            closing = encode("history_end", rid=rid, count=len(rows), last=last, **end)

        def _ended(complete: bool) -> None:
            self._done(job, rows if complete else None)

        stream = AnswerStream(rows, extra=extra, end=closing, on_end=_ended)
        stream.prepare(_HEAD_START)
        if not session.link.send_stream(stream):
            stream.cancel()

    def _done(self, job: _Job, rows: list[StoredMessage] | None) -> None:
        with self._lock:
            if job.end is not None:  # counted against the session's budget
                job.session.streams -= 1
            if job.on_end is not None:
                job.on_end(rows)


@dataclass(frozen=True, slots=True)
class _Job:
    session: Session
    rid: int | None
    query: Query
    end: dict[str, Any] | None
    mark: str
    on_end: OnEnd | None


def _guarded(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:
        log.exception("history job failed")
