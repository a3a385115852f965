"""The search index trails the messages table; these pin its invariants on real SQLite files."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from securechat.server.writer import MessageWriter
from securechat.store.base import NewMessage, utc_timestamp
from securechat.store.sqlite import SQLiteStore as Store


def _fill(store: Store, sender: int, texts: list[str], first_id: int = 1) -> None:
    ts = utc_timestamp()
    rows = [
        NewMessage(first_id + i, ts, sender, text, "#general", "#general")
        for i, text in enumerate(texts)
    ]
    store.insert_messages(rows, reserve_id=None)


def _fts_ok(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_stored_rows_are_searchable_only_once_indexed(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    alice = store.create_account("alice", None)
    assert alice is not None
    _fill(store, alice.id, ["apple pie", "apple tart", "pear"])
    assert store.search(alice.id, ["#general"], ["apple"], limit=10) == []
    assert store.index_pending(limit=1) == 1
    assert [m.text for m in store.search(alice.id, ["#general"], ["apple"], limit=10)] == [
        "apple pie"
    ]
    assert store.index_pending() == 2
    assert store.index_pending() == 0
    assert len(store.search(alice.id, ["#general"], ["apple"], limit=10)) == 2
    store.close()
    _fts_ok(tmp_path / "s.db")


def test_forgetting_partly_indexed_messages_keeps_the_index_sound(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    alice, bob = store.create_account("alice", None), store.create_account("bob", None)
    assert alice is not None and bob is not None
    _fill(store, alice.id, [f"secret plan {i}" for i in range(10)])
    store.index_pending(limit=4)
    _fill(store, bob.id, ["bob says plan"], first_id=11)
    assert store.forget_sender(alice.id, upto=10, limit=3) == 3
    assert store.forget_sender(alice.id, upto=10, limit=100) == 7
    assert store.forget_sender(alice.id, upto=11, limit=100) == 0  # bob's is not alice's
    while store.merge_index(4) >= 2:
        pass
    assert store.truncate_wal()
    store.index_pending()
    found = store.search(bob.id, ["#general"], ["plan"], limit=10)
    assert [m.text for m in found] == ["bob says plan"]
    store.close()
    _fts_ok(tmp_path / "s.db")
    assert b"secret plan" not in (tmp_path / "s.db").read_bytes()


def test_index_made_by_an_insert_trigger_is_taken_over(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = Store(db)
    alice = store.create_account("alice", None)
    assert alice is not None
    store.close()
    with sqlite3.connect(db) as conn:  # what an earlier build left behind
        conn.execute(
            """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
                INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
            END"""
        )
        conn.execute(
            "INSERT INTO messages (id, ts, sender, room, room_name, text) "
            "VALUES (7, '2026-01-01T00:00:00.000Z', ?, '#general', '#general', 'legacy words')",
            (alice.id,),
        )
    store = Store(db)
    assert store.index_pending() == 0  # the trigger had indexed it already
    assert [m.id for m in store.search(alice.id, ["#general"], ["legacy"], limit=5)] == [7]
    _fill(store, alice.id, ["newer words"], first_id=8)
    assert store.search(alice.id, ["#general"], ["newer"], limit=5) == []  # no trigger now
    store.close()
    _fts_ok(db)


def test_writer_indexes_what_an_earlier_run_left_unindexed(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = Store(db)
    alice = store.create_account("alice", None)
    assert alice is not None
    _fill(store, alice.id, ["stored before a crash"])  # never indexed
    writer = MessageWriter(store)
    writer.start()
    deadline = time.monotonic() + 5
    while not store.search(alice.id, ["#general"], ["crash"], limit=5):
        assert time.monotonic() < deadline, "the writer did not catch up on start"
        time.sleep(0.02)
    writer.stop()
    store.close()
