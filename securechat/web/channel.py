"""A channel that serves browsers: the web client's files over HTTPS, then chat over WebSocket.

Theory of operation
-------------------
A :class:`WebChannel` is a :class:`~securechat.channel.Channel`: one I/O loop
thread owns its TLS socket and does every read, write and close, exactly as for
a terminal client. Only what lies between TLS and the frame decoder differs.

1. After the TLS handshake the peer speaks HTTP/1.1, parsed by h11 (sans-I/O:
   bytes in, events out). ``GET`` of the page or one of its files is answered
   from the :class:`~securechat.web.site.Site` held in memory; the connection
   stays open for the next request (one at a time: a pipelined request waits
   until the previous answer is handed to OpenSSL, so at most one answer is
   ever buffered). Each request must arrive whole within the handshake timeout
   of the handshake or the previous answer, as the handshake itself must.
2. ``GET /ws`` with a WebSocket upgrade, from the server's own origin
   (``Origin`` equal to ``https://`` plus the ``Host`` the browser asked),
   switches the connection to wsproto. From then on every binary WebSocket
   message carries whole protocol frames, the very bytes a TCP client
   exchanges (docs/protocol.md §19), and the channel is a chat connection like
   any other: the handler opens a hub session and sends ``hello``, and every
   budget, limit and deadline applies unchanged. Outgoing, each batch the
   outbox hands over becomes one binary message; incoming, message data feeds
   the same :class:`~securechat.wire.protocol.Decoder`. A text message is a
   protocol error, answered like any other.

Nothing here takes a lock or blocks: the HTTP answers are bytes already in
memory, and everything else is the base channel's.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError as WebSocketError

from ..channel import PROTOCOL_ERROR, WRITE_CHUNK, Channel, ChannelHandler
from ..errors import ProtocolError
from .site import SECURITY_HEADERS, WEBSOCKET_PATH, Response, Site, error_response

__all__ = [
    "MAX_CONTROL_BACKLOG",
    "MAX_PIPELINED",
    "MAX_REQUESTS",
    "MAX_REQUEST_HEAD",
    "REQUEST_TIMEOUT",
    "WebChannel",
]

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8 * 1024
"""Bytes of request line and headers: a browser's request for the page is under 1 KiB
(there are no cookies), so this leaves room and still refuses a header flood early."""

REQUEST_TIMEOUT = 10.0
"""Seconds a browser gets to send a whole request, from the handshake or the previous
answer, unless told otherwise (the server passes its TLS handshake timeout, so a slow or
half-open request costs no more than a slow handshake)."""

MAX_REQUESTS = 100
"""Requests served on one connection before it is closed (the page has a dozen files)."""

MAX_PIPELINED = 4 * MAX_REQUEST_HEAD
"""Bytes of requests held while an earlier answer waits to be sent (browsers do not
pipeline; this is room for a few requests, not a way to make us buffer more)."""

MAX_CONTROL_BACKLOG = 64 * 1024
"""Bytes of WebSocket control answers (pongs) waiting for a peer that does not read
them; a browser pings rarely if ever, so more than this is a flood."""

_NORMAL_CLOSE = 1000
_GOING_AWAY = 1001


class WebChannel(Channel):
    """One browser's connection: HTTP first, then the chat protocol over WebSocket."""

    def __init__(
        self,
        sock: ssl.SSLSocket,
        handler: ChannelHandler,
        *,
        site: Site,
        request_timeout: float = REQUEST_TIMEOUT,
        on_handshake: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(sock, handler, **options)
        self._site = site
        self._request_timeout = request_timeout
        self._on_handshake = on_handshake
        self._http: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD
        )
        self._ws: WSConnection | None = None
        self._raw = bytearray()  # what HTTP or WebSocket itself must send, before any frame
        self._requests = 0

    # -- hooks of the base channel (owner thread only) ---------------------------

    def _tls_up(self) -> None:
        if self._on_handshake is not None:
            # Not a handshake any more for the caps, though the handler opens only at the
            # upgrade: a browser fetching the page must not hold a handshake slot meanwhile.
            self._on_handshake()
        self._await_request()

    def _received(self, data: bytes) -> None:
        if self._ws is not None:
            self._websocket_received(data)
        elif self._http is not None:
            self._http.receive_data(data)
            self._serve()
            if self._http is not None and len(self._http.trailing_data[0]) > MAX_PIPELINED:
                # Requests piling up behind an answer the peer does not read.
                self._abort(f"too slow: {MAX_PIPELINED} bytes of requests waiting")

    def _next_output(self) -> bytes:
        if not self._raw and self._http is not None:
            self._serve()  # the previous answer is on its way: on to the next request
        if self._raw:
            data = bytes(self._raw)
            self._raw.clear()
            return data
        if self._ws is None or self._ws.state is not ConnectionState.OPEN:
            # Closing: frames queued behind the close (the answer to a request that
            # came just before it) have nowhere to go and are dropped.
            return b""
        frames = self.outbox.take(WRITE_CHUNK)
        return self._ws.send(BytesMessage(data=frames)) if frames else b""

    def _farewell(self, reason: str) -> bytes:
        if self._ws is None or self._ws.state is not ConnectionState.OPEN:
            return b""
        code = _GOING_AWAY if reason.startswith("server shutting down") else _NORMAL_CLOSE
        # The reason is cut to fit a control frame (123 bytes) by wsproto.
        return self._ws.send(CloseConnection(code=code, reason=reason))

    # -- HTTP -------------------------------------------------------------------

    def _await_request(self) -> None:
        self.deadline = time.monotonic() + self._request_timeout
        self.deadline_reason = f"HTTP request not completed within {self._request_timeout:g} s"

    def _serve(self) -> None:
        """Answer the next buffered request, if the previous answer has left."""
        http = self._http
        while http is not None and not self._raw and self.outbox.close_reason is None:
            if http.our_state is h11.DONE and http.their_state is h11.DONE:
                http.start_next_cycle()
                self._await_request()
            if h11.MUST_CLOSE in (http.our_state, http.their_state) or http.their_state in (
                h11.CLOSED,
                h11.ERROR,
            ):
                self.close("HTTP connection done")
                return
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                answer = error_response(exc.error_status_hint, f"bad request: {exc}")
                self._answer(answer, close=True)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            # EndOfMessage needs no answer: the request was answered when it arrived.

    def _on_request(self, request: h11.Request) -> None:
        self._requests += 1
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        headers = _header_map(request.headers)
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            self._answer(error_response(413, "requests with a body are not accepted"), close=True)
        elif target.partition("?")[0] == WEBSOCKET_PATH:
            self._upgrade(request, headers)
        else:
            self._answer(
                self._site.respond(method, target),
                close=self._requests >= MAX_REQUESTS,
                head=method == "HEAD",
            )
        log.debug("%s: %s %s", self.peer, method, target)

    def _answer(self, response: Response, *, close: bool = False, head: bool = False) -> None:
        """Queue ``response`` with the security headers; ``close`` ends the connection after
        it, ``head`` leaves out the body (the answer to a HEAD request)."""
        assert self._http is not None
        headers = [*SECURITY_HEADERS, *response.headers]
        if close:
            headers.append(("Connection", "close"))
        status = response.status
        try:
            data = self._http.send(
                h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)
            )
            if response.body and not head:
                data += self._http.send(h11.Data(data=response.body))
            data += self._http.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # The request was too broken to answer (h11 knows no state to answer it in).
            self.close("bad HTTP request")
            return
        assert data is not None
        self._raw += data
        if response.status < 400:
            self.routine_close = True  # a browser done with its files; nothing to report

    def _upgrade(self, request: h11.Request, headers: dict[str, str]) -> None:
        host = headers.get("host", "")
        origin = headers.get("origin", "")
        if "websocket" not in headers.get("upgrade", "").lower():
            self._answer(
                error_response(426, "this address takes WebSocket connections only",
                               (("Upgrade", "websocket"),)),
                close=True,
            )
            return
        if not host or origin.lower() != f"https://{host.lower()}":
            # Another site's page may not drive a logged-in chat from a visitor's browser.
            log.warning("%s: WebSocket from origin %r refused (host %r)", self.peer, origin, host)
            self._answer(
                error_response(403, f"WebSocket connections are only accepted from https://{host}"),
                close=True,
            )
            return
        assert self._http is not None
        leftover = self._http.trailing_data[0]
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            if not any(isinstance(event, Request) for event in ws.events()):
                raise WebSocketError("no WebSocket request")
            # No extensions: compressing secrets next to attacker-chosen text leaks them.
            accept = ws.send(AcceptConnection())
        except WebSocketError as exc:
            self._answer(error_response(400, f"bad WebSocket request: {exc}"), close=True)
            return
        self._raw += accept
        self._http = None
        self._ws = ws
        self.routine_close = False  # from here on it is a chat session, closed as one
        self.deadline = None  # the handler sets the login deadline
        self._open_stream()
        if leftover and self.outbox.close_reason is None:
            # Frames sent before our answer arrived: legal for a script, never for a browser.
            try:
                self._websocket_received(bytes(leftover))
            except ProtocolError as exc:
                self._refuse(f"{PROTOCOL_ERROR}: {exc}")

    # -- WebSocket --------------------------------------------------------------

    def _websocket_received(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        if ws.state is not ConnectionState.OPEN:
            return  # closing: what the peer still sends is not read
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, BytesMessage):
                self._feed_frames(bytes(event.data))
                if self.outbox.close_reason is not None:
                    return
            elif isinstance(event, TextMessage):
                raise ProtocolError(
                    "a text WebSocket message: the frames travel in binary messages"
                )
            elif isinstance(event, Ping):
                if len(self._raw) > MAX_CONTROL_BACKLOG:
                    # Pings from a peer that does not read its pongs: the same as a full
                    # outbox (channel.py), and no buffer may grow without a bound.
                    self._abort(f"too slow: {len(self._raw)} bytes of pongs not read")
                    return
                self._raw += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if _state(ws) is ConnectionState.REMOTE_CLOSING:  # not if the frame was bad
                    self._raw += ws.send(event.response())
                reason = "peer closed the connection"
                if event.code not in (_NORMAL_CLOSE, _GOING_AWAY):
                    reason = f"WebSocket closed by the peer: {event.code} {event.reason}".strip()
                self.close(reason)
                return


def _state(ws: WSConnection) -> ConnectionState:
    """The connection's state, read afresh (mypy narrows the property across events)."""
    return ws.state


def _header_map(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name; repeated ones joined as HTTP allows."""
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("ascii", "replace").lower()
        text = value.decode("latin-1")
        found[key] = f"{found[key]}, {text}" if key in found else text
    return found
