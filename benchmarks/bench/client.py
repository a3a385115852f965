"""The load generator's clients: non-blocking TLS sockets served straight from the event loop."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from securechat.errors import ProtocolError
from securechat.wire.protocol import Decoder, Frame, encode

from .common import (
    EXPECT_TIMEOUT,
    FILLER,
    HOST,
    PONG,
    ROOM,
    SERVER_NAME,
    BenchError,
    password_of,
)
from .harness import Bench
from .server import ServerProcess

__all__ = [
    "SO_TIMESTAMPNS",
    "Client",
    "FrameHandler",
    "close_all",
    "login",
    "login_many",
    "login_placed",
    "move_to_own_rooms",
    "open_client",
    "paced_sender",
    "sent_at",
    "settle_joins",
    "settle_quietly",
    "stamped_text",
]

FrameHandler = Callable[["Client", Frame, float], None]

_RECV_SIZE = 64 * 1024
"""Bytes asked of one ``recv_into``: the largest TLS records are 16 KiB, a file chunk 64."""
_RECV_BUFFER = memoryview(bytearray(_RECV_SIZE))
"""One buffer for every client's reads (one thread): no 64 KiB allocation per read."""

SO_TIMESTAMPNS = 35
"""Linux ``SO_TIMESTAMPNS`` (asm-generic/socket.h); the socket module has no constant for it."""
_TIMESPEC = struct.Struct("qq")
_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


class Client:
    """One TLS connection of the generator: a non-blocking ``ssl.SSLSocket`` on the loop.

    The socket is driven straight from the event loop (``add_reader`` /
    ``add_writer``) rather than through asyncio's SSL transport: one Python
    layer fewer per read (a few per cent of the generator's CPU), and the raw
    socket stays at hand for the kernel's receive timestamps. Frames are
    decoded with securechat's own ``Decoder`` and either handed to
    ``handler`` (the fast path of a measured phase, called with the time the
    loop got round to the socket) or queued for
    :meth:`expect` (set-up steps). Pings are answered here. With
    ``count_only`` the client only counts the bytes it reads (idle clients of
    the connect scenario, which must not cost the generator a JSON parse per
    join notice). ``on_lost`` is called once when the connection ends, whoever
    ended it (the failover scenario reconnects from there).

    After :meth:`stamp_arrivals`, :attr:`arrived` is the moment the bytes being
    decoded reached this socket, from the kernel's receive timestamp
    (``SO_TIMESTAMPNS``, read with a one-byte ``MSG_PEEK`` before each read).
    It measures the server's delivery without the time this one process needs
    to get round to the socket, which with 99 recipients is most of the total.
    """

    def __init__(self, name: str, sock: ssl.SSLSocket, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = loop
        self.decoder = Decoder()
        self.handler: FrameHandler | None = None
        self.inbox: deque[Frame] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: str | None = None
        self.count_only = False
        self.record: list[bytes] | None = None
        self.bytes_in = 0
        self.rid = 0
        self.tag = -1
        self.joined_count = 0
        self.stamping = False
        self.arrived = 0.0
        self.on_lost: Callable[[Client], None] | None = None
        self._out: deque[bytes] = deque()
        self._reading = False
        self._writing = False

    @classmethod
    async def connect(
        cls,
        port: int,
        ctx: ssl.SSLContext,
        name: str,
        *,
        source: str | None = None,
        rcvbuf: int | None = None,
        timeout: float = EXPECT_TIMEOUT,
    ) -> Client:
        """A TLS connection to the server, handshake done.

        ``source`` binds the socket to that local address first (servers count
        connections per source address); ``rcvbuf`` sets ``SO_RCVBUF`` before the
        connection exists, so that the window the server sees is that small too.
        """
        loop = asyncio.get_running_loop()
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if rcvbuf is not None:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                raw.bind((source, 0))
            await asyncio.wait_for(loop.sock_connect(raw, (HOST, port)), timeout)
            sock = ctx.wrap_socket(raw, server_hostname=SERVER_NAME, do_handshake_on_connect=False)
        except BaseException:
            raw.close()
            raise
        client = cls(name, sock, loop)
        try:
            await asyncio.wait_for(client._handshake(), timeout)
        except BaseException:
            client.abort()
            raise
        loop.add_reader(client.fd, client._on_readable)
        client._reading = True
        return client

    async def _handshake(self) -> None:
        while True:
            try:
                self.sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await self._ready(write=False)
            except ssl.SSLWantWriteError:
                await self._ready(write=True)

    async def _ready(self, *, write: bool) -> None:
        future: asyncio.Future[None] = self.loop.create_future()

        def _done() -> None:
            if not future.done():
                future.set_result(None)

        if write:
            self.loop.add_writer(self.fd, _done)
        else:
            self.loop.add_reader(self.fd, _done)
        try:
            await future
        finally:
            if write:
                self.loop.remove_writer(self.fd)
            else:
                self.loop.remove_reader(self.fd)

    # receiving
    def stop_reading(self) -> None:
        """Never read again, like a stalled client: what the server sends piles up."""
        if self._reading:
            self.loop.remove_reader(self.fd)
            self._reading = False

    def stamp_arrivals(self) -> None:
        """Keep :attr:`arrived` up to date from the kernel's receive timestamps."""
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.stamping = True

    def _kernel_arrival(self) -> float:
        """When the next unread bytes reached the socket (perf_counter clock); 0 if unknown."""
        try:
            _, ancillary, _, _ = socket.socket.recvmsg(
                self.sock, 1, _STAMP_SPACE, socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
        except OSError:
            return 0.0  # nothing unread in the kernel: OpenSSL holds the rest
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(data)
                stamp: float = sec + nsec * 1e-9
                # Wall-clock stamp to the perf_counter clock, converted at once.
                return stamp - (time.time() - time.perf_counter())
        return 0.0

    def _on_readable(self) -> None:
        now = time.perf_counter()
        buffer = _RECV_BUFFER
        while not self.closed:
            if self.stamping:
                self.arrived = self._kernel_arrival() or self.arrived
            try:
                size = self.sock.recv_into(buffer)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (ssl.SSLError, OSError) as exc:
                self._lost(f"connection error: {exc}")
                break
            if not size:
                self._lost(None)
                break
            self._received(buffer[:size].tobytes(), now)
        self._wake()

    def _received(self, data: bytes, now: float) -> None:
        self.bytes_in += len(data)
        if self.count_only:
            return
        if self.record is not None:
            self.record.append(data)
        try:
            self.decoder.feed(data)
            while (frame := self.decoder.next_frame()) is not None:
                if frame.type == "ping":
                    self.write(PONG)
                elif self.handler is not None:
                    self.handler(self, frame, now)
                else:
                    self.inbox.append(frame)
        except ProtocolError as exc:
            self._lost(f"protocol error from server: {exc}")

    # sending
    def write(self, data: bytes) -> None:
        """Send encoded frames (what the socket cannot take yet is queued, in order)."""
        if self.closed:
            return
        self._out.append(data)
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        while self._out and not self.closed:
            data = self._out[0]
            try:
                sent = self.sock.send(data)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                # OpenSSL wants the same bytes again once the socket is writable.
                if not self._writing:
                    self.loop.add_writer(self.fd, self._flush)
                    self._writing = True
                return
            except (ssl.SSLError, OSError) as exc:
                self._lost(f"connection error: {exc}")
                return
            if sent < len(data):
                self._out[0] = data[sent:]
            else:
                self._out.popleft()
        if self._writing:
            self.loop.remove_writer(self.fd)
            self._writing = False

    def request(self, type_: str, **fields: Any) -> int:
        """Send a frame with the next request id; returns the id."""
        self.rid += 1
        self.write(encode(type_, rid=self.rid, **fields))
        return self.rid

    def abort(self) -> None:
        """Drop the connection at once."""
        self._lost(self.error)

    def _lost(self, error: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        if error is not None and self.error is None:
            self.error = error
        if self._reading:
            self.loop.remove_reader(self.fd)
        if self._writing:
            self.loop.remove_writer(self.fd)
        self._reading = self._writing = False
        self._out.clear()
        self.sock.close()
        self._wake()
        if self.on_lost is not None:
            self.on_lost(self)

    # receiving, for set-up steps
    def set_handler(self, handler: FrameHandler | None) -> None:
        """Route frames to ``handler``, first those already queued."""
        self.handler = handler
        if handler is not None:
            now = time.perf_counter()
            while self.inbox:
                handler(self, self.inbox.popleft(), now)

    async def expect(self, type_: str, *, timeout: float = EXPECT_TIMEOUT, **match: Any) -> Frame:
        """The next queued frame of ``type_`` with fields ``match``; others are dropped.

        BenchError on an ``error`` or ``bye`` frame, a closed connection or the timeout.
        """

        def wanted(frame: Frame) -> bool:
            if frame.type == type_ and all(frame.get(k) == v for k, v in match.items()):
                return True
            if frame.type in ("error", "bye"):
                raise BenchError(
                    f"{self.name}: {frame.type} {dict(frame.fields)} while waiting for {type_}"
                )
            return False

        frame = await self._next_frame(wanted, timeout)
        if frame is not None:
            return frame
        if self.closed:
            raise BenchError(f"{self.name}: closed ({self.error}) while waiting for {type_}")
        raise BenchError(f"{self.name}: no {type_} {match} within {timeout} s")

    async def wait_for_answer(self, rid: int, *, timeout: float) -> Frame | None:
        """The frame answering request ``rid`` (an ``error`` too), or an ``error`` or
        ``bye`` without ``rid`` (the connection refused as a whole); others are dropped.

        None if the connection closed first or nothing came within ``timeout`` s
        (:attr:`closed` tells the two apart).
        """

        def wanted(frame: Frame) -> bool:
            rid_of = frame.get("rid")
            return rid_of == rid or (rid_of is None and frame.type in ("error", "bye"))

        return await self._next_frame(wanted, timeout)

    async def _next_frame(self, wanted: Callable[[Frame], bool], timeout: float) -> Frame | None:
        """The next queued frame ``wanted`` accepts, dropping the others; None once the
        connection is closed or ``timeout`` s have passed."""
        deadline = self.loop.time() + timeout
        while True:
            while self.inbox:
                frame = self.inbox.popleft()
                if wanted(frame):
                    return frame
            remaining = deadline - self.loop.time()
            if self.closed or remaining <= 0:
                return None
            self.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, remaining)
            except TimeoutError:
                pass
            finally:
                self.waiter = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def open_client(port: int, ctx: ssl.SSLContext, name: str) -> Client:
    """A TLS connection to the server, handshake done."""
    return await Client.connect(port, ctx, name)


async def login(
    port: int,
    ctx: ssl.SSLContext,
    name: str,
    *,
    password: str | None,
    source: str | None = None,
    rcvbuf: int | None = None,
) -> Client:
    """Connect, log in (password, or certificate when ``password`` is None), see #general.

    ``replay: false`` skips the history replay on join, which no scenario measures.
    ``source`` and ``rcvbuf`` are as for :meth:`Client.connect`.
    """
    client = await Client.connect(port, ctx, name, source=source, rcvbuf=rcvbuf)
    try:
        await client.expect("hello")
        client.request("login", user=name, password=password, replay=False)
        await client.expect("welcome")
        joined = await client.expect("joined", room=ROOM)
        client.joined_count = int(joined.get("count") or 0)
    except BaseException:
        client.abort()
        raise
    return client


async def login_many(
    bench: Bench, server: ServerProcess, names: Sequence[str], *, in_flight: int = 50
) -> list[Client]:
    """Password-log in every name (registering it), at most ``in_flight`` at a time."""
    return await login_placed(bench, [(name, server.port) for name in names], in_flight=in_flight)


async def login_placed(
    bench: Bench, placed: Sequence[tuple[str, int]], *, in_flight: int = 50
) -> list[Client]:
    """Password-log in every name on its port (registering it), at most ``in_flight`` at
    a time; the clients come back in the order given."""
    sem = asyncio.Semaphore(in_flight)
    ctx = bench.client_context()

    async def one(name: str, port: int) -> Client:
        async with sem:
            return await login(port, ctx, name, password=password_of(name))

    results = await asyncio.gather(*(one(n, p) for n, p in placed), return_exceptions=True)
    clients = [r for r in results if isinstance(r, Client)]
    failures = [r for r in results if not isinstance(r, Client)]
    if failures:
        close_all(clients)
        raise BenchError(f"{len(failures)} of {len(placed)} logins failed: {failures[0]!r}")
    return clients


async def settle_quietly(
    clients: Sequence[Client], *, quiet: float = 0.5, limit: float = 60.0
) -> None:
    """Wait until no client has received anything for ``quiet`` s (at most ``limit`` s),
    dropping what arrives.

    In cluster mode join notices come from several servers at once, so how many
    each client will see cannot be counted in advance as :func:`settle_joins` does.
    """
    loop = asyncio.get_running_loop()
    last = loop.time()

    def on_frame(client: Client, frame: Frame, now: float) -> None:
        nonlocal last
        last = loop.time()

    for client in clients:
        client.set_handler(on_frame)
    deadline = loop.time() + limit
    while loop.time() - last < quiet:
        if loop.time() > deadline:
            raise BenchError(f"clients still receiving after {limit} s")
        await asyncio.sleep(quiet / 5)
    for client in clients:
        client.set_handler(None)


async def settle_joins(clients: Sequence[Client], *, timeout: float = 60.0) -> None:
    """Wait until every client has seen the join notice of everyone who logged in after it.

    Joins are serialised by the server, so a client whose ``joined`` counted
    ``k`` members sees exactly ``n - k`` join notices afterwards.
    """
    loop = asyncio.get_running_loop()
    need = sum(len(clients) - c.joined_count for c in clients)
    seen = 0
    settled: asyncio.Future[None] = loop.create_future()

    def on_frame(client: Client, frame: Frame, now: float) -> None:
        nonlocal seen
        if frame.type == "system" and frame.get("event") == "join":
            seen += 1
            if seen >= need and not settled.done():
                settled.set_result(None)

    for client in clients:
        client.set_handler(on_frame)
    if seen < need:
        try:
            await asyncio.wait_for(settled, timeout)
        except TimeoutError:
            raise BenchError(f"only {seen} of {need} join notices within {timeout} s") from None
    for client in clients:
        client.set_handler(None)


async def move_to_own_rooms(clients: Sequence[Client], prefix: str) -> list[str]:
    """Put each client alone in a room of its own, ``#{prefix}NN``, out of #general, and
    tag it with its index; returns the rooms' names.

    A message to such a room costs the server one echo and no fan-out.
    """
    rooms = []
    for i, client in enumerate(clients):
        client.tag = i
        rooms.append(f"#{prefix}{i:02d}")
        client.request("join", room=rooms[-1])
        await client.expect("joined", room=rooms[-1])
        client.request("part", room=ROOM)
        await client.expect("parted")
    return rooms


def close_all(clients: Sequence[Client]) -> None:
    """Drop every connection (after the server has stopped: no quit-notice storm)."""
    for client in clients:
        client.abort()


def stamped_text(index: int, seq: int, *, size: int = 0) -> str:
    """A chat text that carries its send time (``time.perf_counter``, this process),
    padded with filler to ``size`` characters if it is shorter."""
    text = f"{time.perf_counter():.6f} {index}:{seq} {FILLER}"
    if len(text) < size:
        text = (text + (" " + FILLER) * (size // len(FILLER) + 1))[:size]
    return text


def sent_at(text: str) -> float:
    """The send time carried by a :func:`stamped_text`."""
    return float(text[: text.index(" ")])


async def paced_sender(
    client: Client,
    *,
    index: int,
    start: float,
    period: float,
    count: int,
    stop: Callable[[], bool] = lambda: False,
    room: str = ROOM,
    size: int = 0,
) -> int:
    """Send up to ``count`` stamped messages of at least ``size`` characters to ``room``,
    one every ``period`` s from ``start``.

    Returns how many were sent (fewer if ``stop()`` became true).
    """
    for seq in range(count):
        delay = start + seq * period - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop() or client.closed:
            return seq
        client.request("say", room=room, text=stamped_text(index, seq, size=size))
    return count
