"""The I/O loops: each a thread that owns a set of channels outright.

Every TLS socket belongs to exactly one :class:`IOLoop` thread, and only that
thread calls ``do_handshake``, ``recv``, ``send`` or ``close`` on it (see
:mod:`securechat.channel`). A loop owns many channels through one ``selectors``
selector, so a server with thousands of idle clients needs a handful of
threads, not thousands. A put into a channel's outbox from the owning thread
just marks the channel dirty; a put from elsewhere also writes one byte to the
loop's wake-up pipe, and only if the loop has not been woken already, so a
burst of messages costs one wake-up, not one per message.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable

from .channel import Channel

__all__ = ["IOLoop"]

log = logging.getLogger(__name__)

_TICK = 0.5  # seconds between checks of deadlines and keepalives


class IOLoop:
    """A thread that owns a set of channels and does all their I/O through one selector.

    Once the thread has ended (stopped, or crashed: see :attr:`failure`) every
    method stays callable and does nothing; :meth:`add` then returns False.
    The wake-up pipe is written only under the lock and closed only after
    ``_closed`` is set under it, so a late call can never write into whatever
    file has since been given the pipe's descriptor number.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.selector = selectors.DefaultSelector()
        self.failure: BaseException | None = None
        """What ended the loop's thread, if it crashed."""
        self._lock = threading.Lock()
        self._dirty: set[Channel] = set()
        self._readable: set[Channel] = set()
        self._incoming: list[Channel] = []
        self._tasks: deque[Callable[[], None]] = deque()
        self._woken = False
        self._stopping = False
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._channels: set[Channel] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def channel_count(self) -> int:
        """How many channels this loop owns."""
        return len(self._channels)

    def queued_bytes(self) -> int:
        """Bytes waiting in this loop's outboxes (for monitoring; any thread)."""
        # list() copies the set in one step under the GIL, while the loop may change it.
        return sum(channel.outbox.size for channel in list(self._channels))

    @property
    def is_running(self) -> bool:
        """False once the loop's thread has ended, stopped or crashed."""
        return not self._closed

    def start(self) -> None:
        """Start the loop's thread."""
        self._thread.start()

    def add(self, channel: Channel) -> bool:
        """Hand a fresh channel to this loop (any thread); False if the loop has ended.

        After False the caller still owns the channel's socket and must close it.
        """
        with self._lock:
            if self._closed:
                return False
            channel.loop = self
            self._incoming.append(channel)
            self._wake_locked()
        return True

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in this loop's thread at its next turn (any thread)."""
        with self._lock:
            if not self._closed:
                self._tasks.append(fn)
                self._wake_locked()

    def mark_dirty(self, channel: Channel, *, read: bool = False) -> None:
        """Note that ``channel`` has something to write (or, with ``read``, to read)."""
        # One lock round for both the note and the wake-up: this runs once per
        # recipient of every message, from the writer and history threads.
        with self._lock:
            if self._closed:
                return
            (self._readable if read else self._dirty).add(channel)
            if threading.get_ident() != self._thread.ident:
                self._wake_locked()

    def forget(self, channel: Channel) -> None:
        """Drop a closing channel from the selector (owner only)."""
        self._channels.discard(channel)
        try:
            self.selector.unregister(channel.sock)
        except (KeyError, ValueError):
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Close every channel at once and end the thread (any thread)."""

        def _stop() -> None:
            self._stopping = True

        self.call_soon(_stop)
        if self._thread.is_alive() and threading.get_ident() != self._thread.ident:
            self._thread.join(timeout)

    def _wake_locked(self) -> None:
        """Write the wake-up byte unless one is pending; the caller holds the lock."""
        if self._woken:
            return
        self._woken = True
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # a full pipe already guarantees a wake-up

    def _adopt(self, channel: Channel) -> None:
        try:
            self.selector.register(channel.sock, selectors.EVENT_READ, channel)
        except (ValueError, OSError) as exc:
            channel._abort(f"cannot watch socket: {exc}")
            return
        channel._events = selectors.EVENT_READ
        self._channels.add(channel)
        channel._handshake()

    def _run(self) -> None:
        next_tick = time.monotonic() + _TICK
        try:
            while not self._stopping:
                with self._lock:
                    busy = bool(self._incoming or self._tasks or self._dirty or self._readable)
                timeout = 0.0 if busy else max(0.0, next_tick - time.monotonic())
                for key, mask in self.selector.select(timeout):
                    if key.data is None:
                        self._drain_wake_pipe()
                    else:
                        self._guarded(key.data, key.data._on_ready, mask)
                self._run_pending()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + _TICK
                    for channel in list(self._channels):
                        self._guarded(channel, channel._tick, now)
        except BaseException as exc:  # whatever it was, the channels must still be closed
            self.failure = exc
            log.critical("I/O loop %s crashed; closing its connections", self.name, exc_info=True)
        finally:
            with self._lock:
                self._closed = True
                incoming, self._incoming = self._incoming, []
                self._tasks.clear()
                self._dirty.clear()
                self._readable.clear()
            reason = "server shutting down" if self.failure is None else "internal error"
            for channel in [*self._channels, *incoming]:
                channel._abort(reason)
            self.selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_pending(self) -> None:
        # Loop: flushing or reading may queue more work for channels of this loop.
        for _ in range(64):
            with self._lock:
                self._woken = False
                incoming, self._incoming = self._incoming, []
                tasks, self._tasks = self._tasks, deque()
                dirty, self._dirty = self._dirty, set()
                readable, self._readable = self._readable, set()
            if not (incoming or tasks or dirty or readable):
                return
            for channel in incoming:
                self._adopt(channel)
            for task in tasks:
                try:
                    task()
                except Exception:
                    log.exception("I/O loop %s: task failed", self.name)
            for channel in readable:
                self._guarded(channel, channel._on_ready, selectors.EVENT_READ)
            for channel in dirty:
                if channel._state == Channel._OPEN:
                    self._guarded(channel, channel._flush)
                elif channel._state == Channel._HANDSHAKING and channel.outbox.close_reason:
                    channel._abort(channel.outbox.close_reason)

    def _guarded(self, channel: Channel, step: Callable[..., None], *args: object) -> None:
        """Run one channel's step; a bug in it costs that channel, not the whole loop."""
        try:
            step(*args)
        except Exception:
            log.exception("I/O loop %s: internal error on %s; closing it", self.name, channel.peer)
            channel._abort("internal error")
