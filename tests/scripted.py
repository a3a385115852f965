"""A real TLS server whose every frame the test writes: for client behaviour the
real server cannot show yet (protocol v2 fields) or only by chance (races).

Nothing is mocked: the client under test connects over TCP, verifies this
server's certificate and speaks frames to it; the test plays the server's side
of each connection with :class:`ScriptedPeer`.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from securechat.client.core import ChatClient, Event
from securechat.client.servers import ServerAddress
from securechat.tls import client_context
from securechat.wire.protocol import Decoder, Frame, encode
from tests.conftest import EVENT_TIMEOUT, Pki


class ScriptedPeer:
    """The server's end of one accepted TLS connection."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.decoder = Decoder()
        self.received: list[Frame] = []
        self.pings = 0

    def send(self, type_: str, **fields: Any) -> None:
        """Send one frame."""
        self.sock.sendall(encode(type_, **fields))

    def recv(self, timeout: float = EVENT_TIMEOUT) -> Frame | None:
        """The next frame (pings answered on the way), or None once the client closed."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                if frame.type == "ping":
                    self.pings += 1
                    self.send("pong")
                    continue
                self.received.append(frame)
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the client in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                return None
            if not data:
                return None
            self.decoder.feed(data)

    def expect(self, type_: str, timeout: float = EVENT_TIMEOUT) -> Frame:
        """Read until a frame of ``type_``."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise ConnectionError(f"client closed while we waited for {type_}")
            if frame.type == type_:
                return frame

    def greet_and_welcome(
        self, user: str = "alice", *, version: int = 1, join_general: bool = True, **welcome: Any
    ) -> Frame:
        """Play a server's login: hello, wait for login, welcome; v1 then puts the
        user in #general. Returns the client's login frame."""
        # "version 2" plays a 0.2 server: the frame encoding is the same, the features tell.
        features = ["chat"] if version < 2 else ["chat", "sessions", "offline", "read", "resume"]
        self.send("hello", server="scripted", version=1, features=features, auth="password")
        login = self.expect("login")
        self.send("welcome", rid=login.get("rid"), user=user, **welcome)
        if join_general:
            self.send("joined", room="#general", users=[user], count=1, topic="")
        return login

    def close(self) -> None:
        """Close the connection (the client sees the peer go away)."""
        try:
            self.sock.close()
        except OSError:
            pass


class ScriptedServer:
    """A TLS listener on 127.0.0.1 with the test's certificate; connections are
    accepted one at a time, when the test asks for them."""

    def __init__(self, pki: Pki) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(str(pki.server_pem), str(pki.server_key))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.peers: list[ScriptedPeer] = []

    def accept(self, timeout: float = EVENT_TIMEOUT) -> ScriptedPeer:
        """The next connection, TLS handshake done."""
        self._listener.settimeout(timeout)
        raw, _ = self._listener.accept()
        raw.settimeout(timeout)
        peer = ScriptedPeer(self._context.wrap_socket(raw, server_side=True))
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._listener.close()
        for peer in self.peers:
            peer.close()


class EventLog:
    """Events a ChatClient delivered, waited on by condition."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, type_: str, timeout: float = EVENT_TIMEOUT, **match: Any) -> dict[str, Any]:
        """The first event of ``type_`` whose fields include ``match`` (as a dict)."""

        def found() -> dict[str, Any] | None:
            for item in self.events:
                data = item.as_dict()
                if item.type == type_ and all(data.get(k) == v for k, v in match.items()):
                    return data
            return None

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"no {type_} {match}; saw {self.events}")
            result = found()
            assert result is not None
            return result

    def wait_for_count(self, type_: str, count: int, timeout: float = EVENT_TIMEOUT) -> None:
        """Wait until ``count`` events of ``type_`` have arrived."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: sum(e.type == type_ for e in self.events) >= count, timeout
            ):
                raise TimeoutError(f"fewer than {count} {type_}; saw {self.events}")

    def of(self, type_: str, **match: Any) -> list[dict[str, Any]]:
        """Every event so far of ``type_`` whose fields include ``match``."""
        with self._cond:
            return [
                e.as_dict()
                for e in self.events
                if e.type == type_ and all(e.as_dict().get(k) == v for k, v in match.items())
            ]


def start_client(
    pki: Pki, port: int, log: Callable[[Event], None], **options: Any
) -> tuple[ChatClient, threading.Thread]:
    """A ChatClient for alice connecting (on a thread, as connect() blocks) to ``port``."""
    client = ChatClient(
        servers=[ServerAddress("localhost", port)],
        context=client_context(ca=pki.ca_pem),
        user="alice",
        password="pw",
        on_event=log,
        **options,
    )
    thread = threading.Thread(target=client.connect, daemon=True)
    thread.start()
    return client, thread


def wait_until(condition: Callable[[], bool], what: str, timeout: float = EVENT_TIMEOUT) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def frames_of(peer: ScriptedPeer, type_: str) -> Iterator[Frame]:
    """The frames of ``type_`` the peer has received so far."""
    return (f for f in peer.received if f.type == type_)
