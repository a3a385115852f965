"""The client core across dropped connections: what it keeps, resends and leaks.

Real servers (in-process or scripted over real TLS) and real client processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securechat.client.sending import Outgoing, SendQueue
from securechat.errors import ChatError
from securechat.server.listener import Server
from tests.conftest import ClientProcess, Pki, free_port
from tests.scripted import EventLog, ScriptedServer, start_client, wait_until


@pytest.fixture
def scripted(pki: Pki) -> Iterator[ScriptedServer]:
    server = ScriptedServer(pki)
    yield server
    server.close()


def test_lines_typed_while_reconnecting_are_sent_in_order_once_back(
    make_server: Callable[..., Server],
    client_process: Callable[..., ClientProcess],
    tmp_path: Path,
) -> None:
    port = free_port()
    db = tmp_path / "chat.db"
    server = make_server(db=db, port=port)
    alice = client_process(port, "alice")
    alice.wait_for("connected")
    server.stop()
    alice.wait_for("disconnected")
    alice.type("first while away", "second while away", "third while away")
    make_server(db=db, port=port)
    alice.wait_for("connected", timeout=20)
    echoes = [
        alice.wait_for("message", text=f"{n} while away") for n in ("first", "second", "third")
    ]
    assert [e["id"] for e in echoes] == sorted(e["id"] for e in echoes)
    assert alice.finish()[0] == 0
    texts = [e.get("text") for e in alice.events if e["type"] == "message"]
    assert not any(t and t.endswith("while away") for t in texts)  # each shown once


def test_eof_while_reconnecting_still_sends_what_was_typed(
    make_server: Callable[..., Server],
    client_process: Callable[..., ClientProcess],
    tmp_path: Path,
) -> None:
    port = free_port()
    db = tmp_path / "chat.db"
    server = make_server(db=db, port=port)
    alice = client_process(port, "alice")
    alice.wait_for("connected")
    server.stop()
    alice.wait_for("disconnected")
    alice.type("typed before eof")
    assert alice.proc.stdin is not None
    alice.proc.stdin.close()
    make_server(db=db, port=port)
    alice.wait_for("message", text="typed before eof", timeout=20)
    assert alice.finish(timeout=20)[0] == 0


def test_send_queue_keeps_order_and_refuses_beyond_its_limit() -> None:
    queue = SendQueue(limit=2)
    queue.add(Outgoing(1, "say", {"text": "a"}))
    queue.add(Outgoing(2, "say", {"text": "b"}))
    with pytest.raises(ChatError) as refused:
        queue.add(Outgoing(3, "say", {"text": "c"}))
    assert refused.value.code == "queue_full"
    assert "not kept" in refused.value.text
    assert queue.holds(2) and not queue.holds(3)
    assert [item.rid for item in queue.due(0.0)] == [1, 2]
    assert len(queue) == 2  # messages wait for their acknowledgement
    queue.acknowledged(1)
    queue.acknowledged(2)
    assert len(queue) == 0


def test_error_for_another_request_during_login_is_not_a_refused_login(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log)
    first = scripted.accept()
    first.greet_and_welcome()
    connecting.join(10)
    first.close()
    log.wait_for("system", event="reconnecting")
    second = scripted.accept()
    second.send("hello", server="scripted", version=1, features=["chat"], auth="password")
    login = second.expect("login")
    # An answer to a frame that overtook the login: not about the login at all.
    second.send("error", rid=int(login.get("rid")) + 1000, code="not_logged_in", text="log in")
    second.send("welcome", rid=login.get("rid"), user="alice")
    second.send("joined", room="#general", users=["alice"], count=1, topic="")
    wait_until(lambda: len(log.of("connected")) == 2, "the second login")
    assert client.connected and not client.closed
    client.close()


def test_not_logged_in_refusal_while_reconnecting_is_retried(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log)
    first = scripted.accept()
    first.greet_and_welcome()
    connecting.join(10)
    first.close()
    second = scripted.accept()
    second.send("hello", server="scripted", version=1, features=["chat"], auth="password")
    login = second.expect("login")
    second.send("error", rid=login.get("rid"), code="not_logged_in", text="log in first")
    second.close()
    third = scripted.accept()
    third.greet_and_welcome()
    wait_until(lambda: len(log.of("connected")) == 2, "the retried login")
    assert not client.closed
    assert not log.of("disconnected", reason="cannot reconnect: log in first")
    client.close()


def _settled() -> bool:
    """One connection's I/O thread and no reconnect in progress."""
    names = [t.name for t in threading.enumerate()]
    return names.count("client-io") == 1 and "reconnect" not in names


def _threads_and_fds() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/fd"))


def test_twenty_reconnects_leave_thread_and_fd_counts_flat(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log, reconnect_delay=0.05)
    peer = scripted.accept()
    peer.greet_and_welcome()
    connecting.join(10)
    before = (0, 0)
    for logins in range(2, 23):
        peer.close()
        peer = scripted.accept()
        peer.greet_and_welcome()
        log.wait_for_count("connected", logins)
        wait_until(lambda: client.connected, f"login {logins}")
        if logins == 2:  # the client's own worker threads have started by now
            wait_until(_settled, "the first reconnect to settle")
            before = _threads_and_fds()
    # Closed connections' threads end a moment after the new one is up.
    wait_until(lambda: _threads_and_fds() <= before, f"{_threads_and_fds()} back to {before}")
    client.close()


def test_gap_fill_follows_a_private_partner_who_renamed(scripted: ScriptedServer, pki: Pki) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log, reconnect_delay=0.05)
    first = scripted.accept()
    first.greet_and_welcome()
    connecting.join(10)
    stamp = "2026-12-01T10:00:00.000Z"
    first.send("private", id=5, ts=stamp, to="alice", text="before", **{"from": "bob"})
    first.send("nick", old="bob", new="robert", text="bob is now known as robert")
    log.wait_for("system", event="nick")
    first.close()
    second = scripted.accept()
    second.greet_and_welcome()
    second.expect("join")
    fill = second.expect("history")
    assert (fill.get("user"), fill.get("after")) == ("robert", 5)
    missed = {"id": 6, "ts": stamp, "to": "alice", "text": "missed", "from": "robert"}
    for copy in (5, 6):  # the gap fill may overlap what was shown: each shows once
        again = {**missed, "id": copy, "text": "before" if copy == 5 else "missed"}
        second.send("private", rid=fill.get("rid"), history=True, more=True, **again)
    second.send("history_end", rid=fill.get("rid"), user="robert", count=2)
    log.wait_for("private", text="missed")
    wait_until(lambda: client.connected, "the second login")
    assert [e["text"] for e in log.of("private")] == ["before", "missed"]
    assert not log.of("error")
    client.close()


def test_gap_fill_for_a_partner_renamed_while_away_shows_no_false_error(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log, reconnect_delay=0.05)
    first = scripted.accept()
    first.greet_and_welcome()
    connecting.join(10)
    stamp = "2026-12-01T10:00:00.000Z"
    first.send("private", id=5, ts=stamp, to="alice", text="before", **{"from": "bob"})
    log.wait_for("private", text="before")
    first.close()  # bob renames to robert while alice is away: she never sees the nick
    second = scripted.accept()
    second.greet_and_welcome()
    fill = second.expect("history")
    assert fill.get("user") == "bob"
    second.send("error", rid=fill.get("rid"), code="no_such_user", text="there is no user bob")
    second.send("system", event="notice", text="after the fill")
    log.wait_for("system", text="after the fill")
    assert not log.of("error")
    client.close()


def test_quiet_requests_are_answered_quietly_and_refused_or_lost_without_a_word(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log, reconnect_delay=0.05)
    first = scripted.accept()
    first.greet_and_welcome()
    connecting.join(10)
    client.request("who", {"room": "#dev"}, quiet=True)
    refused = first.expect("who")
    first.send("error", rid=refused.get("rid"), code="no_such_room", text="there is no room #dev")
    client.request("who", {"room": "#general"}, quiet=True)
    quiet = first.expect("who")
    first.send("users", rid=quiet.get("rid"), room="#general", users=["alice"])
    client.request("who", {"room": "#general"})
    asked = first.expect("who")
    first.send("users", rid=asked.get("rid"), room="#general", users=["alice", "bob"])
    log.wait_for("users", users=["alice", "bob"])
    assert [e.get("quiet") for e in log.of("users")] == [True, None]
    client.request("who", {"room": "#general"}, quiet=True)
    first.expect("who")
    first.close()  # the quiet /who is never answered: not a lost request of the user's
    scripted.accept().greet_and_welcome()
    log.wait_for_count("connected", 2)  # after the drop's notices, in event order
    assert not log.of("error")
    client.close()
