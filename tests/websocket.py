"""A chat client over the web port's WebSocket, for tests that craft frames as a browser would.

It is a :class:`~tests.conftest.RawClient` whose bytes travel in binary WebSocket
messages (wsproto over a real TLS socket), so every frame-level test can run
unchanged over both transports.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from securechat.wire.protocol import Decoder
from tests.conftest import EVENT_TIMEOUT, RawClient


class WebSocketRefused(Exception):
    """The server answered the upgrade with an HTTP error."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body.decode('utf-8', 'replace').strip()}")
        self.status = status
        self.body = body


def tls_connect(port: int, ca_pem: Path) -> ssl.SSLSocket:
    """A TLS connection to localhost:``port`` that checks the server's certificate."""
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    raw = socket.create_connection(("127.0.0.1", port), timeout=EVENT_TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="localhost")


class WebSocketClient(RawClient):
    """A protocol client speaking through ``wss://localhost:PORT/ws``."""

    def __init__(
        self,
        port: int,
        ca_pem: Path,
        *,
        origin: str | None = None,
        host: str | None = None,
        expect_hello: bool = True,
    ) -> None:
        self.sock = tls_connect(port, ca_pem)
        self.decoder = Decoder()
        self.frames = []
        self.rid = 0
        self.close_code: int | None = None
        """The WebSocket close code the server sent, once it has."""
        self.ws = WSConnection(ConnectionType.CLIENT)
        host = host or f"localhost:{port}"
        origin = origin if origin is not None else f"https://{host}"
        extra = [("Origin", origin)] if origin else []
        self.sock.sendall(self.ws.send(Request(host=host, target="/ws", extra_headers=extra)))
        self._pending = bytearray()
        self._await_accept()
        if expect_hello:
            self.hello = self.expect("hello")

    def _await_accept(self) -> None:
        status = 0
        body = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise WebSocketRefused(status, body)
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise WebSocketRefused(status, body)
                elif isinstance(event, BytesMessage):
                    self._pending += event.data

    def send_raw(self, data: bytes) -> None:
        """Send ``data`` as one binary WebSocket message."""
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def send_text(self, text: str) -> None:
        """Send a text message, which the protocol does not use."""
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def receive_bytes(self) -> bytes:
        """The data of the next binary messages; b"" once the server has closed."""
        while not self._pending:
            data = self.sock.recv(65536)
            if not data:
                return b""
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    self._pending += event.data
                elif isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    self.sock.sendall(self.ws.send(event.response()))
                    return bytes(self._pending)
        data = bytes(self._pending)
        self._pending.clear()
        return data
