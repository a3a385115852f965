"""End to end: real client processes against a real server over TLS."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.server.listener import Server
from tests.conftest import ClientProcess, Pki, free_port, server_argv


def test_two_users_chat_in_general(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice = client_process(port, "alice")
    alice.wait_for("connected", user="alice")
    bob = client_process(port, "bob")
    connected = bob.wait_for("connected", user="bob")
    assert connected["tls_version"] in ("TLSv1.2", "TLSv1.3")
    alice.wait_for("system", event="join", user="bob")
    alice.type("hello bob")
    got = bob.wait_for("message", text="hello bob")
    assert got["from"] == "alice" and got["room"] == "#general"
    echo = alice.wait_for("message", text="hello bob")
    assert echo["id"] == got["id"]
    bob.type("hi alice")
    assert alice.wait_for("message", text="hi alice")["from"] == "bob"
    assert alice.finish()[0] == 0
    assert bob.finish()[0] == 0


def test_private_message_stays_between_two_users(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice, bob, carol = (client_process(port, n) for n in ("alice", "bob", "carol"))
    for proc, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        proc.wait_for("connected", user=name)
    alice.type("/msg bob the eagle lands at noon")
    got = bob.wait_for("private", text="the eagle lands at noon")
    assert (got["from"], got["to"]) == ("alice", "bob")
    alice.wait_for("private", text="the eagle lands at noon")
    alice.type("public marker")
    carol.wait_for("message", text="public marker")
    assert carol.finish()[0] == 0
    assert not any("eagle" in str(e) for e in carol.events)


def test_wrong_ca_is_refused_with_advice(
    server: Server, client_process: Callable[..., ClientProcess], other_ca_pem: Path
) -> None:
    proc = client_process(server.address[1], "alice", ca=other_ca_pem)
    status, stderr = proc.finish()
    assert status == 3
    assert "certificate verification failed" in stderr
    assert "--ca" in stderr
    assert "Traceback" not in stderr
    error = next(e for e in proc.events if e["type"] == "error")
    assert error["code"] == "tls"


def test_wrong_host_name_is_refused(
    make_server: Callable[..., Server], client_process: Callable[..., ClientProcess], pki: Pki
) -> None:
    # The certificate names localhost, 127.0.0.1 and ::1, but not 127.0.0.2.
    server = make_server(host="127.0.0.2")
    proc = ClientProcess(
        [
            "--ca",
            str(pki.ca_pem),
            "--host",
            "127.0.0.2",
            "--port",
            str(server.address[1]),
            "--user",
            "alice",
            "--json",
        ],
        password="pw",
        env={},
    )
    try:
        status, stderr = proc.finish()
    finally:
        proc.kill()
    assert status == 3
    assert "not valid for '127.0.0.2'" in stderr
    assert "--host" in stderr


def test_wrong_password_is_refused_and_first_session_survives(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice = client_process(port, "alice", "right")
    alice.wait_for("connected")
    alice.type("/quit")
    assert alice.finish()[0] == 0
    bob = client_process(port, "bob")
    bob.wait_for("connected")
    impostor = client_process(port, "alice", "wrong")
    status, stderr = impostor.finish()
    assert status == 4
    assert "wrong password" in stderr
    assert impostor.events[0]["code"] == "bad_password"
    bob.type("still fine")
    bob.wait_for("message", text="still fine")


def test_password_comes_from_file_when_env_is_unset(
    server: Server, client_process: Callable[..., ClientProcess], tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    port = server.address[1]
    first = client_process(port, "dora", None, extra=("--password-file", str(secret)))
    first.wait_for("connected")
    assert first.finish()[0] == 0
    again = client_process(port, "dora", "from-a-file")
    again.wait_for("connected")
    assert again.finish()[0] == 0


def test_no_password_source_is_a_usage_error(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    status, stderr = client_process(server.address[1], "alice", None).finish()
    assert status == 2
    assert "SECURECHAT_PASSWORD" in stderr


def test_plaintext_peer_is_dropped_while_clients_keep_chatting(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice, bob = client_process(port, "alice"), client_process(port, "bob")
    alice.wait_for("connected")
    bob.wait_for("connected")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"NICK mallory\r\nUSER m 0 * :m\r\n")
        alice.type("during the intrusion")
        bob.wait_for("message", text="during the intrusion")
        try:
            assert plain.recv(4096) == b""
        except ConnectionResetError:
            pass
    bob.type("after the intrusion")
    alice.wait_for("message", text="after the intrusion")


def test_overlong_line_is_refused_locally_and_nothing_is_sent(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice, bob = client_process(port, "alice"), client_process(port, "bob")
    alice.wait_for("connected")
    bob.wait_for("connected")
    alice.type("z" * 4001, "short one")
    assert alice.wait_for("error")["code"] == "too_long"
    bob.wait_for("message", text="short one")
    assert not any(e.get("text") == "z" * 4001 for e in bob.events)


def test_join_then_plain_line_goes_to_the_new_room(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice, bob = client_process(port, "alice"), client_process(port, "bob")
    alice.wait_for("connected")
    bob.wait_for("connected")
    bob.type("/join #dev")
    bob.wait_for("system", event="joined", room="#dev")
    alice.type("/join #dev", "hello dev", "/nick alicia", "/who")
    assert bob.wait_for("message", text="hello dev")["room"] == "#dev"
    assert bob.wait_for("system", event="nick")["new"] == "alicia"
    assert alice.wait_for("users", room="#dev")["users"] == ["alicia", "bob"]


# -- the server as a process --------------------------------------------------------


def _server_process(pki: Pki, tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        server_argv(pki, tmp_path / "s.db", port, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            return
    raise AssertionError(f"server did not start: {proc.wait(5)}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully_and_tells_clients(
    pki: Pki, tmp_path: Path, client_process: Callable[..., ClientProcess], signum: int
) -> None:
    port = free_port()
    proc = _server_process(pki, tmp_path, port)
    try:
        _wait_listening(proc)
        alice = client_process(port, "alice")
        alice.wait_for("connected")
        started = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 5
        gone = alice.wait_for("disconnected")
        assert "shutting down" in gone["reason"]
        assert alice.finish()[0] == 1
    finally:
        proc.kill()
        proc.wait(5)


def test_restarted_server_binds_at_once_and_keeps_accounts(
    pki: Pki, tmp_path: Path, client_process: Callable[..., ClientProcess]
) -> None:
    port = free_port()
    for attempt in range(2):
        proc = _server_process(pki, tmp_path, port)
        try:
            _wait_listening(proc)
            alice = client_process(port, "alice", "first-password")
            alice.wait_for("connected")
            # A text of this round's own: the last round's line is replayed at login,
            # and waiting for it would let SIGTERM beat this line to the server.
            alice.type(f"hello {attempt}")
            alice.wait_for("message", text=f"hello {attempt}")
            proc.send_signal(signal.SIGTERM)  # with a client still connected: TIME_WAIT
            assert proc.wait(10) == 0, attempt
            # This round's alice is gone before the next server starts: were she to
            # reconnect to it first, the next round's alice would be name_in_use.
            alice.wait_for("disconnected")
            assert alice.finish()[0] == 1  # EOF while reconnecting, nothing left to send
        finally:
            proc.kill()
            proc.wait(5)
    proc = _server_process(pki, tmp_path, port)
    try:
        _wait_listening(proc)
        impostor = client_process(port, "alice", "other-password")
        assert impostor.finish()[0] == 4
    finally:
        proc.kill()
        proc.wait(5)


def test_port_in_use_exits_with_one_line_reason(pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = _server_process(pki, tmp_path, port)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert f"port {port}" in stderr and "in use" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("broken", ["missing", "garbage"])
def test_unreadable_certificate_exits_with_one_line_reason(
    pki: Pki, tmp_path: Path, broken: str
) -> None:
    cert = tmp_path / "server.pem"
    if broken == "garbage":
        cert.write_text("not a certificate\n")
    argv = server_argv(pki, tmp_path / "s.db", free_port())
    argv[argv.index("--cert") + 1] = str(cert)
    proc = subprocess.run(
        argv,
        capture_output=True,
        check=False,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2
    assert str(cert) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_database_that_is_not_sqlite_is_refused_and_left_alone(pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "precious.txt"
    db.write_text("my thesis, do not overwrite\n")
    proc = subprocess.run(
        server_argv(pki, db, free_port()),
        capture_output=True,
        check=False,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2
    assert "not an SQLite database" in proc.stderr
    assert db.read_text() == "my thesis, do not overwrite\n"


def test_overlong_input_line_is_refused_whole(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice, bob = client_process(port, "alice"), client_process(port, "bob")
    alice.wait_for("connected")
    bob.wait_for("connected")
    alice.type("x" * 200_000 + " TAIL of the long line", "after it")
    assert alice.wait_for("error")["code"] == "too_long"
    bob.wait_for("message", text="after it")
    assert not any("TAIL" in str(e.get("text")) for e in bob.events)


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_mutual_tls_without_client_certificate_is_a_tls_failure(
    make_server: Callable[..., Server],
    client_process: Callable[..., ClientProcess],
    pki: Pki,
    tls: str,
) -> None:
    server = make_server(client_ca=pki.ca_pem, tls_min=tls)
    status, stderr = client_process(server.address[1], "alice").finish()
    assert status == 3
    assert "--cert" in stderr


def test_mutual_tls_client_logs_in_without_password(
    make_server: Callable[..., Server], client_process: Callable[..., ClientProcess], pki: Pki
) -> None:
    server = make_server(client_ca=pki.ca_pem)
    alice = client_process(
        server.address[1],
        "alice",
        None,
        extra=("--cert", str(pki.alice_pem), "--key", str(pki.alice_key)),
    )
    assert alice.wait_for("connected")["user"] == "alice"
    alice.type("/nick mallory")
    assert alice.wait_for("error")["code"] == "forbidden"
    assert alice.finish()[0] == 0
