"""Who is here: presence notices, and the members present on this server or any other.

A room's ``present`` holds the accounts with a session on this server; in cluster
mode the cluster (:mod:`securechat.server.cluster.node`) knows who is on the others.
These helpers answer for the whole chat, build the notices of arrivals and
departures, and tell of renames. Those that read the hub's state run under its lock,
as its handlers do, and never wait (see :mod:`securechat.server.hub`).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from ..store.base import utc_timestamp
from ..wire.names import fold
from ..wire.protocol import encode

if TYPE_CHECKING:
    from .accounts import Identity
    from .hub import Hub
    from .rooms import Room
    from .sessions import Session

__all__ = [
    "describe_session",
    "presence",
    "present_count",
    "present_names",
    "publish_presence",
    "tell_rename",
]


def present_count(hub: Hub, room: Room) -> int:
    """How many of the room's members are here now, on any server."""
    count = len(room.present)
    if hub.cluster is not None:
        count += len((hub.cluster.remote_accounts() & room.members) - room.present.keys())
    return count


def present_names(hub: Hub, room: Room) -> list[str]:
    """The names of the room's members here now, on any server, sorted."""
    names = room.user_names()
    if hub.cluster is None:
        return names
    elsewhere = (hub.cluster.remote_accounts() & room.members) - room.present.keys()
    for account in elsewhere:
        identity = hub.accounts.get(account)
        if identity is not None:
            names.append(identity.name)
    return sorted(names, key=fold)


def publish_presence(hub: Hub, account_id: int, reason: str) -> None:
    """Tell the other servers which sessions the account now has here (cluster mode)."""
    assert hub.cluster is not None
    sessions = [describe_session(s) for s in hub.sessions.of(account_id)]
    hub.cluster.online(account_id, sessions)
    hub.cluster.publish("presence", account=account_id, sessions=sessions, reason=reason)


def tell_rename(hub: Hub, identity: Identity, old: str, new: str) -> None:
    """Tell the sessions that share a room with a renamed account, but not its own
    (under the lock)."""
    notice = encode("nick", old=old, new=new, text=f"{old} is now known as {new}")
    own = set(hub.sessions.of(identity.id))
    peers = {s for room in hub.rooms.of(identity.id) for s in room.live}
    for peer in peers - own:
        peer.send(notice)


def describe_session(session: Session) -> dict[str, Any]:
    """A session as ``/sessions`` lists it (without ``current``)."""
    since = datetime.datetime.fromtimestamp(session.since, datetime.UTC)
    found: dict[str, Any] = {
        "session": session.number,
        "peer": session.link.peer,
        "since": utc_timestamp(since),
    }
    if session.web:
        found["web"] = True
    return found


def presence(event: str, room: Room, name: str, reason: str = "") -> bytes:
    """The notice that ``name`` arrived in (``join``) or left (``part``, ``quit``) a room."""
    if event == "join":
        text = f"{name} joined {room.name}"
    elif event == "part":
        text = f"{name} left {room.name}"
    else:
        text = f"{name} left ({reason})"
    return encode("system", event=event, room=room.name, user=name, text=text)
