"""Read markers: telling the server how far the user has read each conversation.

Front ends say what they have shown (:meth:`ReadMarkers.shown`); this module
sends ``read`` frames (feature ``read``) so the account's other sessions can clear
their unread counts. A conversation gets at most one ``read`` per
:data:`READ_INTERVAL`: a burst of messages shown in a second costs one frame,
and the newest id of the burst is sent when the interval is over.

Knows nothing of sockets: it is given a ``send`` function (frame type and
fields), called from the caller's thread or a timer thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import SecureChatError
from ..wire.names import fold
from .events import Event

__all__ = ["READ_INTERVAL", "ReadMarkers"]

READ_INTERVAL = 1.0
"""Seconds between two ``read`` frames for one conversation."""


class ReadMarkers:
    """The newest message shown per conversation, sent as ``read`` at most once a second.

    Thread-safe.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._shown: dict[str, tuple[dict[str, Any], int]] = {}
        """Newest id shown per conversation, with the fields naming it."""
        self._sent: dict[str, tuple[int, float]] = {}
        """Id last sent per conversation, and when."""
        self._timers: set[str] = set()

    def shown_event(self, shown: Event, *, me: str) -> None:
        """Front ends showed ``shown``: a message (not a search result) counts as read."""
        data = shown.data
        mid = data.get("id")
        if (
            shown.type not in ("message", "private")
            or data.get("search")
            or not isinstance(mid, int)
        ):
            return
        if shown.type == "message":
            self.shown(room=str(data.get("room")), mid=mid)
        else:
            sender, to = str(data.get("from")), str(data.get("to"))
            self.shown(user=to if fold(sender) == fold(me) else sender, mid=mid)

    def shown(self, *, room: str | None = None, user: str | None = None, mid: int) -> None:
        """Message ``mid`` of ``room`` (or of the conversation with ``user``) was shown."""
        where: dict[str, Any] = {"room": room} if room is not None else {"user": user}
        key = fold(room) if room is not None else "@" + fold(str(user))
        with self._lock:
            if mid <= self._shown.get(key, ({}, 0))[1]:
                return  # the marker only moves forward
            self._shown[key] = (where, mid)
            last_at = self._sent.get(key, (0, 0.0))[1]
            wait = last_at + READ_INTERVAL - time.monotonic()
            if wait > 0:
                if key not in self._timers:
                    self._timers.add(key)
                    timer = threading.Timer(wait, self._flush, args=(key,))
                    timer.daemon = True
                    timer.start()
                return
        self._flush(key)

    def _flush(self, key: str) -> None:
        with self._lock:
            self._timers.discard(key)
            where, mid = self._shown[key]
            if self._sent.get(key, (0, 0.0))[0] >= mid:
                return
            self._sent[key] = (mid, time.monotonic())
        try:
            self._send({**where, "id": mid})
        except SecureChatError:
            pass  # not connected, or an old server: a read marker is only a courtesy
