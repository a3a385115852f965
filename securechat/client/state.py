"""Who the client is and where: its name, its rooms and the current room.

:class:`ChatState` applies the frames that change these (``welcome``,
``joined``, ``parted``, ``nick``) and says what to show for them; it also joins
lists the server splits over several frames (``users``, ``rooms``). The I/O
thread updates it while front ends read the current room, so it locks.
Knows nothing of sockets.
"""

from __future__ import annotations

import threading
from typing import Any

from ..wire.names import fold
from ..wire.protocol import Frame
from .events import Event, event

__all__ = ["ChatState"]


class ChatState:
    """The user's name, rooms and current room, as the server last told them."""

    def __init__(self, user: str) -> None:
        self._lock = threading.Lock()
        self._user = user
        self._rooms: list[str] = []
        self._current: str | None = None
        self._partial: dict[int, list[Any]] = {}
        self._partial_away: dict[int, dict[str, str]] = {}

    @property
    def user(self) -> str:
        """The user's name (the server's spelling once logged in)."""
        with self._lock:
            return self._user

    @property
    def rooms(self) -> list[str]:
        """The rooms the user is in, in the order joined."""
        with self._lock:
            return list(self._rooms)

    @property
    def current_room(self) -> str | None:
        """Where plain lines go; None when in no room."""
        with self._lock:
            return self._current

    def welcome(self, frame: Frame) -> bool:
        """Logged in: the server's spelling of our name, and (feature ``offline``) our rooms.

        True if the welcome listed the rooms (``rooms``): the client is then
        ready at once. An older server lists none and puts every login in
        ``#general``; the client is ready at that ``joined``.
        """
        listed = frame.get("rooms")
        rooms = None
        if isinstance(listed, list):
            rooms = [
                r["room"] for r in listed if isinstance(r, dict) and isinstance(r.get("room"), str)
            ]
        with self._lock:
            self._user = frame.str_field("user")
            if rooms is None:
                return False
            self._rooms = rooms
            # Where the user was talking, if still a member; else the first room.
            if self._current is None or fold(self._current) not in map(fold, rooms):
                self._current = rooms[0] if rooms else None
            return True

    def joined(self, frame: Frame, *, gap_fill: bool) -> Event | None:
        """We are in a room; the ``joined`` notice, or None for the quiet rejoin
        of the gap fill after a reconnect (the user never left)."""
        room = frame.str_field("room")
        rid = frame.int_field("rid", optional=True)
        listed = frame.get("users")
        users = [u for u in listed if isinstance(u, str)] if isinstance(listed, list) else None
        count = frame.get("count", len(users or ()))
        topic = frame.str_field("topic", optional=True)
        with self._lock:
            if fold(room) not in map(fold, self._rooms):
                self._rooms.append(room)
            # A rejoin after reconnecting (or the server's automatic one) must
            # not move the user away from the room they were talking in.
            if not gap_fill and (rid is not None or self._current is None):
                self._current = room
        if gap_fill:
            return None
        if users is not None:
            text = f"you joined {room} ({count} here: {', '.join(users)})"
        else:
            text = f"you joined {room} ({count} here; /who lists them)"
        if topic:
            text += f"; topic: {topic}"
        return event(
            "system", event="joined", room=room, text=text, users=users, count=count, topic=topic
        )

    def parted(self, frame: Frame) -> Event:
        """We left a room (or an operator kicked us: ``by``, ``reason``); the most
        recently joined one left becomes current."""
        room = frame.str_field("room")
        with self._lock:
            self._rooms = [r for r in self._rooms if fold(r) != fold(room)]
            if self._current is not None and fold(self._current) == fold(room):
                self._current = self._rooms[-1] if self._rooms else None
            current = self._current
        now = f"; now in {current}" if current else "; /join a room to talk"
        # A kick says so in the server's own notice (``system`` ``kick``) right after.
        return event(
            "system",
            event="parted",
            room=room,
            by=frame.str_field("by", optional=True) or None,
            reason=frame.str_field("reason", optional=True) or None,
            text=f"you left {room}{now}",
        )

    def renamed(self, frame: Frame) -> Event:
        """Someone (maybe we) changed name."""
        old, new = frame.str_field("old"), frame.str_field("new")
        with self._lock:
            if fold(old) == fold(self._user):
                self._user = new
        return event("system", event="nick", old=old, new=new, text=frame.str_field("text"))

    def gather(self, frame: Frame, key: str) -> tuple[list[Any], dict[str, str]] | None:
        """Join a list the server split over frames (``more: true``), and the ``away``
        texts of the users listed; None until complete."""
        items = frame.get(key)
        part = items if isinstance(items, list) else []
        found = frame.get("away")
        away = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
        rid = frame.int_field("rid", optional=True)
        with self._lock:
            if rid is not None:
                part = self._partial.pop(rid, []) + part
                away = {**self._partial_away.pop(rid, {}), **away}
            if frame.get("more") is True and rid is not None:
                self._partial[rid], self._partial_away[rid] = part, away
                return None
        return part, away

    def connection_lost(self) -> None:
        """Lists split over frames will not be completed."""
        with self._lock:
            self._partial.clear()
            self._partial_away.clear()
