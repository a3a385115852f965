"""Per-conversation order for messages that reach a server by several paths.

In cluster mode a server learns of committed messages from its own writer and,
through the bus, from every other server; notifications from different servers
may overtake each other, and one may be lost with a Redis restart. The store
numbers every stored message of a conversation 1, 2, 3... in commit order, so
a :class:`Sequencer` releases each conversation's messages strictly in that
order: a message whose predecessor has not been seen waits; if it still waits
after ``GAP_WAIT`` seconds, the missing ones are read from the store (where
they must be: a later number commits only after every earlier one).

Not thread-safe: used under the hub's lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["GAP_WAIT", "Gap", "Sequencer"]

GAP_WAIT = 0.3
"""Seconds a message waits for its predecessors' notifications before they are
read from the store: far longer than a notification takes, far shorter than a
person notices."""

Release = Callable[[], None]


@dataclass(slots=True)
class Gap:
    """Numbers ``first`` up to (not including) ``upto`` of ``conversation`` are missing."""

    conversation: str
    first: int
    upto: int


@dataclass(slots=True)
class _Waiting:
    since: float
    ready: dict[int, tuple[Release, Release | None]] = field(default_factory=dict)


class Sequencer:
    """Releases each conversation's numbered messages in number order, once each."""

    def __init__(self, last_seqs: dict[str, int]) -> None:
        # Conversations absent here began after the server started: they start at 1.
        self._next = {key: seq + 1 for key, seq in last_seqs.items()}
        self._waiting: dict[str, _Waiting] = {}

    def release(
        self, conversation: str, seq: int, deliver: Release, late: Release | None = None
    ) -> None:
        """Message ``seq`` of ``conversation`` is committed: ``deliver`` it now if every
        earlier one is out, else once they are. If it was already released (read from
        the store while its own notice was late), only ``late`` runs."""
        expected = self._next.get(conversation, 1)
        if seq < expected:
            if late is not None:
                late()
            return
        if seq > expected:
            waiting = self._waiting.get(conversation)
            if waiting is None:
                waiting = self._waiting[conversation] = _Waiting(time.monotonic())
            waiting.ready.setdefault(seq, (deliver, late))
            return
        deliver()
        self._next[conversation] = seq + 1
        self._drain(conversation)

    def skip(self, conversation: str, seq: int) -> None:
        """Nobody here follows ``conversation``: count ``seq`` as released, deliver nothing."""
        if seq >= self._next.get(conversation, 1):
            self._next[conversation] = seq + 1
            waiting = self._waiting.get(conversation)
            if waiting is not None:
                for number in [n for n in waiting.ready if n <= seq]:
                    del waiting.ready[number]
                self._drain(conversation)

    def overdue(self, now: float) -> list[Gap]:
        """The holes that waited longer than ``GAP_WAIT``: read them from the store."""
        gaps = []
        for conversation, waiting in self._waiting.items():
            if now - waiting.since >= GAP_WAIT and waiting.ready:
                gaps.append(Gap(conversation, self._next.get(conversation, 1), min(waiting.ready)))
        return gaps

    def fill(self, gap: Gap, found: dict[int, Release]) -> None:
        """The store's answer for ``gap``: release what it found (numbers it lacks were
        erased), then everything that waited behind the hole."""
        if self._next.get(gap.conversation, 1) != gap.first:
            return  # the notices arrived meanwhile
        for seq in range(gap.first, gap.upto):
            release = found.get(seq)
            if release is not None:
                release()
        self._next[gap.conversation] = gap.upto
        self._drain(gap.conversation)

    def _drain(self, conversation: str) -> None:
        waiting = self._waiting.get(conversation)
        if waiting is None:
            return
        expected = self._next.get(conversation, 1)
        while expected in waiting.ready:
            deliver, _ = waiting.ready.pop(expected)
            deliver()
            expected += 1
        self._next[conversation] = expected
        if waiting.ready:
            waiting.since = time.monotonic()
        else:
            del self._waiting[conversation]
