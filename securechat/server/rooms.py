"""Rooms as the running server sees them: stored members, and who is here now.

A room's *members* are accounts, stored, and stay members across
disconnects and restarts until they part. Its *present* sessions are the
members' live connections, which are what a message fans out to. Both are
loaded from the store at start-up and kept current by the hub (under its
lock), which also has the message writer persist every change in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..store.base import Membership, RoomRecord
from ..wire.names import fold
from .sessions import Session

__all__ = ["ANNOUNCE_LIMIT", "Room", "RoomDirectory"]

ANNOUNCE_LIMIT = 200
"""Rooms with more people present than this do not announce arrivals and departures."""


@dataclass(eq=False)
class Room:
    """A chat room: display name, topic, member accounts and the sessions live in it."""

    name: str
    topic: str = ""
    members: set[int] = field(default_factory=set)
    live: dict[Session, None] = field(default_factory=dict)
    """Every live session of every member: what a message fans out to (one flat loop)."""
    present: dict[int, int] = field(default_factory=dict)
    """Member account id -> how many of its sessions are live (only those with one)."""
    key: str = field(init=False)
    """The folded name rooms are stored and found under (the display name may change case)."""

    def __post_init__(self) -> None:
        self.key = fold(self.name)

    def record(self) -> RoomRecord:
        """What the store keeps of this room."""
        return RoomRecord(self.name, self.topic)

    def user_names(self) -> list[str]:
        """The names of the members here now, one per account, sorted."""
        names = {s.account_id: s.name for s in self.live}
        return sorted(names.values(), key=fold)

    def broadcast(self, data: bytes, *, skip: Session | None = None) -> None:
        """Queue ``data`` to every live session but ``skip``."""
        for session in self.live:
            if session is not skip:
                session.send(data)

    def announce(self, data: bytes, *, skip: Session | None = None) -> None:
        """Broadcast a join, part or presence notice, unless the room is large.

        In a room of thousands every arrival would otherwise cost a notice to
        everyone (quadratic work and noise); its members use /who instead.
        """
        if len(self.present) <= ANNOUNCE_LIMIT:
            self.broadcast(data, skip=skip)


class RoomDirectory:
    """Every room by folded name, and the rooms of every account."""

    def __init__(self, rooms: list[RoomRecord], memberships: list[Membership]) -> None:
        self._rooms = {fold(r.name): Room(r.name, r.topic) for r in rooms}
        # Per account a sorted tuple, not a set: a few hundred bytes less for each
        # of thousands of accounts, rebuilt only on join and part.
        self._of: dict[int, tuple[str, ...]] = {}
        for m in memberships:
            room = self._rooms.get(m.room)
            if room is not None:
                room.members.add(m.account)
                self._add(m.account, m.room)

    def get(self, name: str) -> Room | None:
        """The room called ``name`` (any case), if it exists."""
        return self._rooms.get(fold(name))

    def create(self, name: str) -> Room:
        """A new, empty room (the caller checked that it did not exist)."""
        room = self._rooms[fold(name)] = Room(name)
        return room

    def all(self) -> list[Room]:
        """Every room, by folded name."""
        return [self._rooms[key] for key in sorted(self._rooms)]

    def of(self, account_id: int) -> list[Room]:
        """The rooms ``account_id`` is a member of, by folded name."""
        return [self._rooms[key] for key in self._of.get(account_id, ())]

    def _add(self, account_id: int, key: str) -> None:
        keys = self._of.get(account_id, ())
        if key not in keys:
            self._of[account_id] = tuple(sorted((*keys, key)))

    def join(self, room: Room, account_id: int, sessions: list[Session]) -> None:
        """Make the account a member; its (live) ``sessions`` are now in the room."""
        room.members.add(account_id)
        self._add(account_id, room.key)
        for session in sessions:
            room.live[session] = None
        if sessions:
            room.present[account_id] = len(sessions)

    def part(self, room: Room, account_id: int, sessions: list[Session]) -> None:
        """End the account's membership; its ``sessions`` leave with it."""
        room.members.discard(account_id)
        room.present.pop(account_id, None)
        for session in sessions:
            room.live.pop(session, None)
        rest = tuple(key for key in self._of.get(account_id, ()) if key != room.key)
        if rest:
            self._of[account_id] = rest
        else:
            self._of.pop(account_id, None)

    def arrive(self, session: Session) -> list[Room]:
        """A member's session is live: it is in each of the account's rooms."""
        rooms = self.of(session.account_id)
        for room in rooms:
            room.live[session] = None
            room.present[session.account_id] = room.present.get(session.account_id, 0) + 1
        return rooms

    def leave(self, session: Session) -> list[Room]:
        """A session ended: the rooms in which the account is no longer present."""
        gone = []
        for room in self.of(session.account_id):
            if room.live.pop(session, False) is None:
                left = room.present[session.account_id] - 1
                if left:
                    room.present[session.account_id] = left
                else:
                    del room.present[session.account_id]
                    gone.append(room)
        return gone
