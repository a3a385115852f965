#!/usr/bin/env python3
"""Load benchmarks for the securechat server (issue 6).

Usage::

    .venv/bin/python benchmarks/run.py [--scenario NAME ...] [--runs N] [--scale F] [--json OUT]

Strategy
--------
Every run of every scenario starts a *fresh* server subprocess
(``python -m securechat.server.cli``) on 127.0.0.1 with its own temporary
database and certificates made here (cached under ``benchmarks/.cache``), drives
it from this process and stops it with SIGTERM. The load generator is one
asyncio event loop in one thread; its clients are non-blocking
``ssl.SSLSocket`` objects served straight from the loop (``add_reader``), and
they speak the wire protocol through :mod:`securechat.wire.protocol` (``encode``
out, ``Decoder`` in).
Every password client shares one ``SSLContext``. The generator competes with
the server for the machine's cores, so every scenario reports both sides' CPU
time over its measured phase: the server's from ``/proc/PID/stat`` (utime +
stime, all threads) and the generator's from ``time.process_time()``, plus
what the rest of the machine used meanwhile (other people's work shows there).

Latencies are measured to the moment the bytes reached the recipient's
socket, from the kernel's receive timestamps: one generator process reading
99 copies one after the other would otherwise measure mostly itself. The
time until the generator had decoded every copy is reported too.

Every load loop is bounded twice, by a count and by a deadline, and stops by
itself; a server that dies or a client that stalls turns into an error in the
results, never a hang. The server subprocess is tied to this process
(``PR_SET_PDEATHSIG``), so it cannot outlive a killed benchmark.

``--scale`` multiplies every size (clients, messages, bytes, durations) for
smoke runs, with small floors so that each scenario still means something.
The figures, their definitions and the targets are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import gc
import hashlib
import json
import math
import os
import platform
import re
import resource
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization

from securechat.certs import (
    load_ca,
    make_ca,
    make_client_cert,
    make_server_cert,
    write_cert,
    write_key,
)
from securechat.errors import ProtocolError
from securechat.wire.protocol import FILE_CHUNK, FILE_WINDOW, Decoder, Frame, encode

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results.json"
DEFAULT_CACHE = HERE / ".cache"

ROOM = "#general"
HOST = "127.0.0.1"
SERVER_NAME = "localhost"

SERVER_START_TIMEOUT = 20.0
"""Seconds for a server subprocess to print its listening line."""
SERVER_STOP_TIMEOUT = 10.0
"""Seconds after SIGTERM before the server is killed (it promises 5)."""
EXPECT_TIMEOUT = 30.0
"""Seconds any single setup step (handshake, login, join) may take."""
DRAIN_TIMEOUT = 10.0
"""Seconds to wait for the last messages after the senders have stopped."""

PING = encode("ping")
PONG = encode("pong")
FILLER = "the quick brown fox jumps over the lazy dog"
"""Makes chat texts about 60 characters long, a typical chat line."""

CLK_TCK = os.sysconf("SC_CLK_TCK")


CAPACITY_ARGS = (
    "--connection-limit=127.0.0.0/8=1000000",
    "--message-burst=1000000",
    "--message-rate=1000000",
    "--registrations-per-ip=1000000",
)
"""Server options that take the per-address and per-account budgets out of the way."""


class BenchError(Exception):
    """A scenario could not run as designed (server died, a step timed out, ...)."""


# -- the server subprocess ---------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """The cached CA, the server's certificate and numbered client certificates."""

    directory: Path
    ca_pem: Path
    server_pem: Path
    server_key: Path

    def client_pem(self, index: int) -> Path:
        """Certificate and key (one PEM file) of client ``index``, common name cert_name()."""
        return self.directory / "clients" / f"{cert_name(index)}.pem"


def cert_name(index: int) -> str:
    """The user name in client certificate ``index``."""
    return f"c{index:05d}"


def prepare_pki(cache: Path, *, clients: int) -> Pki:
    """Make (or reuse) a CA, a server certificate and ``clients`` client certificates.

    Client certificates are written as one PEM file each (certificate then key)
    without the fsyncs of ``write_cert``/``write_key``: they are a cache, and
    thousands of fsyncs would dominate the set-up. A lock file keeps two
    benchmark processes from generating at once.
    """
    directory = cache / "pki-v1"
    (directory / "clients").mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pki = Pki(
            directory, directory / "ca.pem", directory / "server.pem", directory / "server.key"
        )
        fresh = not (pki.ca_pem.exists() and pki.server_pem.exists() and pki.server_key.exists())
        if fresh:
            for old in (directory / "clients").glob("*.pem"):
                old.unlink()
            ca_cert, ca_key = make_ca(common_name="securechat benchmark CA")
            write_cert(directory / "ca.pem", ca_cert)
            write_key(directory / "ca.key", ca_key)
            cert, key = make_server_cert(ca_cert, ca_key, hosts=(SERVER_NAME, HOST))
            write_cert(pki.server_pem, cert)
            write_key(pki.server_key, key)
        ca_cert, ca_key = load_ca(directory)
        for index in range(clients):
            path = pki.client_pem(index)
            if path.exists():
                continue
            cert, key = make_client_cert(ca_cert, ca_key, name=cert_name(index))
            pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            tmp.replace(path)
    return pki


def _die_with_parent() -> None:
    """In the server child: get SIGTERM if the benchmark process dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """``python -m securechat.server.cli`` on 127.0.0.1 with a fresh database."""

    def __init__(
        self,
        pki: Pki,
        workdir: Path,
        extra: Sequence[str],
        label: str,
        *,
        profile: Path | None = None,
    ) -> None:
        self.pki = pki
        self.profile = profile
        self.workdir = workdir
        self.extra = list(extra)
        self.label = label
        self.log_path = workdir / f"server-{label}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.exit_code: int | None = None
        self.problems: list[str] = []

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> ServerProcess:
        argv = [
            sys.executable,
            "-m",
            "securechat.server.cli",
            "--cert",
            str(self.pki.server_pem),
            "--key",
            str(self.pki.server_key),
            "--host",
            HOST,
            "--port",
            "0",
            "--db",
            str(self.workdir / f"{self.label}.db"),
            "--log-level",
            "WARNING",
            # The capacity scenarios are thousands of clients and messages from this one
            # address, which the per-address and per-account budgets exist to refuse:
            # lift them here (the stall scenarios measure them on purpose).
            *CAPACITY_ARGS,
            *self.extra,
        ]
        with self.log_path.open("wb") as log:
            # preexec_fn only calls prctl; the benchmark starts servers from its one thread.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            match = re.search(r"listening on [^\s:]+:(\d+)", self.log_path.read_text("utf-8"))
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise BenchError(f"server exited at start: {self._log_tail()}")
            await asyncio.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise BenchError(f"server did not start in {SERVER_START_TIMEOUT} s: {self._log_tail()}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """SIGTERM, wait (the event loop keeps serving clients), kill if it overstays."""
        if self.proc is None or self.exit_code is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SERVER_STOP_TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.proc.poll() is None:
            self.problems.append(f"server ignored SIGTERM for {SERVER_STOP_TIMEOUT} s; killed")
            self.proc.kill()
        self.exit_code = self.proc.wait()
        if self.exit_code != 0:
            self.problems.append(f"server exit status {self.exit_code}")
        for line in self.log_path.read_text("utf-8", "replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                self.problems.append(f"server log: {line[:300]}")

    def check_alive(self) -> None:
        """BenchError if the server has exited."""
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"server died: {self._log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the server so far."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError as exc:
            raise BenchError(f"server process is gone: {self._log_tail()}") from exc
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def rss_kib(self) -> int:
        """Resident set size (VmRSS)."""
        return _status_field(self.pid, "VmRSS")

    def threads(self) -> int:
        """Number of threads."""
        return _status_field(self.pid, "Threads")

    def fds(self) -> int:
        """Number of open file descriptors."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-2000:]
        except OSError:
            return "(no log)"


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {name} in /proc/{pid}/status")


# -- the load generator's clients --------------------------------------------------------

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
    join notice).

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
        self._out: deque[bytes] = deque()
        self._reading = False
        self._writing = False

    @classmethod
    async def connect(cls, port: int, ctx: ssl.SSLContext, name: str) -> Client:
        """A TLS connection to the server, handshake done."""
        loop = asyncio.get_running_loop()
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(loop.sock_connect(raw, (HOST, port)), EXPECT_TIMEOUT)
            sock = ctx.wrap_socket(raw, server_hostname=SERVER_NAME, do_handshake_on_connect=False)
        except BaseException:
            raw.close()
            raise
        client = cls(name, sock, loop)
        try:
            await asyncio.wait_for(client._handshake(), EXPECT_TIMEOUT)
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
        deadline = self.loop.time() + timeout
        while True:
            while self.inbox:
                frame = self.inbox.popleft()
                if frame.type == type_ and all(frame.get(k) == v for k, v in match.items()):
                    return frame
                if frame.type in ("error", "bye"):
                    raise BenchError(
                        f"{self.name}: {frame.type} {dict(frame.fields)} while waiting for {type_}"
                    )
            if self.closed:
                raise BenchError(f"{self.name}: closed ({self.error}) while waiting for {type_}")
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {type_} {match} within {timeout} s")
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


async def login(port: int, ctx: ssl.SSLContext, name: str, *, password: str | None) -> Client:
    """Connect, log in (password, or certificate when ``password`` is None), see #general.

    ``replay: false`` skips the history replay on join, which no scenario measures.
    """
    client = await open_client(port, ctx, name)
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
    sem = asyncio.Semaphore(in_flight)
    ctx = bench.client_context()

    async def one(name: str) -> Client:
        async with sem:
            return await login(server.port, ctx, name, password=f"pw-{name}")

    results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
    clients = [r for r in results if isinstance(r, Client)]
    failures = [r for r in results if not isinstance(r, Client)]
    if failures:
        close_all(clients)
        raise BenchError(f"{len(failures)} of {len(names)} logins failed: {failures[0]!r}")
    return clients


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


def close_all(clients: Sequence[Client]) -> None:
    """Drop every connection (after the server has stopped: no quit-notice storm)."""
    for client in clients:
        client.abort()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@contextmanager
def measuring(server: ServerProcess) -> Iterator[dict[str, float]]:
    """CPU of the server and the generator over the block, garbage collector off.

    The generator makes millions of short-lived frames and no cycles; its
    collector would only add noise to the generator's own CPU time. With
    ``--py-spy DIR`` the server is sampled by py-spy over the block (which
    costs it CPU: profile runs are for finding hot spots, not for figures).
    """
    out: dict[str, float] = {}
    spy = _start_py_spy(server) if server.profile is not None else None
    gc.collect()
    gc.disable()
    server_cpu = server.cpu_seconds()
    gen_cpu = time.process_time()
    busy = machine_busy_seconds()
    start = time.perf_counter()
    try:
        yield out
    finally:
        wall = time.perf_counter() - start
        out["server_cpu_s"] = server.cpu_seconds() - server_cpu
        out["gen_cpu_s"] = time.process_time() - gen_cpu
        out["wall_s"] = wall
        # Everything else the machine did meanwhile: other processes, and kernel
        # work charged to neither side. Other people's test runs show up here.
        other = machine_busy_seconds() - busy - out["server_cpu_s"] - out["gen_cpu_s"]
        out["other_cores"] = max(0.0, other) / max(wall, 1e-9)
        gc.enable()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


async def wait_for_quiet(limit: float, *, threshold: float = 0.3) -> float:
    """Wait (at most ``limit`` s) for a second in which the machine is under ``threshold``
    cores busy; returns the busy cores of the last second measured.

    Other people's work on a shared machine would otherwise land in the figures.
    """
    deadline = time.monotonic() + limit
    while True:
        before, began = machine_busy_seconds(), time.perf_counter()
        await asyncio.sleep(1.0)
        cores = (machine_busy_seconds() - before) / (time.perf_counter() - began)
        if cores < threshold or time.monotonic() >= deadline:
            return cores


def _start_py_spy(server: ServerProcess) -> subprocess.Popen[bytes]:
    """``py-spy record`` (collapsed stacks, per thread) of the server, until SIGINT."""
    assert server.profile is not None
    server.profile.mkdir(parents=True, exist_ok=True)
    stem = f"{server.workdir.name}-{server.label}-{int(time.time())}"
    py_spy = Path(sys.executable).with_name("py-spy")
    spy = subprocess.Popen(
        [
            str(py_spy) if py_spy.exists() else "py-spy",
            "record",
            "--pid",
            str(server.pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--output",
            str(server.profile / f"{stem}.txt"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let it attach before the measured phase begins
    return spy


def stamped_text(index: int, seq: int) -> str:
    """A chat text that carries its send time (``time.perf_counter``, this process)."""
    return f"{time.perf_counter():.6f} {index}:{seq} {FILLER}"


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
) -> int:
    """Send up to ``count`` stamped messages, one every ``period`` s from ``start``.

    Returns how many were sent (fewer if ``stop()`` became true).
    """
    for seq in range(count):
        delay = start + seq * period - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop() or client.closed:
            return seq
        client.request("say", room=ROOM, text=stamped_text(index, seq))
    return count


# -- scenarios ---------------------------------------------------------------------------

Figures = dict[str, Any]


@dataclass
class Bench:
    """What a scenario run gets: the scale, the certificates and a scratch directory."""

    scale: float
    pki: Pki
    workdir: Path
    profile: Path | None = None
    server_args: tuple[str, ...] = ()
    _context: ssl.SSLContext | None = None

    def n(self, full: float, minimum: float) -> int:
        """``full`` scaled, at least ``minimum``."""
        return max(int(minimum), round(full * self.scale))

    def seconds(self, full: float, minimum: float) -> float:
        """A duration scaled, at least ``minimum``."""
        return max(minimum, full * self.scale)

    def server(self, *extra: str, label: str = "server") -> ServerProcess:
        """A fresh server subprocess (use with ``async with``)."""
        return ServerProcess(
            self.pki, self.workdir, (*extra, *self.server_args), label, profile=self.profile
        )

    def client_context(self) -> ssl.SSLContext:
        """The one SSLContext shared by every password client."""
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.pki.ca_pem))
        return self._context


async def scenario_fanout(bench: Bench) -> Figures:
    """100 clients in #general, 10 pipelining senders, 10,000 messages, everyone reads all."""
    n_clients = bench.n(100, 3)
    n_senders = min(n_clients, bench.n(10, 2))
    per_sender = max(1, bench.n(10_000, 20) // n_senders)
    total = per_sender * n_senders
    window = 50
    expected = total * n_clients  # 99 copies and one echo per message
    loop = asyncio.get_running_loop()
    async with bench.server() as server:
        clients = await login_many(bench, server, [f"fan{i:03d}" for i in range(n_clients)])
        try:
            await settle_joins(clients)
            senders = clients[:n_senders]
            outgoing = [
                [
                    encode("say", rid=seq + 1, room=ROOM, text=f"{i}:{seq} {FILLER}")
                    for seq in range(per_sender)
                ]
                for i in range(n_senders)
            ]
            sent = [0] * n_senders
            acked = [0] * n_senders
            copies: dict[int, int] = {}
            received = 0
            errors = 0
            last = 0.0
            done: asyncio.Future[None] = loop.create_future()

            def pump(i: int) -> None:
                upto = min(per_sender, acked[i] + window)
                if sent[i] < upto:
                    senders[i].write(b"".join(outgoing[i][sent[i] : upto]))
                    sent[i] = upto

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal received, errors, last
                if frame.type == "message":
                    mid = frame.fields["id"]
                    copies[mid] = copies.get(mid, 0) + 1
                    received += 1
                    last = now
                    if client.tag >= 0 and "rid" in frame.fields:
                        acked[client.tag] += 1
                        pump(client.tag)
                    if received >= expected and not done.done():
                        done.set_result(None)
                elif frame.type == "error":
                    errors += 1

            for i, sender in enumerate(senders):
                sender.tag = i
            for client in clients:
                client.set_handler(on_frame)
            with measuring(server) as cpu:
                start = time.perf_counter()
                for i in range(n_senders):
                    pump(i)
                try:
                    await asyncio.wait_for(done, 60 + 120 * bench.scale)
                except TimeoutError:
                    pass
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    elapsed = max(1e-9, (last or time.perf_counter()) - start)
    complete = sum(1 for c in copies.values() if c >= n_clients)
    return {
        "server_us_per_delivery": cpu["server_cpu_s"] * 1e6 / max(1, received),
        "deliveries_per_s": received / elapsed,
        "messages_per_s": total / elapsed,
        "lost": total - complete,
        "gen_us_per_delivery": cpu["gen_cpu_s"] * 1e6 / max(1, received),
        "server_cores": cpu["server_cpu_s"] / elapsed,
        "gen_cores": cpu["gen_cpu_s"] / elapsed,
        "clients": n_clients,
        "messages": total,
        "deliveries": received,
        "errors": errors,
        **cpu,
        "problems": server.problems,
    }


async def scenario_latency(bench: Bench) -> Figures:
    """100 clients, 10 senders, 200 msg/s in total for 10 s: time until every recipient has it."""
    n_clients = bench.n(100, 3)
    n_senders = min(n_clients, bench.n(10, 2))
    rate = 200.0
    duration = bench.seconds(10.0, 0.5)
    per_sender = max(1, round(rate * duration / n_senders))
    total = per_sender * n_senders
    recipients = n_clients - 1
    loop = asyncio.get_running_loop()
    async with bench.server() as server:
        clients = await login_many(bench, server, [f"lat{i:03d}" for i in range(n_clients)])
        try:
            await settle_joins(clients)
            # Per message text: copies; the latest and the earliest arrival in the
            # recipients' sockets (kernel stamps); the latest as decoded here.
            stats: dict[str, list[float]] = {}
            received = 0
            errors = 0
            done: asyncio.Future[None] = loop.create_future()

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal received, errors
                if frame.type == "message":
                    if client.tag >= 0 and "rid" in frame.fields:
                        return  # the sender's echo
                    text = frame.fields["text"]
                    sent = sent_at(text)
                    arrived = (client.arrived or now) - sent
                    entry = stats.get(text)
                    if entry is None:
                        stats[text] = [1, arrived, arrived, now - sent]
                    else:
                        entry[0] += 1
                        entry[1] = max(entry[1], arrived)
                        entry[2] = min(entry[2], arrived)
                        entry[3] = max(entry[3], now - sent)
                    received += 1
                    if received >= total * recipients and not done.done():
                        done.set_result(None)
                elif frame.type == "error":
                    errors += 1

            for i, sender in enumerate(clients[:n_senders]):
                sender.tag = i
            for client in clients:
                client.stamp_arrivals()
                client.set_handler(on_frame)
            with measuring(server) as cpu:
                start = time.perf_counter() + 0.05
                await asyncio.gather(
                    *(
                        paced_sender(
                            sender,
                            index=i,
                            start=start + i / rate,
                            period=n_senders / rate,
                            count=per_sender,
                        )
                        for i, sender in enumerate(clients[:n_senders])
                    )
                )
                try:
                    await asyncio.wait_for(done, DRAIN_TIMEOUT)
                except TimeoutError:
                    pass
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    complete = [e for e in stats.values() if e[0] >= recipients]
    worst = [e[1] * 1000 for e in complete]
    first = [e[2] * 1000 for e in complete]
    decoded = [e[3] * 1000 for e in complete]
    deliveries = total * n_clients
    return {
        "p50_ms": percentile(worst, 50),
        "p99_ms": percentile(worst, 99),
        "max_ms": max(worst, default=0.0),
        "first_p50_ms": percentile(first, 50),
        "spread_p50_ms": percentile([e[1] * 1000 - e[2] * 1000 for e in complete], 50),
        "decoded_p50_ms": percentile(decoded, 50),
        "decoded_p99_ms": percentile(decoded, 99),
        "server_us_per_delivery": cpu["server_cpu_s"] * 1e6 / deliveries,
        "gen_us_per_delivery": cpu["gen_cpu_s"] * 1e6 / deliveries,
        "lost": total - len(complete),
        "clients": n_clients,
        "messages": total,
        "errors": errors,
        "server_cores": cpu["server_cpu_s"] / cpu["wall_s"],
        "gen_cores": cpu["gen_cpu_s"] / cpu["wall_s"],
        **cpu,
        "problems": server.problems,
    }


async def scenario_connect(bench: Bench) -> Figures:
    """5,000 idle mutual-TLS clients log in, 500 in flight; then two smaller runs.

    The smaller runs split the cost: TLS handshakes alone (no login, so no join
    notices) on a mutual-TLS server, and password logins, each registering a new
    account (one scrypt hash apiece).
    """
    n_clients = bench.n(5000, 20)
    in_flight = bench.n(500, 5)
    n_handshakes = bench.n(1000, 10)
    n_password = bench.n(200, 4)
    # Client contexts (one per certificate, about 1 ms and 25 KiB each) are built
    # before the clock starts: they are the generator's cost, not the server's.
    contexts = []
    for index in range(n_clients):
        ctx = ssl.create_default_context(cafile=str(bench.pki.ca_pem))
        ctx.load_cert_chain(str(bench.pki.client_pem(index)))
        contexts.append(ctx)
    figures: Figures = {"clients": n_clients}
    clients: list[Client] = []
    arrivals: list[float] = []
    failures: list[str] = []

    async def keepalive() -> None:
        # Idle clients do not decode what they receive, so they never see the
        # server's pings; a ping of their own every 10 s keeps them alive instead.
        while True:
            await asyncio.sleep(10.0)
            for client in clients:
                client.write(PING)

    async with bench.server("--client-ca", str(bench.pki.ca_pem), label="mtls") as server:
        sem = asyncio.Semaphore(in_flight)

        async def one(index: int) -> None:
            async with sem:
                try:
                    client = await login(
                        server.port, contexts[index], cert_name(index), password=None
                    )
                except (BenchError, OSError, ssl.SSLError, TimeoutError) as exc:
                    failures.append(repr(exc))
                    return
                client.count_only = True
                client.inbox.clear()
                clients.append(client)
                arrivals.append(time.perf_counter())

        keeper = asyncio.create_task(keepalive())
        try:
            rss_before = server.rss_kib()
            with measuring(server) as cpu:
                start = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(n_clients)))
            rss_after = server.rss_kib()
            threads, fds = server.threads(), server.fds()
            server.check_alive()
            # Let the join notices still queued drain, then look at the memory again.
            settle_start = time.perf_counter()
            settle_cpu = await wait_until_idle(server, limit=120.0)
            settled_rss = server.rss_kib()
            settle_s = time.perf_counter() - settle_start
        finally:
            keeper.cancel()
            # Stop the server first: its shutdown says bye to everyone at once, rather
            # than handling 5,000 separate disconnects while the next run waits.
            await server.stop()
            close_all(clients)
    problems = list(server.problems)
    logged_in = len(clients)
    elapsed = max(1e-9, (arrivals[-1] if arrivals else time.perf_counter()) - start)
    decile = max(1, logged_in // 10)
    figures.update(
        {
            "clients_per_s": logged_in / elapsed,
            "rss_kib_per_conn": (rss_after - rss_before) / max(1, logged_in),
            "rss_kib_per_conn_settled": (settled_rss - rss_before) / max(1, logged_in),
            "peak_threads": threads,
            "peak_fds": fds,
            "lost": n_clients - logged_in,
            "first_decile_per_s": decile / max(1e-9, arrivals[decile - 1] - start)
            if arrivals
            else 0.0,
            "last_decile_per_s": decile / max(1e-9, arrivals[-1] - arrivals[-decile - 1])
            if len(arrivals) > decile
            else 0.0,
            "server_ms_per_conn": cpu["server_cpu_s"] * 1000 / max(1, logged_in),
            "gen_ms_per_conn": cpu["gen_cpu_s"] * 1000 / max(1, logged_in),
            "notice_mib_received": sum(c.bytes_in for c in clients) / 2**20,
            "settle_s": settle_s,
            "settle_server_cpu_s": settle_cpu,
            **cpu,
            "failures": failures[:5],
        }
    )
    clients.clear()

    # TLS alone: handshake and hello, no login (so no account and no join notice).
    async with bench.server("--client-ca", str(bench.pki.ca_pem), label="tls") as server:
        bare: list[Client] = []
        try:
            sem = asyncio.Semaphore(in_flight)

            async def handshake(index: int) -> None:
                async with sem:
                    client = await open_client(server.port, contexts[index], cert_name(index))
                    bare.append(client)
                    await client.expect("hello")
                    client.count_only = True

            tls_rss_before = server.rss_kib()
            with measuring(server) as tls_cpu:
                await asyncio.gather(*(handshake(i) for i in range(n_handshakes)))
            tls_rss = (server.rss_kib() - tls_rss_before) / n_handshakes
            server.check_alive()
        finally:
            await server.stop()
            close_all(bare)
    problems += server.problems
    figures["tls_handshakes_per_s"] = n_handshakes / tls_cpu["wall_s"]
    figures["tls_server_ms_per_handshake"] = tls_cpu["server_cpu_s"] * 1000 / n_handshakes
    figures["tls_gen_ms_per_handshake"] = tls_cpu["gen_cpu_s"] * 1000 / n_handshakes
    figures["tls_rss_kib_per_conn"] = tls_rss

    # Password logins: each registers a new account, one scrypt hash apiece.
    async with bench.server(label="password") as server:
        pw_clients: list[Client] = []
        try:
            with measuring(server) as pw_cpu:
                pw_clients = await login_many(
                    bench, server, [f"pw{i:04d}" for i in range(n_password)], in_flight=in_flight
                )
            server.check_alive()
        finally:
            await server.stop()
            close_all(pw_clients)
    problems += server.problems
    figures["password_logins_per_s"] = n_password / pw_cpu["wall_s"]
    figures["password_server_ms_per_login"] = pw_cpu["server_cpu_s"] * 1000 / n_password
    figures["problems"] = problems
    return figures


async def wait_until_idle(server: ServerProcess, *, limit: float) -> float:
    """Wait (at most ``limit`` s) until the server uses under 5 % of a core for 0.5 s.

    Returns the server CPU seconds spent meanwhile.
    """
    start_cpu = server.cpu_seconds()
    deadline = time.monotonic() + limit
    previous = start_cpu
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = server.cpu_seconds()
        if now - previous < 0.025:
            break
        previous = now
    return server.cpu_seconds() - start_cpu


async def scenario_history(bench: Bench) -> Figures:
    """A fresh client fetches the latest 500 of 1,200 room messages, 50 times."""
    n_fill = bench.n(1200, 12)
    limit = bench.n(500, 5)
    fetches = bench.n(50, 3)
    window = 100
    loop = asyncio.get_running_loop()
    async with bench.server() as server:
        clients: list[Client] = []
        try:
            (filler,) = await login_many(bench, server, ["filler"])
            clients.append(filler)
            # Fill the room, pipelined; every echo is an acknowledged, stored message.
            acked = 0
            sent = 0
            filled: asyncio.Future[None] = loop.create_future()

            def pump() -> None:
                nonlocal sent
                upto = min(n_fill, acked + window)
                if sent < upto:
                    filler.write(
                        b"".join(
                            encode("say", rid=s + 1, room=ROOM, text=f"history {s} {FILLER}")
                            for s in range(sent, upto)
                        )
                    )
                    sent = upto

            def on_fill(client: Client, frame: Frame, now: float) -> None:
                nonlocal acked
                if frame.type == "message" and "rid" in frame.fields:
                    acked += 1
                    pump()
                    if acked >= n_fill and not filled.done():
                        filled.set_result(None)
                elif frame.type == "error" and not filled.done():
                    filled.set_exception(BenchError(f"fill refused: {dict(frame.fields)}"))

            filler.set_handler(on_fill)
            pump()
            await asyncio.wait_for(filled, 60 + 60 * bench.scale)

            (reader,) = await login_many(bench, server, ["reader"])
            clients.append(reader)
            rows = 0
            answer: asyncio.Future[float] | None = None
            current = 0

            def on_history(client: Client, frame: Frame, now: float) -> None:
                nonlocal rows
                if frame.fields.get("rid") != current:
                    return
                if frame.type == "message":
                    rows += 1
                elif frame.type in ("history_end", "error") and answer and not answer.done():
                    answer.set_result(now)

            reader.set_handler(on_history)
            times: list[float] = []
            short = 0
            with measuring(server) as cpu:
                for k in range(fetches):
                    if k == fetches - 1:
                        reader.record = []
                    rows = 0
                    answer = loop.create_future()
                    begin = time.perf_counter()
                    current = reader.request("history", room=ROOM, limit=limit)
                    end = await asyncio.wait_for(answer, EXPECT_TIMEOUT)
                    times.append((end - begin) * 1000)
                    if rows != limit:
                        short += 1
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    recorded = b"".join(reader.record or [])
    decode_start = time.perf_counter()
    decoder = Decoder()
    decoder.feed(recorded)
    while decoder.next_frame() is not None:
        pass
    decode_ms = (time.perf_counter() - decode_start) * 1000
    return {
        "p50_ms": percentile(times, 50),
        "p90_ms": percentile(times, 90),
        "max_ms": max(times, default=0.0),
        "lost": short,
        "server_ms_per_fetch": cpu["server_cpu_s"] * 1000 / fetches,
        "gen_ms_per_fetch": cpu["gen_cpu_s"] * 1000 / fetches,
        "gen_decode_ms": decode_ms,
        "answer_kib": len(recorded) / 1024,
        "room_messages": n_fill,
        "limit": limit,
        "fetches": fetches,
        **cpu,
        "problems": server.problems,
    }


async def _durable_run(bench: Bench, durability: str) -> Figures:
    n_clients = bench.n(10, 2)
    window = 100
    duration = bench.seconds(5.0, 0.3)
    loop = asyncio.get_running_loop()
    async with bench.server("--durability", durability, label=durability) as server:
        names = [f"dur{i:02d}" for i in range(n_clients)]
        clients = await login_many(bench, server, names)
        try:
            # Each client talks in a room of its own: a message costs one echo, so the
            # figure is accept -> group commit -> acknowledgement, not fan-out.
            for i, client in enumerate(clients):
                client.tag = i
                client.request("join", room=f"#dur{i:02d}")
                await client.expect("joined", room=f"#dur{i:02d}")
                client.request("part", room=ROOM)
                await client.expect("parted")
            text = f"durable {FILLER}"
            sent = [0] * n_clients
            acked = [0] * n_clients
            errors = 0
            last = 0.0
            stop_at = 0.0
            done: asyncio.Future[None] = loop.create_future()

            def pump(i: int) -> None:
                if time.perf_counter() >= stop_at:
                    return
                upto = acked[i] + window
                if sent[i] < upto:
                    room = f"#dur{i:02d}"
                    clients[i].write(
                        b"".join(
                            encode("say", rid=s + 1, room=room, text=text)
                            for s in range(sent[i], upto)
                        )
                    )
                    sent[i] = upto

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal errors, last
                if frame.type == "message" and "rid" in frame.fields:
                    acked[client.tag] += 1
                    last = now
                    pump(client.tag)
                    if now >= stop_at and sum(acked) >= sum(sent) and not done.done():
                        done.set_result(None)
                elif frame.type == "error":
                    errors += 1

            for client in clients:
                client.set_handler(on_frame)
            with measuring(server) as cpu:
                start = time.perf_counter()
                stop_at = start + duration
                for i in range(n_clients):
                    pump(i)
                try:
                    await asyncio.wait_for(done, duration + DRAIN_TIMEOUT + 30)
                except TimeoutError:
                    pass
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    total = sum(acked)
    return {
        "msgs_per_s": total / max(1e-9, last - start),
        "lost": sum(sent) - total,
        "errors": errors,
        "server_us_per_msg": cpu["server_cpu_s"] * 1e6 / max(1, total),
        "server_cores": cpu["server_cpu_s"] / cpu["wall_s"],
        "gen_cores": cpu["gen_cpu_s"] / cpu["wall_s"],
        "gen_us_per_msg": cpu["gen_cpu_s"] * 1e6 / max(1, total),
        "messages": total,
        **cpu,
        "problems": server.problems,
    }


async def scenario_durable(bench: Bench) -> Figures:
    """Acknowledged messages/s with group commit, ``--durability normal`` then ``full``."""
    normal = await _durable_run(bench, "normal")
    full = await _durable_run(bench, "full")
    figures: Figures = {}
    for suffix, result in (("normal", normal), ("full", full)):
        for key, value in result.items():
            figures[f"{key}_{suffix}"] = value
    figures["lost"] = normal["lost"] + full["lost"]
    figures["problems"] = normal["problems"] + full["problems"]
    return figures


async def scenario_files(bench: Bench) -> Figures:
    """A 200 MiB transfer alice -> bob while carol and dave chat at 100 msg/s."""
    mib = bench.n(200, 2)
    size = mib * 2**20
    block = os.urandom(2**20)  # the file is this MiB repeated: TLS cost does not care
    digest = hashlib.sha256()
    for _ in range(mib):
        digest.update(block)
    sha256 = digest.hexdigest()
    chat_rate = 100.0
    loop = asyncio.get_running_loop()
    async with bench.server() as server:
        clients = await login_many(bench, server, ["alice", "bob", "carol", "dave"])
        alice, bob, carol, dave = clients
        try:
            await settle_joins(clients)
            for i, client in enumerate(clients):
                client.tag = i
            tid = 0
            sent = 0
            acked = 0
            done_sent = False
            received = 0
            hasher = hashlib.sha256()
            offer: asyncio.Future[int] = loop.create_future()
            result: asyncio.Future[tuple[float, bool]] = loop.create_future()
            # Chat latency by where it arrived (kernel stamps), and as decoded here.
            chat_latency: dict[str, list[float]] = {
                "other": [],
                "bob": [],
                "alice": [],
                "other_decoded": [],
            }
            copies: dict[str, int] = {}
            transferring = False

            def fail(why: str) -> None:
                if not result.done():
                    result.set_exception(BenchError(why))

            def pump() -> None:
                nonlocal sent, done_sent
                while sent < size:
                    n = min(FILE_CHUNK, size - sent)
                    if sent + n - acked > FILE_WINDOW:
                        return
                    at = sent % len(block)
                    alice.write(encode("file_chunk", block[at : at + n], id=tid, offset=sent))
                    sent += n
                if not done_sent:
                    done_sent = True
                    alice.write(encode("file_done", id=tid))

            def chat(client: Client, frame: Frame, now: float) -> None:
                if "rid" in frame.fields:
                    return  # a chatter's own echo
                text = frame.fields["text"]
                role = client.name if client.name in ("alice", "bob") else "other"
                sent = sent_at(text)
                chat_latency[role].append(((client.arrived or now) - sent) * 1000)
                if role == "other":
                    chat_latency["other_decoded"].append((now - sent) * 1000)
                copies[text] = copies.get(text, 0) + 1

            def on_alice(client: Client, frame: Frame, now: float) -> None:
                nonlocal tid, acked
                kind = frame.type
                if kind == "file_ack":
                    acked = max(acked, int(frame.fields["bytes"]))
                    pump()
                elif kind == "message":
                    chat(client, frame, now)
                elif kind == "file_accepted":
                    pump()
                elif kind == "file_result" and not result.done():
                    result.set_result((now, frame.get("ok") is True))
                elif kind in ("file_failed", "error"):
                    fail(f"alice got {kind}: {dict(frame.fields)}")

            def on_bob(client: Client, frame: Frame, now: float) -> None:
                nonlocal received
                kind = frame.type
                if kind == "file_chunk":
                    hasher.update(frame.body)
                    received += len(frame.body)
                    client.write(encode("file_ack", id=frame.fields["id"], bytes=received))
                elif kind == "message":
                    chat(client, frame, now)
                elif kind == "file_done":
                    ok = hasher.hexdigest() == sha256
                    reason = None if ok else "SHA-256 mismatch"
                    client.write(encode("file_result", id=frame.fields["id"], ok=ok, reason=reason))
                elif kind == "file_offer" and not offer.done():
                    offer.set_result(int(frame.fields["id"]))
                elif kind in ("file_failed", "error"):
                    fail(f"bob got {kind}: {dict(frame.fields)}")

            def on_chatter(client: Client, frame: Frame, now: float) -> None:
                if frame.type == "message":
                    chat(client, frame, now)

            for client in clients:
                client.stamp_arrivals()
            alice.set_handler(on_alice)
            bob.set_handler(on_bob)
            carol.set_handler(on_chatter)
            dave.set_handler(on_chatter)
            alice.request("file_offer", to="bob", name="bench.bin", size=size, sha256=sha256)
            tid = await asyncio.wait_for(offer, EXPECT_TIMEOUT)
            cap = 60 + 300 * bench.scale  # seconds the transfer may take at most
            with measuring(server) as cpu:
                start = time.perf_counter()
                transferring = True
                bob.request("file_accept", id=tid, offset=0)
                chatters = [
                    paced_sender(
                        chatter,
                        index=i,
                        start=start + i / chat_rate,
                        period=2 / chat_rate,
                        count=int(cap * chat_rate / 2),
                        stop=lambda: not transferring,
                    )
                    for i, chatter in enumerate((carol, dave))
                ]
                chat_task = asyncio.gather(*chatters)
                try:
                    end, ok = await asyncio.wait_for(result, cap)
                except BaseException:
                    chat_task.cancel()
                    raise
                finally:
                    transferring = False
                chat_sent = sum(await chat_task)
            # Chat still in flight when the transfer ended: give it a moment to arrive.
            drain_until = time.monotonic() + DRAIN_TIMEOUT
            while time.monotonic() < drain_until and (
                len(copies) < chat_sent or min(copies.values(), default=0) < 3
            ):
                await asyncio.sleep(0.02)
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    elapsed = end - start
    return {
        "mib_per_s": mib / elapsed,
        "chat_p99_ms": percentile(chat_latency["other"], 99),
        "chat_p50_ms": percentile(chat_latency["other"], 50),
        "chat_p99_at_recipient_ms": percentile(chat_latency["bob"], 99),
        "chat_p99_at_sender_ms": percentile(chat_latency["alice"], 99),
        "chat_decoded_p99_ms": percentile(chat_latency["other_decoded"], 99),
        "hash_ok": 1 if ok else 0,
        "lost": chat_sent - sum(1 for c in copies.values() if c >= 3) + (0 if ok else 1),
        "chat_messages": chat_sent,
        "file_mib": mib,
        "transfer_s": elapsed,
        "server_cores": cpu["server_cpu_s"] / elapsed,
        "gen_cores": cpu["gen_cpu_s"] / elapsed,
        **cpu,
        "problems": server.problems,
    }


# -- figures, targets, runner ------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A figure shown in the table, with its target if it has one."""

    key: str
    label: str
    target: tuple[str, float] | None = None

    def verdict(self, value: float) -> str:
        """``met``, ``not met`` or empty (no target)."""
        if self.target is None:
            return ""
        op, bound = self.target
        ok = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]
        return "met" if ok else "not met"


@dataclass(frozen=True)
class Scenario:
    """A scenario's function and the figures its table rows show."""

    run: Callable[[Bench], Awaitable[Figures]]
    figures: tuple[Figure, ...]
    certificates: int = 0


SCENARIOS: dict[str, Scenario] = {
    "fanout": Scenario(
        scenario_fanout,
        (
            Figure("server_us_per_delivery", "server CPU µs per delivery", ("<=", 1.7)),
            Figure("deliveries_per_s", "deliveries/s"),
            Figure("lost", "messages lost", ("==", 0)),
            Figure("gen_us_per_delivery", "generator CPU µs per delivery"),
            Figure("server_cores", "server CPU (cores busy)"),
            Figure("gen_cores", "generator CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
        ),
    ),
    "latency": Scenario(
        scenario_latency,
        (
            Figure("p50_ms", "p50 ms until every recipient has it"),
            Figure("p99_ms", "p99 ms until every recipient has it", ("<=", 4.5)),
            Figure("max_ms", "max ms until every recipient has it"),
            Figure("first_p50_ms", "p50 ms until the first recipient has it"),
            Figure("decoded_p50_ms", "p50 ms until the generator decoded all 99"),
            Figure("decoded_p99_ms", "p99 ms until the generator decoded all 99"),
            Figure("server_us_per_delivery", "server CPU µs per delivery"),
            Figure("gen_us_per_delivery", "generator CPU µs per delivery"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "messages lost", ("==", 0)),
        ),
    ),
    "connect": Scenario(
        scenario_connect,
        (
            Figure("clients_per_s", "mutual-TLS logins/s", (">=", 700)),
            Figure("rss_kib_per_conn", "server RSS growth KiB per connection", ("<=", 30)),
            Figure("rss_kib_per_conn_settled", "... once join notices drained (KiB)"),
            Figure("first_decile_per_s", "logins/s, first 10 %"),
            Figure("last_decile_per_s", "logins/s, last 10 %"),
            Figure("server_ms_per_conn", "server CPU ms per login"),
            Figure("gen_ms_per_conn", "generator CPU ms per login"),
            Figure("peak_threads", "server threads at peak"),
            Figure("peak_fds", "server fds at peak"),
            Figure("notice_mib_received", "join notices received by the clients (MiB)"),
            Figure("tls_handshakes_per_s", "mutual-TLS handshakes/s without login"),
            Figure("tls_server_ms_per_handshake", "... server CPU ms per handshake"),
            Figure("tls_gen_ms_per_handshake", "... generator CPU ms per handshake"),
            Figure("tls_rss_kib_per_conn", "... server RSS growth KiB per connection"),
            Figure("password_logins_per_s", "password logins/s (new accounts)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "clients that failed to log in", ("==", 0)),
        ),
        certificates=5000,
    ),
    "history": Scenario(
        scenario_history,
        (
            Figure("p50_ms", "p50 ms for the latest 500 of 1,200", ("<=", 4.0)),
            Figure("p90_ms", "p90 ms"),
            Figure("server_ms_per_fetch", "server CPU ms per fetch"),
            Figure("gen_ms_per_fetch", "generator CPU ms per fetch"),
            Figure("gen_decode_ms", "generator: Decoder time for one answer (ms)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "short answers", ("==", 0)),
        ),
    ),
    "durable": Scenario(
        scenario_durable,
        (
            Figure("msgs_per_s_normal", "acked msgs/s, --durability normal", (">=", 20_000)),
            Figure("msgs_per_s_full", "acked msgs/s, --durability full"),
            Figure("server_us_per_msg_normal", "server CPU µs per message (normal)"),
            Figure("gen_us_per_msg_normal", "generator CPU µs per message (normal)"),
            Figure("server_cores_normal", "server CPU (cores busy, normal)"),
            Figure("other_cores_normal", "other CPU on the machine (cores, normal)"),
            Figure("lost", "messages never acknowledged", ("==", 0)),
        ),
    ),
    "files": Scenario(
        scenario_files,
        (
            Figure("mib_per_s", "MiB/s, accept to file_result", (">=", 100)),
            Figure("chat_p99_ms", "others' chat p99 ms", ("<=", 10)),
            Figure("chat_p50_ms", "others' chat p50 ms"),
            Figure("chat_decoded_p99_ms", "others' chat p99 ms as decoded by the generator"),
            Figure("chat_p99_at_recipient_ms", "chat p99 ms at the file's recipient"),
            Figure("server_cores", "server CPU (cores busy)"),
            Figure("gen_cores", "generator CPU (cores busy)"),
            Figure("other_cores", "other CPU on the machine (cores)"),
            Figure("lost", "chat lost + failed transfer", ("==", 0)),
        ),
    ),
}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = _status_meminfo("MemTotal")
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "kernel": platform.release(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and the package files that differed from it (git, read-only)."""
    root = HERE.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "securechat")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_package_files": [line[3:] for line in changed.splitlines()],
        "package_sha256": package_fingerprint(),
    }


def package_fingerprint() -> str:
    """A hash of the server package's source, to notice edits made during a benchmark."""
    digest = hashlib.sha256()
    for path in sorted((HERE.parent / "securechat").rglob("*.py")):
        digest.update(path.relative_to(HERE.parent).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _status_meminfo(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def summarize(runs: list[Figures]) -> dict[str, float]:
    """Median of every numeric figure over the runs that produced it."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(k for k, v in run.items() if _numeric(v)))
    return {
        key: statistics.median(run[key] for run in runs if _numeric(run.get(key))) for key in keys
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per shown figure: scenario, figure, median, target, verdict."""
    rows = []
    for name, result in results.items():
        for fig in SCENARIOS[name].figures:
            value = result["median"].get(fig.key)
            target = f"{fig.target[0]} {fig.target[1]:g}" if fig.target else ""
            verdict = fig.verdict(value) if value is not None else ("no data" if target else "")
            rows.append(
                {
                    "scenario": name,
                    "figure": fig.label,
                    "key": fig.key,
                    "median": value,
                    "target": target,
                    "result": verdict,
                }
            )
    return rows


def format_value(value: float | None) -> str:
    """A figure with sensible precision."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(rows: list[dict[str, Any]], runs: int) -> None:
    """The medians, as a plain-text table."""
    print(f"\nmedians of {runs} run(s)")
    header = f"{'scenario':<9} {'figure':<44} {'median':>12} {'target':>10}  result"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['scenario']:<9} {row['figure']:<44} {format_value(row['median']):>12} "
            f"{row['target']:>10}  {row['result']}"
        )


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen scenario, ``args.runs`` times each, with fresh servers."""
    names: list[str] = args.scenario or list(SCENARIOS)
    certificates = max((round(SCENARIOS[n].certificates * args.scale) for n in names), default=0)
    pki = prepare_pki(Path(args.cache), clients=max(certificates, 20 if "connect" in names else 0))
    results: dict[str, Any] = {}
    for name in names:
        scenario = SCENARIOS[name]
        runs: list[Figures] = []
        for index in range(args.runs):
            busy_before = await wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else 0.0
            fingerprint = package_fingerprint()
            with tempfile.TemporaryDirectory(prefix=f"securechat-bench-{name}-") as tmp:
                bench = Bench(
                    args.scale,
                    pki,
                    Path(tmp),
                    profile=args.py_spy,
                    server_args=tuple(args.server_arg),
                )
                began = time.perf_counter()
                try:
                    async with asyncio.timeout(args.timeout):
                        figures = await scenario.run(bench)
                except Exception as exc:
                    figures = {"error": f"{type(exc).__name__}: {exc}"}
                figures["run_s"] = time.perf_counter() - began
                figures["busy_cores_before"] = busy_before
                figures["package_sha256"] = fingerprint
                if package_fingerprint() != fingerprint and "error" not in figures:
                    figures["error"] = "the securechat package changed during this run"
            runs.append(figures)
            shown = ", ".join(
                f"{f.key}={format_value(figures[f.key])}"
                for f in scenario.figures
                if f.key in figures
            )
            print(f"{name} run {index + 1}/{args.runs}: {shown}", flush=True)
            for problem in [*figures.get("problems", []), figures.get("error")]:
                if problem:
                    print(f"  problem: {problem}", file=sys.stderr, flush=True)
            gc.collect()
        results[name] = {
            "runs": runs,
            "median": summarize(runs),
            "targets": {
                f.key: f"{f.target[0]} {f.target[1]:g}" for f in scenario.figures if f.target
            },
        }
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description="securechat server benchmarks (issue 6)")
    p.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size, e.g. 0.01 for a smoke run"
    )
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where certificates are kept between runs (default {DEFAULT_CACHE})",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be nearly idle "
        "(default 30; 0 skips the check)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy (if installed) during each measured phase and "
        "write collapsed stacks into DIR; figures from such runs are not comparable",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds one run of one scenario may take (default 60 + 600 x scale)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to every server (repeatable), e.g. --server-arg=--io-threads=1",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; 0 if every run produced its figures, 1 otherwise."""
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.scale <= 0:
        print("run.py: --runs must be >= 1 and --scale > 0", file=sys.stderr)
        return 2
    if args.timeout is None:
        args.timeout = 60 + 600 * args.scale
    _raise_fd_limit()
    code = code_version()
    started = time.time()
    results = asyncio.run(run_all(args))
    rows = table_rows(results)
    print_table(rows, args.runs)
    report = {
        "machine": machine(),
        "code": code,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "runs": args.runs,
        "scale": args.scale,
        "table": rows,
        "scenarios": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    failed = any("error" in run for r in results.values() for run in r["runs"])
    if report["code"]["package_sha256"] != package_fingerprint():
        print("warning: the securechat package changed during the benchmark", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
