"""The client's /commands: one table drives parsing, /help and the README check.

Parsing turns a line the user typed into a :class:`Request` (a frame to send)
or a :class:`Local` action; usage mistakes raise ChatError with a hint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ChatError
from .names import MAX_TOPIC_CHARS, check_room_name, check_text, check_user_name

__all__ = ["COMMANDS", "Command", "Local", "Request", "help_lines", "parse_input"]


@dataclass(frozen=True, slots=True)
class Command:
    """A /command: its name, usage line and one-line help."""

    name: str
    usage: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("join", "/join #room", "join a room (creating it if new) and make it current"),
    Command("part", "/part [#room]", "leave a room (default: the current one)"),
    Command("rooms", "/rooms", "list rooms with their user counts and topics"),
    Command("who", "/who [#room]", "list the users in a room (default: the current one)"),
    Command("topic", "/topic [text]", "show the current room's topic, or set it to text"),
    Command("msg", "/msg NAME text", "send a private message only NAME will see"),
    Command("nick", "/nick NEW", "rename your account to NEW, if nobody has that name"),
    Command("time", "/time", "show the server's time (UTC)"),
    Command("help", "/help [command]", "list the commands, or explain one"),
    Command("quit", "/quit [reason]", "leave the chat"),
)

_BY_NAME = {c.name: c for c in COMMANDS}


@dataclass(frozen=True, slots=True)
class Request:
    """A frame to send. ``waits``: later input depends on its answer (it changes state)."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    waits: bool = False


@dataclass(frozen=True, slots=True)
class Local:
    """Something the client does itself: ``help`` (with lines to show) or ``quit``."""

    kind: str
    lines: tuple[str, ...] = ()
    reason: str = ""


def help_lines(topic: str = "") -> tuple[str, ...]:
    """The /help text: every command, or one command in detail."""
    if topic:
        command = _BY_NAME.get(topic.lstrip("/").lower())
        if command is None:
            raise ChatError("unknown_command", f"no command /{topic.lstrip('/')}: /help lists them")
        return (f"{command.usage}  {command.help}",)
    width = max(len(c.usage) for c in COMMANDS)
    lines = [f"{c.usage.ljust(width)}  {c.help}" for c in COMMANDS]
    lines.append("Anything else you type is sent to the current room ('//' sends a leading '/').")
    return tuple(lines)


def parse_input(line: str, *, current_room: str | None) -> Request | Local:
    """Turn one typed line into a request or a local action."""
    if not line.startswith("/") or line.startswith("//"):
        text = line[1:] if line.startswith("//") else line
        return Request("say", {"room": _need_room(current_room), "text": check_text(text)})
    word, _, rest = line[1:].partition(" ")
    name = word.lower()
    rest = rest.strip()
    if name not in _BY_NAME:
        raise ChatError("unknown_command", f"unknown command /{word}: /help lists the commands")
    if name == "help":
        return Local("help", help_lines(rest))
    if name == "quit":
        return Local("quit", reason=rest)
    if name == "join":
        return Request("join", {"room": check_room_name(_one_arg(name, rest))}, waits=True)
    if name == "part":
        room = check_room_name(rest) if rest else _need_room(current_room)
        return Request("part", {"room": room}, waits=True)
    if name == "rooms":
        return Request("rooms")
    if name == "who":
        return Request("who", {"room": check_room_name(rest) if rest else _need_room(current_room)})
    if name == "topic":
        fields: dict[str, Any] = {"room": _need_room(current_room)}
        if rest:
            fields["text"] = check_text(rest, limit=MAX_TOPIC_CHARS, what="topic")
        return Request("topic", fields)
    if name == "msg":
        target, _, text = rest.partition(" ")
        text = text.lstrip(" ")
        if not target or not text.strip():
            raise ChatError("usage", f"usage: {_BY_NAME['msg'].usage}")
        return Request("msg", {"to": check_user_name(target), "text": check_text(text)})
    if name == "nick":
        return Request("nick", {"name": check_user_name(_one_arg(name, rest))}, waits=True)
    return Request("time")


def _one_arg(name: str, rest: str) -> str:
    if not rest or " " in rest:
        raise ChatError("usage", f"usage: {_BY_NAME[name].usage}")
    return rest


def _need_room(current_room: str | None) -> str:
    if current_room is None:
        raise ChatError("no_room", "you are not in any room: /join #room first")
    return current_room
