"""File transfer between users on different servers of a cluster: the bytes cross over
a mutually authenticated TLS link between the servers, flow-controlled end to end.

Two servers share a real PostgreSQL and a real Redis; each has a peer port. Real TLS
everywhere: raw protocol clients, reference client processes, server processes
killed with -9.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securechat import certs
from securechat.server.listener import Server
from securechat.wire.protocol import FILE_CHUNK, FILE_WINDOW, Decoder, Frame, encode
from tests.conftest import (
    EVENT_TIMEOUT,
    UNMETERED_ARGS,
    ClientProcess,
    Pki,
    RawClient,
    ServerProcess,
    free_port,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

Factory = Callable[..., RawClient]
Clients = Callable[..., ClientProcess]
Pair = tuple[Server, Server]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def pair(make_server: Callable[..., Server], pki: Pki, postgres_url: str, redis_url: str) -> Pair:
    """Two servers of one chat, each with a peer port."""
    options = {"store": postgres_url, "bus": redis_url, "peer_port": 0, "peer_ca": pki.ca_pem}
    return make_server(**options), make_server(**options)


def _login_apart(raw_client: Factory, pair: Pair) -> tuple[RawClient, RawClient]:
    """alice on the first server, bob on the second."""
    alice = raw_client(pair[0].address[1])
    alice.login("alice")
    bob = raw_client(pair[1].address[1])
    bob.login("bob")
    return alice, bob


def _answer(client: RawClient, rid: int) -> Frame:
    """The frame that answers request ``rid``, whatever its type."""
    while True:
        frame = client.recv_frame()
        assert frame is not None, "closed while waiting for an answer"
        client.frames.append(frame)
        if frame.get("rid") == rid:
            return frame


def _wait_online(server: Server, name: str) -> None:
    """Until ``server`` has heard (over the bus) that ``name`` is online elsewhere."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        with server.hub.lock:
            identity = server.hub.accounts.find(name)
            cluster = server.hub.cluster
            if (
                identity is not None
                and cluster is not None
                and cluster.remote_sessions(identity.id)
            ):
                return
        assert time.monotonic() < deadline, f"{name} never came online"
        time.sleep(0.05)


def _offer(alice: RawClient, bob: RawClient, data: bytes, name: str = "x.bin") -> int:
    """alice's offer, once her server has heard (over the bus) that bob is online."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        rid = alice.send("file_offer", to="bob", name=name, size=len(data), sha256=_sha(data))
        answer = _answer(alice, rid)
        if answer.type == "file_offered":
            break
        # The account and presence events are on their way over the bus.
        assert answer.get("code") in ("no_such_user", "not_online"), answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
    tid: int = answer.get("id")
    offer = bob.expect("file_offer", id=tid)
    assert (offer.get("from"), offer.get("name"), offer.get("size")) == ("alice", name, len(data))
    return tid


def _accept(alice: RawClient, bob: RawClient, tid: int, offset: int = 0) -> None:
    rid = bob.send("file_accept", id=tid, offset=offset)
    bob.expect("ok", rid=rid)
    assert alice.expect("file_accepted", id=tid).get("by") == "bob"


def test_file_from_one_server_reaches_a_user_on_another_intact(
    pair: Pair, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 4321)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    downloads = tmp_path / "downloads"
    bob = client_process(pair[1].address[1], "bob", extra=("--download-dir", str(downloads)))
    bob.wait_for("connected")
    _wait_online(pair[0], "bob")
    alice = client_process(pair[0].address[1], "alice")
    alice.wait_for("connected")
    alice.type(f"/sendfile bob {source}")
    offer = bob.wait_for("file_offer")
    assert (offer["from"], offer["size"], offer["sha256"]) == ("alice", len(payload), _sha(payload))
    bob.type(f"/accept {offer['id']}")
    saved = bob.wait_for("file_saved", timeout=60)  # the client checked the SHA-256
    assert hashlib.sha256(Path(saved["path"]).read_bytes()).hexdigest() == _sha(payload)
    assert alice.wait_for("file_sent", timeout=30)["to"] == "bob"


def test_bytes_cross_in_order_and_the_window_holds_across_servers(
    pair: Pair, raw_client: Factory
) -> None:
    data = os.urandom(FILE_WINDOW + 3 * FILE_CHUNK)
    alice, bob = _login_apart(raw_client, pair)
    tid = _offer(alice, bob, data)
    _accept(alice, bob, tid)
    for position in range(0, FILE_WINDOW, FILE_CHUNK):
        alice.send_raw(
            encode("file_chunk", data[position : position + FILE_CHUNK], id=tid, offset=position)
        )
    received = bytearray()
    while len(received) < FILE_WINDOW:
        chunk = bob.expect("file_chunk", id=tid)
        assert chunk.get("offset") == len(received)
        received += chunk.body
    # A window's worth is in flight and unacknowledged: one byte more is refused.
    alice.send_raw(
        encode("file_chunk", data[FILE_WINDOW : FILE_WINDOW + 1], id=tid, offset=FILE_WINDOW)
    )
    error = alice.expect("error", id=tid)
    assert error.get("code") == "bad_transfer" and "flow control" in error.get("text")
    assert "flow control" in bob.expect("file_failed", id=tid).get("reason")
    assert bytes(received) == data[:FILE_WINDOW]


def test_acknowledgements_open_the_window_and_the_verdict_reaches_the_sender(
    pair: Pair, raw_client: Factory
) -> None:
    data = os.urandom(2 * FILE_WINDOW + 5)
    alice, bob = _login_apart(raw_client, pair)
    tid = _offer(alice, bob, data)
    _accept(alice, bob, tid)
    sent = acked = 0
    received = bytearray()
    while len(received) < len(data):
        while sent < len(data) and sent - acked < FILE_WINDOW:
            piece = data[sent : sent + FILE_CHUNK]
            alice.send_raw(encode("file_chunk", piece, id=tid, offset=sent))
            sent += len(piece)
        chunk = bob.expect("file_chunk", id=tid)
        received += chunk.body
        bob.send_raw(encode("file_ack", id=tid, bytes=len(received)))
        acked = alice.expect("file_ack", id=tid).get("bytes")
    alice.send_raw(encode("file_done", id=tid))
    bob.expect("file_done", id=tid)
    assert bytes(received) == data
    bob.send_raw(encode("file_result", id=tid, ok=True))
    result = alice.expect("file_result", id=tid)
    assert (result.get("ok"), result.get("by")) == (True, "bob")


def test_rejection_and_cancel_cross_servers(pair: Pair, raw_client: Factory) -> None:
    data = os.urandom(2 * FILE_CHUNK)
    alice, bob = _login_apart(raw_client, pair)
    unwanted = _offer(alice, bob, data, "unwanted.bin")
    rid = bob.send("file_reject", id=unwanted)
    bob.expect("ok", rid=rid)
    assert alice.expect("file_rejected", id=unwanted).get("by") == "bob"

    tid = _offer(alice, bob, data, "half.bin")
    _accept(alice, bob, tid)
    alice.send_raw(encode("file_chunk", data[:FILE_CHUNK], id=tid, offset=0))
    bob.expect("file_chunk", id=tid)
    rid = bob.send("file_cancel", id=tid)
    assert "cancelled by bob" in bob.expect("file_failed", id=tid).get("reason")
    bob.expect("ok", rid=rid)
    assert "cancelled by bob" in alice.expect("file_failed", id=tid).get("reason")

    # And the sender's cancel reaches the recipient.
    tid = _offer(alice, bob, data, "again.bin")
    _accept(alice, bob, tid)
    rid = alice.send("file_cancel", id=tid)
    alice.expect("ok", rid=rid)
    assert "cancelled by alice" in bob.expect("file_failed", id=tid).get("reason")


def test_refusals_about_a_transfer_reach_the_recipient_on_its_server(
    pair: Pair, raw_client: Factory
) -> None:
    alice, bob = _login_apart(raw_client, pair)
    tid = _offer(alice, bob, b"0123456789")
    _accept(alice, bob, tid)
    rid = bob.send("file_accept", id=tid, offset=0)
    error = bob.expect("error", rid=rid)
    assert (error.get("code"), error.get("id")) == ("bad_transfer", tid)
    # A broken frame costs the recipient its session, as on one server, and the
    # sender hears it left; the link between the servers stays up.
    bob.send_raw(encode("file_result", id=tid, ok="yes"))
    errors = [f for f in bob.wait_closed() if f.type == "error"]
    assert [f.get("code") for f in errors] == ["bad_frame"]
    assert alice.expect("file_failed", id=tid).get("resumable") is True
    again = raw_client(pair[1].address[1])
    again.login("bob")
    tid = _offer(alice, again, b"still works")
    _accept(alice, again, tid)


def test_recipient_leaving_its_server_fails_the_transfer_for_the_sender(
    pair: Pair, raw_client: Factory
) -> None:
    alice, bob = _login_apart(raw_client, pair)
    tid = _offer(alice, bob, os.urandom(FILE_CHUNK * 2))
    _accept(alice, bob, tid)
    bob.send("quit")
    bob.wait_closed()
    failed = alice.expect("file_failed", id=tid)
    assert failed.get("reason") == "bob disconnected" and failed.get("resumable") is True


def test_offer_to_someone_on_a_server_without_a_peer_port_is_refused_clearly(
    make_server: Callable[..., Server],
    raw_client: Factory,
    pki: Pki,
    postgres_url: str,
    redis_url: str,
) -> None:
    with_peers = make_server(store=postgres_url, bus=redis_url, peer_port=0, peer_ca=pki.ca_pem)
    without = make_server(store=postgres_url, bus=redis_url)
    bob = raw_client(with_peers.address[1])
    bob.login("bob")
    alice = raw_client(without.address[1])
    alice.login("alice")
    _wait_online(without, "bob")
    rid = alice.send("file_offer", to="bob", name="a", size=1, sha256=_sha(b"a"))
    error = alice.expect("error", rid=rid)
    assert error.get("code") == "unavailable" and "--peer-port" in error.get("text")


# -- the peer port itself -------------------------------------------------------------------


@pytest.fixture
def dev_pki(tmp_path: Path) -> Iterator[Path]:
    """securechat-certs' own files: a CA, a server certificate and alice's."""
    out = tmp_path / "certs"
    assert certs.main(["--out", str(out)]) == 0
    assert certs.main(["--out", str(out), "--client", "alice"]) == 0
    yield out


def test_only_cluster_servers_get_through_the_peer_port(
    make_server: Callable[..., Server], postgres_url: str, redis_url: str, dev_pki: Path
) -> None:
    server = make_server(
        cert=dev_pki / "server.pem",
        key=dev_pki / "server.key",
        store=postgres_url,
        bus=redis_url,
        peer_port=0,
        peer_ca=dev_pki / "ca.pem",
    )
    assert server.peer_address is not None
    host, port = server.peer_address.rsplit(":", 1)

    def _handshake(cert: str | None) -> bytes:
        ctx = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
        if cert is not None:
            ctx.load_cert_chain(str(dev_pki / f"{cert}.pem"), str(dev_pki / f"{cert}.key"))
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(encode("peer_hello", server="intruder"))
            tls.sendall(encode("bind", via=1, account=1))
            return tls.recv(65536)

    # No certificate: the handshake fails (TLS 1.3 reports it at the first read).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(None)
    # A user's certificate from the same CA is not a server's: hung up on, unanswered.
    try:
        assert _handshake("alice") == b""
    except (ssl.SSLError, ConnectionError):
        pass
    # A server's certificate (serverAuth and clientAuth) is welcome, and answered: the
    # account bound has no session there.
    decoder = Decoder()
    decoder.feed(_handshake("server"))
    assert decoder.next_frame() == Frame("unbound", {"via": 1})


# -- servers that die -------------------------------------------------------------------------


@pytest.fixture
def processes(
    pki: Pki, tmp_path: Path, postgres_url: str, redis_url: str
) -> Iterator[list[ServerProcess]]:
    """Two server processes of one chat, each with a peer port."""
    started = [
        ServerProcess(
            pki,
            tmp_path / "unused.db",
            port=free_port(),
            extra=(
                "--store",
                postgres_url,
                "--bus",
                redis_url,
                "--peer-port",
                "0",
                "--peer-ca",
                str(pki.ca_pem),
                *UNMETERED_ARGS,
            ),
        )
        for _ in range(2)
    ]
    for server in started:
        server.wait_listening(30)
    yield started
    for server in started:
        server.kill()


def _transfer_under_way(
    pki: Pki, processes: list[ServerProcess]
) -> tuple[RawClient, RawClient, int]:
    alice = RawClient(processes[0].port, pki.ca_pem)
    alice.login("alice")
    bob = RawClient(processes[1].port, pki.ca_pem)
    bob.login("bob")
    data = os.urandom(4 * FILE_CHUNK)
    tid = _offer(alice, bob, data)
    _accept(alice, bob, tid)
    alice.send_raw(encode("file_chunk", data[:FILE_CHUNK], id=tid, offset=0))
    bob.expect("file_chunk", id=tid)
    return alice, bob, tid


def test_recipients_server_killed_fails_the_transfer_for_the_sender(
    pki: Pki, processes: list[ServerProcess]
) -> None:
    alice, bob, tid = _transfer_under_way(pki, processes)
    processes[1].sigkill()
    failed = alice.expect("file_failed", id=tid)
    assert "lost the connection to bob's server" in failed.get("reason")
    assert failed.get("resumable") is True
    rid = alice.send("time")
    alice.expect("time", rid=rid)  # the sender's session is unharmed
    alice.close()
    bob.close()


def test_senders_server_killed_fails_the_transfer_for_the_recipient(
    pki: Pki, processes: list[ServerProcess]
) -> None:
    alice, bob, tid = _transfer_under_way(pki, processes)
    processes[0].sigkill()
    failed = bob.expect("file_failed", id=tid)
    assert "lost the connection to the sender's server" in failed.get("reason")
    assert failed.get("resumable") is True
    rid = bob.send("time")
    bob.expect("time", rid=rid)
    alice.close()
    bob.close()
