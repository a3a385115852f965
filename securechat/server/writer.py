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

Maintenance in slices
---------------------
The same thread (and the store's one write connection) also does the slow
work: indexing stored rows for search, erasing a user's messages
(``/history forget``) and retention sweeps. Done in one go, each of them held
every commit behind it for up to seconds. So each is cut into *slices*, one
short transaction each, sized to take about ``SLICE_BUDGET``: every kind of
slice learns from the last one how many rows (or index pages) fit, so the
size follows the machine, the message size and the load. Between two slices
the thread commits and delivers every message queued meanwhile, so a message
waits behind maintenance for at most one slice.

Requests run in order (``run_in_order``: a search, a forget) are taken off the
queue together with the messages around them and *held*, each with the id of
the last message queued before it; they run after the job in progress, while
later messages go on being committed. That id is what ``forget_sender``
erases up to: what the user sent before asking, never what they send while a
long erasure runs.

Erasure, by forget or by retention, ends only when the words are gone from the
files: the rows are deleted (``secure_delete`` overwrites them), the search
index is merged until no segment holds the deleted words (FTS5 keeps them
until then), and the write-ahead log is copied back and truncated. Only then
does a forget answer its requester. That is SQLite's erasure; PostgreSQL's
stops short of the files (it deletes the rows for every reader and asks for a
VACUUM: :mod:`securechat.store.postgres.maintenance` says what stays).

Search indexing is off the acknowledgement path: stored rows are indexed a
slice at a time when the queue is idle (or, under steady load, between groups
once ``_INDEX_LAG`` rows wait), and a search first has this thread index
everything stored before it, so it still finds every message acknowledged
before it was asked.

Numbering is the store's (``Store.commit_messages``): every message gets a
unique, increasing id, and every stored one the next sequence number of its
conversation (room, or pair of accounts) in the same transaction that stores
it, so numbers follow commit order and have no holes, however many servers
share the store. A message sent with an idempotency key the store has seen in
the last ``KEY_TTL`` seconds is not stored again: it is answered with the
original's id, time and number, marked ``duplicate``.

If a commit fails (disk full, read-only file, a lost database) the messages of
that group get the error instead of an acknowledgement and are not delivered; the thread
carries on, and the next group succeeds once space returns.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError
from ..store.base import Draft, Store, utc_timestamp

__all__ = [
    "MAX_BACKLOG",
    "MAX_BACKLOG_BYTES",
    "SLICE_BUDGET",
    "MessageWriter",
    "Outgoing",
]

log = logging.getLogger(__name__)

MAX_BACKLOG = 100_000
"""Messages waiting for the disk before new ones are refused as "server busy"."""

MAX_BACKLOG_BYTES = 64 * 1024 * 1024
"""Bytes of message text waiting for the disk before new messages are refused as
"server busy": the item bound alone let 100,000 maximum-size messages hold over a
gigabyte while the disk stalled."""

SLICE_BUDGET = 0.010
"""Seconds one maintenance transaction aims to take. A message arriving meanwhile
waits for the rest of it plus its own commit: about 20 ms at worst, below what
a person notices in a chat round trip."""

_MAX_GROUP = 5000
_INDEX_IDLE = 0.05  # seconds without new messages before pending rows are indexed
_INDEX_LAG = 5000  # rows stored but not indexed before indexing cannot wait for a pause
_RETENTION_EVERY = 3600.0  # seconds between retention sweeps
_MERGE_DONE = 2  # a merge step that writes fewer rows found nothing left to merge
# How long readers may keep the write-ahead log in use before an erasure gives up
# truncating it (our reads take milliseconds), and how often to retry meanwhile.
_TRUNCATE_PATIENCE = 5.0
_TRUNCATE_RETRY = 0.01


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
    action: bool = False
    """Sent with /me."""
    id: int = 0
    ts: str = ""
    seq: int | None = None
    duplicate: bool = False
    """True when ``key`` was seen before: id, ts and seq are the original's."""


_Task = Callable[[], None]
_STOP = object()


def _text_bytes(message: Outgoing) -> int:
    # What the text occupies in memory (O(1), unlike encoding it): up to four
    # bytes a character, so the bound holds for any script.
    return sys.getsizeof(message.text)


class _SliceSize:
    """How many units (rows, index pages) one slice does: as many as the last slice
    suggests fit in ``SLICE_BUDGET``, growing at most twofold at a time so that one
    fast measurement (a warm cache) cannot make the next slice long."""

    __slots__ = ("_high", "_low", "size")

    def __init__(self, start: int, *, low: int, high: int) -> None:
        self.size = start
        self._low = low
        self._high = high

    def learn(self, units: int, elapsed: float) -> None:
        """``units`` took ``elapsed`` seconds: size the next slice."""
        if units <= 0:
            return
        fits = units * SLICE_BUDGET / max(elapsed, 1e-6)
        self.size = int(max(self._low, min(self._high, 2 * self.size, fits)))


class MessageWriter:
    """Owns the store's write side: group commit, erasure and retention, in one order."""

    def __init__(self, store: Store, *, retention_days: int = 0) -> None:
        self._store = store
        self._retention_days = retention_days
        self._queue: queue.SimpleQueue[Outgoing | _Task | object] = queue.SimpleQueue()
        self._queued_bytes = 0  # text of the messages in the queue (see MAX_BACKLOG_BYTES)
        self.committed_messages = 0
        """Messages committed since start (for metrics)."""
        self.commits = 0
        self.commit_seconds = 0.0
        """Group commits, and the time they took (for metrics)."""
        self._bytes_lock = threading.Lock()
        # Requests taken off the queue but not run yet, each with the id of the
        # last message queued before it (see "Maintenance in slices").
        self._held: deque[tuple[_Task | object, int]] = deque()
        self._bound = 0  # while a held request runs: the last id queued before it
        self._last_id = store.last_id()  # of the last message numbered (see forget_sender)
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._stopping = threading.Event()
        self._next_sweep = time.monotonic()
        self._unindexed = 0
        # Slice sizes start small and learn; the caps keep one transaction's
        # memory modest whatever the clock says.
        self._index_rows = _SliceSize(50, low=1, high=10_000)
        self._delete_rows = _SliceSize(100, low=1, high=50_000)
        self._merge_pages = _SliceSize(16, low=4, high=10_000)
        self.delivery_context: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        """Wraps the delivery of each committed group, so that the receiving side can
        coalesce a whole group into one write per connection (set by the hub)."""

    @property
    def backlog(self) -> int:
        """Messages and tasks waiting in the queue (approximate, for monitoring)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, message: Outgoing) -> bool:
        """Queue a message; False (nothing queued) if the backlog is full, in
        messages or in bytes."""
        size = _text_bytes(message)
        with self._bytes_lock:
            if self._queue.qsize() >= MAX_BACKLOG or self._queued_bytes + size > MAX_BACKLOG_BYTES:
                return False
            self._queued_bytes += size
        self._queue.put(message)
        return True

    def run_in_order(self, task: _Task) -> None:
        """Run ``task`` on the writer thread after every message queued before it
        (and after any maintenance job in progress)."""
        self._queue.put(task)

    def drain(self, timeout: float) -> bool:
        """Commit and deliver every message queued so far, cutting short any
        maintenance job in progress (an interrupted forget answers with an error);
        False if that took more than ``timeout`` seconds. For shutdown: nothing new
        should be submitted meanwhile."""
        self._stopping.set()
        drained = threading.Event()
        self._queue.put(drained.set)
        return drained.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, cut short any maintenance job, then end the thread."""
        self._stopping.set()
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def forget_sender(self, account_id: int) -> int:
        """Erase beyond recovery every message ``account_id`` sent before the running
        request was queued; how many. Call it only from a ``run_in_order`` task.

        Messages queued meanwhile are committed between its slices and are kept.
        Raises StoreError if the erasure cannot be completed, or is cut short because
        the writer is stopping (the slices done so far stay done).
        """
        assert threading.current_thread() is self._thread, "forget_sender runs in order"
        upto = self._bound

        def _delete(limit: int) -> int:
            return self._store.forget_sender(account_id, upto=upto, limit=limit)

        return self._erase(_delete, always_purge=True)

    def saw_id(self, message_id: int) -> None:
        """Another server committed message ``message_id`` (cluster mode): an erasure asked
        for from now on covers it too. Any thread; a lost race only lowers the bound."""
        self._last_id = max(self._last_id, message_id)

    def index_now(self) -> None:
        """Index every stored message (writer thread only; search calls it in order)."""
        self._index(complete=True)

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        self._index(complete=True)  # whatever an earlier run stored but did not index
        while True:
            while self._held:
                item, self._bound = self._held.popleft()
                if item is _STOP:
                    self._take(None)  # whatever was queued right behind the stop
                    return
                self._run_task(item)
            try:
                first = self._queue.get(timeout=self._idle_timeout())
            except queue.Empty:
                if self._unindexed:
                    self._index(complete=False)
                elif time.monotonic() >= self._next_sweep:
                    self._sweep()
                continue
            self._take(first)
            if self._unindexed >= _INDEX_LAG:
                self._index(complete=False)  # busy for long: do not let search fall behind
            if time.monotonic() >= self._next_sweep:
                self._sweep()

    def _take(self, first: object | None) -> None:
        """Commit the messages queued now (after ``first``, if given); hold the rest."""
        items = [] if first is None else [first]
        while len(items) < _MAX_GROUP:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        taken = sum(_text_bytes(item) for item in items if isinstance(item, Outgoing))
        with self._bytes_lock:
            self._queued_bytes -= taken
        group: list[Outgoing] = []
        for item in items:
            if isinstance(item, Outgoing):
                group.append(item)
                continue
            self._commit(group)
            group = []
            self._held.append((item, self._last_id))
        self._commit(group)

    def _between_slices(self, wait: float = 0.0) -> None:
        """Let the messages queued during a maintenance slice through (waiting up
        to ``wait`` seconds for one) before the next slice."""
        try:
            first = self._queue.get(timeout=wait) if wait > 0 else None
        except queue.Empty:
            return
        self._take(first)

    def _run_task(self, task: Any) -> None:
        try:
            task()
        except Exception:
            log.exception("writer task failed")

    def _commit(self, group: list[Outgoing]) -> None:
        if not group:
            return
        drafts = [
            Draft(m.sender, m.text, m.keep, m.room, m.room_name, m.recipient, m.key, m.action)
            for m in group
        ]
        error: StoreError | None = None
        began = time.perf_counter()
        try:
            results = self._store.commit_messages(drafts)
        except StoreError as exc:
            log.error("cannot store %d messages: %s", len(group), exc)
            error = exc
        else:
            for message, result in zip(group, results, strict=True):
                message.id, message.ts, message.seq = result.id, result.ts, result.seq
                message.duplicate = result.duplicate
                self._last_id = max(self._last_id, result.id)
            self._unindexed += sum(1 for r in results if r.seq is not None and not r.duplicate)
            self.committed_messages += len(group)
        # Counted per group, by the only thread that writes them (read by metrics.py).
        self.commits += 1
        self.commit_seconds += time.perf_counter() - began
        with self.delivery_context():
            for message in group:
                try:
                    message.on_done(message, error)
                except Exception:
                    log.exception("delivering message %d failed", message.id)

    def _idle_timeout(self) -> float | None:
        if self._unindexed:
            return _INDEX_IDLE  # index once the burst is over
        if self._retention_days <= 0:
            return None
        return max(0.0, self._next_sweep - time.monotonic())

    # -- maintenance, in slices -------------------------------------------------------------

    def _index(self, *, complete: bool) -> None:
        """Index one slice of stored rows or, with ``complete``, slices until none
        is left (letting messages through between them)."""
        while True:
            size = self._index_rows.size
            started = time.perf_counter()
            try:
                done = self._store.index_pending(size)
            except StoreError as exc:
                log.error("search indexing failed (will retry): %s", exc)
                return
            self._index_rows.learn(done, time.perf_counter() - started)
            if done < size:
                self._unindexed = 0  # caught up (messages are only let in between slices)
                return
            self._unindexed = max(0, self._unindexed - done)
            if not complete or self._stopping.is_set():
                return
            self._between_slices()

    def _erase(self, delete: Callable[[int], int], *, always_purge: bool) -> int:
        """Erase beyond recovery what ``delete`` deletes; how many rows.

        ``delete(n)`` deletes at most ``n`` rows in one transaction and says how
        many. Then the search index is merged until the deleted words are out of
        it, and the write-ahead log copied back and truncated: every step a slice.
        Without ``always_purge`` nothing more is done if no row was deleted.
        """
        erased = 0
        while True:
            self._check_not_stopping()
            size = self._delete_rows.size
            started = time.perf_counter()
            done = delete(size)
            self._delete_rows.learn(done, time.perf_counter() - started)
            erased += done
            self._between_slices()
            if done < size:
                break
        if not erased and not always_purge:
            return 0
        self._merge_index()
        deadline = time.monotonic() + _TRUNCATE_PATIENCE
        while not self._store.truncate_wal():
            # A reader still uses part of the log; it finishes within milliseconds.
            self._check_not_stopping()
            if time.monotonic() > deadline:
                raise StoreError("cannot truncate the write-ahead log: readers keep it busy")
            self._between_slices(wait=_TRUNCATE_RETRY)
        return erased

    def _merge_index(self) -> None:
        """Merge the search index into one segment, which drops deleted words, a
        slice at a time."""
        while True:
            self._check_not_stopping()
            pages = self._merge_pages.size
            started = time.perf_counter()
            written = self._store.merge_index(pages)
            if written < _MERGE_DONE:
                return  # a step with nothing to merge says nothing about the cost of one
            self._merge_pages.learn(pages, time.perf_counter() - started)
            self._between_slices()

    def _check_not_stopping(self) -> None:
        if self._stopping.is_set():
            raise StoreError("the server is shutting down; erasure was cut short")

    def _sweep(self) -> None:
        self._next_sweep = time.monotonic() + _RETENTION_EVERY
        if self._retention_days <= 0:
            return
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=self._retention_days)
        stamp = utc_timestamp(cutoff)

        def _delete(limit: int) -> int:
            return self._store.delete_older_than(stamp, limit=limit)

        try:
            deleted = self._erase(_delete, always_purge=False)
        except StoreError as exc:
            log.error("retention sweep failed: %s", exc)
            return
        if deleted:
            log.info(
                "retention: erased %d messages older than %d days", deleted, self._retention_days
            )
