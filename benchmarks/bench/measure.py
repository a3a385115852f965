"""CPU accounting over a measured phase: the servers (and in cluster mode PostgreSQL and
Redis), the generator and the rest of the machine."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from .common import CLK_TCK
from .server import ServerProcess

__all__ = ["EngineCpu", "machine_busy_seconds", "measuring", "wait_for_quiet"]


class EngineCpu(Protocol):
    """Processes besides the servers whose CPU counts as the server side's (cluster mode)."""

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far, by engine name."""
        ...


@contextmanager
def measuring(
    *servers: ServerProcess, engines: EngineCpu | None = None
) -> Iterator[dict[str, float]]:
    """CPU of the servers (summed), the engines, and the generator over the block,
    garbage collector off.

    ``server_cpu_s`` is every server's together; with ``engines`` (PostgreSQL and
    Redis in cluster mode) each engine's is ``{name}_cpu_s`` and ``cluster_cpu_s``
    the whole server side. The generator makes millions of short-lived frames
    and no cycles; its collector would only add noise to the generator's own CPU
    time. With ``--py-spy DIR`` each server is sampled by py-spy over the block
    (which costs it CPU: profile runs are for finding hot spots, not for figures).
    """
    out: dict[str, float] = {}
    spies = [_start_py_spy(s) for s in servers if s.profile is not None]
    gc.collect()
    gc.disable()
    server_cpu = sum(s.cpu_seconds() for s in servers)
    engine_cpu = engines.cpu_seconds() if engines is not None else {}
    gen_cpu = time.process_time()
    busy = machine_busy_seconds()
    start = time.perf_counter()
    try:
        yield out
    finally:
        wall = time.perf_counter() - start
        out["server_cpu_s"] = sum(s.cpu_seconds() for s in servers) - server_cpu
        out["gen_cpu_s"] = time.process_time() - gen_cpu
        out["wall_s"] = wall
        side = out["server_cpu_s"]
        if engines is not None:
            for name, seconds in engines.cpu_seconds().items():
                out[f"{name}_cpu_s"] = seconds - engine_cpu[name]
                side += out[f"{name}_cpu_s"]
            out["cluster_cpu_s"] = side
        # Everything else the machine did meanwhile: other processes, and kernel
        # work charged to neither side. Other people's test runs show up here.
        other = machine_busy_seconds() - busy - side - out["gen_cpu_s"]
        out["other_cores"] = max(0.0, other) / max(wall, 1e-9)
        gc.enable()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


async def wait_for_quiet(limit: float, *, threshold: float = 0.3) -> float:
    """Wait (at most ``limit`` s) for a second in which the machine is under ``threshold``
    cores busy; returns the busy cores of the last second measured.

    Other people's work on a shared machine would otherwise land in the figures.
    """
    deadline = time.monotonic() + limit
    while True:
        before, began = machine_busy_seconds(), time.perf_counter()
        await asyncio.sleep(1.0)
        cores = (machine_busy_seconds() - before) / (time.perf_counter() - began)
        if cores < threshold or time.monotonic() >= deadline:
            return cores


def _start_py_spy(server: ServerProcess) -> subprocess.Popen[bytes]:
    """``py-spy record`` (collapsed stacks, per thread) of the server, until SIGINT."""
    assert server.profile is not None
    server.profile.mkdir(parents=True, exist_ok=True)
    stem = f"{server.workdir.name}-{server.label}-{int(time.time())}"
    py_spy = Path(sys.executable).with_name("py-spy")
    spy = subprocess.Popen(
        [
            str(py_spy) if py_spy.exists() else "py-spy",
            "record",
            "--pid",
            str(server.pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--output",
            str(server.profile / f"{stem}.txt"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let it attach before the measured phase begins
    return spy
