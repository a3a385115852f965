"""Budgets and caps: small, thread-safe building blocks the server's edge and hub share.

Strategy
--------
Every class here is plain bookkeeping behind one lock. None of them sleeps, reads
a clock of its own or touches a socket: callers pass the current monotonic time
(``now``) in, so the arithmetic is deterministic under test, and each answer is a
number of seconds to wait (``0.0`` meaning "go ahead"), which maps directly onto
the ``retry_after`` field of docs/protocol.md's budget errors.

Memory stays bounded whatever peers do. Per-key state lives in an
:class:`_ExpiringMap` that forgets a key once its state no longer matters and
holds at most ``max_keys`` keys, evicting the least recently touched one when a
flood of new keys arrives. Evicting forgives that key early: a deliberate
trade, since the alternative is memory that grows with the attacker's address
space. :func:`source_key` shrinks that space first: an IPv6 host owns a whole
/64, so it counts as one source.

* :class:`TokenBucket`: a burst, then a steady rate (messages per account).
* :class:`FailureThrottle`: after a few failures, exponentially growing waits
  (logins per address and per name).
* :class:`WindowCounter`: at most N events per sliding window (registrations per
  address).
* :class:`ConnectionCaps`: open connections and unfinished TLS handshakes per
  source, with larger caps for listed networks (an office behind one NAT).
* :class:`RateLimitedLog`: at most one line per second per kind, with a count of
  what it held back, so a flood of bad peers cannot fill the disk via the log.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "DEFAULT_CONNECTIONS_PER_SOURCE",
    "DEFAULT_HANDSHAKES_PER_SOURCE",
    "SHARE_FROM",
    "ConnectionCaps",
    "ConnectionTicket",
    "FailureThrottle",
    "IPNetwork",
    "RateLimitedLog",
    "TokenBucket",
    "WindowCounter",
    "source_key",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_CONNECTIONS_PER_SOURCE = 64
"""Open connections one address may hold: a family or a small team behind one NAT
address, each with a client or two, fits; a single host opening thousands does not."""

DEFAULT_HANDSHAKES_PER_SOURCE = 16
"""Unfinished TLS handshakes per address: a handshake costs the server a private-key
operation, and an honest client has one in progress at a time (a reconnect storm
of a NAT-ed office after a restart is what the per-network limit is for)."""

DEFAULT_MAX_KEYS = 100_000
"""Keys one throttle or counter remembers: about 20 MB at worst, far above the
number of distinct sources a single server sees between expiries."""

_LOG_INTERVAL = 1.0  # seconds between lines of one kind in a RateLimitedLog
_MAX_LOG_KINDS = 64  # more kinds than the server has reasons means a bug: fold them
_FLOAT_TOLERANCE = 1e-9  # seconds and tokens are floats: compare with room for rounding
_IPV6_SOURCE_PREFIX = 64  # one IPv6 subscriber gets at least a /64 (RFC 6177)

_V = TypeVar("_V")


def source_key(ip: str) -> str:
    """The source an address counts as: IPv4 as is, IPv6 by its /64.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack listener
    reports for IPv4 peers) counts as the IPv4 address. ValueError if ``ip`` is not
    an IP address.
    """
    return _source_of(_normalise(ip))


def _source_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    prefix = int(address) >> (128 - _IPV6_SOURCE_PREFIX) << (128 - _IPV6_SOURCE_PREFIX)
    return str(ipaddress.IPv6Network((prefix, _IPV6_SOURCE_PREFIX)))


def _normalise(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # A scope ("fe80::1%eth0") names an interface, not a different host.
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _ExpiringMap(Generic[_V]):
    """Per-key state in order of last use, bounded in size. Not locked: owners lock.

    ``expired(value, now)`` says whether a key's state can be forgotten; the
    least recently touched keys are checked first, so pruning stops at the first
    key still in use and costs O(1) amortised.
    """

    def __init__(self, *, max_keys: int, expired: Callable[[_V, float], bool]) -> None:
        self._items: OrderedDict[str, _V] = OrderedDict()
        self._max_keys = max_keys
        self._expired = expired

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> _V | None:
        """The state of ``key`` (None if unknown or expired); prunes stale keys."""
        self._prune(now)
        return self._items.get(key)

    def put(self, key: str, value: _V) -> None:
        """Store ``value`` as the most recently used state, evicting the oldest if full."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._max_keys:
            self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        """Forget ``key``."""
        self._items.pop(key, None)

    def _prune(self, now: float) -> None:
        while self._items:
            key, value = next(iter(self._items.items()))
            if not self._expired(value, now):
                return
            del self._items[key]


class TokenBucket:
    """``burst`` events at once, then ``rate`` per second on average.

    The bucket starts full. Thread-safe; one bucket per budget holder (an account).
    """

    def __init__(self, *, burst: int, rate: float) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a token bucket needs burst >= 1 and rate > 0")
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._stamp: float | None = None
        self._lock = threading.Lock()

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens: 0.0 if allowed, else seconds until they are available.

        A refused attempt spends nothing, so a client that waits ``retry_after``
        gets through.
        """
        with self._lock:
            if self._stamp is not None:
                elapsed = max(0.0, now - self._stamp)
                self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._stamp = now
            # The tolerance: a client that waited exactly retry_after must get through,
            # whatever rounding the refill picked up on the way.
            if self._tokens >= cost - _FLOAT_TOLERANCE:
                self._tokens = max(0.0, self._tokens - cost)
                return 0.0
            return (cost - self._tokens) / self._rate


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    wait_until: float


class FailureThrottle:
    """Per key, exponentially growing waits after repeated failures.

    The first ``free`` failures cost nothing; each further one makes the key wait
    ``base_delay`` seconds, doubling with every failure up to ``max_delay``. A
    success clears the key, and so do ``forget_after`` seconds without failures.
    Thread-safe, and bounded to ``max_keys`` keys.
    """

    def __init__(
        self,
        *,
        free: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        forget_after: float = 3600.0,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if free < 0 or base_delay <= 0 or max_delay < base_delay or forget_after < max_delay:
            raise ValueError(
                "a failure throttle needs free >= 0 and 0 < base_delay <= max_delay <= forget_after"
            )
        self._free = free
        self._base = base_delay
        self._max = max_delay
        self._forget_after = forget_after
        self._lock = threading.Lock()
        self._keys: _ExpiringMap[_Failures] = _ExpiringMap(
            max_keys=max_keys, expired=lambda f, now: now - f.last >= forget_after
        )

    def delay(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait before its next attempt (0.0: go ahead)."""
        with self._lock:
            state = self._keys.get(key, now)
            return 0.0 if state is None else max(0.0, state.wait_until - now)

    def failed(self, key: str, now: float) -> None:
        """Count a failure of ``key``, which may start or lengthen its wait."""
        with self._lock:
            state = self._keys.get(key, now) or _Failures(0, now, now)
            state.count += 1
            state.last = now
            over = state.count - self._free
            if over > 0:
                # min() before the power: 2.0 ** over overflows a float after ~1,000 failures.
                steps = min(over - 1, 64)
                state.wait_until = now + min(self._max, self._base * 2.0**steps)
            self._keys.put(key, state)

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key``."""
        with self._lock:
            self._keys.pop(key)

    def __len__(self) -> int:
        """Keys remembered now (for tests and monitoring)."""
        with self._lock:
            return len(self._keys)


class WindowCounter:
    """At most ``limit`` events per key within any ``window`` seconds.

    Thread-safe, bounded to ``max_keys`` keys; a key is forgotten once its last
    event is a window old.
    """

    def __init__(self, *, limit: int, window: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a window counter needs limit >= 1 and window > 0")
        self._limit = limit
        self._window = window
        self._lock = threading.Lock()
        self._keys: _ExpiringMap[deque[float]] = _ExpiringMap(
            max_keys=max_keys, expired=lambda stamps, now: now - stamps[-1] >= window
        )

    def take(self, key: str, now: float) -> float:
        """Count one event of ``key``: 0.0 if allowed, else seconds until one would be.

        A refused event is not counted. Amortised constant time: stamps leave
        from the old end as they age out, whatever the limit.
        """
        with self._lock:
            stamps = self._keys.get(key, now)
            if stamps is None:
                stamps = deque()
            while stamps and now - stamps[0] >= self._window:
                stamps.popleft()
            if len(stamps) >= self._limit:
                return stamps[0] + self._window - now
            stamps.append(now)
            self._keys.put(key, stamps)
            return 0.0

    def __len__(self) -> int:
        """Keys remembered now (for tests and monitoring)."""
        with self._lock:
            return len(self._keys)


class ConnectionTicket:
    """One admitted connection's share of its source's counts; released once.

    The channel's handler calls :meth:`handshake_done` when TLS is up and
    :meth:`release` when the channel closes; repeated calls do nothing, so every
    count is given back exactly once whatever path the close took.
    """

    __slots__ = ("_caps", "_handshaking", "_open", "source")

    def __init__(self, caps: ConnectionCaps, source: str) -> None:
        self._caps = caps
        self.source = source
        self._open = True
        self._handshaking = True

    def handshake_done(self) -> None:
        """The TLS handshake finished: the connection no longer counts as handshaking."""
        self._caps._release(self, connection=False)

    def release(self) -> None:
        """The connection closed: give back everything it still holds."""
        self._caps._release(self, connection=True)


@dataclass(slots=True)
class _SourceCount:
    connections: int = 0
    handshakes: int = 0


SHARE_FROM = 4
"""Cluster mode: a source's connection count is shared with the other servers once it
reaches this many here. Below it nothing is sent (most people have a connection or
two); a source can exceed its cap by at most this many per server."""


class ConnectionCaps:
    """Open connections and unfinished TLS handshakes, counted per :func:`source_key`.

    ``networks`` gives listed networks their own cap per source (the most specific
    network wins); it replaces both the connection and the handshake cap, since
    every client of an office behind one NAT address reconnects at once after a
    server restart. Thread-safe: the accept thread admits, I/O loops release.
    """

    def __init__(
        self,
        *,
        connections: int = DEFAULT_CONNECTIONS_PER_SOURCE,
        handshakes: int = DEFAULT_HANDSHAKES_PER_SOURCE,
        networks: Iterable[tuple[IPNetwork, int]] = (),
    ) -> None:
        self._networks = sorted(networks, key=lambda item: item[0].prefixlen, reverse=True)
        if min(connections, handshakes, *(limit for _, limit in self._networks)) < 1:
            raise ValueError("connection and handshake caps must be at least 1")
        self._connections = connections
        self._handshakes = handshakes
        self._lock = threading.Lock()
        self._counts: dict[str, _SourceCount] = {}
        # Cluster mode: other servers' open connections per source, by server.
        self._remote: dict[str, dict[str, int]] = {}
        self.on_change: Callable[[str, int], None] | None = None
        """Cluster mode: told (source, open connections here) when a source that has at
        least ``SHARE_FROM`` connections (or had) gains or loses one, so the other
        servers count them too. Called with this object's lock held: must not wait."""

    def set_remote(self, server: str, source: str, connections: int) -> None:
        """Another server has ``connections`` open from ``source`` (cluster mode)."""
        with self._lock:
            counts = self._remote.setdefault(server, {})
            if connections > 0:
                counts[source] = connections
            else:
                counts.pop(source, None)

    def drop_remote(self, server: str) -> None:
        """Another server is gone: its connections no longer count."""
        with self._lock:
            self._remote.pop(server, None)

    def _elsewhere(self, key: str) -> int:
        return sum(counts.get(key, 0) for counts in self._remote.values())

    def _changed(self, key: str, before: int, after: int) -> None:
        if self.on_change is not None and max(before, after) >= SHARE_FROM:
            self.on_change(key, after)

    def admit(self, ip: str) -> ConnectionTicket | str:
        """A ticket for a new connection from ``ip``, or why it is refused."""
        address = _normalise(ip)
        connections, handshakes = self._connections, self._handshakes
        for network, limit in self._networks:
            if address in network:
                connections = handshakes = limit
                break
        key = _source_of(address)
        with self._lock:
            count = self._counts.setdefault(key, _SourceCount())
            open_ = count.connections + (self._elsewhere(key) if self._remote else 0)
            if open_ >= connections:
                refusal = f"{open_} connections open (limit {connections})"
            elif count.handshakes >= handshakes:
                refusal = f"{count.handshakes} TLS handshakes under way (limit {handshakes})"
            else:
                count.connections += 1
                count.handshakes += 1
                self._changed(key, count.connections - 1, count.connections)
                return ConnectionTicket(self, key)
            return refusal  # a refusal implies count.connections > 0: nothing to tidy

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per source: (open connections, unfinished handshakes); sources at zero are left out."""
        with self._lock:
            return {k: (c.connections, c.handshakes) for k, c in self._counts.items()}

    def _release(self, ticket: ConnectionTicket, *, connection: bool) -> None:
        with self._lock:
            if not ticket._open:
                return  # released already, handshake count included
            count = self._counts[ticket.source]
            if ticket._handshaking:
                ticket._handshaking = False
                count.handshakes -= 1
            if connection:
                ticket._open = False
                count.connections -= 1
                self._changed(ticket.source, count.connections + 1, count.connections)
                if not count.connections:
                    del self._counts[ticket.source]


@dataclass(slots=True)
class _LogKind:
    last: float  # when the last line of this kind was written
    held: int = 0  # events held back since
    level: int = logging.DEBUG  # the highest level among them


class RateLimitedLog:
    """A logger wrapper that writes at most one line per ``interval`` per kind.

    The first event of a kind is logged at once; the next ones within the
    interval are only counted, and the next line of that kind (or :meth:`flush`,
    which the server calls about once a second) says how many were held back.
    Thread-safe.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = _LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, _LogKind] = {}

    def log(self, kind: str, level: int, msg: str, *args: object) -> None:
        """Log ``msg % args`` at ``level`` unless a line of ``kind`` went out recently."""
        now = self._clock()
        with self._lock:
            if kind not in self._kinds and len(self._kinds) >= _MAX_LOG_KINDS:
                kind = "other"
            state = self._kinds.get(kind)
            if state is not None and now - state.last < self._interval:
                state.held += 1
                state.level = max(state.level, level)
                return
            held = state.held if state is not None else 0
            self._kinds[kind] = _LogKind(now)
        if held:
            msg += " (and %d more like it held back)"
            args = (*args, held)
        self._logger.log(level, msg, *args)

    def flush(self) -> None:
        """Write the summary of every kind whose held-back events are due."""
        now = self._clock()
        due: list[tuple[str, _LogKind]] = []
        with self._lock:
            for kind, state in list(self._kinds.items()):
                if now - state.last >= self._interval:
                    # Dropped, so that the next event of this kind is logged at once.
                    del self._kinds[kind]
                    if state.held:
                        due.append((kind, state))
        for kind, state in due:
            self._logger.log(
                state.level,
                "%s: %d more like it in the last %.0f s (held back)",
                kind,
                state.held,
                now - state.last,
            )
