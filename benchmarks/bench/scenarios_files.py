"""The files scenario: a large transfer, and the chat of others while it runs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

from securechat.wire.protocol import FILE_CHUNK, FILE_WINDOW, Frame, encode

from .client import Client, close_all, login_many, paced_sender, sent_at, settle_joins
from .common import DRAIN_TIMEOUT, EXPECT_TIMEOUT, BenchError, percentile
from .harness import Bench, Figures
from .measure import measuring

__all__ = ["scenario_files"]


async def scenario_files(bench: Bench) -> Figures:
    """A 200 MiB transfer alice -> bob while carol and dave chat at 100 msg/s."""
    mib = bench.n(200, 2)
    size = mib * 2**20
    block = os.urandom(2**20)  # the file is this MiB repeated: TLS cost does not care
    digest = hashlib.sha256()
    for _ in range(mib):
        digest.update(block)
    sha256 = digest.hexdigest()
    chat_rate = 100.0
    loop = asyncio.get_running_loop()
    async with bench.server() as server:
        clients = await login_many(bench, server, ["alice", "bob", "carol", "dave"])
        alice, bob, carol, dave = clients
        try:
            await settle_joins(clients)
            for i, client in enumerate(clients):
                client.tag = i
            tid = 0
            sent = 0
            acked = 0
            done_sent = False
            received = 0
            hasher = hashlib.sha256()
            offer: asyncio.Future[int] = loop.create_future()
            result: asyncio.Future[tuple[float, bool]] = loop.create_future()
            # Chat latency by where it arrived (kernel stamps), and as decoded here.
            chat_latency: dict[str, list[float]] = {
                "other": [],
                "bob": [],
                "alice": [],
                "other_decoded": [],
            }
            copies: dict[str, int] = {}
            transferring = False

            def fail(why: str) -> None:
                if not result.done():
                    result.set_exception(BenchError(why))

            def pump() -> None:
                nonlocal sent, done_sent
                while sent < size:
                    n = min(FILE_CHUNK, size - sent)
                    if sent + n - acked > FILE_WINDOW:
                        return
                    at = sent % len(block)
                    alice.write(encode("file_chunk", block[at : at + n], id=tid, offset=sent))
                    sent += n
                if not done_sent:
                    done_sent = True
                    alice.write(encode("file_done", id=tid))

            def chat(client: Client, frame: Frame, now: float) -> None:
                if "rid" in frame.fields:
                    return  # a chatter's own echo
                text = frame.fields["text"]
                role = client.name if client.name in ("alice", "bob") else "other"
                sent = sent_at(text)
                chat_latency[role].append(((client.arrived or now) - sent) * 1000)
                if role == "other":
                    chat_latency["other_decoded"].append((now - sent) * 1000)
                copies[text] = copies.get(text, 0) + 1

            def on_alice(client: Client, frame: Frame, now: float) -> None:
                nonlocal tid, acked
                kind = frame.type
                if kind == "file_ack":
                    acked = max(acked, int(frame.fields["bytes"]))
                    pump()
                elif kind == "message":
                    chat(client, frame, now)
                elif kind == "file_accepted":
                    pump()
                elif kind == "file_result" and not result.done():
                    result.set_result((now, frame.get("ok") is True))
                elif kind in ("file_failed", "error"):
                    fail(f"alice got {kind}: {dict(frame.fields)}")

            def on_bob(client: Client, frame: Frame, now: float) -> None:
                nonlocal received
                kind = frame.type
                if kind == "file_chunk":
                    hasher.update(frame.body)
                    received += len(frame.body)
                    client.write(encode("file_ack", id=frame.fields["id"], bytes=received))
                elif kind == "message":
                    chat(client, frame, now)
                elif kind == "file_done":
                    ok = hasher.hexdigest() == sha256
                    reason = None if ok else "SHA-256 mismatch"
                    client.write(encode("file_result", id=frame.fields["id"], ok=ok, reason=reason))
                elif kind == "file_offer" and not offer.done():
                    offer.set_result(int(frame.fields["id"]))
                elif kind in ("file_failed", "error"):
                    fail(f"bob got {kind}: {dict(frame.fields)}")

            def on_chatter(client: Client, frame: Frame, now: float) -> None:
                if frame.type == "message":
                    chat(client, frame, now)

            for client in clients:
                client.stamp_arrivals()
            alice.set_handler(on_alice)
            bob.set_handler(on_bob)
            carol.set_handler(on_chatter)
            dave.set_handler(on_chatter)
            alice.request("file_offer", to="bob", name="bench.bin", size=size, sha256=sha256)
            tid = await asyncio.wait_for(offer, EXPECT_TIMEOUT)
            cap = 60 + 300 * bench.scale  # seconds the transfer may take at most
            with measuring(server) as cpu:
                start = time.perf_counter()
                transferring = True
                bob.request("file_accept", id=tid, offset=0)
                chatters = [
                    paced_sender(
                        chatter,
                        index=i,
                        start=start + i / chat_rate,
                        period=2 / chat_rate,
                        count=int(cap * chat_rate / 2),
                        stop=lambda: not transferring,
                    )
                    for i, chatter in enumerate((carol, dave))
                ]
                chat_task = asyncio.gather(*chatters)
                try:
                    end, ok = await asyncio.wait_for(result, cap)
                except BaseException:
                    chat_task.cancel()
                    raise
                finally:
                    transferring = False
                chat_sent = sum(await chat_task)
            # Chat still in flight when the transfer ended: give it a moment to arrive.
            drain_until = time.monotonic() + DRAIN_TIMEOUT
            while time.monotonic() < drain_until and (
                len(copies) < chat_sent or min(copies.values(), default=0) < 3
            ):
                await asyncio.sleep(0.02)
            server.check_alive()
        finally:
            await server.stop()
            close_all(clients)
    elapsed = end - start
    return {
        "mib_per_s": mib / elapsed,
        "chat_p99_ms": percentile(chat_latency["other"], 99),
        "chat_p50_ms": percentile(chat_latency["other"], 50),
        "chat_p99_at_recipient_ms": percentile(chat_latency["bob"], 99),
        "chat_p99_at_sender_ms": percentile(chat_latency["alice"], 99),
        "chat_decoded_p99_ms": percentile(chat_latency["other_decoded"], 99),
        "hash_ok": 1 if ok else 0,
        "lost": chat_sent - sum(1 for c in copies.values() if c >= 3) + (0 if ok else 1),
        "chat_messages": chat_sent,
        "file_mib": mib,
        "transfer_s": elapsed,
        "server_cores": cpu["server_cpu_s"] / elapsed,
        "gen_cores": cpu["gen_cpu_s"] / elapsed,
        **cpu,
        "problems": server.problems,
    }
