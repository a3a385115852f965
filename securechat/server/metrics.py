"""What the server counts, for ``--metrics`` (Prometheus) and for a ``/stats`` command.

Nothing here sits in the per-delivery loop. Counters that change often are plain
numbers kept by the one thread that changes them (the writer counts messages and
commit time per commit group); the rest is read when someone asks (:meth:`ServerStats.
snapshot`): sessions under the hub's lock, connection and queue depths from the I/O
loops. Refusals are counted where an error frame is made (:func:`count_refusal`), behind
a lock of their own: a refusal is never on a message's way to anyone.

The Prometheus endpoint is ``prometheus_client``'s own HTTP server on its own thread,
with a registry of its own holding one collector that turns a snapshot into metrics
at scrape time; it is plain HTTP, so it listens on loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..ioloop import IOLoop
    from .hub import Hub
    from .writer import MessageWriter

__all__ = [
    "MetricsAddress",
    "MetricsEndpoint",
    "ServerStats",
    "Snapshot",
    "count_refusal",
    "metrics_address",
    "refusals",
]

_refusals: Counter[str] = Counter()
_refusals_lock = threading.Lock()


def count_refusal(code: str) -> None:
    """One more request refused with the error ``code`` (rate_limited, busy, ...)."""
    with _refusals_lock:
        _refusals[code] += 1


def refusals() -> dict[str, int]:
    """Requests refused so far, by error code."""
    with _refusals_lock:
        return dict(_refusals)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's numbers at one moment."""

    uptime: float
    connections: int
    """Open client connections, logged in or not."""
    sessions: int
    accounts_online: int
    messages: int
    """Messages committed to the store since start."""
    commits: int
    commit_seconds: float
    """Time spent in the store's commits (with ``commits``: the mean latency)."""
    writer_backlog: int
    """Messages and tasks waiting for the writer."""
    outbox_bytes: int
    """Bytes queued for clients, not yet written to their sockets."""
    refusals: dict[str, int] = field(default_factory=dict)


class ServerStats:
    """Reads the numbers of a running server; cheap enough to call on every scrape."""

    def __init__(self, *, hub: Hub, writer: MessageWriter, loops: Sequence[IOLoop]) -> None:
        self._hub = hub
        self._writer = writer
        self._loops = loops
        self._started = time.monotonic()

    def snapshot(self) -> Snapshot:
        """The numbers now."""
        with self._hub.lock:
            sessions = self._hub.sessions.all()
        writer = self._writer
        return Snapshot(
            uptime=time.monotonic() - self._started,
            connections=sum(loop.channel_count for loop in self._loops),
            sessions=len(sessions),
            accounts_online=len({s.account_id for s in sessions}),
            messages=writer.committed_messages,
            commits=writer.commits,
            commit_seconds=writer.commit_seconds,
            writer_backlog=writer.backlog,
            outbox_bytes=sum(loop.queued_bytes() for loop in self._loops),
            refusals=refusals(),
        )


class _Collector(Collector):
    """Turns a snapshot into Prometheus metrics when scraped."""

    def __init__(self, stats: ServerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats.snapshot()
        yield GaugeMetricFamily(
            "securechat_uptime_seconds", "Seconds since the server started", value=s.uptime
        )
        yield GaugeMetricFamily(
            "securechat_connections", "Open client connections", value=s.connections
        )
        yield GaugeMetricFamily("securechat_sessions", "Logged-in sessions", value=s.sessions)
        yield GaugeMetricFamily(
            "securechat_accounts_online", "Accounts with a session here", value=s.accounts_online
        )
        yield CounterMetricFamily(
            "securechat_messages", "Messages committed to the store", value=s.messages
        )
        yield SummaryMetricFamily(
            "securechat_store_commit_seconds",
            "Time of the store's group commits",
            count_value=s.commits,
            sum_value=s.commit_seconds,
        )
        yield GaugeMetricFamily(
            "securechat_writer_queue",
            "Messages and tasks waiting for the writer",
            value=s.writer_backlog,
        )
        yield GaugeMetricFamily(
            "securechat_outbox_bytes", "Bytes queued for clients", value=s.outbox_bytes
        )
        refused = CounterMetricFamily(
            "securechat_refusals", "Requests refused, by error code", labels=["reason"]
        )
        for code, count in sorted(s.refusals.items()):
            refused.add_metric([code], count)
        yield refused


@dataclass(frozen=True, slots=True)
class MetricsAddress:
    """Where the metrics endpoint listens."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True for an address only this machine can reach."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def metrics_address(text: str) -> MetricsAddress:
    """``--metrics``: ``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` (host default 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PORT or HOST:PORT with a port from 0 to 65535"
        )
    return MetricsAddress(host, number)


class MetricsEndpoint:
    """``prometheus_client``'s HTTP server for one :class:`ServerStats`, on its own thread."""

    def __init__(self, stats: ServerStats, address: MetricsAddress) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(stats))
        try:
            self._httpd, self._thread = start_http_server(
                address.port, addr=address.host, registry=registry
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve --metrics on {address}: {exc.strerror or exc}"
            ) from exc

    @property
    def port(self) -> int:
        """The port bound (useful with port 0)."""
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)
