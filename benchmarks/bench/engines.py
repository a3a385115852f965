"""PostgreSQL and Redis for the cluster scenarios: fresh servers per run, and their CPU.

The servers are the test suite's own (``tests/services.py``): Debian's binaries, a
temporary directory, a free port of 127.0.0.1, PostgreSQL as the ``postgres`` OS user
when we are root. Each run gets new ones, so that no run inherits another's rows,
stream, checkpoint or autovacuum work, and they stop after the securechat servers
(which would log errors for a store that vanished under them).

CPU is read from ``/proc``: for PostgreSQL the postmaster and every live child
(backends, WAL writer, checkpointer, ...) including what each has reaped, plus
what the postmaster has reaped (``cutime``/``cstime``), so a backend that exited
during the measured phase still counts; for Redis its one process (all threads).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg

from .common import CLK_TCK, BenchError

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))  # for tests/services.py, shared with the test suite

from tests.services import (  # noqa: E402
    PostgresServer,
    RedisServer,
    postgres_bindir,
    redis_binary,
)

__all__ = ["REQUIRED_ENV", "Engines", "missing_engines"]

REQUIRED_ENV = "SECURECHAT_CLUSTER_TESTS"
"""Set to ``required`` (as CI does), missing engines fail the cluster smoke tests."""


def missing_engines() -> str | None:
    """Why the cluster scenarios cannot run here, or None if they can."""
    if postgres_bindir() is None:
        return "PostgreSQL (initdb, pg_ctl): apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser, to run PostgreSQL as a user other than root"
    if redis_binary() is None:
        return "redis-server: apt-get install redis-server"
    return None


class Engines:
    """A fresh PostgreSQL (with an empty database ``securechat``) and a fresh Redis.

    Use with ``async with``; starting and stopping block the event loop for a
    second or so, which only ever happens outside a measured phase.
    """

    def __init__(self) -> None:
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.store_url = ""
        self._roots: list[Path] = []

    @property
    def bus_url(self) -> str:
        """Redis database 0."""
        assert self.redis is not None
        return self.redis.url

    async def __aenter__(self) -> Engines:
        reason = missing_engines()
        if reason is not None:
            raise BenchError(f"the cluster scenarios need {reason}")
        bindir, binary = postgres_bindir(), redis_binary()
        assert bindir is not None and binary is not None
        try:
            # Directly under /tmp: the postgres user cannot enter the run's own
            # (root-only) scratch directory.
            self.postgres = PostgresServer(bindir, self._root("pg"))
            with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE securechat")
            self.store_url = self.postgres.url("securechat")
            self.redis = RedisServer(binary, self._root("redis"))
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

    def _root(self, what: str) -> Path:
        root = Path(tempfile.mkdtemp(prefix=f"securechat-bench-{what}-"))
        self._roots.append(root)
        return root

    async def stop(self) -> None:
        """Stop both servers (PostgreSQL's fast shutdown) and remove their files."""
        if self.postgres is not None and self.postgres.running:
            await asyncio.to_thread(self.postgres.stop)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        for root in self._roots:
            shutil.rmtree(root, ignore_errors=True)
        self._roots.clear()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far: ``postgres`` (postmaster and children), ``redis``."""
        assert self.postgres is not None and self.redis is not None
        postmaster = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
        redis_pid = self.redis.pid
        postgres = _cpu(postmaster, reaped=True)
        for child in _children(postmaster):
            postgres += _cpu(child, reaped=True)
        return {"postgres": postgres, "redis": _cpu(redis_pid, reaped=False)}

    def counters(self) -> dict[str, int]:
        """PostgreSQL's commits in the benchmark's database and its WAL flushes so far."""
        assert self.postgres is not None
        with psycopg.connect(self.store_url, autocommit=True) as conn:
            commits = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            syncs = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
        return {
            "commits": int(commits[0]) if commits else 0,
            "wal_syncs": int(syncs[0]) if syncs else 0,
        }


def _stat_fields(pid: int) -> list[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []  # exited since it was listed: its parent has reaped its time
    return stat[stat.rindex(")") + 2 :].split()


def _cpu(pid: int, *, reaped: bool) -> float:
    """utime + stime of ``pid`` (and, with ``reaped``, of the children it has waited for)."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[1]) == parent:
                found.append(int(entry))
    return found
