"""What a typed line means in the buffer it was typed in.

Line mode has one current room; the full-screen client has buffers. A plain
line (or ``/me``) goes to the buffer's room, or to the other party in a private
conversation; ``/msg NAME`` without text and ``/query NAME`` open that
conversation; ``/close`` closes a conversation (in a room it parts, in the
server buffer it is refused). Everything else is
:func:`securechat.client.commands.parse_input`, with the buffer's room as the
current one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..client.commands import Local, Request, parse_input
from ..errors import ChatError
from ..wire.names import check_text, check_user_name
from .model import ChatModel

__all__ = ["CloseConversation", "OpenConversation", "interpret"]


@dataclass(frozen=True, slots=True)
class OpenConversation:
    """Open (or show) the private conversation with ``name``; ``then``: a message to
    send there (``/query NAME text``)."""

    name: str
    then: Request | None = None


@dataclass(frozen=True, slots=True)
class CloseConversation:
    """Close the current private conversation's buffer (its history stays stored)."""


def interpret(
    line: str, model: ChatModel
) -> Request | Local | OpenConversation | CloseConversation:
    """The action for ``line`` typed in ``model.current``; usage mistakes raise ChatError."""
    buffer = model.current
    command, _, rest = line.partition(" ")
    command = command.lower()
    if command == "/msg" and rest.strip() and " " not in rest.strip():
        return OpenConversation(check_user_name(rest.strip()))
    if command == "/close" and buffer.kind != "room":
        if buffer.kind == "server":
            raise ChatError("usage", "the server buffer cannot be closed (/quit leaves the chat)")
        return CloseConversation()
    plain = not line.startswith("/") or line.startswith("//")
    if buffer.kind == "private" and (plain or command == "/me"):
        text = line[1:] if line.startswith("//") else line
        fields = {"to": buffer.name, "text": check_text(rest if command == "/me" else text)}
        return Request("msg", {**fields, "action": True} if command == "/me" else fields)
    try:
        action = parse_input(line, current_room=buffer.name if buffer.kind == "room" else None)
        if isinstance(action, Local) and action.kind == "query":
            return OpenConversation(action.target)
        if command == "/query" and isinstance(action, Request):
            return OpenConversation(action.fields["to"], then=action)
        return action
    except ChatError as exc:
        if exc.code != "no_room":
            raise
        what = "the server buffer" if buffer.kind == "server" else "a conversation"
        raise ChatError(
            "no_room",
            f"{what} is not a room: switch to one (Ctrl+N, Alt+number), name one, or /join #room",
        ) from exc
