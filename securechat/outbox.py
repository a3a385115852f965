"""The bounded queue of frames waiting to be written to one channel.

Other threads reach a channel only through its :class:`Outbox`: they append
encoded frames (``Outbox.put``) and the outbox tells the owning loop that the
channel has work. An outbox is bounded: a peer that stops reading fills it,
the put fails, and the owner closes that channel with a reason. Nobody ever
waits for a slow peer.

Long answers (history pages, join replays, exports) are queued as a
:class:`Stream`, not as bytes: the owner pulls the stream's next slice only
when everything queued before it has been handed to OpenSSL, so a 500-message
answer costs memory for one slice at a time, arrives whole to a peer that keeps
reading, occupies no thread while the peer is slow, and is dropped the moment
the channel closes. Frames queued after a stream wait behind it, in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["BULK_LIMIT", "OUTBOX_LIMIT", "Outbox", "Stream"]

OUTBOX_LIMIT = 4 * 1024 * 1024
"""Bytes queued for one peer before it counts as stuck: about 20,000 typical chat
messages, or a /history page of 250 maximum-size ones."""

BULK_LIMIT = 8 * 1024 * 1024
"""File-chunk bytes queued for one peer before it counts as stuck: several
transfer windows (each sender keeps at most ``FILE_WINDOW`` in flight)."""


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
