"""The securechat server: a listener, a few I/O loops and the chat hub.

Threading model
---------------
* One **accept thread** blocks in ``accept()``. It never reads from a peer: it
  checks the source's connection caps (closing the socket at once when over
  them, before any TLS work), wraps the new socket for TLS without handshaking
  (``do_handshake_on_connect=False``) and hands it to the next I/O loop in turn.
  It also supervises the loops: one whose thread has died (its connections
  closed with it) is logged and skipped from then on; with none left, the
  server stops accepting.
* ``io_threads`` **I/O loops** (see :mod:`securechat.ioloop`) each own their
  channels outright: handshake, reads, writes and close happen only there.
  Frames are decoded and handed to the hub in the loop's thread, by each
  channel's :class:`~securechat.server.connection.ClientConnection`.
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
import logging
import os
import selectors
import socket
import ssl
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..channel import CLOSE_TIMEOUT, FRAME_TIMEOUT, Channel
from ..errors import ConfigError
from ..ioloop import IOLoop
from ..outbox import OUTBOX_LIMIT
from ..store.open import open_store
from ..tls import server_context
from ..web.channel import WebChannel
from ..web.site import Site
from ..wire.protocol import DEFAULT_PORT
from . import chat, history_requests, moderation_requests
from .cluster.bus import RedisBus
from .cluster.node import Cluster, ClusterLimits, new_server_id
from .cluster.peers import PeerNetwork
from .cluster.remote_files import RemoteFiles
from .connection import ClientConnection
from .hub import DEFAULT_MAX_SESSIONS, DEFAULT_MESSAGE_BURST, DEFAULT_MESSAGE_RATE, Hub
from .limits import (
    DEFAULT_CONNECTIONS_PER_SOURCE,
    DEFAULT_HANDSHAKES_PER_SOURCE,
    ConnectionCaps,
    IPNetwork,
    RateLimitedLog,
)
from .login import DEFAULT_REGISTRATIONS, Logins
from .metrics import ServerStats, count_refusal
from .relay import DEFAULT_MAX_FILE_SIZE
from .sockets import is_unspecified, listen, raise_fd_limit
from .writer import MessageWriter

__all__ = ["Server", "ServerConfig"]

log = logging.getLogger(__name__)

_LOG_FLUSH_INTERVAL = 1.0  # seconds between summaries of held-back log lines
# SO_LINGER on, zero seconds: close() resets the connection, so a flood of refused
# connections leaves no TIME_WAIT sockets behind on the server.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything the server is told on its command line."""

    cert: Path
    key: Path
    key_password: bytes | None = field(default=None, repr=False)
    """The passphrase of an encrypted ``key`` (from ``--key-password-file``)."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: Path = Path("securechat.db")
    store: str | None = None
    """A store shared with other servers (``postgresql://...``); None: SQLite at ``db``."""
    bus: str | None = None
    """Cluster mode: the Redis URL of the bus shared with the other servers."""
    client_ca: Path | None = None
    tls_min: str = "1.2"
    io_threads: int = 2
    handshake_timeout: float = 10.0
    login_timeout: float = 30.0
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    frame_timeout: float = FRAME_TIMEOUT
    outbox_limit: int = OUTBOX_LIMIT
    durability: str = "normal"
    retention_days: int = 0
    history_on_join: int = 20
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_sessions: int = DEFAULT_MAX_SESSIONS
    message_burst: int = DEFAULT_MESSAGE_BURST
    message_rate: float = DEFAULT_MESSAGE_RATE
    registrations_per_ip: int = DEFAULT_REGISTRATIONS
    max_connections_per_ip: int = DEFAULT_CONNECTIONS_PER_SOURCE
    max_handshakes_per_ip: int = DEFAULT_HANDSHAKES_PER_SOURCE
    connection_limits: tuple[tuple[IPNetwork, int], ...] = ()
    """Networks with their own per-address cap (both caps), e.g. an office's NAT range."""
    peer_port: int | None = None
    """Cluster mode: the port other servers dial for file data (0: any free port)."""
    peer_host: str | None = None
    """The name or address other servers dial and check this server's certificate
    against (default: ``host``)."""
    peer_ca: Path | None = None
    """The CA that signs every cluster server's certificate (required with ``peer_port``)."""
    registration: str = "open"
    """Who may create an account: ``open``, ``invite`` or ``closed`` (docs/server.md)."""
    web_port: int | None = None
    """Serve the web client over HTTPS on this port of ``host`` (0: any free port)."""


class Server:
    """A running securechat server. ``start()`` binds; ``stop()`` shuts down gracefully."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._context = server_context(
            cert=config.cert,
            key=config.key,
            client_ca=config.client_ca,
            tls_min=config.tls_min,
            key_password=config.key_password,
        )
        if config.bus is not None and config.store is None:
            raise ConfigError(
                "--bus needs --store postgresql://...: several servers cannot share one "
                "SQLite file; leave --bus out to run a single server"
            )
        self._store = open_store(config.store, db=config.db, durability=config.durability)
        self._bus: RedisBus | None = None
        if config.bus is not None:
            self._bus = RedisBus(config.bus, server_id=new_server_id())
            # Before the hub loads the state the stream then keeps current.
            self._bus.position()
        self._writer = MessageWriter(self._store, retention_days=config.retention_days)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="login")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="history")
        self.hub = Hub(
            store=self._store,
            writer=self._writer,
            reader_pool=self._readers,
            account_pool=self._pool,
            server_name=socket.gethostname(),
            history_on_join=config.history_on_join,
            retention_days=config.retention_days,
            max_file_size=config.max_file_size,
            max_sessions=config.max_sessions,
            message_burst=config.message_burst,
            message_rate=config.message_rate,
            registration=config.registration,
        )
        self._loops = tuple(IOLoop(f"io-{i}") for i in range(max(1, config.io_threads)))
        self._peers: PeerNetwork | None = None
        if self._bus is not None:
            cluster = Cluster(self.hub, self._bus, self._store.load_last_seqs())
            self.hub.cluster = self.hub.delivery.cluster = cluster
            files = RemoteFiles(self.hub, cluster)
            self._peers = files.network = self._peer_network(self._bus, files)
            self.hub.remote_files = files
            cluster.on_server_gone = files.server_gone
        self.hub.handlers.update(chat.HANDLERS)
        self.hub.handlers.update(history_requests.HANDLERS)
        self.hub.handlers.update(moderation_requests.HANDLERS)
        logins = Logins(self.hub, self._pool, registrations_per_source=config.registrations_per_ip)
        self.hub.handlers["login"] = logins.handle
        self.connection_caps = ConnectionCaps(
            connections=config.max_connections_per_ip,
            handshakes=config.max_handshakes_per_ip,
            networks=config.connection_limits,
        )
        """Open connections and handshakes per source address (read-only for callers)."""
        if self.hub.cluster is not None:
            cluster = self.hub.cluster
            cluster.limits = ClusterLimits(logins, self.connection_caps)

            def _share(source: str, count: int) -> None:
                cluster.publish("connections", source=source, count=count)

            self.connection_caps.on_change = _share
        self._problems = RateLimitedLog(log)
        self.stats = ServerStats(hub=self.hub, writer=self._writer, loops=self._loops)
        self.hub.stats = self.stats
        """The server's numbers, for --metrics and /stats."""
        self._live_loops = list(self._loops)  # those still handed connections (accept thread)
        self._turn = 0
        self._listener: socket.socket | None = None
        self._site = Site() if config.web_port is not None else None
        self._web_listener: socket.socket | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept")
        self._stopped = threading.Event()

    def _peer_network(self, bus: RedisBus, files: RemoteFiles) -> PeerNetwork | None:
        """The links to the other servers, if this one has a peer port."""
        cfg = self.config
        if cfg.peer_port is None:
            return None
        if cfg.peer_ca is None:
            raise ConfigError("--peer-port needs --peer-ca: the CA of every cluster server")
        host = cfg.peer_host or cfg.host
        if is_unspecified(host):
            raise ConfigError(
                f"--host {cfg.host} is no address other servers can dial: pass --peer-host "
                "with a name or address in this server's certificate"
            )
        return PeerNetwork(
            server_id=bus.server_id,
            host=cfg.host,
            port=cfg.peer_port,
            advertise_host=host,
            cert=cfg.cert,
            key=cfg.key,
            key_password=cfg.key_password,
            ca=cfg.peer_ca,
            tls_min=cfg.tls_min,
            loops=self._loops,
            lookup=bus.peer_address,
            handler=files,
            handshake_timeout=cfg.handshake_timeout,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
        )

    def use_tls(self, config: ServerConfig) -> None:
        """Hand new connections a TLS context made from ``config``'s certificate, key,
        client CA and TLS version; connections already open keep theirs.

        ConfigError, and nothing changed, if the new certificate or key does not load.
        """
        context = server_context(
            cert=config.cert,
            key=config.key,
            client_ca=config.client_ca,
            tls_min=config.tls_min,
            key_password=config.key_password,
        )
        # One attribute store: the accept thread reads the old or the new context whole.
        self._context = context
        self.config = replace(
            self.config,
            cert=config.cert,
            key=config.key,
            key_password=config.key_password,
            client_ca=config.client_ca,
            tls_min=config.tls_min,
        )

    @property
    def peer_address(self) -> str | None:
        """Where other servers of the cluster dial this one (``host:port``), if anywhere."""
        return self._peers.address if self._peers is not None else None

    @property
    def io_loops(self) -> tuple[IOLoop, ...]:
        """The I/O loops, for monitoring their health (``is_running``, ``channel_count``)."""
        return self._loops

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound, useful with port 0."""
        assert self._listener is not None
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def web_address(self) -> tuple[str, int] | None:
        """The (host, port) the web client is served on, if ``web_port`` was given."""
        if self._web_listener is None:
            return None
        host, port = self._web_listener.getsockname()[:2]
        return host, port

    def start(self) -> None:
        """Bind the listeners and start every thread. ConfigError if a port is taken."""
        raise_fd_limit()
        listener = listen(self.config.host, self.config.port, "--port")
        self._listener = listener
        try:
            if self.config.web_port is not None:
                self._web_listener = listen(self.config.host, self.config.web_port, "--web-port")
            if self._peers is not None:
                self._peers.start()
        except ConfigError:
            listener.close()
            if self._web_listener is not None:
                self._web_listener.close()
            raise
        if self._peers is not None:
            assert self._bus is not None
            self._bus.set_peer_address(self._peers.address)
        self._writer.start()
        if self.hub.cluster is not None:
            self.hub.cluster.start()
        for loop in self._loops:
            loop.start()
        self._accept_thread.start()
        host, port = self.address
        log.info("securechat listening on %s:%d (TLS only)", host, port)
        if self.web_address is not None:
            host, port = self.web_address
            shown = f"[{host}]" if ":" in host else host
            log.info("web client on https://%s:%d/", shown, port)

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
        if self._peers is not None:
            self._peers.stop()
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
        if self.hub.cluster is not None:
            self.hub.cluster.stop()
        self._store.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        log.info("securechat stopped")

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listeners = [self._listener]
        if self._web_listener is not None:
            listeners.append(self._web_listener)
        with selectors.DefaultSelector() as selector:
            for listener in listeners:
                selector.register(listener, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            running = True
            while running:
                ready = {key.fileobj for key, _ in selector.select(_LOG_FLUSH_INTERVAL)}
                self._problems.flush()
                if self._stop_r in ready:
                    break
                for listener in listeners:
                    if listener not in ready:
                        continue
                    try:
                        sock, addr = listener.accept()
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            self._problems.log(
                                "accept", logging.ERROR, "cannot accept: %s; pausing", exc.strerror
                            )
                            time.sleep(0.1)
                        continue
                    if not self._adopt(sock, addr, web=listener is self._web_listener):
                        log.error(
                            "no I/O loop is left running: not accepting connections any more"
                        )
                        running = False
                        break
        for listener in listeners:
            listener.close()

    def _adopt(self, sock: socket.socket, addr: tuple[str, int], *, web: bool = False) -> bool:
        """Admit, wrap and hand over one accepted socket; False if no I/O loop is left."""
        peer = f"{addr[0]}:{addr[1]}"
        ticket = self.connection_caps.admit(addr[0])
        if isinstance(ticket, str):
            # Refused before any TLS work: a handshake is what a flood would cost us.
            count_refusal("connection_cap")
            self._problems.log("cap", logging.WARNING, "%s: refused: %s", peer, ticket)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            except OSError:
                pass  # the peer is gone already: a plain close is as good
            sock.close()
            return True
        try:
            # Small frames must leave at once: Nagle plus delayed ACKs is a 40 ms tail.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            tls = self._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as exc:
            self._problems.log(
                "accept", logging.WARNING, "%s: dropped before handshake: %s", peer, exc
            )
            ticket.release()
            sock.close()
            return True
        cfg = self.config
        handler = ClientConnection(
            self.hub,
            ticket,
            self._problems,
            mutual_tls=cfg.client_ca is not None,
            login_timeout=cfg.login_timeout,
        )
        options: dict[str, Any] = {
            "peer": peer,
            "handshake_timeout": cfg.handshake_timeout,
            "ping_interval": cfg.ping_interval,
            "ping_timeout": cfg.ping_timeout,
            "outbox_limit": cfg.outbox_limit,
            "frame_timeout": cfg.frame_timeout,
        }
        # Browsers get the same channel, with HTTP and WebSocket between TLS and frames.
        channel = (
            WebChannel(
                tls,
                handler,
                site=self._site,
                request_timeout=cfg.handshake_timeout,
                on_handshake=ticket.handshake_done,
                **options,
            )
            if web and self._site is not None
            else Channel(tls, handler, **options)
        )
        while self._live_loops:
            loop = self._live_loops[self._turn % len(self._live_loops)]
            self._turn += 1
            if loop.add(channel):
                return True
            self._live_loops.remove(loop)
            log.error(
                "I/O loop %s has stopped (%r): its connections were closed; %d loop(s) left",
                loop.name,
                loop.failure,
                len(self._live_loops),
            )
        # Nobody owns the channel: this thread still does, so it closes it.
        ticket.release()
        tls.close()
        return False
