"""Idempotent sending: keys, resends after a reconnect, rate limits, EOF.

The server's side is played over real TLS by a scripted server (protocol v2
features the server on this branch does not have yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from securechat.wire.protocol import Frame
from tests.conftest import ClientProcess, Pki
from tests.scripted import EventLog, ScriptedPeer, ScriptedServer, start_client, wait_until

STAMP = "2026-12-01T10:00:00.000Z"


@pytest.fixture
def scripted(pki: Pki) -> Iterator[ScriptedServer]:
    server = ScriptedServer(pki)
    yield server
    server.close()


def _ack(peer: ScriptedPeer, say: Frame, mid: int, **extra: object) -> None:
    """The server's copy of ``say`` for its sender: the acknowledgement."""
    peer.send(
        "message",
        rid=say.get("rid"),
        id=mid,
        ts=STAMP,
        room=say.get("room"),
        text=say.get("text"),
        key=say.get("key"),
        **{"from": "alice"},
        **extra,
    )


def test_every_message_carries_its_own_key(scripted: ScriptedServer, pki: Pki) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log)
    peer = scripted.accept()
    peer.greet_and_welcome(version=2)
    connecting.join(10)
    client.request("say", {"room": "#general", "text": "one"})
    client.request("msg", {"to": "bob", "text": "two"})
    client.request("who", {"room": "#general"})
    say, msg, who = peer.expect("say"), peer.expect("msg"), peer.expect("who")
    keys = [say.get("key"), msg.get("key")]
    assert all(isinstance(k, str) and 1 <= len(k) <= 64 and k.isalnum() for k in keys)
    assert keys[0] != keys[1]
    assert who.get("key") is None
    client.close()


def test_unacknowledged_messages_are_resent_with_their_keys_and_shown_once(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log, reconnect_delay=0.05)
    first = scripted.accept()
    first.greet_and_welcome(version=2)
    connecting.join(10)
    client.request("say", {"room": "#general", "text": "stored, answer lost"})
    client.request("say", {"room": "#general", "text": "never arrived"})
    lost, _ = first.expect("say"), first.expect("say")
    first.close()  # the server stored the first, but its answer never came back
    second = scripted.accept()
    second.greet_and_welcome(version=2)
    rejoin = second.expect("join")
    # The gap fill brings the stored one back...
    second.send(
        "message",
        rid=rejoin.get("rid"),
        id=7,
        ts=STAMP,
        room="#general",
        text="stored, answer lost",
        history=True,
        **{"from": "alice"},
    )
    second.send("joined", rid=rejoin.get("rid"), room="#general", users=["alice"], count=1)
    again = second.expect("say")
    assert (again.get("text"), again.get("key")) == ("stored, answer lost", lost.get("key"))
    _ack(second, again, 7, duplicate=True)  # ...and the repeat is answered as a duplicate
    fresh = second.expect("say")
    assert fresh.get("text") == "never arrived"
    _ack(second, fresh, 8)
    assert client.wait_for_replies(5)
    log.wait_for("message", text="never arrived")
    shown = [e["text"] for e in log.of("message")]
    assert shown == ["stored, answer lost", "never arrived"]
    assert not log.of("error")
    client.close()


def test_a_version_1_server_is_not_sent_a_message_twice(scripted: ScriptedServer, pki: Pki) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log, reconnect_delay=0.05)
    first = scripted.accept()
    first.greet_and_welcome(version=1)
    connecting.join(10)
    client.request("say", {"room": "#general", "text": "maybe stored"})
    first.expect("say")
    first.close()
    second = scripted.accept()
    second.greet_and_welcome(version=1)
    second.expect("join")
    assert log.wait_for("error", code="unconfirmed")
    client.request("say", {"room": "#general", "text": "after"})
    assert second.expect("say").get("text") == "after"
    client.close()


def test_rate_limited_message_is_resent_after_the_pause_keeping_order(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log)
    peer = scripted.accept()
    peer.greet_and_welcome(version=2)
    connecting.join(10)
    for text in ("a", "b", "c"):
        client.request("say", {"room": "#general", "text": text})
    a, b, c = peer.expect("say"), peer.expect("say"), peer.expect("say")
    _ack(peer, a, 1)
    for refused in (b, c):  # the token bucket is empty: both refused
        peer.send(
            "error", rid=refused.get("rid"), code="rate_limited", retry_after=0.3, text="slow down"
        )
    log.wait_for("system", event="throttled")
    client.request("say", {"room": "#general", "text": "d"})  # typed during the pause
    b2 = peer.expect("say")
    assert (b2.get("text"), b2.get("key")) == ("b", b.get("key"))
    _ack(peer, b2, 2)
    c2 = peer.expect("say")  # only after b's answer: one at a time now
    assert (c2.get("text"), c2.get("key")) == ("c", c.get("key"))
    _ack(peer, c2, 3)
    d = peer.expect("say")
    assert d.get("text") == "d"
    _ack(peer, d, 4)
    assert client.wait_for_replies(5)
    log.wait_for("message", text="d")
    assert [e["text"] for e in log.of("message")] == ["a", "b", "c", "d"]
    assert len(log.of("system", event="throttled")) == 1
    assert not log.of("error")
    client.close()


def test_line_mode_eof_waits_through_a_rate_limit(
    scripted: ScriptedServer, client_process: Callable[..., ClientProcess]
) -> None:
    alice = client_process(scripted.port, "alice")
    peer = scripted.accept()
    peer.greet_and_welcome(version=2)
    alice.wait_for("connected")
    alice.type("last words")
    assert alice.proc.stdin is not None
    alice.proc.stdin.close()
    say = peer.expect("say")
    peer.send("error", rid=say.get("rid"), code="rate_limited", retry_after=0.5, text="slow")
    again = peer.expect("say")
    assert again.get("key") == say.get("key")
    _ack(peer, again, 1)
    # Line mode marks what it printed read; a 0.2 server answers that like any request.
    while (frame := peer.recv()) is not None and frame.type != "quit":
        if frame.type == "read":
            peer.send("read", **frame.fields)
    peer.send("bye", reason="you quit")
    peer.close()
    status, _ = alice.finish()
    assert status == 0
    assert [e["text"] for e in alice.events if e["type"] == "message"] == ["last words"]
    assert not [e for e in alice.events if e["type"] == "error"]


def test_definitive_refusal_is_shown_and_not_retried(scripted: ScriptedServer, pki: Pki) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log)
    peer = scripted.accept()
    peer.greet_and_welcome(version=2)
    connecting.join(10)
    client.request("msg", {"to": "nobody", "text": "hi"})
    msg = peer.expect("msg")
    peer.send("error", rid=msg.get("rid"), code="no_such_user", text="there is no user nobody")
    assert log.wait_for("error", code="no_such_user")
    wait_until(lambda: client.waiting == 0, "the refused message to be dropped")
    assert client.wait_for_replies(1)
    client.close()
