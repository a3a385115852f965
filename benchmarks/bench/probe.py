"""The unrelated user of the stall scenarios: how long a ``time`` request takes to come back.

A stall that one user causes (a huge erasure, a flood of messages, a reader
that never reads, a password-guessing storm) must not be felt by anyone else.
The probe is someone else: its own account, connected from its own source
address (127.0.0.2, so that limits per source address never touch it), in no
conversation with the load, doing nothing but send ``time`` every
:data:`PROBE_PERIOD` and time the answer. The requests go out on a clock, not
after the previous answer, so a stall shows as every request caught in it
coming back late rather than as one slow sample (no coordinated omission).

The answer's arrival is the kernel's receive timestamp on the probe's socket,
as in the latency scenario: the generator shares the event loop with the load,
and how late it got round to the probe is its own delay, not the server's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from securechat.wire.protocol import Frame

from .client import Client, login
from .common import DRAIN_TIMEOUT, BenchError, password_of, percentile
from .harness import Bench, Figures
from .server import ServerProcess

__all__ = ["PROBE_HOST", "PROBE_PERIOD", "Probe", "ProbeResult"]

PROBE_HOST = "127.0.0.2"
"""The probe's source address: not the load's (127.0.0.1), so per-address limits spare it."""
PROBE_PERIOD = 0.015
"""Seconds between two ``time`` requests: often enough to see a 50 ms stall several times."""
PROBE_TAIL = 0.25
"""Seconds the probe keeps going after the load ends: what the load leaves behind counts too."""
_DRAIN_STEP = 0.01


@dataclass
class ProbeResult:
    """Round trips of one watch: kernel arrival and decoded, in ms, and requests unanswered."""

    rtt_ms: list[float] = field(default_factory=list)
    decoded_ms: list[float] = field(default_factory=list)
    unanswered: int = 0

    def figures(self, prefix: str = "") -> Figures:
        """p50/p99/max of the round trips, the decoded p99, how many, how many unanswered."""
        return {
            f"{prefix}p50_ms": percentile(self.rtt_ms, 50),
            f"{prefix}p99_ms": percentile(self.rtt_ms, 99),
            f"{prefix}max_ms": max(self.rtt_ms, default=0.0),
            f"{prefix}decoded_p99_ms": percentile(self.decoded_ms, 99),
            f"{prefix}probes": len(self.rtt_ms) + self.unanswered,
            f"{prefix}unanswered": self.unanswered,
        }


class Probe:
    """A logged-in client that measures ``time`` round trips while something else happens."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._pending: dict[int, float] = {}  # rid -> perf_counter when sent
        self._result = ProbeResult()
        client.stamp_arrivals()
        client.set_handler(self._on_frame)

    @classmethod
    async def log_in(cls, bench: Bench, server: ServerProcess, name: str = "probe") -> Probe:
        """Register ``name`` and log it in from :data:`PROBE_HOST`."""
        client = await login(
            server.port,
            bench.client_context(),
            name,
            password=password_of(name),
            source=PROBE_HOST,
        )
        return cls(client)

    def _on_frame(self, client: Client, frame: Frame, now: float) -> None:
        if frame.type != "time":
            return  # notices about others; the probe takes part in nothing
        sent = self._pending.pop(frame.get("rid"), None)
        if sent is not None:
            self._result.rtt_ms.append(((client.arrived or now) - sent) * 1000)
            self._result.decoded_ms.append((now - sent) * 1000)

    async def watch(
        self, *, seconds: float, until: asyncio.Future[Any] | None = None, tail: float = 0.0
    ) -> ProbeResult:
        """Send ``time`` every :data:`PROBE_PERIOD` for ``seconds``, or until ``until`` is
        done and ``tail`` s more; then wait (up to ``DRAIN_TIMEOUT``) for the answers.

        BenchError if the server drops the probe: nothing the load does may cost an
        unrelated user its connection.
        """
        self._result = ProbeResult()
        began = time.perf_counter()
        deadline = began + seconds
        stop_at = deadline
        next_at = began
        for _ in range(int(seconds / PROBE_PERIOD) + 1):
            now = time.perf_counter()
            if until is not None and until.done():
                stop_at = min(stop_at, now + tail)
                until = None
            if now >= stop_at or self.client.closed:
                break
            self._pending[self.client.request("time")] = time.perf_counter()
            # A late event loop skips the slots it missed rather than sending a burst.
            next_at = max(next_at + PROBE_PERIOD, time.perf_counter())
            await asyncio.sleep(next_at - time.perf_counter())
        for _ in range(int(DRAIN_TIMEOUT / _DRAIN_STEP)):
            if not self._pending or self.client.closed:
                break
            await asyncio.sleep(_DRAIN_STEP)
        if self.client.closed:
            raise BenchError(f"the server dropped the probe: {self.client.error}")
        self._result.unanswered = len(self._pending)
        self._pending.clear()
        return self._result
