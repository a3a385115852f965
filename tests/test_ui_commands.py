"""The irssi/WeeChat commands in the full-screen client and line mode: /msg, /query,
/close, /clear, /me, /j, /names, /list and /away.

Model and parser tests feed lines and events straight in; app tests run the real
Application headless over a real client and server (see tests/test_ui.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from securechat.client.commands import Local, Request, help_lines, parse_input
from securechat.client.core import Event
from securechat.errors import ChatError
from securechat.server.listener import Server
from securechat.ui.actions import CloseConversation, OpenConversation, interpret
from securechat.ui.linemode import HumanPrinter
from securechat.ui.render import line_fragments

from .conftest import RawClient
from .test_ui import (
    ENTER,
    TAB,
    UI,
    bob_joins,
    complete,
    event,
    logged_in,
    message,
    plain,
    private,
    run_ui,
    texts,
)

__all__ = ["run_ui"]  # the fixture, used by name

# -- parsing ----------------------------------------------------------------------------


def test_j_and_names_are_join_and_who() -> None:
    assert parse_input("/j #dev", current_room="#general") == Request(
        "join", {"room": "#dev"}, waits=True
    )
    assert parse_input("/names", current_room="#general") == Request("who", {"room": "#general"})
    assert parse_input("/NAMES #dev", current_room=None) == Request("who", {"room": "#dev"})
    assert help_lines("j") == ("/j #room  short for /join",)


def test_list_asks_who_without_a_room_and_away_with_or_without_text() -> None:
    assert parse_input("/list", current_room=None) == Request("who")
    assert parse_input("/away lunch, back at 2", current_room=None) == Request(
        "away", {"text": "lunch, back at 2"}
    )
    assert parse_input("/away", current_room=None) == Request("away")
    with pytest.raises(ChatError):
        parse_input("/away " + "x" * 201, current_room=None)


def test_me_is_an_action_in_the_room_or_the_conversation() -> None:
    model = logged_in("bob")
    assert interpret("/me waves", model) == Request(
        "say", {"room": "#general", "text": "waves", "action": True}
    )
    model.switch(model.open_private("bob"))
    assert interpret("/me waves at bob", model) == Request(
        "msg", {"to": "bob", "text": "waves at bob", "action": True}
    )
    with pytest.raises(ChatError, match="empty"):
        interpret("/me", model)


def test_query_opens_and_switches_and_sends_text_if_given() -> None:
    model = logged_in()
    assert interpret("/query bob", model) == OpenConversation("bob")
    assert interpret("/query bob hi there", model) == OpenConversation(
        "bob", then=Request("msg", {"to": "bob", "text": "hi there"})
    )
    with pytest.raises(ChatError, match="usage"):
        interpret("/query", model)


def test_close_parts_a_room_closes_a_conversation_and_refuses_the_server_buffer() -> None:
    model = logged_in("bob")
    assert interpret("/close", model) == Request("part", {"room": "#general"}, waits=True)
    model.switch(model.open_private("bob"))
    assert interpret("/close", model) == CloseConversation()
    model.switch(model.server)
    with pytest.raises(ChatError, match="the server buffer cannot be closed"):
        interpret("/close", model)
    assert interpret("/clear", model) == Local("clear")


def test_tab_completes_the_new_commands_and_their_arguments() -> None:
    model = logged_in("bob")
    model.known_rooms["#dev"] = "#dev"
    assert complete(model, "/que") == ["query "]
    assert complete(model, "/query b") == ["bob "]
    assert complete(model, "/j #d") == ["#dev "]
    assert complete(model, "/names #g") == ["#general "]
    assert complete(model, "/me waves at b") == ["bob"]


# -- the model ----------------------------------------------------------------------------


def test_an_action_is_shown_as_a_star_and_the_sender() -> None:
    model = logged_in("bob")
    model.apply(message(5, "waves", action=True))
    line = model.current.lines[-1]
    assert line.action
    assert plain(line_fragments(line, model)).endswith("* bob waves")


def test_who_and_list_answers_show_who_is_away() -> None:
    model = logged_in("bob")
    model.apply(event("users", room="#general", users=["alice", "bob"]))  # the join's own who
    model.apply(event("users", room="#general", users=["alice", "bob"], away={"bob": "lunch"}))
    assert texts(model)[-1] == "in #general: alice, bob (away: lunch)"
    model.apply(event("users", users=["alice", "bob", "carol"], away={}))
    assert texts(model)[-1] == "online: alice, bob, carol"


def test_away_notices_go_to_the_conversation_and_own_changes_where_the_user_looks() -> None:
    model = logged_in("bob")
    model.apply(event("system", event="away", user="bob", away="lunch", text="bob is away: lunch"))
    assert texts(model, "bob") == ["bob is away: lunch"]
    assert model.current.name == "#general"
    model.apply(
        event("system", event="away", user="alice", away="out", text="you are marked as away: out")
    )
    assert texts(model)[-1] == "you are marked as away: out"


def test_away_is_set_again_after_a_reconnect_and_not_once_back() -> None:
    model = logged_in()
    mine = {"event": "away", "user": "alice", "text": "you are marked as away: out"}
    model.apply(event("system", **mine, away="out"))
    model.apply(event("disconnected", reason="server shutting down"))
    outcome = model.apply(event("connected", user="alice", server="s", tls_version="TLSv1.3"))
    assert Request("away", {"text": "out"}) in outcome.requests
    model.apply(event("system", **{**mine, "text": "you are no longer marked as away"}, away=""))
    outcome = model.apply(event("connected", user="alice", server="s", tls_version="TLSv1.3"))
    assert not [r for r in outcome.requests if r.type == "away"]


def test_own_private_message_sent_from_elsewhere_marks_its_buffer() -> None:
    model = logged_in("bob")
    model.apply(private(7, "psst", sender="alice", to="bob"))
    bob = model.find("bob")
    assert bob is not None and model.current.name == "#general"
    assert bob.unread == 1 and bob.marker == 0


def test_close_shows_the_buffer_before_and_clear_empties_only_the_screen() -> None:
    model = logged_in("bob")
    model.apply(message(3, "old news"))
    general = model.current
    model.switch(model.open_private("bob"))
    model.close(model.current)
    assert model.find("bob") is None and model.current is general
    general.clear()
    assert texts(model) == []
    model.apply(message(3, "old news"))  # a replay of what was cleared stays away
    assert texts(model) == []


# -- line mode ----------------------------------------------------------------------------


def test_line_mode_shows_actions_away_and_the_online_list() -> None:
    printer = HumanPrinter(io.StringIO())
    said = printer.format(Event("message", message(5, "waves", action=True).data))
    assert said.endswith("#general * bob waves")
    whispered = printer.format(Event("private", private(6, "waves", sender="bob", to="alice").data))
    assert whispered.endswith("*bob* waves")
    acted = Event("private", {**private(6, "nods", sender="bob", to="alice").data, "action": True})
    assert printer.format(acted).endswith("*bob* * bob nods")
    listed = printer.format(Event("users", {"users": ["alice", "bob"], "away": {"bob": "lunch"}}))
    assert listed.endswith("-- online: alice, bob (away: lunch)")


# -- the app ------------------------------------------------------------------------------


def test_msg_sends_without_switching_and_marks_the_conversation(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = bob_joins(server, raw_client)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/msg bob are you there?" + ENTER)
        await ui.until(lambda: ui.model.find("bob") is not None, "bob's buffer")
        conversation = ui.model.find("bob")
        assert conversation is not None
        await ui.until(lambda: conversation.unread == 1, "the activity marker")
        assert ui.model.current.name == "#general"
        assert [line.text for line in conversation.lines] == ["are you there?"]

    run_ui(server, scenario)
    assert bob.expect("private", text="are you there?").get("from") == "alice"


def test_query_switches_and_sends_me_shows_a_star_and_close_and_clear_work(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = bob_joins(server, raw_client)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/me waves" + ENTER)
        await ui.until(lambda: "* alice waves" in ui.pane(), "the action")
        ui.type("/query bob hello" + ENTER)
        await ui.until(lambda: "<alice> hello" in ui.pane(), "the query and its message")
        assert ui.model.current.name == "bob"
        ui.type("/close" + ENTER)
        await ui.until(lambda: ui.model.find("bob") is None, "the closed conversation")
        assert ui.model.current.name == "#general"
        ui.type("/clear" + ENTER)
        await ui.until(lambda: "* alice waves" not in ui.pane(), "a clear screen")
        ui.type("/close" + ENTER)
        await ui.until(lambda: ui.model.find("#general") is None, "#general parted")
        ui.type("/j #dev" + ENTER)
        await ui.until(lambda: ui.model.current.name == "#dev", "/j joined #dev")

    run_ui(server, scenario)
    assert bob.expect("message", text="waves").get("action") is True
    bob.expect("private", text="hello")


def test_away_shows_in_list_and_names_and_a_message_to_an_away_user_says_so(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = bob_joins(server, raw_client)
    bob.send("away", text="lunch")
    bob.expect("system", event="away")

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/names" + ENTER)
        await ui.until(lambda: "in #general: alice, bob (away: lunch)" in ui.pane(), "/names")
        ui.type("/list" + ENTER)
        await ui.until(lambda: "online: alice, bob (away: lunch)" in ui.pane(), "/list")
        ui.type("/query bob are you back?" + ENTER)
        await ui.until(lambda: "bob is away: lunch" in ui.pane(), "the away notice")
        ui.type("/away brb" + ENTER)
        await ui.until(lambda: "you are marked as away: brb" in ui.pane(), "own away")
        ui.type("/away" + ENTER)
        await ui.until(lambda: "you are no longer marked as away" in ui.pane(), "back")
        ui.type("/awa" + TAB)
        await ui.until(lambda: ui.app.input.text == "/away ", "/away completed")

    run_ui(server, scenario)
