"""Chat state that outlives a connection: rooms, topics, memberships, unread counts,
sequence numbers and idempotent sending, through real servers (killed with -9 where
it matters) and real TLS clients."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from securechat.server.listener import Server
from securechat.wire.protocol import Frame
from tests.conftest import (
    ClientProcess,
    Pki,
    RawClient,
    ServerProcess,
    free_port,
    history_page,
    offline_account,
)

Factory = Callable[..., RawClient]


def _say(client: RawClient, room: str, text: str, **extra: Any) -> Frame:
    rid = client.send("say", room=room, text=text, **extra)
    return client.expect("message", rid=rid)


def _rooms(welcome: Frame) -> dict[str, dict[str, Any]]:
    return {r["room"]: r for r in welcome.get("rooms")}


def test_rooms_topics_and_memberships_survive_kill_9(pki: Pki, tmp_path: Path) -> None:
    db, port = tmp_path / "chat.db", free_port()
    server = ServerProcess(pki, db, port=port)
    try:
        server.wait_listening()
        alice, bob = RawClient(port, pki.ca_pem), RawClient(port, pki.ca_pem)
        alice.login("alice")
        bob.login("bob")
        for client in (alice, bob):
            client.send("join", room="#Dev")
            client.expect("joined", room="#Dev")
        alice.send("topic", room="#dev", text="release planning")
        alice.expect("topic", topic="release planning")
        bob.send("part", room="#general")
        bob.expect("parted", room="#general")
        # State changes are stored in order with messages: once a later message
        # is acknowledged, they are on disk.
        _say(alice, "#Dev", "checkpoint")
        _say(bob, "#Dev", "checkpoint too")
        server.kill()
        alice.close()
        bob.close()

        server = ServerProcess(pki, db, port=port)
        server.wait_listening()
        bob = RawClient(port, pki.ca_pem)
        bob.send("login", user="bob", password="pw")
        rooms = _rooms(bob.expect("welcome"))
        assert set(rooms) == {"#Dev"}
        assert (rooms["#Dev"]["topic"], rooms["#Dev"]["members"]) == ("release planning", 2)
        joined = bob.expect("joined", room="#Dev")
        assert joined.get("topic") == "release planning"
        bob.send("rooms")
        listed = {r["name"]: r for r in bob.expect("rooms").get("rooms")}
        assert listed["#Dev"]["members"] == 2 and listed["#general"]["members"] == 1
        bob.close()
    finally:
        server.kill()


def test_unread_counts_at_login_and_read_markers_shared_by_sessions(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    offline_account(raw_client, port, "bob")
    alice = raw_client(port)
    alice.login("alice")
    ids = [_say(alice, "#general", f"news {i}").get("id") for i in range(3)]
    dm = alice.send("msg", to="bob", text="ping me")
    dm_id = alice.expect("private", rid=dm).get("id")

    laptop = raw_client(port)
    laptop.send("login", user="bob", password="pw")
    welcome = laptop.expect("welcome")
    assert _rooms(welcome)["#general"]["unread"] == 3
    laptop.expect("private", text="ping me", history=True)
    rid = laptop.send("unread")
    summary = laptop.expect("unread", rid=rid)
    assert summary.get("rooms") == [{"room": "#general", "unread": 3, "first": ids[0]}]
    assert summary.get("users") == [{"user": "alice", "unread": 1, "first": dm_id}]

    desktop = raw_client(port)
    desktop.login("bob")
    rid = laptop.send("read", room="#general", id=ids[-1])
    laptop.expect("read", rid=rid, room="#general", id=ids[-1])
    assert desktop.expect("read", room="#general").get("id") == ids[-1]
    rid = laptop.send("read", user="alice", id=dm_id)
    laptop.expect("read", rid=rid)
    rid = desktop.send("unread")
    summary = desktop.expect("unread", rid=rid)
    assert (summary.get("rooms"), summary.get("users")) == ([], [])
    # A read private message is not replayed at the next login.
    late = raw_client(port)
    late.send("login", user="bob", password="pw")
    assert _rooms(late.expect("welcome"))["#general"]["unread"] == 0
    rid = late.send("time")
    seen = [f for f in late.frames if f.type == "private"]
    late.expect("time", rid=rid)
    assert not [f for f in late.frames if f.type == "private"] and not seen


def test_sequence_numbers_count_stored_messages_of_each_conversation(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice = raw_client(port)
    alice.login("alice")
    seqs = [_say(alice, "#general", f"line {i}").get("seq") for i in range(3)]
    unstored = _say(alice, "#general", "off the record", nolog=True)
    assert unstored.get("seq") is None and unstored.get("stored") is False
    seqs.append(_say(alice, "#general", "line 3").get("seq"))
    assert seqs == [1, 2, 3, 4]
    bob = raw_client(port)
    bob.login("bob")
    rid = alice.send("msg", to="bob", text="a conversation of its own")
    assert alice.expect("private", rid=rid).get("seq") == 1
    rows, _ = history_page(bob, room="#general", after_seq=2, limit=10)
    assert [(f.get("seq"), f.get("text")) for f in rows] == [(3, "line 2"), (4, "line 3")]


def test_a_repeated_message_key_is_acknowledged_with_the_original(pki: Pki, tmp_path: Path) -> None:
    db, port = tmp_path / "chat.db", free_port()
    server = ServerProcess(pki, db, port=port)
    try:
        server.wait_listening()
        alice, bob = RawClient(port, pki.ca_pem), RawClient(port, pki.ca_pem)
        alice.login("alice")
        bob.login("bob")
        first = _say(alice, "#general", "exactly once", key="k-1")
        again = _say(alice, "#general", "exactly once", key="k-1")
        assert (again.get("id"), again.get("seq"), again.get("duplicate")) == (
            first.get("id"),
            first.get("seq"),
            True,
        )
        assert first.get("key") == "k-1" and first.get("duplicate") is None
        _say(alice, "#general", "marker")
        texts = []
        while (frame := bob.expect("message")).get("text") != "marker":
            texts.append(frame.get("text"))
        assert texts == ["exactly once"]
        server.kill()
        alice.close()

        # After a crash the server still knows the key: a client that never saw
        # its acknowledgement can send the line again safely.
        server = ServerProcess(pki, db, port=port)
        server.wait_listening()
        alice = RawClient(port, pki.ca_pem)
        alice.login("alice")
        after = _say(alice, "#general", "exactly once", key="k-1")
        assert (after.get("id"), after.get("duplicate")) == (first.get("id"), True)
        rows, _ = history_page(alice, room="#general", limit=50)
        assert [f.get("text") for f in rows].count("exactly once") == 1
        alice.close()
        bob.close()
    finally:
        server.kill()


def test_malformed_message_key_is_a_protocol_error(server: Server, raw_client: Factory) -> None:
    alice = raw_client(server.address[1])
    alice.login("alice")
    alice.send("say", room="#general", text="hi", key="no spaces allowed")
    assert alice.expect("error").get("code") == "bad_frame"


def test_line_mode_typing_through_a_kill_9_stores_every_line_exactly_once(
    pki: Pki, tmp_path: Path, client_process: Callable[..., ClientProcess]
) -> None:
    db, port = tmp_path / "chat.db", free_port()
    server = ServerProcess(pki, db, port=port)
    try:
        server.wait_listening()
        typist = client_process(port, "typist")
        typist.wait_for("connected")
        lines = [f"line {i:03d}" for i in range(80)]
        for i, line in enumerate(lines):  # 20 lines a second: over the budget of 10
            if i == 12:  # the server hangs: the next lines leave unacknowledged
                os.kill(server.proc.pid, signal.SIGSTOP)
            if i == 17:  # and dies with them in flight, and comes back
                server.kill()
                server = ServerProcess(pki, db, port=port)
                server.wait_listening()
            typist.type(line)
            time.sleep(0.05)  # the typing pace under test, not a wait for a condition
        status, stderr = typist.finish(timeout=60)
        assert status == 0, stderr
        stored = [
            text
            for (text,) in sqlite3.connect(db).execute(
                "SELECT text FROM messages WHERE text LIKE 'line %' ORDER BY id"
            )
        ]
        assert sorted(stored) == lines, f"{len(stored)} stored"
        shown = [e["text"] for e in typist.events if e["type"] == "message"]
        assert sorted(set(shown)) == lines and len(shown) == len(lines)
        # The unacknowledged lines went again, with their keys: nothing was left unconfirmed.
        assert not [e for e in typist.events if e.get("code") == "unconfirmed"]
    finally:
        server.kill()
