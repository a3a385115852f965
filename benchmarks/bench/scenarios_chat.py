"""Chat scenarios: fan-out throughput, delivery latency and durable (acknowledged) writes."""

from __future__ import annotations

import asyncio
import time
from functools import partial

from securechat.wire.protocol import Frame, encode

from .client import (
    Client,
    close_all,
    login_many,
    move_to_own_rooms,
    paced_sender,
    sent_at,
    settle_joins,
)
from .common import DRAIN_TIMEOUT, FILLER, ROOM, percentile
from .harness import Bench, Figures
from .measure import measuring
from .pipelined import pipeline_says
from .webclient import login_web_many

__all__ = ["scenario_durable", "scenario_fanout", "scenario_latency", "scenario_web_fanout"]


async def scenario_fanout(bench: Bench) -> Figures:
    """100 clients in #general, 10 pipelining senders, 10,000 messages, everyone reads all."""
    return await _fanout(bench, web=False)


async def scenario_web_fanout(bench: Bench) -> Figures:
    """The same as ``fanout`` with every client a browser: frames in WebSocket messages."""
    return await _fanout(bench, web=True)


async def _fanout(bench: Bench, *, web: bool) -> Figures:
    n_clients = bench.n(100, 3)
    n_senders = min(n_clients, bench.n(10, 2))
    per_sender = max(1, bench.n(10_000, 20) // n_senders)
    total = per_sender * n_senders
    window = 50
    expected = total * n_clients  # 99 copies and one echo per message
    loop = asyncio.get_running_loop()
    async with bench.server(*(("--web-port", "0") if web else ())) as server:
        names = [f"fan{i:03d}" for i in range(n_clients)]
        if web:
            clients = await login_web_many(bench, server, names)
        else:
            clients = await login_many(bench, server, names)
        try:
            await settle_joins(clients)
            senders = clients[:n_senders]
            outgoing = [
                [
                    encode("say", rid=seq + 1, room=ROOM, text=f"{i}:{seq} {FILLER}")
                    for seq in range(per_sender)
                ]
                for i in range(n_senders)
            ]
            sent = [0] * n_senders
            acked = [0] * n_senders
            copies: dict[int, int] = {}
            received = 0
            errors = 0
            last = 0.0
            done: asyncio.Future[None] = loop.create_future()

            def pump(i: int) -> None:
                upto = min(per_sender, acked[i] + window)
                if sent[i] < upto:
                    senders[i].write(b"".join(outgoing[i][sent[i] : upto]))
                    sent[i] = upto

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal received, errors, last
                if frame.type == "message":
                    mid = frame.fields["id"]
                    copies[mid] = copies.get(mid, 0) + 1
                    received += 1
                    last = now
                    if client.tag >= 0 and "rid" in frame.fields:
                        acked[client.tag] += 1
                        pump(client.tag)
                    if received >= expected and not done.done():
                        done.set_result(None)
                elif frame.type == "error":
                    errors += 1

            for i, sender in enumerate(senders):
                sender.tag = i
            for client in clients:
                client.set_handler(on_frame)
            with measuring(server) as cpu:
                start = time.perf_counter()
                for i in range(n_senders):
                    pump(i)
                try:
                    await asyncio.wait_for(done, 60 + 120 * bench.scale)
                except TimeoutError:
                    pass
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    elapsed = max(1e-9, (last or time.perf_counter()) - start)
    complete = sum(1 for c in copies.values() if c >= n_clients)
    return {
        "server_us_per_delivery": cpu["server_cpu_s"] * 1e6 / max(1, received),
        "deliveries_per_s": received / elapsed,
        "messages_per_s": total / elapsed,
        "lost": total - complete,
        "gen_us_per_delivery": cpu["gen_cpu_s"] * 1e6 / max(1, received),
        "server_cores": cpu["server_cpu_s"] / elapsed,
        "gen_cores": cpu["gen_cpu_s"] / elapsed,
        "clients": n_clients,
        "messages": total,
        "deliveries": received,
        "errors": errors,
        **cpu,
        "problems": server.problems,
    }


async def scenario_latency(bench: Bench) -> Figures:
    """100 clients, 10 senders, 200 msg/s in total for 10 s: time until every recipient has it."""
    n_clients = bench.n(100, 3)
    n_senders = min(n_clients, bench.n(10, 2))
    rate = 200.0
    duration = bench.seconds(10.0, 0.5)
    per_sender = max(1, round(rate * duration / n_senders))
    total = per_sender * n_senders
    recipients = n_clients - 1
    loop = asyncio.get_running_loop()
    async with bench.server() as server:
        clients = await login_many(bench, server, [f"lat{i:03d}" for i in range(n_clients)])
        try:
            await settle_joins(clients)
            # Per message text: copies; the latest and the earliest arrival in the
            # recipients' sockets (kernel stamps); the latest as decoded here.
            stats: dict[str, list[float]] = {}
            received = 0
            errors = 0
            done: asyncio.Future[None] = loop.create_future()

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal received, errors
                if frame.type == "message":
                    if client.tag >= 0 and "rid" in frame.fields:
                        return  # the sender's echo
                    text = frame.fields["text"]
                    sent = sent_at(text)
                    arrived = (client.arrived or now) - sent
                    entry = stats.get(text)
                    if entry is None:
                        stats[text] = [1, arrived, arrived, now - sent]
                    else:
                        entry[0] += 1
                        entry[1] = max(entry[1], arrived)
                        entry[2] = min(entry[2], arrived)
                        entry[3] = max(entry[3], now - sent)
                    received += 1
                    if received >= total * recipients and not done.done():
                        done.set_result(None)
                elif frame.type == "error":
                    errors += 1

            for i, sender in enumerate(clients[:n_senders]):
                sender.tag = i
            for client in clients:
                client.stamp_arrivals()
                client.set_handler(on_frame)
            with measuring(server) as cpu:
                start = time.perf_counter() + 0.05
                await asyncio.gather(
                    *(
                        paced_sender(
                            sender,
                            index=i,
                            start=start + i / rate,
                            period=n_senders / rate,
                            count=per_sender,
                        )
                        for i, sender in enumerate(clients[:n_senders])
                    )
                )
                try:
                    await asyncio.wait_for(done, DRAIN_TIMEOUT)
                except TimeoutError:
                    pass
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    complete = [e for e in stats.values() if e[0] >= recipients]
    worst = [e[1] * 1000 for e in complete]
    first = [e[2] * 1000 for e in complete]
    decoded = [e[3] * 1000 for e in complete]
    deliveries = total * n_clients
    return {
        "p50_ms": percentile(worst, 50),
        "p99_ms": percentile(worst, 99),
        "max_ms": max(worst, default=0.0),
        "first_p50_ms": percentile(first, 50),
        "spread_p50_ms": percentile([e[1] * 1000 - e[2] * 1000 for e in complete], 50),
        "decoded_p50_ms": percentile(decoded, 50),
        "decoded_p99_ms": percentile(decoded, 99),
        "server_us_per_delivery": cpu["server_cpu_s"] * 1e6 / deliveries,
        "gen_us_per_delivery": cpu["gen_cpu_s"] * 1e6 / deliveries,
        "lost": total - len(complete),
        "clients": n_clients,
        "messages": total,
        "errors": errors,
        "server_cores": cpu["server_cpu_s"] / cpu["wall_s"],
        "gen_cores": cpu["gen_cpu_s"] / cpu["wall_s"],
        **cpu,
        "problems": server.problems,
    }


async def _durable_run(bench: Bench, durability: str) -> Figures:
    n_clients = bench.n(10, 2)
    window = 100
    duration = bench.seconds(5.0, 0.3)
    async with bench.server("--durability", durability, label=durability) as server:
        names = [f"dur{i:02d}" for i in range(n_clients)]
        clients = await login_many(bench, server, names)
        try:
            # Each client talks in a room of its own: a message costs one echo, so the
            # figure is accept -> group commit -> acknowledgement, not fan-out.
            await move_to_own_rooms(clients, "dur")
            run = await pipeline_says(
                clients,
                [f"#dur{i:02d}" for i in range(n_clients)],
                window=window,
                duration=duration,
                measuring=partial(measuring, server),
            )
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    total, cpu = run.acked, run.cpu
    return {
        "msgs_per_s": total / run.elapsed,
        "lost": run.sent - total,
        "errors": run.errors,
        "server_us_per_msg": cpu["server_cpu_s"] * 1e6 / max(1, total),
        "server_cores": cpu["server_cpu_s"] / cpu["wall_s"],
        "gen_cores": cpu["gen_cpu_s"] / cpu["wall_s"],
        "gen_us_per_msg": cpu["gen_cpu_s"] * 1e6 / max(1, total),
        "messages": total,
        **cpu,
        "problems": server.problems,
    }


async def scenario_durable(bench: Bench) -> Figures:
    """Acknowledged messages/s with group commit, ``--durability normal`` then ``full``."""
    normal = await _durable_run(bench, "normal")
    full = await _durable_run(bench, "full")
    figures: Figures = {}
    for suffix, result in (("normal", normal), ("full", full)):
        for key, value in result.items():
            figures[f"{key}_{suffix}"] = value
    figures["lost"] = normal["lost"] + full["lost"]
    figures["problems"] = normal["problems"] + full["problems"]
    return figures
