"""A cluster under test: fresh PostgreSQL and Redis, and several securechat servers on them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

from .engines import Engines
from .harness import Bench, Figures
from .measure import measuring
from .server import ServerProcess

__all__ = ["CLUSTER_SERVERS", "Cluster", "cpu_figures", "spread"]

CLUSTER_SERVERS = 3
"""Servers in every cluster scenario (issue 10: three servers on this two-core machine)."""


class Cluster:
    """``n`` securechat servers (``--store postgresql://… --bus redis://…``, the message
    budgets lifted as in every capacity scenario) on a fresh PostgreSQL and Redis.

    Use with ``async with``: the servers stop (SIGTERM, all at once) before the
    engines do, so none of them sees its store vanish.
    """

    def __init__(self, bench: Bench, n: int = CLUSTER_SERVERS) -> None:
        self.bench = bench
        self.n = n
        self.engines = Engines()
        self.servers: list[ServerProcess] = []

    async def __aenter__(self) -> Cluster:
        await self.engines.__aenter__()
        try:
            cluster_args = ("--store", self.engines.store_url, "--bus", self.engines.bus_url)
            self.servers = [
                self.bench.server(*cluster_args, label=f"node{i}") for i in range(self.n)
            ]
            # All at once, as in a deployment: migrations run under an advisory lock.
            started = await asyncio.gather(
                *(s.__aenter__() for s in self.servers), return_exceptions=True
            )
            failed = [r for r in started if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop every server, then the engines."""
        await asyncio.gather(*(s.stop() for s in self.servers))
        await self.engines.stop()

    @property
    def problems(self) -> list[str]:
        """What the servers' exits and logs showed, each line naming its server."""
        return [f"{s.label}: {p}" for s in self.servers for p in s.problems]

    def check_alive(self) -> None:
        """BenchError if a server that was not killed on purpose has exited."""
        for server in self.servers:
            if server.exit_code is None:
                server.check_alive()

    @contextmanager
    def measuring(self) -> Iterator[dict[str, float]]:
        """CPU of every server, PostgreSQL, Redis and the generator over the block, and
        PostgreSQL's commits and WAL flushes meanwhile (``pg_commits``, ``wal_syncs``)."""
        before = self.engines.counters()
        with measuring(*self.servers, engines=self.engines) as cpu:
            yield cpu
        after = self.engines.counters()
        cpu["pg_commits"] = after["commits"] - before["commits"]
        cpu["wal_syncs"] = after["wal_syncs"] - before["wal_syncs"]

    def port_of(self, index: int) -> int:
        """The port of server ``index`` (modulo the number of servers)."""
        return self.servers[index % self.n].port


def spread(cluster: Cluster, names: Sequence[str]) -> list[tuple[str, int]]:
    """Each name with a server's port, round robin: name ``i`` on server ``i % n``."""
    return [(name, cluster.port_of(i)) for i, name in enumerate(names)]


def cpu_figures(cpu: dict[str, float], count: int, unit: str) -> Figures:
    """CPU per ``unit`` (µs) and cores busy, of the whole server side (``server_…``: the
    securechat servers, PostgreSQL and Redis together), of each part of it (``nodes_…``
    for the securechat servers) and of the generator, over ``count`` units."""
    wall = max(cpu["wall_s"], 1e-9)
    parts = {
        "server": cpu["cluster_cpu_s"],
        "nodes": cpu["server_cpu_s"],
        "postgres": cpu["postgres_cpu_s"],
        "redis": cpu["redis_cpu_s"],
        "gen": cpu["gen_cpu_s"],
    }
    figures: Figures = {}
    for part, seconds in parts.items():
        figures[f"{part}_us_per_{unit}"] = seconds * 1e6 / max(1, count)
        figures[f"{part}_cores"] = seconds / wall
    return figures
