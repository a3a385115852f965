"""The full-screen client's behaviour: restarts, pastes, confirmations, transfers,
busy rooms, history blocks and what it draws from a hostile server.

Headless: the real prompt_toolkit Application (keys from a pipe) over a real
ChatClient talking to real servers over TLS, driven as in tests/test_ui.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.client.core import ChatClient
from securechat.client.profiles import load_profile
from securechat.client.servers import ServerAddress
from securechat.errors import ConfigError
from securechat.server.listener import Server
from securechat.tls import client_context
from securechat.ui.model import BUSY_ROOM_MEMBERS
from securechat.ui.render import (
    members_fragments,
    pane_fragments,
    status_fragments,
    title_fragments,
)
from tests.conftest import Pki, RawClient, free_port
from tests.test_ui import (
    UI,
    event,
    joined,
    logged_in,
    plain,
    run_ui,
    texts,
)

HOSTILE = "\x1b]0;PWNED\x07\x1b[2J\u202e"

__all__ = ["run_ui"]  # test_ui.py's fixture, exported so that pytest finds it here


def test_who_after_a_server_restart_answers_and_no_false_no_such_room(
    make_server: Callable[..., Server],
    raw_client: Callable[..., RawClient],
    run_ui: Callable[..., int],
    tmp_path: Path,
) -> None:
    port, db = free_port(), tmp_path / "restart.db"
    servers = [make_server(db=db, port=port)]

    async def scenario(ui: UI) -> None:
        ui.type("/join #dev\r")
        await ui.until(lambda: ui.model.current.name == "#dev", "#dev to open")
        await ui.until(lambda: "alice" in ui.model.current.members, "alice in #dev")
        servers[0].stop()
        await ui.until(lambda: ui.model.status.state != "connected", "the drop")
        servers.append(make_server(db=tmp_path / "fresh.db", port=port))
        await ui.until(lambda: ui.model.status.state == "connected", "the reconnect")
        bob = raw_client(port)
        bob.login("bob")
        bob.send("join", room="#dev")
        bob.expect("joined", room="#dev")
        await ui.until(lambda: "bob" in ui.model.current.members, "bob in #dev")
        ui.type("/who\r")
        await ui.until(
            lambda: any(t.startswith("in #dev: ") for t in texts(ui.model, "#dev")),
            "the /who answer",
        )
        everything = [t for b in ui.model.buffers for t in texts(ui.model, b.name)]
        assert not [t for t in everything if "there is no" in t], everything

    assert run_ui(servers[0], scenario) == 0


def test_every_field_of_every_listing_is_drawn_sanitised() -> None:
    model = logged_in()
    model.apply(joined("#dev", "alice", HOSTILE))
    model.apply(event("rooms", rooms=[{"name": HOSTILE, "users": HOSTILE, "topic": HOSTILE}]))
    model.apply(event("users", room="#dev", users=[HOSTILE]))
    model.apply(event("sessions", sessions=[{"session": HOSTILE, "peer": HOSTILE, "since": 1}]))
    model.apply(event("unread", rooms=[{"room": HOSTILE, "unread": HOSTILE, "first": HOSTILE}]))
    model.apply(event("bans", bans=[{"account": HOSTILE, "reason": HOSTILE, "until": HOSTILE}]))
    transfer = {"id": 1, "name": HOSTILE, "peer": HOSTILE, "direction": "send"}
    model.apply(event("files", transfers=[{**transfer, "state": HOSTILE, "bytes": HOSTILE}]))
    model.apply(event("system", event="topic", room="#dev", topic=HOSTILE, text=HOSTILE))
    model.apply(event("error", code=HOSTILE, text=HOSTILE))
    drawn = "".join(
        plain(pane_fragments(buffer, model, 200)[0]) for buffer in model.buffers
    ) + plain(title_fragments(model) + status_fragments(model, 0.0))
    drawn += plain(members_fragments(model.current, model))
    assert "PWNED" in drawn
    assert not set(drawn) & {"\x1b", "\x07", "\u202e"}


def bracketed(text: str) -> str:
    """``text`` as a terminal with bracketed paste sends a paste."""
    return f"\x1b[200~{text}\x1b[201~"


def test_a_multi_line_paste_with_tabs_shows_asks_then_sends_every_line_in_order(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = raw_client(server.address[1])
    bob.login("bob")

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type(bracketed("def f():\r\n\treturn 1\r\nprint(f())"))
        await ui.until(lambda: ui.app.input.document.line_count == 3, "the paste in the input")
        assert "\t" not in ui.app.input.text
        ui.type("\r")
        await ui.until(lambda: "send 3 lines to #general? [y/N]" in plain(ui.app._prompt()), "ask")
        ui.type("y\r")
        await ui.until(lambda: "<alice> print(f())" in ui.pane(), "the last line's echo")
        assert "control character" not in ui.pane()

    assert run_ui(server, scenario) == 0
    said = [bob.expect("message", **{"from": "alice"}).get("text") for _ in range(3)]
    assert said == ["def f():", "        return 1", "print(f())"]


def test_a_paste_answered_no_or_with_a_bad_line_sends_nothing(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = raw_client(server.address[1])
    bob.login("bob")

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type(bracketed("first\nsecond") + "\r" + "n\r")
        await ui.until(lambda: "nothing was sent" in ui.pane(), "the refusal")
        ui.type(bracketed("one\n/frob\nthree") + "\r" + "y\r")
        await ui.until(lambda: "line 2 of 3: unknown command /frob" in ui.pane(), "the error")
        ui.type("only this\r")
        await ui.until(lambda: "<alice> only this" in ui.pane(), "the echo")

    assert run_ui(server, scenario) == 0
    assert bob.expect("message", **{"from": "alice"}).get("text") == "only this"


def test_history_forget_asks_first(server: Server, run_ui: Callable[..., int]) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("kept\r")
        await ui.until(lambda: "<alice> kept" in ui.pane(), "the echo")
        ui.type("/history forget\r")
        await ui.until(lambda: "[y/N]" in plain(ui.app._prompt()), "the question")
        assert "erase every message you have sent" in plain(ui.app._prompt())
        ui.type("\r")  # an empty answer is a no
        await ui.until(lambda: "nothing was sent" in ui.pane(), "the refusal")
        ui.type("/history forget\r" + "y\r")
        await ui.until(lambda: ui.model.current.lines[-1].kind != "message", "the answer")
        await ui.until(lambda: "erased" in ui.model.current.lines[-1].text, "the erasure")

    assert run_ui(server, scenario) == 0


def test_transfer_notices_go_to_the_conversation_with_the_senders_number(
    server: Server, pki: Pki, tmp_path: Path, run_ui: Callable[..., int]
) -> None:
    first, second = tmp_path / "one.txt", tmp_path / "two.txt"
    first.write_bytes(b"1" * 1000)
    second.write_bytes(b"2" * 1000)
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
            for source in (first, second):
                await asyncio.to_thread(bob.send_file, "alice", source)
            await ui.until(lambda: len(ui.model.transfers) == 2, "both offers")
            numbers = {t["name"]: t["id"] for t in bob.transfers()}
            assert set(ui.model.transfers) == set(numbers.values())  # the same numbers
            ui.type(f"/accept {numbers['one.txt']}\r/cancel {numbers['two.txt']}\r")
            conversation = ui.model.find("bob")
            assert conversation is not None
            await ui.until(
                lambda: "cancelled two.txt" in texts(ui.model, "bob"), "the cancel notice"
            )
            await ui.until(lambda: "receiving one.txt from bob" in texts(ui.model, "bob"), "ok")
            server_lines = texts(ui.model, ui.model.server.name)
            assert not [t for t in server_lines if "one.txt" in t or "two.txt" in t]
            await ui.until(
                lambda: ui.model.transfers[numbers["one.txt"]].state == "done", "the end"
            )
            assert "[files:" not in plain(status_fragments(ui.model, 0.0))

        run_ui(server, scenario)
    finally:
        bob.close()


def test_join_part_quit_notices_are_filtered_in_busy_rooms_by_default() -> None:
    model = logged_in()
    crowd = [f"user{n}" for n in range(BUSY_ROOM_MEMBERS)]
    model.apply(joined("#small", "alice", "bob"))
    model.apply(joined("#busy", "alice", *crowd))
    for room in ("#small", "#busy"):
        text = f"carol joined {room}"
        model.apply(event("system", event="join", room=room, user="carol", text=text))
    assert "carol joined #small" in texts(model, "#small")
    assert "carol joined #busy" not in texts(model, "#busy")
    busy = model.find("#busy")
    assert busy is not None and "carol" in busy.members  # the list still follows
    model.join_filter = "off"
    model.apply(event("system", event="quit", room="#busy", user="carol", text="carol left"))
    assert "carol left" in texts(model, "#busy")
    model.join_filter = "on"
    model.apply(event("system", event="part", room="#small", user="bob", text="bob left #small"))
    assert "bob left #small" not in texts(model, "#small")


def test_filter_joins_command_and_profile_setting(
    server: Server,
    raw_client: Callable[..., RawClient],
    run_ui: Callable[..., int],
    tmp_path: Path,
) -> None:
    async def scenario(ui: UI) -> None:
        await ui.until(lambda: ui.model.current.name == "#general", "#general")
        ui.type("/filter joins on\r")
        await ui.until(lambda: "hidden in every room" in ui.pane(), "the setting's answer")
        raw_client(server.address[1]).login("bob")
        await ui.until(lambda: "bob" in ui.model.current.members, "bob in the list")
        assert "bob joined" not in ui.pane()
        ui.type("/filter joins sometimes\r")
        await ui.until(lambda: "usage: /filter joins on|off|auto" in ui.pane(), "the usage")

    assert run_ui(server, scenario) == 0
    config = tmp_path / "client.toml"
    config.write_text('[profiles.busy]\nfilter_joins = "off"\n', encoding="utf-8")
    assert load_profile(config, "busy").options == {"filter_joins": "off"}
    config.write_text('[profiles.busy]\nfilter_joins = "never"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="filter_joins: must be one of on, off, auto"):
        load_profile(config, "busy")


def test_history_n_lists_messages_on_screen_as_a_block_with_their_ids(
    server: Server, raw_client: Callable[..., RawClient], run_ui: Callable[..., int]
) -> None:
    bob = raw_client(server.address[1])
    bob.login("bob")

    async def scenario(ui: UI) -> None:
        await ui.until(lambda: "bob" in ui.model.current.members, "bob in #general")
        for text in ("one", "two", "three"):
            bob.send("say", room="#general", text=text)
        await ui.until(lambda: "<bob> three" in ui.pane(), "the live messages")
        ids = [line.msg_id for line in ui.model.current.lines if line.kind == "message"]
        ui.type("/history 2\r")
        await ui.until(lambda: "/history before" in ui.pane(), "the end of the block")
        rows = ui.pane().split("\n")
        start = next(i for i, row in enumerate(rows) if row.endswith("history of #general:"))
        block = rows[start + 1 : start + 4]
        assert block[0].endswith(f"[{ids[-2]}] <bob> two")
        assert block[1].endswith(f"[{ids[-1]}] <bob> three")
        assert block[2].endswith(
            f"-- end of history of #general: 2 messages; /history before {ids[-2]} shows older ones"
        )
        ui.type(f"/history before {ids[-2]} 1\r")
        await ui.until(lambda: f"[{ids[-3]}] <bob> one" in ui.pane(), "the page before")

    assert run_ui(server, scenario) == 0
