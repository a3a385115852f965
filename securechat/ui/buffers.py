"""The buffers of the full-screen client: their lines, scrollback and markers.

A :class:`Buffer` is the server buffer, a room or a private conversation: its
lines in message-id order (one id shown once), its unread count and "new
messages" marker, its members and how far the view is scrolled. The lines the
user typed, browsed with Up and Down, are an :class:`InputHistory`. Plain state:
no prompt_toolkit here, and nothing locks (the UI thread alone uses it).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

from ..wire.names import fold

__all__ = [
    "MAX_BUFFER_LINES",
    "MAX_INPUT_HISTORY",
    "Buffer",
    "BufferKind",
    "InputHistory",
    "Line",
    "LineKind",
    "utc_now",
]

MAX_BUFFER_LINES = 4096
"""Lines kept per buffer (WeeChat's default scrollback); older ones are dropped."""

MAX_INPUT_HISTORY = 500
"""Typed lines remembered for Up/Down."""

BufferKind = Literal["server", "room", "private"]
LineKind = Literal["message", "notice", "info", "error", "transfer"]


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
    action: bool = False
    """Sent with /me: shown as ``* alice waves``."""


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

    def clear(self) -> None:
        """Empty the screen (/clear); messages already shown stay known, so a replay
        does not bring them back."""
        self.lines.clear()
        self.marker = None
        self.scroll = 0

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


def utc_now() -> datetime.datetime:
    """The time a line is stamped with when the server sent none (UTC)."""
    return datetime.datetime.now(datetime.UTC)
