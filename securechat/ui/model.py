"""What the full-screen client shows, as plain state: no prompt_toolkit here.

:class:`ChatModel` holds the buffers of lines (the server buffer, one per room,
one per private conversation), which one is shown, the connection status and
the progress of file transfers; switching and scrolling act on it, and
:meth:`ChatModel.apply` feeds it the client core's events (see handlers.py for
where their lines go). The app calls it from the UI thread only, so nothing
here locks.

Values are stored as the network sent them; render.py sanitises on display.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..client.commands import Request
from ..client.core import Event
from ..wire.names import fold
from .buffers import Buffer, BufferKind, InputHistory, Line, LineKind, utc_now
from .handlers import Outcome, apply_event
from .status import Status, Transfer

__all__ = ["ChatModel"]


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
        self.was_connected = False
        """Connected before: the next ``connected`` event is a reconnection."""
        self.away = ""
        """The account's away text (/away), set again after a reconnect."""

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
            self.show(buffer)

    def show(self, buffer: Buffer) -> None:
        """Make ``buffer`` current and read, keeping the old buffer's marker."""
        self.current = buffer
        buffer.unread = 0
        buffer.highlight = False

    def close(self, buffer: Buffer) -> None:
        """Close a conversation's buffer, showing the one before it; it opens again
        with the next message."""
        index = self.buffers.index(buffer)
        self.buffers.remove(buffer)
        if buffer is self.current:
            self.show(self.buffers[index - 1])

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

    # -- events (see handlers.py) -------------------------------------------------------

    def apply(self, event: Event, *, now: float | None = None) -> Outcome:
        """Turn one client event into model changes; ``now`` is ``time.monotonic()``."""
        return apply_event(self, event, now)

    def add_line(self, buffer: Buffer, line: Line, *, unread: bool = False) -> bool:
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

    def notice(self, buffer: Buffer, text: str, kind: LineKind = "notice") -> None:
        """Add a line of ``text`` that is not a message (a notice, an answer, an error)."""
        self.add_line(buffer, Line(kind, utc_now(), text))

    def room_or(self, room: Any, fallback: Buffer) -> Buffer:
        """The buffer of room ``room`` if it is open, else ``fallback``."""
        found = self.find(room) if isinstance(room, str) and room else None
        return found if found is not None and found.kind == "room" else fallback

    def ask_quietly(self, type_: str, fields: dict[str, Any]) -> Request:
        """A request of the UI's own, whose answer changes the model without a line."""
        self._quiet[_answer_key(type_, fields.get("room"))] += 1
        return Request(type_, fields)

    def answered_quietly(self, type_: str, room: Any = None) -> bool:
        """True (once) if this answer is to a request of the UI's own."""
        key = _answer_key(type_, room)
        if self._quiet[key] > 0:
            self._quiet[key] -= 1
            return True
        return False


def _answer_key(type_: str, room: Any) -> tuple[str, str]:
    """Requests and their answers matched up: ``who #dev`` is answered by ``users #dev``."""
    return ("users" if type_ == "who" else type_, fold(room) if isinstance(room, str) else "")
