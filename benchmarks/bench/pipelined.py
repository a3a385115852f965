"""Durable writes as fast as the server acknowledges them: each client pipelines ``say``
into a room of its own, keeping at most ``window`` messages unacknowledged, for a while.

Shared by the single-server and the cluster ``durable`` scenarios, which differ only in
what they start and what CPU they measure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from securechat.wire.protocol import Frame, encode

from .client import Client
from .common import DRAIN_TIMEOUT, FILLER

__all__ = ["Pipelined", "pipeline_says"]


@dataclass(slots=True)
class Pipelined:
    """What a run of :func:`pipeline_says` sent and got back."""

    sent: int
    acked: int
    errors: int
    elapsed: float
    """Seconds from the first message sent to the last acknowledgement."""
    cpu: dict[str, float]


async def pipeline_says(
    clients: Sequence[Client],
    rooms: Sequence[str],
    *,
    window: int,
    duration: float,
    measuring: Callable[[], AbstractContextManager[dict[str, float]]],
) -> Pipelined:
    """Have ``clients[i]`` say into ``rooms[i]`` for ``duration`` seconds, at most
    ``window`` unacknowledged each, under ``measuring``; wait for the last answers."""
    n_clients = len(clients)
    text = f"durable {FILLER}"
    sent = [0] * n_clients
    acked = [0] * n_clients
    errors = 0
    start = last = stop_at = 0.0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pump(i: int) -> None:
        if time.perf_counter() >= stop_at:
            return
        upto = acked[i] + window
        if sent[i] < upto:
            clients[i].write(
                b"".join(
                    encode("say", rid=s + 1, room=rooms[i], text=text)
                    for s in range(sent[i], upto)
                )
            )
            sent[i] = upto

    def on_frame(client: Client, frame: Frame, now: float) -> None:
        nonlocal errors, last
        if frame.type == "message" and "rid" in frame.fields:
            acked[client.tag] += 1
            last = now
            pump(client.tag)
            if now >= stop_at and sum(acked) >= sum(sent) and not done.done():
                done.set_result(None)
        elif frame.type == "error":
            errors += 1

    for client in clients:
        client.set_handler(on_frame)
    with measuring() as cpu:
        start = time.perf_counter()
        stop_at = start + duration
        for i in range(n_clients):
            pump(i)
        try:
            await asyncio.wait_for(done, duration + DRAIN_TIMEOUT + 30)
        except TimeoutError:
            pass
    return Pipelined(sum(sent), sum(acked), errors, max(1e-9, last - start), cpu)
