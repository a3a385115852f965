"""Non-blocking TLS channels, each owned by one I/O loop.

Threading model
---------------
Every TLS socket belongs to exactly one :class:`~securechat.ioloop.IOLoop`
thread, and only that thread calls ``do_handshake``, ``recv``, ``send`` or
``close`` on it: OpenSSL's SSL objects are not safe for concurrent reads and
writes. Other threads reach a channel only through its
:class:`~securechat.outbox.Outbox` (bounded; long answers as streams). When
the loop flushes a channel it takes everything queued (up to ``WRITE_CHUNK``)
and hands it to OpenSSL in one write.

The TLS handshake runs in the owning loop, non-blocking, with a deadline, so a
peer that connects and says nothing delays no one. An idle channel is pinged;
one that stops answering is dropped. A frame that has begun must be complete
within ``frame_timeout``: any byte resets the keepalive, so without that
deadline a peer trickling a byte every few seconds would hold a half-received
frame, and its buffer, open for ever.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .errors import ProtocolError
from .outbox import OUTBOX_LIMIT, Outbox, Stream
from .wire.protocol import Decoder, Frame, encode

__all__ = [
    "CLOSE_TIMEOUT",
    "FRAME_TIMEOUT",
    "PROTOCOL_ERROR",
    "WRITE_CHUNK",
    "Channel",
    "ChannelHandler",
]

if TYPE_CHECKING:  # the loop imports this module
    from .ioloop import IOLoop

log = logging.getLogger(__name__)

WRITE_CHUNK = 256 * 1024
"""Most bytes handed to OpenSSL in one write; larger writes gain nothing and
would delay the other channels of the loop."""

CLOSE_TIMEOUT = 2.0
"""Seconds a closing channel gets to deliver its last frames."""

FRAME_TIMEOUT = 30.0
"""Seconds a peer gets to finish a frame it has begun. The largest frame (80 KiB)
then needs 2.7 KB/s, below any link a chat client can use; nothing honest sends
a frame slower."""

PROTOCOL_ERROR = "protocol error"
"""How the reason (and the ``bad_frame`` text) of a close for a protocol error starts."""

READ_BUDGET = 256 * 1024
"""Most bytes read from one channel per wake-up, so one fast sender cannot starve a loop."""

_RECV_SIZE = 64 * 1024


class ChannelHandler(Protocol):
    """What a channel reports to: the server's session glue or the client core."""

    def on_open(self, channel: Channel) -> None:
        """The TLS handshake completed."""

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """A frame arrived (pings are answered by the channel and not passed on)."""

    def on_close(self, channel: Channel, reason: str) -> None:
        """The channel closed; called exactly once, from the owning loop."""


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
        self._streaming = False  # frames flow (at once for TLS; after the upgrade for web)
        self.routine_close = False
        """True when the close is routine, not worth a warning (a browser done fetching
        the web client's files); handlers read it in ``on_close``."""
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
        self._tls_up()
        self._flush()

    def _tls_up(self) -> None:
        """The handshake is done: frames flow at once (a web channel speaks HTTP first)."""
        self._open_stream()

    def _open_stream(self) -> None:
        """Start the frame stream: from here on the peer is pinged and its frames handled."""
        self._streaming = True
        try:
            self._call(self.handler.on_open)
        except ProtocolError as exc:
            # _call passes protocol errors on for the reader to answer; here we are it.
            self._refuse(f"{PROTOCOL_ERROR}: {exc}")

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
            self._last_recv = time.monotonic()
            self._ping_sent_at = None
            if self.outbox.close_reason is not None:
                continue  # closing: drain and ignore what the peer still sends
            try:
                self._received(data)
            except ProtocolError as exc:
                # Not logged here: the handler's on_close hears the reason and decides.
                self._refuse(f"{PROTOCOL_ERROR}: {exc}")
                return
            if self._state != self._OPEN or self.outbox.close_reason is not None:
                return
        if self._state == self._OPEN and self.sock.pending() and self.loop is not None:
            # OpenSSL holds decrypted bytes the selector cannot see: come back soon.
            self.loop.mark_dirty(self, read=True)

    def _received(self, data: bytes) -> None:
        """Bytes from the peer, decrypted (a web channel unwraps HTTP and WebSocket first)."""
        self._feed_frames(data)

    def _feed_frames(self, data: bytes) -> None:
        """Decode and dispatch the frames in ``data``; ProtocolError for a broken stream."""
        self.decoder.feed(data)
        completed = False
        while (frame := self.decoder.next_frame()) is not None:
            completed = True
            self._dispatch(frame)
            if self._state != self._OPEN or self.outbox.close_reason is not None:
                return
        if not self.decoder.buffered:
            self._frame_deadline = None
        elif completed or self._frame_deadline is None:
            # A new frame has begun.
            self._frame_deadline = self._last_recv + self._frame_timeout

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
                self._pending_write = self._next_output()
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
            farewell = self._farewell(reason)
            if farewell:
                self._pending_write = farewell
                self._flush()  # writes it, and comes back here with nothing left
                return
            self._abort(reason)
        elif self.deadline is None:
            # A peer that will not read its last frames must not hold the socket open.
            self.deadline = time.monotonic() + CLOSE_TIMEOUT
            self.deadline_reason = reason

    def _next_output(self) -> bytes:
        """The next bytes to hand to OpenSSL (a web channel wraps them in WebSocket messages)."""
        return self.outbox.take(WRITE_CHUNK)

    def _farewell(self, reason: str) -> bytes:
        """Last bytes to send before closing (a WebSocket close message); once, then b""."""
        return b""

    def _tick(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self._abort(self.deadline_reason)
            return
        if self._state != self._OPEN or not self._streaming:
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
