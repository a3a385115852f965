"""The full-screen client: its model, rendering, completion, and the real Application.

Model, render and completion tests feed events and documents straight in.
Application tests run the real prompt_toolkit Application headless (keys from
a pipe, output to a dummy or a string) over a real ChatClient connected to a
real server, with a second party as a RawClient. Every wait has its own
timeout, and the app is told to exit in ``finally``, so a broken UI fails fast
instead of hanging.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.data_structures import Point, Size
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples, to_plain_text
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.mouse_events import MouseButton, MouseEvent, MouseEventType
from prompt_toolkit.output import DummyOutput, Output
from prompt_toolkit.output.vt100 import Vt100_Output

import securechat.ui
from securechat.client.commands import COMMANDS, Local, Request
from securechat.client.core import ChatClient, Event
from securechat.client.fileinfo import format_size
from securechat.client.servers import ServerAddress
from securechat.errors import ChatError
from securechat.server.listener import Server
from securechat.tls import client_context
from securechat.ui.actions import OpenConversation, interpret
from securechat.ui.app import ChatApp
from securechat.ui.buffers import MAX_BUFFER_LINES, InputHistory
from securechat.ui.complete import COMMAND_NAMES, ChatCompleter
from securechat.ui.model import ChatModel
from securechat.ui.render import (
    MARKER_TEXT,
    STYLE,
    format_duration,
    line_fragments,
    nick_style,
    pane_fragments,
    progress_fragments,
    status_fragments,
    title_fragments,
)
from securechat.ui.status import Transfer

from .conftest import Pki, RawClient

WAIT = 5.0  # seconds any one UI condition may take
HOSTILE = "pwn \x1b]0;pwned\x07 \x1b[2J cleared \u202eevil\u202c"

# Keys as a terminal sends them.
ENTER, TAB, CTRL_N, CTRL_P, PAGE_UP = "\r", "\t", "\x0e", "\x10", "\x1b[5~"


def alt(key: str) -> str:
    return "\x1b" + key


# -- helpers -------------------------------------------------------------------------------


def event(type_: str, **data: Any) -> Event:
    return Event(type_, data)


def message(
    mid: int, text: str, *, room: str = "#general", sender: str = "bob", **extra: Any
) -> Event:
    return event(
        "message",
        id=mid,
        ts="2026-11-21T18:00:00.000Z",
        room=room,
        text=text,
        **{"from": sender},
        **extra,
    )


def private(mid: int, text: str, *, sender: str, to: str) -> Event:
    return event(
        "private", id=mid, ts="2026-11-21T18:00:00.000Z", to=to, text=text, **{"from": sender}
    )


def joined(room: str, *users: str) -> Event:
    return event(
        "system",
        event="joined",
        room=room,
        users=list(users),
        count=len(users),
        topic="",
        text=f"you joined {room}",
    )


def logged_in(*others: str) -> ChatModel:
    """A model as after login as alice, in #general with ``others``."""
    model = ChatModel()
    model.apply(
        event(
            "connected",
            user="alice",
            server="localhost:7443",
            tls_version="TLSv1.3",
            cert_subject="commonName=chat",
            cert_issuer="commonName=CA",
            cert_sha256="AB:CD",
        )
    )
    model.apply(joined("#general", "alice", *others))
    return model


def texts(model: ChatModel, name: str | None = None) -> list[str]:
    buffer = model.current if name is None else model.find(name) or model.server
    return [line.text for line in buffer.lines]


def plain(fragments: StyleAndTextTuples) -> str:
    return to_plain_text(fragments)


# -- the package ---------------------------------------------------------------------------


def test_ui_package_exports_the_app_and_modules_document_themselves() -> None:
    assert securechat.ui.__all__ == ["ChatApp"]
    for stem in ("actions", "app", "complete", "model", "render"):
        module = importlib.import_module(f"securechat.ui.{stem}")
        assert module.__doc__
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                assert obj.__doc__, f"{module.__name__}.{name}"


def test_model_and_actions_do_not_import_prompt_toolkit() -> None:
    for name in ("model", "actions"):
        source = (Path(securechat.ui.__file__).parent / f"{name}.py").read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) prompt_toolkit", source, re.M), name


# -- model: where lines go -----------------------------------------------------------------


def test_connect_shows_certificate_details_first_in_the_server_buffer() -> None:
    model = logged_in()
    assert model.buffers[0] is model.server
    lines = [line.text for line in model.server.lines]
    assert lines[:4] == [
        "connected to localhost:7443 as alice (TLSv1.3)",
        "server certificate: commonName=chat",
        "issued by: commonName=CA",
        "SHA-256 fingerprint: AB:CD",
    ]
    assert model.status.state == "connected" and model.status.tls_version == "TLSv1.3"


def test_joining_opens_a_room_buffer_switches_to_it_and_asks_who_quietly() -> None:
    model = logged_in("bob")
    outcome = model.apply(joined("#dev", "alice", "carol"))
    assert model.current.name == "#dev" and model.current.kind == "room"
    assert model.current.member_names() == ["alice", "carol"]
    assert outcome.requests == [Request("who", {"room": "#dev"})]
    model.apply(event("users", room="#dev", users=["alice", "carol", "dave"], quiet=True))
    assert model.current.member_names() == ["alice", "carol", "dave"]
    assert "in #dev" not in " ".join(texts(model))  # the quiet answer adds no line
    model.apply(event("users", room="#dev", users=["alice"]))  # the user's own /who
    assert texts(model)[-1] == "in #dev: alice"


def test_members_follow_join_part_quit_and_nick() -> None:
    model = logged_in("bob")
    model.apply(event("system", event="join", room="#general", user="carol", text="carol joined"))
    model.apply(event("system", event="part", room="#general", user="bob", text="bob left"))
    model.apply(event("system", event="nick", old="carol", new="caro", text="carol is now caro"))
    assert model.current.member_names() == ["alice", "caro"]
    model.apply(event("system", event="quit", room="#general", user="caro", text="caro left"))
    assert model.current.member_names() == ["alice"]
    assert texts(model)[-4:] == ["carol joined", "bob left", "carol is now caro", "caro left"]


def test_own_nick_change_renames_the_user() -> None:
    model = logged_in()
    model.apply(event("system", event="nick", old="alice", new="alicia", text="you are now alicia"))
    assert model.user == "alicia"
    assert model.current.member_names() == ["alicia"]


def test_parting_closes_the_buffer_and_shows_the_latest_room() -> None:
    model = logged_in()
    model.apply(joined("#dev", "alice"))
    model.apply(event("system", event="parted", room="#dev", text="you left #dev; now in #general"))
    assert model.find("#dev") is None
    assert model.current.name == "#general"
    assert texts(model)[-1] == "you left #dev; now in #general"


def test_rejoin_after_reconnect_does_not_move_the_user() -> None:
    model = logged_in()
    model.apply(joined("#dev", "alice"))
    model.apply(event("disconnected", reason="server shutting down"))
    model.apply(event("system", event="reconnecting", delay=1.0, text="reconnecting in 1 s"))
    outcome = model.apply(event("connected", user="alice", server="s", tls_version="TLSv1.3"))
    # No /who before the rejoin lands (a restarted server would refuse it): the
    # rejoin says who is there.
    assert Request("who", {"room": "#dev"}) not in outcome.requests
    model.apply(joined("#general", "alice"))  # the server's automatic join
    model.apply(event("system", event="rejoined", room="#dev", users=["alice", "bob"], text=""))
    assert model.current.name == "#dev"
    assert set(model.current.members) == {"alice", "bob"}


def test_reconnecting_to_another_server_says_so_where_the_user_looks() -> None:
    model = logged_in()
    model.apply(event("disconnected", reason="peer closed the connection"))
    model.apply(event("connected", user="alice", server="b.example:7443", tls_version="TLSv1.3"))
    text = "reconnected to b.example:7443 (192.0.2.2) instead of a.example:7443 (192.0.2.1)"
    model.apply(event("system", event="server_changed", server="b.example:7443", text=text))
    assert texts(model, "#general")[-1] == text
    assert texts(model, "server")[-1] == text
    assert model.status.server == "b.example:7443"


def test_messages_go_to_their_room_and_private_messages_to_the_other_party() -> None:
    model = logged_in("bob")
    model.apply(joined("#dev", "alice", "bob"))
    model.apply(message(10, "in general"))
    model.apply(message(11, "in dev", room="#dev"))
    model.apply(private(12, "psst", sender="bob", to="alice"))
    model.apply(private(13, "reply", sender="alice", to="bob"))
    assert texts(model, "#general")[-1] == "in general"
    assert texts(model, "#dev")[-1] == "in dev"
    assert texts(model, "bob") == ["psst", "reply"]
    assert model.find("bob") is not None and model.find("bob").kind == "private"  # type: ignore[union-attr]


def test_history_lands_in_place_by_id_and_never_twice() -> None:
    model = logged_in()
    model.apply(message(5, "five"))
    model.apply(message(9, "nine"))
    model.apply(event("system", event="join", room="#general", user="bob", text="bob joined"))
    model.apply(message(7, "seven", history=True))
    model.apply(message(3, "three", history=True))
    model.apply(message(9, "nine again", history=True))
    chat = [line for line in model.current.lines if line.kind == "message"]
    assert [line.msg_id for line in chat] == [3, 5, 7, 9]
    assert [line.history for line in chat] == [True, False, True, False]


def test_search_results_are_a_listing_in_the_current_buffer() -> None:
    model = logged_in()
    model.apply(message(5, "deploy done"))
    model.apply(joined("#dev", "alice"))
    model.apply(message(5, "deploy done", history=True, search=True))
    model.apply(message(6, "x", room="#ops", search=True, history=True))
    last = model.current.lines[-2:]
    assert [(line.where, line.text) for line in last] == [  # ids for /history before ID
        ("[5] #general", "deploy done"),
        ("[6] #ops", "x"),
    ]


def test_unread_count_and_marker_when_coming_back() -> None:
    model = logged_in("bob")
    model.apply(message(1, "before"))
    model.apply(joined("#dev", "alice", "bob"))
    model.apply(message(2, "while away 1"))
    model.apply(event("system", event="join", room="#general", user="carol", text="carol joined"))
    model.apply(message(3, "while away 2"))
    general = model.find("#general")
    assert general is not None
    assert general.unread == 2  # messages count; notices only move the marker
    model.switch(general)
    assert general.unread == 0
    assert general.marker is not None
    assert general.lines[general.marker].text == "while away 1"
    model.cycle(1)  # leave: the marker has been seen
    assert general.marker is None


def test_mentions_and_private_messages_highlight_and_ring_but_own_and_history_do_not() -> None:
    model = logged_in("bob")
    model.apply(joined("#dev", "alice", "bob"))
    assert model.apply(message(1, "hey Alice, look")).bell
    general = model.find("#general")
    assert general is not None and general.highlight
    assert general.lines[-1].mention
    assert not model.apply(message(2, "malice is not a mention")).bell
    assert not model.apply(message(3, "alice said", sender="alice")).bell
    assert not model.apply(message(4, "alice, old news", history=True)).bell
    assert model.apply(private(5, "psst", sender="bob", to="alice")).bell


def test_buffers_are_numbered_and_cycled() -> None:
    model = logged_in()
    model.apply(joined("#dev", "alice"))
    model.apply(private(1, "hi", sender="bob", to="alice"))
    assert [b.name for b in model.buffers] == ["server", "#general", "#dev", "bob"]
    model.switch_to_number(1)
    assert model.current is model.server
    model.cycle(-1)
    assert model.current.name == "bob"
    model.switch_to_activity()  # nothing unread elsewhere: stays
    assert model.current.name == "bob"


def test_reconnecting_status_counts_down() -> None:
    model = logged_in()
    model.apply(event("disconnected", reason="peer closed the connection"))
    assert model.status.state == "disconnected"
    model.apply(
        event("system", event="reconnecting", delay=4.2, text="reconnecting in 4 s"), now=100.0
    )
    assert model.status.state == "reconnecting"
    assert model.status.reconnect_in(100.0) == 4
    assert model.status.reconnect_in(103.0) == 1
    assert plain(status_fragments(model, 101.0)).count("reconnecting in 3s") == 1
    model.apply(event("connected", user="alice", server="s", tls_version="TLSv1.2"))
    assert "[connected TLSv1.2]" in plain(status_fragments(model, 200.0))


def test_file_offer_then_progress_keeps_one_updating_line() -> None:
    model = logged_in()
    model.apply(
        event(
            "file_offer",
            id=7,
            name="report.pdf",
            size=4096,
            sha256="00",
            text="bob offers report.pdf (4.0 KiB): /accept 7 or /reject 7",
            **{"from": "bob"},
        )
    )
    bob = model.find("bob")
    assert bob is not None and bob.highlight
    assert "/accept 7" in bob.lines[-1].text
    for done, now in ((1024, 10.0), (2048, 11.0), (3072, 12.0)):
        model.apply(
            event("file_progress", id=7, bytes=done, size=4096, direction="receive"), now=now
        )
    progress = [line for line in bob.lines if line.kind == "transfer"]
    assert len(progress) == 1
    transfer = model.transfers[7]
    assert (transfer.bytes, transfer.rate, transfer.seconds_left()) == (3072, 1024.0, 1.0)
    bar = plain(line_fragments(progress[0], model))
    assert (
        "[===============>    ]  75% report.pdf from bob: 3.0 KiB of 4.0 KiB, 1.0 KiB/s, 1 s left"
        in bar
    )
    model.apply(
        event(
            "file_saved",
            id=7,
            path="downloads/report.pdf",
            size=4096,
            sha256="00",
            text="saved report.pdf",
        )
    )
    assert "100% report.pdf from bob: 4.0 KiB of 4.0 KiB, done" in plain(
        line_fragments(progress[0], model)
    )


def test_upload_progress_learns_the_name_from_the_core() -> None:
    model = logged_in()
    model.learn_transfers(
        [
            {
                "id": 3,
                "direction": "send",
                "peer": "bob",
                "name": "a.bin",
                "size": 100,
                "bytes": 0,
                "state": "offered",
            }
        ]
    )
    model.apply(event("system", event="file_offered", id=3, to="bob", text="offered a.bin"))
    model.apply(event("system", event="file_accepted", id=3, text="bob accepted a.bin"))
    model.apply(event("file_progress", id=3, bytes=50, size=100, direction="send"), now=1.0)
    bob = model.find("bob")
    assert bob is not None
    assert "50% a.bin to bob" in plain(line_fragments(bob.lines[-1], model))
    model.apply(event("file_failed", id=3, reason="cancelled", text="transfer 3 failed: cancelled"))
    assert bob.lines[-1].kind == "error"
    assert model.transfers[3].state == "failed"


def test_answers_go_to_the_current_buffer_and_server_notices_to_the_server_buffer() -> None:
    model = logged_in()
    model.apply(event("error", code="no_such_user", text="there is no user called nobody"))
    model.apply(event("system", event="time", ts="x", text="server time is x"))
    model.apply(event("system", event="help", text="/help [command]  list the commands"))
    assert texts(model)[-3:] == [
        "there is no user called nobody",
        "server time is x",
        "/help [command]  list the commands",
    ]
    assert [line.kind for line in model.current.lines[-3:]] == ["error", "notice", "info"]
    model.apply(event("system", event="history", text="history: kept 30 days"))
    assert model.server.lines[-1].text == "history: kept 30 days"


def test_end_of_history_goes_where_its_messages_went() -> None:
    model = logged_in()
    model.apply(event("system", event="history_end", room="#general", count=0, text="no stored"))
    assert texts(model, "#general")[-1] == "no stored"
    model.apply(private(3, "old", sender="bob", to="alice"))
    model.apply(event("system", event="history_end", user="bob", count=1, text="end of bob"))
    assert texts(model, "bob") == ["old", "end of bob"]
    model.apply(event("system", event="history_end", count=0, search="x", text="0 match"))
    assert texts(model)[-1] == "0 match"


def test_buffers_keep_a_bounded_scrollback() -> None:
    model = logged_in()
    for mid in range(1, MAX_BUFFER_LINES + 11):
        model.apply(message(mid, f"m{mid}"))
    assert len(model.current.lines) == MAX_BUFFER_LINES
    assert model.current.lines[-1].text == f"m{MAX_BUFFER_LINES + 10}"


def test_scrolling_keeps_the_view_while_new_lines_arrive() -> None:
    model = logged_in()
    for mid in range(1, 31):
        model.apply(message(mid, f"m{mid}"))
    model.scroll(10, keep=5)
    model.apply(message(31, "m31"))
    assert model.current.scroll == 11
    model.scroll(-100)
    assert model.current.scroll == 0
    model.scroll(1000, keep=5)
    assert model.current.scroll == model.current.rows - 5


def test_input_history_browses_like_a_shell() -> None:
    history = InputHistory()
    for line in ("one", "two", "two", "three"):
        history.add(line)
    assert history.back("draft") == "three"
    assert history.back("three") == "two"
    assert history.back("two") == "one"
    assert history.back("one") is None
    assert history.forward() == "two"
    assert history.forward() == "three"
    assert history.forward() == "draft"
    assert history.forward() is None


# -- what typed lines mean -----------------------------------------------------------------


def test_plain_lines_say_in_a_room_and_msg_in_a_conversation() -> None:
    model = logged_in("bob")
    assert interpret("hello", model) == Request("say", {"room": "#general", "text": "hello"})
    model.switch(model.open_private("bob"))
    assert interpret("hello", model) == Request("msg", {"to": "bob", "text": "hello"})
    assert interpret("//slash", model) == Request("msg", {"to": "bob", "text": "/slash"})
    assert interpret("/who #general", model) == Request("who", {"room": "#general"})


def test_msg_without_text_opens_the_conversation() -> None:
    model = logged_in()
    assert interpret("/msg bob", model) == OpenConversation("bob")
    assert interpret("/msg bob hi there", model) == Request(
        "msg", {"to": "bob", "text": "hi there"}
    )
    assert interpret("/quit bye", model) == Local("quit", arg="bye")


def test_text_in_the_server_buffer_is_refused_with_a_hint() -> None:
    model = logged_in()
    model.switch(model.server)
    with pytest.raises(ChatError, match="the server buffer is not a room"):
        interpret("hello", model)


# -- completion ----------------------------------------------------------------------------


def complete(model: ChatModel, text: str) -> list[str]:
    completions = ChatCompleter(model).get_completions(
        Document(text), CompleteEvent(completion_requested=True)
    )
    return [c.text for c in completions]


def test_tab_completes_commands_and_their_arguments() -> None:
    model = logged_in("bob", "bert")
    model.apply(event("rooms", rooms=[{"name": "#dev", "users": 1, "topic": ""}]))
    model.apply(
        event("file_offer", id=4, name="f", size=1, sha256="0", text="offer", **{"from": "bob"})
    )
    assert complete(model, "/jo") == ["join "]
    assert complete(model, "/H") == ["help ", "history "]
    assert complete(model, "/join #d") == ["#dev "]
    assert complete(model, "/msg be") == ["bert "]
    assert complete(model, "/accept ") == ["4 "]
    assert complete(model, "/history s") == ["search ", "status "]
    assert set(COMMAND_NAMES) == {c.name.split()[0] for c in COMMANDS}


def test_tab_completes_nicknames_with_a_colon_at_line_start() -> None:
    model = logged_in("bob", "Bert")
    assert complete(model, "b") == ["Bert: ", "bob: "]
    assert complete(model, "thanks bo") == ["bob"]
    assert complete(model, "al") == []  # not yourself


def test_tab_completes_paths_for_sendfile(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"x")
    model = logged_in("bob")
    assert complete(model, f"/sendfile bob {tmp_path}/rep") == ["ort.pdf"]


# -- rendering -----------------------------------------------------------------------------


def test_hostile_text_is_shown_sanitised_everywhere() -> None:
    model = logged_in()
    evil = "ev\x1b[2Jil\u202e"
    model.apply(event("system", event="join", room="#general", user=evil, text=f"{evil} joined"))
    model.apply(
        event("system", event="topic", room="#general", topic=HOSTILE, by="bob", text="topic")
    )
    model.apply(message(1, HOSTILE, sender=evil))
    model.apply(event("error", code="x", text=HOSTILE))
    model.apply(event("file_progress", id=1, bytes=1, size=2, direction="receive"))
    model.transfers[1].name = HOSTILE
    shown = plain(pane_fragments(model.current, model, 100)[0]) + plain(title_fragments(model))
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "^[]0;pwned^G ^[[2J cleared <U+202E>evil<U+202C>" in shown
    assert "<ev^[[2Jil<U+202E>>" in shown


def test_system_lines_are_dimmed_and_errors_red() -> None:
    model = logged_in()
    notice = model.current.lines[0]
    assert notice.kind == "notice"
    style = line_fragments(notice, model)[-1][0]
    assert plain(line_fragments(notice, model)).endswith("-- you joined #general")
    assert style == "class:notice"
    attrs = STYLE.get_attrs_for_style_str(style)
    assert attrs.color == "ansibrightblack"
    model.apply(event("error", code="x", text="bad"))
    error_style = line_fragments(model.current.lines[-1], model)[-1][0]
    assert STYLE.get_attrs_for_style_str(error_style).color == "ansired"


def test_history_lines_carry_a_dim_time_and_live_lines_the_same_time() -> None:
    model = logged_in()
    model.apply(message(1, "old", history=True))
    model.apply(message(2, "new"))
    old, new = model.current.lines[-2:]
    old_stamp, new_stamp = line_fragments(old, model)[0], line_fragments(new, model)[0]
    assert old_stamp[0] == "class:history" and re.fullmatch(r"\d\d:\d\d ", old_stamp[1])
    assert new_stamp[0] == "class:timestamp" and re.fullmatch(r"\d\d:\d\d ", new_stamp[1])


def test_nick_colours_are_stable_and_case_insensitive() -> None:
    assert nick_style("alice") == nick_style("ALICE") == nick_style("alice")
    assert len({nick_style(n) for n in ("alice", "bob", "carol", "dave", "erin")}) > 1


def test_marker_line_and_scroll_window_of_the_pane() -> None:
    model = logged_in()
    model.apply(joined("#dev", "alice"))
    for mid in range(1, 6):
        model.apply(message(mid, f"m{mid}"))
    general = model.find("#general")
    assert general is not None
    model.switch(general)
    rows = plain(pane_fragments(general, model, 100)[0]).split("\n")
    assert rows[1] == MARKER_TEXT and rows[3].endswith("<bob> m1")  # after the day
    fragments, count = pane_fragments(general, model, 3)
    assert count == 3 and plain(fragments).split("\n")[-1].endswith("m5")
    general.scroll = 2
    assert plain(pane_fragments(general, model, 3)[0]).split("\n")[-1].endswith("m3")


def test_progress_bar_and_sizes() -> None:
    transfer = Transfer(1, "send", "bob", "x.iso", size=10 * 1024**3, bytes=0)
    assert plain(progress_fragments(transfer)).startswith(
        "[>                   ]   0% x.iso to bob"
    )
    assert format_size(512) == "512 B" and format_size(1536) == "1.5 KiB"
    assert format_size(3 * 1024**3) == "3.0 GiB"
    assert (format_duration(0.2), format_duration(65), format_duration(7300)) == (
        "<1 s",
        "1 min 5 s",
        "2 h 1 min",
    )


def test_status_line_shows_user_buffer_and_activity() -> None:
    model = logged_in("bob")
    model.apply(joined("#dev", "alice"))
    model.apply(message(1, "hi"))
    model.apply(private(2, "psst", sender="bob", to="alice"))
    status = plain(status_fragments(model, 0.0))
    assert "[alice] [3:#dev]" in status
    assert "[act: 2:#general(1) 4:bob(1)]" in status
    highlighted = [f for f in status_fragments(model, 0.0) if "4:bob" in f[1]]
    assert highlighted[0][0] == "class:status.highlight"


# -- the real Application ------------------------------------------------------------------


Scenario = Callable[["UI"], Awaitable[None]]


class UI:
    """A running ChatApp, its key pipe and its client, for one test."""

    def __init__(self, app: ChatApp, keys: PipeInput, client: ChatClient) -> None:
        self.app, self.keys, self.client, self.model = app, keys, client, app.model

    def type(self, text: str) -> None:
        self.keys.send_text(text)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; lines: {texts(self.model)}")
            await asyncio.sleep(0.02)

    def pane(self) -> str:
        return plain(pane_fragments(self.model.current, self.model, 200)[0])


@pytest.fixture
def run_ui(pki: Pki, tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Run a scenario against a ChatApp for ``user`` on ``server``; returns the exit status."""
    clients: list[ChatClient] = []

    def _run(
        server: Server, scenario: Scenario, *, user: str = "alice", output: Output | None = None
    ) -> int:
        with (
            create_pipe_input() as keys,
            create_app_session(input=keys, output=output or DummyOutput()),
        ):
            app = ChatApp()
            client = ChatClient(
                servers=[ServerAddress("localhost", server.address[1])],
                context=client_context(ca=pki.ca_pem),
                user=user,
                password="pw",
                on_event=app.post_event,
                download_dir=tmp_path / "downloads",
                register=True,
            )
            clients.append(client)
            client.connect()

            async def main() -> int:
                ui = UI(app, keys, client)
                running = asyncio.ensure_future(app.run_async(client))
                try:
                    await ui.until(lambda: app.application.is_running, "the app to start")
                    await asyncio.wait_for(scenario(ui), 20)
                finally:
                    app.quit()
                    status = await asyncio.wait_for(running, 10)
                return status

            return asyncio.run(main())

    yield _run
    for client in clients:
        client.close()


def bob_joins(server: Server, raw_client: Callable[..., RawClient]) -> RawClient:
    bob = raw_client(server.address[1])
    bob.login("bob")
    return bob


def test_a_received_message_appears_in_the_pane(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        bob = bob_joins(server, raw_client)
        bob.send("say", room="#general", text="hello alice")
        await ui.until(lambda: "<bob> hello alice" in ui.pane(), "bob's message")
        assert "bob" in ui.model.current.member_names()

    assert run_ui(server, scenario) == 0


def test_typing_a_line_and_enter_sends_it(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = bob_joins(server, raw_client)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("hi from the full screen" + ENTER)
        await ui.until(lambda: "<alice> hi from the full screen" in ui.pane(), "the echo")
        assert ui.app.input.text == ""

    assert run_ui(server, scenario) == 0
    said = bob.expect("message", text="hi from the full screen")
    assert said.get("from") == "alice"


def test_tab_completes_a_command_and_a_nickname_in_the_app(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob_joins(server, raw_client)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: "bob" in ui.model.current.member_names(), "bob in the list")
        ui.type("/jo" + TAB)
        await ui.until(lambda: ui.app.input.text == "/join ", "/join completed")
        ui.type("\x15" + "bo" + TAB)  # Ctrl+U clears the line first
        await ui.until(lambda: ui.app.input.text == "bob: ", "bob: completed")

    run_ui(server, scenario)


def test_switching_buffers_resets_unread_and_shows_the_marker(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = bob_joins(server, raw_client)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/join #dev" + ENTER)
        await ui.until(lambda: ui.model.current.name == "#dev", "#dev")
        bob.send("say", room="#general", text="while you were away")
        general = ui.model.find("#general")
        assert general is not None
        await ui.until(lambda: general.unread == 1, "an unread message")
        assert "[act: 2:#general(1)]" in plain(status_fragments(ui.model, 0.0))
        ui.type(CTRL_P)
        await ui.until(lambda: ui.model.current is general, "switch back")
        assert general.unread == 0
        rows = ui.pane().split("\n")
        assert rows[rows.index(MARKER_TEXT) + 1].endswith("<bob> while you were away")
        ui.type(alt("3"))
        await ui.until(lambda: ui.model.current.name == "#dev", "Alt+3")
        ui.type(CTRL_N)
        await ui.until(lambda: ui.model.current is ui.model.server, "Ctrl+N wraps to the server")

    run_ui(server, scenario)


def test_msg_name_opens_a_private_buffer_and_plain_lines_go_there(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = bob_joins(server, raw_client)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/msg bob" + ENTER)
        await ui.until(lambda: ui.model.current.name == "bob", "the conversation")
        assert ui.model.current.kind == "private"
        assert plain(title_fragments(ui.model)) == " private conversation with bob"
        ui.type("just between us" + ENTER)
        await ui.until(lambda: "<alice> just between us" in ui.pane(), "the echo")

    run_ui(server, scenario)
    sent = bob.expect("private", text="just between us")
    assert sent.get("from") == "alice"


def test_hostile_message_reaches_the_terminal_sanitised(
    server: Server, run_ui: Callable[..., int]
) -> None:
    # The server refuses control characters, so the hostile event is injected as the core
    # would deliver it; everything after the event sink is real, down to the bytes written.
    screen = io.StringIO()
    output = Vt100_Output(screen, lambda: Size(rows=24, columns=100), term="xterm")

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.app.post_event(message(999, HOSTILE, sender="mallory"))
        await ui.until(lambda: "cleared" in screen.getvalue(), "the message on screen")

    run_ui(server, scenario, output=output)
    written = screen.getvalue()
    assert "\x1b]0;" not in written  # no window title set, by the message or otherwise
    assert "pwned\x07" not in written and "\u202e" not in written
    assert "^[]0;pwned^G" in written and "^[[2J" in written and "<U+202E>evil<U+202C>" in written


def test_reconnecting_shows_in_the_status_line_with_the_delay(
    server: Server, run_ui: Callable[..., int]
) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.status.state == "connected", "connected")
        ui.app.post_event(event("disconnected", reason="peer closed the connection"))
        ui.app.post_event(
            event(
                "system",
                event="reconnecting",
                delay=8.0,
                text="connection lost; reconnecting in 8 s",
            )
        )
        await ui.until(lambda: ui.model.status.state == "reconnecting", "reconnecting")
        status = plain(status_fragments(ui.model, time.monotonic()))
        assert re.search(r"\[reconnecting in [78]s\]", status), status

    run_ui(server, scenario)


def test_a_real_file_transfer_shows_its_progress_line(
    server: Server, pki: Pki, tmp_path: Path, run_ui: Callable[..., int]
) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"x" * 200_000)
    bob = ChatClient(
        servers=[ServerAddress("localhost", server.address[1])],
        context=client_context(ca=pki.ca_pem),
        user="bob",
        password="pw",
        on_event=lambda e: None,
        register=True,
    )
    bob.connect()
    try:

        async def scenario(ui: UI) -> None:
            await ui.until(lambda: ui.model.status.state == "connected", "connected")
            await asyncio.to_thread(bob.send_file, "alice", source)
            await ui.until(
                lambda: any(t.state == "offered" for t in ui.model.transfers.values()), "the offer"
            )
            tid = next(iter(ui.model.transfers))
            ui.type(f"/accept {tid}" + ENTER)
            await ui.until(
                lambda: ui.model.transfers[tid].state == "done", "the transfer to finish"
            )
            conversation = ui.model.find("bob")
            assert conversation is not None
            shown = plain(pane_fragments(conversation, ui.model, 100)[0])
            assert "bob offers notes.txt (195.3 KiB): /accept" in shown
            assert (
                "[====================] 100% notes.txt from bob: 195.3 KiB of 195.3 KiB, done"
                in shown
            )
            assert "saved notes.txt from bob" in shown

        run_ui(server, scenario)
    finally:
        bob.close()
    assert (tmp_path / "downloads" / "notes.txt").read_bytes() == source.read_bytes()


def test_help_lists_every_command_and_the_keys(server: Server, run_ui: Callable[..., int]) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/help" + ENTER)
        await ui.until(lambda: "Ctrl+L redraws" in ui.pane(), "the key help")
        for command in COMMANDS:
            assert command.usage in ui.pane()

    run_ui(server, scenario)


def test_up_recalls_input_and_page_up_and_the_wheel_scroll(
    server: Server, run_ui: Callable[..., int]
) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        for n in range(60):
            ui.app.post_event(message(1000 + n, f"line {n}"))
        await ui.until(lambda: "line 59" in ui.pane(), "the lines")
        ui.type("first" + ENTER)
        ui.type("\x1b[A")  # Up
        await ui.until(lambda: ui.app.input.text == "first", "input history")
        ui.type(PAGE_UP)
        await ui.until(lambda: ui.model.current.scroll > 0, "PageUp")
        before = ui.model.current.scroll
        wheel = MouseEvent(Point(0, 0), MouseEventType.SCROLL_DOWN, MouseButton.NONE, frozenset())
        ui.app.mouse_handler(wheel)
        assert ui.model.current.scroll == before - 3

    run_ui(server, scenario)


def test_slash_quit_leaves_cleanly_with_the_reason(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = bob_joins(server, raw_client)

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/quit see you" + ENTER)
        await ui.until(lambda: not ui.app.application.is_running, "the app to close")

    assert run_ui(server, scenario) == 0
    bob.expect("system", event="quit", user="alice")
    assert bob.frames[-1].get("text") == "alice left (quit: see you)"


def test_ctrl_d_on_an_empty_line_quits(server: Server, run_ui: Callable[..., int]) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("\x04")
        await ui.until(lambda: not ui.app.application.is_running, "the app to close")

    assert run_ui(server, scenario) == 0


def test_a_pipe_keeps_human_line_mode(server: Server, pki: Pki) -> None:
    port = str(server.address[1])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "securechat.client.cli",
            "--ca",
            str(pki.ca_pem),
            "--port",
            port,
            "--user",
            "alice",
            "--register",
        ],
        input=b"hello from a pipe\n",
        capture_output=True,
        env={**os.environ, "SECURECHAT_PASSWORD": "pw"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert any(line.endswith("<alice> hello from a pipe") for line in lines)
    assert b"\x1b" not in result.stdout  # no full-screen escape sequences


def test_password_is_asked_on_the_input_line_and_never_shown_or_remembered(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/password" + ENTER)
        await ui.until(lambda: "old password" in plain(ui.app._prompt()), "the first question")
        ui.type("pw")
        await ui.until(lambda: ui.app.input.text == "pw", "the typed answer")
        ui.type(ENTER + "new-pw" + ENTER + "new-pw" + ENTER)
        await ui.until(lambda: "your password is changed" in ui.pane(), "the server's answer")
        assert "new-pw" not in ui.pane()
        assert ui.model.history.back("") == "/password"

    assert run_ui(server, scenario) == 0
    check = raw_client(server.address[1])
    check.send("login", user="alice", password="new-pw", register=False)
    check.expect("welcome")


def test_account_delete_warns_and_asks_no_keeps_the_account_and_yes_deletes_it(
    server: Server, run_ui: Callable[..., int]
) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/account delete" + ENTER)
        await ui.until(lambda: "erases every message you sent" in ui.pane(), "the warning")
        assert "delete your account alice? [y/N]" in plain(ui.app._prompt())
        ui.type("n" + ENTER)
        await ui.until(lambda: "not deleted" in ui.pane(), "the refusal")
        ui.type("/account delete" + ENTER + "yes" + ENTER)
        await ui.until(lambda: "account deleted" in ui.pane(), "the deletion")
        await ui.until(lambda: ui.model.status.state == "disconnected", "the end")

    assert run_ui(server, scenario) == 1
