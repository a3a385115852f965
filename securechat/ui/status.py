"""The connection status and the file transfers, as the status line and progress lines show them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ConnectionState", "Status", "Transfer"]

ConnectionState = Literal["connecting", "connected", "reconnecting", "disconnected"]


@dataclass
class Status:
    """The connection as the status line shows it."""

    state: ConnectionState = "connecting"
    server: str = ""
    tls_version: str = ""
    reason: str = ""
    """Why the connection ended, while disconnected or reconnecting."""
    reconnect_at: float = 0.0
    """``time.monotonic()`` of the next reconnection attempt."""

    def reconnect_in(self, now: float) -> int:
        """Whole seconds until the next reconnection attempt."""
        return max(0, round(self.reconnect_at - now))


@dataclass
class Transfer:
    """What the UI knows of one file transfer."""

    id: int
    direction: str = ""
    """``send`` or ``receive``."""
    peer: str = ""
    name: str = ""
    size: int = 0
    bytes: int = 0
    state: str = "offered"
    """``offered``, ``moving``, ``done``, ``rejected`` or ``failed``."""
    rate: float | None = None
    """Bytes per second since the first progress report."""
    shown: bool = False
    """Its progress line is in a buffer."""
    _first: tuple[float, int] | None = field(default=None, init=False, repr=False)

    def progress(self, done: int, size: int, now: float) -> None:
        """Record a progress report of ``done`` bytes of ``size`` at ``now``."""
        self.bytes, self.size, self.state = done, size, "moving"
        if self._first is None:
            self._first = (now, done)
        elif now > self._first[0]:
            self.rate = (done - self._first[1]) / (now - self._first[0])

    def seconds_left(self) -> float | None:
        """Estimated time to completion, or None before the rate is known."""
        if not self.rate or self.rate <= 0:
            return None
        return max(0.0, (self.size - self.bytes) / self.rate)
