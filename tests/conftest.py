"""Shared fixtures: a trustme CA, real servers on 127.0.0.1, raw and process clients.

Nothing here mocks the network, ssl or a database: servers listen on real TLS
sockets, clients are real sockets or real ``securechat-client`` processes, every
SQLite database is a real file in a temporary directory, and PostgreSQL and Redis
are real servers (tests/services.py).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trustme

from securechat.server.listener import Server, ServerConfig
from securechat.tls import server_context
from securechat.wire.protocol import Decoder, Frame, encode
from tests.services import (  # noqa: F401  (fixtures, found by pytest here)
    free_port,
    postgres_server,
    postgres_url,
    redis_server,
    redis_url,
)

TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
EVENT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Pki:
    """PEM files of one CA and the server and client certificates it issued."""

    ca: trustme.CA
    ca_pem: Path
    server_pem: Path
    server_key: Path
    alice_pem: Path
    alice_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server certificate for localhost/127.0.0.1/::1 and a client cert for alice."""
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    alice = ca.issue_cert("alice@example.test", common_name="alice")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    server.private_key_pem.write_to_path(str(d / "server.key"))
    alice.cert_chain_pems[0].write_to_path(str(d / "alice.pem"))
    alice.private_key_pem.write_to_path(str(d / "alice.key"))
    for key in ("server.key", "alice.key"):
        (d / key).chmod(0o600)  # as a key should be: the server warns about any other mode
    return Pki(
        ca,
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "alice.pem",
        d / "alice.key",
    )


UNMETERED: dict[str, Any] = {"message_burst": 1_000_000, "message_rate": 1_000_000.0}
"""Server options for tests that send faster than an account's message budget allows,
while testing something else (the budget has tests of its own)."""

UNMETERED_ARGS = ("--message-burst=1000000", "--message-rate=1000000")
"""The same for a ``securechat-server`` process."""


def server_argv(pki: Pki, db: Path, port: int, *extra: str) -> list[str]:
    """The command line of a ``securechat-server`` process on ``port`` with ``db``."""
    return [
        sys.executable,
        "-m",
        "securechat.server.cli",
        "--cert",
        str(pki.server_pem),
        "--key",
        str(pki.server_key),
        "--port",
        str(port),
        "--db",
        str(db),
        *extra,
    ]


class ServerProcess:
    """A ``python -m securechat.server.cli`` process; its stderr read on a thread.

    The thread keeps draining stderr so the server never blocks on a full pipe.
    """

    def __init__(self, pki: Pki, db: Path, *, port: int, extra: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            server_argv(pki, db, port, *extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self.port = 0
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            found = re.fullmatch(r"securechat-server: listening on \S+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                self._listening.set()

    @property
    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        return "\n".join(self.lines)

    def wait_listening(self, timeout: float = EVENT_TIMEOUT) -> int:
        """Block until the server says it listens; its port."""
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2.0)
                raise AssertionError(
                    f"server exited with {self.proc.returncode} before listening:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not listening after {timeout} s:\n{self.stderr}")
        return self.port

    def sigkill(self) -> None:
        """SIGKILL now, without waiting (safe to call from a timer thread)."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Make sure the process is gone and reaped."""
        self.sigkill()
        self.proc.wait(EVENT_TIMEOUT)
        self._reader.join(EVENT_TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def terminate(self, timeout: float = EVENT_TIMEOUT) -> int:
        """SIGTERM, as an operator would stop it; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        return status


def tls_pair(
    pki: Pki, *, server_sndbuf: int | None = None, client_rcvbuf: int | None = None
) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """Both ends of a real TLS connection over a socket pair: (server side, client side),
    the handshake left to the caller; the buffer sizes make a peer that stops reading
    felt at once."""
    server_raw, client_raw = socket.socketpair()
    if server_sndbuf is not None:
        server_raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server_sndbuf)
    if client_rcvbuf is not None:
        client_raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, client_rcvbuf)
    server_raw.setblocking(False)
    server = server_context(cert=pki.server_pem, key=pki.server_key).wrap_socket(
        server_raw, server_side=True, do_handshake_on_connect=False
    )
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    client = client_ctx.wrap_socket(
        client_raw, server_hostname="localhost", do_handshake_on_connect=False
    )
    return server, client


@pytest.fixture(scope="session")
def other_ca_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the server uses."""
    path = tmp_path_factory.mktemp("other") / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def make_server(pki: Pki, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start in-process servers on an ephemeral port; all are stopped after the test."""
    servers: list[Server] = []

    def _make(**overrides: Any) -> Server:
        config = ServerConfig(
            cert=pki.server_pem, key=pki.server_key, port=0, db=tmp_path / "chat.db"
        )
        server = Server(replace(config, **overrides))
        server.start()
        servers.append(server)
        return server

    yield _make
    for server in servers:
        server.stop(timeout=3.0)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """One running server with default settings."""
    return make_server()


class RawClient:
    """A protocol-level client on a real TLS socket, for tests that craft frames."""

    def __init__(
        self,
        port: int,
        ca_pem: Path,
        *,
        tls_version: ssl.TLSVersion | None = None,
        cert: tuple[Path, Path] | None = None,
        recv_buffer: int | None = None,
        source: str | None = None,
    ) -> None:
        ctx = ssl.create_default_context(cafile=str(ca_pem))
        if tls_version is not None:
            ctx.minimum_version = ctx.maximum_version = tls_version
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(EVENT_TIMEOUT)
        if recv_buffer is not None:
            # Set before connecting: afterwards Linux keeps autotuning the window.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        if source is not None:
            raw.bind((source, 0))  # e.g. 127.0.0.2: another source address for the caps
        raw.connect(("127.0.0.1", port))
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.decoder = Decoder()
        self.frames: list[Frame] = []
        self.rid = 0
        self.hello = self.expect("hello")

    def send(self, type_: str, **fields: Any) -> int:
        """Send a frame with a fresh rid; returns the rid."""
        self.rid += 1
        self.send_raw(encode(type_, rid=self.rid, **fields))
        return self.rid

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (a web client: as one WebSocket message)."""
        self.sock.sendall(data)

    def receive_bytes(self) -> bytes:
        """The next bytes of the frame stream; b"" once the server has closed."""
        return self.sock.recv(65536)

    def recv_frame(self, timeout: float = EVENT_TIMEOUT) -> Frame | None:
        """The next frame, or None when the server closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                if frame.type == "ping":
                    self.send_raw(encode("pong"))
                    continue
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(remaining)
            try:
                data = self.receive_bytes()
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not data:
                return None
            self.decoder.feed(data)

    def expect(self, type_: str, timeout: float = EVENT_TIMEOUT, **match: Any) -> Frame:
        """Read frames until one of ``type_`` whose fields include ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise ConnectionError(f"closed while waiting for {type_} {match}")
            self.frames.append(frame)
            if frame.type == type_ and all(frame.get(k) == v for k, v in match.items()):
                return frame

    def login(self, user: str, password: str = "pw") -> Frame:
        """Log in and wait for the first room; returns the welcome frame."""
        self.send("login", user=user, password=password)
        welcome = self.expect("welcome")
        self.expect("joined", room="#general")
        return welcome

    def wait_closed(self, timeout: float = EVENT_TIMEOUT) -> list[Frame]:
        """Read until the server closes; the frames that came before."""
        seen = []
        deadline = time.monotonic() + timeout
        while (frame := self.recv_frame(max(0.01, deadline - time.monotonic()))) is not None:
            seen.append(frame)
        return seen

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@pytest.fixture
def raw_client(pki: Pki) -> Iterator[Callable[..., RawClient]]:
    """Factory of RawClients connected to a port; all closed after the test."""
    made: list[RawClient] = []

    def _make(port: int, **kwargs: Any) -> RawClient:
        client = RawClient(port, pki.ca_pem, **kwargs)
        made.append(client)
        return client

    yield _make
    for client in made:
        client.close()


def offline_account(make_client: Callable[..., RawClient], port: int, name: str) -> None:
    """Register ``name`` (password ``pw``) and log it out again: an account with no session."""
    client = make_client(port)
    client.login(name)
    client.send("quit")
    client.wait_closed()


def history_page(client: RawClient, **fields: Any) -> tuple[list[Frame], Frame]:
    """Ask for history (or ``type_`` search or export); the rows and the closing history_end."""
    type_ = fields.pop("type_", "history")
    rid = client.send(type_, **fields)
    rows = []
    while True:
        frame = client.recv_frame()
        assert frame is not None, "connection closed during history"
        if frame.get("rid") != rid:
            continue
        if frame.type == "history_end":
            return rows, frame
        if frame.type == "error":
            raise AssertionError(f"history refused: {frame.fields}")
        assert frame.get("history") is True and frame.get("more") is True
        rows.append(frame)


class ClientProcess:
    """A real ``securechat-client --json`` process, its events read on a thread."""

    def __init__(self, args: list[str], *, password: str | None, env: dict[str, str]) -> None:
        full_env = {**os.environ, **env}
        full_env.pop("SECURECHAT_PASSWORD", None)
        if password is not None:
            full_env["SECURECHAT_PASSWORD"] = password
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "securechat.client.cli", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self.events: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(json.loads(line))
        self._queue.put(None)

    def type(self, *lines: str) -> None:
        """Send input lines."""
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, type_: str, timeout: float = EVENT_TIMEOUT, **match: Any) -> dict[str, Any]:
        """The first (new) event of ``type_`` whose fields include ``match``."""
        for event in self.events:
            if event["type"] == type_ and all(event.get(k) == v for k, v in match.items()):
                self.events.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {type_} {match}; saw {self.events}") from None
            if event is None:
                raise ConnectionError(f"client exited before {type_} {match}; saw {self.events}")
            if event["type"] == type_ and all(event.get(k) == v for k, v in match.items()):
                return event
            self.events.append(event)

    def drain(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        """Every event that arrives within ``timeout`` (plus those already seen)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if event is None:
                break
            self.events.append(event)
        return self.events

    def finish(self, timeout: float = EVENT_TIMEOUT) -> tuple[int, str]:
        """Close stdin (EOF) and wait for exit; (status, stderr)."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        while (event := self._queue.get(timeout=timeout)) is not None:
            self.events.append(event)
        assert self.proc.stderr is not None
        return status, self.proc.stderr.read().decode("utf-8", "replace")

    def kill(self) -> None:
        """Stop the process if it is still running, and let the reader see its EOF."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def client_process(pki: Pki) -> Iterator[Callable[..., ClientProcess]]:
    """Start ``securechat-client --json`` processes; all are killed after the test.

    ``hosts`` are the ``--host`` values; ``port`` is ``--port``, for those without one.
    ``register`` passes ``--register`` (the default: most tests log in new names).
    """
    procs: list[ClientProcess] = []

    def _start(
        port: int,
        user: str | None,
        password: str | None = "pw",
        *,
        ca: Path | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        hosts: tuple[str, ...] = ("localhost",),
        register: bool = True,
    ) -> ClientProcess:
        args = ["--ca", str(ca or pki.ca_pem), "--port", str(port)]
        if register:
            args.append("--register")
        for host in hosts:
            args += ["--host", host]
        if user is not None:
            args += ["--user", user]
        proc = ClientProcess([*args, "--json", *extra], password=password, env=env or {})
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        proc.kill()
        for stream in (proc.proc.stdin, proc.proc.stdout, proc.proc.stderr):
            if stream is not None:
                stream.close()
