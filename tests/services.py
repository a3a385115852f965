"""Real PostgreSQL and Redis servers for the tests of cluster mode (marker ``cluster``).

Each server runs from its Debian package's binaries, in a temporary directory, on a
free port of 127.0.0.1 only, for the whole test session; tests can stop and start
it again (same port, same data) to see what a restart does to the code under test.
``postgres_url`` gives each test a database of its own, created empty.

PostgreSQL refuses to run as root, and CI runs as root: then ``initdb`` and
``pg_ctl`` run as the ``postgres`` OS user (created by Debian's package), in a
directory that user owns. Redis runs as whoever runs the tests.

The benchmarks (benchmarks/bench/engines.py) start their servers with these classes
too. Missing binaries skip the tests that need them, unless ``SECURECHAT_CLUSTER_TESTS``
is ``required`` (CI sets it): then they fail, so a broken install cannot pass as
a green run that tested nothing.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

__all__ = [
    "PostgresServer",
    "RedisServer",
    "free_port",
    "postgres_bindir",
    "postgres_server",
    "postgres_url",
    "redis_binary",
    "redis_server",
    "redis_url",
]

START_TIMEOUT = 30.0
"""Seconds a server gets to start or stop (initdb included) before the test fails."""

_POSTGRES_USER = "postgres"  # the OS user Debian's package creates; PostgreSQL runs as it
_SUPERUSER = "securechat"  # the database superuser the tests connect as
_PASSWORD = "securechat-test"  # a throwaway server on 127.0.0.1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _missing(what: str) -> None:
    """Skip, or fail when cluster tests are required (CI), for want of ``what``."""
    message = f"cluster tests need {what}"
    if os.environ.get("SECURECHAT_CLUSTER_TESTS") == "required":
        pytest.fail(f"{message} (SECURECHAT_CLUSTER_TESTS=required)", pytrace=False)
    pytest.skip(message)


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's answer, else Debian's newest version."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    candidates += sorted(debian, key=lambda p: _version(p.parent.name), reverse=True)
    return next(
        (d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None
    )


def redis_binary() -> str | None:
    """The ``redis-server`` program: on the PATH, else where Debian's package puts it."""
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _wait_until(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {START_TIMEOUT} s")
        time.sleep(0.05)


class PostgresServer:
    """A PostgreSQL cluster of its own, listening on 127.0.0.1:``port``."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL will not run as root: hand it a directory of its own user.
            self._as_postgres = ["runuser", "-u", _POSTGRES_USER, "--"]
            shutil.chown(root, _POSTGRES_USER)
        password_file = root / "password"
        password_file.write_text(_PASSWORD + "\n", encoding="utf-8")
        if self._as_postgres:
            shutil.chown(password_file, _POSTGRES_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",  # a throwaway cluster; the running server still fsyncs
        )
        password_file.unlink()
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"  # TCP on 127.0.0.1 only
                "max_connections = 200\n"
            )
        self.start()

    def _run(self, program: str, *args: str) -> None:
        argv = [*self._as_postgres, str(self.bindir / program), *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=START_TIMEOUT, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stderr}{done.stdout}\n{log}")

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server, as the superuser."""
        return f"postgresql://{_SUPERUSER}:{_PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """True when the server accepts connections."""
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> None:
        """Start the server (on the same port and data as before); return once it answers."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        _wait_until(lambda: self.running, "PostgreSQL not answering")

    def stop(self) -> None:
        """Stop the server at once, closing every connection (fast shutdown)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop and start again on the same port, with the same data."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start the server again if a test left it stopped."""
        if not self.running:
            self.start()

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, closing whatever still uses it."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RedisServer:
    """A ``redis-server`` without persistence, listening on 127.0.0.1:``port``."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.log = root / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """The URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True when the server answers PING."""
        try:
            with redis.Redis.from_url(self.url, socket_timeout=2) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        """Start the server (on the same port as before); return once it answers."""
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--logfile",
            str(self.log),
        ]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        _wait_until(self._answers, "redis-server not answering")

    def _answers(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
            raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{log}")
        return self.running

    def stop(self) -> None:
        """Stop the server; whatever it held is gone (no persistence)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(START_TIMEOUT)
        self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, empty."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start the server again if a test left it stopped."""
        if self._proc is None or self._proc.poll() is not None:
            self.start()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (skipped if PostgreSQL is not installed)."""
    bindir = postgres_bindir()
    if bindir is None:
        _missing("PostgreSQL (initdb, pg_ctl): apt-get install postgresql")
    assert bindir is not None
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _missing("runuser, to run PostgreSQL as a user other than root")
    root = Path(tempfile.mkdtemp(prefix="securechat-pg-"))  # under /tmp: postgres can reach it
    server = PostgresServer(bindir, root)
    try:
        yield server
    finally:
        if server.running:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    postgres_server.ensure_running()
    url = postgres_server.create_database()
    yield url
    postgres_server.ensure_running()  # a test may have stopped it
    postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the whole session (skipped if redis-server is not installed)."""
    binary = redis_binary()
    if binary is None:
        _missing("redis-server: apt-get install redis-server")
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix="securechat-redis-"))
    server = RedisServer(binary, root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis server, running and emptied for this test."""
    redis_server.ensure_running()
    with redis.Redis.from_url(redis_server.url, socket_timeout=5) as client:
        client.flushall()
    return redis_server.url
