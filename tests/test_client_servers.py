"""Several servers for one client (cluster mode): --host entries, their order, failover.

The first connection and the failover run real servers (in-process, or a process
killed with SIGKILL) and real client processes; nothing is mocked.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from securechat.client.cli import build_parser, main, server_addresses
from securechat.client.core import ChatClient
from securechat.client.servers import ServerAddress, ServerList, parse_server, resolve
from securechat.errors import ConfigError
from securechat.server.listener import Server
from securechat.tls import client_context
from tests.conftest import ClientProcess, Pki, RawClient, ServerProcess, free_port, offline_account
from tests.scripted import EventLog, ScriptedServer


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("chat.example", "chat.example", 7443),
        ("chat.example:7000", "chat.example", 7000),
        ("127.0.0.1:7000", "127.0.0.1", 7000),
        ("[::1]:7000", "::1", 7000),
        ("[::1]", "::1", 7443),
        ("::1", "::1", 7443),
        ("[2001:db8::7]:443", "2001:db8::7", 443),
    ],
)
def test_host_entries_take_their_own_port_or_the_default(text: str, host: str, port: int) -> None:
    assert parse_server(text, default_port=7443) == ServerAddress(host, port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":7000",
        "chat.example:",
        "chat.example:0",
        "chat.example:65536",
        "chat.example:https",
        "chat.example:\u0667\u0660\u0660\u0660",  # digits, but not ASCII ones
        "[::1",
        "[::1]7000",
        "[]:7000",
        "[chat.example]:7000",
        "[127.0.0.1]:7000",
        "chat.example:70:00",
        "chat..example",
        f"{'x' * 64}.example:7000",
    ],
)
def test_malformed_host_entries_are_refused_saying_which(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--host "):
        parse_server(text, default_port=7443)


def test_an_ipv6_entry_is_written_back_in_brackets() -> None:
    assert str(ServerAddress("::1", 7000)) == "[::1]:7000"
    assert str(ServerAddress("chat.example", 7000)) == "chat.example:7000"


def test_host_may_be_repeated_and_port_is_the_default_of_entries_without_one() -> None:
    args = build_parser().parse_args(["--host", "a.example", "--host", "b.example:7001"])
    assert server_addresses(args) == [
        ServerAddress("a.example", 7443),
        ServerAddress("b.example", 7001),
    ]
    args = build_parser().parse_args(["--port", "7100"])
    assert server_addresses(args) == [ServerAddress("localhost", 7100)]


def test_a_malformed_host_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "chat.example:https", "--user", "alice"]) == 2
    assert "--host 'chat.example:https'" in capsys.readouterr().err


def test_a_name_counts_as_every_address_it_resolves_to() -> None:
    server = ServerAddress("localhost", 7443)
    found = socket.getaddrinfo("localhost", 7443, type=socket.SOCK_STREAM)
    endpoints = resolve(server)
    assert [e.sockaddr for e in endpoints] == [info[4] for info in found]
    # Each address keeps the name: it stays the TLS server name.
    assert {e.server for e in endpoints} == {server}


def test_rounds_start_after_the_server_last_logged_in_on() -> None:
    first, second, third = (ServerAddress("127.0.0.1", port) for port in (7001, 7002, 7003))
    servers = ServerList([first, second, third, ServerAddress("nowhere.invalid", 7004)])
    endpoints, unresolved = servers.round()
    assert [e.server for e in endpoints] == [first, second, third]
    assert [why.split(": ")[0] for why in unresolved] == ["nowhere.invalid:7004"]
    servers.current = endpoints[1]
    assert [e.server for e in servers.round()[0]] == [third, first, second]


def test_first_connection_skips_an_address_nobody_listens_on(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    live, dead = server.address[1], free_port()
    alice = client_process(live, "alice", hosts=(f"127.0.0.1:{dead}", "localhost"))
    connected = alice.wait_for("connected")
    assert connected["server"] == f"localhost:{live}"
    assert connected["address"] == f"127.0.0.1:{live}"
    alice.type("hello from the second address")
    alice.wait_for("message", text="hello from the second address")
    assert alice.finish()[0] == 0


def _ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_address_with_its_port_in_brackets_connects_and_verifies(
    make_server: Callable[..., Server], client_process: Callable[..., ClientProcess]
) -> None:
    port = make_server(host="::1").address[1]
    alice = client_process(7443, "alice", hosts=(f"[::1]:{port}",))
    connected = alice.wait_for("connected")  # the certificate lists ::1
    assert (connected["server"], connected["address"]) == (f"[::1]:{port}", f"[::1]:{port}")
    assert alice.finish()[0] == 0


def test_when_no_address_answers_the_error_names_each_and_why(
    client_process: Callable[..., ClientProcess],
) -> None:
    first, second = free_port(), free_port()
    alice = client_process(first, "alice", hosts=("127.0.0.1", f"localhost:{second}"))
    status, stderr = alice.finish()
    assert status == 5
    (line,) = stderr.splitlines()
    assert f"127.0.0.1:{first}: Connection refused; " in line
    assert f"localhost:{second} (127.0.0.1): Connection refused; " in line
    error = next(e for e in alice.events if e["type"] == "error")
    assert error["code"] == "connect"


def test_a_refused_login_is_not_a_reason_to_try_the_next_server(
    make_server: Callable[..., Server],
    raw_client: Callable[..., RawClient],
    client_process: Callable[..., ClientProcess],
    tmp_path: Path,
) -> None:
    first = make_server(db=tmp_path / "first.db").address[1]
    second = make_server(db=tmp_path / "second.db").address[1]
    offline_account(raw_client, first, "alice")  # password "pw"; second has no alice yet
    alice = client_process(first, "alice", "wrong", hosts=("localhost", f"localhost:{second}"))
    # Had it tried the second server, the wrong password would have registered alice there.
    assert alice.finish()[0] == 4


@pytest.fixture
def foreign_server(
    make_server: Callable[..., Server], tmp_path: Path
) -> Iterator[tuple[Server, Path]]:
    """A server whose certificate another CA signed; that CA's PEM file."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "foreign-ca.pem"))
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "foreign.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "foreign.key"))
    server = make_server(
        db=tmp_path / "foreign.db", cert=tmp_path / "foreign.pem", key=tmp_path / "foreign.key"
    )
    yield server, tmp_path / "foreign-ca.pem"


def test_a_certificate_that_does_not_verify_is_not_a_reason_to_try_the_next_server(
    server: Server,
    foreign_server: tuple[Server, Path],
    client_process: Callable[..., ClientProcess],
) -> None:
    other, other_ca = foreign_server
    hosts = ("localhost", f"localhost:{other.address[1]}")
    # Only the second server's certificate verifies against this CA.
    alice = client_process(server.address[1], "alice", ca=other_ca, hosts=hosts)
    status, stderr = alice.finish()
    assert status == 3
    assert "certificate verification failed" in stderr


@pytest.mark.timeout(40)
def test_a_killed_server_is_replaced_by_the_next_one_at_once(
    pki: Pki,
    tmp_path: Path,
    make_server: Callable[..., Server],
    raw_client: Callable[..., RawClient],
    client_process: Callable[..., ClientProcess],
) -> None:
    doomed = ServerProcess(pki, tmp_path / "doomed.db", port=free_port())
    try:
        first = doomed.wait_listening()
        second = make_server(db=tmp_path / "second.db").address[1]
        alice = client_process(first, "alice", hosts=("localhost", f"localhost:{second}"))
        assert alice.wait_for("connected")["server"] == f"localhost:{first}"
        alice.type("before the crash")
        assert alice.wait_for("message", text="before the crash")["id"] == 1
        # Servers of one cluster share their message ids; these two databases do
        # not, so the second server's count goes first: the client would take its
        # message 1 for the one it has shown already.
        bob = raw_client(second)
        bob.login("bob")
        bob.send("say", room="#general", text="on the second server")
        bob.expect("message", text="on the second server")
        doomed.kill()
        alice.wait_for("disconnected")
        noticed = time.monotonic()
        # The second server has a database of its own: alice registers there anew.
        assert alice.wait_for("connected")["server"] == f"localhost:{second}"
        took = time.monotonic() - noticed
        changed = alice.wait_for("system", event="server_changed")
        assert changed["server"] == f"localhost:{second}"
        assert changed["text"].endswith(f"instead of localhost:{first} (127.0.0.1)")
        # No backing off before the other server was tried.
        delays = [e["delay"] for e in alice.events if e.get("event") == "reconnecting"]
        assert delays == [0.0]
        assert took < 3.0, f"failover took {took:.1f} s"
        alice.type("after the failover")
        alice.wait_for("message", text="after the failover")
        assert alice.finish()[0] == 0
    finally:
        doomed.kill()


@pytest.fixture
def scripted_pair(pki: Pki) -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    pair = ScriptedServer(pki), ScriptedServer(pki)
    yield pair
    for server in pair:
        server.close()


def test_reconnecting_tries_every_other_server_in_turn_before_backing_off(
    scripted_pair: tuple[ScriptedServer, ScriptedServer], pki: Pki
) -> None:
    first, third = scripted_pair
    servers = [ServerAddress("localhost", p) for p in (first.port, free_port(), third.port)]
    log = EventLog()
    # A first delay no test would wait for: any backing off would time the test out.
    client = ChatClient(
        servers=servers,
        context=client_context(ca=pki.ca_pem),
        user="alice",
        password="pw",
        on_event=log,
        reconnect_delay=60.0,
    )
    connecting = threading.Thread(target=client.connect, daemon=True)
    connecting.start()
    try:
        dropping = first.accept()
        dropping.greet_and_welcome()
        connecting.join(10)
        dropping.close()  # the first server drops us: the dead one next, then the third
        third.accept().greet_and_welcome()
        changed = log.wait_for("system", event="server_changed")
        assert changed["server"] == f"localhost:{third.port}"
        log.wait_for_count("connected", 2)
        assert [e["delay"] for e in log.of("system", event="reconnecting")] == [0.0]
        # Dropped by the third, the client comes round to the first again.
        third.peers[0].close()
        first.accept().greet_and_welcome()
        log.wait_for_count("connected", 3)
        assert log.of("connected")[-1]["server"] == f"localhost:{first.port}"
        assert [e["delay"] for e in log.of("system", event="reconnecting")] == [0.0, 0.0]
    finally:
        client.close()
