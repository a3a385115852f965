"""The client core: one TLS connection, its state, and events for a front end.

Front ends (line mode now, the full-screen UI later) see :class:`Event` objects
shaped like the ``--json`` contract in docs/client.md, and call
:meth:`ChatClient.request` to act. They know nothing of TLS or frames.

The connection is a :class:`~securechat.channel.Channel` owned by a private
:class:`~securechat.channel.IOLoop` thread, the only thread that touches the
socket; ``request`` queues frames into the channel's outbox. Events are
delivered from that I/O thread, in the order the server sent them.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .channel import Channel, IOLoop
from .errors import ChatError, ConnectionLost, SecureChatError
from .names import fold
from .protocol import Frame, encode
from .tls import describe_tls_error

__all__ = ["ChatClient", "Event"]

_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Event:
    """One thing to show the user: ``type`` and fields as in docs/client.md."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The event as its ``--json`` object."""
        return {"type": self.type, **self.data}


class ChatClient:
    """A logged-in connection to one server.

    ``connect()`` blocks until the client is logged in and in its first room,
    or raises: CertificateVerifyError or TLSError for TLS failures, ChatError
    when the server refuses the login, ConnectionLost when it cannot be reached.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        context: ssl.SSLContext,
        user: str,
        password: str | None,
        on_event: Callable[[Event], None],
        ping_interval: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self._context = context
        self._password = password
        self._on_event = on_event
        self._ping_interval = ping_interval
        self._lock = threading.Condition()
        self._rids = itertools.count(1)
        self._pending: set[int] = set()
        self._loop: IOLoop | None = None
        self._channel: Channel | None = None
        self._ready = False
        self._closed = False
        self._failure: SecureChatError | None = None
        self._bye_reason: str | None = None
        self.user = user
        self.tls_version = ""
        self.rooms: list[str] = []
        self.current_room: str | None = None
        self._partial: dict[int, list[Any]] = {}

    # -- for front ends ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection has ended."""
        with self._lock:
            return self._closed

    def connect(self, timeout: float = _CONNECT_TIMEOUT) -> None:
        """Connect, verify the server, log in and wait for the first room."""
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise ConnectionLost(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}; "
                "is the server running, and are --host and --port right?"
            ) from exc
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setblocking(False)
            tls = self._context.wrap_socket(
                raw, server_hostname=self.host, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise describe_tls_error(exc, host=self.host) from exc
        self._loop = IOLoop("client-io")
        self._channel = Channel(
            tls,
            self,
            peer=f"{self.host}:{self.port}",
            handshake_timeout=timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_interval,
        )
        self._channel.deadline_reason = "the server did not complete the TLS handshake in time"
        self._loop.start()
        self._loop.add(self._channel)
        with self._lock:
            ended = self._lock.wait_for(lambda: self._ready or self._closed, timeout + 5.0)
            failure = self._failure
        if failure is not None:
            self.close()
            raise failure
        if not ended or not self._ready:
            self.close()
            raise ConnectionLost(f"{self.host}:{self.port} did not log us in; try again later")

    def request(self, type_: str, fields: dict[str, Any] | None = None) -> int:
        """Send a request frame; returns its request id (``rid``)."""
        rid = next(self._rids)
        data = encode(type_, rid=rid, **(fields or {}))
        with self._lock:
            if self._closed or self._channel is None:
                raise ConnectionLost("not connected")
            self._pending.add(rid)
        self._channel.send(data)
        return rid

    def wait_for_reply(self, rid: int, timeout: float = 30.0) -> bool:
        """Wait until the server answered ``rid``; False on timeout or disconnect."""
        with self._lock:
            return (
                self._lock.wait_for(lambda: rid not in self._pending or self._closed, timeout)
                and rid not in self._pending
            )

    def wait_for_replies(self, timeout: float = 30.0) -> bool:
        """Wait until every request sent so far is answered; False on timeout or disconnect."""
        with self._lock:
            return (
                self._lock.wait_for(lambda: not self._pending or self._closed, timeout)
                and not self._pending
            )

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection has ended."""
        with self._lock:
            return self._lock.wait_for(lambda: self._closed, timeout)

    def quit(self, reason: str = "", timeout: float = 5.0) -> None:
        """Say goodbye and wait (briefly) for the server to close the connection."""
        try:
            self.request("quit", {"reason": reason} if reason else None)
        except ConnectionLost:
            pass
        self.wait_closed(timeout)
        self.close()

    def close(self) -> None:
        """Drop the connection at once and end the I/O thread."""
        if self._loop is not None:
            self._loop.stop()

    def show(self, event: Event) -> None:
        """Pass a locally made event (help text, usage errors) to the front end."""
        self._on_event(event)

    # -- channel callbacks (I/O thread) ----------------------------------------------

    def on_open(self, channel: Channel) -> None:
        """TLS is up: log in."""
        self.tls_version = channel.tls_version
        fields: dict[str, Any] = {"user": self.user}
        if self._password is not None:
            fields["password"] = self._password
        self.request("login", fields)

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """Update state from one server frame and turn it into events."""
        rid = frame.int_field("rid", optional=True)
        handler = _FRAME_HANDLERS.get(frame.type)
        if handler is not None:
            handler(self, frame)
        if rid is not None and frame.get("more") is not True:
            with self._lock:
                self._pending.discard(rid)
                self._lock.notify_all()

    def on_close(self, channel: Channel, reason: str) -> None:
        """The connection ended: record why, and tell the front end if it had started."""
        with self._lock:
            was_ready = self._ready
            if not was_ready and self._failure is None:
                if isinstance(channel.error, ssl.SSLError):
                    # Under TLS 1.3 a refused client certificate arrives after the
                    # handshake, as an alert on the first read: still a TLS failure.
                    self._failure = describe_tls_error(channel.error, host=self.host)
                else:
                    self._failure = ConnectionLost(f"connection closed during login: {reason}")
            self._closed = True
            self._lock.notify_all()
        if was_ready:
            self._emit("disconnected", reason=self._bye_reason or reason)

    # -- frame handlers ---------------------------------------------------------------

    def _emit(self, type_: str, **data: Any) -> None:
        # Absent and null mean the same on the wire; events leave nulls out.
        self._on_event(Event(type_, {k: v for k, v in data.items() if v is not None}))

    def _on_welcome(self, frame: Frame) -> None:
        self.user = frame.str_field("user")
        self._emit(
            "connected",
            user=self.user,
            server=f"{self.host}:{self.port}",
            tls_version=self.tls_version,
        )

    def _on_joined(self, frame: Frame) -> None:
        room = frame.str_field("room")
        listed = frame.get("users")
        users = [u for u in listed if isinstance(u, str)] if isinstance(listed, list) else None
        count = frame.get("count", len(users or ()))
        topic = frame.str_field("topic", optional=True)
        with self._lock:
            if fold(room) not in map(fold, self.rooms):
                self.rooms.append(room)
            self.current_room = room
            self._ready = True
            self._lock.notify_all()
        if users is not None:
            text = f"you joined {room} ({count} here: {', '.join(users)})"
        else:
            text = f"you joined {room} ({count} here; /who lists them)"
        if topic:
            text += f"; topic: {topic}"
        self._emit(
            "system", event="joined", room=room, text=text, users=users, count=count, topic=topic
        )

    def _on_parted(self, frame: Frame) -> None:
        room = frame.str_field("room")
        with self._lock:
            self.rooms = [r for r in self.rooms if fold(r) != fold(room)]
            if self.current_room is not None and fold(self.current_room) == fold(room):
                self.current_room = self.rooms[-1] if self.rooms else None
        now = f"; now in {self.current_room}" if self.current_room else "; /join a room to talk"
        self._emit("system", event="parted", room=room, text=f"you left {room}{now}")

    def _on_message(self, frame: Frame) -> None:
        self._emit(
            "message",
            id=frame.get("id"),
            ts=frame.get("ts"),
            room=frame.str_field("room"),
            **{"from": frame.str_field("from")},
            text=frame.str_field("text"),
        )

    def _on_private(self, frame: Frame) -> None:
        self._emit(
            "private",
            id=frame.get("id"),
            ts=frame.get("ts"),
            **{"from": frame.str_field("from")},
            to=frame.str_field("to"),
            text=frame.str_field("text"),
        )

    def _on_system(self, frame: Frame) -> None:
        data = {k: v for k, v in frame.fields.items() if k != "rid"}
        data["text"] = frame.str_field("text")
        self._on_event(Event("system", data))

    def _on_users(self, frame: Frame) -> None:
        users = self._gather(frame, "users")
        if users is not None:
            self._emit("users", room=frame.str_field("room"), users=users)

    def _on_rooms(self, frame: Frame) -> None:
        rooms = self._gather(frame, "rooms")
        if rooms is not None:
            self._emit("rooms", rooms=rooms)

    def _gather(self, frame: Frame, key: str) -> list[Any] | None:
        """Join a list the server split over frames (``more: true``); None until complete."""
        items = frame.get(key)
        part = items if isinstance(items, list) else []
        rid = frame.int_field("rid", optional=True)
        collected = self._partial.pop(rid, []) + part if rid is not None else part
        if frame.get("more") is True and rid is not None:
            self._partial[rid] = collected
            return None
        return collected

    def _on_topic(self, frame: Frame) -> None:
        room = frame.str_field("room")
        topic = frame.str_field("topic", optional=True)
        by = frame.str_field("by", optional=True)
        if by:
            text = (
                f"{by} set the topic of {room}: {topic}"
                if topic
                else f"{by} cleared the topic of {room}"
            )
        else:
            text = f"topic of {room}: {topic}" if topic else f"{room} has no topic"
        self._emit("system", event="topic", room=room, topic=topic, by=by or None, text=text)

    def _on_nick(self, frame: Frame) -> None:
        old, new = frame.str_field("old"), frame.str_field("new")
        if fold(old) == fold(self.user):
            self.user = new
        self._emit("system", event="nick", old=old, new=new, text=frame.str_field("text"))

    def _on_time(self, frame: Frame) -> None:
        ts = frame.str_field("ts")
        self._emit("system", event="time", ts=ts, text=f"server time is {ts}")

    def _on_error(self, frame: Frame) -> None:
        code, text = frame.str_field("code"), frame.str_field("text")
        with self._lock:
            if not self._ready and self._failure is None:
                self._failure = ChatError(code, text)
        self._emit("error", code=code, text=text)

    def _on_bye(self, frame: Frame) -> None:
        self._bye_reason = frame.str_field("reason", optional=True) or "server closed"


_FRAME_HANDLERS: dict[str, Callable[[ChatClient, Frame], None]] = {
    "welcome": ChatClient._on_welcome,
    "joined": ChatClient._on_joined,
    "parted": ChatClient._on_parted,
    "message": ChatClient._on_message,
    "private": ChatClient._on_private,
    "system": ChatClient._on_system,
    "users": ChatClient._on_users,
    "rooms": ChatClient._on_rooms,
    "topic": ChatClient._on_topic,
    "nick": ChatClient._on_nick,
    "time": ChatClient._on_time,
    "error": ChatClient._on_error,
    "bye": ChatClient._on_bye,
}
