"""Moderation across servers: what a server does with another's moderation events.

A kick, ban, mute, room setting or account deletion is stored by the server where
it was asked for and published; every other server applies it to its own memory
and its own sessions (a kicked or banned user connected here is disconnected here),
under the hub's lock, with the same functions the asking server used.
"""

from __future__ import annotations

from collections.abc import Callable

from ...store.records import Mute, RoomSettings
from ...wire.protocol import encode
from ..hub import Hub
from ..moderation_requests import (
    apply_ban,
    apply_kick,
    apply_mute,
    apply_room_kick,
    ban_from_event,
    describe_settings,
    forget_account,
)
from .bus import Event

__all__ = ["MODERATION_HANDLERS"]


def _kick(hub: Hub, event: Event) -> None:
    apply_kick(hub, int(event["account"]), str(event["by"]), str(event["reason"]))


def _room_kick(hub: Hub, event: Event) -> None:
    room = hub.rooms.get(str(event["room"]))
    if room is not None:
        apply_room_kick(hub, room, int(event["account"]), str(event["by"]), str(event["reason"]))


def _ban(hub: Hub, event: Event) -> None:
    apply_ban(hub, ban_from_event(event["ban"]))


def _unban(hub: Hub, event: Event) -> None:
    hub.moderation.remove_ban(str(event["ban_kind"]), str(event["target"]))


def _mute(hub: Hub, event: Event) -> None:
    room = hub.rooms.get(str(event["room"]))
    if room is None:
        return
    account = int(event["account"])
    by = str(event["by"])
    record = None if event["lifted"] else Mute(room.key, account, by, "", event.get("expires"))
    apply_mute(hub, room, account, record, by)


def _room_settings(hub: Hub, event: Event) -> None:
    settings = RoomSettings(
        str(event["room"]),
        bool(event["topic_locked"]),
        bool(event["invite_only"]),
        frozenset(int(a) for a in event["operators"]),
        frozenset(int(a) for a in event["invited"]),
    )
    before = hub.moderation.settings(settings.room)
    hub.moderation.set_settings(settings)
    room = hub.rooms.get(settings.room)
    flags = (settings.topic_locked, settings.invite_only)
    if room is None or (before.topic_locked, before.invite_only) == flags:
        return
    by = str(event.get("by", ""))
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


def _account_deleted(hub: Hub, event: Event) -> None:
    forget_account(hub, int(event["account"]))


MODERATION_HANDLERS: dict[str, Callable[[Hub, Event], None]] = {
    "kick": _kick,
    "room_kick": _room_kick,
    "ban": _ban,
    "unban": _unban,
    "mute": _mute,
    "room_settings": _room_settings,
    "account_deleted": _account_deleted,
}
"""Moderation event kinds and what a receiving server does with each."""
