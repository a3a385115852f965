"""What every part of the benchmark shares: the server's address, time limits, errors.

Nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from securechat.wire.protocol import encode

__all__ = [
    "CLK_TCK",
    "DRAIN_TIMEOUT",
    "EXPECT_TIMEOUT",
    "FILLER",
    "HOST",
    "PING",
    "PONG",
    "ROOM",
    "SERVER_NAME",
    "SERVER_START_TIMEOUT",
    "SERVER_STOP_TIMEOUT",
    "BenchError",
    "password_of",
    "percentile",
]

ROOM = "#general"
HOST = "127.0.0.1"
SERVER_NAME = "localhost"

SERVER_START_TIMEOUT = 20.0
"""Seconds for a server subprocess to print its listening line."""
SERVER_STOP_TIMEOUT = 10.0
"""Seconds after SIGTERM before the server is killed (it promises 5)."""
EXPECT_TIMEOUT = 30.0
"""Seconds any single setup step (handshake, login, join) may take."""
DRAIN_TIMEOUT = 10.0
"""Seconds to wait for the last messages after the senders have stopped."""

PING = encode("ping")
PONG = encode("pong")
FILLER = "the quick brown fox jumps over the lazy dog"
"""Makes chat texts about 60 characters long, a typical chat line."""

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A scenario could not run as designed (server died, a step timed out, ...)."""


def password_of(name: str) -> str:
    """The password of benchmark account ``name``, however it was registered."""
    return f"pw-{name}"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
