"""Rules for user names, room names and message text, shared by server and client."""

from __future__ import annotations

import re

from ..errors import ChatError

__all__ = [
    "DEFAULT_ROOM",
    "MAX_AWAY_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_TOPIC_CHARS",
    "UNSENDABLE_RE",
    "check_room_name",
    "check_text",
    "check_user_name",
    "fold",
]

DEFAULT_ROOM = "#general"
"""Every user joins this room at login."""

MAX_MESSAGE_CHARS = 4000
"""Longer messages are refused, never truncated. With control characters refused, 4,000
characters encode to at most 16,000 UTF-8 bytes, inside the protocol's header limit."""

MAX_TOPIC_CHARS = 300

MAX_AWAY_CHARS = 200
"""The longest away text: a reason, not a message (IRC servers allow about as much)."""

_USER_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_ROOM_RE = re.compile(r"#[A-Za-z0-9_-]{1,32}")
# Unicode category Cc (C0, DEL, C1) and lone surrogates, which cannot be encoded as UTF-8.
UNSENDABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def fold(name: str) -> str:
    """The case-folded form under which names are unique (names are ASCII)."""
    return name.lower()


def check_user_name(name: str) -> str:
    """``name`` if it is a valid user name, else ChatError ``invalid_name``."""
    if not _USER_RE.fullmatch(name):
        raise ChatError(
            "invalid_name",
            f"{name[:40]!r} is not a valid name: use 1-32 letters, digits, '_' or '-'",
        )
    return name


def check_room_name(name: str) -> str:
    """``name`` if it is a valid room name (``#`` then 1-32 name characters)."""
    if not _ROOM_RE.fullmatch(name):
        raise ChatError(
            "invalid_room",
            f"{name[:40]!r} is not a valid room: use '#' then 1-32 letters, digits, '_' or '-'",
        )
    return name


def check_text(text: str, *, limit: int = MAX_MESSAGE_CHARS, what: str = "message") -> str:
    """``text`` if it may be sent, else ChatError with a reason a person can act on.

    Control characters are refused: a chat line is one line, and refusing them
    keeps every valid message inside the protocol's header limit.
    """
    if not text:
        raise ChatError("empty", f"empty {what}: type some text")
    if len(text) > limit:
        raise ChatError(
            "too_long", f"{what} is {len(text)} characters; the limit is {limit}. Nothing was sent"
        )
    bad = UNSENDABLE_RE.search(text)
    if bad:
        raise ChatError(
            "bad_text", f"{what} contains control character U+{ord(bad.group()):04X}; remove it"
        )
    return text
