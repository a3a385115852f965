"""The client's /commands: one table drives parsing, /help and the README check.

Parsing turns a line the user typed into a :class:`Request` (a frame to send)
or a :class:`Local` action; usage mistakes raise ChatError with a hint.
"""

from __future__ import annotations

from typing import Any

from ..errors import ChatError
from ..wire.names import (
    MAX_AWAY_CHARS,
    MAX_TOPIC_CHARS,
    check_room_name,
    check_text,
    check_user_name,
)
from .actions import Command, Local, Request
from .moderation_commands import MODERATION_COMMANDS, parse_moderation

__all__ = [
    "COMMANDS",
    "MAX_HISTORY_REQUEST",
    "Command",
    "Local",
    "Request",
    "help_lines",
    "parse_input",
]

MAX_HISTORY_REQUEST = 500
"""The most messages one /history asks for (the server's page limit)."""


COMMANDS: tuple[Command, ...] = (
    Command("join", "/join #room", "join a room (creating it if new) and make it current"),
    Command("j", "/j #room", "short for /join"),
    Command("part", "/part [#room]", "leave a room (default: the current one)"),
    Command("rooms", "/rooms", "list rooms with their user counts and topics"),
    Command("who", "/who [#room]", "list the users in a room (default: the current one)"),
    Command("names", "/names [#room]", "short for /who"),
    Command("list", "/list", "list everyone online on the server, and who of them is away"),
    Command("topic", "/topic [text]", "show the current room's topic, or set it to text"),
    Command(
        "msg",
        "/msg NAME text",
        "send a private message only NAME will see (the current buffer stays current)",
    ),
    Command(
        "query",
        "/query NAME [text]",
        "open the private conversation with NAME and switch to it; text is sent there",
    ),
    Command("me", "/me action", "send an action, shown to everyone as '* you action'"),
    Command(
        "away",
        "/away [text]",
        "mark yourself away with text (shown in /who, /list and to whoever messages you); "
        "without text, back again",
    ),
    Command("close", "/close", "close the current conversation, or leave the current room"),
    Command("clear", "/clear", "clear the current buffer's screen (stored history stays)"),
    Command("nick", "/nick NEW", "rename your account to NEW, if nobody has that name"),
    Command("time", "/time", "show the server's time (UTC)"),
    Command(
        "history",
        "/history [#room|NAME] [N]",
        "the last N (default 50, at most 500) messages of the current room, a room, or "
        "your conversation with NAME",
    ),
    Command("history before", "/history before ID [N]", "the N messages before message ID"),
    Command("history after", "/history after ID [N]", "the N messages after message ID"),
    Command("history search", "/history search WORDS", "your visible messages with all WORDS"),
    Command("history off", "/history off", "stop storing what you send (others still get it)"),
    Command("history on", "/history on", "store what you send again"),
    Command("history status", "/history status", "what is stored about you, and for how long"),
    Command("history forget", "/history forget", "erase every stored message you sent"),
    Command("history export", "/history export FILE", "save your stored messages as JSON Lines"),
    Command(
        "history unread",
        "/history unread",
        "the rooms and conversations with messages you have not read yet",
    ),
    Command("nolog", "/nolog text", "send one message to the room that is never stored"),
    Command(
        "sendfile",
        "/sendfile NAME PATH",
        "offer a file to NAME; it moves inside this encrypted connection, SHA-256 verified",
    ),
    Command("accept", "/accept ID", "accept file offer ID (resumes a broken transfer)"),
    Command("reject", "/reject ID", "decline file offer ID"),
    Command("files", "/files", "list pending and active file transfers"),
    Command("cancel", "/cancel ID", "stop file transfer ID (either side)"),
    Command("sessions", "/sessions", "list where your account is logged in now"),
    Command("sessions close", "/sessions close N", "log out session N (as /sessions numbers them)"),
    Command(
        "password",
        "/password",
        "change your password: asks for the old one, then the new one twice (full-screen client)",
    ),
    Command(
        "account delete",
        "/account delete [NAME]",
        "delete your account: erases every message you sent and ends your sessions; asks "
        "first (NAME, your own name, confirms without asking)",
    ),
    Command(
        "kick",
        "/kick [#room] NAME [reason]",
        "disconnect every session of NAME (moderators), or remove NAME from #room (its operators)",
    ),
    Command(
        "ban",
        "/ban NAME [duration] [reason]",
        "refuse NAME's logins for duration (10m, 2h, 7d; default until /unban) and "
        "disconnect it now (moderators)",
    ),
    Command(
        "ban --ip",
        "/ban --ip ADDR|CIDR [duration] [reason]",
        "refuse connections from an address or network (moderators)",
    ),
    Command("unban", "/unban NAME|ADDR", "lift a ban on an account or an address (moderators)"),
    Command("bans", "/bans", "list the bans in force (moderators)"),
    Command(
        "mute",
        "/mute NAME [duration]",
        "silence NAME in the current room, for duration or until /unmute (its operators)",
    ),
    Command("unmute", "/unmute NAME", "let NAME speak in the current room again"),
    Command(
        "topic lock",
        "/topic lock|unlock",
        "let only the current room's operators set its topic, or everyone again",
    ),
    Command(
        "room invite-only",
        "/room invite-only on|off",
        "make the current room invite-only, or open to all again (its operators)",
    ),
    Command(
        "invite",
        "/invite NAME",
        "let NAME join the current invite-only room, and tell them (its operators)",
    ),
    Command(
        "stats",
        "/stats",
        "the server's uptime, sessions, messages per second, store size and refusals (moderators)",
    ),
    Command("help", "/help [command]", "list the commands, or explain one"),
    Command("quit", "/quit [reason]", "leave the chat"),
)

_BY_NAME = {c.name: c for c in COMMANDS}
_WORDS = frozenset(c.name.split()[0] for c in COMMANDS)

_DEFAULT_HISTORY = 50


def help_lines(topic: str = "") -> tuple[str, ...]:
    """The /help text: every command, or one command in detail."""
    if topic:
        wanted = " ".join(topic.lstrip("/").lower().split())
        found = [c for c in COMMANDS if c.name == wanted or c.name.startswith(wanted + " ")]
        if not found:
            raise ChatError("unknown_command", f"no command /{wanted}: /help lists them")
        return tuple(f"{c.usage}  {c.help}" for c in found)
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
    if name not in _WORDS:
        raise ChatError("unknown_command", f"unknown command /{word}: /help lists the commands")
    if name == "help":
        return Local("help", help_lines(rest))
    if name == "quit":
        return Local("quit", arg=rest)
    if name == "history":
        return _parse_history(rest, current_room)
    if name == "sessions":
        return _parse_sessions(rest)
    if name == "sendfile":
        target, _, path = rest.partition(" ")
        if not target or not path.strip():
            raise ChatError("usage", f"usage: {_BY_NAME['sendfile'].usage}")
        return Local("sendfile", target=check_user_name(target), arg=path.strip())
    if name in ("accept", "reject", "cancel"):
        if not rest.isdigit():
            raise ChatError("usage", f"usage: {_BY_NAME[name].usage} (/files lists the ids)")
        return Local(name, number=int(rest))
    if name == "files":
        return Local("files")
    if name == "clear":
        return Local("clear")
    if name == "query":
        return _parse_query(rest)
    if name == "me":
        text = check_text(rest)
        return Request("say", {"room": _need_room(current_room), "text": text, "action": True})
    if name == "away":
        if not rest:
            return Request("away")
        return Request("away", {"text": check_text(rest, limit=MAX_AWAY_CHARS, what="away text")})
    if name == "close":
        return Request("part", {"room": _need_room(current_room)}, waits=True)
    if name == "list":
        return Request("who")
    if name == "nolog":
        text = check_text(rest)
        return Request("say", {"room": _need_room(current_room), "text": text, "nolog": True})
    if name in ("join", "j"):
        return Request("join", {"room": check_room_name(_one_arg(name, rest))}, waits=True)
    if name == "part":
        room = check_room_name(rest) if rest else _need_room(current_room)
        return Request("part", {"room": room}, waits=True)
    if name == "rooms":
        return Request("rooms")
    if name in ("who", "names"):
        return Request("who", {"room": check_room_name(rest) if rest else _need_room(current_room)})
    if name in MODERATION_COMMANDS:
        return parse_moderation(
            name, rest, current_room=current_room, usage=lambda c: _BY_NAME[c].usage
        )
    if name == "topic" and rest.lower() in ("lock", "unlock"):
        locked = rest.lower() == "lock"
        return Request("room_mode", {"room": _need_room(current_room), "topic_locked": locked})
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


def _parse_history(rest: str, current_room: str | None) -> Request | Local:
    words = rest.split()
    head = words[0].lower() if words else ""
    if head in ("off", "on") and len(words) == 1:
        return Request("history_mode", {"keep": head == "on"})
    if head == "unread" and len(words) == 1:
        return Request("unread")
    if head in ("status", "forget") and len(words) == 1:
        return Request(f"history_{head}" if head == "status" else "forget")
    if head == "search":
        if len(words) < 2:
            raise ChatError("usage", f"usage: {_BY_NAME['history search'].usage}")
        return Request("search", {"text": " ".join(words[1:])})
    if head == "export":
        if len(words) != 2:
            raise ChatError("usage", f"usage: {_BY_NAME['history export'].usage}")
        return Local("export", arg=words[1])
    fields: dict[str, Any] = {}
    if head in ("before", "after"):
        if len(words) not in (2, 3) or not words[1].isdigit():
            raise ChatError("usage", f"usage: {_BY_NAME['history ' + head].usage}")
        fields[head] = int(words[1])
        words = words[2:]
    elif words and not words[0].isdigit():
        target = words.pop(0)
        if target.startswith("#"):
            fields["room"] = check_room_name(target)
        else:
            fields["user"] = check_user_name(target)
    if "room" not in fields and "user" not in fields:
        fields["room"] = _need_room(current_room)
    if len(words) > 1 or (words and not words[0].isdigit()):
        raise ChatError("usage", f"usage: {_BY_NAME['history'].usage}")
    fields["limit"] = int(words[0]) if words else _DEFAULT_HISTORY
    if not 1 <= fields["limit"] <= MAX_HISTORY_REQUEST:
        raise ChatError("usage", f"ask for 1 to {MAX_HISTORY_REQUEST} messages")
    return Request("history", fields)


def _parse_query(rest: str) -> Request | Local:
    target, _, text = rest.partition(" ")
    if not target:
        raise ChatError("usage", f"usage: {_BY_NAME['query'].usage}")
    name = check_user_name(target)
    if not text.strip():
        return Local("query", target=name)
    return Request("msg", {"to": name, "text": check_text(text.lstrip(" "))})


def _parse_sessions(rest: str) -> Request:
    words = rest.split()
    if not words:
        return Request("sessions")
    if len(words) == 2 and words[0].lower() == "close" and words[1].isdigit():
        return Request("session_close", {"session": int(words[1])})
    raise ChatError(
        "usage", f"usage: {_BY_NAME['sessions'].usage} or {_BY_NAME['sessions close'].usage}"
    )


def _one_arg(name: str, rest: str) -> str:
    if not rest or " " in rest:
        raise ChatError("usage", f"usage: {_BY_NAME[name].usage}")
    return rest


def _need_room(current_room: str | None) -> str:
    if current_room is None:
        raise ChatError("no_room", "you are not in any room: /join #room first")
    return current_room
