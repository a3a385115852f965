"""Request handlers for moderation and for one's own account: kick, ban, mute, room
settings, ``/stats``, password change and account deletion.

Like every handler they run under the hub's lock and never block: changes go to the
store through the writer (``hub.persist``), password checks to the account pool,
and in cluster mode every change is published so the other servers enforce it (see
``_HANDLERS`` in :mod:`securechat.server.cluster.node`). Every action is announced to
whoever it affects (the room, the person) and logged with the names involved.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from typing import Any

from ..errors import ChatError, StoreError
from ..store.base import utc_timestamp
from ..store.records import Ban, Mute, RoomSettings
from ..wire.durations import parse_duration
from ..wire.names import UNSENDABLE_RE
from ..wire.protocol import Frame, encode
from .chat import find_user, member_room, settings_fields
from .hub import Hub, error_frame
from .lists import send_list
from .moderation import address_of, ban_text, require_staff
from .passwords import MAX_PASSWORD_BYTES, hash_password, verify_password
from .rooms import Room
from .sessions import Session

__all__ = ["HANDLERS", "apply_ban", "apply_kick", "apply_room_kick"]

log = logging.getLogger(__name__)

_MAX_REASON = 200


def _reason(frame: Frame) -> str:
    return UNSENDABLE_RE.sub("", frame.str_field("reason", optional=True) or "")[:_MAX_REASON]


def _expiry(frame: Frame) -> str | None:
    duration = frame.str_field("duration", optional=True)
    if not duration:
        return None
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        seconds=parse_duration(duration)
    )
    return utc_timestamp(later)


def _actor(session: Session) -> Any:
    assert session.identity is not None
    return session.identity


# -- kick and ban (the whole chat) ---------------------------------------------------------


def apply_kick(hub: Hub, account_id: int, by: str, reason: str) -> int:
    """Disconnect the account's sessions on this server (under the lock); how many."""
    text = f"kicked by {by}" + (f": {reason}" if reason else "")
    return hub.end_sessions(account_id, "kicked", text)


def kick(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Disconnect every session of an account (moderators), or, with ``room``, remove it
    from a room (the room's operators)."""
    actor = _actor(session)
    target = find_user(hub, frame.str_field("user"))
    reason = _reason(frame)
    if frame.get("room") is not None:
        room = member_room(hub, session, frame.str_field("room"))
        hub.moderation.require_operator(room.key, actor, room.name)
        if target.id not in room.members:
            raise ChatError("not_in_room", f"{target.name} is not in {room.name}")
        apply_room_kick(hub, room, target.id, actor.name, reason)
        hub.persist(hub.store.remove_member, room.key, target.id)
        if hub.cluster is not None:
            hub.cluster.publish(
                "room_kick", room=room.key, account=target.id, by=actor.name, reason=reason
            )
        log.info("%s kicked %s from %s: %s", actor.name, target.name, room.name, reason)
        session.send(encode("done", rid=rid, text=f"kicked {target.name} from {room.name}"))
        return
    require_staff(actor)
    if target.role == "admin" and actor.role != "admin":
        raise ChatError("forbidden", "only an admin may kick an admin")
    count = apply_kick(hub, target.id, actor.name, reason)
    if hub.cluster is not None:
        hub.cluster.publish("kick", account=target.id, by=actor.name, reason=reason)
    log.info("%s kicked %s: %s", actor.name, target.name, reason)
    session.send(
        encode("done", rid=rid, text=f"kicked {target.name} ({count} sessions on this server)")
    )


def apply_room_kick(hub: Hub, room: Room, account_id: int, by: str, reason: str) -> None:
    """Take the account out of ``room`` and tell the room and the account (under the lock)."""
    identity = hub.accounts.get(account_id)
    if identity is None or account_id not in room.members:
        return
    mine = hub.sessions.of(account_id)
    hub.rooms.part(room, account_id, mine)
    why = f": {reason}" if reason else ""
    room.broadcast(
        encode(
            "system",
            event="kick",
            room=room.name,
            user=identity.name,
            by=by,
            text=f"{identity.name} was kicked from {room.name} by {by}{why}",
        )
    )
    for own in mine:
        own.send(encode("parted", room=room.name, by=by, reason=reason))
        own.send(
            encode(
                "system",
                event="kick",
                room=room.name,
                text=f"you were kicked from {room.name} by {by}{why}",
            )
        )


def apply_ban(hub: Hub, ban: Ban) -> int:
    """Record a ban and end the sessions it covers on this server (under the lock)."""
    hub.moderation.add_ban(ban)
    ended = 0
    bye = encode("bye", code="banned", reason=ban_text(ban), until=ban.expires)
    for other in hub.sessions.all():
        if _matches(ban, other):
            other.send(bye)
            other.link.close(f"banned: {ban.reason}")
            ended += 1
    return ended


def _matches(ban: Ban, session: Session) -> bool:
    if ban.kind == "account":
        return ban.target == str(session.account_id)
    if ban.kind == "fingerprint":
        return ban.target == session.cert_fingerprint
    try:
        return ipaddress.ip_address(address_of(session.link.peer)) in ipaddress.ip_network(
            ban.target
        )
    except (ValueError, TypeError):
        return False


def _ban_target(hub: Hub, frame: Frame) -> tuple[str, str, str, int | None]:
    """(kind, target, shown, account id) from a ban or unban frame."""
    if frame.get("ip") is not None:
        text = frame.str_field("ip")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ChatError("bad_address", f"{text!r} is not an address or a network") from None
        return "ip", str(network), str(network), None
    target = find_user(hub, frame.str_field("user"))
    return "account", str(target.id), target.name, target.id


def ban(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Ban an account (and, in mutual-TLS mode, the certificates it logged in with) or an
    address or network, for a while or until lifted (moderators)."""
    actor = _actor(session)
    require_staff(actor)
    kind, target, shown, account = _ban_target(hub, frame)
    if account is not None:
        identity = hub.accounts.get(account)
        if identity is not None and identity.role == "admin" and actor.role != "admin":
            raise ChatError("forbidden", "only an admin may ban an admin")
        if account == actor.id:
            raise ChatError("forbidden", "you cannot ban yourself")
    reason, expires = _reason(frame), _expiry(frame)
    bans = [Ban(kind, target, reason, actor.name, utc_timestamp(), expires, shown)]
    if account is not None:
        bans += [
            Ban("fingerprint", s.cert_fingerprint, reason, actor.name, utc_timestamp(), expires)
            for s in hub.sessions.of(account)
            if s.cert_fingerprint
        ]
    ended = 0
    for one in bans:
        hub.persist(hub.store.add_ban, one)
        ended += apply_ban(hub, one)
        if hub.cluster is not None:
            hub.cluster.publish("ban", ban=_ban_fields(one))
    until = f"until {expires}" if expires else "until lifted"
    log.info("%s banned %s %s %s: %s", actor.name, kind, shown, until, reason)
    session.send(encode("done", rid=rid, text=f"banned {shown} {until} ({ended} sessions ended)"))


def unban(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Lift a ban on an account or an address (moderators)."""
    actor = _actor(session)
    require_staff(actor)
    kind, target, shown, _ = _ban_target(hub, frame)
    if hub.moderation.remove_ban(kind, target) is None:
        raise ChatError("not_banned", f"{shown} is not banned")
    hub.persist(hub.store.remove_ban, kind, target)
    if hub.cluster is not None:
        hub.cluster.publish("unban", ban_kind=kind, target=target)
    log.info("%s lifted the ban on %s %s", actor.name, kind, shown)
    session.send(encode("done", rid=rid, text=f"lifted the ban on {shown}"))


def bans(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """The bans in force (moderators)."""
    require_staff(_actor(session))
    items = [
        {
            "kind": b.kind,
            "target": b.shown,
            "reason": b.reason,
            "by": b.by,
            "since": b.created,
            "until": b.expires,
        }
        for b in hub.moderation.bans(utc_timestamp())
    ]
    send_list(session, "bans", "bans", items, rid=rid)


def _ban_fields(one: Ban) -> dict[str, Any]:
    return {
        "kind": one.kind,
        "target": one.target,
        "reason": one.reason,
        "by": one.by,
        "created": one.created,
        "expires": one.expires,
        "name": one.name,
    }


def ban_from_event(fields: dict[str, Any]) -> Ban:
    """The ban a cluster event describes."""
    return Ban(**{k: fields[k] for k in Ban.__dataclass_fields__})


# -- mutes and room settings -----------------------------------------------------------------


def mute(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Silence an account in a room, for a while or until unmuted (operators, moderators);
    ``unmute: true`` lifts it."""
    actor = _actor(session)
    room = member_room(hub, session, frame.str_field("room"))
    hub.moderation.require_operator(room.key, actor, room.name)
    target = find_user(hub, frame.str_field("user"))
    lifting = frame.get("unmute") is True
    record = (
        None if lifting else Mute(room.key, target.id, actor.name, utc_timestamp(), _expiry(frame))
    )
    apply_mute(hub, room, target.id, record, actor.name)
    if record is None:
        hub.persist(hub.store.remove_mute, room.key, target.id)
    else:
        hub.persist(hub.store.add_mute, record)
    if hub.cluster is not None:
        hub.cluster.publish(
            "mute",
            room=room.key,
            account=target.id,
            by=actor.name,
            expires=None if record is None else record.expires,
            lifted=record is None,
        )
    log.info(
        "%s %s %s in %s", actor.name, "unmuted" if lifting else "muted", target.name, room.name
    )
    session.send(encode("done", rid=rid, text=f"{'unmuted' if lifting else 'muted'} {target.name}"))


def apply_mute(hub: Hub, room: Room, account_id: int, record: Mute | None, by: str) -> None:
    """Record a mute (or its end) and announce it in the room (under the lock)."""
    identity = hub.accounts.get(account_id)
    hub.moderation.set_mute(record, room.key, account_id)
    if identity is None:
        return
    if record is None:
        text = f"{identity.name} may speak in {room.name} again ({by})"
    else:
        until = f" until {record.expires}" if record.expires else ""
        text = f"{identity.name} was muted in {room.name}{until} by {by}"
    room.broadcast(
        encode("system", event="mute", room=room.name, user=identity.name, by=by, text=text)
    )


def room_mode(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Lock the topic to operators, or make the room invite-only (operators, moderators)."""
    actor = _actor(session)
    room = member_room(hub, session, frame.str_field("room"))
    hub.moderation.require_operator(room.key, actor, room.name)
    now = hub.moderation.settings(room.key)
    locked, invite_only = frame.get("topic_locked"), frame.get("invite_only")
    if not isinstance(locked, bool | None) or not isinstance(invite_only, bool | None):
        raise ChatError("bad_request", "topic_locked and invite_only are true or false")
    settings = RoomSettings(
        room.key,
        now.topic_locked if locked is None else locked,
        now.invite_only if invite_only is None else invite_only,
        now.operators,
        now.invited,
    )
    change_room_settings(hub, room, settings, actor.name)
    session.send(encode("done", rid=rid, text=describe_settings(room, settings)))


def room_invite(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Put an account on an invite-only room's list, and tell it (operators, moderators)."""
    actor = _actor(session)
    room = member_room(hub, session, frame.str_field("room"))
    hub.moderation.require_operator(room.key, actor, room.name)
    target = find_user(hub, frame.str_field("user"))
    now = hub.moderation.settings(room.key)
    settings = RoomSettings(
        room.key, now.topic_locked, now.invite_only, now.operators, now.invited | {target.id}
    )
    change_room_settings(hub, room, settings, actor.name)
    notice = encode(
        "system",
        event="invite",
        room=room.name,
        by=actor.name,
        text=f"{actor.name} invites you to {room.name}: /join {room.name}",
    )
    for own in hub.sessions.of(target.id):
        own.send(notice)
    log.info("%s invited %s to %s", actor.name, target.name, room.name)
    session.send(encode("done", rid=rid, text=f"invited {target.name} to {room.name}"))


def change_room_settings(hub: Hub, room: Room, settings: RoomSettings, by: str) -> None:
    """Apply, store, publish and announce new room settings (under the lock)."""
    before = hub.moderation.settings(room.key)
    hub.moderation.set_settings(settings)
    hub.persist(hub.store.save_room_settings, settings)
    if hub.cluster is not None:
        hub.cluster.publish("room_settings", by=by, **settings_fields(settings))
    if (before.topic_locked, before.invite_only) != (settings.topic_locked, settings.invite_only):
        room.broadcast(
            encode(
                "system",
                event="mode",
                room=room.name,
                by=by,
                topic_locked=settings.topic_locked,
                invite_only=settings.invite_only,
                text=f"{by}: {describe_settings(room, settings)}",
            )
        )
        log.info("%s set %s", by, describe_settings(room, settings))


def describe_settings(room: Room, settings: RoomSettings) -> str:
    """A room's settings in words."""
    topic = "locked to operators" if settings.topic_locked else "open to members"
    entry = "invite-only" if settings.invite_only else "open to all"
    return f"{room.name} is {entry}; its topic is {topic}"


# -- statistics ------------------------------------------------------------------------------


def stats(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Uptime, sessions, accounts online, messages per second, refusals (moderators);
    the store's size is read on the reader pool."""
    require_staff(_actor(session))
    assert hub.stats is not None
    # The numbers the metrics endpoint serves (securechat.server.metrics).
    snap = hub.stats.snapshot()
    fields: dict[str, Any] = {
        "uptime": round(snap.uptime),
        "sessions": snap.sessions,
        "accounts_online": snap.accounts_online
        + len(hub.cluster.remote_accounts() if hub.cluster else ()),
        "messages": snap.messages,
        "messages_per_second": round(snap.messages / max(snap.uptime, 1.0), 3),
        "refusals": snap.refusals,
        "writer_backlog": snap.writer_backlog,
        "commit_ms": round(1000 * snap.commit_seconds / max(snap.commits, 1), 2),
    }

    def _measure() -> None:
        try:
            counts = hub.store.stats()
        except StoreError as exc:
            session.send(error_frame(ChatError("unavailable", f"cannot count: {exc}"), rid))
            return
        session.send(
            encode(
                "stats",
                rid=rid,
                accounts=counts.accounts,
                rooms=counts.rooms,
                stored_messages=counts.messages,
                store_bytes=counts.size_bytes,
                **fields,
            )
        )

    hub.streamer.run(_measure)


# -- one's own account -----------------------------------------------------------------------


def password(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Change one's password: the old one is checked on the account pool."""
    identity = _actor(session)
    old, new = frame.str_field("old"), frame.str_field("new")
    if identity.password is None:
        raise ChatError("forbidden", "your account logs in with a client certificate")
    if not new or len(new.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ChatError("bad_password", f"a new password has 1 to {MAX_PASSWORD_BYTES} bytes")

    def _change() -> None:
        if identity.password is None or not verify_password(old, identity.password):
            session.send(error_frame(ChatError("bad_password", "the old password is wrong"), rid))
            return
        hashed = hash_password(new)
        try:
            hub.store.set_password(identity.id, hashed)
        except StoreError as exc:
            log.error("password change of %s failed: %s", identity.name, exc)
            session.send(error_frame(ChatError("unavailable", "cannot change it now"), rid))
            return
        with hub.lock:
            identity.password = hashed
        log.info("%s changed their password", identity.name)
        session.send(encode("done", rid=rid, text="your password is changed"))

    hub.account_pool.submit(_change)


def account_delete(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Delete one's own account: erase what it sent (as ``forget`` does), close it, end
    every session; its name stays reserved."""
    identity = _actor(session)

    def _erase_then_close() -> None:
        # On the writer thread, after everything the account already sent.
        try:
            count = hub.writer.forget_sender(identity.id)
            hub.store.delete_account(identity.id)
        except StoreError as exc:
            session.send(error_frame(ChatError("unavailable", f"could not delete: {exc}"), rid))
            return
        with hub.lock:
            session.send(encode("done", rid=rid, text=f"account deleted; {count} messages erased"))
            forget_account(hub, identity.id)
            if hub.cluster is not None:
                hub.cluster.publish("account_deleted", account=identity.id)
        log.info("%s deleted their account (%d messages erased)", identity.name, count)

    hub.writer.run_in_order(_erase_then_close)


def forget_account(hub: Hub, account_id: int) -> None:
    """A deleted account leaves: its sessions end, its rooms and rights go (under the lock)."""
    identity = hub.accounts.get(account_id)
    if identity is None:
        return
    hub.end_sessions(account_id, "account_deleted", "this account was deleted")
    for room in hub.rooms.of(account_id):
        hub.rooms.part(room, account_id, [])
    hub.moderation.forget_account(account_id)
    hub.accounts.delete(identity)


HANDLERS: dict[str, Any] = {
    "kick": kick,
    "ban": ban,
    "unban": unban,
    "bans": bans,
    "mute": mute,
    "room_mode": room_mode,
    "room_invite": room_invite,
    "stats": stats,
    "password": password,
    "account_delete": account_delete,
}
