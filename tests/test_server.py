"""The server through real TLS sockets: chat rules, identities and bad input."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

import pytest

from securechat.server.listener import Server
from securechat.wire.protocol import MAX_BODY, PREFIX, PROTOCOL_VERSION, encode
from tests.conftest import TLS_VERSIONS, UNMETERED, Pki, RawClient, offline_account

Factory = Callable[..., RawClient]


def _chat_still_works(server: Server, raw_client: Factory) -> None:
    """Two fresh users can still talk: the server is serving everyone else."""
    port = server.address[1]
    a_name, b_name = f"check{os.urandom(3).hex()}", f"check{os.urandom(3).hex()}"
    a = raw_client(port)
    a.login(a_name)
    b = raw_client(port)
    b.login(b_name)
    a.send("say", room="#general", text="still here?")
    assert b.expect("message", text="still here?").get("from") == a_name


# -- accounts and identity -------------------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_first_login_registers_and_later_logins_need_that_password(
    server: Server, raw_client: Factory, version: ssl.TLSVersion
) -> None:
    port = server.address[1]
    first = raw_client(port, tls_version=version)
    welcome = first.login("Alice", "correct horse")
    assert welcome.get("user") == "Alice"
    assert welcome.get("tls_version") == first.sock.version()
    first.send("quit")
    first.wait_closed()

    wrong = raw_client(port, tls_version=version)
    wrong.send("login", user="alice", password="wrong")
    error = wrong.expect("error")
    assert error.get("code") == "bad_password"
    assert "wrong password" in error.get("text")
    assert wrong.wait_closed() == []

    again = raw_client(port, tls_version=version)
    assert again.login("ALICE", "correct horse").get("user") == "Alice"


def test_second_session_of_an_account_gets_everything_the_first_does(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    laptop = raw_client(port)
    first = laptop.login("alice", "pw")
    desktop = raw_client(port)
    second = desktop.login("ALICE", "pw")
    assert (first.get("sessions"), second.get("sessions")) == (1, 2)
    assert second.get("user") == "alice"
    bob = raw_client(port)
    bob.login("bob")
    bob.send("say", room="#general", text="are you there, alice?")
    for session in (laptop, desktop):
        assert session.expect("message", text="are you there, alice?").get("from") == "bob"
    rid = laptop.send("msg", to="bob", text="yes, on my laptop")
    laptop.expect("private", rid=rid)
    copy = desktop.expect("private", text="yes, on my laptop")
    assert (copy.get("from"), copy.get("to"), copy.get("rid")) == ("alice", "bob", None)
    bob.expect("private", text="yes, on my laptop")
    rid = desktop.send("sessions")
    listed = desktop.expect("sessions", rid=rid).get("sessions")
    assert [s["current"] for s in listed] == [False, True]
    rid = desktop.send("session_close", session=listed[0]["session"])
    desktop.expect("session_closed", rid=rid)
    assert "closed from your session" in laptop.expect("bye").get("reason")
    laptop.wait_closed()
    bob.send("say", room="#general", text="still there?")
    desktop.expect("message", text="still there?")


def test_wrong_password_for_a_connected_account_is_refused_without_disturbing_it(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice = raw_client(port)
    alice.login("alice", "pw")
    intruder = raw_client(port)
    intruder.send("login", user="ALICE", password="not-her-password")
    assert intruder.expect("error").get("code") == "bad_password"
    intruder.wait_closed()
    bob = raw_client(port)
    bob.login("bob")
    bob.send("say", room="#general", text="are you there, alice?")
    assert alice.expect("message", text="are you there, alice?").get("from") == "bob"


@pytest.mark.parametrize("name", ["", "a" * 33, "al ice", "al/ice", "ålice", "#alice"])
def test_invalid_user_names_are_refused(server: Server, raw_client: Factory, name: str) -> None:
    client = raw_client(server.address[1])
    client.send("login", user=name, password="pw")
    assert client.expect("error").get("code") == "invalid_name"


def test_empty_password_is_refused_with_a_hint(server: Server, raw_client: Factory) -> None:
    client = raw_client(server.address[1])
    client.send("login", user="alice", password="")
    error = client.expect("error")
    assert error.get("code") == "bad_password"
    assert "SECURECHAT_PASSWORD" in error.get("text")


def test_requests_before_login_are_refused(server: Server, raw_client: Factory) -> None:
    client = raw_client(server.address[1])
    client.send("say", room="#general", text="hi")
    assert client.expect("error").get("code") == "not_logged_in"


def test_mutual_tls_identity_is_the_certificate_common_name(
    make_server: Callable[..., Server], raw_client: Factory, pki: Pki
) -> None:
    server = make_server(client_ca=pki.ca_pem)
    port = server.address[1]
    alice = raw_client(port, cert=(pki.alice_pem, pki.alice_key))
    assert alice.hello.get("auth") == "certificate"
    alice.send("login", user="alice")
    assert alice.expect("welcome").get("user") == "alice"
    alice.send("nick", name="mallory")
    assert alice.expect("error").get("code") == "forbidden"

    other = raw_client(port, cert=(pki.alice_pem, pki.alice_key))
    other.send("login", user="bob")
    assert other.expect("error").get("code") == "cert_mismatch"


def test_mutual_tls_refuses_clients_without_certificate(
    make_server: Callable[..., Server], pki: Pki
) -> None:
    server = make_server(client_ca=pki.ca_pem)
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    with (
        socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        # TLS 1.3 reports a missing client certificate on the first read.
        tls.recv(1)
        tls.recv(1)


# -- chat -----------------------------------------------------------------------------


def test_room_message_reaches_members_and_echo_acknowledges_sender(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    rid = alice.send("say", room="#general", text="hello, world ✓")
    echo = alice.expect("message", text="hello, world ✓")
    assert echo.get("rid") == rid
    got = bob.expect("message", text="hello, world ✓")
    assert got.get("rid") is None
    assert got.get("id") == echo.get("id")
    assert got.get("from") == "alice"
    assert got.get("ts").endswith("Z")


def test_private_message_is_seen_only_by_sender_and_recipient(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice, bob, carol = raw_client(port), raw_client(port), raw_client(port)
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        client.login(name)
    alice.send("msg", to="BOB", text="just between us")
    got = bob.expect("private", text="just between us")
    assert (got.get("from"), got.get("to")) == ("alice", "bob")
    alice.expect("private", text="just between us")
    alice.send("say", room="#general", text="marker")
    carol.expect("message", text="marker")
    assert not [f for f in carol.frames if f.type == "private"]


def test_private_message_to_unknown_user_is_refused(server: Server, raw_client: Factory) -> None:
    alice = raw_client(server.address[1])
    alice.login("alice")
    alice.send("msg", to="nobody", text="hi")
    assert alice.expect("error").get("code") == "no_such_user"


def test_private_message_to_offline_user_waits_for_their_next_login(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    offline_account(raw_client, port, "bob")
    alice = raw_client(port)
    alice.login("alice")
    rid = alice.send("msg", to="bob", text="while you were out")
    sent = alice.expect("private", rid=rid)
    assert sent.get("stored") is True
    for _ in range(2):  # both of bob's sessions get it, and see it as unread
        bob = raw_client(port)
        welcome = bob.login("bob")
        assert welcome.get("sessions") >= 1
        got = bob.expect("private", text="while you were out")
        assert (got.get("from"), got.get("id"), got.get("history")) == (
            "alice",
            sent.get("id"),
            True,
        )


def test_private_message_that_cannot_be_stored_needs_the_recipient_online(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    bob = raw_client(port)
    bob.login("bob")
    bob.send("history_mode", keep=False)
    bob.expect("history_status")
    bob.send("quit")
    bob.wait_closed()
    alice = raw_client(port)
    alice.login("alice")
    alice.send("msg", to="bob", text="hi")
    error = alice.expect("error")
    assert error.get("code") == "not_online"
    assert "history turned off" in error.get("text")


def test_message_over_4000_characters_is_refused_not_truncated(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    rid = alice.send("say", room="#general", text="x" * 4001)
    error = alice.expect("error", rid=rid)
    assert error.get("code") == "too_long"
    alice.send("say", room="#general", text="é" * 4000)
    assert len(bob.expect("message", text="é" * 4000).get("text")) == 4000
    assert not [f for f in bob.frames if f.type == "message" and f.get("text") == "x" * 4001]


def test_control_characters_in_messages_are_refused(server: Server, raw_client: Factory) -> None:
    alice = raw_client(server.address[1])
    alice.login("alice")
    alice.send("say", room="#general", text="clear \x1b[2J screen")
    assert alice.expect("error").get("code") == "bad_text"


def test_join_part_who_rooms_and_topic(server: Server, raw_client: Factory) -> None:
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    alice.send("join", room="#Dev")
    joined = alice.expect("joined")
    assert (joined.get("room"), joined.get("users")) == ("#Dev", ["alice"])
    bob.send("join", room="#dev")
    assert bob.expect("joined").get("users") == ["alice", "bob"]
    assert alice.expect("system", event="join").get("user") == "bob"
    alice.send("topic", room="#dev", text="release planning")
    assert bob.expect("topic").get("topic") == "release planning"
    bob.send("who", room="#dev")
    assert bob.expect("users").get("users") == ["alice", "bob"]
    bob.send("rooms")
    rooms = bob.expect("rooms").get("rooms")
    assert {"name": "#Dev", "users": 2, "members": 2, "topic": "release planning"} in rooms
    bob.send("part", room="#dev")
    bob.expect("parted", room="#Dev")
    assert alice.expect("system", event="part").get("user") == "bob"
    bob.send("say", room="#dev", text="still here?")
    assert bob.expect("error").get("code") == "not_in_room"


def test_rename_keeps_account_and_tells_room(server: Server, raw_client: Factory) -> None:
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice", "secret")
    bob.login("bob")
    alice.send("nick", name="bob")
    assert alice.expect("error").get("code") == "name_in_use"
    alice.send("nick", name="alicia")
    assert alice.expect("nick").get("new") == "alicia"
    assert bob.expect("nick").get("old") == "alice"
    alice.send("say", room="#general", text="new name")
    assert bob.expect("message", text="new name").get("from") == "alicia"
    alice.send("quit")
    alice.wait_closed()
    again = raw_client(port)
    assert again.login("alicia", "secret").get("user") == "alicia"


def test_time_answers_with_utc_timestamp(server: Server, raw_client: Factory) -> None:
    client = raw_client(server.address[1])
    client.login("alice")
    client.send("time")
    assert client.expect("time").get("ts").endswith("Z")


def test_message_ids_increase(server: Server, raw_client: Factory) -> None:
    client = raw_client(server.address[1])
    client.login("alice")
    ids = []
    for i in range(5):
        client.send("say", room="#general", text=f"m{i}")
        ids.append(client.expect("message", text=f"m{i}").get("id"))
    assert ids == sorted(ids) and len(set(ids)) == 5


# -- bad input: one line logged, that connection closed, everyone else fine --------


def _plain_socket(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends before closing (a reset counts as closing)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_plaintext_http_peer_is_dropped_while_others_chat(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    with _plain_socket(port) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert b"HTTP" not in _read_until_closed(plain)  # never a plaintext answer
    _chat_still_works(server, raw_client)


def test_silent_peer_does_not_delay_other_handshakes(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(handshake_timeout=1.0)
    port = server.address[1]
    silent = [_plain_socket(port) for _ in range(5)]
    started = time.monotonic()
    _chat_still_works(server, raw_client)
    assert time.monotonic() - started < 1.0
    for sock in silent:
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed by the handshake timeout
        sock.close()


def test_peer_that_never_logs_in_is_closed(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(login_timeout=0.5)
    client = raw_client(server.address[1])
    assert client.wait_closed(5) == []


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("invalid utf-8", PREFIX.pack(PROTOCOL_VERSION, 0, 4, 0) + b"\xff\xfe{}"),
        ("invalid json", PREFIX.pack(PROTOCOL_VERSION, 0, 5, 0) + b"{nope"),
        ("unknown type", encode("launch_missiles")),
        ("forged sender", encode("say", room="#general", text="hi", **{"from": "bob"})),
        ("wrong version", PREFIX.pack(99, 0, 2, 0) + b"{}"),
        ("oversized body", PREFIX.pack(PROTOCOL_VERSION, 0, 2, MAX_BODY + 1)),
        ("bad field type", encode("say", room=["#general"], text="hi")),
    ],
)
def test_malformed_frame_gets_error_and_closes_only_that_connection(
    server: Server, raw_client: Factory, name: str, payload: bytes
) -> None:
    port = server.address[1]
    bystander = raw_client(port)
    bystander.login("bystander")
    bad = raw_client(port)
    bad.login("mallory")
    bad.send_raw(payload)
    frames = bad.wait_closed()
    errors = [f for f in frames if f.type == "error"]
    assert errors and errors[0].get("code") == "bad_frame", frames
    bystander.expect("system", event="quit", user="mallory")
    _chat_still_works(server, raw_client)


def test_peer_vanishing_mid_frame_is_cleaned_up(server: Server, raw_client: Factory) -> None:
    port = server.address[1]
    watcher = raw_client(port)
    watcher.login("watcher")
    half = raw_client(port)
    half.login("half")
    frame = encode("say", room="#general", text="never finished")
    half.send_raw(frame[: len(frame) // 2])
    half.sock.close()
    watcher.expect("system", event="quit", user="half")
    assert not [f for f in watcher.frames if f.get("text") == "never finished"]


def test_client_that_stops_reading_is_disconnected_without_stalling_others(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(outbox_limit=64 * 1024, **UNMETERED)
    port = server.address[1]
    stuck = raw_client(port, recv_buffer=4096)
    stuck.login("stuck")
    talker, listener = raw_client(port), raw_client(port)
    talker.login("talker")
    listener.login("listener")
    text = "y" * 3000
    started = time.monotonic()
    # Keep talking until the stuck client's outbox overflows (after the kernel's
    # socket buffers fill); the listener must get every message meanwhile.
    for i in range(2000):
        talker.send("say", room="#general", text=f"{i} {text}")
        talker.expect("message", text=f"{i} {text}")
        listener.expect("message", text=f"{i} {text}")
        if any(f.get("user") == "stuck" for f in listener.frames if f.type == "system"):
            break
    else:
        pytest.fail("the stuck client was never disconnected")
    assert time.monotonic() - started < 30
    quit_notice = next(f for f in listener.frames if f.get("user") == "stuck")
    assert "too slow" in quit_notice.get("text")


def test_unanswered_pings_drop_the_peer(
    make_server: Callable[..., Server], raw_client: Factory, pki: Pki
) -> None:
    server = make_server(ping_interval=0.3, ping_timeout=0.3)
    port = server.address[1]
    watcher = raw_client(port)
    watcher.login("watcher")
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    mute = ctx.wrap_socket(_plain_socket(port), server_hostname="localhost")
    mute.sendall(encode("login", user="mute", password="pw"))
    # Never read again, so never answer a ping.
    started = time.monotonic()
    watcher.expect("system", event="quit", user="mute", timeout=5)
    assert time.monotonic() - started >= 0.5
    assert "ping timeout" in watcher.frames[-1].get("text")
    mute.close()


def test_answered_pings_keep_an_idle_peer_connected(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(ping_interval=0.2, ping_timeout=0.2)
    client = raw_client(server.address[1])
    client.login("idle")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        with pytest.raises(TimeoutError):
            client.recv_frame(timeout=0.1)  # answers pings as they come
    client.send("time")
    client.expect("time")


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_threads_and_descriptors_return_to_baseline_after_bad_peers(
    server: Server, raw_client: Factory, pki: Pki
) -> None:
    port = server.address[1]
    _chat_still_works(server, raw_client)  # warm up the login pool
    time.sleep(0.2)
    threads, fds = threading.active_count(), _fd_count()
    for _ in range(10):
        with _plain_socket(port) as plain:
            plain.sendall(b"\x16\x03\x01garbage" * 10)
            _read_until_closed(plain)
        bad = RawClient(port, pki.ca_pem)
        bad.send_raw(struct.pack("!BBHI", 1, 0, 0xFFFF, 0))
        bad.wait_closed()
        bad.close()
    deadline = time.monotonic() + 5
    while (threading.active_count(), _fd_count()) != (threads, fds):
        assert time.monotonic() < deadline, (threading.active_count(), _fd_count(), threads, fds)
        time.sleep(0.05)


def test_long_room_list_is_split_over_frames_not_refused(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    owner = raw_client(port)
    owner.login("owner")
    for i in range(60):
        owner.send("join", room=f"#room{i:02d}")
        owner.expect("joined")
        owner.send("topic", room=f"#room{i:02d}", text="t" * 300)
        owner.expect("topic")
    asker = raw_client(port)
    asker.login("asker")
    rid = asker.send("rooms")
    parts = [asker.expect("rooms", rid=rid)]
    while parts[-1].get("more"):
        parts.append(asker.expect("rooms", rid=rid))
    assert len(parts) > 1
    names = [r["name"] for p in parts for r in p.get("rooms")]
    assert len(names) == 61 and "#general" in names


def test_quit_reason_cannot_carry_control_characters(server: Server, raw_client: Factory) -> None:
    port = server.address[1]
    watcher, leaver = raw_client(port), raw_client(port)
    watcher.login("watcher")
    leaver.login("leaver")
    leaver.send("quit", reason="bye\x1b[2J\x07 all")
    notice = watcher.expect("system", event="quit", user="leaver")
    assert notice.get("text") == "leaver left (quit: bye[2J all)"


def test_wrong_password_for_online_user_does_not_reveal_presence(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice = raw_client(port)
    alice.login("alice", "right")
    stranger = raw_client(port)
    stranger.send("login", user="alice", password="guess")
    assert stranger.expect("error").get("code") == "bad_password"


def test_null_topic_text_reads_the_topic(server: Server, raw_client: Factory) -> None:
    client = raw_client(server.address[1])
    client.login("alice")
    client.send("topic", room="#general", text=None, **{"from": None})
    assert client.expect("topic").get("topic") == ""


def test_former_name_stays_reserved_for_its_account(server: Server, raw_client: Factory) -> None:
    port = server.address[1]
    bob = raw_client(port)
    bob.login("bob", "bobs-password")
    bob.send("nick", name="robert")
    bob.expect("nick")
    impostor = raw_client(port)
    impostor.send("login", user="Bob", password="anything")
    error = impostor.expect("error")
    assert error.get("code") == "name_reserved" and "reserved" in error.get("text")
    other = raw_client(port)
    other.login("carol")
    other.send("nick", name="BOB")
    assert other.expect("error").get("code") == "name_in_use"
    bob.send("nick", name="bob")  # the owner may take it back
    assert bob.expect("nick").get("new") == "bob"
