"""Cluster scenarios (issue 10): fan-out, latency and durable writes across three servers
sharing one PostgreSQL and one Redis, all on the generator's machine.

Every figure of CPU counts the whole server side: the three securechat servers,
PostgreSQL (postmaster and children) and Redis (:func:`cluster.cpu_figures`).
"""

from __future__ import annotations

import asyncio
import time

from securechat.wire.protocol import Frame, encode

from .client import (
    Client,
    close_all,
    login_placed,
    move_to_own_rooms,
    paced_sender,
    sent_at,
    settle_quietly,
)
from .cluster import Cluster, cpu_figures, spread
from .common import DRAIN_TIMEOUT, FILLER, ROOM, percentile
from .harness import Bench, Figures
from .pipelined import pipeline_says

__all__ = ["scenario_cluster_durable", "scenario_cluster_fanout", "scenario_cluster_latency"]


async def scenario_cluster_fanout(bench: Bench) -> Figures:
    """100 clients in #general spread evenly over 3 servers, 10 pipelining senders (also
    spread), 10,000 messages; every client must get every message, in number order."""
    n_clients = bench.n(100, 6)
    n_senders = min(n_clients, bench.n(10, 3))
    per_sender = max(1, bench.n(10_000, 30) // n_senders)
    total = per_sender * n_senders
    window = 50
    expected = total * n_clients  # 99 copies and one echo per message
    loop = asyncio.get_running_loop()
    async with Cluster(bench) as cluster:
        names = [f"cfan{i:03d}" for i in range(n_clients)]
        clients = await login_placed(bench, spread(cluster, names))
        try:
            await settle_quietly(clients)
            senders = clients[:n_senders]  # client i is on server i % 3: so are the senders
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
            last_seq = dict.fromkeys(names, 0)
            received = misordered = errors = 0
            last = 0.0
            done: asyncio.Future[None] = loop.create_future()

            def pump(i: int) -> None:
                upto = min(per_sender, acked[i] + window)
                if sent[i] < upto:
                    senders[i].write(b"".join(outgoing[i][sent[i] : upto]))
                    sent[i] = upto

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal received, misordered, errors, last
                if frame.type == "message":
                    fields = frame.fields
                    mid = fields["id"]
                    copies[mid] = copies.get(mid, 0) + 1
                    received += 1
                    last = now
                    if "rid" in fields:
                        # The echo comes straight from the sender's server once committed,
                        # which may be before others' earlier numbers reach it.
                        if client.tag >= 0:
                            acked[client.tag] += 1
                            pump(client.tag)
                    else:
                        seq = fields["seq"]
                        if seq <= last_seq[client.name]:
                            misordered += 1
                        last_seq[client.name] = seq
                    if received >= expected and not done.done():
                        done.set_result(None)
                elif frame.type == "error":
                    errors += 1

            for i, sender in enumerate(senders):
                sender.tag = i
            for client in clients:
                client.set_handler(on_frame)
            with cluster.measuring() as cpu:
                start = time.perf_counter()
                for i in range(n_senders):
                    pump(i)
                try:
                    await asyncio.wait_for(done, 60 + 120 * bench.scale)
                except TimeoutError:
                    pass
            cluster.check_alive()
        finally:
            await cluster.stop()
            close_all(clients)
    elapsed = max(1e-9, (last or time.perf_counter()) - start)
    complete = sum(1 for c in copies.values() if c >= n_clients)
    return {
        **cpu_figures(cpu, received, "delivery"),
        "deliveries_per_s": received / elapsed,
        "messages_per_s": total / elapsed,
        "lost": total - complete,
        "misordered": misordered,
        "msgs_per_commit": total / max(1, cpu["pg_commits"]),
        "clients": n_clients,
        "messages": total,
        "deliveries": received,
        "errors": errors,
        **cpu,
        "problems": cluster.problems,
    }


async def scenario_cluster_latency(bench: Bench) -> Figures:
    """200 msg/s for 10 s from 10 senders on server 0 to 90 recipients on servers 1 and 2:
    time until every recipient has a message."""
    n_senders = bench.n(10, 2)
    n_recipients = bench.n(90, 4)
    rate = 200.0
    duration = bench.seconds(10.0, 0.5)
    per_sender = max(1, round(rate * duration / n_senders))
    total = per_sender * n_senders
    loop = asyncio.get_running_loop()
    async with Cluster(bench) as cluster:
        placed = [(f"clsend{i:02d}", cluster.port_of(0)) for i in range(n_senders)]
        placed += [(f"clrecv{i:02d}", cluster.port_of(1 + i % 2)) for i in range(n_recipients)]
        clients = await login_placed(bench, placed)
        senders, recipients = clients[:n_senders], clients[n_senders:]
        try:
            await settle_quietly(clients)
            # Per message text: copies; the latest and the earliest arrival in the
            # recipients' sockets (kernel stamps); the latest as decoded here.
            stats: dict[str, list[float]] = {}
            received = errors = 0
            done: asyncio.Future[None] = loop.create_future()

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal received, errors
                if frame.type == "message":
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
                    if received >= total * n_recipients and not done.done():
                        done.set_result(None)
                elif frame.type == "error":
                    errors += 1

            acks: list[float] = []

            def on_sender_frame(client: Client, frame: Frame, now: float) -> None:
                nonlocal errors
                if frame.type == "message" and "rid" in frame.fields:
                    # The sender's own server: committed in PostgreSQL, then echoed.
                    acks.append((client.arrived or now) - sent_at(frame.fields["text"]))
                elif frame.type == "error":
                    errors += 1

            for client in recipients:
                client.stamp_arrivals()
                client.set_handler(on_frame)
            for client in senders:
                client.stamp_arrivals()
                client.set_handler(on_sender_frame)
            with cluster.measuring() as cpu:
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
                        for i, sender in enumerate(senders)
                    )
                )
                try:
                    await asyncio.wait_for(done, DRAIN_TIMEOUT)
                except TimeoutError:
                    pass
            cluster.check_alive()
        finally:
            await cluster.stop()
            close_all(clients)
    complete = [e for e in stats.values() if e[0] >= n_recipients]
    worst = [e[1] * 1000 for e in complete]
    first = [e[2] * 1000 for e in complete]
    decoded = [e[3] * 1000 for e in complete]
    return {
        "p50_ms": percentile(worst, 50),
        "p99_ms": percentile(worst, 99),
        "max_ms": max(worst, default=0.0),
        "first_p50_ms": percentile(first, 50),
        "first_p99_ms": percentile(first, 99),
        "decoded_p99_ms": percentile(decoded, 99),
        "ack_p50_ms": percentile([a * 1000 for a in acks], 50),
        "ack_p99_ms": percentile([a * 1000 for a in acks], 99),
        # Every member gets each message: the senders' copies (and echo) count too.
        **cpu_figures(cpu, total * (n_senders + n_recipients), "delivery"),
        "lost": total - len(complete),
        "senders": n_senders,
        "recipients": n_recipients,
        "messages": total,
        "errors": errors,
        **cpu,
        "problems": cluster.problems,
    }


async def scenario_cluster_durable(bench: Bench) -> Figures:
    """30 senders, 10 on each server, each alone in a room of its own, pipelining ``say``
    (at most 100 unacknowledged) for 5 s: acknowledged messages/s, each in PostgreSQL."""
    n_clients = bench.n(30, 3)
    window = 100
    duration = bench.seconds(5.0, 0.3)
    async with Cluster(bench) as cluster:
        names = [f"cdur{i:02d}" for i in range(n_clients)]
        clients = await login_placed(bench, spread(cluster, names))
        try:
            # Alone in a room: a message costs one echo and no fan-out, so the figure is
            # accept -> group commit in PostgreSQL -> acknowledgement (and the bus event).
            rooms = await move_to_own_rooms(clients, "cdur")
            await settle_quietly(clients)
            run = await pipeline_says(
                clients, rooms, window=window, duration=duration, measuring=cluster.measuring
            )
            cluster.check_alive()
        finally:
            await cluster.stop()
            close_all(clients)
    total, cpu = run.acked, run.cpu
    return {
        "msgs_per_s": total / run.elapsed,
        **cpu_figures(cpu, total, "msg"),
        "msgs_per_commit": total / max(1, cpu["pg_commits"]),
        "msgs_per_wal_sync": total / max(1, cpu["wal_syncs"]),
        "lost": run.sent - total,
        "errors": run.errors,
        "senders": n_clients,
        "messages": total,
        **cpu,
        "problems": cluster.problems,
    }
