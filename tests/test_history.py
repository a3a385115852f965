"""Persistent history through real servers and clients: replay, paging, search, privacy."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securechat.server.listener import Server
from securechat.wire.protocol import Frame
from tests.conftest import UNMETERED, ClientProcess, RawClient, free_port, history_page

Factory = Callable[..., RawClient]


def _say(client: RawClient, text: str, room: str = "#general", **extra: Any) -> Frame:
    """Send a room message and wait for its acknowledgement (the echo with our rid)."""
    rid = client.send("say", room=room, text=text, **extra)
    return client.expect("message", rid=rid)


def _db_bytes(db: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            data += path.read_bytes()
    return data


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


def test_acknowledged_messages_survive_restart_and_replay_on_join(
    make_server: Callable[..., Server], raw_client: Factory, db: Path
) -> None:
    server = make_server(db=db, **UNMETERED)
    alice = raw_client(server.address[1])
    alice.login("alice")
    ids = [_say(alice, f"before restart {i}").get("id") for i in range(25)]
    server.stop()

    again = make_server(db=db)
    bob = raw_client(again.address[1])
    bob.login("bob")
    bob.expect("message", id=ids[-1])
    replayed = [f for f in bob.frames if f.type == "message" and f.get("history")]
    assert [f.get("id") for f in replayed] == ids[-20:]
    assert replayed[-1].get("text") == "before restart 24"
    newer = _say(bob, "after restart")
    assert newer.get("id") > ids[-1]


def test_history_pages_backwards_and_forwards_by_id(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    alice = raw_client(make_server(**UNMETERED).address[1])
    alice.login("alice")
    ids = [_say(alice, f"m{i}").get("id") for i in range(30)]
    rows, end = history_page(alice, room="#general", limit=10)
    assert [r.get("id") for r in rows] == ids[-10:]
    assert end.get("count") == 10
    rows, _ = history_page(alice, room="#general", before=ids[20], limit=5)
    assert [r.get("text") for r in rows] == [f"m{i}" for i in range(15, 20)]
    rows, _ = history_page(alice, room="#general", after=ids[3], limit=4)
    assert [r.get("text") for r in rows] == ["m4", "m5", "m6", "m7"]
    rows, end = history_page(alice, room="#general", after=ids[-1], limit=10)
    assert rows == [] and end.get("count") == 0


def test_history_limit_is_capped_at_500(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    alice = raw_client(make_server(**UNMETERED).address[1])
    alice.login("alice")
    for i in range(510):
        alice.send("say", room="#general", text=f"n{i}")
    alice.expect("message", text="n509")
    rows, _ = history_page(alice, room="#general", limit=10_000)
    assert len(rows) == 500
    assert rows[-1].get("text") == "n509"


def test_history_of_a_room_needs_membership(server: Server, raw_client: Factory) -> None:
    port = server.address[1]
    alice, eve = raw_client(port), raw_client(port)
    alice.login("alice")
    eve.login("eve")
    alice.send("join", room="#secret")
    alice.expect("joined")
    _say(alice, "members only", room="#secret")
    eve.send("history", room="#secret", limit=50)
    assert eve.expect("error").get("code") in ("not_in_room", "no_such_room")
    rows, _ = history_page(eve, type_="search", text="members")
    assert rows == []


def test_private_message_is_not_in_third_partyhistory_page(
    server: Server, raw_client: Factory, tmp_path: Path
) -> None:
    port = server.address[1]
    alice, bob, carol = raw_client(port), raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    carol.login("carol")
    rid = alice.send("msg", to="bob", text="the vault code is 4711")
    dm_id = alice.expect("private", rid=rid).get("id")
    bob.expect("private", text="the vault code is 4711")
    _say(carol, "carol was here")

    forms: list[dict[str, Any]] = [
        {"user": "alice"},
        {"user": "bob"},
        {"user": "carol"},
        {"room": "#general"},
        {"room": "#general", "before": dm_id + 1},
        {"room": "#general", "after": dm_id - 1},
        {"user": "alice", "before": dm_id + 1},
        {"user": "bob", "after": 0},
    ]
    seen: list[Frame] = []
    for form in forms:
        rows, _ = history_page(carol, limit=500, **form)
        seen += rows
    for words in ("vault", "4711", "code"):
        rows, _ = history_page(carol, type_="search", text=words)
        seen += rows
    rows, _ = history_page(carol, type_="export", after=0)
    seen += rows
    assert all("vault" not in str(f.get("text")) for f in seen), seen
    assert all(f.get("id") != dm_id for f in seen)

    # ... while both participants find it.
    rows, _ = history_page(bob, user="alice", limit=10)
    assert [r.get("text") for r in rows] == ["the vault code is 4711"]
    rows, _ = history_page(alice, type_="search", text="vault")
    assert [r.get("id") for r in rows] == [dm_id]


def test_search_is_newest_first_and_matches_all_words(server: Server, raw_client: Factory) -> None:
    alice = raw_client(server.address[1])
    alice.login("alice")
    _say(alice, "deploy the red build")
    _say(alice, "deploy the blue build")
    _say(alice, "lunch at noon")
    rows, end = history_page(alice, type_="search", text="deploy build")
    assert [r.get("text") for r in rows] == ["deploy the blue build", "deploy the red build"]
    assert all(r.get("search") is True for r in rows)
    assert end.get("count") == 2


@pytest.mark.parametrize(
    "query", ["x' OR 1=1 --", '"unbalanced', "deploy*", "NEAR(a b)", "a:b", "%", "_", "\\"]
)
def test_search_treats_every_query_as_plain_words(
    server: Server, raw_client: Factory, query: str
) -> None:
    alice = raw_client(server.address[1])
    alice.login("alice")
    _say(alice, "deploy friday")
    rows, _ = history_page(alice, type_="search", text=query)
    assert all(query.strip("*") in str(r.get("text")) for r in rows)


def test_opted_out_text_never_reaches_the_database_files(
    make_server: Callable[..., Server], raw_client: Factory, db: Path
) -> None:
    server = make_server(db=db, **UNMETERED)
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    alice.send("history_mode", keep=False)
    assert alice.expect("history_status").get("keep") is False
    echo = _say(alice, "opted-out-canary room")
    assert echo.get("stored") is False
    bob.expect("message", text="opted-out-canary room")  # still delivered live
    rid = bob.send("msg", to="alice", text="opted-out-canary dm to alice")
    assert bob.expect("private", rid=rid).get("stored") is False
    alice.send("history_mode", keep=True)
    alice.expect("history_status")
    _say(alice, "stored again")
    server.stop()
    data = _db_bytes(db)
    assert b"opted-out-canary" not in data
    assert b"stored again" in data


def test_nolog_message_is_delivered_but_not_stored(
    make_server: Callable[..., Server], raw_client: Factory, db: Path
) -> None:
    server = make_server(db=db, **UNMETERED)
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    echo = _say(alice, "nolog-canary", nolog=True)
    assert echo.get("stored") is False
    bob.expect("message", text="nolog-canary")
    rows, _ = history_page(bob, room="#general", limit=50)
    assert not [r for r in rows if r.get("text") == "nolog-canary"]
    later = _say(alice, "logged")
    assert later.get("id") > echo.get("id")
    server.stop()
    assert b"nolog-canary" not in _db_bytes(db)


def test_forget_erases_rows_index_and_bytes(
    make_server: Callable[..., Server], raw_client: Factory, db: Path
) -> None:
    server = make_server(db=db, **UNMETERED)
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    for i in range(20):
        _say(alice, f"forgettable-canary number {i}")
    alice.send("msg", to="bob", text="forgettable-canary private")
    bob.expect("private")
    _say(bob, "bob keeps this")
    rid = alice.send("forget")
    assert alice.expect("forgotten", rid=rid).get("count") == 21
    rows, _ = history_page(bob, type_="search", text="forgettable")
    assert rows == []
    rows, _ = history_page(bob, room="#general", limit=100)
    assert [r.get("text") for r in rows] == ["bob keeps this"]
    assert b"forgettable-canary" not in _db_bytes(db)  # while the server still runs
    server.stop()
    assert b"forgettable-canary" not in _db_bytes(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_status_reports_storage_and_retention(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(retention_days=30)
    alice = raw_client(server.address[1])
    welcome = alice.login("alice")
    assert welcome.get("retention_days") == 30 and welcome.get("keep_history") is True
    notice = next(f for f in alice.frames if f.type == "system" and f.get("event") == "history")
    assert "30 days" in notice.get("text")
    _say(alice, "one")
    _say(alice, "two")
    alice.send("history_status")
    status = alice.expect("history_status")
    assert (status.get("stored"), status.get("keep")) == (2, True)


def test_history_commands_and_export_through_the_client(
    server: Server, client_process: Callable[..., ClientProcess], tmp_path: Path
) -> None:
    port = server.address[1]
    alice, bob = client_process(port, "alice"), client_process(port, "bob")
    alice.wait_for("connected")
    bob.wait_for("connected")
    alice.type("release is friday", "/msg bob keep it quiet")
    bob.wait_for("private", text="keep it quiet")
    bob.type("/history 5")
    replay = bob.wait_for("message", text="release is friday", history=True)
    assert replay["room"] == "#general"
    bob.wait_for("system", event="history_end")
    bob.type("/history alice")
    assert bob.wait_for("private", history=True)["text"] == "keep it quiet"
    bob.type("/history search friday")
    assert bob.wait_for("message", search=True)["text"] == "release is friday"
    target = tmp_path / "bob.jsonl"
    bob.type(f"/history export {target}")
    assert bob.wait_for("system", event="export")["count"] == 2
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert {e["text"] for e in lines} == {"release is friday", "keep it quiet"}
    assert {e["type"] for e in lines} == {"message", "private"}
    assert bob.finish()[0] == 0


def test_client_reconnects_and_fills_the_gap_without_duplicates(
    make_server: Callable[..., Server],
    client_process: Callable[..., ClientProcess],
    raw_client: Factory,
    db: Path,
) -> None:
    port = free_port()
    server = make_server(db=db, port=port, **UNMETERED)
    watcher = client_process(port, "watcher")
    watcher.wait_for("connected")
    watcher.type("/join #ops")
    watcher.wait_for("system", event="joined", room="#ops")
    talker = raw_client(port)
    talker.login("talker")
    talker.send("join", room="#ops")
    talker.expect("joined")
    _say(talker, "before the outage")
    watcher.wait_for("message", text="before the outage")
    server.stop()
    watcher.wait_for("disconnected")
    watcher.wait_for("system", event="reconnecting")

    server = make_server(db=db, port=port, **UNMETERED)
    talker = raw_client(port)
    talker.login("talker")
    talker.send("join", room="#ops")
    talker.expect("joined")
    # More than the 20 a plain join replays: the gap fill must bring them all.
    for i in range(30):
        _say(talker, f"missed {i}", room="#ops")
    _say(talker, "general missed")
    watcher.wait_for("connected", timeout=15)
    for i in range(30):
        watcher.wait_for("message", text=f"missed {i}")
    watcher.wait_for("message", text="general missed")
    _say(talker, "live again", room="#ops")
    watcher.wait_for("message", text="live again")
    watcher.type("now in ops?")
    talker.expect("message", text="now in ops?", room="#ops")
    events = watcher.drain(0.5)
    texts = [e.get("text") for e in events if e["type"] == "message"]
    assert texts.count("before the outage") == 0  # already shown before the outage
    assert all(texts.count(f"missed {i}") == 0 for i in range(30))  # each shown once
    assert watcher.finish()[0] == 0


def test_message_ids_keep_increasing_across_restarts(
    make_server: Callable[..., Server], raw_client: Factory, db: Path
) -> None:
    last = 0
    for _ in range(3):
        server = make_server(db=db, **UNMETERED)
        alice = raw_client(server.address[1])
        alice.login("alice")
        first = _say(alice, "stored").get("id")
        unstored = _say(alice, "not stored", nolog=True).get("id")
        assert last < first < unstored
        last = unstored
        alice.close()
        server.stop()
        time.sleep(0.05)


def test_rename_keeps_the_opt_out(
    make_server: Callable[..., Server], raw_client: Factory, db: Path
) -> None:
    server = make_server(db=db, **UNMETERED)
    alice = raw_client(server.address[1])
    alice.login("alice")
    alice.send("history_mode", keep=False)
    alice.expect("history_status")
    alice.send("nick", name="alicia")
    alice.expect("nick")
    assert _say(alice, "renamed-canary").get("stored") is False
    alice.send("history_status")
    assert alice.expect("history_status").get("keep") is False
    server.stop()
    assert b"renamed-canary" not in _db_bytes(db)
