"""Line mode: the client for pipes, scripts and bots.

Each input line is a chat message to the current room or a /command; EOF sends
what is pending, waits for the server to acknowledge it, and quits cleanly.
Events are printed as readable lines, or with ``--json`` as one JSON object
per line (the contract in docs/client.md).
"""

from __future__ import annotations

import datetime
import json
import os
import selectors
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..client.account import SECRETS_NEED_A_TERMINAL, delete_confirmed
from ..client.commands import Local, parse_input
from ..client.core import ChatClient, Event
from ..client.events import users_text
from ..errors import ChatError, ConnectionLost, SecureChatError
from ..wire.sanitize import sanitize

__all__ = ["HumanPrinter", "JsonPrinter", "Printer", "execute_local", "run_line_mode"]

_REPLY_TIMEOUT = 30.0
"""How long EOF waits for the server to acknowledge what was sent."""

_MAX_LINE_BYTES = 64 * 1024
"""Input beyond this without a newline is handed on (and refused as too long)."""


class Printer:
    """Writes events to a stream, one line each, safely from any thread."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.on_broken: Callable[[], None] | None = None
        """Called once if the reader of our output goes away (a closed pipe)."""
        self.on_printed: Callable[[Event], None] | None = None
        """Called after each event is written (line mode marks messages read)."""
        self._broken = False

    def emit(self, event: Event) -> None:
        """Print one event."""
        text = self.format(event)
        with self._lock:
            if self._broken:
                return
            try:
                self._out.write(text + "\n")
                self._out.flush()
                printed = True
            except BrokenPipeError:
                printed = False
                self._broken = True
                # Nobody reads us any more: stop, without a traceback at exit.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._out.fileno())
                os.close(devnull)
                if self.on_broken is not None:
                    self.on_broken()
        if printed and self.on_printed is not None:
            self.on_printed(event)

    def format(self, event: Event) -> str:
        """The line for ``event``."""
        raise NotImplementedError


class JsonPrinter(Printer):
    """One JSON object per line; JSON escaping makes it terminal-safe already."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out)
        # Raw UTF-8 where the stream takes it; \u escapes (still valid JSON) where not.
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self._ascii = encoding != "utf8"

    def format(self, event: Event) -> str:
        """``event`` as compact JSON."""
        return json.dumps(event.as_dict(), ensure_ascii=self._ascii, separators=(",", ":"))


class HumanPrinter(Printer):
    """``[14:02:31] <alice> hi``: local time, everything from the network sanitised."""

    def __init__(self, out: IO[str], client: ChatClient | None = None) -> None:
        super().__init__(out)
        self.client = client

    def format(self, event: Event) -> str:
        """``event`` as a line a person reads."""
        d = event.data
        stamp = _local_time(d.get("ts"))
        s = {k: sanitize(v) if isinstance(v, str) else v for k, v in d.items()}
        me = self.client.user if self.client else ""
        current = self.client.current_room if self.client else None
        if d.get("history"):
            stamp = _local_time(d.get("ts"), with_date=True)
        if event.type in ("message", "private") and d.get("action"):  # /me
            s["text"] = f"* {s['from']} {s['text']}"
        if event.type == "message":
            where = "" if current == d.get("room") else f"{s['room']} "
            sender = "" if d.get("action") else f"<{s['from']}> "
            return f"[{stamp}] {where}{sender}{s['text']}"
        if event.type == "private":
            if d.get("from") == me:
                return f"[{stamp}] -> *{s['to']}* {s['text']}"
            return f"[{stamp}] *{s['from']}* {s['text']}"
        if event.type == "users":
            names = sanitize(users_text(d.get("users", []), d.get("away")))
            where = f"in {s['room']}" if d.get("room") else "online"
            return f"[{stamp}] -- {where}: {names}"
        if event.type == "rooms":
            rooms = [_room_line(r) for r in d.get("rooms", []) if isinstance(r, dict)]
            return f"[{stamp}] -- rooms: " + ("; ".join(rooms) if rooms else "none")
        if event.type == "error":
            return f"[{stamp}] !! {s['text']}"
        if event.type == "files":
            items = [_transfer_line(t) for t in d.get("transfers", []) if isinstance(t, dict)]
            return f"[{stamp}] -- transfers: " + ("; ".join(items) if items else "none")
        if event.type == "sessions":
            items = [_session_line(x) for x in d.get("sessions", []) if isinstance(x, dict)]
            return f"[{stamp}] -- sessions: " + ("; ".join(items) if items else "none")
        if event.type == "unread":
            items = [_unread_line(x) for x in [*d.get("rooms", []), *d.get("users", [])]]
            return f"[{stamp}] -- unread: " + ("; ".join(items) if items else "nothing")
        if event.type == "connected":
            return f"[{stamp}] -- connected to {s['server']} as {s['user']} ({s['tls_version']})"
        if event.type == "disconnected":
            return f"[{stamp}] -- disconnected: {s['reason']}"
        return f"[{stamp}] -- {s.get('text', '')}"


def _transfer_line(item: dict[str, Any]) -> str:
    arrow = "to" if item.get("direction") == "send" else "from"
    return (
        f"#{item.get('id')} {sanitize(str(item.get('name')))} {arrow} "
        f"{sanitize(str(item.get('peer')))} ({item.get('state')}, "
        f"{item.get('bytes')}/{item.get('size')} bytes)"
    )


def _session_line(item: dict[str, Any]) -> str:
    this = " (this one)" if item.get("current") is True else ""
    peer, since = sanitize(str(item.get("peer", ""))), sanitize(str(item.get("since", "")))
    web = " (web)" if item.get("web") is True else ""
    return f"#{item.get('session')} {peer}{web} since {since}{this}"


def _unread_line(item: Any) -> str:
    if not isinstance(item, dict):
        return "?"
    where = sanitize(str(item.get("room") or item.get("user") or ""))
    return f"{where} {item.get('unread')} (from message {item.get('first')})"


def _room_line(room: dict[str, Any]) -> str:
    line = f"{sanitize(str(room.get('name', '')))} ({room.get('users', 0)})"
    topic = room.get("topic")
    return f"{line} {sanitize(topic)}" if isinstance(topic, str) and topic else line


def _local_time(ts: Any, *, with_date: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    if isinstance(ts, str):
        try:
            when = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
            return when.astimezone().strftime(fmt)
        except ValueError:
            pass
    return datetime.datetime.now().strftime(fmt)


def run_line_mode(client: ChatClient, fd: int) -> int:
    """Feed input lines from file descriptor ``fd`` to ``client`` until EOF, /quit or
    disconnect; returns the exit status."""
    for raw in _input_lines(fd, client):
        quit_reason = _handle_line(client, raw)
        if quit_reason is not None:
            client.wait_for_replies(_REPLY_TIMEOUT)
            client.quit(quit_reason)
            return 0
    if not client.connected and not client.waiting:
        client.close()  # gone for good, or mid-reconnect with nothing left to send
        return 1
    client.wait_for_transfers()
    answered = client.wait_for_replies(_REPLY_TIMEOUT)
    if not client.connected:
        client.close()  # still reconnecting: what was typed meanwhile is lost
        return 1
    if not answered and not client.closed:
        client.show(
            Event(
                "error",
                {
                    "code": "timeout",
                    "text": "the server did not confirm everything sent; some may be lost",
                },
            )
        )
    client.quit()
    return 0


def _input_lines(fd: int, client: ChatClient) -> Iterator[bytes]:
    """Lines read from ``fd`` until EOF, or until the connection ends.

    Read in this thread with a selector, not in a helper thread: a disconnect must
    end the loop even while the user is idle at the prompt, and a thread blocked
    in read() would abort the interpreter at exit.
    """
    buf = b""
    skipping = False  # inside an overlong line whose start was already refused
    selector = selectors.DefaultSelector()
    try:
        selector.register(fd, selectors.EVENT_READ)
        pollable = True
    except (PermissionError, ValueError):
        pollable = False  # a regular file: reads never block
    try:
        while not client.closed:
            if pollable and not selector.select(0.2):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if lines and skipping:
                lines.pop(0)  # the tail of the overlong line: never sent on its own
                skipping = False
            yield from lines
            if len(buf) > _MAX_LINE_BYTES:
                if not skipping:
                    yield buf  # refused as too long, rather than buffered forever
                skipping = True
                buf = b""
        if buf and not skipping and not client.closed:
            yield buf
    finally:
        selector.close()


_FILE_ACTIONS = frozenset({"sendfile", "accept", "reject", "cancel", "files"})


def _file_action(client: ChatClient, action: Local) -> None:
    try:
        if action.kind == "sendfile":
            client.send_file(action.target, Path(action.arg).expanduser())
        elif action.kind == "accept":
            client.accept_file(action.number)
        elif action.kind == "reject":
            client.reject_file(action.number)
        elif action.kind == "cancel":
            client.cancel_file(action.number)
        else:
            client.show(Event("files", {"transfers": client.transfers()}))
    except ChatError as exc:
        client.show(Event("error", {"code": exc.code, "text": exc.text}))
    except ConnectionLost as exc:
        client.show(Event("error", {"code": "not_connected", "text": str(exc)}))


def _export(client: ChatClient, path: str) -> None:
    try:
        count = client.export(Path(path).expanduser())
    except (OSError, SecureChatError) as exc:
        client.show(Event("error", {"code": "export", "text": f"export to {path} failed: {exc}"}))
        return
    client.show(
        Event(
            "system",
            {
                "event": "export",
                "path": path,
                "count": count,
                "text": f"exported {count} messages to {path}",
            },
        )
    )


def _account_action(client: ChatClient, action: Local) -> None:
    """``/password`` (refused: nothing here can ask without echo) or ``/account delete``
    confirmed by the user's own name."""
    try:
        if action.kind == "password":
            raise ChatError("needs_terminal", SECRETS_NEED_A_TERMINAL)
        request = delete_confirmed(action.target, client.user)
        client.request(request.type, request.fields)
    except ChatError as exc:
        client.show(Event("error", {"code": exc.code, "text": exc.text}))
    except ConnectionLost as exc:
        client.show(Event("error", {"code": "not_connected", "text": str(exc)}))


# What the full-screen client's buffer commands mean in line mode, which has no buffers.
_SCREEN_ACTIONS = {
    "query": "line mode shows every conversation in one stream: /msg NAME text sends to NAME",
    "clear": "line mode has no buffer to clear",
}


def execute_local(client: ChatClient, action: Local) -> None:
    """Carry out a local action other than ``quit``: help, export, a file action, or
    one for the account (without asking: see :mod:`securechat.client.account`).

    Results and failures are shown as events through the client. This blocks
    while it works (export pages through the server, ``sendfile`` hashes the file).
    """
    if action.kind == "export":
        _export(client, action.arg)
    elif action.kind in _FILE_ACTIONS:
        _file_action(client, action)
    elif action.kind in ("password", "account_delete"):
        _account_action(client, action)
    elif action.kind in _SCREEN_ACTIONS:
        client.show(Event("system", {"event": "help", "text": _SCREEN_ACTIONS[action.kind]}))
    else:
        for text in action.lines:
            client.show(Event("system", {"event": "help", "text": text}))


def _handle_line(client: ChatClient, raw: bytes) -> str | None:
    """Act on one input line; the quit reason if the user asked to quit."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        client.show(
            Event(
                "error",
                {"code": "bad_text", "text": "input line is not valid UTF-8; nothing was sent"},
            )
        )
        return None
    if not line.strip():
        return None
    try:
        action = parse_input(line, current_room=client.current_room)
    except ChatError as exc:
        client.show(Event("error", {"code": exc.code, "text": exc.text}))
        return None
    if isinstance(action, Local):
        if action.kind == "quit":
            return action.arg
        execute_local(client, action)
        return None
    try:
        rid = client.request(action.type, action.fields)
    except ConnectionLost:
        return None
    except ChatError as exc:  # too much kept while reconnecting
        client.show(Event("error", {"code": exc.code, "text": exc.text}))
        return None
    if action.waits:
        client.wait_for_reply(rid, _REPLY_TIMEOUT)
    return None
