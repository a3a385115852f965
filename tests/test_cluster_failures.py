"""Cluster mode when things break: a server killed with -9, Redis or PostgreSQL
restarted, a server cut off from Redis. Real server processes on real PostgreSQL
and Redis servers, real TLS clients."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securechat.wire.protocol import Frame
from tests.conftest import (
    UNMETERED_ARGS,
    ClientProcess,
    Pki,
    RawClient,
    ServerProcess,
    free_port,
    history_page,
)
from tests.services import PostgresServer, RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

Cluster = Callable[..., list[ServerProcess]]


@pytest.fixture
def cluster(
    pki: Pki, tmp_path: Path, postgres_url: str, redis_url: str
) -> Iterator[Cluster]:
    """Start ``n`` server processes sharing one PostgreSQL database and one Redis."""
    started: list[ServerProcess] = []

    def _start(n: int, *, bus: str | None = None) -> list[ServerProcess]:
        servers = []
        for _ in range(n):
            server = ServerProcess(
                pki,
                tmp_path / "unused.db",
                port=free_port(),
                extra=("--store", postgres_url, "--bus", bus or redis_url, *UNMETERED_ARGS),
            )
            started.append(server)
            servers.append(server)
        for server in servers:
            server.wait_listening(30)
        return servers

    yield _start
    for server in started:
        server.kill()


def _client(pki: Pki, server: ServerProcess, name: str) -> RawClient:
    client = RawClient(server.port, pki.ca_pem)
    client.login(name)
    return client


def _answer(client: RawClient, rid: int) -> Frame:
    """The frame that answers request ``rid``, whatever its type."""
    while True:
        frame = client.recv_frame(30)
        assert frame is not None, "closed while waiting for an answer"
        client.frames.append(frame)
        if frame.get("rid") == rid:
            return frame


def _room_view(frames: list[Frame]) -> tuple[list[int], set[int]]:
    """The sequence numbers of #general a connection was shown by others (replay and
    live, in arrival order), and those of its own acknowledgements."""
    shown, own = [], set()
    for f in frames:
        if f.type != "message" or f.get("room") != "#general":
            continue
        if f.get("duplicate"):
            continue  # a re-sent message's original: from before this connection
        if f.get("rid") is not None:
            own.add(f.get("seq"))
        else:
            shown.append(f.get("seq"))
    return shown, own


def test_kill_9_of_one_server_in_a_burst_loses_no_acknowledged_message(
    pki: Pki, cluster: Cluster
) -> None:
    servers = cluster(3)
    per_client = 30
    names = [f"user{i}" for i in range(6)]
    clients = [_client(pki, servers[i % 3], name) for i, name in enumerate(names)]
    acked: dict[str, set[str]] = {name: set() for name in names}
    started = threading.Barrier(len(names) + 1)
    errors: list[BaseException] = []

    def _burst(index: int) -> None:
        try:
            _send_all(index)
        except BaseException as exc:
            errors.append(exc)

    def _send_all(index: int) -> None:
        name, client = names[index], clients[index]
        started.wait()
        n = 0
        while n < per_client:
            text, key = f"{name} {n}", f"{name}-{n}"
            try:
                rid = client.send("say", room="#general", text=text, key=key)
                client.expect("message", rid=rid)
            except (ConnectionError, OSError, TimeoutError):
                # Its server died: go on through a survivor, re-sending with the same
                # key (the reference client does the same).
                client = RawClient(servers[(index + 1) % 3].port, pki.ca_pem)
                client.login(name)
                clients[index] = client
                continue
            acked[name].add(text)
            n += 1

    threads = [threading.Thread(target=_burst, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    started.wait()
    while sum(len(a) for a in acked.values()) < 40:
        time.sleep(0.01)
    servers[2].sigkill()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    total = per_client * len(names)
    assert sum(len(a) for a in acked.values()) == total
    reader = _client(pki, servers[0], "auditor")
    rows: list[Frame] = []
    after = 0
    while True:
        page, _ = history_page(reader, room="#general", after=after, limit=200)
        if not page:
            break
        rows.extend(page)
        after = page[-1].get("id")
    texts = [r.get("text") for r in rows]
    assert len(texts) == len(set(texts)) == total  # nothing lost, nothing twice
    assert {t for a in acked.values() for t in a} == set(texts)
    assert [r.get("seq") for r in rows] == list(range(1, total + 1))
    # Each surviving connection was shown the room in number order, once each, and
    # with its own messages nothing is missing from the first number it saw to the last.
    for client in clients:
        shown, own = _room_view(client.frames)
        assert shown == sorted(set(shown)), shown
        seen = set(shown) | own
        assert seen == set(range(min(seen), max(seen) + 1)), sorted(seen)


def test_a_killed_servers_users_go_offline_for_everyone(pki: Pki, cluster: Cluster) -> None:
    one, two = cluster(2)
    alice = _client(pki, one, "alice")
    bob = _client(pki, two, "bob")
    alice.expect("system", event="join", user="bob")
    killed = time.monotonic()
    two.sigkill()
    quit_ = alice.expect("system", event="quit", user="bob", timeout=30)
    assert time.monotonic() - killed < 30
    assert "server lost" in quit_.get("text")
    bob.close()
    rid = alice.send("who", room="#general")
    assert alice.expect("users", rid=rid).get("users") == ["alice"]


def test_a_new_server_sees_who_is_online(pki: Pki, cluster: Cluster) -> None:
    (one,) = cluster(1)
    alice = _client(pki, one, "alice")
    (two,) = cluster(1)
    bob = _client(pki, two, "bob")
    rid = bob.send("who", room="#general")
    assert bob.expect("users", rid=rid).get("users") == ["alice", "bob"]
    alice.close()


def test_a_redis_restart_loses_no_message_and_shows_none_twice(
    pki: Pki, cluster: Cluster, redis_server: RedisServer
) -> None:
    one, two = cluster(2)
    alice = _client(pki, one, "alice")
    bob = _client(pki, two, "bob")
    for n in range(40):
        if n == 15:
            redis_server.restart()
        rid = alice.send("say", room="#general", text=f"m{n}")
        alice.expect("message", rid=rid)
    texts = []
    while len(texts) < 40:
        texts.append(bob.expect("message", room="#general", timeout=20).get("text"))
    assert texts == [f"m{n}" for n in range(40)]
    with pytest.raises(TimeoutError):
        bob.expect("message", room="#general", timeout=1.0)  # and nothing twice


def test_postgresql_down_refuses_messages_and_the_servers_recover(
    pki: Pki, cluster: Cluster, postgres_server: PostgresServer
) -> None:
    one, two = cluster(2)
    alice = _client(pki, one, "alice")
    bob = _client(pki, two, "bob")
    postgres_server.stop()
    try:
        rid = alice.send("say", room="#general", text="lost cause")
        refused = _answer(alice, rid)
        assert refused.type == "error" and refused.get("code") in ("not_stored", "busy")
    finally:
        postgres_server.start()
    deadline = time.monotonic() + 30
    while True:
        rid = alice.send("say", room="#general", text="back again")
        frame = _answer(alice, rid)
        if frame.type == "message":
            break
        assert time.monotonic() < deadline, "the server did not recover"
        time.sleep(0.5)
    assert bob.expect("message", text="back again", timeout=10).get("from") == "alice"
    rows, _ = history_page(bob, room="#general", limit=10)
    assert [r.get("text") for r in rows] == ["back again"]


class _Proxy:
    """A TCP proxy on 127.0.0.1 that can be cut: a network failure between one server
    and Redis, and nothing else."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                conn.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [conn, upstream]
            threading.Thread(target=self._pump, args=(conn, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self._cut.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._cut.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_a_server_cut_from_redis_tells_its_clients(
    pki: Pki, cluster: Cluster, redis_server: RedisServer
) -> None:
    proxy = _Proxy(redis_server.port)
    (one,) = cluster(1)
    (cut,) = cluster(1, bus=f"redis://127.0.0.1:{proxy.port}/0")
    alice = _client(pki, one, "alice")
    bob = _client(pki, cut, "bob")
    alice.expect("system", event="join", user="bob")
    proxy.cut()
    notice = bob.expect("system", event="cluster", timeout=15)
    assert notice.get("healthy") is False and "lost touch" in notice.get("text")
    # The other server sees it gone: its users go offline there.
    alice.expect("system", event="quit", user="bob", timeout=30)


def test_reference_clients_of_a_killed_server_carry_on_through_another_and_miss_nothing(
    pki: Pki, cluster: Cluster, client_process: Callable[..., ClientProcess]
) -> None:
    servers = cluster(3)
    hosts = tuple(f"localhost:{s.port}" for s in servers)
    # Two people on the server about to die, each given every address, theirs first.
    watchers = [
        client_process(servers[2].port, name, hosts=(hosts[2], hosts[0], hosts[1]))
        for name in ("wendy", "walt")
    ]
    for watcher in watchers:
        watcher.wait_for("connected")
    senders = [_client(pki, servers[i], f"sender{i}") for i in (0, 1)]
    total = 60

    def _talk() -> None:
        for n in range(total):
            sender = senders[n % 2]
            rid = sender.send("say", room="#general", text=f"line {n}")
            sender.expect("message", rid=rid)

    talker = threading.Thread(target=_talk)
    talker.start()
    watchers[0].wait_for("message", text="line 10", timeout=20)
    servers[2].sigkill()
    watchers[1].type("walt still here")  # typed while his server is gone
    talker.join(30)
    for watcher in watchers:
        watcher.wait_for("system", event="server_changed", timeout=20)
        watcher.wait_for("message", text=f"line {total - 1}", timeout=20)
        texts = [
            e["text"]
            for e in watcher.drain(1.0)
            if e["type"] == "message" and e["text"].startswith("line ")
        ]
        # Every line once, in order (the ones waited for above were taken out of events).
        everything = sorted({*texts, "line 10", f"line {total - 1}"}, key=lambda t: int(t[5:]))
        assert everything == [f"line {n}" for n in range(total)], texts
        assert len(texts) == len(set(texts)), texts
    rows, _ = history_page(senders[0], room="#general", limit=100)
    stored = [r.get("text") for r in rows]
    assert stored.count("walt still here") == 1
    assert [r.get("seq") for r in rows] == list(range(1, len(rows) + 1))


def test_sigterm_with_redis_down_still_exits_promptly(
    pki: Pki, cluster: Cluster, redis_server: RedisServer
) -> None:
    (server,) = cluster(1)
    alice = _client(pki, server, "alice")
    redis_server.stop()
    try:
        said_at = time.monotonic()
        assert server.terminate(timeout=10) == 0
        assert time.monotonic() - said_at < 5.0
        assert any(f.type == "bye" for f in alice.wait_closed())
    finally:
        redis_server.start()
