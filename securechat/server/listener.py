"""The securechat server: a listener, a few I/O loops and the chat hub.

Threading model
---------------
* One **accept thread** blocks in ``accept()``. It never reads from a peer: it
  wraps the new socket for TLS without handshaking
  (``do_handshake_on_connect=False``) and hands it to the next I/O loop in turn.
* ``io_threads`` **I/O loops** (see :mod:`securechat.channel`) each own their
  channels outright: handshake, reads, writes and close happen only there.
  Frames are decoded and handed to the hub in the loop's thread.
* The **hub** (:mod:`securechat.server.hub`) is plain chat logic behind one lock; it
  reaches other connections only by queueing bytes in their bounded outboxes.
* A small **login pool** hashes passwords so that scrypt never blocks an I/O loop.

Thread per connection was rejected: with thousands of mostly idle clients it
costs a stack and a wake-up per connection, while a loop serves them all with
one ``select`` and coalesces everything queued for a peer into one TLS write.
More than one loop lets TLS work (which releases the GIL) use both cores.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import resource
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..channel import CLOSE_TIMEOUT, OUTBOX_LIMIT, Channel, IOLoop
from ..errors import ConfigError
from ..store.sqlite import Store
from ..tls import peer_common_name, server_context
from ..wire.protocol import DEFAULT_PORT, Frame
from .hub import Hub, Session
from .relay import DEFAULT_MAX_FILE_SIZE
from .writer import MessageWriter

__all__ = ["Server", "ServerConfig"]

log = logging.getLogger(__name__)

_BACKLOG = 1024


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything the server is told on its command line."""

    cert: Path
    key: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: Path = Path("securechat.db")
    client_ca: Path | None = None
    tls_min: str = "1.2"
    io_threads: int = 2
    handshake_timeout: float = 10.0
    login_timeout: float = 30.0
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    outbox_limit: int = OUTBOX_LIMIT
    durability: str = "normal"
    retention_days: int = 0
    history_on_join: int = 20
    max_file_size: int = DEFAULT_MAX_FILE_SIZE


class _Connection:
    """Glue between one channel and the hub (runs in the channel's loop thread)."""

    __slots__ = ("_hub", "_login_timeout", "_mutual_tls", "session")

    def __init__(self, hub: Hub, *, mutual_tls: bool, login_timeout: float) -> None:
        self._hub = hub
        self._mutual_tls = mutual_tls
        self._login_timeout = login_timeout
        self.session: Session | None = None

    def on_open(self, channel: Channel) -> None:
        channel.deadline = time.monotonic() + self._login_timeout
        channel.deadline_reason = "login timed out"
        # Under mutual TLS a certificate without a common name is an invalid name,
        # never a fall-back to password login.
        cert_user = (peer_common_name(channel.sock) or "") if self._mutual_tls else None
        self.session = self._hub.open_session(channel, cert_user=cert_user)

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        assert self.session is not None
        self._hub.handle(self.session, frame)

    def on_close(self, channel: Channel, reason: str) -> None:
        level = logging.INFO if self.session is not None else logging.WARNING
        log.log(level, "%s: closed: %s", channel.peer, reason)
        if self.session is not None:
            self._hub.close_session(self.session, reason)


class Server:
    """A running securechat server. ``start()`` binds; ``stop()`` shuts down gracefully."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._context = server_context(
            cert=config.cert, key=config.key, client_ca=config.client_ca, tls_min=config.tls_min
        )
        self._store = Store(config.db, durability=config.durability)
        self._writer = MessageWriter(self._store, retention_days=config.retention_days)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="login")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="history")
        self.hub = Hub(
            store=self._store,
            writer=self._writer,
            login_executor=self._pool,
            history_pool=self._readers,
            server_name=socket.gethostname(),
            history_on_join=config.history_on_join,
            retention_days=config.retention_days,
            max_file_size=config.max_file_size,
        )
        self._loops = [IOLoop(f"io-{i}") for i in range(max(1, config.io_threads))]
        self._next_loop = itertools.cycle(self._loops)
        self._listener: socket.socket | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept")
        self._stopped = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound, useful with port 0."""
        assert self._listener is not None
        host, port = self._listener.getsockname()[:2]
        return host, port

    def start(self) -> None:
        """Bind the listener and start every thread. ConfigError if the port is taken."""
        _raise_fd_limit()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        # A restarted server must bind at once, despite connections in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.config.host, self.config.port))
            listener.listen(_BACKLOG)
        except OSError as exc:
            listener.close()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {self.config.port} on {self.config.host} is in use: stop the other "
                    "server or pass --port"
                ) from exc
            raise ConfigError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from exc
        self._listener = listener
        self._writer.start()
        for loop in self._loops:
            loop.start()
        self._accept_thread.start()
        host, port = self.address
        log.info("securechat listening on %s:%d (TLS only)", host, port)

    def stop(self, reason: str = "server shutting down", timeout: float = 5.0) -> None:
        """Stop accepting, tell every client why, and close within ``timeout`` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        deadline = time.monotonic() + timeout
        os.write(self._stop_w, b"x")
        if self._accept_thread.is_alive():
            self._accept_thread.join(timeout)
        # The hub stops taking frames and has the writer answer what it queued
        # before saying bye; what is left of the timeout goes to the goodbyes.
        self.hub.shutdown(
            reason, drain_timeout=max(0.1, deadline - time.monotonic() - CLOSE_TIMEOUT - 1.0)
        )
        # Give clients a moment to receive the goodbye, then close what is left.
        grace = min(CLOSE_TIMEOUT + 0.5, max(0.0, deadline - time.monotonic() - 1.0))
        until = time.monotonic() + grace
        while time.monotonic() < until and any(loop.channel_count for loop in self._loops):
            time.sleep(0.05)
        for loop in self._loops:
            loop.stop(max(0.1, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=True, cancel_futures=True)
        self._writer.stop(max(0.1, deadline - time.monotonic()))
        self._store.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        log.info("securechat stopped")

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._stop_r in ready:
                    break
                try:
                    sock, addr = listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.error("cannot accept: %s; pausing briefly", exc.strerror)
                        time.sleep(0.1)
                    continue
                self._adopt(sock, addr)
        listener.close()

    def _adopt(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        try:
            # Small frames must leave at once: Nagle plus delayed ACKs is a 40 ms tail.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            tls = self._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as exc:
            log.warning("%s: dropped before handshake: %s", peer, exc)
            sock.close()
            return
        cfg = self.config
        channel = Channel(
            tls,
            _Connection(
                self.hub, mutual_tls=cfg.client_ca is not None, login_timeout=cfg.login_timeout
            ),
            peer=peer,
            handshake_timeout=cfg.handshake_timeout,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            outbox_limit=cfg.outbox_limit,
        )
        next(self._next_loop).add(channel)


def _raise_fd_limit() -> None:
    """Each client is a file descriptor; the usual soft limit of 1,024 is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                pass
