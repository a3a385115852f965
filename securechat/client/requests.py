"""Request ids, the requests in flight and those waiting, and waits for their answers.

:class:`Requests` is the thread-safe side of the client's sending: front-end
threads submit requests, the I/O thread reports answers and refusals, a timer
thread ends rate-limit pauses, and line mode waits for everything to be
answered. What may go out when is decided by the
:class:`~securechat.client.sending.SendQueue`; this class sends it, in order,
on the connection the client says is live, under the client's own condition
(so a waiter also wakes when the connection changes).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from ..channel import Channel
from ..errors import ConnectionLost
from ..wire.protocol import encode
from .sending import MESSAGE_REQUESTS, Outgoing, SendQueue, new_key

__all__ = ["Requests"]


class Requests:
    """What was asked of the server and not yet answered; see the module docstring."""

    def __init__(
        self,
        lock: threading.Condition,
        *,
        live_channel: Callable[[], Channel | None],
        stopped: Callable[[], bool],
    ) -> None:
        self._lock = lock
        self._live_channel = live_channel
        """The connection requests may go out on now, or None (called with the lock held)."""
        self._stopped = stopped
        self._rids = itertools.count(1)
        self._pending: set[int] = set()
        self._quiet: set[int] = set()
        """Requests a front end made itself (a /who to refresh a member list)."""
        self._queue = SendQueue()
        self._timer_set = False
        self._progress_at = time.monotonic()
        """When a request was last sent or answered: EOF waits while this moves."""

    @property
    def waiting(self) -> int:
        """Requests not yet sent, and messages not yet acknowledged."""
        with self._lock:
            return len(self._queue)

    def new_rid(self) -> int:
        """A fresh request id, for a request sent outside the queue (tracked by :meth:`sent`)."""
        return next(self._rids)

    def sent(self, rid: int) -> None:
        """Request ``rid`` went out directly; its answer is awaited like the others'."""
        with self._lock:
            self._pending.add(rid)

    def submit(self, type_: str, fields: dict[str, Any], *, quiet: bool = False) -> int:
        """Queue a request (sent at once if the connection is live); its rid.

        Messages get their idempotency key here. ``quiet``: the front end asks for
        itself, not for the user (see :meth:`is_quiet`). ChatError ``queue_full`` when
        too many wait already, ConnectionLost once the client has stopped.
        """
        item_fields = dict(fields)
        if type_ in MESSAGE_REQUESTS:
            item_fields["key"] = new_key()  # the same on every resend: stored once
        with self._lock:
            if self._stopped():
                raise ConnectionLost("the client has stopped; nothing sent")
            rid = next(self._rids)
            if quiet:  # marked before it goes: the answer may come before we return
                self._quiet.add(rid)
            self._queue.add(Outgoing(rid, type_, item_fields))
            self.send_due()
        return rid

    def is_quiet(self, rid: int | None) -> bool:
        """True if ``rid`` is a quiet request not yet fully answered."""
        with self._lock:
            return rid in self._quiet

    def send_due(self) -> None:
        """Send what the queue lets go now, in order (lock held, so nothing overtakes it)."""
        with self._lock:
            channel = self._live_channel()
            if channel is None:
                return
            now = time.monotonic()
            for item in self._queue.due(now):
                self._pending.add(item.rid)
                self._progress_at = now
                channel.send(encode(item.type, rid=item.rid, **item.fields))
            wait = self._queue.resume_at - now
            if wait > 0 and self._queue and not self._timer_set:
                self._timer_set = True
                timer = threading.Timer(wait, self._resume)
                timer.daemon = True
                timer.start()

    def _resume(self) -> None:
        """Runs on a timer thread once a rate-limit pause is over."""
        with self._lock:
            self._timer_set = False
            self.send_due()

    def answered(self, rid: int, frame_type: str) -> None:
        """The last frame answering ``rid`` arrived (a message's copy acknowledges it)."""
        with self._lock:
            self._pending.discard(rid)
            self._quiet.discard(rid)
            if frame_type in ("message", "private"):
                self._queue.acknowledged(rid)  # also a `duplicate` answer
            self._progress_at = time.monotonic()
            self.send_due()  # one at a time after a rate limit: the next may go
            self._lock.notify_all()

    def refused(self, rid: int, code: str, retry_after: Any) -> tuple[float | None, bool]:
        """The server refused ``rid``: (seconds until it goes again, or None if the
        refusal is final; whether sending was already paused)."""
        with self._lock:
            now = time.monotonic()
            paused = self._queue.resume_at > now
            return self._queue.refused(rid, code, retry_after, now), paused

    def connection_lost(self, *, resend: bool) -> int:
        """Nothing in flight will be answered: how many requests are lost. Messages
        are kept to go again (``resend``) and not counted."""
        with self._lock:
            kept = self._queue.connection_lost(resend=resend)
            # The user asked for none of the quiet ones: their loss is not reported.
            lost = len(self._pending - kept - self._quiet)
            self._quiet = {rid for rid in self._quiet if self._queue.holds(rid)}
            self._pending.clear()
            self._lock.notify_all()
            return lost

    def stopped(self) -> None:
        """The client stopped: nothing more will be answered."""
        with self._lock:
            self._pending.clear()
            self._quiet.clear()
            self._lock.notify_all()

    def wait_for_reply(self, rid: int, timeout: float) -> bool:
        """Wait until the server answered ``rid`` (sent or still waiting to be sent);
        False on timeout or disconnect."""

        def answered() -> bool:
            return rid not in self._pending and not self._queue.holds(rid)

        with self._lock:
            self._lock.wait_for(lambda: answered() or self._stopped(), timeout)
            return answered()

    def wait_for_replies(self, timeout: float) -> bool:
        """Wait until every request made so far is sent and answered; False once
        ``timeout`` seconds pass without a request sent or answered, or when the
        client stops. (A long queue slowed by a rate limit keeps moving.)"""
        started = time.monotonic()
        with self._lock:
            while (self._pending or self._queue) and not self._stopped():
                idle = time.monotonic() - max(started, self._progress_at)
                if idle >= timeout:
                    return False
                self._lock.wait(timeout - idle)
            return not self._pending and not self._queue
