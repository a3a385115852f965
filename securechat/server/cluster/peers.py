"""Links between the servers of a cluster: mutually authenticated TLS, our frame codec.

What it is for
--------------
Some traffic between servers must not go through Redis or PostgreSQL: file
data above all (see :mod:`securechat.server.cluster.remote_files`). For that each
cluster server listens on a *peer port* and dials the others on demand. A link
is one TLS connection on which both ends present a certificate signed by the
cluster's peer CA (``--peer-ca``) and verify the other's; the dialer also
checks the acceptor's certificate against the host it dialed, and the acceptor
refuses a certificate without the serverAuth usage (a user's client
certificate from the same CA is not a server). Frames are the chat protocol's
(:mod:`securechat.wire.protocol`). This module moves frames; what they mean is
the handler's business.

Every server publishes its peer address on the bus (a key that lapses with its
liveness); a dialer looks the address up when it opens a link. Links are kept
and reused while they stay up. A link is dialed for one direction of use: the
server that dialed it is the one that starts conversations on it, so two
servers that both need the other hold two links and never race to merge them.

Threads
-------
A link is a :class:`~securechat.channel.Channel` owned by one of the server's
I/O loops, like every client connection: only that loop reads and writes its
socket, everyone else queues bytes in its bounded outbox (a peer that stops
reading is dropped like a slow client). Dialing (the address lookup, the TCP
connect) happens on a small dial pool, never under the hub's lock; frames
queued while the link is being dialed wait, bounded, in the link. One accept
thread takes incoming links and hands them to the loops; their handshakes run
there, under a deadline. The handler hears ``on_link_closed`` exactly once per
link, from whichever thread saw it end.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from ...channel import Channel
from ...errors import ConfigError, ProtocolError
from ...ioloop import IOLoop
from ...outbox import OUTBOX_LIMIT
from ...tls import client_context, peer_has_server_usage, server_context
from ...wire.protocol import Frame, encode

__all__ = ["DIAL_TIMEOUT", "HELLO_TIMEOUT", "LinkHandler", "PeerLink", "PeerNetwork"]

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 5.0
"""Seconds a TCP connect to another server may take before its link counts as failed."""

HELLO_TIMEOUT = 10.0
"""Seconds an accepted link gets to say which server it is, after its handshake."""


class LinkHandler(Protocol):
    """What a link reports to."""

    def on_link_frame(self, link: PeerLink, frame: Frame) -> None:
        """A frame arrived on ``link`` (on its I/O loop's thread)."""

    def on_link_closed(self, link: PeerLink, reason: str) -> None:
        """``link`` ended, or could not be opened; called once, from any thread."""


class PeerLink:
    """One TLS connection to another server (see the module notes).

    ``send`` and ``close`` may be called from any thread and never wait.
    """

    def __init__(self, network: PeerNetwork, server: str, *, dialed: bool) -> None:
        self.server = server
        """The other server's id (for an accepted link: empty until it says)."""
        self.dialed = dialed
        """True on the server that dialed the link (and starts conversations on it)."""
        self._network = network
        self._lock = threading.Lock()
        self._channel: Channel | None = None
        self._pending: list[tuple[bytes, bool]] = []  # queued while dialing
        self._pending_bytes = 0
        self.closed_reason: str | None = None

    def send(self, data: bytes, *, bulk: bool = False) -> bool:
        """Queue encoded frames (``bulk`` for file data); False if the link is closing."""
        with self._lock:
            if self.closed_reason is not None:
                return False
            channel = self._channel
            if channel is None and self._pending_bytes + len(data) <= OUTBOX_LIMIT:
                self._pending.append((data, bulk))
                self._pending_bytes += len(data)
                return True
        if channel is None:
            self._ended("too much queued while the link was being opened")
            return False
        return channel.send(data, bulk=bulk)

    def close(self, reason: str) -> None:
        """Deliver what is queued, then close (or give up dialing)."""
        with self._lock:
            channel = self._channel
        if channel is None:
            self._ended(reason)
        else:
            channel.close(reason)

    # -- the network's side ---------------------------------------------------------------

    def _attach(self, channel: Channel) -> bool:
        """The dialed socket is ready: what waited goes first. False if closed meanwhile."""
        with self._lock:
            if self.closed_reason is not None:
                return False
            for data, bulk in self._pending:
                channel.send(data, bulk=bulk)
            self._pending = []
            self._pending_bytes = 0
            self._channel = channel
        return True

    def _ended(self, reason: str) -> None:
        with self._lock:
            if self.closed_reason is not None:
                return
            self.closed_reason = reason
            self._pending = []
        # Forgotten before the handler hears it, so nobody is handed a dead link after.
        self._network._forget(self)
        log.info("peer link %s %s closed: %s", "to" if self.dialed else "from", self.server, reason)
        try:
            self._network.handler.on_link_closed(self, reason)
        except Exception:
            log.exception("peer link %s: error while closing", self.server)


class _LinkConnection:
    """Glue between a link's channel and the link (runs in the channel's loop thread)."""

    __slots__ = ("_hello_done", "_link")

    def __init__(self, link: PeerLink) -> None:
        self._link = link
        self._hello_done = link.dialed

    def on_open(self, channel: Channel) -> None:
        if not self._link.dialed:
            if not peer_has_server_usage(channel.sock):
                channel.close("refused: the peer's certificate is not a server certificate")
                return
            channel.deadline = time.monotonic() + HELLO_TIMEOUT
            channel.deadline_reason = "the peer did not say which server it is"

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        if not self._hello_done:
            if frame.type != "peer_hello":
                raise ProtocolError("a peer link starts with peer_hello")
            self._link.server = frame.str_field("server")[:64]
            self._hello_done = True
            channel.deadline = None
            return
        self._link._network.handler.on_link_frame(self._link, frame)

    def on_close(self, channel: Channel, reason: str) -> None:
        self._link._ended(reason)


class PeerNetwork:
    """This server's links to the others: one listener, dialed links kept by server."""

    def __init__(
        self,
        *,
        server_id: str,
        host: str,
        port: int,
        advertise_host: str,
        cert: Path,
        key: Path,
        ca: Path,
        tls_min: str,
        key_password: bytes | None = None,
        loops: Sequence[IOLoop],
        lookup: Callable[[str], str | None],
        handler: LinkHandler,
        handshake_timeout: float = 10.0,
        ping_interval: float = 30.0,
        ping_timeout: float = 30.0,
    ) -> None:
        self.server_id = server_id
        self.handler = handler
        self._host = host
        self._port = port
        self._advertise_host = advertise_host
        self._accept_context = server_context(
            cert=cert, key=key, client_ca=ca, tls_min=tls_min, key_password=key_password
        )
        self._dial_context = client_context(ca=ca, cert=cert, key=key, key_password=key_password)
        self._loops = loops
        self._turn = 0
        self._lookup = lookup
        self._timeouts = (handshake_timeout, ping_interval, ping_timeout)
        self._lock = threading.Lock()
        self._dialed: dict[str, PeerLink] = {}
        self._accepted: set[PeerLink] = set()
        self._dialer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="peer-dial")
        self._listener: socket.socket | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="peer-accept")
        self._stopping = False

    @property
    def address(self) -> str:
        """What other servers dial: ``host:port`` (after ``start``)."""
        assert self._listener is not None
        port = self._listener.getsockname()[1]
        host = self._advertise_host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        """Bind the peer port and start accepting links; ConfigError if it is taken."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self._host, self._port))
            listener.listen(64)
        except OSError as exc:
            listener.close()
            what = "is in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc.strerror}"
            raise ConfigError(
                f"peer port {self._port} on {self._host} {what}: pass another --peer-port"
            ) from exc
        self._listener = listener
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop accepting and dialing, and close every link."""
        with self._lock:
            self._stopping = True
            links = [*self._dialed.values(), *self._accepted]
        if self._accept_thread.is_alive():
            os.write(self._stop_w, b"x")
            self._accept_thread.join(5.0)
        self._dialer.shutdown(wait=False, cancel_futures=True)
        for link in links:
            link.close("server shutting down")
        os.close(self._stop_r)
        os.close(self._stop_w)

    def link_to(self, server: str) -> PeerLink:
        """The open link this server dialed to ``server``, dialing one if there is none.

        Never waits: frames sent before the connection is up are queued.
        """
        with self._lock:
            link = self._dialed.get(server)
            if link is not None and link.closed_reason is None:
                return link
            link = PeerLink(self, server, dialed=True)
            link.send(encode("peer_hello", server=self.server_id))
            stopping = self._stopping
            if not stopping:
                self._dialed[server] = link
                self._dialer.submit(self._dial, link)
        if stopping:
            link.close("server shutting down")
        return link

    def close_server(self, server: str, reason: str) -> None:
        """Close every link to or from ``server`` (it left the cluster)."""
        with self._lock:
            links = [*self._dialed.values(), *self._accepted]
        for link in links:
            if link.server == server:
                link.close(reason)

    def _forget(self, link: PeerLink) -> None:
        with self._lock:
            if self._dialed.get(link.server) is link:
                del self._dialed[link.server]
            self._accepted.discard(link)

    # -- dialing (the dial pool) ------------------------------------------------------------

    def _dial(self, link: PeerLink) -> None:
        try:
            address = self._lookup(link.server)
        except Exception as exc:  # the bus's client raises its own errors
            link._ended(f"cannot look up the address of server {link.server}: {exc}")
            return
        if address is None:
            link._ended(f"server {link.server} publishes no peer address (no --peer-port?)")
            return
        host, _, port_text = address.rpartition(":")
        host = host.strip("[]")
        try:
            sock = socket.create_connection((host, int(port_text)), timeout=DIAL_TIMEOUT)
        except (OSError, ValueError) as exc:
            link._ended(f"cannot connect to server {link.server} at {address}: {exc}")
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            tls = self._dial_context.wrap_socket(
                sock, server_hostname=host, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            link._ended(f"cannot start TLS with server {link.server}: {exc}")
            return
        channel = self._channel(tls, link, address)
        if not link._attach(channel):
            tls.close()
            return
        if not self._hand_to_loop(channel):
            tls.close()
            link._ended("server shutting down")

    # -- accepting (the accept thread) -----------------------------------------------------

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
                    log.warning("peer port: cannot accept: %s", exc.strerror)
                    continue
                self._adopt(sock, f"{addr[0]}:{addr[1]}")
        listener.close()

    def _adopt(self, sock: socket.socket, peer: str) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            tls = self._accept_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            log.warning("peer port: %s dropped before handshake: %s", peer, exc)
            sock.close()
            return
        link = PeerLink(self, "", dialed=False)
        channel = self._channel(tls, link, peer)
        link._attach(channel)
        with self._lock:
            self._accepted.add(link)
        if not self._hand_to_loop(channel):
            tls.close()
            link._ended("server shutting down")

    def _channel(self, tls: ssl.SSLSocket, link: PeerLink, peer: str) -> Channel:
        handshake, interval, timeout = self._timeouts
        return Channel(
            tls,
            _LinkConnection(link),
            peer=peer,
            handshake_timeout=handshake,
            ping_interval=interval,
            ping_timeout=timeout,
        )

    def _hand_to_loop(self, channel: Channel) -> bool:
        for _ in range(len(self._loops)):
            with self._lock:  # the dial pool and the accept thread both hand over
                loop = self._loops[self._turn % len(self._loops)]
                self._turn += 1
            if loop.add(channel):
                return True
        return False
