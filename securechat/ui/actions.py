"""What a typed line means in the buffer it was typed in.

Line mode has one current room; the full-screen client has buffers. A plain
line goes to the buffer's room, or to the other party in a private
conversation; ``/msg NAME`` without text opens that conversation. Everything
else is :func:`securechat.client.commands.parse_input`, with the buffer's room as the
current one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..client.commands import Local, Request, parse_input
from ..errors import ChatError
from ..wire.names import check_text, check_user_name
from .model import ChatModel

__all__ = ["OpenConversation", "interpret"]


@dataclass(frozen=True, slots=True)
class OpenConversation:
    """Open (or show) the private conversation with ``name``; nothing is sent."""

    name: str


def interpret(line: str, model: ChatModel) -> Request | Local | OpenConversation:
    """The action for ``line`` typed in ``model.current``; usage mistakes raise ChatError."""
    buffer = model.current
    command, _, rest = line.partition(" ")
    if command.lower() == "/msg" and rest.strip() and " " not in rest.strip():
        return OpenConversation(check_user_name(rest.strip()))
    plain = not line.startswith("/") or line.startswith("//")
    if plain and buffer.kind == "private":
        text = line[1:] if line.startswith("//") else line
        return Request("msg", {"to": buffer.name, "text": check_text(text)})
    try:
        return parse_input(line, current_room=buffer.name if buffer.kind == "room" else None)
    except ChatError as exc:
        if exc.code != "no_room":
            raise
        what = "the server buffer" if buffer.kind == "server" else "a conversation"
        raise ChatError(
            "no_room",
            f"{what} is not a room: switch to one (Ctrl+N, Alt+number), name one, or /join #room",
        ) from exc
