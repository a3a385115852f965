"""What each client event does to the :class:`~securechat.ui.model.ChatModel`.

:func:`apply_event` turns one event of the client core into lines in the
model's buffers, changes to its rooms' members and topics, its connection
status and its file transfers, and an :class:`Outcome` for the app (ring the
bell, send quiet requests).

Where lines go
--------------
- Messages go to their room's buffer, private messages to the other party's,
  ordered by message id, so history replay and gap fill land in place; one id
  is never shown twice in a buffer. Answers to /history and search results are
  a listing, not the conversation: a block at the bottom of the current buffer
  (shown even if those messages are on screen already), each row with its
  message id in brackets and, unless it belongs to the current buffer, where it
  was said; /history's block opens with ``history of #dev:`` and ends with
  the ``history_end`` notice naming the id ``/history before`` takes next.
- Room notices (joins, parts, quits, topics) go to the room's buffer.
- Answers to what the user just typed (errors, /help, /who, /rooms, /files,
  /time, /history status...) go to the current buffer, where they are looking.
- Connection notices, the server certificate and anything else without a room
  go to the server buffer (buffer 1).
- A file transfer goes to the conversation with the other party: its offer or
  outcome as notices, its progress as one line updated in place
  (:mod:`securechat.ui.transfer_events`).

Values are stored as the network sent them; render.py sanitises on display.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..client.commands import Request
from ..client.events import ban_line, users_text
from ..wire.names import fold
from .buffers import Buffer, Line, LineKind, utc_now
from .transfer_events import FILE_EVENTS, FILE_SYSTEM_EVENTS

if TYPE_CHECKING:
    from ..client.core import Event
    from .model import ChatModel

__all__ = ["Outcome", "apply_event", "mentions"]

# System events that answer something the user typed: shown where they typed it.
_ANSWERS = frozenset(
    {"time", "history_status", "forgotten", "export", "session_closed"} | {"done", "confirm"}
)


def _timestamp(ts: Any) -> datetime.datetime:
    """The server's ISO 8601 time, or now if it sent none we can read."""
    if isinstance(ts, str):
        try:
            return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            pass
    return utc_now()


def mentions(text: str, name: str) -> bool:
    """True if ``text`` names ``name`` as a whole word, in any case."""
    if not name:
        return False
    pattern = rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


@dataclass
class Outcome:
    """What applying an event asks of the app: ring the bell, send quiet requests (the
    UI's own, whose answers change the model without a line: see ChatClient.request)."""

    bell: bool = False
    requests: list[Request] = field(default_factory=list)


def apply_event(model: ChatModel, event: Event, now: float | None = None) -> Outcome:
    """Turn one client event into changes to ``model``; ``now`` is ``time.monotonic()``."""
    handler = _HANDLERS.get(event.type, _other)
    outcome = Outcome()
    handler(model, event.data, outcome, time.monotonic() if now is None else now)
    return outcome


def _connected(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    model.user = str(d.get("user", model.user))
    model.status.state = "connected"
    model.status.server = str(d.get("server", ""))
    model.status.tls_version = str(d.get("tls_version", ""))
    model.status.reason = ""
    notice = f"connected to {model.status.server} as {model.user} ({model.status.tls_version})"
    model.notice(model.server, notice)
    if d.get("cert_subject"):
        model.notice(model.server, f"server certificate: {d['cert_subject']}")
        model.notice(model.server, f"issued by: {d.get('cert_issuer', '')}")
        model.notice(model.server, f"SHA-256 fingerprint: {d.get('cert_sha256', '')}")
    # The room list lets Tab complete /join with rooms that exist. Who is in our rooms
    # after a reconnect comes with each room's (re)join: a /who sent now could reach a
    # restarted server before the rejoin and be refused.
    outcome.requests.append(Request("rooms"))
    if model.was_connected and model.away:
        # Away ends with the last session (a restart too): stay away, as irssi does.
        outcome.requests.append(Request("away", {"text": model.away}))
    model.was_connected = True


def _disconnected(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    model.status.state = "disconnected"
    model.status.reason = str(d.get("reason", ""))
    # A kick, a ban or a deleted account (``code``) ends the chat for good: say it loudly.
    kind: LineKind = "error" if d.get("code") else "notice"
    for buffer in dict.fromkeys([model.server, model.current]):
        model.notice(buffer, f"disconnected: {model.status.reason}", kind)


def _server_changed(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    # Like a disconnect, shown where the user is looking too, not only in the server buffer.
    for buffer in dict.fromkeys([model.server, model.current]):
        model.notice(buffer, str(d.get("text", "")))


def _message(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    sender = str(d.get("from", ""))
    text = str(d.get("text", ""))
    own = fold(sender) == fold(model.user)
    private = "room" not in d
    if private:
        recipient = str(d.get("to", ""))
        where = recipient if own else sender
    else:
        where = str(d.get("room", ""))
    line = Line(
        "message",
        _timestamp(d.get("ts")),
        text,
        sender=sender,
        msg_id=d["id"] if isinstance(d.get("id"), int) else None,
        history=d.get("history") is True,
        own=own,
        mention=not own and mentions(text, model.user),
        unstored=d.get("stored") is False,
        action=d.get("action") is True,
    )
    if d.get("search") is True or d.get("requested") is True:
        _list_message(model, line, where, private=private, search=d.get("search") is True)
        return
    found = model.open_private(where) if private else model.find(where)
    if found is None:  # a room we are not in (/history #elsewhere): a listing
        found, line = model.current, dataclasses.replace(line, msg_id=None, where=where)
    buffer = found
    # A private message of our own counts too: /msg from elsewhere marks its buffer.
    if not model.add_line(buffer, line, unread=not own or private) or own:
        return
    wanted = line.mention or private
    if wanted and buffer is not model.current:
        buffer.highlight += 1
    outcome.bell = wanted and not line.history


def _list_message(model: ChatModel, line: Line, where: str, *, private: bool, search: bool) -> None:
    """A row of a /history or search answer: part of a block at the bottom of the current
    buffer, shown even when the message is on screen already, with its id in brackets
    for ``/history before ID``."""
    if not search and model.listing_oldest is None:
        model.notice(model.current, f"history of {where}:", "info")
    here = not search and fold(where) == fold(model.current.name)
    label = f"*{where}*" if private else where
    label = f"[{line.msg_id}]" if here else f"[{line.msg_id}] {label}"
    model.add_line(model.current, dataclasses.replace(line, msg_id=None, where=label))
    if not search and line.msg_id is not None:
        oldest = model.listing_oldest
        model.listing_oldest = line.msg_id if oldest is None else min(oldest, line.msg_id)


def _history_end(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    """The end of a /history answer: under its block, with how to page further back."""
    text = str(d.get("text", ""))
    if model.listing_oldest is not None:
        text += f"; /history before {model.listing_oldest} shows older ones"
        model.listing_oldest = None
        model.notice(model.current, text)
        return
    # Nothing was listed (no stored messages, or every row was a search's): as any answer.
    where = d.get("room") or d.get("user")
    found = model.find(where) if isinstance(where, str) else None
    model.notice(found or model.current, text)


def _system(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    handler = _SYSTEM_HANDLERS.get(str(d.get("event", "")))
    if handler is not None:
        handler(model, d, outcome, now)
        return
    text = str(d.get("text", ""))
    if d.get("event") == "help":
        model.notice(model.current, text, "info")
    elif d.get("event") in _ANSWERS:
        # An answer about a room or conversation goes to its buffer.
        where = d.get("room") or d.get("user")
        found = model.find(where) if isinstance(where, str) else None
        model.notice(found or model.current, text)
    else:
        model.notice(model.room_or(d.get("room"), model.server), text)


def _away(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    """Our own away state changed (an answer), or someone we wrote to is away."""
    user = str(d.get("user", ""))
    own = fold(user) == fold(model.user)
    if own:
        model.away = str(d.get("away") or "")
    buffer = model.current if own else model.open_private(user)
    model.notice(buffer, str(d.get("text", "")))


def _joined(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    room = str(d["room"])
    new = model.find(room) is None
    buffer = model.open_room(room)
    model.known_rooms[buffer.key] = room
    users = d.get("users")
    if isinstance(users, list):
        buffer.members = {fold(u): u for u in users if isinstance(u, str)}
    buffer.topic = str(d.get("topic") or "")
    if new:  # not the server's rejoin of #general after a reconnect
        model.switch(buffer)
    model.notice(buffer, str(d.get("text", "")))
    outcome.requests.append(Request("who", {"room": room}))


def _rejoined(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    """Back in a room after a reconnect: who is there now, without moving the user."""
    buffer = model.open_room(str(d["room"]))
    users = d.get("users")
    if isinstance(users, list):
        buffer.members = {fold(u): u for u in users if isinstance(u, str)}
    buffer.topic = str(d.get("topic") or "")


def _parted(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    buffer = model.room_or(d.get("room"), model.server)
    if buffer is not model.server:
        model.buffers.remove(buffer)
        if buffer is model.current:
            # As the core does: the most recently joined room becomes current.
            rooms = [b for b in model.buffers if b.kind == "room"]
            model.show(rooms[-1] if rooms else model.server)
    model.notice(model.current, str(d.get("text", "")))


def _member_change(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    buffer = model.room_or(d.get("room"), model.server)
    user = str(d.get("user", ""))
    if buffer is not model.server and user:
        if d.get("event") == "join":
            buffer.members[fold(user)] = user
        else:
            buffer.members.pop(fold(user), None)
    if not model.hides_presence(buffer):  # /filter joins
        model.notice(buffer, str(d.get("text", "")))


def _topic(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    buffer = model.room_or(d.get("room"), model.current)
    if buffer.kind == "room":
        buffer.topic = str(d.get("topic") or "")
    model.notice(buffer, str(d.get("text", "")))


def _nick(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    old, new = str(d.get("old", "")), str(d.get("new", ""))
    if fold(old) == fold(model.user):
        model.user = new
    shown: list[Buffer] = []
    for buffer in model.buffers:
        if buffer.kind == "room" and fold(old) in buffer.members:
            del buffer.members[fold(old)]
            buffer.members[fold(new)] = new
            shown.append(buffer)
    conversation = model.find(old)
    if conversation is not None and conversation.kind == "private":
        if model.find(new) in (None, conversation):
            conversation.name = new
        shown.append(conversation)
    for buffer in shown or [model.server]:
        model.notice(buffer, str(d.get("text", "")))


def _reconnecting(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    delay = d.get("delay")
    model.status.state = "reconnecting"
    model.status.reconnect_at = now + (float(delay) if isinstance(delay, int | float) else 0.0)
    model.notice(model.server, str(d.get("text", "")))


def _users(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    room = str(d.get("room", ""))
    names = [u for u in d.get("users", []) if isinstance(u, str)]
    buffer = model.find(room) if room else None
    if buffer is not None and buffer.kind == "room":
        buffer.members = {fold(u): u for u in names}
    if d.get("quiet") is True:  # the UI's own /who: the list changes, no line
        return
    where = f"in {room}" if room else "online"  # without a room: /list
    model.notice(model.current, f"{where}: {users_text(names, d.get('away'))}", "info")


def _rooms(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    rooms = [r for r in d.get("rooms", []) if isinstance(r, dict)]
    model.known_rooms.update((fold(str(r.get("name", ""))), str(r.get("name", ""))) for r in rooms)
    if d.get("quiet") is True:
        return
    if not rooms:
        model.notice(model.current, "no rooms", "info")
    for room in rooms:
        name = str(room.get("name", ""))
        topic = room.get("topic")
        line = f"{name} ({room.get('users', 0)} users)" + (f": {topic}" if topic else "")
        model.notice(model.current, line, "info")


def _error(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    model.notice(model.current, str(d.get("text", "")), "error")


def _sessions(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    items = [s for s in d.get("sessions", []) if isinstance(s, dict)]
    for item in items:
        this = " (this one)" if item.get("current") is True else ""
        web = " (web)" if item.get("web") is True else ""
        model.notice(
            model.current,
            f"session {item.get('session')}: {item.get('peer')}{web}, since {item.get('since')}"
            f"{this}",
            "info",
        )


def _unread(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    items = [u for u in [*d.get("rooms", []), *d.get("users", [])] if isinstance(u, dict)]
    if not items:
        model.notice(model.current, "nothing unread", "info")
    for item in items:
        where = item.get("room") or item.get("user")
        model.notice(
            model.current,
            f"{where}: {item.get('unread')} unread, from message {item.get('first')}",
            "info",
        )


def _stats(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    model.notice(model.current, f"stats: {d.get('text', '')}", "info")


def _bans(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    bans = [b for b in d.get("bans", []) if isinstance(b, dict)]
    for ban in bans:
        model.notice(model.current, f"ban: {ban_line(ban)}", "info")
    if not bans:
        model.notice(model.current, "no bans", "info")


def _read(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    """Another session of the account read a conversation: nothing is unread there."""
    where = d.get("room") or d.get("user")
    buffer = model.find(where) if isinstance(where, str) else None
    if buffer is not None:
        buffer.unread = 0
        buffer.highlight = 0


def _other(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    """Event types this version does not know: their text, as a notice."""
    if d.get("text"):
        model.notice(model.room_or(d.get("room"), model.server), str(d["text"]))


_Handler = Callable[["ChatModel", dict[str, Any], Outcome, float], None]

_HANDLERS: dict[str, _Handler] = {
    "connected": _connected,
    "disconnected": _disconnected,
    "message": _message,
    "private": _message,
    "system": _system,
    "users": _users,
    "rooms": _rooms,
    "error": _error,
    "sessions": _sessions,
    "unread": _unread,
    "read": _read,
    "stats": _stats,
    "bans": _bans,
    **FILE_EVENTS,
}

_SYSTEM_HANDLERS: dict[str, _Handler] = {
    "joined": _joined,
    "rejoined": _rejoined,
    "parted": _parted,
    "join": _member_change,
    "part": _member_change,
    "quit": _member_change,
    "topic": _topic,
    "nick": _nick,
    "away": _away,
    "reconnecting": _reconnecting,
    "history_end": _history_end,
    "server_changed": _server_changed,
    **FILE_SYSTEM_EVENTS,
}
