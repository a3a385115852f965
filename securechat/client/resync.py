"""Reconnect bookkeeping: what the client has shown, so a reconnect fetches exactly
what it missed and shows each message once.

For every room and private conversation the newest message id shown there is
kept. After a reconnect the core rejoins each room asking for what came
``since`` that id and fetches each conversation ``after`` it; replayed messages
not above it are dropped. Conversations are keyed by the other party's folded
name, so a rename (a ``nick`` frame) moves the conversation's mark to the new
name: asking the server for the history of a former name would fail.

The I/O thread records what it shows while the reconnect thread reads the
marks and front-end threads mark requests, so every method takes the lock.
Knows nothing of sockets.
"""

from __future__ import annotations

import threading
from typing import Any

from ..wire.names import fold
from ..wire.protocol import Frame

__all__ = ["GAP_FILL_LIMIT", "Resync"]

GAP_FILL_LIMIT = 500
"""Most messages fetched per private conversation after a reconnect (the server's page)."""


class Resync:
    """The newest message shown per conversation, and the gap-fill requests in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_seen: dict[str, int] = {}
        self._partners: dict[str, str] = {}
        self._rids: dict[int, str | None] = {}  # gap-fill requests: rid -> conversation
        # Private conversations being filled: the mark when the fill was asked for, and
        # what was shown live since, so a live message that overtakes the fill's answer
        # does not make the fill's older rows look shown already.
        self._filling: dict[str, tuple[int, set[int]]] = {}

    # -- requests of the gap fill ----------------------------------------------------

    def room_marks(self, rooms: list[str]) -> dict[str, int]:
        """Per room, the id after which the client has not seen its messages (rooms where
        it has seen nothing yet are left out: the server's join replay covers them)."""
        with self._lock:
            return self._room_marks(rooms)

    def _room_marks(self, rooms: list[str]) -> dict[str, int]:
        # Ids are global: anything newer than the newest message we showed anywhere
        # is news, also in a room where we had not seen a message yet.
        newest = max(self._last_seen.values(), default=0)
        marks = {room: self._last_seen.get(fold(room), newest) for room in rooms}
        return {room: since for room, since in marks.items() if since}

    def requests(self, rejoin: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """The frames (type, fields) that fetch what was missed: rejoining the rooms in
        ``rejoin`` and the history of every private conversation."""
        with self._lock:
            wanted: list[tuple[str, dict[str, Any]]] = []
            marks = self._room_marks(rejoin)
            for room in rejoin:
                since = marks.get(room)
                fields: dict[str, Any] = {"room": room}
                if since:
                    fields["since"] = since
                wanted.append(("join", fields))
            for key, seen in self._last_seen.items():
                if key.startswith("@") and key[1:] in self._partners:
                    self._filling[key] = (seen, set())
                    fields = {"user": self._partners[key[1:]], "after": seen}
                    wanted.append(("history", {**fields, "limit": GAP_FILL_LIMIT}))
            return wanted

    def mark(self, rid: int, partner: str | None = None) -> None:
        """Request ``rid`` is part of the gap fill (of the conversation with ``partner``,
        if given): its answers are not shown as such."""
        with self._lock:
            self._rids[rid] = None if partner is None else "@" + fold(partner)

    def fills_conversation(self, rid: int | None) -> bool:
        """True if ``rid`` asks for the history of a private conversation for the gap
        fill: a refusal (the partner renamed or deleted their account while we were
        away) only means there is nothing to fill."""
        with self._lock:
            return self._rids.get(rid or 0) is not None

    def is_gap_fill(self, rid: int | None) -> bool:
        """True if ``rid`` answers a gap-fill request."""
        with self._lock:
            return rid in self._rids

    def answered(self, rid: int) -> None:
        """Request ``rid`` is fully answered."""
        with self._lock:
            target = self._rids.pop(rid, None)
            if target is not None:
                self._filling.pop(target, None)

    # -- what was shown ------------------------------------------------------------------

    def first_showing(self, frame: Frame, me: str) -> bool:
        """Record message ``frame`` as shown; False if it was shown already.

        Answers to an explicit /history are always shown, and do not move the mark.
        """
        mid = frame.int_field("id")
        assert mid is not None
        rid = frame.int_field("rid", optional=True)
        with self._lock:
            target = self._target(frame, me)
            replayed = frame.get("history") is True
            explicit = replayed and rid is not None and rid not in self._rids
            if explicit:
                return True
            seen = self._last_seen.get(target, 0)
            filling = self._filling.get(target)
            if filling is not None:
                since, shown = filling
                if replayed and rid is not None:  # the fill's answer, maybe overtaken
                    if mid <= since or mid in shown:
                        return False
                    shown.add(mid)
                    self._last_seen[target] = max(seen, mid)
                    return True
                shown.add(mid)
            if mid <= seen:
                return False  # a replay overlapping live delivery or the gap fill
            self._last_seen[target] = mid
            return True

    def renamed(self, old: str, new: str) -> None:
        """``old`` is now called ``new``: their conversation keeps its mark."""
        with self._lock:
            seen = self._last_seen.pop("@" + fold(old), None)
            self._partners.pop(fold(old), None)
            if seen is None:
                return
            key = "@" + fold(new)
            self._last_seen[key] = max(seen, self._last_seen.get(key, 0))
            self._partners[fold(new)] = new

    def _target(self, frame: Frame, me: str) -> str:
        """The key of the room or conversation a message belongs to (lock held)."""
        room = frame.get("room")
        if isinstance(room, str):
            return fold(room)
        sender, to = frame.str_field("from"), frame.str_field("to")
        partner = to if fold(sender) == fold(me) else sender
        self._partners[fold(partner)] = partner
        return "@" + fold(partner)
