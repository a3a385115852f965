"""What each client event does to the :class:`~securechat.ui.model.ChatModel`.

:func:`apply_event` turns one event of the client core into lines in the
model's buffers, changes to its rooms' members and topics, its connection
status and its file transfers, and an :class:`Outcome` for the app (ring the
bell, send quiet requests).

Where lines go
--------------
- Messages go to their room's buffer, private messages to the other party's,
  ordered by message id, so history replay and gap fill land in place; one id
  is never shown twice in a buffer. Search results are a listing, not the
  conversation: they go to the current buffer, each saying where it was said.
- Room notices (joins, parts, quits, topics) go to the room's buffer.
- Answers to what the user just typed (errors, /help, /who, /rooms, /files,
  /time, /history status...) go to the current buffer, where they are looking.
- Connection notices, the server certificate and anything else without a room
  go to the server buffer (buffer 1).
- A file transfer goes to the conversation with the other party: its offer or
  outcome as notices, its progress as one line updated in place.

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
from .status import Transfer

if TYPE_CHECKING:
    from ..client.core import Event
    from .model import ChatModel

__all__ = ["Outcome", "apply_event", "mentions"]

# System events that answer something the user typed: shown where they typed it.
_ANSWERS = frozenset(
    {"time", "history_status", "forgotten", "export", "history_end", "session_closed"}
    | {"done", "confirm"}
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
    """What applying an event asks of the app: ring the bell, send quiet requests."""

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
    # The room list lets Tab complete /join with rooms that exist.
    outcome.requests.append(model.ask_quietly("rooms", {}))
    if model.was_connected:
        # The core rejoins silently after a reconnect: who left meanwhile is unknown.
        for buffer in model.buffers:
            if buffer.kind == "room":
                outcome.requests.append(model.ask_quietly("who", {"room": buffer.name}))
        if model.away:  # away ends with the last session: stay away, as irssi does
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
    if d.get("search") is True:
        where = f"*{where}*" if private else where
        model.add_line(model.current, dataclasses.replace(line, msg_id=None, where=where))
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
        buffer.highlight = True
    outcome.bell = wanted and not line.history


def _system(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    handler = _SYSTEM_HANDLERS.get(str(d.get("event", "")))
    if handler is not None:
        handler(model, d, outcome, now)
        return
    text = str(d.get("text", ""))
    if d.get("event") == "help":
        model.notice(model.current, text, "info")
    elif d.get("event") in _ANSWERS:
        # The end of a /history answer goes where its messages went.
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
    outcome.requests.append(model.ask_quietly("who", {"room": room}))


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
    if model.answered_quietly("users", room or None):
        return
    where = f"in {room}" if room else "online"  # without a room: /list
    model.notice(model.current, f"{where}: {users_text(names, d.get('away'))}", "info")


def _rooms(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    rooms = [r for r in d.get("rooms", []) if isinstance(r, dict)]
    model.known_rooms.update((fold(str(r.get("name", ""))), str(r.get("name", ""))) for r in rooms)
    if model.answered_quietly("rooms"):
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
        buffer.highlight = False


def _files(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    items = [t for t in d.get("transfers", []) if isinstance(t, dict)]
    model.learn_transfers(items)
    if not items:
        model.notice(model.current, "no file transfers", "info")
    for item in items:
        arrow = "to" if item.get("direction") == "send" else "from"
        model.notice(
            model.current,
            f"transfer {item.get('id')}: {item.get('name')} {arrow} {item.get('peer')}, "
            f"{item.get('state')}, {item.get('bytes')} of {item.get('size')} bytes",
            "info",
        )


def _transfer(model: ChatModel, tid: Any) -> Transfer:
    key = tid if isinstance(tid, int) else 0
    return model.transfers.setdefault(key, Transfer(key))


def _transfer_buffer(model: ChatModel, transfer: Transfer) -> Buffer:
    return model.open_private(transfer.peer) if transfer.peer else model.server


def _file_offer(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.direction, transfer.peer = "receive", str(d.get("from", ""))
    transfer.name, transfer.size = str(d.get("name", "")), int(d.get("size") or 0)
    buffer = _transfer_buffer(model, transfer)
    model.add_line(buffer, Line("notice", utc_now(), str(d.get("text", ""))), unread=True)
    if buffer is not model.current:
        buffer.highlight = True
    outcome.bell = True


def _file_offered(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.direction, transfer.peer = "send", str(d.get("to", transfer.peer))
    model.notice(_transfer_buffer(model, transfer), str(d.get("text", "")))


def _file_accepted(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.state = "moving"
    buffer = _transfer_buffer(model, transfer)
    model.notice(buffer, str(d.get("text", "")))
    _show_transfer(model, transfer, buffer)


def _file_progress(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.direction = str(d.get("direction") or transfer.direction)
    transfer.progress(int(d.get("bytes") or 0), int(d.get("size") or 0), now)
    _show_transfer(model, transfer, _transfer_buffer(model, transfer))


def _show_transfer(model: ChatModel, transfer: Transfer, buffer: Buffer) -> None:
    """Give ``transfer`` its one progress line, the first time it moves."""
    if not transfer.shown:
        transfer.shown = True
        model.add_line(buffer, Line("transfer", utc_now(), transfer=transfer.id))


def _file_end(model: ChatModel, d: dict[str, Any], state: str, kind: LineKind = "notice") -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.state = state
    if state == "done":
        transfer.bytes = transfer.size = int(d.get("size") or transfer.size)
    model.notice(_transfer_buffer(model, transfer), str(d.get("text", "")), kind)


def _file_done(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "done")


def _file_rejected(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "rejected")


def _file_failed(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "failed", "error")


def _file_cancelled(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "cancelled")


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
    "files": _files,
    "sessions": _sessions,
    "unread": _unread,
    "read": _read,
    "stats": _stats,
    "bans": _bans,
    "file_offer": _file_offer,
    "file_progress": _file_progress,
    "file_saved": _file_done,
    "file_sent": _file_done,
    "file_rejected": _file_rejected,
    "file_failed": _file_failed,
}

_SYSTEM_HANDLERS: dict[str, _Handler] = {
    "joined": _joined,
    "parted": _parted,
    "join": _member_change,
    "part": _member_change,
    "quit": _member_change,
    "topic": _topic,
    "nick": _nick,
    "away": _away,
    "reconnecting": _reconnecting,
    "server_changed": _server_changed,
    "file_offered": _file_offered,
    "file_accepted": _file_accepted,
    "file_accepting": _file_accepted,
    "file_rejected": _file_rejected,
    "file_cancelled": _file_cancelled,
}
