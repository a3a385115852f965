"""Protocol v2 features of the client against a scripted server over real TLS:
rooms from the welcome, sessions, unread counts and read markers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Pki
from tests.scripted import EventLog, ScriptedServer, start_client


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
