"""Stall scenarios: one user (or one address) loads the server, an unrelated user measures.

Each scenario starts a fresh server, logs the :class:`~bench.probe.Probe` in
from 127.0.0.2, measures its ``time`` round trips for a moment with nothing
else going on (``idle_…``), then again while the load runs (the headline
p50/p99/max). The load is one of:

* ``stall-forget``: ``forget`` by a user who sent 90 % of a 150,000-message room;
* ``stall-flood``: 40 users each storing ten 2 KB messages a second, in rooms of
  their own (the per-account budget to come is a burst of 20, then 10/s);
* ``stall-history``: a reader that asks for 500 messages 200 times and never reads;
* ``stall-logins``: 1,000 wrong-password logins from 127.0.0.1, as fast as the
  server answers them, refusals and closed connections counted as part of it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from securechat.server.streamer import MAX_HISTORY
from securechat.wire.protocol import Frame

from .client import (
    Client,
    close_all,
    login,
    login_many,
    move_to_own_rooms,
    paced_sender,
    sent_at,
)
from .common import DRAIN_TIMEOUT, HOST, ROOM, BenchError, password_of, percentile
from .harness import Bench, Figures
from .measure import measuring
from .probe import PROBE_TAIL, Probe
from .seed import seed_database
from .server import ServerProcess

__all__ = [
    "scenario_stall_flood",
    "scenario_stall_forget",
    "scenario_stall_history",
    "scenario_stall_logins",
]

IDLE_SECONDS = 1.0
"""How long the probe measures the idle server first (scaled, at least 0.2 s)."""
FORGET_TIMEOUT = 120.0
"""Seconds a ``forget`` of 150,000 messages may take before the run fails."""
FLOOD_RATE = 10.0
"""Messages per second per sender: the coming per-account budget's sustained rate."""
FLOOD_TEXT = 2048
"""Characters (bytes: ASCII) per flood message."""
STALL_RCVBUF = 4096
"""``SO_RCVBUF`` of the stalled reader: the kernel stops taking its answers early."""
LOGIN_FLOOD_HOST = HOST
"""The one address the wrong-password logins come from."""
LOGIN_FLOOD_IN_FLIGHT = 64
"""Wrong-password logins under way at once: the per-address connection cap to come."""
LOGIN_ATTEMPT_TIMEOUT = 15.0
"""Seconds one wrong-password login may wait for its answer before it counts as timed out."""
GUESS = "hunter2"
"""The password every guesser tries: never the victim's (``password_of``)."""
_POLL = 0.01


async def _with_probe(
    bench: Bench,
    server: ServerProcess,
    load: Callable[[], Awaitable[Figures]],
    *,
    limit: float,
    extra_lost: Callable[[Figures], int] = lambda figures: 0,
) -> Figures:
    """The probe idle, then while ``load()`` runs (at most ``limit`` s); the figures of
    both, the load's own and the CPU over the loaded phase.

    ``lost`` counts the probe's unanswered requests plus ``extra_lost`` of the load's.
    """
    probe = await Probe.log_in(bench, server)
    try:
        idle = await probe.watch(seconds=bench.seconds(IDLE_SECONDS, 0.2))
        with measuring(server) as cpu:
            task = asyncio.ensure_future(load())
            try:
                stalled = await probe.watch(seconds=limit, until=task, tail=PROBE_TAIL)
                # The load has its own deadlines; this one only guards against a bug in it.
                figures = await asyncio.wait_for(task, limit + DRAIN_TIMEOUT)
            finally:
                task.cancel()
        server.check_alive()
    finally:
        probe.client.abort()
    return {
        **stalled.figures(),
        **idle.figures("idle_"),
        **figures,
        "lost": stalled.unanswered + extra_lost(figures),
        "server_cores": cpu["server_cpu_s"] / cpu["wall_s"],
        "gen_cores": cpu["gen_cpu_s"] / cpu["wall_s"],
        **cpu,
        "problems": server.problems,
    }


async def scenario_stall_forget(bench: Bench) -> Figures:
    """``forget`` by the user who sent 90 % of a 150,000-message room."""
    label = "forget"
    seeded = seed_database(
        bench.workdir / f"{label}.db",
        room=ROOM,
        senders=["forgetter"] * 9 + ["other"],
        rows=bench.n(150_000, 2_000),
    )
    expected = seeded.sent["forgetter"]
    async with bench.server(label=label, budgets=True) as server:
        (forgetter,) = await login_many(bench, server, ["forgetter"])

        async def forget() -> Figures:
            begin = time.perf_counter()
            rid = forgetter.request("forget")
            answer = await forgetter.wait_for_answer(rid, timeout=FORGET_TIMEOUT)
            took = time.perf_counter() - begin
            if answer is None or answer.type != "forgotten":
                raise BenchError(f"forget: {answer and dict(answer.fields)} after {took:.1f} s")
            if answer.get("count") != expected:
                raise BenchError(f"forget erased {answer.get('count')} of {expected} messages")
            return {"forget_ms": took * 1000, "erased": expected, "room_messages": seeded.last_seq}

        try:
            return await _with_probe(bench, server, forget, limit=FORGET_TIMEOUT)
        finally:
            await server.stop()
            close_all([forgetter])


async def scenario_stall_flood(bench: Bench) -> Figures:
    """40 users store ten 2 KB messages a second each (400 msg/s) for 10 s."""
    n_senders = bench.n(40, 2)
    duration = bench.seconds(10.0, 1.0)
    per_sender = max(1, round(duration * FLOOD_RATE))
    # Forty people behind one address (an office's NAT) is what --connection-limit is
    # for, and they registered over days; each one's message budget stays as it is.
    office = ("--connection-limit=127.0.0.0/8=1000", "--registrations-per-ip=1000")
    async with bench.server(*office, label="flood", budgets=True) as server:
        senders = await login_many(bench, server, [f"flood{i:02d}" for i in range(n_senders)])
        try:
            rooms = await move_to_own_rooms(senders, "flood")
            ack_ms: list[float] = []
            refusals: Counter[str] = Counter()

            def on_frame(client: Client, frame: Frame, now: float) -> None:
                if frame.type == "message" and "rid" in frame.fields:
                    ack_ms.append((now - sent_at(frame.fields["text"])) * 1000)
                elif frame.type == "error":
                    refusals[str(frame.get("code"))] += 1

            for sender in senders:
                sender.set_handler(on_frame)

            async def flood() -> Figures:
                start = time.perf_counter() + 0.01
                sent = sum(
                    await asyncio.gather(
                        *(
                            paced_sender(
                                sender,
                                index=i,
                                # Staggered, so the server sees a steady 400/s, not 40 at once.
                                start=start + i / (n_senders * FLOOD_RATE),
                                period=1 / FLOOD_RATE,
                                count=per_sender,
                                room=rooms[i],
                                size=FLOOD_TEXT,
                            )
                            for i, sender in enumerate(senders)
                        )
                    )
                )
                elapsed = time.perf_counter() - start
                for _ in range(int(DRAIN_TIMEOUT / _POLL)):
                    if len(ack_ms) + refusals.total() >= sent:
                        break
                    await asyncio.sleep(_POLL)
                return {
                    "stored_per_s": len(ack_ms) / elapsed,
                    "rate_limited": refusals["rate_limited"],
                    "refused_other": refusals.total() - refusals["rate_limited"],
                    "ack_p50_ms": percentile(ack_ms, 50),
                    "ack_p99_ms": percentile(ack_ms, 99),
                    "senders": n_senders,
                    "messages": sent,
                    "acked": len(ack_ms),
                    "refusals": dict(refusals),
                    "unanswered": sent - len(ack_ms) - refusals.total(),
                }

            return await _with_probe(
                bench,
                server,
                flood,
                limit=duration + DRAIN_TIMEOUT,
                extra_lost=lambda figures: int(figures["unanswered"]),
            )
        finally:
            await server.stop()
            close_all(senders)


async def scenario_stall_history(bench: Bench) -> Figures:
    """A reader asks for the latest 500 messages 200 times and never reads the answers."""
    label = "history"
    requests = bench.n(200, 4)
    duration = bench.seconds(10.0, 1.0)
    seeded = seed_database(
        bench.workdir / f"{label}.db", room=ROOM, senders=["filler"], rows=bench.n(1_200, 600)
    )
    async with bench.server(label=label, budgets=True) as server:
        staller = await login(
            server.port,
            bench.client_context(),
            "staller",
            password=password_of("staller"),
            rcvbuf=STALL_RCVBUF,
        )
        try:

            async def stall() -> Figures:
                staller.stop_reading()
                for _ in range(requests):
                    staller.request("history", room=ROOM, limit=MAX_HISTORY)
                await asyncio.sleep(duration)
                return {
                    "requests": requests,
                    "limit": MAX_HISTORY,
                    "room_messages": seeded.last_seq,
                    "stall_s": duration,
                }

            return await _with_probe(bench, server, stall, limit=duration + DRAIN_TIMEOUT)
        finally:
            await server.stop()
            close_all([staller])


async def scenario_stall_logins(bench: Bench) -> Figures:
    """1,000 wrong-password logins from 127.0.0.1, at most 64 under way at once."""
    attempts = bench.n(1000, 20)
    in_flight = min(attempts, LOGIN_FLOOD_IN_FLIGHT)
    limit = bench.seconds(90.0, 10.0)
    async with bench.server(label="logins", budgets=True) as server:
        # The account under attack exists (and is offline): each guess costs an scrypt.
        close_all(await login_many(bench, server, ["victim"]))
        ctx = bench.client_context()

        async def guess() -> str:
            """One wrong-password login: its error code, or what became of the connection."""
            try:
                client = await Client.connect(
                    server.port,
                    ctx,
                    "guesser",
                    source=LOGIN_FLOOD_HOST,
                    timeout=LOGIN_ATTEMPT_TIMEOUT,
                )
            except OSError:  # refused, reset, handshake failed or timed out (all OSErrors)
                return "refused"
            try:
                # No wait for hello: a guesser sends at once, as the protocol allows.
                rid = client.request("login", user="victim", password=GUESS, replay=False)
                answer = await client.wait_for_answer(rid, timeout=LOGIN_ATTEMPT_TIMEOUT)
                closed = client.closed
            finally:
                client.abort()
            if answer is None:
                return "closed" if closed else "timeout"
            if answer.type == "welcome":
                raise BenchError("a wrong password was accepted")
            return str(answer.get("code") or answer.type)

        async def flood() -> Figures:
            outcomes: Counter[str] = Counter()
            started = 0
            begin = time.perf_counter()
            deadline = begin + limit  # for starting attempts; the last may take a timeout more

            async def worker() -> None:
                nonlocal started
                while started < attempts and time.perf_counter() < deadline:
                    started += 1
                    outcomes[await guess()] += 1

            await asyncio.gather(*(worker() for _ in range(in_flight)))
            elapsed = time.perf_counter() - begin
            refused = outcomes["refused"] + outcomes["closed"]
            answered = outcomes["bad_password"]
            return {
                "attempts": started,
                "attempts_per_s": started / elapsed,
                "bad_password": answered,
                "refused": refused,
                "throttled": started - answered - refused - outcomes["timeout"],
                "timeouts": outcomes["timeout"],
                "flood_s": elapsed,
                "outcomes": dict(outcomes),
            }

        try:
            return await _with_probe(bench, server, flood, limit=limit + LOGIN_ATTEMPT_TIMEOUT)
        finally:
            await server.stop()
