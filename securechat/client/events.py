"""Events for front ends, and the frames they are made of.

An :class:`Event` is one thing to show the user, shaped like the ``--json``
contract in docs/client.md. The functions here turn one server frame into its
event and know nothing of connections: the client core decides *whether* a
frame is shown (gap fill, duplicates); this module only says *how*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..wire.protocol import Frame

__all__ = [
    "Event",
    "ban_line",
    "bans_event",
    "done_event",
    "event",
    "forgotten_event",
    "history_end_event",
    "history_status_event",
    "message_event",
    "read_event",
    "session_closed_event",
    "sessions_event",
    "stats_event",
    "system_event",
    "throttled_event",
    "time_event",
    "topic_event",
    "unread_event",
    "users_text",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing to show the user: ``type`` and fields as in docs/client.md."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The event as its ``--json`` object."""
        return {"type": self.type, **self.data}


def event(type_: str, **data: Any) -> Event:
    """An event with ``data``; absent and null mean the same on the wire, so nulls are left out."""
    return Event(type_, {k: v for k, v in data.items() if v is not None})


def message_event(frame: Frame) -> Event:
    """The ``message`` or ``private`` event of a message frame."""
    data: dict[str, Any] = {"id": frame.get("id"), "ts": frame.get("ts")}
    if frame.type == "message":
        data["room"] = frame.str_field("room")
    data["from"] = frame.str_field("from")
    if frame.type == "private":
        data["to"] = frame.str_field("to")
    data["text"] = frame.str_field("text")
    for flag in ("action", "history", "search"):
        if frame.get(flag) is True:
            data[flag] = True
    if frame.get("stored") is False:
        data["stored"] = False
    return Event(frame.type, data)


def users_text(users: list[Any], away: Any) -> str:
    """A /who or /list answer's names, each away user with their away text."""
    texts = away if isinstance(away, dict) else {}
    return ", ".join(
        f"{u} (away: {texts[u]})" if u in texts else str(u) for u in users if isinstance(u, str)
    )


def history_end_event(frame: Frame) -> Event:
    """The ``system`` ``history_end`` event closing a /history or /history search answer."""
    count = frame.get("count", 0)
    room, user = frame.get("room"), frame.get("user")
    where = room if room else f"your conversation with {user}"
    noun = "message" if count == 1 else "messages"
    if frame.get("search") is not None:
        text = f"{count} {noun} match {frame.get('search')!r}"
    elif count:
        text = f"end of history of {where}: {count} {noun}"
    else:
        text = f"no stored messages in {where} for that request"
    return event("system", event="history_end", text=text, count=count, room=room, user=user)


def history_status_event(frame: Frame) -> Event:
    """The answer to /history status, on and off."""
    return event(
        "system",
        event="history_status",
        text=frame.str_field("text"),
        keep=frame.get("keep"),
        stored=frame.get("stored"),
        retention_days=frame.get("retention_days"),
    )


def forgotten_event(frame: Frame) -> Event:
    """The answer to /history forget."""
    return event(
        "system", event="forgotten", text=frame.str_field("text"), count=frame.get("count")
    )


def system_event(frame: Frame) -> Event:
    """A server notice, passed on with its fields."""
    data = {k: v for k, v in frame.fields.items() if k != "rid"}
    data["text"] = frame.str_field("text")
    return Event("system", data)


def topic_event(frame: Frame) -> Event:
    """A topic read or changed."""
    room = frame.str_field("room")
    topic = frame.str_field("topic", optional=True)
    by = frame.str_field("by", optional=True)
    if by:
        text = (
            f"{by} set the topic of {room}: {topic}"
            if topic
            else f"{by} cleared the topic of {room}"
        )
    else:
        text = f"topic of {room}: {topic}" if topic else f"{room} has no topic"
    return event("system", event="topic", room=room, topic=topic, by=by or None, text=text)


def time_event(frame: Frame) -> Event:
    """The answer to /time."""
    ts = frame.str_field("ts")
    return event("system", event="time", ts=ts, text=f"server time is {ts}")


def sessions_event(frame: Frame) -> Event:
    """The answer to /sessions: every session of the account."""
    listed = frame.get("sessions")
    sessions = [s for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
    return Event("sessions", {"sessions": sessions})


def session_closed_event(frame: Frame) -> Event:
    """The answer to /sessions close N."""
    number = frame.get("session")
    return event("system", event="session_closed", session=number, text=f"closed session {number}")


def unread_event(frame: Frame) -> Event:
    """The answer to /history unread: conversations with unread messages."""

    def entries(key: str) -> list[dict[str, Any]]:
        listed = frame.get(key)
        return [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []

    return Event("unread", {"rooms": entries("rooms"), "users": entries("users")})


def read_event(frame: Frame) -> Event:
    """Another session of the account read a conversation up to message ``id``."""
    room, user, mid = frame.get("room"), frame.get("user"), frame.get("id")
    where = room if isinstance(room, str) else f"your conversation with {user}"
    return event(
        "read",
        room=room if isinstance(room, str) else None,
        user=user if isinstance(user, str) else None,
        id=mid,
        text=f"read up to message {mid} in {where} in another session",
    )


def throttled_event(retry_after: float) -> Event:
    """The server refused a message for its rate limit; it goes again in ``retry_after`` s."""
    return event(
        "system",
        event="throttled",
        retry_after=retry_after,
        text=f"sending faster than the server allows; the rest follows in {retry_after:.1f} s",
    )


def done_event(frame: Frame) -> Event:
    """The server carried out a moderation or account request (``text`` says what)."""
    fields = {k: v for k, v in frame.fields.items() if k not in ("rid", "text")}
    return event("system", event="done", **fields, text=frame.str_field("text"))


_STATS_SHOWN = (
    ("uptime", "uptime {} s"),
    ("sessions", "{} sessions"),
    ("accounts_online", "{} accounts online"),
    ("messages_per_second", "{} messages/s"),
    ("accounts", "{} accounts"),
    ("rooms", "{} rooms"),
    ("stored_messages", "{} stored messages"),
    ("store_bytes", "store {} bytes"),
)


def stats_event(frame: Frame) -> Event:
    """The answer to /stats: the server's figures as it sent them, and a line of them."""
    data = {k: v for k, v in frame.fields.items() if k != "rid"}
    parts = [shown.format(data[key]) for key, shown in _STATS_SHOWN if key in data]
    refusals = data.get("refusals")
    if isinstance(refusals, dict) and refusals:
        parts.append("refusals: " + ", ".join(f"{k} {v}" for k, v in sorted(refusals.items())))
    return Event("stats", {**data, "text": "; ".join(parts)})


def ban_line(ban: dict[str, Any]) -> str:
    """One ban of a /bans answer in words."""
    until = f"until {ban.get('until')}" if ban.get("until") else "until lifted"
    why = f": {ban.get('reason')}" if ban.get("reason") else ""
    return f"{ban.get('kind')} {ban.get('target')} by {ban.get('by')} {until}{why}"


def bans_event(bans: list[dict[str, Any]]) -> Event:
    """The answer to /bans: each ban in force, and a line of them all."""
    text = "; ".join(map(ban_line, bans)) if bans else "no bans"
    return Event("bans", {"bans": bans, "text": f"bans: {text}"})
