"""What the full-screen client shows, as plain state: no prompt_toolkit here.

:class:`ChatModel` turns the client core's events into buffers of lines (the
server buffer, one per room, one per private conversation), unread counts, a
"new messages" marker, each room's members, the connection status and the
progress of file transfers. The app calls it from the UI thread only, so
nothing here locks.

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
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..client.commands import Request
from ..client.core import Event
from ..client.events import ban_line
from ..wire.names import fold

__all__ = [
    "MAX_BUFFER_LINES",
    "MAX_INPUT_HISTORY",
    "Buffer",
    "ChatModel",
    "InputHistory",
    "Line",
    "Outcome",
    "Status",
    "Transfer",
]

MAX_BUFFER_LINES = 4096
"""Lines kept per buffer (WeeChat's default scrollback); older ones are dropped."""

MAX_INPUT_HISTORY = 500
"""Typed lines remembered for Up/Down."""

BufferKind = Literal["server", "room", "private"]
LineKind = Literal["message", "notice", "info", "error", "transfer"]
ConnectionState = Literal["connecting", "connected", "reconnecting", "disconnected"]

# System events that answer something the user typed: shown where they typed it.
_ANSWERS = frozenset(
    {"time", "history_status", "forgotten", "export", "history_end", "session_closed"}
    | {"done", "confirm"}
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _timestamp(ts: Any) -> datetime.datetime:
    """The server's ISO 8601 time, or now if it sent none we can read."""
    if isinstance(ts, str):
        try:
            return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            pass
    return _now()


def mentions(text: str, name: str) -> bool:
    """True if ``text`` names ``name`` as a whole word, in any case."""
    if not name:
        return False
    pattern = rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a buffer.

    ``kind`` is ``message`` (someone said ``text``), ``notice`` (an event, shown
    dimmed), ``info`` (an answer such as /help, shown plainly), ``error``, or
    ``transfer`` (the progress of transfer ``transfer``, drawn from the model).
    """

    kind: LineKind
    when: datetime.datetime
    text: str = ""
    sender: str = ""
    msg_id: int | None = None
    history: bool = False
    """Replayed from the server's history, not live."""
    own: bool = False
    mention: bool = False
    """Someone else's message naming the user."""
    unstored: bool = False
    """Sent with /nolog (or by someone who opted out): the server kept no copy."""
    where: str = ""
    """The room or conversation it belongs to, when shown outside it (search results)."""
    transfer: int | None = None


@dataclass(eq=False)
class Buffer:
    """The server buffer, a room, or a private conversation, and what it shows."""

    name: str
    kind: BufferKind
    lines: list[Line] = field(default_factory=list)
    unread: int = 0
    """Messages that arrived while another buffer was shown."""
    highlight: bool = False
    """A mention, private message or file offer arrived while another buffer was shown."""
    marker: int | None = None
    """Index of the first line that arrived while another buffer was shown."""
    members: dict[str, str] = field(default_factory=dict)
    """A room's members: folded name to name."""
    topic: str = ""
    scroll: int = 0
    """How many rows the view is scrolled up from the newest line."""
    _ids: set[int] = field(default_factory=set, init=False, repr=False)

    @property
    def key(self) -> str:
        """The name under which the buffer is found (names are unique regardless of case)."""
        return fold(self.name)

    @property
    def rows(self) -> int:
        """Rows the buffer draws: its lines, plus the marker line."""
        return len(self.lines) + (self.marker is not None)

    def newest_id(self) -> int | None:
        """The id of the newest message shown here, if any."""
        return max((line.msg_id for line in self.lines if line.msg_id is not None), default=None)

    def member_names(self) -> list[str]:
        """The members, sorted as the server sorts them (case-insensitively)."""
        return sorted(self.members.values(), key=fold)

    def add(self, line: Line) -> int | None:
        """Insert ``line`` where it belongs; its index, or None if its message is already here."""
        position = len(self.lines)
        if line.msg_id is not None:
            if line.msg_id in self._ids:
                return None
            self._ids.add(line.msg_id)
            # Messages are ordered by id: walk back over the newer ones (notices in
            # between do not stop the walk) so a replayed message lands in place.
            for index in range(len(self.lines) - 1, -1, -1):
                other = self.lines[index].msg_id
                if other is None:
                    continue
                if other < line.msg_id:
                    break
                position = index
        self.lines.insert(position, line)
        if self.marker is not None and position < self.marker:
            self.marker += 1
        if self.scroll:
            self.scroll += 1  # keep a scrolled-up view where the reader left it
        self._trim()
        return position

    def _trim(self) -> None:
        excess = len(self.lines) - MAX_BUFFER_LINES
        if excess <= 0:
            return
        for line in self.lines[:excess]:
            if line.msg_id is not None:
                self._ids.discard(line.msg_id)
        del self.lines[:excess]
        if self.marker is not None:
            self.marker = max(0, self.marker - excess)
        self.scroll = min(self.scroll, max(0, self.rows - 1))


@dataclass
class Status:
    """The connection as the status line shows it."""

    state: ConnectionState = "connecting"
    server: str = ""
    tls_version: str = ""
    reason: str = ""
    """Why the connection ended, while disconnected or reconnecting."""
    reconnect_at: float = 0.0
    """``time.monotonic()`` of the next reconnection attempt."""

    def reconnect_in(self, now: float) -> int:
        """Whole seconds until the next reconnection attempt."""
        return max(0, round(self.reconnect_at - now))


@dataclass
class Transfer:
    """What the UI knows of one file transfer."""

    id: int
    direction: str = ""
    """``send`` or ``receive``."""
    peer: str = ""
    name: str = ""
    size: int = 0
    bytes: int = 0
    state: str = "offered"
    """``offered``, ``moving``, ``done``, ``rejected`` or ``failed``."""
    rate: float | None = None
    """Bytes per second since the first progress report."""
    shown: bool = False
    """Its progress line is in a buffer."""
    _first: tuple[float, int] | None = field(default=None, init=False, repr=False)

    def progress(self, done: int, size: int, now: float) -> None:
        """Record a progress report of ``done`` bytes of ``size`` at ``now``."""
        self.bytes, self.size, self.state = done, size, "moving"
        if self._first is None:
            self._first = (now, done)
        elif now > self._first[0]:
            self.rate = (done - self._first[1]) / (now - self._first[0])

    def seconds_left(self) -> float | None:
        """Estimated time to completion, or None before the rate is known."""
        if not self.rate or self.rate <= 0:
            return None
        return max(0.0, (self.size - self.bytes) / self.rate)


@dataclass
class Outcome:
    """What applying an event asks of the app: ring the bell, send quiet requests."""

    bell: bool = False
    requests: list[Request] = field(default_factory=list)


class InputHistory:
    """Lines the user entered, browsed with Up and Down as in a shell.

    Going back remembers the line being typed, and going forward past the
    newest entry brings it back.
    """

    def __init__(self, limit: int = MAX_INPUT_HISTORY) -> None:
        self._entries: list[str] = []
        self._limit = limit
        self._position: int | None = None
        self._draft = ""

    def add(self, line: str) -> None:
        """Remember ``line`` (not twice in a row) and stop browsing."""
        self._position = None
        if line.strip() and (not self._entries or self._entries[-1] != line):
            self._entries.append(line)
            del self._entries[: -self._limit]

    def back(self, current: str) -> str | None:
        """The entry before the one shown; None at the oldest."""
        if self._position is None:
            self._position, self._draft = len(self._entries), current
        if self._position == 0:
            return None
        self._position -= 1
        return self._entries[self._position]

    def forward(self) -> str | None:
        """The entry after the one shown, then the draft; None when not browsing."""
        if self._position is None:
            return None
        self._position += 1
        if self._position >= len(self._entries):
            self._position = None
            return self._draft
        return self._entries[self._position]


class ChatModel:
    """Buffers, status and transfers of one chat session; see the module docstring."""

    def __init__(self) -> None:
        self.user = ""
        self.server = Buffer("server", "server")
        self.buffers: list[Buffer] = [self.server]
        self.current: Buffer = self.server
        self.status = Status()
        self.transfers: dict[int, Transfer] = {}
        self.known_rooms: dict[str, str] = {}
        """Rooms seen in /rooms answers and joins: folded name to name."""
        self.history = InputHistory()
        self._quiet: Counter[tuple[str, str]] = Counter()
        """Answers to requests the UI made itself, applied without a line: (type, folded room)."""
        self._was_connected = False

    # -- buffers -----------------------------------------------------------------------

    def find(self, name: str) -> Buffer | None:
        """The room or conversation buffer called ``name``, if open."""
        key = fold(name)
        return next((b for b in self.buffers if b.kind != "server" and b.key == key), None)

    def open_room(self, name: str) -> Buffer:
        """The buffer of room ``name``, created if new."""
        return self._open(name, "room")

    def open_private(self, name: str) -> Buffer:
        """The buffer of the conversation with ``name``, created if new."""
        return self._open(name, "private")

    def _open(self, name: str, kind: BufferKind) -> Buffer:
        buffer = self.find(name)
        if buffer is None:
            buffer = Buffer(name, kind)
            self.buffers.append(buffer)
        else:
            buffer.name = name  # the server's spelling wins over what was typed
        return buffer

    def switch(self, buffer: Buffer) -> None:
        """Show ``buffer``: its unread count resets and its marker shows where they began."""
        if buffer is not self.current:
            self.current.marker = None  # seen now: the next visit marks anew
            self._show(buffer)

    def _show(self, buffer: Buffer) -> None:
        self.current = buffer
        buffer.unread = 0
        buffer.highlight = False

    def switch_to_number(self, number: int) -> None:
        """Show buffer ``number`` as numbered in the status line (1 is the server)."""
        if 1 <= number <= len(self.buffers):
            self.switch(self.buffers[number - 1])

    def cycle(self, step: int) -> None:
        """Show the next (``step`` 1) or previous (-1) buffer, wrapping around."""
        index = self.buffers.index(self.current)
        self.switch(self.buffers[(index + step) % len(self.buffers)])

    def switch_to_activity(self) -> None:
        """Show the buffer most worth reading: a highlight first, then unread messages."""
        others = [b for b in self.buffers if b is not self.current]
        buffer = next((b for b in others if b.highlight), None) or next(
            (b for b in others if b.unread), None
        )
        if buffer is not None:
            self.switch(buffer)

    def scroll(self, rows: int, *, keep: int = 1) -> None:
        """Scroll the current buffer up (positive) or down (negative) by ``rows``,
        keeping at least ``keep`` rows (a screenful) in view at the top."""
        buffer = self.current
        buffer.scroll = max(0, min(buffer.scroll + rows, buffer.rows - keep))

    def users(self) -> list[str]:
        """Every user name the model knows of, except the user's own, sorted."""
        names: dict[str, str] = {}
        for buffer in self.buffers:
            names.update(buffer.members)
            if buffer.kind == "private":
                names[buffer.key] = buffer.name
        names.pop(fold(self.user), None)
        return sorted(names.values(), key=fold)

    def rooms(self) -> list[str]:
        """Every room name the model knows of, sorted."""
        names = dict(self.known_rooms)
        names.update((b.key, b.name) for b in self.buffers if b.kind == "room")
        return sorted(names.values(), key=fold)

    def cancel_quiet(self, request: Request) -> None:
        """A request from :class:`Outcome` could not be sent: its answer will not come."""
        self._quiet[_answer_key(request.type, request.fields.get("room"))] -= 1

    def learn_transfers(self, listing: Iterable[dict[str, Any]]) -> None:
        """Fill in names and peers from the core's transfer list (progress events lack them)."""
        for item in listing:
            tid = item.get("id")
            if not isinstance(tid, int):
                continue
            transfer = self.transfers.setdefault(tid, Transfer(tid))
            transfer.direction = str(item.get("direction") or transfer.direction)
            transfer.peer = str(item.get("peer") or transfer.peer)
            transfer.name = str(item.get("name") or transfer.name)
            size = item.get("size")
            if isinstance(size, int):
                transfer.size = size

    # -- events --------------------------------------------------------------------------

    def apply(self, event: Event, *, now: float | None = None) -> Outcome:
        """Turn one client event into model changes; ``now`` is ``time.monotonic()``."""
        handler = _HANDLERS.get(event.type, ChatModel._other)
        outcome = Outcome()
        handler(self, event.data, outcome, time.monotonic() if now is None else now)
        return outcome

    def _line(self, buffer: Buffer, line: Line, *, unread: bool = False) -> bool:
        """Add ``line`` to ``buffer``, marking it unread there if not shown; False if a repeat."""
        position = buffer.add(line)
        if position is None:
            return False
        if buffer is not self.current:
            if buffer.marker is None:
                buffer.marker = position
            if unread:
                buffer.unread += 1
        return True

    def _notice(self, buffer: Buffer, text: str, kind: LineKind = "notice") -> None:
        self._line(buffer, Line(kind, _now(), text))

    def _room_or(self, room: Any, fallback: Buffer) -> Buffer:
        found = self.find(room) if isinstance(room, str) and room else None
        return found if found is not None and found.kind == "room" else fallback

    def _connected(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self.user = str(d.get("user", self.user))
        self.status.state = "connected"
        self.status.server = str(d.get("server", ""))
        self.status.tls_version = str(d.get("tls_version", ""))
        self.status.reason = ""
        notice = f"connected to {self.status.server} as {self.user} ({self.status.tls_version})"
        self._notice(self.server, notice)
        if d.get("cert_subject"):
            self._notice(self.server, f"server certificate: {d['cert_subject']}")
            self._notice(self.server, f"issued by: {d.get('cert_issuer', '')}")
            self._notice(self.server, f"SHA-256 fingerprint: {d.get('cert_sha256', '')}")
        # The room list lets Tab complete /join with rooms that exist.
        outcome.requests.append(self._quiet_request("rooms", {}))
        if self._was_connected:
            # The core rejoins silently after a reconnect: who left meanwhile is unknown.
            for buffer in self.buffers:
                if buffer.kind == "room":
                    outcome.requests.append(self._quiet_request("who", {"room": buffer.name}))
        self._was_connected = True

    def _disconnected(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self.status.state = "disconnected"
        self.status.reason = str(d.get("reason", ""))
        # A kick, a ban or a deleted account (``code``) ends the chat for good: say it loudly.
        kind: LineKind = "error" if d.get("code") else "notice"
        for buffer in dict.fromkeys([self.server, self.current]):
            self._notice(buffer, f"disconnected: {self.status.reason}", kind)

    def _server_changed(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        # Like a disconnect, shown where the user is looking too, not only in the server buffer.
        for buffer in dict.fromkeys([self.server, self.current]):
            self._notice(buffer, str(d.get("text", "")))

    def _quiet_request(self, type_: str, fields: dict[str, Any]) -> Request:
        self._quiet[_answer_key(type_, fields.get("room"))] += 1
        return Request(type_, fields)

    def _answered_quietly(self, type_: str, room: Any = None) -> bool:
        """True (once) if this answer is to a request of the UI's own."""
        key = _answer_key(type_, room)
        if self._quiet[key] > 0:
            self._quiet[key] -= 1
            return True
        return False

    def _message(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        sender = str(d.get("from", ""))
        text = str(d.get("text", ""))
        own = fold(sender) == fold(self.user)
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
            mention=not own and mentions(text, self.user),
            unstored=d.get("stored") is False,
        )
        if d.get("search") is True:
            where = f"*{where}*" if private else where
            self._line(self.current, dataclasses.replace(line, msg_id=None, where=where))
            return
        found = self.open_private(where) if private else self.find(where)
        if found is None:  # a room we are not in (/history #elsewhere): a listing
            found, line = self.current, dataclasses.replace(line, msg_id=None, where=where)
        buffer = found
        if not self._line(buffer, line, unread=not own) or own:
            return
        wanted = line.mention or private
        if wanted and buffer is not self.current:
            buffer.highlight = True
        outcome.bell = wanted and not line.history

    def _system(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        handler = _SYSTEM_HANDLERS.get(str(d.get("event", "")))
        if handler is not None:
            handler(self, d, outcome, now)
            return
        text = str(d.get("text", ""))
        if d.get("event") == "help":
            self._notice(self.current, text, "info")
        elif d.get("event") in _ANSWERS:
            # The end of a /history answer goes where its messages went.
            where = d.get("room") or d.get("user")
            found = self.find(where) if isinstance(where, str) else None
            self._notice(found or self.current, text)
        else:
            self._notice(self._room_or(d.get("room"), self.server), text)

    def _joined(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        room = str(d["room"])
        new = self.find(room) is None
        buffer = self.open_room(room)
        self.known_rooms[buffer.key] = room
        users = d.get("users")
        if isinstance(users, list):
            buffer.members = {fold(u): u for u in users if isinstance(u, str)}
        buffer.topic = str(d.get("topic") or "")
        if new:  # not the server's rejoin of #general after a reconnect
            self.switch(buffer)
        self._notice(buffer, str(d.get("text", "")))
        outcome.requests.append(self._quiet_request("who", {"room": room}))

    def _parted(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        buffer = self._room_or(d.get("room"), self.server)
        if buffer is not self.server:
            self.buffers.remove(buffer)
            if buffer is self.current:
                # As the core does: the most recently joined room becomes current.
                rooms = [b for b in self.buffers if b.kind == "room"]
                self._show(rooms[-1] if rooms else self.server)
        self._notice(self.current, str(d.get("text", "")))

    def _member_change(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        buffer = self._room_or(d.get("room"), self.server)
        user = str(d.get("user", ""))
        if buffer is not self.server and user:
            if d.get("event") == "join":
                buffer.members[fold(user)] = user
            else:
                buffer.members.pop(fold(user), None)
        self._notice(buffer, str(d.get("text", "")))

    def _topic(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        buffer = self._room_or(d.get("room"), self.current)
        if buffer.kind == "room":
            buffer.topic = str(d.get("topic") or "")
        self._notice(buffer, str(d.get("text", "")))

    def _nick(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        old, new = str(d.get("old", "")), str(d.get("new", ""))
        if fold(old) == fold(self.user):
            self.user = new
        shown: list[Buffer] = []
        for buffer in self.buffers:
            if buffer.kind == "room" and fold(old) in buffer.members:
                del buffer.members[fold(old)]
                buffer.members[fold(new)] = new
                shown.append(buffer)
        conversation = self.find(old)
        if conversation is not None and conversation.kind == "private":
            if self.find(new) in (None, conversation):
                conversation.name = new
            shown.append(conversation)
        for buffer in shown or [self.server]:
            self._notice(buffer, str(d.get("text", "")))

    def _reconnecting(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        delay = d.get("delay")
        self.status.state = "reconnecting"
        self.status.reconnect_at = now + (float(delay) if isinstance(delay, int | float) else 0.0)
        self._notice(self.server, str(d.get("text", "")))

    def _users(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        room = str(d.get("room", ""))
        names = [u for u in d.get("users", []) if isinstance(u, str)]
        buffer = self.find(room)
        if buffer is not None and buffer.kind == "room":
            buffer.members = {fold(u): u for u in names}
        if self._answered_quietly("users", room):
            return
        self._notice(self.current, f"in {room}: {', '.join(names)}", "info")

    def _rooms(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        rooms = [r for r in d.get("rooms", []) if isinstance(r, dict)]
        self.known_rooms.update(
            (fold(str(r.get("name", ""))), str(r.get("name", ""))) for r in rooms
        )
        if self._answered_quietly("rooms"):
            return
        if not rooms:
            self._notice(self.current, "no rooms", "info")
        for room in rooms:
            name = str(room.get("name", ""))
            topic = room.get("topic")
            line = f"{name} ({room.get('users', 0)} users)" + (f": {topic}" if topic else "")
            self._notice(self.current, line, "info")

    def _error(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self._notice(self.current, str(d.get("text", "")), "error")

    def _sessions(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        items = [s for s in d.get("sessions", []) if isinstance(s, dict)]
        for item in items:
            this = " (this one)" if item.get("current") is True else ""
            self._notice(
                self.current,
                f"session {item.get('session')}: {item.get('peer')}, since {item.get('since')}"
                f"{this}",
                "info",
            )

    def _unread(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        items = [u for u in [*d.get("rooms", []), *d.get("users", [])] if isinstance(u, dict)]
        if not items:
            self._notice(self.current, "nothing unread", "info")
        for item in items:
            where = item.get("room") or item.get("user")
            self._notice(
                self.current,
                f"{where}: {item.get('unread')} unread, from message {item.get('first')}",
                "info",
            )

    def _stats(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self._notice(self.current, f"stats: {d.get('text', '')}", "info")

    def _bans(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        bans = [b for b in d.get("bans", []) if isinstance(b, dict)]
        for ban in bans:
            self._notice(self.current, f"ban: {ban_line(ban)}", "info")
        if not bans:
            self._notice(self.current, "no bans", "info")

    def _read(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        """Another session of the account read a conversation: nothing is unread there."""
        where = d.get("room") or d.get("user")
        buffer = self.find(where) if isinstance(where, str) else None
        if buffer is not None:
            buffer.unread = 0
            buffer.highlight = False

    def _files(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        items = [t for t in d.get("transfers", []) if isinstance(t, dict)]
        self.learn_transfers(items)
        if not items:
            self._notice(self.current, "no file transfers", "info")
        for item in items:
            arrow = "to" if item.get("direction") == "send" else "from"
            self._notice(
                self.current,
                f"transfer {item.get('id')}: {item.get('name')} {arrow} {item.get('peer')}, "
                f"{item.get('state')}, {item.get('bytes')} of {item.get('size')} bytes",
                "info",
            )

    def _transfer(self, tid: Any) -> Transfer:
        key = tid if isinstance(tid, int) else 0
        return self.transfers.setdefault(key, Transfer(key))

    def _transfer_buffer(self, transfer: Transfer) -> Buffer:
        return self.open_private(transfer.peer) if transfer.peer else self.server

    def _file_offer(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        transfer = self._transfer(d.get("id"))
        transfer.direction, transfer.peer = "receive", str(d.get("from", ""))
        transfer.name, transfer.size = str(d.get("name", "")), int(d.get("size") or 0)
        buffer = self._transfer_buffer(transfer)
        self._line(buffer, Line("notice", _now(), str(d.get("text", ""))), unread=True)
        if buffer is not self.current:
            buffer.highlight = True
        outcome.bell = True

    def _file_offered(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        transfer = self._transfer(d.get("id"))
        transfer.direction, transfer.peer = "send", str(d.get("to", transfer.peer))
        self._notice(self._transfer_buffer(transfer), str(d.get("text", "")))

    def _file_accepted(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        transfer = self._transfer(d.get("id"))
        transfer.state = "moving"
        buffer = self._transfer_buffer(transfer)
        self._notice(buffer, str(d.get("text", "")))
        self._show_transfer(transfer, buffer)

    def _file_progress(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        transfer = self._transfer(d.get("id"))
        transfer.direction = str(d.get("direction") or transfer.direction)
        transfer.progress(int(d.get("bytes") or 0), int(d.get("size") or 0), now)
        self._show_transfer(transfer, self._transfer_buffer(transfer))

    def _show_transfer(self, transfer: Transfer, buffer: Buffer) -> None:
        """Give ``transfer`` its one progress line, the first time it moves."""
        if not transfer.shown:
            transfer.shown = True
            self._line(buffer, Line("transfer", _now(), transfer=transfer.id))

    def _file_end(self, d: dict[str, Any], state: str, kind: LineKind = "notice") -> None:
        transfer = self._transfer(d.get("id"))
        transfer.state = state
        if state == "done":
            transfer.bytes = transfer.size = int(d.get("size") or transfer.size)
        self._notice(self._transfer_buffer(transfer), str(d.get("text", "")), kind)

    def _file_done(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self._file_end(d, "done")

    def _file_rejected(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self._file_end(d, "rejected")

    def _file_failed(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self._file_end(d, "failed", "error")

    def _file_cancelled(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        self._file_end(d, "cancelled")

    def _other(self, d: dict[str, Any], outcome: Outcome, now: float) -> None:
        """Event types this version does not know: their text, as a notice."""
        if d.get("text"):
            self._notice(self._room_or(d.get("room"), self.server), str(d["text"]))


def _answer_key(type_: str, room: Any) -> tuple[str, str]:
    """Requests and their answers matched up: ``who #dev`` is answered by ``users #dev``."""
    return ("users" if type_ == "who" else type_, fold(room) if isinstance(room, str) else "")


_Handler = Callable[[ChatModel, dict[str, Any], Outcome, float], None]

_HANDLERS: dict[str, _Handler] = {
    "connected": ChatModel._connected,
    "disconnected": ChatModel._disconnected,
    "message": ChatModel._message,
    "private": ChatModel._message,
    "system": ChatModel._system,
    "users": ChatModel._users,
    "rooms": ChatModel._rooms,
    "error": ChatModel._error,
    "files": ChatModel._files,
    "sessions": ChatModel._sessions,
    "unread": ChatModel._unread,
    "read": ChatModel._read,
    "stats": ChatModel._stats,
    "bans": ChatModel._bans,
    "file_offer": ChatModel._file_offer,
    "file_progress": ChatModel._file_progress,
    "file_saved": ChatModel._file_done,
    "file_sent": ChatModel._file_done,
    "file_rejected": ChatModel._file_rejected,
    "file_failed": ChatModel._file_failed,
}

_SYSTEM_HANDLERS: dict[str, _Handler] = {
    "joined": ChatModel._joined,
    "parted": ChatModel._parted,
    "join": ChatModel._member_change,
    "part": ChatModel._member_change,
    "quit": ChatModel._member_change,
    "topic": ChatModel._topic,
    "nick": ChatModel._nick,
    "reconnecting": ChatModel._reconnecting,
    "server_changed": ChatModel._server_changed,
    "file_offered": ChatModel._file_offered,
    "file_accepted": ChatModel._file_accepted,
    "file_accepting": ChatModel._file_accepted,
    "file_rejected": ChatModel._file_rejected,
    "file_cancelled": ChatModel._file_cancelled,
}
