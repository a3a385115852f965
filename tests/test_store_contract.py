"""The Store contract: what every engine must do, whatever database is behind it.

Each test takes the ``store`` fixture, parametrised over the engines (SQLite today;
the cluster engine of issue 10 joins the list and must pass the same tests). Tests speak only
the interface of securechat.store.base, never an engine's tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securechat.store.base import NewMessage, RoomRecord, Store, pair_key, utc_timestamp
from securechat.store.sqlite import SQLiteStore

ENGINES: dict[str, Callable[[Path], Store]] = {"sqlite": lambda tmp: SQLiteStore(tmp / "c.db")}


@pytest.fixture(params=sorted(ENGINES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    engine = ENGINES[request.param](tmp_path)
    yield engine
    engine.close()


def _room_message(
    id_: int, sender: int, text: str, *, seq: int, key: str | None = None
) -> NewMessage:
    return NewMessage(id_, utc_timestamp(), sender, text, "#dev", "#Dev", seq=seq, key=key)


def test_accounts_register_once_and_rename_keeps_the_old_name_reserved(store: Store) -> None:
    alice = store.create_account("Alice", "hash", rooms=[])
    assert alice is not None and alice.name == "Alice"
    assert store.create_account("ALICE", "other") is None  # names are unique in any case
    assert store.rename_account(alice.id, "alicia")
    bob = store.create_account("bob", None)
    assert bob is not None
    assert not store.rename_account(bob.id, "alice")  # reserved for alice's account
    assert store.create_account("alice", "x") is None
    assert store.rename_account(alice.id, "Alice")  # the owner may take it back
    assert {a.name for a in store.load_accounts()} == {"Alice", "bob"}
    assert store.load_former_names() == {"alicia": alice.id}


def test_rooms_memberships_and_topics_load_back(store: Store) -> None:
    alice = store.create_account("alice", None, rooms=["#general"])
    assert alice is not None
    store.save_room(RoomRecord("#Dev"))
    store.save_room(RoomRecord("#Dev", "release friday"))
    store.add_member("#dev", alice.id)
    store.add_member("#dev", alice.id)  # idempotent
    rooms = {r.name: r.topic for r in store.load_rooms()}
    assert rooms["#Dev"] == "release friday" and "#general" in rooms
    assert {(m.room, m.account) for m in store.load_memberships()} == {
        ("#general", alice.id),
        ("#dev", alice.id),
    }
    store.remove_member("#dev", alice.id)
    assert {m.room for m in store.load_memberships()} == {"#general"}


def test_sequence_numbers_and_keys_survive_in_the_store(store: Store) -> None:
    alice = store.create_account("alice", None)
    assert alice is not None
    store.save_room(RoomRecord("#Dev"))
    store.insert_messages(
        [_room_message(i, alice.id, f"m{i}", seq=i, key=f"k{i}") for i in (1, 2, 3)],
        reserve_id=1024,
    )
    assert store.reserved_id() == 1024
    assert store.load_last_seqs() == {"#dev": 3}
    keys = {k.key: (k.id, k.seq) for k in store.load_sent_keys("2000-01-01T00:00:00.000Z")}
    assert keys == {"k1": (1, 1), "k2": (2, 2), "k3": (3, 3)}
    rows = store.room_history("#dev", after_seq=1, limit=10)
    assert [(r.seq, r.text) for r in rows] == [(2, "m2"), (3, "m3")]
    # Erasure leaves a hole; numbers are never handed out again.
    erased = store.forget_sender(alice.id, upto=3, limit=100)
    assert erased == 3 and store.load_last_seqs() == {"#dev": 3}


def test_unread_counts_follow_read_markers_forward_only(store: Store) -> None:
    alice = store.create_account("alice", None, rooms=["#general"])
    bob = store.create_account("bob", None, rooms=["#general"])
    assert alice is not None and bob is not None
    ts = utc_timestamp()
    store.insert_messages(
        [
            NewMessage(1, ts, alice.id, "hello", "#general", "#general", seq=1),
            NewMessage(2, ts, alice.id, "anyone?", "#general", "#general", seq=2),
            NewMessage(3, ts, alice.id, "psst", recipient=bob.id, seq=1),
            NewMessage(4, ts, bob.id, "my own", "#general", "#general", seq=3),
        ],
        reserve_id=None,
    )
    counts = {
        (u.conversation, u.is_room): (u.unread, u.first) for u in store.unread(bob.id, ["#general"])
    }
    assert counts == {("#general", True): (2, 1), ("alice", False): (1, 3)}
    assert [m.text for m in store.unread_private(bob.id, limit=10)] == ["psst"]
    store.mark_read(bob.id, "#general", 2)
    store.mark_read(bob.id, "#general", 1)  # never backward
    store.mark_read(bob.id, pair_key(alice.id, bob.id), 3)
    assert store.unread(bob.id, ["#general"]) == []
    assert store.unread_private(bob.id, limit=10) == []


def test_history_pages_private_conversations_only_between_their_two_accounts(
    store: Store,
) -> None:
    alice = store.create_account("alice", None)
    bob = store.create_account("bob", None)
    carol = store.create_account("carol", None)
    assert alice is not None and bob is not None and carol is not None
    ts = utc_timestamp()
    store.insert_messages(
        [
            NewMessage(1, ts, alice.id, "for bob", recipient=bob.id, seq=1),
            NewMessage(2, ts, alice.id, "for carol", recipient=carol.id, seq=1),
            NewMessage(3, ts, bob.id, "back to alice", recipient=alice.id, seq=2),
        ],
        reserve_id=None,
    )
    page = store.private_history(alice.id, bob.id, limit=10)
    assert [(m.text, m.sender, m.recipient, m.seq) for m in page] == [
        ("for bob", "alice", "bob", 1),
        ("back to alice", "bob", "alice", 2),
    ]
    assert [m.text for m in store.private_history(bob.id, alice.id, before=3, limit=10)] == [
        "for bob"
    ]
    assert store.sent_count(alice.id) == 2
