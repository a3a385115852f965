"""What the user asked to send, until it is sent, and messages until they are acknowledged.

Strategy
--------
Every request a front end makes joins one queue, in the order made, and the
core takes from it what may go out now (:meth:`SendQueue.due`):

* **While the client is logged out** (between a dropped connection and the
  next ``welcome``, and while it rejoins its rooms after that) nothing goes
  out: a frame sent before the login is refused with ``not_logged_in``. What
  was typed meanwhile is sent, oldest first, once the connection is ready.
* **Messages** (``say`` and ``msg``) carry a random ``key`` and stay queued
  until the server acknowledges them (its copy with our ``rid``; one marked
  ``duplicate`` counts too) or refuses them. When the connection drops, those
  in flight are sent again, with the same keys, after the reconnect: a server
  that remembers keys (feature ``resume``) answers a repeat with the original message
  and stores nothing twice. A server that does not (v1) would store it twice,
  so against it they are given up and reported as unconfirmed instead.
* **Rate limits.** ``error code=rate_limited`` with ``retry_after`` for a
  message puts it back in its place and pauses the whole queue until then.
  Until the queue has drained, messages then go one at a time, each after the
  previous one's answer, so that none overtakes one refused before it.
  Other requests leave the queue as soon as they are sent.

The queue is bounded (:data:`MAX_WAITING`): a bot that keeps writing to a
client that cannot reconnect must learn that its lines are not being kept,
rather than grow the client's memory without limit.

Knows nothing of sockets, threads or clocks: the core calls it under its own
lock and passes the time in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import ChatError

__all__ = ["MAX_WAITING", "MESSAGE_REQUESTS", "Outgoing", "SendQueue", "new_key"]

MAX_WAITING = 1000
"""Requests kept unsent or unacknowledged; the next one is refused with ``queue_full``."""

MESSAGE_REQUESTS = frozenset({"say", "msg"})
"""Requests that carry a ``key`` and are kept until acknowledged."""


def new_key() -> str:
    """A fresh idempotency key: 16 hex digits, as the protocol allows (1-64 of [A-Za-z0-9_-])."""
    return secrets.token_hex(8)


@dataclass(slots=True, eq=False)
class Outgoing:
    """A request to send: its request id, frame type and fields; ``sent`` while in flight."""

    rid: int
    type: str
    fields: dict[str, Any]
    sent: bool = False

    @property
    def is_message(self) -> bool:
        """A ``say`` or ``msg``: kept until acknowledged."""
        return self.type in MESSAGE_REQUESTS


class SendQueue:
    """Requests waiting to be sent, and messages waiting for their answer, oldest first.

    Not thread-safe.
    """

    def __init__(self, *, limit: int = MAX_WAITING) -> None:
        self._limit = limit
        self._items: list[Outgoing] = []
        self._resume_at = 0.0
        self._one_at_a_time = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def resume_at(self) -> float:
        """When a rate limit pause ends (on the caller's clock); 0 if none was asked for."""
        return self._resume_at

    def add(self, item: Outgoing) -> None:
        """Keep ``item`` in order; ChatError ``queue_full`` beyond the limit."""
        if len(self._items) >= self._limit:
            raise ChatError(
                "queue_full",
                f"{self._limit} lines are already waiting to be sent once the client is "
                "connected again; this one was not kept",
            )
        self._items.append(item)

    def holds(self, rid: int) -> bool:
        """True while request ``rid`` is unsent, or a message not yet answered."""
        return any(item.rid == rid for item in self._items)

    def due(self, now: float) -> list[Outgoing]:
        """What may be sent at ``now``, in order; marked as sent."""
        if now < self._resume_at:
            return []
        out: list[Outgoing] = []
        for item in self._items:
            if item.sent:
                if self._one_at_a_time and item.is_message:
                    break  # wait for its answer before anything later
                continue
            item.sent = True
            out.append(item)
            if self._one_at_a_time and item.is_message:
                break
        self._items = [i for i in self._items if i.is_message or not i.sent]
        return out

    def acknowledged(self, rid: int) -> None:
        """The server stored (or had stored) message ``rid``."""
        self._forget(rid)

    def refused(self, rid: int, code: str, retry_after: Any, now: float) -> float | None:
        """The server refused request ``rid``. For a message refused by a rate limit
        (``retry_after`` seconds), the delay before it goes again; None otherwise
        (then it is forgotten: the refusal is final)."""
        item = next((i for i in self._items if i.rid == rid and i.sent), None)
        if item is None:
            return None
        if code == "rate_limited" and isinstance(retry_after, int | float) and retry_after >= 0:
            item.sent = False
            self._resume_at = max(self._resume_at, now + float(retry_after))
            self._one_at_a_time = True
            return float(retry_after)
        self._forget(rid)
        return None

    def connection_lost(self, *, resend: bool) -> set[int]:
        """Messages in flight go again on the next connection (``resend``), or are
        given up: returns the request ids of those kept."""
        kept: set[int] = set()
        for item in self._items:
            if item.sent and resend:
                item.sent = False
                kept.add(item.rid)
        if not resend:
            self._items = [i for i in self._items if not i.sent]
        return kept

    def _forget(self, rid: int) -> None:
        self._items = [i for i in self._items if i.rid != rid]
        if not any(i.is_message for i in self._items):
            self._one_at_a_time = False
