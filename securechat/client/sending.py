"""What the user asked to send while the client could not send it.

While the client is logged out (between a dropped connection and the next
``welcome``, and while it rejoins its rooms after that) a request cannot go
to the server: a frame sent before the login is refused with
``not_logged_in``. Instead it waits here, in the order it was made, and the
core sends everything waiting, oldest first, once the new connection is ready.

The queue is bounded (:data:`MAX_WAITING`): a bot that keeps writing to a
client that cannot reconnect must learn that its lines are not being kept,
rather than grow the client's memory without limit.

Knows nothing of sockets or threads: the core calls it under its own lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..errors import ChatError

__all__ = ["MAX_WAITING", "Outgoing", "SendQueue"]

MAX_WAITING = 1000
"""Requests kept while the client cannot send; the next one is refused with ``queue_full``."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request to send: its request id, frame type and fields."""

    rid: int
    type: str
    fields: dict[str, Any]


class SendQueue:
    """Requests waiting for a connection, oldest first. Not thread-safe."""

    def __init__(self, *, limit: int = MAX_WAITING) -> None:
        self._limit = limit
        self._waiting: deque[Outgoing] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, item: Outgoing) -> None:
        """Keep ``item`` until :meth:`take`; ChatError ``queue_full`` beyond the limit."""
        if len(self._waiting) >= self._limit:
            raise ChatError(
                "queue_full",
                f"{self._limit} lines are already waiting to be sent once the client is "
                "connected again; this one was not kept",
            )
        self._waiting.append(item)

    def holds(self, rid: int) -> bool:
        """True while request ``rid`` is waiting."""
        return any(item.rid == rid for item in self._waiting)

    def take(self) -> list[Outgoing]:
        """Everything waiting, oldest first; the queue is then empty."""
        items = list(self._waiting)
        self._waiting.clear()
        return items
