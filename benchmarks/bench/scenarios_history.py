"""The history scenario: how long the latest 500 messages of a room take to arrive."""

from __future__ import annotations

import asyncio
import time

from securechat.wire.protocol import Decoder, Frame, encode

from .client import Client, close_all, login_many
from .common import EXPECT_TIMEOUT, FILLER, ROOM, BenchError, percentile
from .harness import Bench, Figures
from .measure import measuring

__all__ = ["scenario_history"]


async def scenario_history(bench: Bench) -> Figures:
    """A fresh client fetches the latest 500 of 1,200 room messages, 50 times."""
    n_fill = bench.n(1200, 12)
    limit = bench.n(500, 5)
    fetches = bench.n(50, 3)
    window = 100
    loop = asyncio.get_running_loop()
    async with bench.server() as server:
        clients: list[Client] = []
        try:
            (filler,) = await login_many(bench, server, ["filler"])
            clients.append(filler)
            # Fill the room, pipelined; every echo is an acknowledged, stored message.
            acked = 0
            sent = 0
            filled: asyncio.Future[None] = loop.create_future()

            def pump() -> None:
                nonlocal sent
                upto = min(n_fill, acked + window)
                if sent < upto:
                    filler.write(
                        b"".join(
                            encode("say", rid=s + 1, room=ROOM, text=f"history {s} {FILLER}")
                            for s in range(sent, upto)
                        )
                    )
                    sent = upto

            def on_fill(client: Client, frame: Frame, now: float) -> None:
                nonlocal acked
                if frame.type == "message" and "rid" in frame.fields:
                    acked += 1
                    pump()
                    if acked >= n_fill and not filled.done():
                        filled.set_result(None)
                elif frame.type == "error" and not filled.done():
                    filled.set_exception(BenchError(f"fill refused: {dict(frame.fields)}"))

            filler.set_handler(on_fill)
            pump()
            await asyncio.wait_for(filled, 60 + 60 * bench.scale)

            (reader,) = await login_many(bench, server, ["reader"])
            clients.append(reader)
            rows = 0
            answer: asyncio.Future[float] | None = None
            current = 0

            def on_history(client: Client, frame: Frame, now: float) -> None:
                nonlocal rows
                if frame.fields.get("rid") != current:
                    return
                if frame.type == "message":
                    rows += 1
                elif frame.type in ("history_end", "error") and answer and not answer.done():
                    answer.set_result(now)

            reader.set_handler(on_history)
            times: list[float] = []
            short = 0
            with measuring(server) as cpu:
                for k in range(fetches):
                    if k == fetches - 1:
                        reader.record = []
                    rows = 0
                    answer = loop.create_future()
                    begin = time.perf_counter()
                    current = reader.request("history", room=ROOM, limit=limit)
                    end = await asyncio.wait_for(answer, EXPECT_TIMEOUT)
                    times.append((end - begin) * 1000)
                    if rows != limit:
                        short += 1
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    recorded = b"".join(reader.record or [])
    decode_start = time.perf_counter()
    decoder = Decoder()
    decoder.feed(recorded)
    while decoder.next_frame() is not None:
        pass
    decode_ms = (time.perf_counter() - decode_start) * 1000
    return {
        "p50_ms": percentile(times, 50),
        "p90_ms": percentile(times, 90),
        "max_ms": max(times, default=0.0),
        "lost": short,
        "server_ms_per_fetch": cpu["server_cpu_s"] * 1000 / fetches,
        "gen_ms_per_fetch": cpu["gen_cpu_s"] * 1000 / fetches,
        "gen_decode_ms": decode_ms,
        "answer_kib": len(recorded) / 1024,
        "room_messages": n_fill,
        "limit": limit,
        "fetches": fetches,
        **cpu,
        "problems": server.problems,
    }
