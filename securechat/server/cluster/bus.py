"""The cluster bus: notifications between the servers of one chat, over Redis.

Redis carries notifications, never the truth: everything a notification says
is already committed to the shared store (PostgreSQL) before it is sent, so a
lost notification costs a delay, never data (the receiving side fills holes
from the store, see :mod:`securechat.server.cluster.node`).

Theory of operation
-------------------
* **Events** (messages committed, joins, parts, topics, renames, arrivals and
  departures) are JSON objects appended to one Redis *stream* with ``XADD``,
  trimmed to about ``STREAM_LENGTH`` entries. Every server reads the whole
  stream with a blocking ``XREAD`` from the last id it read, so a server that
  loses its Redis connection resumes exactly where it stopped: nothing sent
  meanwhile is missed (unless trimmed away, which the hole filling covers).
* **Liveness**: every server keeps a key ``<prefix>:alive:<server>`` with a TTL
  of ``ALIVE_TTL`` seconds, refreshed every ``HEARTBEAT`` seconds, and a hash
  ``<prefix>:online:<server>`` of its accounts online (account id -> sessions).
  A server that dies stops refreshing; within ``ALIVE_TTL`` + ``HEARTBEAT`` the
  others see its key gone and take its users offline. A server that starts
  reads the hashes of the live servers to learn who is online.
* **Threads**: ``publish`` only puts the event on a bounded queue (it is called
  under the hub's lock and must never wait); the *publisher* thread sends what
  is queued in one pipeline and keeps the heartbeat. The *reader* thread reads
  the stream and hands each batch of events to ``on_events``. Neither ever
  holds the hub's lock while talking to Redis.
* **Redis down**: the publisher keeps its batch and retries; the reader retries
  from the same id. After ``UNHEALTHY_AFTER`` seconds without Redis,
  ``on_health(False)`` lets the server tell its clients that their view of the
  other servers is stale; ``on_health(True)`` when it is back.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ...errors import ConfigError

__all__ = [
    "ALIVE_TTL",
    "HEARTBEAT",
    "MAX_PENDING_EVENTS",
    "STREAM_AGE",
    "STREAM_LENGTH",
    "UNHEALTHY_AFTER",
    "Event",
    "RedisBus",
]

log = logging.getLogger(__name__)

Event = dict[str, Any]

STREAM_LENGTH = 100_000
"""Events kept in the stream at most (approximately), for readers that lost Redis for a
moment. Older ones are trimmed; the store fills what is missed."""

STREAM_AGE = 600.0
"""Seconds an event stays in the stream at most (trimmed with every heartbeat): message
notifications carry their text, and a message erased with ``/history forget`` must
not linger in Redis's memory longer than this."""

HEARTBEAT = 1.5
"""Seconds between refreshes of a server's liveness key."""

ALIVE_TTL = 6.0
"""Seconds a server counts as alive after its last heartbeat: a few heartbeats, so one
slow Redis round trip does not take a server's users offline."""

UNHEALTHY_AFTER = 3.0
"""Seconds without Redis before a server tells its clients it is cut off."""

MAX_PENDING_EVENTS = 100_000
"""Events queued for Redis at most; beyond, new ones are dropped (and logged): the
store still has every message, and other servers fill the hole from it."""

# Raises a counter to at least ARGV[1] (SET has no "greater than" for strings).
_RAISE_TO = """if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], ARGV[1]) end"""

_READ_BLOCK_MS = 250  # an XREAD returns at least this often, to run the periodic checks
_RETRY = 0.2  # seconds between attempts while Redis is unreachable
_BATCH = 1000  # events per pipeline, and per XREAD


class RedisBus:
    """Publishes this server's events and reads everyone's (see the module notes)."""

    def __init__(self, url: str, *, server_id: str, prefix: str = "securechat") -> None:
        try:
            # redis-py's answers are typed loosely: they are read through Any here.
            self._redis: Any = redis.Redis.from_url(
                url, socket_timeout=5.0, socket_connect_timeout=2.0, decode_responses=True
            )
            self._redis.ping()
        except (redis.RedisError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach Redis at {url}: {exc}; is redis-server running, and is --bus right?"
            ) from exc
        self.server_id = server_id
        self._stream = f"{prefix}:events"
        self._alive = f"{prefix}:alive:"
        self._online = f"{prefix}:online:"
        self._numbers = f"{prefix}:session-numbers"
        self._peer = f"{prefix}:peer:"
        self._peer_address: str | None = None
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_id = "$"
        self._online_table: dict[int, str] = {}  # the publisher's copy of our online hash
        self.on_events: Callable[[list[Event]], None] = lambda events: None
        """Called on the reader thread with each batch of other servers' events."""
        self.on_tick: Callable[[], None] = lambda: None
        """Called on the reader thread at least every quarter second."""
        self.on_health: Callable[[bool], None] = lambda healthy: None
        """Called on the reader thread when Redis is lost for long, and when it is back."""

    # -- start and stop --------------------------------------------------------------------

    def position(self) -> None:
        """Start reading from the stream's current end (call before loading the state
        the stream then keeps current, so nothing falls between the two)."""
        try:
            last = self._redis.xrevrange(self._stream, count=1)
        except redis.RedisError as exc:
            raise ConfigError(f"cannot read the cluster stream from Redis: {exc}") from exc
        self._last_id = str(last[0][0]) if last else "0-0"

    def start(self) -> None:
        """Start the publisher and reader threads."""
        self._beat()
        for target, name in ((self._publish_loop, "bus-publish"), (self._read_loop, "bus-read")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued (for up to ``timeout``), leave the cluster, stop."""
        self._queue.put(("stop", None))
        deadline = time.monotonic() + timeout
        for thread in self._threads[:1]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for thread in self._threads[1:]:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self._redis.delete(
                self._alive + self.server_id,
                self._online + self.server_id,
                self._peer + self.server_id,
            )
        except redis.RedisError as exc:
            log.warning("could not leave the cluster cleanly: %s", exc)
        self._redis.close()

    # -- the hub's side (never waits) ---------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Queue an event for every other server."""
        event["o"] = self.server_id
        self._put("event", json.dumps(event, separators=(",", ":")))

    def set_online(self, account_id: int, sessions: list[dict[str, Any]]) -> None:
        """Record the sessions ``account_id`` has on this server (none: empty), each
        described for ``/sessions`` on the other servers."""
        self._put("online", (account_id, json.dumps(sessions, separators=(",", ":"))))

    def set_peer_address(self, address: str) -> None:
        """Publish where other servers reach this one's peer port (call before ``start``);
        the key lapses with the liveness key, so nobody dials a dead server's address."""
        self._peer_address = address

    def peer_address(self, server: str) -> str | None:
        """The peer address ``server`` publishes, if any (a Redis call: may wait)."""
        address = self._redis.get(self._peer + server)
        return str(address) if address is not None else None

    def _put(self, kind: str, item: Any) -> None:
        with self._pending_lock:
            if self._pending >= MAX_PENDING_EVENTS:
                log.error("cluster bus: %d events wait for Redis; dropping one", self._pending)
                return
            self._pending += 1
        self._queue.put((kind, item))

    # -- what may wait (the reader thread, the login pool) ---------------------------------------

    def next_session_number(self) -> int:
        """A session number no other server hands out (RedisError if Redis is down)."""
        return int(self._redis.incr(self._numbers))

    def servers(self) -> dict[str, dict[int, list[dict[str, Any]]]]:
        """Every other live server and its accounts online (account id -> its sessions
        there, as given to ``set_online``)."""
        alive = [str(key)[len(self._alive) :] for key in self._redis.scan_iter(self._alive + "*")]
        found: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for server in alive:
            if server == self.server_id:
                continue
            online = self._redis.hgetall(self._online + server)
            sessions = {int(k): _session_list(v) for k, v in online.items()}
            found[server] = {account: listed for account, listed in sessions.items() if listed}
        return found

    # -- threads -------------------------------------------------------------------------

    def _beat(self) -> None:
        oldest = int((time.time() - STREAM_AGE) * 1000)
        self._redis.xtrim(self._stream, minid=f"{oldest}-0", approximate=False)
        was = self._redis.set(self._alive + self.server_id, "1", px=int(ALIVE_TTL * 1000), get=True)
        if self._peer_address is not None:
            self._redis.set(
                self._peer + self.server_id, self._peer_address, px=int(ALIVE_TTL * 1000)
            )
        if was is None and self._online_table:
            # Our key was gone: Redis restarted empty (or we stalled past the TTL). The
            # online hash went with it, so tell the others again who is here.
            key = self._online + self.server_id
            self._redis.hset(key, mapping=self._online_table)
            # The session counter went too: never hand out a number still in use here.
            used = [
                int(described.get("session", 0))
                for listed in self._online_table.values()
                for described in _session_list(listed)
            ]
            self._redis.eval(_RAISE_TO, 1, self._numbers, max(used, default=0))

    def _publish_loop(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT
        batch: list[tuple[str, Any]] = []
        stopping = False
        failing = False  # logged once per outage, not every retry
        while not (stopping and not batch):
            if not batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, next_beat - time.monotonic())))
                except queue.Empty:
                    pass
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if batch and batch[-1][0] == "stop":
                    batch.pop()
                    stopping = True
            try:
                if batch:
                    self._send(batch)
                    with self._pending_lock:
                        self._pending -= len(batch)
                    batch = []
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + HEARTBEAT
                if failing:
                    failing = False
                    log.info("cluster bus: publishing again")
            except redis.RedisError as exc:
                if stopping:
                    log.warning("cluster bus: %d events not sent at shutdown: %s", len(batch), exc)
                    return
                if not failing:
                    failing = True
                    log.warning("cluster bus: cannot publish (will retry): %s", exc)
                time.sleep(_RETRY)

    def _send(self, batch: list[tuple[str, Any]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        online: dict[int, str] = {}
        for kind, item in batch:
            if kind == "event":
                pipe.xadd(self._stream, {"e": item}, maxlen=STREAM_LENGTH, approximate=True)
            elif kind == "online":
                online[item[0]] = item[1]
        if online:
            for account, listed in online.items():
                if listed != "[]":
                    self._online_table[account] = listed
                else:
                    self._online_table.pop(account, None)
            key = self._online + self.server_id
            gone = [account for account, listed in online.items() if listed == "[]"]
            if gone:
                pipe.hdel(key, *gone)
            here = {account: listed for account, listed in online.items() if listed != "[]"}
            if here:
                pipe.hset(key, mapping=here)
        pipe.execute()

    def _read_loop(self) -> None:
        lost_since: float | None = None
        told_unhealthy = False
        while not self._stop.is_set():
            try:
                answer = self._redis.xread(
                    {self._stream: self._last_id}, count=_BATCH, block=_READ_BLOCK_MS
                )
            except redis.RedisError as exc:
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    log.warning("cluster bus: lost Redis (will retry): %s", exc)
                if not told_unhealthy and now - lost_since >= UNHEALTHY_AFTER:
                    told_unhealthy = True
                    self._call(self.on_health, False)
                self._call(self.on_tick)
                self._stop.wait(_RETRY)
                continue
            if lost_since is not None:
                log.info("cluster bus: Redis is back after %.1f s", time.monotonic() - lost_since)
                lost_since = None
                if told_unhealthy:
                    told_unhealthy = False
                    self._call(self.on_health, True)
            events: list[Event] = []
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    self._last_id = str(entry_id)
                    try:
                        event = json.loads(fields["e"])
                    except (KeyError, ValueError):
                        log.error("cluster bus: unreadable event %s", self._last_id)
                        continue
                    if event.get("o") != self.server_id:
                        events.append(event)
            if events:
                self._call(self.on_events, events)
            self._call(self.on_tick)

    @staticmethod
    def _call(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("cluster bus: handling events failed")


def _session_list(value: str) -> list[dict[str, Any]]:
    """An online hash value: a JSON list of session descriptions (anything else: none)."""
    try:
        listed = json.loads(value)
    except ValueError:
        return []
    return [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []
