"""The message writer: the one thread that numbers, stores and releases messages.

Strategy
--------
Every chat message, stored or not, passes through this thread's queue, which
gives all messages one order. The thread takes everything queued since its
last turn as a *group*: it assigns each message its id and timestamp, writes
the ones to be kept in a single transaction, and only after that transaction
has committed calls each message's ``on_done``, which sends the sender its
acknowledgement and fans the message out. An acknowledged message is
therefore always on disk, and under load one commit covers many messages.

Search indexing is not on that path: stored rows are added to the full-text
index in batches when the queue is idle (or once ``_INDEX_LAG`` rows wait), and
a search first asks this thread to index everything stored before it, so it
still finds every message acknowledged before it was asked.

Ids come from a counter, not from SQLite, so messages that are never stored
(opt-out, /nolog) still get unique, increasing ids. The counter is reserved on
disk in blocks of ``ID_BLOCK``: after a restart ids continue above anything
handed out before, without a write per unstored message.

Every stored message also gets a sequence number within its conversation
(room, or pair of accounts), from counters the store keeps with the messages,
so numbers have no holes and are never reused. A message sent with the
client's idempotency key that this thread has seen in the last ``KEY_TTL``
seconds (the store remembers keys across restarts) is not stored again: it is
answered with the original's id, time and number, marked ``duplicate``.

If a commit fails (disk full, read-only file) the kept messages of that group
get the error instead of an acknowledgement and are not delivered; the thread
carries on, and the next group succeeds once space returns.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError
from ..store.base import NewMessage, SentKey, Store, pair_key, utc_timestamp

__all__ = ["ID_BLOCK", "KEY_TTL", "MAX_BACKLOG", "MessageWriter", "Outgoing"]

log = logging.getLogger(__name__)

ID_BLOCK = 1024
"""Ids reserved on disk at a time; a restart skips at most this many."""

KEY_TTL = 600.0
"""Seconds an idempotency key is remembered at least: longer than any reconnect."""

_MAX_KEYS = 500_000  # keys remembered at most (~100 MB), oldest forgotten first

MAX_BACKLOG = 100_000
"""Messages waiting for the disk before new ones are refused as "server busy"."""

_MAX_GROUP = 5000
_INDEX_IDLE = 0.05  # seconds without new messages before pending rows are indexed
_INDEX_LAG = 5000  # rows stored but not indexed before indexing cannot wait for a pause
_INDEX_BATCH = 5000
_RETENTION_EVERY = 3600.0  # seconds between retention sweeps


@dataclass(slots=True, eq=False)
class Outgoing:
    """A message on its way: filled in with ``id`` and ``ts`` by the writer."""

    sender: int
    text: str
    keep: bool
    on_done: Callable[[Outgoing, StoreError | None], None]
    room: str | None = None
    room_name: str | None = None
    recipient: int | None = None
    key: str | None = None
    id: int = 0
    ts: str = ""
    seq: int | None = None
    duplicate: bool = False
    """True when ``key`` was seen before: id, ts and seq are the original's."""

    @property
    def conversation(self) -> str:
        """The room (folded) or the pair of accounts it belongs to."""
        if self.room is not None:
            return self.room
        assert self.recipient is not None
        return pair_key(self.sender, self.recipient)


_Task = Callable[[], None]
_STOP = object()


class MessageWriter:
    """Owns the store's write side: group commit, erasure and retention, in one order."""

    def __init__(self, store: Store, *, retention_days: int = 0) -> None:
        self._store = store
        self._retention_days = retention_days
        self._queue: queue.SimpleQueue[Outgoing | _Task | object] = queue.SimpleQueue()
        self._next_id = store.reserved_id() + 1
        self._reserved = self._next_id - 1
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._next_sweep = time.monotonic()
        self._unindexed = 0
        self._seqs = store.load_last_seqs()
        since = utc_timestamp(
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=KEY_TTL)
        )
        self._keys: dict[tuple[int, str], SentKey] = {
            (k.sender, k.key): k for k in store.load_sent_keys(since)
        }
        # Insertion order is age order: the oldest keys are forgotten first.
        self._key_times: deque[tuple[float, tuple[int, str]]] = deque(
            (time.monotonic(), k) for k in self._keys
        )
        self.delivery_context: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        """Wraps the delivery of each committed group, so that the receiving side can
        coalesce a whole group into one write per connection (set by the hub)."""

    @property
    def backlog(self) -> int:
        """Items waiting in the queue."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, message: Outgoing) -> bool:
        """Queue a message; False (nothing queued) if the backlog is full."""
        if self._queue.qsize() >= MAX_BACKLOG:
            return False
        self._queue.put(message)
        return True

    def run_in_order(self, task: _Task) -> None:
        """Run ``task`` on the writer thread after every message queued before it."""
        self._queue.put(task)

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, then end the thread."""
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        self._index(None)  # whatever an earlier run stored but did not index
        while True:
            try:
                first = self._queue.get(timeout=self._idle_timeout())
            except queue.Empty:
                if self._unindexed:
                    self._index(_INDEX_BATCH)
                elif time.monotonic() >= self._next_sweep:
                    self._sweep()
                continue
            items = [first]
            while len(items) < _MAX_GROUP:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            group: list[Outgoing] = []
            for item in items:
                if isinstance(item, Outgoing):
                    group.append(item)
                    continue
                self._commit(group)
                group = []
                if item is _STOP:
                    return
                self._run_task(item)
            self._commit(group)
            if self._unindexed >= _INDEX_LAG:
                self._index(_INDEX_BATCH)  # busy for long: do not let search fall behind
            if time.monotonic() >= self._next_sweep:
                self._sweep()

    def index_now(self) -> None:
        """Index every stored message (writer thread only; search calls it in order)."""
        self._index(None)

    def _index(self, limit: int | None) -> None:
        try:
            done = self._store.index_pending(limit)
        except StoreError as exc:
            log.error("search indexing failed (will retry): %s", exc)
            return
        self._unindexed = max(0, self._unindexed - done) if limit is not None else 0

    def _run_task(self, task: Any) -> None:
        try:
            task()
        except Exception:
            log.exception("writer task failed")

    def _commit(self, group: list[Outgoing]) -> None:
        if not group:
            return
        ts = utc_timestamp()
        seqs: dict[str, int] = {}
        keys: dict[tuple[int, str], SentKey] = {}
        fresh: list[Outgoing] = []
        for message in group:
            known = None
            if message.key is not None:
                key = (message.sender, message.key)
                known = self._keys.get(key) or keys.get(key)
            if known is not None:
                message.id, message.ts, message.seq = known.id, known.ts, known.seq
                message.duplicate = True
                continue
            message.id = self._next_id
            message.ts = ts
            self._next_id += 1
            if message.keep:
                conversation = message.conversation
                message.seq = seqs.get(conversation, self._seqs.get(conversation, 0)) + 1
                seqs[conversation] = message.seq
            if message.key is not None:
                keys[(message.sender, message.key)] = SentKey(
                    message.sender, message.key, message.id, message.ts, message.seq
                )
            fresh.append(message)
        reserve = None
        if self._next_id - 1 > self._reserved:
            reserve = self._next_id - 1 + ID_BLOCK
        rows = [
            NewMessage(m.id, m.ts, m.sender, m.text, m.room, m.room_name, m.recipient, m.seq, m.key)
            for m in fresh
            if m.keep
        ]
        error: StoreError | None = None
        if rows or reserve is not None:
            try:
                self._store.insert_messages(rows, reserve_id=reserve)
            except StoreError as exc:
                log.error("cannot store %d messages: %s", len(rows), exc)
                error = exc
            else:
                self._unindexed += len(rows)
                if reserve is not None:
                    self._reserved = reserve
        if error is None:
            self._seqs.update(seqs)
            self._remember(keys)
        with self.delivery_context():
            for message in group:
                # Without the reservation on disk an unstored message's id could be
                # reused after a restart, so it fails with the group.
                failed = (
                    error is not None
                    and not message.duplicate
                    and (message.keep or reserve is not None)
                )
                try:
                    message.on_done(message, error if failed else None)
                except Exception:
                    log.exception("delivering message %d failed", message.id)

    def _remember(self, keys: dict[tuple[int, str], SentKey]) -> None:
        now = time.monotonic()
        for key, sent in keys.items():
            self._keys[key] = sent
            self._key_times.append((now, key))
        while self._key_times and (
            len(self._key_times) > _MAX_KEYS or now - self._key_times[0][0] > KEY_TTL
        ):
            _, key = self._key_times.popleft()
            self._keys.pop(key, None)

    def _idle_timeout(self) -> float | None:
        if self._unindexed:
            return _INDEX_IDLE  # index once the burst is over
        if self._retention_days <= 0:
            return None
        return max(0.0, self._next_sweep - time.monotonic())

    def _sweep(self) -> None:
        self._next_sweep = time.monotonic() + _RETENTION_EVERY
        if self._retention_days <= 0:
            return
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=self._retention_days)
        stamp = utc_timestamp(cutoff)
        try:
            deleted = self._store.delete_older_than(stamp)
        except StoreError as exc:
            log.error("retention sweep failed: %s", exc)
            return
        if deleted:
            log.info(
                "retention: deleted %d messages older than %d days", deleted, self._retention_days
            )
