"""Chat behaviour in both modes: one server on SQLite, and a cluster of two servers on
PostgreSQL and Redis with the clients spread over them, so the two cannot drift apart.

Every test takes ``chat``: a list of ports, one per server, and ``chat.at(i)``
picks the server of the i-th client (in single mode, always the one server).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from securechat.server.listener import Server
from securechat.wire.protocol import Frame
from tests.conftest import EVENT_TIMEOUT, RawClient, history_page

Factory = Callable[..., RawClient]


class Chat:
    """The servers of one chat; clients are spread over them round robin."""

    def __init__(self, mode: str, servers: list[Server]) -> None:
        self.mode = mode
        self.servers = servers
        self.ports = [s.address[1] for s in servers]

    def at(self, index: int) -> int:
        """The port for the ``index``-th client."""
        return self.ports[index % len(self.ports)]


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.cluster)])
def chat(request: pytest.FixtureRequest, make_server: Callable[..., Server]) -> Chat:
    if request.param == "single":
        return Chat("single", [make_server()])
    store = request.getfixturevalue("postgres_url")
    bus = request.getfixturevalue("redis_url")
    servers = [make_server(store=store, bus=bus) for _ in range(2)]
    return Chat("cluster", servers)


def _login(raw_client: Factory, chat: Chat, index: int, name: str) -> RawClient:
    client = raw_client(chat.at(index))
    client.login(name)
    return client


def _say(client: RawClient, room: str, text: str, **extra: Any) -> Frame:
    rid = client.send("say", room=room, text=text, **extra)
    return client.expect("message", rid=rid)


def _wait_for_room(client: RawClient, name: str) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        rid = client.send("rooms")
        if name in [r["name"] for r in client.expect("rooms", rid=rid).get("rooms")]:
            return
        assert time.monotonic() < deadline, f"{name} never appeared"
        time.sleep(0.02)


def _give_role(chat: Chat, name: str, role: str) -> None:
    """What ``securechat-admin user role`` does, on the chat's store."""
    store = chat.servers[0].hub.store
    account = store.find_account(name)
    assert account is not None
    store.set_role(account.id, role)


def _who(client: RawClient, room: str) -> list[str]:
    rid = client.send("who", room=room)
    return list(client.expect("users", rid=rid).get("users"))


def test_room_messages_cross_servers_in_one_order(chat: Chat, raw_client: Factory) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    carol = _login(raw_client, chat, 2, "carol")
    for n in range(5):
        _say(alice, "#general", f"a{n}")
        _say(bob, "#general", f"b{n}")
    for reader in (alice, bob, carol):
        seen = [
            (f.get("seq"), f.get("text"))
            for f in reader.frames
            if f.type == "message" and f.get("room") == "#general"
        ]
        while len(seen) < 10:
            frame = reader.expect("message", room="#general")
            seen.append((frame.get("seq"), frame.get("text")))
        seqs = [s for s, _ in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10, seen
        assert [t for _, t in seen] == [x for n in range(5) for x in (f"a{n}", f"b{n}")]


def test_private_messages_reach_every_session_online_or_not(
    chat: Chat, raw_client: Factory
) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    bob_too = _login(raw_client, chat, 0, "bob")  # a second session, on the other server
    rid = alice.send("msg", to="bob", text="psst")
    ack = alice.expect("private", rid=rid)
    for session in (bob, bob_too):
        got = session.expect("private", text="psst")
        assert (got.get("from"), got.get("id"), got.get("seq")) == ("alice", ack.get("id"), 1)
    bob.send("quit")
    bob_too.send("quit")
    bob.wait_closed()
    bob_too.wait_closed()
    alice.send("msg", to="bob", text="while you were away")
    alice.expect("private", text="while you were away")
    back = raw_client(chat.at(1))
    back.send("login", user="bob", password="pw")
    assert back.expect("private", text="while you were away").get("from") == "alice"


def test_who_rooms_joins_parts_and_topics_are_the_same_everywhere(
    chat: Chat, raw_client: Factory
) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    alice.expect("system", event="join", user="bob")
    assert _who(alice, "#general") == _who(bob, "#general") == ["alice", "bob"]
    bob.send("join", room="#Dev")
    bob.expect("joined", room="#Dev")
    _wait_for_room(alice, "#Dev")  # in a cluster, news of it takes a moment
    alice.send("join", room="#dev")
    alice.expect("joined", room="#Dev")
    bob.expect("system", event="join", room="#Dev", user="alice")
    bob.send("topic", room="#dev", text="release friday")
    assert alice.expect("topic", room="#Dev").get("topic") == "release friday"
    rid = alice.send("rooms")
    rooms = {r["name"]: r for r in alice.expect("rooms", rid=rid).get("rooms")}
    assert rooms["#Dev"]["users"] == 2 and rooms["#Dev"]["topic"] == "release friday"
    alice.send("part", room="#dev")
    alice.expect("parted", room="#Dev")
    bob.expect("system", event="part", room="#Dev", user="alice")
    assert _who(bob, "#dev") == ["bob"]
    alice.send("quit")
    alice.wait_closed()
    bob.expect("system", event="quit", room="#general", user="alice")
    assert _who(bob, "#general") == ["bob"]


def test_renames_and_history_settings_apply_everywhere(chat: Chat, raw_client: Factory) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    alice_too = _login(raw_client, chat, 1, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    alice.send("nick", name="alicia")
    alice.expect("nick", new="alicia")
    assert bob.expect("nick", old="alice").get("new") == "alicia"
    assert alice_too.expect("nick", old="alice").get("text") == "you are now alicia"
    rid = bob.send("msg", to="alicia", text="hi alicia")
    bob.expect("private", rid=rid)
    assert alice.expect("private", text="hi alicia").get("from") == "bob"
    rid = bob.send("msg", to="alice", text="old name")
    assert bob.expect("error", rid=rid).get("code") == "no_such_user"
    rid = alice.send("history_mode", keep=False)
    alice.expect("history_status", rid=rid)
    said = _say(alice, "#general", "not kept")
    assert said.get("stored") is False
    assert bob.expect("message", text="not kept").get("stored") is False


def test_history_and_search_see_messages_committed_by_every_server(
    chat: Chat, raw_client: Factory
) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    for n in range(3):
        _say(alice, "#general", f"alpha {n}")
        _say(bob, "#general", f"beta {n}")
    rows, _ = history_page(bob, room="#general", limit=10)
    assert [r.get("seq") for r in rows] == [1, 2, 3, 4, 5, 6]
    found, _ = history_page(alice, type_="search", text="beta", limit=10)
    assert sorted(r.get("text") for r in found) == ["beta 0", "beta 1", "beta 2"]


def test_read_markers_are_shared_by_sessions_on_every_server(
    chat: Chat, raw_client: Factory
) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    bob_too = _login(raw_client, chat, 2, "bob")
    said = _say(alice, "#general", "read me")
    rid = bob.send("read", room="#general", id=said.get("id"))
    bob.expect("read", rid=rid)
    assert bob_too.expect("read", room="#general").get("id") == said.get("id")


def test_a_login_with_resume_points_replays_the_gap_before_anything_live(
    chat: Chat, raw_client: Factory
) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    first = _say(alice, "#general", "seen")
    for n in range(3):
        _say(alice, "#general", f"missed {n}")
    bob.close()
    back = raw_client(chat.at(1))
    back.send("login", user="bob", password="pw", replay=False, since={"#General": first.get("id")})
    _say(alice, "#general", "live")
    texts = []
    while len(texts) < 4:
        texts.append(back.expect("message", room="#general").get("text"))
    assert texts == ["missed 0", "missed 1", "missed 2", "live"]
    bad = raw_client(chat.at(0))
    bad.send("login", user="bob", password="pw", since={"#general": "yesterday"})
    assert bad.expect("error").get("code") == "bad_frame"


def test_sessions_on_every_server_are_listed_and_can_be_closed(
    chat: Chat, raw_client: Factory
) -> None:
    first = _login(raw_client, chat, 0, "alice")
    second = _login(raw_client, chat, 1, "alice")
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:  # in a cluster, news of the other session takes a moment
        rid = first.send("sessions")
        listed = first.expect("sessions", rid=rid).get("sessions")
        if len(listed) == 2:
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.02)
    numbers = {s["session"] for s in listed}
    assert len(numbers) == 2  # unique across servers
    (mine,) = [s for s in listed if s["current"]]
    (other,) = [s for s in listed if not s["current"]]
    assert other["peer"] and other["since"]
    rid = first.send("session_close", session=other["session"])
    first.expect("session_closed", rid=rid)
    closed = second.wait_closed()
    assert [f.get("code") for f in closed if f.type == "bye"] == ["session_closed"]
    assert mine["session"] != other["session"]


def test_forget_nolog_export_and_unread_counts_hold_on_every_server(
    chat: Chat, raw_client: Factory
) -> None:
    alice = _login(raw_client, chat, 0, "alice")
    alice_too = _login(raw_client, chat, 1, "alice")
    bob = _login(raw_client, chat, 1, "bob")
    for n in range(3):
        _say(alice, "#general", f"regret {n}")
    _say(bob, "#general", "bob stays")
    unlogged = _say(alice_too, "#general", "off the record", nolog=True)
    assert unlogged.get("stored") is False
    assert bob.expect("message", text="off the record").get("stored") is False
    exported, _ = history_page(alice_too, type_="export", after=0)
    assert [r.get("text") for r in exported] == [f"regret {n}" for n in range(3)] + ["bob stays"]
    rid = alice_too.send("forget")  # asked on the other server than the one that stored them
    assert alice_too.expect("forgotten", rid=rid).get("count") == 3
    rows, _ = history_page(bob, room="#general", limit=10)
    assert [r.get("text") for r in rows] == ["bob stays"]
    found, _ = history_page(bob, type_="search", text="regret", limit=10)
    assert found == []
    bob.send("quit")
    bob.wait_closed()
    for n in range(2):
        _say(alice, "#general", f"while bob is away {n}")
    back = raw_client(chat.at(0))  # the other server than bob's last
    back.send("login", user="bob", password="pw")
    welcome = back.expect("welcome")
    assert {r["room"]: r["unread"] for r in welcome.get("rooms")} == {"#general": 2}


def test_a_ban_on_one_server_disconnects_the_user_on_another(
    chat: Chat, raw_client: Factory
) -> None:
    _login(raw_client, chat, 0, "boss")
    mallory = _login(raw_client, chat, 1, "mallory")
    _give_role(chat, "boss", "admin")
    admin = _login(raw_client, chat, 0, "boss")  # the role applies from a new login
    rid = admin.send("ban", user="mallory", duration="2h", reason="flooding")
    admin.expect("done", rid=rid)
    bye = mallory.expect("bye")
    assert bye.get("code") == "banned" and "flooding" in str(bye.get("reason"))
    again = raw_client(chat.at(1))
    again.send("login", user="mallory", password="pw")
    assert again.expect("error").get("code") == "banned"


def test_a_kick_on_one_server_ends_every_session_on_every_server(
    chat: Chat, raw_client: Factory
) -> None:
    _login(raw_client, chat, 0, "boss")
    here = _login(raw_client, chat, 0, "bob")
    there = _login(raw_client, chat, 1, "bob")
    _give_role(chat, "boss", "moderator")
    boss = _login(raw_client, chat, 0, "boss")
    rid = boss.send("kick", user="bob", reason="calm down")
    boss.expect("done", rid=rid)
    for session in (here, there):
        bye = session.expect("bye")
        assert bye.get("code") == "kicked" and "calm down" in str(bye.get("reason"))
