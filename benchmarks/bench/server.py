"""The server under test: a ``securechat.server.cli`` subprocess and what /proc says of it."""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .common import (
    CLK_TCK,
    HOST,
    SERVER_START_TIMEOUT,
    SERVER_STOP_TIMEOUT,
    BenchError,
)
from .pki import Pki

__all__ = ["ServerProcess", "wait_until_idle"]


def _die_with_parent() -> None:
    """In the server child: get SIGTERM if the benchmark process dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """``python -m securechat.server.cli`` on 127.0.0.1 with a fresh database."""

    def __init__(
        self,
        pki: Pki,
        workdir: Path,
        extra: Sequence[str],
        label: str,
        *,
        profile: Path | None = None,
    ) -> None:
        self.pki = pki
        self.profile = profile
        self.workdir = workdir
        self.extra = list(extra)
        self.label = label
        self.log_path = workdir / f"server-{label}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.web_port = 0
        """The port of the web client, when started with ``--web-port``."""
        self.exit_code: int | None = None
        self.problems: list[str] = []
        self._final_cpu: float | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> ServerProcess:
        argv = [
            sys.executable,
            "-m",
            "securechat.server.cli",
            "--cert",
            str(self.pki.server_pem),
            "--key",
            str(self.pki.server_key),
            "--host",
            HOST,
            "--port",
            "0",
            "--db",
            str(self.workdir / f"{self.label}.db"),
            "--log-level",
            "WARNING",
            *self.extra,
        ]
        with self.log_path.open("wb") as log:
            # preexec_fn only calls prctl; the benchmark starts servers from its one thread.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_path.read_text("utf-8")
            match = re.search(r"listening on [^\s:]+:(\d+)", text)
            web = re.search(r"web client on https://\S+:(\d+)/", text)
            if match and (web is not None or "--web-port" not in self.extra):
                self.port = int(match.group(1))
                self.web_port = int(web.group(1)) if web is not None else 0
                return self
            if self.proc.poll() is not None:
                raise BenchError(f"server exited at start: {self._log_tail()}")
            await asyncio.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise BenchError(f"server did not start in {SERVER_START_TIMEOUT} s: {self._log_tail()}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """SIGTERM, wait (the event loop keeps serving clients), kill if it overstays."""
        if self.proc is None or self.exit_code is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SERVER_STOP_TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.proc.poll() is None:
            self.problems.append(f"server ignored SIGTERM for {SERVER_STOP_TIMEOUT} s; killed")
            self.proc.kill()
        self.exit_code = self.proc.wait()
        if self.exit_code != 0:
            self.problems.append(f"server exit status {self.exit_code}")
        for line in self.log_path.read_text("utf-8", "replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                self.problems.append(f"server log: {line[:300]}")

    def kill(self) -> None:
        """``kill -9``, as a crash would (the failover scenario): its CPU so far is kept
        for :meth:`cpu_seconds`, and its exit status is no problem."""
        assert self.proc is not None
        self._final_cpu = self.cpu_seconds()
        self.proc.kill()
        self.exit_code = self.proc.wait()

    def check_alive(self) -> None:
        """BenchError if the server has exited."""
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"server died: {self._log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the server so far (until killed)."""
        if self._final_cpu is not None:
            return self._final_cpu
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError as exc:
            raise BenchError(f"server process is gone: {self._log_tail()}") from exc
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def rss_kib(self) -> int:
        """Resident set size (VmRSS)."""
        return _status_field(self.pid, "VmRSS")

    def threads(self) -> int:
        """Number of threads."""
        return _status_field(self.pid, "Threads")

    def fds(self) -> int:
        """Number of open file descriptors."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-2000:]
        except OSError:
            return "(no log)"


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {name} in /proc/{pid}/status")


async def wait_until_idle(server: ServerProcess, *, limit: float) -> float:
    """Wait (at most ``limit`` s) until the server uses under 5 % of a core for 0.5 s.

    Returns the server CPU seconds spent meanwhile.
    """
    start_cpu = server.cpu_seconds()
    deadline = time.monotonic() + limit
    previous = start_cpu
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = server.cpu_seconds()
        if now - previous < 0.025:
            break
        previous = now
    return server.cpu_seconds() - start_cpu
