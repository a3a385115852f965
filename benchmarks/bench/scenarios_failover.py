"""Cluster failover (issue 10): ``kill -9`` of one of three servers under traffic; how long
until each of its clients is on another server with nothing missing.

The generator's clients behave as the reference client does with several ``--host``:
when the connection drops they wait about a second (the reference client's first
reconnect wait, with its ±20 % jitter), log in to the next address of their list
(each client's list starts with its own server; the others follow in an order that
alternates between clients, so the dead server's clients split over the others),
re-send every unacknowledged message with its idempotency key (and what their user
"typed" while disconnected), and fill the gap with ``history`` ``after_seq`` pages.

A client has *failed over* when, after the kill, it is logged in elsewhere, every
message it sent has been acknowledged, its history pages are in, and the sequence
numbers it has seen of ``#general`` run without a hole from 1 to at least the
newest number anyone had seen when the server was killed. The time from the kill to
that moment is the figure.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import dataclass, field

from securechat.wire.protocol import Frame

from .client import Client, close_all, login, login_placed, settle_quietly
from .cluster import Cluster, cpu_figures, spread
from .common import DRAIN_TIMEOUT, FILLER, ROOM, BenchError, password_of, percentile
from .harness import Bench, Figures

__all__ = ["scenario_cluster_failover"]

RECONNECT_WAIT = 1.0
"""Seconds before the first reconnection attempt, as the reference client (``ClientCore``'s
``reconnect_delay``), with the same ±20 % jitter."""
FAILOVER_LIMIT = 30.0
"""Seconds after the kill by which every client of the dead server must be back."""
HISTORY_PAGE = 500
"""Messages asked for per ``history`` request (the server's most)."""


@dataclass
class _Member:
    """One user of the benchmark across its connections."""

    index: int
    name: str
    order: list[int]
    client: Client
    contig: int = 0
    ahead: set[int] = field(default_factory=set)
    last_live: int = 0
    pending: dict[str, str] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)
    online: bool = True
    history_rid: int = 0
    history_done: bool = True
    lost_at: float = 0.0
    reconnect_at: float = 0.0
    recovered_at: float = 0.0
    resent: int = 0
    misordered: int = 0

    @property
    def newest(self) -> int:
        return max(self.ahead) if self.ahead else self.contig

    def seen(self, seq: int) -> None:
        if seq <= self.contig or seq in self.ahead:
            return
        self.ahead.add(seq)
        while self.contig + 1 in self.ahead:
            self.contig += 1
            self.ahead.discard(self.contig)


async def scenario_cluster_failover(bench: Bench) -> Figures:
    """100 clients over 3 servers, 10 senders at 200 msg/s in all; after 2 s server 2 is
    killed; its clients must be back, gap filled, within 5 s at p99."""
    n_clients = bench.n(100, 6)
    n_senders = min(n_clients, bench.n(10, 3))
    rate = 200.0
    warmup = bench.seconds(2.0, 0.5)
    tail = bench.seconds(1.0, 0.3)
    ctx = bench.client_context()
    stopping = False
    errors = 0
    async with Cluster(bench) as cluster:
        n = cluster.n
        killed = n - 1
        names = [f"cfail{i:03d}" for i in range(n_clients)]
        clients = await login_placed(bench, spread(cluster, names))
        members: list[_Member] = []
        for i, client in enumerate(clients):
            home = i % n
            others = [(home + k) % n for k in range(1, n)]
            rotation = (i // n) % len(others)
            members.append(
                _Member(i, names[i], [home, *others[rotation:], *others[:rotation]], client)
            )
        tasks: list[asyncio.Task[None]] = []

        def check_recovered(m: _Member, now: float) -> None:
            if (
                m.lost_at
                and not m.recovered_at
                and m.online
                and m.history_done
                and not m.pending
                and not m.ahead
                and m.contig >= kill_target
            ):
                m.recovered_at = now

        def ask_history(m: _Member) -> None:
            m.history_done = False
            m.history_rid = m.client.request(
                "history", room=ROOM, after_seq=m.contig, limit=HISTORY_PAGE
            )

        def on_frame(client: Client, frame: Frame, now: float) -> None:
            nonlocal errors
            m = members[client.tag]
            if frame.type == "message" and frame.get("room") == ROOM:
                fields = frame.fields
                seq = fields.get("seq")
                if seq is None:
                    return
                if fields.get("history"):
                    pass
                elif "rid" in fields:
                    text = m.pending.pop(fields.get("key", ""), None)
                    if text is not None:
                        m.acked.append(text)
                else:
                    if seq <= m.last_live:
                        m.misordered += 1
                    m.last_live = seq
                m.seen(seq)
            elif frame.type == "history_end" and frame.get("rid") == m.history_rid:
                if frame.get("count", 0) >= HISTORY_PAGE or m.ahead:
                    ask_history(m)  # more pages, or a hole between the pages and live
                else:
                    m.history_done = True
            elif frame.type == "error":
                errors += 1
            check_recovered(m, now)

        def on_lost(client: Client) -> None:
            m = members[client.tag]
            if stopping or client is not m.client:
                return
            m.online = False
            m.lost_at = m.lost_at or time.perf_counter()
            tasks.append(asyncio.ensure_future(reconnect(m)))

        async def reconnect(m: _Member) -> None:
            await asyncio.sleep(RECONNECT_WAIT * random.uniform(0.8, 1.2))  # noqa: S311
            m.reconnect_at = time.perf_counter()
            while not stopping:
                for index in m.order[1:] + m.order[:1]:
                    try:
                        client = await login(
                            cluster.port_of(index), ctx, m.name, password=password_of(m.name)
                        )
                    except (BenchError, OSError, ssl.SSLError, TimeoutError):
                        continue
                    if stopping:
                        client.abort()
                        return
                    m.client, m.online, m.last_live = client, True, 0
                    client.tag = m.index
                    client.on_lost = on_lost
                    client.set_handler(on_frame)
                    m.resent += len(m.pending)
                    for key, text in m.pending.items():
                        client.request("say", room=ROOM, text=text, key=key)
                    ask_history(m)
                    return
                await asyncio.sleep(RECONNECT_WAIT)

        async def sender(m: _Member, start: float) -> None:
            period = n_senders / rate
            seq = 0
            while not stopping:
                delay = start + seq * period - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                key = f"{m.name}-{seq}"
                text = f"{m.name} {seq} {FILLER}"
                # Offline, the line waits for the reconnection, as a user's typing would.
                m.pending[key] = text
                if m.online:
                    m.client.request("say", room=ROOM, text=text, key=key)
                seq += 1

        try:
            await settle_quietly(clients)
            for m in members:
                m.client.tag = m.index
                m.client.on_lost = on_lost
                m.client.set_handler(on_frame)
            kill_target = 1 << 62  # nobody recovers before the kill
            with cluster.measuring() as cpu:
                start = time.perf_counter() + 0.05
                senders = [
                    asyncio.ensure_future(sender(m, start + i / rate))
                    for i, m in enumerate(members[:n_senders])
                ]
                await asyncio.sleep(warmup)
                kill_target = max(m.newest for m in members)
                kill_at = time.perf_counter()
                cluster.servers[killed].kill()
                victims = [m for m in members if m.order[0] == killed]
                deadline = kill_at + FAILOVER_LIMIT
                while time.perf_counter() < deadline and not all(m.recovered_at for m in victims):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(tail)
                stopping_senders = asyncio.gather(*senders)
                stopping = True
                await stopping_senders
                # Drain: every acknowledgement in, every view whole up to the newest.
                deadline = time.perf_counter() + DRAIN_TIMEOUT
                while time.perf_counter() < deadline:
                    final = max(m.newest for m in members)
                    if all(
                        not m.pending and not m.ahead and m.contig >= final and m.history_done
                        for m in members
                    ):
                        break
                    await asyncio.sleep(0.05)
            cluster.check_alive()
            auditor = members[0].client
            stored = await _stored_texts(auditor)
        finally:
            stopping = True
            for task in tasks:
                task.cancel()
            await cluster.stop()
            close_all([m.client for m in members])
    acked = [t for m in members for t in m.acked]
    missing = len(set(acked) - set(stored))
    twice = len(stored) - len(set(stored))
    final = max(m.newest for m in members)
    holes = sum(1 for m in members if m.ahead or m.contig < final)
    unacked = sum(len(m.pending) for m in members)
    back = [m.recovered_at - kill_at for m in victims if m.recovered_at]
    after_wait = [m.recovered_at - m.reconnect_at for m in victims if m.recovered_at]
    return {
        "p50_s": percentile(back, 50),
        "p99_s": percentile(back, 99),
        "max_s": max(back, default=0.0),
        "reconnect_p99_s": percentile(after_wait, 99),
        "failed_over": len(victims),
        "not_back": len(victims) - len(back),
        "resent": sum(m.resent for m in members),
        **cpu_figures(cpu, len(acked), "msg"),
        "lost": missing + twice + holes + unacked + len(victims) - len(back),
        "acked_missing": missing,
        "stored_twice": twice,
        "views_with_holes": holes,
        "never_acked": unacked,
        "misordered": sum(m.misordered for m in members),
        "messages": len(acked),
        "errors": errors,
        "clients": n_clients,
        **cpu,
        "problems": cluster.problems,
    }


async def _stored_texts(client: Client) -> list[str]:
    """Every stored text of #general, oldest first, read with ``history`` pages by id."""
    loop = asyncio.get_running_loop()
    texts: list[str] = []
    after = 0
    while True:
        page: list[str] = []
        last = 0
        done: asyncio.Future[None] = loop.create_future()
        rid = client.rid + 1

        def on_frame(_client: Client, frame: Frame, _now: float) -> None:
            nonlocal last
            if frame.get("rid") != rid:  # noqa: B023 - this page's request, read at once
                return
            if frame.type == "message":
                page.append(frame.fields["text"])  # noqa: B023
                last = frame.fields["id"]
            elif frame.type in ("history_end", "error") and not done.done():  # noqa: B023
                done.set_result(None)  # noqa: B023

        client.set_handler(on_frame)
        client.request("history", room=ROOM, after=after, limit=HISTORY_PAGE)
        await asyncio.wait_for(done, DRAIN_TIMEOUT)
        texts += page
        if len(page) < HISTORY_PAGE:
            return texts
        after = last
