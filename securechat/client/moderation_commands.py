"""The /commands for one's own account and for moderation, parsed into requests.

``/password`` and ``/account delete`` become :class:`Local` actions, because
the front end asks the user first (for passwords, never typed as arguments, or
for a confirmation). The rest become the requests of docs/protocol.md §18.2.
Durations (``10m``, ``2h``, ``7d``) and addresses are checked here, before
anything is sent, with the same rules as the server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from ..errors import ChatError
from ..wire.durations import looks_like_duration, parse_duration
from ..wire.names import check_room_name, check_user_name
from .actions import Local, Request

__all__ = ["MODERATION_COMMANDS", "parse_moderation"]

MODERATION_COMMANDS = frozenset(
    {"password", "account", "kick", "ban", "unban", "bans", "mute", "unmute"}
    | {"room", "invite", "stats"}
)
"""The command words this module parses (``/topic lock`` is parsed with ``/topic``)."""

_ADDRESS_CHARS = frozenset(".:/")
"""A name never has these and an address or network always has one: ``/unban`` tells
``10.0.0.0/8`` and ``::1`` from ``bob`` by them."""


def parse_moderation(
    name: str, rest: str, *, current_room: str | None, usage: Callable[[str], str]
) -> Request | Local:
    """The request or local action for ``/name rest``; ``usage(command)`` is the usage
    line of a command, for the ChatError ``usage`` of a malformed one."""
    words = rest.split()

    def wrong(command: str = name) -> ChatError:
        return ChatError("usage", f"usage: {usage(command)}")

    def room() -> str:
        if current_room is None:
            raise ChatError("no_room", "you are not in any room: /join #room first")
        return current_room

    if name == "password":
        if words:
            raise ChatError(
                "usage",
                "/password takes no arguments: it asks for the passwords, which never go "
                "on a command line",
            )
        return Local("password")
    if name == "account":
        if not words or words[0].lower() != "delete" or len(words) > 2:
            raise wrong("account delete")
        return Local("account_delete", target=check_user_name(words[1]) if len(words) > 1 else "")
    if name == "kick":
        fields: dict[str, Any] = {}
        if words and words[0].startswith("#"):
            fields["room"] = check_room_name(words.pop(0))
        if not words:
            raise wrong()
        fields["user"] = check_user_name(words[0])
        return Request("kick", _with_reason(fields, words[1:]))
    if name == "ban":
        return _ban(words, wrong)
    if name == "unban":
        if len(words) != 1:
            raise wrong()
        if _ADDRESS_CHARS & set(words[0]):
            return Request("unban", {"ip": _network(words[0])})
        return Request("unban", {"user": check_user_name(words[0])})
    if name in ("bans", "stats"):
        if words:
            raise wrong()
        return Request(name)
    if name == "mute":
        if not 1 <= len(words) <= 2:
            raise wrong()
        fields = {"room": room(), "user": check_user_name(words[0])}
        if len(words) == 2:
            fields["duration"] = _duration(words[1])
        return Request("mute", fields)
    if name == "unmute":
        if len(words) != 1:
            raise wrong()
        return Request("mute", {"room": room(), "user": check_user_name(words[0]), "unmute": True})
    if name == "invite":
        if len(words) != 1:
            raise wrong()
        return Request("room_invite", {"room": room(), "user": check_user_name(words[0])})
    # /room invite-only on|off
    if (
        len(words) != 2
        or words[0].lower() != "invite-only"
        or words[1].lower() not in ("on", "off")
    ):
        raise wrong("room invite-only")
    return Request("room_mode", {"room": room(), "invite_only": words[1].lower() == "on"})


def _ban(words: list[str], wrong: Callable[[str], ChatError]) -> Request:
    """``/ban NAME [duration] [reason]`` or ``/ban --ip ADDR|CIDR [duration] [reason]``."""
    if words and words[0] == "--ip":
        if len(words) < 2:
            raise wrong("ban --ip")
        fields: dict[str, Any] = {"ip": _network(words[1])}
    elif words and not words[0].startswith("-"):
        fields = {"user": check_user_name(words[0])}
    else:
        raise wrong("ban")
    rest = words[2:] if "ip" in fields else words[1:]
    if rest and looks_like_duration(rest[0]):
        fields["duration"] = _duration(rest.pop(0))
    return Request("ban", _with_reason(fields, rest))


def _with_reason(fields: dict[str, Any], words: list[str]) -> dict[str, Any]:
    if words:
        fields["reason"] = " ".join(words)
    return fields


def _duration(text: str) -> str:
    parse_duration(text)  # ChatError bad_duration, as the server would answer
    return text


def _network(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ChatError(
            "bad_address", f"{text!r} is not an address or a network (CIDR, e.g. 10.0.0.0/8)"
        ) from None
    return text
