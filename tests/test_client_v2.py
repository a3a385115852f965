"""Protocol v2 features of the client against a scripted server over real TLS:
rooms from the welcome, sessions, unread counts and read markers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator

import pytest

from securechat.client.commands import Request, help_lines, parse_input
from securechat.client.core import Event
from securechat.errors import ChatError
from securechat.server.listener import Server
from securechat.ui.linemode import HumanPrinter
from securechat.ui.model import ChatModel
from securechat.wire.protocol import Frame
from tests.conftest import ClientProcess, Pki
from tests.scripted import EventLog, ScriptedServer, start_client, wait_until

STAMP = "2026-12-01T10:00:00.000Z"


@pytest.fixture
def scripted(pki: Pki) -> Iterator[ScriptedServer]:
    server = ScriptedServer(pki)
    yield server
    server.close()


def _room(name: str, unread: int = 0) -> dict[str, object]:
    return {"room": name, "topic": "", "unread": unread, "members": 1}


def test_account_in_no_room_is_ready_at_welcome(scripted: ScriptedServer, pki: Pki) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log)
    peer = scripted.accept()
    peer.greet_and_welcome(
        version=2, join_general=False, **{"rooms": [], "session": 1, "sessions": 1}
    )
    connecting.join(10)  # no joined frame ever comes: ready all the same
    assert not connecting.is_alive() and client.connected
    assert client.rooms == [] and client.current_room is None
    connected = log.wait_for("connected")
    assert (connected["session"], connected["sessions"]) == (1, 1)
    client.close()


def test_rooms_and_current_room_come_from_the_welcome(scripted: ScriptedServer, pki: Pki) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log)
    peer = scripted.accept()
    rooms = [_room("#dev", 2), _room("#general")]
    peer.greet_and_welcome(
        version=2, join_general=False, **{"rooms": rooms, "session": 3, "sessions": 2}
    )
    connecting.join(10)
    assert client.rooms == ["#dev", "#general"] and client.current_room == "#dev"
    for name in ("#dev", "#general"):  # then the server's joins: they do not move the user
        peer.send("joined", room=name, users=["alice"], count=1, topic="")
    log.wait_for("system", event="joined", room="#general")
    assert client.current_room == "#dev"
    client.request("say", {"room": client.current_room, "text": "hi dev"})
    assert peer.expect("say").get("room") == "#dev"
    client.close()


# -- /sessions, /history unread and read markers -------------------------------------------


def test_session_and_unread_commands_parse_into_their_requests() -> None:
    assert parse_input("/sessions", current_room=None) == Request("sessions")
    assert parse_input("/SESSIONS close 3", current_room=None) == Request(
        "session_close", {"session": 3}
    )
    assert parse_input("/history unread", current_room="#a") == Request("unread")
    for bad in ("/sessions close", "/sessions close x", "/sessions open 2"):
        with pytest.raises(ChatError) as refused:
            parse_input(bad, current_room=None)
        assert refused.value.code == "usage"
    assert help_lines("sessions") == (
        "/sessions  list where your account is logged in now",
        "/sessions close N  log out session N (as /sessions numbers them)",
    )


def test_sessions_unread_and_close_answers_in_line_mode(
    scripted: ScriptedServer, client_process: Callable[..., ClientProcess]
) -> None:
    alice = client_process(scripted.port, "alice")
    peer = scripted.accept()
    peer.greet_and_welcome(version=2, join_general=False, **{"rooms": [], "session": 1})
    alice.wait_for("connected")
    alice.type("/sessions", "/history unread", "/sessions close 2", "/sessions close 9")
    listing = [
        {"session": 1, "peer": "127.0.0.1:5001", "since": STAMP, "current": True},
        {"session": 2, "peer": "10.0.0.2:6002", "since": STAMP, "current": False},
    ]
    peer.send("sessions", rid=peer.expect("sessions").get("rid"), sessions=listing)
    unread = {"rooms": [{"room": "#dev", "unread": 3, "first": 41}], "users": []}
    peer.send("unread", rid=peer.expect("unread").get("rid"), **unread)
    close = peer.expect("session_close")
    assert close.get("session") == 2
    peer.send("session_closed", rid=close.get("rid"), session=2)
    again = peer.expect("session_close")
    peer.send("error", rid=again.get("rid"), code="no_such_session", text="no session 9")
    assert alice.wait_for("sessions")["sessions"] == listing
    assert alice.wait_for("unread") == {"type": "unread", **unread}
    closed = alice.wait_for("system", event="session_closed")
    assert (closed["session"], closed["text"]) == (2, "closed session 2")
    assert alice.wait_for("error")["code"] == "no_such_session"


def test_human_output_of_sessions_and_unread() -> None:
    printer = HumanPrinter(io.StringIO())
    listing = [{"session": 1, "peer": "127.0.0.1:5001", "since": STAMP, "current": True}]
    line = printer.format(Event("sessions", {"sessions": listing}))
    assert line.endswith(f"-- sessions: #1 127.0.0.1:5001 since {STAMP} (this one)")
    unread = {"rooms": [{"room": "#dev", "unread": 3, "first": 41}], "users": []}
    line = printer.format(Event("unread", {**unread}))
    assert line.endswith("-- unread: #dev 3 (from message 41)")
    assert printer.format(Event("unread", {"rooms": [], "users": []})).endswith("nothing")


def test_line_mode_marks_what_it_printed_read_at_most_once_a_second(
    scripted: ScriptedServer, client_process: Callable[..., ClientProcess]
) -> None:
    alice = client_process(scripted.port, "alice")
    peer = scripted.accept()
    peer.greet_and_welcome(version=2, join_general=False, **{"rooms": [_room("#general")]})
    alice.wait_for("connected")
    for mid in (1, 2, 3):
        peer.send("message", id=mid, ts=STAMP, room="#general", text=f"m{mid}", **{"from": "bob"})
    peer.send("private", id=4, ts=STAMP, to="alice", text="psst", **{"from": "bob"})
    alice.wait_for("private", text="psst")
    marks: list[tuple[float, Frame]] = []
    while not any(f.get("room") == "#general" and f.get("id") == 3 for _, f in marks):
        read = peer.expect("read")
        marks.append((time.monotonic(), read))
        peer.send(
            "read", rid=read.get("rid"), **{k: v for k, v in read.fields.items() if k != "rid"}
        )
    room_marks = [(t, f.get("id")) for t, f in marks if f.get("room") == "#general"]
    assert [mid for _, mid in room_marks] == sorted({mid for _, mid in room_marks})
    assert len(room_marks) <= 2  # the first at once, the newest when the second is over
    if len(room_marks) == 2:
        assert room_marks[1][0] - room_marks[0][0] >= 0.8
    user_marks = [f for _, f in marks if f.get("user") is not None]
    assert [(f.get("user"), f.get("id")) for f in user_marks] in ([], [("bob", 4)])


def test_an_older_server_is_not_sent_requests_it_does_not_know(
    scripted: ScriptedServer, client_process: Callable[..., ClientProcess]
) -> None:
    alice = client_process(scripted.port, "alice")
    peer = scripted.accept()
    peer.greet_and_welcome(version=1)  # a 0.1 server: features ["chat"] only
    alice.wait_for("connected")
    alice.type("/sessions", "/history unread", "still here")
    assert alice.wait_for("error")["code"] == "unsupported"
    assert alice.wait_for("error")["code"] == "unsupported"
    say = peer.expect("say")  # the first frame after the login: nothing else was sent
    assert say.get("text") == "still here"


def test_sessions_and_unread_against_the_real_server(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    laptop = client_process(port, "alice")
    laptop.wait_for("connected")
    desktop = client_process(port, "alice")
    assert desktop.wait_for("connected")["sessions"] == 2
    laptop.type("/sessions")
    listed = laptop.wait_for("sessions")["sessions"]
    assert [s["current"] for s in listed] == [True, False]
    laptop.type("/history unread")
    assert laptop.wait_for("unread") == {"type": "unread", "rooms": [], "users": []}
    laptop.type(f"/sessions close {listed[1]['session']}")
    laptop.wait_for("system", event="session_closed")
    gone = desktop.wait_for("disconnected")
    assert gone["reason"].startswith("closed from your session")
    assert desktop.proc.wait(10) == 1  # it does not come back
    assert laptop.finish()[0] == 0


def test_read_elsewhere_clears_the_ui_unread_count() -> None:
    model = ChatModel()
    model.apply(Event("connected", {"user": "alice", "server": "s", "tls_version": "TLSv1.3"}))
    for room in ("#dev", "#general"):
        model.apply(Event("system", {"event": "joined", "room": room, "text": "joined"}))
    message = {"id": 5, "ts": STAMP, "room": "#dev", "from": "bob", "text": "hi"}
    model.apply(Event("message", message))
    dev = model.find("#dev")
    assert dev is not None and dev.unread == 1 and model.current is not dev
    model.apply(Event("read", {"room": "#dev", "id": 5, "text": "read elsewhere"}))
    assert dev.unread == 0 and not dev.highlight
    assert dev.newest_id() == 5


def test_session_closed_from_another_session_does_not_come_back(
    scripted: ScriptedServer, pki: Pki
) -> None:
    log = EventLog()
    client, connecting = start_client(pki, scripted.port, log, reconnect_delay=0.05)
    peer = scripted.accept()
    peer.greet_and_welcome(version=2, join_general=False, **{"rooms": []})
    connecting.join(10)
    peer.send("bye", code="session_closed", reason="closed from your session at 10.0.0.2")
    peer.close()
    gone = log.wait_for("disconnected")
    assert gone["reason"] == "closed from your session at 10.0.0.2"
    wait_until(lambda: client.closed, "the client to stop")
    assert not log.of("system", event="reconnecting")
