"""IRC habits the server supports: actions (/me), away (/away) and who is online (/list)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from securechat.server.listener import Server
from securechat.wire.names import MAX_AWAY_CHARS
from tests.conftest import EVENT_TIMEOUT, RawClient, history_page

Factory = Callable[..., RawClient]


def _online(client: RawClient) -> tuple[list[str], dict[str, str]]:
    """The answer to a ``who`` without a room: everyone online, and the away texts."""
    rid = client.send("who")
    answer = client.expect("users", rid=rid)
    assert answer.get("room") is None
    return answer.get("users"), answer.get("away")


def test_hello_announces_actions_away_and_the_online_list(
    server: Server, raw_client: Factory
) -> None:
    hello = raw_client(server.address[1]).hello
    assert {"action", "away", "online"} <= set(hello.get("features"))


def test_an_action_reaches_everyone_flagged_and_history_search_and_export_keep_it(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    rid = alice.send("say", room="#general", text="waves", action=True)
    assert alice.expect("message", rid=rid).get("action") is True
    assert bob.expect("message", text="waves").get("action") is True
    alice.send("msg", to="bob", text="waves at bob", action=True)
    assert bob.expect("private", text="waves at bob").get("action") is True
    alice.send("say", room="#general", text="plain words")
    assert bob.expect("message", text="plain words").get("action") is None

    rows, _ = history_page(bob, room="#general", limit=10)
    assert [(r.get("text"), r.get("action")) for r in rows] == [
        ("waves", True),
        ("plain words", None),
    ]
    rows, _ = history_page(bob, user="alice", limit=10)
    assert [r.get("action") for r in rows] == [True]
    rows, _ = history_page(bob, type_="search", text="waves")
    assert sorted(r.get("text") for r in rows if r.get("action")) == ["waves", "waves at bob"]
    rows, _ = history_page(alice, type_="export", after=0)
    assert [r.get("text") for r in rows if r.get("action")] == ["waves", "waves at bob"]


def test_an_action_flag_that_is_not_a_boolean_is_a_protocol_error(
    server: Server, raw_client: Factory
) -> None:
    alice = raw_client(server.address[1])
    alice.login("alice")
    alice.send("say", room="#general", text="waves", action="yes")
    assert alice.expect("error").get("code") == "bad_frame"


def test_who_without_a_room_lists_everyone_online_with_their_away_texts(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice, bob, carol = raw_client(port), raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    carol.login("carol")
    carol.send("join", room="#elsewhere")
    carol.expect("joined")
    carol.send("part", room="#general")
    carol.expect("parted")
    rid = bob.send("away", text="lunch, back at 2")
    assert bob.expect("system", rid=rid, event="away").get("away") == "lunch, back at 2"
    assert _online(alice) == (["alice", "bob", "carol"], {"bob": "lunch, back at 2"})
    alice.send("who", room="#general")
    answer = alice.expect("users", room="#general")
    assert (answer.get("users"), answer.get("away")) == (
        ["alice", "bob"],
        {"bob": "lunch, back at 2"},
    )
    carol.close()
    deadline = time.monotonic() + EVENT_TIMEOUT
    while _online(alice)[0] != ["alice", "bob"]:
        assert time.monotonic() < deadline, "carol still listed"


def test_away_belongs_to_the_account_and_a_private_message_tells_the_sender(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice, bob, bob2 = raw_client(port), raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    bob2.login("bob")
    rid = bob.send("away", text="in a meeting")
    said = bob.expect("system", event="away", rid=rid)
    assert (said.get("user"), said.get("text")) == ("bob", "you are marked as away: in a meeting")
    assert bob2.expect("system", event="away").get("away") == "in a meeting"
    alice.send("msg", to="bob", text="ping")
    alice.expect("private", text="ping")
    assert not [f for f in alice.frames if f.get("event") == "away"]  # below the echo, as IRC
    notice = alice.expect("system", event="away")
    assert (notice.get("user"), notice.get("away"), notice.get("text")) == (
        "bob",
        "in a meeting",
        "bob is away: in a meeting",
    )
    assert bob.expect("private", text="ping")  # delivered all the same
    bob2.send("away")
    assert bob.expect("system", event="away").get("text") == "you are no longer marked as away"
    alice.send("msg", to="bob", text="ping again")
    alice.expect("private", text="ping again")
    alice.send("msg", to="bob", text="and again")
    alice.expect("private", text="and again")
    assert not [f for f in alice.frames if f.type == "system" and f.get("event") == "away"][1:]


def test_away_ends_with_the_last_session_of_the_account(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice, bob, bob2 = raw_client(port), raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    bob2.login("bob")
    bob.send("away", text="gone fishing")
    bob.expect("system", event="away")
    bob.close()
    assert _online(alice)[1] == {"bob": "gone fishing"}
    bob2.close()
    deadline = time.monotonic() + EVENT_TIMEOUT
    while _online(alice)[0] != ["alice"]:
        assert time.monotonic() < deadline, "bob still listed"
    again = raw_client(port)
    again.login("bob")
    assert _online(alice) == (["alice", "bob"], {})


@pytest.mark.parametrize("text", ["x" * (MAX_AWAY_CHARS + 1), "tab\there"])
def test_an_away_text_too_long_or_with_control_characters_is_refused(
    server: Server, raw_client: Factory, text: str
) -> None:
    bob = raw_client(server.address[1])
    bob.login("bob")
    bob.send("away", text=text)
    assert bob.expect("error").get("code") in ("too_long", "bad_text")
    assert _online(bob) == (["bob"], {})


@pytest.mark.cluster
def test_list_and_away_reach_across_the_servers_of_a_cluster(
    make_server: Callable[..., Server], raw_client: Factory, postgres_url: str, redis_url: str
) -> None:
    first, second = (make_server(store=postgres_url, bus=redis_url).address[1] for _ in range(2))
    alice, bob, bob_here = raw_client(first), raw_client(second), raw_client(first)
    alice.login("alice")
    bob.login("bob")
    deadline = time.monotonic() + EVENT_TIMEOUT
    while _online(alice)[0] != ["alice", "bob"]:
        assert time.monotonic() < deadline, "bob never listed on the first server"
    bob_here.login("bob")
    bob.send("away", text="on the other server")
    assert bob_here.expect("system", event="away").get("away") == "on the other server"
    assert _online(alice) == (["alice", "bob"], {"bob": "on the other server"})
    alice.send("msg", to="bob", text="ping")
    assert alice.expect("system", event="away").get("text") == "bob is away: on the other server"
    bob_here.close()
    bob.close()
    while _online(alice)[0] != ["alice"]:
        assert time.monotonic() < deadline, "bob still listed"
    raw_client(second).login("bob")
    while _online(alice)[0] != ["alice", "bob"]:
        assert time.monotonic() < deadline, "bob never listed again"
    assert _online(alice)[1] == {}  # away ended with bob's last session, on every server
