"""Request handlers for talking, rooms, names and sessions.

Each handler runs under the hub's lock on the I/O thread that decoded the
frame, so none of them may block (see :mod:`securechat.server.hub`): they
read and change the hub's in-memory state, queue messages and stored changes
to the writer, and hand anything slow to a pool.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any

from ..errors import ChatError, ProtocolError, StoreError
from ..store.base import pair_key, utc_timestamp
from ..store.records import RoomSettings
from ..wire.names import (
    MAX_TOPIC_CHARS,
    UNSENDABLE_RE,
    check_room_name,
    check_text,
    check_user_name,
)
from ..wire.protocol import Frame, encode
from .accounts import Identity
from .away import away, away_texts, deliver_then_tell_away, online_names
from .hub import Hub, error_frame
from .lists import send_list
from .presence import describe_session, presence, present_count, present_names, tell_rename
from .rooms import Room
from .sessions import Session
from .writer import Outgoing

__all__ = ["HANDLERS"]

log = logging.getLogger(__name__)

# Idempotency keys: short, and safe to log and store as they are.
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


# -- talking -----------------------------------------------------------------------


def say(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """A message to a room the user is in."""
    assert session.identity is not None
    room = member_room(hub, session, frame.str_field("room"))
    text = check_text(frame.str_field("text"))
    muted = hub.moderation.muted(room.key, session.account_id, utc_timestamp())
    if muted is not None:
        until = f" until {muted.expires}" if muted.expires else ""
        raise ChatError("muted", f"you are muted in {room.name}{until} (by {muted.by})")
    keep = session.identity.keep_history and frame.get("nolog") is not True
    action = _action(frame)
    hub.spend_message(session)
    _submit(
        hub,
        Outgoing(
            sender=session.account_id,
            text=text,
            keep=keep,
            room=room.key,
            room_name=room.name,
            key=_message_key(frame),
            action=action,
            on_done=partial(hub.delivery.room, session, rid),
        ),
    )


def private(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """A private message to an account, online or not."""
    assert session.identity is not None
    target = find_user(hub, frame.str_field("to"))
    text = check_text(frame.str_field("text"))
    # Stored only if neither party opted out.
    keep = session.identity.keep_history and target.keep_history
    if not keep and not hub.sessions.count(target.id):
        raise ChatError(
            "not_online",
            f"{target.name} is not online, and the message cannot wait for them because "
            f"{'you have' if not session.identity.keep_history else 'they have'} history "
            "turned off; try again when they are online",
        )
    action = _action(frame)
    hub.spend_message(session)
    _submit(
        hub,
        Outgoing(
            sender=session.account_id,
            text=text,
            keep=keep,
            recipient=target.id,
            key=_message_key(frame),
            action=action,
            on_done=deliver_then_tell_away(hub, session, target, rid),
        ),
    )


def _action(frame: Frame) -> bool:
    """The ``action`` flag of a message (/me): true, false or absent."""
    value = frame.get("action", False)
    if not isinstance(value, bool):
        raise ProtocolError("'action' must be true or false")
    return value


def _message_key(frame: Frame) -> str | None:
    if frame.get("key") is None:
        return None
    key = frame.str_field("key")
    if not _KEY_RE.fullmatch(key):
        raise ProtocolError("'key' must be 1-64 letters, digits, '_' or '-'")
    return key


def _submit(hub: Hub, message: Outgoing) -> None:
    if not hub.writer.submit(message):
        raise ChatError(
            "busy", "the server is overloaded; nothing was sent, try again", retry_after=1.0
        )


# -- rooms -----------------------------------------------------------------------------


def join(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Join (or create) a room; a member rejoining asks for what it missed."""
    name = check_room_name(frame.str_field("room"))
    since = frame.int_field("since", optional=True)
    since_seq = frame.int_field("since_seq", optional=True)
    room = hub.rooms.get(name)
    if room is None:
        room = hub.rooms.create(name)
        hub.save_room(room)
        log.info("%s: %s created room %s", session.link.peer, session.name, room.name)
        # Its creator is its operator (stored once the room is).
        assert session.identity is not None
        creator = RoomSettings(room.key, operators=frozenset({session.account_id}))
        hub.moderation.set_settings(creator)
        hub.persist(hub.store.save_room_settings, creator)
        if hub.cluster is not None:
            hub.cluster.publish("room_settings", by="", **settings_fields(creator))
    elif session.account_id not in room.members:
        assert session.identity is not None
        if not hub.moderation.may_join(room.key, session.identity):
            raise ChatError(
                "invite_only", f"{room.name} is invite-only: ask one of its operators for /invite"
            )
    if session.account_id not in room.members:
        hub.join_room(session, room)
    hub.send_joined(session, room, rid)
    hub.delivery.replay(session, room, since=since, since_seq=since_seq)


def part(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Leave a room for good (every session of the account leaves it)."""
    room = member_room(hub, session, frame.str_field("room"))
    sessions = hub.sessions.of(session.account_id)
    hub.rooms.part(room, session.account_id, sessions)
    hub.persist(hub.store.remove_member, room.key, session.account_id)
    if hub.cluster is not None:
        hub.cluster.publish("member", room=room.key, account=session.account_id, joined=False)
    room.announce(presence("part", room, session.name))
    for other in sessions:
        other.send(encode("parted", rid=rid if other is session else None, room=room.name))


def list_rooms(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Every stored room, with how many members are here and its topic."""
    rooms = [
        {
            "name": r.name,
            "users": present_count(hub, r),
            "members": len(r.members),
            "topic": r.topic,
        }
        for r in hub.rooms.all()
    ]
    send_list(session, "rooms", "rooms", rooms, rid=rid)


def who(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """The members of a room who are here now; without a room, everyone online (/list)."""
    if frame.get("room") is None:
        names = online_names(hub)
        send_list(session, "users", "users", names, away=away_texts(hub, names), rid=rid)
        return
    room = existing_room(hub, frame.str_field("room"))
    names = present_names(hub, room)
    away = away_texts(hub, names)
    send_list(session, "users", "users", names, away=away, rid=rid, room=room.name)


def topic(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Show or set a room's topic."""
    room = member_room(hub, session, frame.str_field("room"))
    if frame.get("text") is None:
        session.send(encode("topic", rid=rid, room=room.name, topic=room.topic))
        return
    text = frame.str_field("text")
    if hub.moderation.settings(room.key).topic_locked:
        assert session.identity is not None
        hub.moderation.require_operator(room.key, session.identity, room.name)
    if text:
        check_text(text, limit=MAX_TOPIC_CHARS, what="topic")
    room.topic = text
    hub.save_room(room, by=session.name)
    fields: dict[str, Any] = {"room": room.name, "topic": text, "by": session.name}
    room.broadcast(encode("topic", **fields), skip=session)
    session.send(encode("topic", rid=rid, **fields))


# -- names and sessions ------------------------------------------------------------------


def nick(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Rename the account; the store is asked on the account pool, never here."""
    identity = session.identity
    assert identity is not None
    if session.cert_user is not None:
        raise ChatError(
            "forbidden", "your name comes from your client certificate and cannot change"
        )
    new = check_user_name(frame.str_field("name"))
    if new == identity.name:
        raise ChatError("invalid_name", f"you are already {new}")
    owner = hub.accounts.find(new)
    reserved = hub.accounts.reserved_for(new)
    if (owner is not None and owner is not identity) or reserved not in (None, identity.id):
        raise ChatError(
            "name_in_use", f"{new} belongs, or belonged, to another account; pick another name"
        )
    hub.account_pool.submit(_rename, hub, session, identity, new, rid)


def _rename(hub: Hub, session: Session, identity: Identity, new: str, rid: int | None) -> None:
    """On the account pool: rename in the store, then tell everyone concerned."""
    try:
        renamed = hub.store.rename_account(identity.id, new)
    except StoreError as exc:
        log.error("rename of %s failed: %s", identity.name, exc)
        session.send(error_frame(ChatError("unavailable", "cannot rename now; try later"), rid))
        return
    with hub.lock:
        if not renamed:
            session.send(
                error_frame(
                    ChatError(
                        "name_in_use",
                        f"{new} belongs, or belonged, to another account; pick another name",
                    ),
                    rid,
                )
            )
            return
        old = identity.name
        hub.accounts.rename(identity, new)
        log.info("%s: %s renamed to %s", session.link.peer, old, new)
        tell_rename(hub, identity, old, new)
        if hub.cluster is not None:
            hub.cluster.publish("rename", account=identity.id, new=new)
        for mine in hub.sessions.of(identity.id):
            text = f"you are now {new}"
            mine.send(
                encode("nick", rid=rid if mine is session else None, old=old, new=new, text=text)
            )


def sessions(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """The account's sessions, on every server: number, address, since when."""
    items = [
        {**describe_session(s), "current": s is session}
        for s in hub.sessions.of(session.account_id)
    ]
    if hub.cluster is not None:
        items += [
            {**described, "current": False}
            for _, described in hub.cluster.sessions_elsewhere(session.account_id)
        ]
    send_list(session, "sessions", "sessions", items, rid=rid)


def session_close(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """End another session of the same account (on any server)."""
    number = frame.int_field("session")
    peer = session.link.peer.rsplit(":", 1)[0]
    reason = f"closed from your session at {peer}"
    for other in hub.sessions.of(session.account_id):
        if other.number == number:
            if other is not session:
                other.send(encode("bye", code="session_closed", reason=reason))
                other.link.close(f"closed from session {session.number}")
            session.send(encode("session_closed", rid=rid, session=number))
            return
    if hub.cluster is not None:
        for server, described in hub.cluster.sessions_elsewhere(session.account_id):
            if described.get("session") == number:
                hub.cluster.publish(
                    "close",
                    server=server,
                    account=session.account_id,
                    session=number,
                    reason=reason,
                )
                session.send(encode("session_closed", rid=rid, session=number))
                return
    raise ChatError("no_such_session", f"you have no session {number}: /sessions lists them")


def time_now(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """The server's clock."""
    session.send(encode("time", rid=rid, ts=utc_timestamp()))


def quit_(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Say goodbye: the session leaves now, not when the socket closes."""
    reason = UNSENDABLE_RE.sub("", frame.str_field("reason", optional=True) or "")[:200]
    why = f"quit: {reason}" if reason else "quit"
    hub.close_session(session, why)
    session.send(encode("bye", rid=rid, reason="you quit"))
    session.link.close(why)


# -- read markers ---------------------------------------------------------------------------


def read(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """The account has seen a conversation up to a message: every session hears it."""
    message_id = frame.int_field("id")
    assert message_id is not None
    if message_id < 0:
        raise ProtocolError("'id' must not be negative")
    fields: dict[str, Any]
    room_name, user = frame.get("room"), frame.get("user")
    if isinstance(room_name, str) and user is None:
        room = member_room(hub, session, room_name)
        conversation, fields = room.key, {"room": room.name}
    elif isinstance(user, str) and room_name is None:
        other = find_user(hub, user)
        conversation, fields = pair_key(session.account_id, other.id), {"user": other.name}
    else:
        raise ProtocolError("a read marker names exactly one of 'room' or 'user'")
    account_id = session.account_id

    def _tell_every_session() -> None:
        # Once stored, so that an `unread` asked after this answer counts it.
        for mine in hub.sessions.of(account_id):
            mine.send(encode("read", rid=rid if mine is session else None, id=message_id, **fields))
        if hub.cluster is not None:
            hub.cluster.publish("read", account=account_id, id=message_id, fields=fields)

    hub.persist(hub.store.mark_read, account_id, conversation, message_id, then=_tell_every_session)


def unread(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """What arrived after the account's read markers (counted on the reader pool)."""
    account_id = session.account_id
    rooms = [room.key for room in hub.rooms.of(account_id)]

    def _count() -> None:
        try:
            counts = hub.store.unread(account_id, rooms)
        except StoreError as exc:
            session.send(error_frame(ChatError("unavailable", f"cannot count: {exc}"), rid))
            return
        session.send(
            encode(
                "unread",
                rid=rid,
                rooms=[
                    {"room": u.conversation, "unread": u.unread, "first": u.first}
                    for u in counts
                    if u.is_room
                ],
                users=[
                    {"user": u.conversation, "unread": u.unread, "first": u.first}
                    for u in counts
                    if not u.is_room
                ],
            )
        )

    # After every read marker and message already on its way to the store.
    hub.writer.run_in_order(lambda: hub.streamer.run(_count))


# -- files ------------------------------------------------------------------------------------


def file_offer(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Offer a file to a user: it goes to their newest session on this server, or, if
    they have none here, to their newest session on another server of the cluster."""
    target = find_user(hub, frame.str_field("to"))
    sessions = hub.sessions.of(target.id)
    if sessions:
        hub.relay.offer(session, sessions[-1], frame, rid)
    elif hub.remote_files is not None and hub.remote_files.is_online_elsewhere(target):
        hub.relay.offer(session, hub.remote_files.recipient(target), frame, rid)
    else:
        raise ChatError("not_online", f"{target.name} is not online; try again when they are")
    log.info(
        '%s: %s offers file "%s" (%s bytes) to %s',
        session.link.peer,
        session.name,
        frame.get("name"),
        frame.get("size"),
        target.name,
    )


def _relay(method: str) -> Any:
    """The handler for a frame about an existing transfer: its errors name the transfer,
    so a client with several under way learns which one failed without parsing text."""

    def handler(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
        if hub.remote_files is not None and hub.remote_files.forward(session, frame):
            return  # a transfer from another server: its relay checks and answers
        action = getattr(hub.relay, method)
        try:
            if method in ("accept", "reject", "cancel"):
                action(session, frame, rid)
            else:
                action(session, frame)
        except ChatError as exc:
            tid = frame.get("id")
            if isinstance(tid, int) and not isinstance(tid, bool):
                exc.fields.setdefault("id", tid)
            raise

    handler.__name__ = f"file_{method}"
    return handler


# -- helpers ---------------------------------------------------------------------------------


def existing_room(hub: Hub, name: str) -> Room:
    """The room called ``name``, or ChatError."""
    check_room_name(name)
    room = hub.rooms.get(name)
    if room is None:
        raise ChatError("no_such_room", f"there is no room {name}: /rooms lists them")
    return room


def member_room(hub: Hub, session: Session, name: str) -> Room:
    """The room called ``name`` if the session's account is a member, or ChatError."""
    room = existing_room(hub, name)
    if session.account_id not in room.members:
        raise ChatError("not_in_room", f"you are not in {room.name}: /join {room.name} first")
    return room


def find_user(hub: Hub, name: str) -> Identity:
    """The account called ``name``, or ChatError."""
    check_user_name(name)
    identity = hub.accounts.find(name)
    if identity is None:
        raise ChatError("no_such_user", f"there is no user called {name}")
    return identity


def settings_fields(settings: RoomSettings) -> dict[str, Any]:
    """A room's settings as the fields of a cluster event."""
    return {
        "room": settings.room,
        "topic_locked": settings.topic_locked,
        "invite_only": settings.invite_only,
        "operators": sorted(settings.operators),
        "invited": sorted(settings.invited),
    }


HANDLERS: dict[str, Any] = {
    "say": say,
    "msg": private,
    "join": join,
    "part": part,
    "rooms": list_rooms,
    "who": who,
    "away": away,
    "topic": topic,
    "nick": nick,
    "sessions": sessions,
    "session_close": session_close,
    "time": time_now,
    "quit": quit_,
    "read": read,
    "unread": unread,
    "file_offer": file_offer,
    **{
        f"file_{m}": _relay(m)
        for m in ("accept", "reject", "cancel", "chunk", "ack", "done", "result")
    },
}
