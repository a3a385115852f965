"""Model to screen: prompt_toolkit formatted text for the full-screen client.

Every string that came from the network (message text, names, room names,
topics, file names, error texts, reasons, and the notices the core builds from
them) passes through :func:`securechat.wire.sanitize.sanitize` here, the last step
before the screen: no raw ESC, bidi override or other invisible character
reaches the terminal, so a message cannot retitle the window, clear the
screen, move the cursor or hide text. Styles are class names resolved by
:data:`STYLE`, so tests can check what is dimmed or highlighted.
"""

from __future__ import annotations

import datetime
import zlib
from collections.abc import Iterator
from itertools import islice

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.styles import Style

from ..client.fileinfo import format_size
from ..wire.names import fold
from ..wire.sanitize import sanitize
from .buffers import Buffer, Line
from .model import ChatModel
from .status import Transfer
from .wrap import fragments_width, wrap

__all__ = [
    "BAR_WIDTH",
    "MARKER_TEXT",
    "NICK_COLOURS",
    "STYLE",
    "buflist_rows",
    "day_separator",
    "format_duration",
    "line_fragments",
    "line_parts",
    "members_fragments",
    "nick_style",
    "pane_fragments",
    "pane_rows",
    "progress_fragments",
    "prompt_fragments",
    "status_fragments",
    "title_fragments",
]

STYLE = Style.from_dict(
    {
        "title": "bg:ansiblue fg:ansiwhite",
        "status": "bg:ansiblue fg:ansiwhite",
        "status.activity": "bold",
        "status.highlight": "bold fg:ansiyellow",
        "status.alert": "bold fg:ansiyellow",
        "separator": "fg:ansibrightblack",
        "prompt": "bold",
        # Dimmed by colour rather than the SGR "faint" attribute, which many
        # terminals (and prompt_toolkit before 3.0.48) do not support.
        "notice": "fg:ansibrightblack",
        "history": "fg:ansibrightblack",
        "unstored": "fg:ansibrightblack italic",
        "info": "",
        "error": "fg:ansired bold",
        "own": "bold",
        "mention": "bold fg:ansiyellow",
        "marker": "fg:ansired",
        "day": "fg:ansicyan",
        "buflist.current": "reverse",
        "where": "fg:ansicyan",
        "bar": "fg:ansigreen",
        "bar.failed": "fg:ansired",
    }
)
"""Every class the formatted text below uses."""

NICK_COLOURS = (
    "ansired",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)
"""Colours readable on dark and light backgrounds alike, one per nickname."""

BAR_WIDTH = 20
"""Characters inside a progress bar's brackets."""

MARKER_TEXT = "──────── new messages ────────"


def nick_style(name: str) -> str:
    """The style of ``name``: a colour from a stable hash, the same in every run and buffer."""
    # crc32, not hash(): str hashes change from run to run.
    colour = NICK_COLOURS[zlib.crc32(fold(name).encode()) % len(NICK_COLOURS)]
    return f"class:nick fg:{colour}"


def format_duration(seconds: float) -> str:
    """``seconds`` rounded for a countdown: ``<1 s``, ``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    whole = round(seconds)
    if whole < 1:
        return "<1 s"
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _stamp(line: Line) -> StyleAndTextTuples:
    # HH:MM for every line, replayed or live: the date is on the day separator above.
    style = "class:history" if line.history else "class:timestamp"
    return [(style, line.when.astimezone().strftime("%H:%M") + " ")]


def line_parts(line: Line, model: ChatModel) -> tuple[StyleAndTextTuples, StyleAndTextTuples]:
    """One buffer line in two parts: what comes before its text (timestamp, nick), under
    whose end wrapped rows are indented, and the text (message, notice or progress bar)."""
    head = _stamp(line)
    body: StyleAndTextTuples = []
    if line.kind == "message":
        if line.where:
            head.append(("class:where", sanitize(line.where) + " "))
        style = "class:own" if line.own else nick_style(line.sender)
        if line.mention:
            style += " reverse"
        if line.action:  # /me: "* alice waves", as IRC clients show an action
            head += [("", "* "), (style, sanitize(line.sender)), ("", " ")]
        else:
            head += [("", "<"), (style, sanitize(line.sender)), ("", "> ")]
        body.append(("class:mention" if line.mention else "", sanitize(line.text)))
        if line.unstored:
            body.append(("class:unstored", " (not stored)"))
    elif line.kind == "transfer":
        transfer = model.transfers.get(line.transfer or 0)
        if transfer is not None:
            body += progress_fragments(transfer)
    elif line.kind == "notice":
        head.append(("class:notice", "-- "))
        body.append(("class:notice", sanitize(line.text)))
    elif line.kind == "error":
        head.append(("class:error", "!! "))
        body.append(("class:error", sanitize(line.text)))
    else:
        body.append(("class:info", sanitize(line.text)))
    return head, body


def line_fragments(line: Line, model: ChatModel) -> StyleAndTextTuples:
    """One buffer line: timestamp, then the message, notice or progress bar."""
    head, body = line_parts(line, model)
    return head + body


def day_separator(day: datetime.date) -> StyleAndTextTuples:
    """The line between two days' lines, such as ``──── Tuesday 1 December 2026 ────``."""
    return [("class:day", f"──── {day:%A} {day.day} {day:%B %Y} ────")]


def progress_fragments(transfer: Transfer) -> StyleAndTextTuples:
    """A transfer's progress line after its timestamp, for example
    ``[=======>        ]  45% report.pdf from bob: 1.2 MiB of 2.6 MiB, 350.0 KiB/s, 4 s left``.
    """
    done = transfer.state == "done"
    fraction = 1.0 if done else transfer.bytes / transfer.size if transfer.size else 0.0
    filled = min(BAR_WIDTH, int(fraction * BAR_WIDTH))
    bar = "=" * filled + (">" + " " * (BAR_WIDTH - filled - 1) if filled < BAR_WIDTH else "")
    arrow = "to" if transfer.direction == "send" else "from"
    name = sanitize(transfer.name) or f"transfer {transfer.id}"
    text = f" {int(fraction * 100):3d}% {name} {arrow} {sanitize(transfer.peer) or '?'}: "
    text += f"{format_size(transfer.bytes)} of {format_size(transfer.size)}"
    left = transfer.seconds_left()
    if transfer.state == "moving" and transfer.rate is not None and left is not None:
        text += f", {format_size(transfer.rate)}/s, {format_duration(left)} left"
    elif transfer.state != "moving":
        text += f", {transfer.state}"
    style = "class:bar.failed" if transfer.state in ("failed", "rejected") else "class:bar"
    return [(style, f"[{bar}]"), ("", text)]


_Row = tuple[StyleAndTextTuples, StyleAndTextTuples, bool]
"""A row of the pane before wrapping: the part wrapped rows hang under, the rest, and
whether it is one of :attr:`Buffer.rows` (a day separator is not)."""


def _day(line: Line) -> datetime.date:
    return line.when.astimezone().date()


def _rows_back(buffer: Buffer, model: ChatModel, end: int) -> Iterator[_Row]:
    """The pane's rows above row ``end`` (of :attr:`Buffer.rows`), newest first, with a
    day separator above the first line of each day (and above the oldest line, unless
    it is from today)."""
    marker, lines = buffer.marker, buffer.lines
    today = datetime.date.today()
    for row in range(end - 1, -1, -1):
        if row == marker:
            yield [], [("class:marker", MARKER_TEXT)], True
            continue
        index = row if marker is None or row < marker else row - 1
        line = lines[index]
        yield (*line_parts(line, model), True)
        day = _day(line)
        before = _day(lines[index - 1]) if index else today
        if day != before:
            yield [], day_separator(day), False


def pane_fragments(buffer: Buffer, model: ChatModel, height: int) -> tuple[StyleAndTextTuples, int]:
    """The last ``height`` rows above the buffer's scroll position, unwrapped, and how many
    there are (the text of the pane, for tests and for reading)."""
    rows = list(islice(_rows_back(buffer, model, buffer.rows - buffer.scroll), height))
    out: StyleAndTextTuples = []
    for head, body, _ in reversed(rows):
        if out:
            out.append(("", "\n"))
        out += head + body
    return out, len(rows)


def pane_rows(
    buffer: Buffer, model: ChatModel, width: int, height: int
) -> tuple[list[StyleAndTextTuples], int]:
    """The pane as drawn: the newest ``height`` screen rows above the scroll position,
    each line word-wrapped to ``width`` with its continuation rows under its text; and
    how many of the buffer's rows they show (what a page is, for scrolling).

    Only what can be on screen is formatted, so a long scrollback costs nothing per redraw.
    """
    drawn: list[StyleAndTextTuples] = []
    shown = 0
    for head, body, counted in _rows_back(buffer, model, buffer.rows - buffer.scroll):
        if len(drawn) >= height:
            break
        drawn[:0] = wrap(head + body, width, fragments_width(head))
        shown += counted
    return drawn[-height:] if height else [], shown


def status_fragments(model: ChatModel, now: float) -> StyleAndTextTuples:
    """The status line: clock, connection, user, buffer, activity, transfers, scrolling."""
    status = model.status
    out: StyleAndTextTuples = [("", datetime.datetime.now().strftime(" %H:%M "))]
    if status.state == "connected":
        out.append(("", f"[connected {sanitize(status.tls_version)}] "))
    elif status.state == "reconnecting":
        out.append(("class:status.alert", f"[reconnecting in {status.reconnect_in(now)}s] "))
    else:
        out.append(("class:status.alert", f"[{status.state}] "))
    number = model.buffers.index(model.current) + 1
    out.append(("", f"[{sanitize(model.user)}] [{number}:{sanitize(model.current.name)}] "))
    active = [
        (i, b)
        for i, b in enumerate(model.buffers, 1)
        if b is not model.current and (b.unread or b.highlight)
    ]
    if active:
        out.append(("", "[act: "))
        for n, (i, buffer) in enumerate(active):
            style = "class:status.highlight" if buffer.highlight else "class:status.activity"
            count = f"({buffer.unread})" if buffer.unread else ""
            out.append((style, f"{' ' if n else ''}{i}:{sanitize(buffer.name)}{count}"))
        out.append(("", "] "))
    moving = [t for t in model.transfers.values() if t.state == "moving" and t.size]
    if moving:
        files = " ".join(f"#{t.id} {100 * t.bytes // t.size}%" for t in moving)
        out.append(("", f"[files: {files}] "))
    if model.current.scroll:
        more = model.current.more
        out.append(("class:status.highlight", f"-MORE({more})-" if more else "-MORE-"))
    return out


def title_fragments(model: ChatModel) -> StyleAndTextTuples:
    """The top line: the room and its topic, the conversation, or the server."""
    buffer = model.current
    if buffer.kind == "room":
        text = f" {sanitize(buffer.name)} ({len(buffer.members)} here)"
        if buffer.topic:
            text += f": {sanitize(buffer.topic)}"
    elif buffer.kind == "private":
        text = f" private conversation with {sanitize(buffer.name)}"
    else:
        server = sanitize(model.status.server) or "securechat"
        text = f" {server} {sanitize(model.status.tls_version)}"
    return [("", text)]


def members_fragments(buffer: Buffer, model: ChatModel) -> StyleAndTextTuples:
    """The side list: one member per line, in their colour, the user in bold."""
    out: StyleAndTextTuples = []
    for name in buffer.member_names():
        own = fold(name) == fold(model.user)
        out += [("class:own" if own else nick_style(name), sanitize(name)), ("", "\n")]
    return out[:-1]


def buflist_rows(model: ChatModel) -> list[StyleAndTextTuples]:
    """The buffer list (the left bar): ``2.#general (4) !1`` per buffer, its number, name,
    unread messages and highlights; the current buffer reversed."""
    rows: list[StyleAndTextTuples] = []
    for number, buffer in enumerate(model.buffers, 1):
        style = "class:buflist.current" if buffer is model.current else ""
        row: StyleAndTextTuples = [(style, f"{number}.{sanitize(buffer.name)}")]
        if buffer.unread:
            row.append(("class:status.activity", f" ({buffer.unread})"))
        if buffer.highlight:
            row.append(("class:status.highlight", f" !{buffer.highlight}"))
        rows.append(row)
    return rows


def prompt_fragments(model: ChatModel) -> StyleAndTextTuples:
    """What precedes the input: the buffer the line will go to."""
    return [("class:prompt", f"[{sanitize(model.current.name)}] ")]
