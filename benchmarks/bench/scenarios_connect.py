"""The connect scenario: thousands of mutual-TLS logins, then TLS alone and password logins."""

from __future__ import annotations

import asyncio
import ssl
import time

from .client import Client, close_all, login, login_many, open_client
from .common import PING, BenchError
from .harness import Bench, Figures
from .measure import measuring
from .pki import cert_name
from .server import wait_until_idle

__all__ = ["scenario_connect"]


async def scenario_connect(bench: Bench) -> Figures:
    """5,000 idle mutual-TLS clients log in, 500 in flight; then two smaller runs.

    The smaller runs split the cost: TLS handshakes alone (no login, so no join
    notices) on a mutual-TLS server, and password logins, each registering a new
    account (one scrypt hash apiece).
    """
    n_clients = bench.n(5000, 20)
    in_flight = bench.n(500, 5)
    n_handshakes = bench.n(1000, 10)
    n_password = bench.n(200, 4)
    # Client contexts (one per certificate, about 1 ms and 25 KiB each) are built
    # before the clock starts: they are the generator's cost, not the server's.
    contexts = []
    for index in range(n_clients):
        ctx = ssl.create_default_context(cafile=str(bench.pki.ca_pem))
        ctx.load_cert_chain(str(bench.pki.client_pem(index)))
        contexts.append(ctx)
    figures: Figures = {"clients": n_clients}
    clients: list[Client] = []
    arrivals: list[float] = []
    failures: list[str] = []

    async def keepalive() -> None:
        # Idle clients do not decode what they receive, so they never see the
        # server's pings; a ping of their own every 10 s keeps them alive instead.
        while True:
            await asyncio.sleep(10.0)
            for client in clients:
                client.write(PING)

    async with bench.server("--client-ca", str(bench.pki.ca_pem), label="mtls") as server:
        sem = asyncio.Semaphore(in_flight)

        async def one(index: int) -> None:
            async with sem:
                try:
                    client = await login(
                        server.port, contexts[index], cert_name(index), password=None
                    )
                except (BenchError, OSError, ssl.SSLError, TimeoutError) as exc:
                    failures.append(repr(exc))
                    return
                client.count_only = True
                client.inbox.clear()
                clients.append(client)
                arrivals.append(time.perf_counter())

        keeper = asyncio.create_task(keepalive())
        try:
            rss_before = server.rss_kib()
            with measuring(server) as cpu:
                start = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(n_clients)))
            rss_after = server.rss_kib()
            threads, fds = server.threads(), server.fds()
            server.check_alive()
            # Let the join notices still queued drain, then look at the memory again.
            settle_start = time.perf_counter()
            settle_cpu = await wait_until_idle(server, limit=120.0)
            settled_rss = server.rss_kib()
            settle_s = time.perf_counter() - settle_start
        finally:
            keeper.cancel()
            # Stop the server first: its shutdown says bye to everyone at once, rather
            # than handling 5,000 separate disconnects while the next run waits.
            await server.stop()
            close_all(clients)
    problems = list(server.problems)
    logged_in = len(clients)
    elapsed = max(1e-9, (arrivals[-1] if arrivals else time.perf_counter()) - start)
    decile = max(1, logged_in // 10)
    figures.update(
        {
            "clients_per_s": logged_in / elapsed,
            "rss_kib_per_conn": (rss_after - rss_before) / max(1, logged_in),
            "rss_kib_per_conn_settled": (settled_rss - rss_before) / max(1, logged_in),
            "peak_threads": threads,
            "peak_fds": fds,
            "lost": n_clients - logged_in,
            "first_decile_per_s": decile / max(1e-9, arrivals[decile - 1] - start)
            if arrivals
            else 0.0,
            "last_decile_per_s": decile / max(1e-9, arrivals[-1] - arrivals[-decile - 1])
            if len(arrivals) > decile
            else 0.0,
            "server_ms_per_conn": cpu["server_cpu_s"] * 1000 / max(1, logged_in),
            "gen_ms_per_conn": cpu["gen_cpu_s"] * 1000 / max(1, logged_in),
            "notice_mib_received": sum(c.bytes_in for c in clients) / 2**20,
            "settle_s": settle_s,
            "settle_server_cpu_s": settle_cpu,
            **cpu,
            "failures": failures[:5],
        }
    )
    clients.clear()

    # TLS alone: handshake and hello, no login (so no account and no join notice).
    async with bench.server("--client-ca", str(bench.pki.ca_pem), label="tls") as server:
        bare: list[Client] = []
        try:
            sem = asyncio.Semaphore(in_flight)

            async def handshake(index: int) -> None:
                async with sem:
                    client = await open_client(server.port, contexts[index], cert_name(index))
                    bare.append(client)
                    await client.expect("hello")
                    client.count_only = True

            tls_rss_before = server.rss_kib()
            with measuring(server) as tls_cpu:
                await asyncio.gather(*(handshake(i) for i in range(n_handshakes)))
            tls_rss = (server.rss_kib() - tls_rss_before) / n_handshakes
            server.check_alive()
        finally:
            await server.stop()
            close_all(bare)
    problems += server.problems
    figures["tls_handshakes_per_s"] = n_handshakes / tls_cpu["wall_s"]
    figures["tls_server_ms_per_handshake"] = tls_cpu["server_cpu_s"] * 1000 / n_handshakes
    figures["tls_gen_ms_per_handshake"] = tls_cpu["gen_cpu_s"] * 1000 / n_handshakes
    figures["tls_rss_kib_per_conn"] = tls_rss

    # Password logins: each registers a new account, one scrypt hash apiece.
    async with bench.server(label="password") as server:
        pw_clients: list[Client] = []
        try:
            with measuring(server) as pw_cpu:
                pw_clients = await login_many(
                    bench, server, [f"pw{i:04d}" for i in range(n_password)], in_flight=in_flight
                )
            server.check_alive()
        finally:
            await server.stop()
            close_all(pw_clients)
    problems += server.problems
    figures["password_logins_per_s"] = n_password / pw_cpu["wall_s"]
    figures["password_server_ms_per_login"] = pw_cpu["server_cpu_s"] * 1000 / n_password
    figures["problems"] = problems
    return figures
