"""Non-blocking TLS channels and the I/O loops that own them.

Threading model
---------------
Every TLS socket belongs to exactly one :class:`IOLoop` thread, and only that
thread calls ``do_handshake``, ``recv``, ``send`` or ``close`` on it: OpenSSL's
SSL objects are not safe for concurrent reads and writes. A loop owns many
channels through a ``selectors`` selector, so a server with thousands of idle
clients needs a handful of threads, not thousands.

Other threads reach a channel only through its :class:`Outbox`: they append
encoded frames (``Outbox.put``) and the outbox tells the owning loop that the
channel has work. A put from the owning thread itself just marks the channel
dirty; a put from elsewhere also writes one byte to the loop's wake-up pipe,
and only if the loop has not been woken already, so a burst of messages costs
one wake-up, not one per message. When the loop flushes a channel it takes
everything queued (up to ``WRITE_CHUNK``) and hands it to OpenSSL in one write.

An outbox is bounded: a peer that stops reading fills it, the put fails, and
the owner closes that channel with a reason. Nobody ever waits for a slow peer.

Long answers (history pages, join replays, exports) are queued as a
:class:`Stream`, not as bytes: the owner pulls the stream's next slice only
when everything queued before it has been handed to OpenSSL, so a 500-message
answer costs memory for one slice at a time, arrives whole to a peer that keeps
reading, occupies no thread while the peer is slow, and is dropped the moment
the channel closes. Frames queued after a stream wait behind it, in order.

The TLS handshake runs in the owning loop, non-blocking, with a deadline, so a
peer that connects and says nothing delays no one. An idle channel is pinged;
one that stops answering is dropped. A frame that has begun must be complete
within ``frame_timeout``: any byte resets the keepalive, so without that
deadline a peer trickling a byte every few seconds would hold a half-received
frame, and its buffer, open for ever.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .errors import ProtocolError
from .wire.protocol import Decoder, Frame, encode

__all__ = [
    "BULK_LIMIT",
    "CLOSE_TIMEOUT",
    "FRAME_TIMEOUT",
    "OUTBOX_LIMIT",
    "PROTOCOL_ERROR",
    "WRITE_CHUNK",
    "Channel",
    "ChannelHandler",
    "IOLoop",
    "Outbox",
    "Stream",
]

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 4 * 1024 * 1024
"""Bytes queued for one peer before it counts as stuck: about 20,000 typical chat
messages, or a /history page of 250 maximum-size ones."""

WRITE_CHUNK = 256 * 1024
"""Most bytes handed to OpenSSL in one write; larger writes gain nothing and
would delay the other channels of the loop."""

CLOSE_TIMEOUT = 2.0
"""Seconds a closing channel gets to deliver its last frames."""

BULK_LIMIT = 8 * 1024 * 1024
"""File-chunk bytes queued for one peer before it counts as stuck: several
transfer windows (each sender keeps at most ``FILE_WINDOW`` in flight)."""

FRAME_TIMEOUT = 30.0
"""Seconds a peer gets to finish a frame it has begun. The largest frame (80 KiB)
then needs 2.7 KB/s, below any link a chat client can use; nothing honest sends
a frame slower."""

PROTOCOL_ERROR = "protocol error"
"""How the reason (and the ``bad_frame`` text) of a close for a protocol error starts."""

READ_BUDGET = 256 * 1024
"""Most bytes read from one channel per wake-up, so one fast sender cannot starve a loop."""

_RECV_SIZE = 64 * 1024
_TICK = 0.5  # seconds between checks of deadlines and keepalives


class ChannelHandler(Protocol):
    """What a channel reports to: the server's session glue or the client core."""

    def on_open(self, channel: Channel) -> None:
        """The TLS handshake completed."""

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """A frame arrived (pings are answered by the channel and not passed on)."""

    def on_close(self, channel: Channel, reason: str) -> None:
        """The channel closed; called exactly once, from the owning loop."""


class Stream(Protocol):
    """A long answer produced slice by slice as the peer reads it (see the module notes)."""

    def next_slice(self) -> bytes | None:
        """The next encoded frames to write, or None when the answer is complete.

        Called only by the channel's owning loop, with no lock held.
        """

    def cancel(self) -> None:
        """The channel closed before the stream completed."""


class Outbox:
    """The bounded queues of encoded frames waiting to be written to one channel.

    Two classes of traffic: chat (everything but file data) and bulk (file
    chunks). The owner always takes all queued chat before the next bulk
    chunk, so a file transfer delays a message by at most one chunk. Each
    class has its own bound: bulk data is also bounded end to end by the
    transfer window, so hitting ``BULK_LIMIT`` means a peer broke the protocol.

    Thread-safe; the only part of a channel that threads other than its owner touch.
    """

    __slots__ = (
        "_bulk",
        "_bulk_size",
        "_chunks",
        "_limit",
        "_lock",
        "_notify",
        "_size",
        "_streams",
        "close_reason",
        "overflowed",
    )

    def __init__(self, *, limit: int, notify: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._chunks: deque[bytes | Stream] = deque()
        self._streams = 0  # how many of _chunks are streams
        self._bulk: deque[bytes] = deque()
        self._size = 0
        self._bulk_size = 0
        self._limit = limit
        self._notify = notify
        self.close_reason: str | None = None
        self.overflowed = False

    def put(self, data: bytes, *, bulk: bool = False) -> bool:
        """Queue ``data`` (``bulk`` for file chunks); False if closing or overflowed."""
        cancelled: list[Stream] = []
        with self._lock:
            if self.close_reason is not None:
                return False
            was_empty = not self._chunks and not self._bulk
            if bulk:
                over = self._bulk_size + len(data) > BULK_LIMIT
            else:
                over = self._size + len(data) > self._limit
            if over:
                self.overflowed = True
                self.close_reason = (
                    f"too slow: {self._size + self._bulk_size + len(data)} bytes waiting to "
                    f"be sent (limit {self._limit}); the client stopped reading"
                )
                cancelled = self._clear()
            elif bulk:
                self._bulk.append(data)
                self._bulk_size += len(data)
            else:
                self._chunks.append(data)
                self._size += len(data)
            if not over and not was_empty:
                return True  # the owner was already told about the earlier frames
        for stream in cancelled:
            stream.cancel()
        self._notify()
        return not over

    def put_stream(self, stream: Stream) -> bool:
        """Queue a stream behind what is queued; False (stream untouched) if closing."""
        with self._lock:
            if self.close_reason is not None:
                return False
            was_empty = not self._chunks and not self._bulk
            self._chunks.append(stream)
            self._streams += 1
        if was_empty:
            self._notify()
        return True

    def _clear(self) -> list[Stream]:
        streams = [c for c in self._chunks if not isinstance(c, bytes)] if self._streams else []
        self._chunks.clear()
        self._bulk.clear()
        self._size = self._bulk_size = self._streams = 0
        return streams

    def discard(self) -> None:
        """The channel is gone: drop what is queued and cancel its streams."""
        with self._lock:
            streams = self._clear()
        for stream in streams:
            stream.cancel()

    def close(self, reason: str) -> None:
        """Ask the owner to send what is queued, then close the channel."""
        with self._lock:
            if self.close_reason is not None:
                return
            self.close_reason = reason
        self._notify()

    @property
    def size(self) -> int:
        """Bytes currently queued, chat and bulk (streams count once produced)."""
        return self._size + self._bulk_size

    def take(self, max_bytes: int) -> bytes:
        """Remove and return queued bytes: whole frames, at least one, up to ``max_bytes``.

        All queued chat that fits comes first; then at most one bulk chunk. A
        stream at the head of the chat queue yields its next slice instead.
        Owner only.
        """
        while True:
            with self._lock:
                parts: list[bytes] = []
                taken = 0
                while self._chunks:
                    chunk = self._chunks[0]
                    if not isinstance(chunk, bytes) or (parts and taken + len(chunk) > max_bytes):
                        break
                    self._chunks.popleft()
                    parts.append(chunk)
                    taken += len(chunk)
                self._size -= taken
                head = self._chunks[0] if self._chunks and not parts else None
                stream = head if head is not None and not isinstance(head, bytes) else None
                if (
                    stream is None
                    and self._bulk
                    and (not parts or taken + len(self._bulk[0]) <= max_bytes)
                ):
                    chunk = self._bulk.popleft()
                    parts.append(chunk)
                    self._bulk_size -= len(chunk)
            if stream is None:
                break
            data = stream.next_slice()  # without the lock: it may take the hub's
            if data is not None:
                return data
            with self._lock:
                if self._chunks and self._chunks[0] is stream:
                    self._chunks.popleft()
                    self._streams -= 1
        if not parts:
            return b""
        return parts[0] if len(parts) == 1 else b"".join(parts)


class Channel:
    """One non-blocking TLS connection, owned by exactly one :class:`IOLoop`.

    Everything but :attr:`outbox` (and the read-only attributes) is touched only
    by the owning loop's thread.
    """

    _HANDSHAKING, _OPEN, _CLOSED = range(3)

    def __init__(
        self,
        sock: ssl.SSLSocket,
        handler: ChannelHandler,
        *,
        peer: str,
        handshake_timeout: float = 10.0,
        ping_interval: float = 30.0,
        ping_timeout: float = 30.0,
        outbox_limit: int = OUTBOX_LIMIT,
        frame_timeout: float = FRAME_TIMEOUT,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.handler = handler
        self.decoder = Decoder()
        self.loop: IOLoop | None = None
        self.outbox = Outbox(limit=outbox_limit, notify=self._notify)
        self.deadline: float | None = time.monotonic() + handshake_timeout
        """When set, the channel is closed if it is still open at this monotonic time."""
        self.deadline_reason = "TLS handshake timed out"
        self._state = self._HANDSHAKING
        self._handshaken = False
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._last_recv = time.monotonic()
        self._ping_sent_at: float | None = None
        self._frame_timeout = frame_timeout
        self._frame_deadline: float | None = None  # set while a frame is half received
        self._pending_write = b""
        self._events = 0
        self.error: BaseException | None = None
        """The TLS or socket error that closed the channel, for callers that explain it."""

    # -- read-only facts ----------------------------------------------------

    @property
    def is_handshaken(self) -> bool:
        """True once the TLS handshake has completed (even if closed since)."""
        return self._handshaken

    @property
    def tls_version(self) -> str:
        """The negotiated protocol, e.g. ``TLSv1.3`` (empty before the handshake)."""
        return self.sock.version() or ""

    # -- what other threads may call -----------------------------------------

    def send(self, data: bytes, *, bulk: bool = False) -> bool:
        """Queue encoded frame bytes (``bulk`` for file chunks); False if it is closing."""
        return self.outbox.put(data, bulk=bulk)

    def send_stream(self, stream: Stream) -> bool:
        """Queue a long answer, produced as the peer reads it; False if it is closing."""
        return self.outbox.put_stream(stream)

    def backlog(self) -> int:
        """Bytes queued for this channel and not yet handed to OpenSSL."""
        return self.outbox.size

    def cancel_deadline(self) -> None:
        """Clear the deadline (handshake or login timer) from any thread."""
        if self.loop is not None:
            self.loop.call_soon(self._clear_deadline)

    def _clear_deadline(self) -> None:
        if self.outbox.close_reason is None:  # a closing channel keeps its close timer
            self.deadline = None

    def close(self, reason: str) -> None:
        """Send what is queued, then close (a request: the owner does the work)."""
        self.outbox.close(reason)

    # -- owner only -------------------------------------------------------------

    def _notify(self) -> None:
        if self.loop is not None:
            self.loop.mark_dirty(self)

    def _set_events(self, events: int) -> None:
        if events != self._events and self.loop is not None:
            self.loop.selector.modify(self.sock, events, self)
            self._events = events

    def _on_ready(self, mask: int) -> None:
        if self._state == self._HANDSHAKING:
            self._handshake()
            return
        if mask & selectors.EVENT_READ:
            self._read()
        if self._state == self._OPEN:
            self._flush()

    def _handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._discard_unread()
            self._abort(f"TLS handshake failed: {_describe(exc)}", exc=exc)
            return
        self._state = self._OPEN
        self._handshaken = True
        self.deadline = None
        self._last_recv = time.monotonic()
        self._set_events(selectors.EVENT_READ)
        try:
            self._call(self.handler.on_open)
        except ProtocolError as exc:
            # _call passes protocol errors on for the reader to answer; here we are it.
            self._refuse(f"{PROTOCOL_ERROR}: {exc}")
        self._flush()

    def _discard_unread(self) -> None:
        """Read and drop what the peer already sent, so closing sends FIN, not RST.

        A reset can overtake the TLS alert we just queued (under TLS 1.3 the
        client has sent more by the time we refuse its certificate), and the
        peer would then never learn why it was refused.
        """
        try:
            while socket.socket.recv(self.sock, 65536, socket.MSG_DONTWAIT):
                pass
        except OSError:
            pass

    def _read(self) -> None:
        budget = READ_BUDGET
        while budget > 0 and self._state == self._OPEN:
            try:
                data = self.sock.recv(_RECV_SIZE)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError) as exc:
                self._abort(f"connection error: {_describe(exc)}", exc=exc)
                return
            if not data:
                self._abort("peer closed the connection")
                return
            budget -= len(data)
            now = self._last_recv = time.monotonic()
            self._ping_sent_at = None
            if self.outbox.close_reason is not None:
                continue  # closing: drain and ignore what the peer still sends
            try:
                self.decoder.feed(data)
                completed = False
                while (frame := self.decoder.next_frame()) is not None:
                    completed = True
                    self._dispatch(frame)
                    if self._state != self._OPEN or self.outbox.close_reason is not None:
                        return
            except ProtocolError as exc:
                # Not logged here: the handler's on_close hears the reason and decides.
                self._refuse(f"{PROTOCOL_ERROR}: {exc}")
                return
            if not self.decoder.buffered:
                self._frame_deadline = None
            elif completed or self._frame_deadline is None:
                self._frame_deadline = now + self._frame_timeout  # a new frame has begun
        if self._state == self._OPEN and self.sock.pending() and self.loop is not None:
            # OpenSSL holds decrypted bytes the selector cannot see: come back soon.
            self.loop.mark_dirty(self, read=True)

    def _refuse(self, reason: str) -> None:
        """Answer a protocol error with ``bad_frame`` and close: the stream is lost."""
        self.send(encode("error", code="bad_frame", text=reason))
        self.close(reason)

    def _dispatch(self, frame: Frame) -> None:
        if frame.body and frame.type in ("ping", "pong"):
            # Only file_chunk carries a body (docs/protocol.md §2); the handler, which
            # checks that for every other frame, never sees these two.
            raise ProtocolError(f"{frame.type!r} frames carry no body")
        if frame.type == "ping":
            self.send(encode("pong"))
        elif frame.type != "pong":
            self._call(self.handler.on_frame, frame)

    def _flush(self) -> None:
        if self.outbox.overflowed:
            # The peer stopped reading: drop it now, whatever is still unsent.
            self._abort(self.outbox.close_reason or "outbound queue overflowed")
            return
        blocked = False
        while self._state == self._OPEN:
            if not self._pending_write:
                self._pending_write = self.outbox.take(WRITE_CHUNK)
                if not self._pending_write:
                    break
            try:
                sent = self.sock.send(self._pending_write)
            except ssl.SSLWantWriteError:
                # OpenSSL wants the same bytes again once the socket is writable.
                blocked = True
                break
            except ssl.SSLWantReadError:
                blocked = True
                break
            except (ssl.SSLError, OSError) as exc:
                self._abort(f"connection error: {_describe(exc)}", exc=exc)
                return
            self._pending_write = self._pending_write[sent:]
        if self._state != self._OPEN:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if blocked else 0)
        self._set_events(events)
        reason = self.outbox.close_reason
        if reason is None:
            return
        if not blocked and not self._pending_write:
            self._abort(reason)
        elif self.deadline is None:
            # A peer that will not read its last frames must not hold the socket open.
            self.deadline = time.monotonic() + CLOSE_TIMEOUT
            self.deadline_reason = reason

    def _tick(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self._abort(self.deadline_reason)
            return
        if self._state != self._OPEN:
            return
        if self._frame_deadline is not None and now >= self._frame_deadline:
            self._frame_deadline = None
            self._refuse(
                f"{PROTOCOL_ERROR}: a frame was not completed within {self._frame_timeout:g} s"
            )
            return
        if self._ping_sent_at is None:
            if now - self._last_recv >= self._ping_interval:
                self._ping_sent_at = now
                self.send(encode("ping"))
        elif now - self._ping_sent_at >= self._ping_timeout:
            self._abort(f"ping timeout: no answer for {now - self._last_recv:.0f} s")

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(self, *args)
        except ProtocolError:
            raise  # the reader answers it with an error frame and closes
        except Exception:
            # A bug in a handler must cost one connection, never the whole loop.
            log.exception("%s: internal error in %s", self.peer, getattr(fn, "__name__", fn))
            self.close("internal error")

    def _abort(self, reason: str, *, exc: BaseException | None = None) -> None:
        if self._state == self._CLOSED:
            return
        self._state = self._CLOSED
        if self.loop is not None:
            self.loop.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        self._pending_write = b""
        if exc is not None:
            self.error = exc
        if self.outbox.close_reason is None:
            self.outbox.close(reason)
        self.outbox.discard()
        try:
            self.handler.on_close(self, reason)
        except Exception:
            log.exception("%s: error while closing", self.peer)


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
                        key.data._on_ready(mask)
                self._run_pending()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + _TICK
                    for channel in list(self._channels):
                        channel._tick(now)
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
                channel._on_ready(selectors.EVENT_READ)
            for channel in dirty:
                if channel._state == Channel._OPEN:
                    channel._flush()
                elif channel._state == Channel._HANDSHAKING and channel.outbox.close_reason:
                    channel._abort(channel.outbox.close_reason)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
