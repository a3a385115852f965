"""The Store contract: what every engine must do, whatever database is behind it.

Each test takes the ``store`` fixture, parametrised over the engines: SQLite, and
PostgreSQL (the cluster engine of issue 10, on a real server: marker ``cluster``). Tests
speak only the interface of securechat.store.base, never an engine's tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from securechat.store.base import Committed, Draft, RoomRecord, Store, pair_key
from securechat.store.postgres import PostgresStore
from securechat.store.records import Ban, Mute, RoomSettings
from securechat.store.sqlite import SQLiteStore

ENGINES: dict[str, Callable[[pytest.FixtureRequest], Store]] = {
    "sqlite": lambda request: SQLiteStore(request.getfixturevalue("tmp_path") / "c.db"),
    "postgres": lambda request: PostgresStore(request.getfixturevalue("postgres_url")),
}
"""Each engine, made for one test from the fixtures it needs."""

_NEEDS_SERVICES = {"postgres"}  # engines that run only where the cluster services do


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.cluster] if name in _NEEDS_SERVICES else [])
        for name in sorted(ENGINES)
    ]
)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    engine = ENGINES[request.param](request)
    yield engine
    engine.close()


def _to_dev(sender: int, text: str, *, key: str | None = None, keep: bool = True) -> Draft:
    return Draft(sender, text, keep, "#dev", "#Dev", key=key)


def _ids(results: list[Committed]) -> list[int]:
    return [r.id for r in results]


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


def test_commits_number_messages_and_recognise_repeated_keys(store: Store) -> None:
    alice = store.create_account("alice", None)
    bob = store.create_account("bob", None)
    assert alice is not None and bob is not None
    store.save_room(RoomRecord("#Dev"))
    first = store.commit_messages([_to_dev(alice.id, f"m{i}", key=f"k{i}") for i in (1, 2, 3)])
    assert [r.seq for r in first] == [1, 2, 3] and not any(r.duplicate for r in first)
    assert _ids(first) == sorted(_ids(first)) and len(set(_ids(first))) == 3
    assert store.last_id() == first[-1].id
    second = store.commit_messages(
        [
            _to_dev(alice.id, "not kept", keep=False),  # an id, no number, nothing stored
            Draft(alice.id, "psst", room=None, recipient=bob.id),  # its own conversation
            _to_dev(alice.id, "m2 again", key="k2"),  # a repeat: the original's numbers
            _to_dev(bob.id, "same key, other sender", key="k2"),
        ]
    )
    assert second[0].seq is None and second[0].id > first[-1].id
    assert second[1].seq == 1
    assert second[2] == Committed(first[1].id, first[1].ts, 2, duplicate=True)
    assert second[3].seq == 4 and not second[3].duplicate
    rows = store.room_history("#dev", after_seq=1, limit=10)
    assert [(r.seq, r.text) for r in rows] == [(2, "m2"), (3, "m3"), (4, "same key, other sender")]
    # Erasure leaves a hole; numbers are never handed out again.
    erased = store.forget_sender(alice.id, upto=store.last_id(), limit=100)
    assert erased == 4
    (after,) = store.commit_messages([_to_dev(bob.id, "after the hole")])
    assert after.seq == 5 and after.id > second[-1].id
    assert [r.seq for r in store.room_history("#dev", limit=10)] == [4, 5]


def test_a_key_repeated_within_one_group_is_stored_once(store: Store) -> None:
    alice = store.create_account("alice", None)
    assert alice is not None
    store.save_room(RoomRecord("#Dev"))
    first, again, other = store.commit_messages(
        [
            _to_dev(alice.id, "once", key="k1"),
            _to_dev(alice.id, "once", key="k1"),
            _to_dev(alice.id, "twice", key="k2"),
        ]
    )
    assert again == Committed(first.id, first.ts, first.seq, duplicate=True)
    assert (first.seq, other.seq) == (1, 2) and not other.duplicate
    assert [m.text for m in store.room_history("#dev", limit=10)] == ["once", "twice"]


def test_accounts_are_found_by_name_in_any_case_with_their_settings(store: Store) -> None:
    alice = store.create_account("Alice", "hash")
    assert alice is not None
    store.set_keep_history(alice.id, False)
    found = store.find_account("ALICE")
    assert found is not None
    assert (found.id, found.name, found.password) == (alice.id, "Alice", "hash")
    assert not found.keep_history
    assert store.find_account("nobody") is None


def test_search_finds_every_word_only_where_the_account_may_look(store: Store) -> None:
    alice = store.create_account("alice", None)
    bob = store.create_account("bob", None)
    carol = store.create_account("carol", None)
    assert alice is not None and bob is not None and carol is not None
    store.save_room(RoomRecord("#Dev"))
    store.commit_messages(
        [
            _to_dev(alice.id, "the release is on friday"),
            _to_dev(alice.id, "friday lunch"),
            Draft(alice.id, "secret release plan", recipient=bob.id),
            Draft(alice.id, "release notes for carol", recipient=carol.id),
        ]
    )
    store.index_pending()
    found = store.search(bob.id, ["#dev"], ["release"], limit=10)
    assert [m.text for m in found] == ["secret release plan", "the release is on friday"]
    assert [m.text for m in store.search(bob.id, ["#dev"], ["release", "friday"], limit=10)] == [
        "the release is on friday"
    ]
    assert store.search(bob.id, [], ["friday"], limit=10) == []  # not a member of #dev


def test_retention_deletes_the_oldest_first_in_slices(store: Store) -> None:
    alice = store.create_account("alice", None)
    assert alice is not None
    store.save_room(RoomRecord("#Dev"))
    store.commit_messages([_to_dev(alice.id, f"m{i}") for i in range(5)])
    future = "9999-01-01T00:00:00.000Z"
    assert store.delete_older_than(future, limit=3) == 3
    assert [m.text for m in store.room_history("#dev", limit=10)] == ["m3", "m4"]
    assert store.delete_older_than(future, limit=3) == 2
    assert store.delete_older_than("2000-01-01T00:00:00.000Z", limit=3) == 0
    assert store.sent_count(alice.id) == 0


def test_export_pages_through_what_the_account_sent_or_received(store: Store) -> None:
    alice = store.create_account("alice", None)
    bob = store.create_account("bob", None)
    assert alice is not None and bob is not None
    store.save_room(RoomRecord("#Dev"))
    results = store.commit_messages(
        [
            _to_dev(alice.id, "room"),
            Draft(bob.id, "to alice", recipient=alice.id),
            _to_dev(bob.id, "bob in room"),
        ]
    )
    page = store.export_page(alice.id, ["#dev"], after=0, limit=2)
    assert [m.text for m in page] == ["room", "to alice"]
    rest = store.export_page(alice.id, ["#dev"], after=page[-1].id, limit=2)
    assert [m.text for m in rest] == ["bob in room"]
    assert store.export_page(alice.id, [], after=results[-1].id, limit=2) == []


def test_an_action_keeps_its_flag_in_history_search_and_export(store: Store) -> None:
    alice = store.create_account("alice", None)
    bob = store.create_account("bob", None)
    assert alice is not None and bob is not None
    store.save_room(RoomRecord("#Dev"))
    store.commit_messages(
        [
            Draft(alice.id, "waves", room="#dev", room_name="#Dev", action=True),
            _to_dev(alice.id, "plain waves"),
            Draft(alice.id, "waves at bob", recipient=bob.id, action=True),
        ]
    )
    store.index_pending()
    assert [m.action for m in store.room_history("#dev", limit=10)] == [True, False]
    assert [m.action for m in store.private_history(alice.id, bob.id, limit=10)] == [True]
    assert [(m.text, m.action) for m in store.search(bob.id, ["#dev"], ["waves"], limit=10)] == [
        ("waves at bob", True),
        ("plain waves", False),
        ("waves", True),
    ]
    page = store.export_page(alice.id, ["#dev"], after=0, limit=10)
    assert [m.wire_fields().get("action") for m in page] == [True, None, True]


def test_unread_counts_follow_read_markers_forward_only(store: Store) -> None:
    alice = store.create_account("alice", None, rooms=["#general"])
    bob = store.create_account("bob", None, rooms=["#general"])
    assert alice is not None and bob is not None
    ids = _ids(
        store.commit_messages(
            [
                Draft(alice.id, "hello", room="#general", room_name="#general"),
                Draft(alice.id, "anyone?", room="#general", room_name="#general"),
                Draft(alice.id, "psst", recipient=bob.id),
                Draft(bob.id, "my own", room="#general", room_name="#general"),
            ]
        )
    )
    counts = {
        (u.conversation, u.is_room): (u.unread, u.first) for u in store.unread(bob.id, ["#general"])
    }
    assert counts == {("#general", True): (2, ids[0]), ("alice", False): (1, ids[2])}
    assert [m.text for m in store.unread_private(bob.id, limit=10)] == ["psst"]
    store.mark_read(bob.id, "#general", ids[1])
    store.mark_read(bob.id, "#general", ids[0])  # never backward
    store.mark_read(bob.id, pair_key(alice.id, bob.id), ids[2])
    assert store.unread(bob.id, ["#general"]) == []
    assert store.unread_private(bob.id, limit=10) == []


def test_history_pages_private_conversations_only_between_their_two_accounts(
    store: Store,
) -> None:
    alice = store.create_account("alice", None)
    bob = store.create_account("bob", None)
    carol = store.create_account("carol", None)
    assert alice is not None and bob is not None and carol is not None
    ids = _ids(
        store.commit_messages(
            [
                Draft(alice.id, "for bob", recipient=bob.id),
                Draft(alice.id, "for carol", recipient=carol.id),
                Draft(bob.id, "back to alice", recipient=alice.id),
            ]
        )
    )
    page = store.private_history(alice.id, bob.id, limit=10)
    assert [(m.text, m.sender, m.recipient, m.seq) for m in page] == [
        ("for bob", "alice", "bob", 1),
        ("back to alice", "bob", "alice", 2),
    ]
    assert [m.text for m in store.private_history(bob.id, alice.id, before=ids[2], limit=10)] == [
        "for bob"
    ]
    assert store.sent_count(alice.id) == 2


# -- administration and moderation (issue 11) ------------------------------------------------

_PAST, _NOW, _LATER = (
    "2000-01-01T00:00:00.000Z",
    "2025-06-01T00:00:00.000Z",
    "9999-01-01T00:00:00.000Z",
)


def test_roles_and_passwords_change_and_load_back(store: Store) -> None:
    alice = store.create_account("alice", "old-hash")
    assert alice is not None and alice.role == "user"
    store.set_role(alice.id, "admin")
    store.set_password(alice.id, "new-hash")
    found = store.find_account("alice")
    assert found is not None and (found.role, found.password) == ("admin", "new-hash")
    assert [(a.name, a.role) for a in store.load_accounts()] == [("alice", "admin")]


def test_a_deleted_account_is_gone_but_its_names_stay_reserved(store: Store) -> None:
    alice = store.create_account("Alice", "hash", rooms=["#general"])
    bob = store.create_account("bob", "hash", rooms=["#general"])
    assert alice is not None and bob is not None
    assert store.rename_account(alice.id, "alicia")
    store.save_room(RoomRecord("#Dev"))
    store.save_room_settings(RoomSettings("#dev", operators=frozenset({alice.id})))
    store.add_mute(Mute("#general", alice.id, by="bob"))
    store.commit_messages([Draft(bob.id, "to alicia", recipient=alice.id)])
    store.delete_account(alice.id)
    assert store.find_account("alicia") is None
    assert [a.name for a in store.load_accounts()] == ["bob"]
    assert store.load_former_names() == {"alice": alice.id, "alicia": alice.id}
    assert store.create_account("ALICIA", "x") is None
    assert store.create_account("alice", "x") is None
    assert not store.rename_account(bob.id, "alicia")
    assert {m.account for m in store.load_memberships()} == {bob.id}
    assert store.load_mutes(_NOW) == []
    assert store.load_room_settings() == []  # nothing left to set in #dev
    # bob keeps what he sent, under the name he sent it to
    assert [m.recipient for m in store.private_history(bob.id, alice.id, limit=5)] == ["alicia"]


def test_bans_by_account_fingerprint_and_network_expire_and_lift(store: Store) -> None:
    alice = store.create_account("alice", None)
    assert alice is not None
    store.add_ban(Ban("account", str(alice.id), "spam", "mod", _PAST, None))
    store.add_ban(Ban("fingerprint", "ab" * 32, "stolen laptop", "mod", _PAST, _LATER))
    store.add_ban(Ban("ip", "203.0.113.0/24", "flood", "mod", _PAST, "2020-01-01T00:00:00.000Z"))
    bans = {(b.kind, b.shown): (b.reason, b.expires) for b in store.load_bans(_NOW)}
    assert bans == {
        ("account", "alice"): ("spam", None),
        ("fingerprint", "ab" * 32): ("stolen laptop", _LATER),
    }
    assert {b.kind for b in store.load_bans(_PAST)} == {"account", "fingerprint", "ip"}
    store.add_ban(Ban("account", str(alice.id), "spam again", "admin", _NOW, _LATER))  # replaces
    assert [(b.reason, b.by) for b in store.load_bans(_NOW) if b.kind == "account"] == [
        ("spam again", "admin")
    ]
    assert store.remove_ban("account", str(alice.id))
    assert not store.remove_ban("account", str(alice.id))
    assert [b.kind for b in store.load_bans(_NOW)] == ["fingerprint"]


def test_an_invite_registers_one_account_before_it_expires(store: Store) -> None:
    invite = store.create_invite("h1", by="admin", expires=_LATER)
    expired = store.create_invite("h2", by="admin", expires=_PAST)
    revoked = store.create_invite("h3", by="admin", expires=_LATER)
    assert store.invite_usable("h1", _NOW) and not store.invite_usable("h2", _NOW)
    assert store.revoke_invite(revoked.id) and not store.revoke_invite(revoked.id)
    assert store.create_account("eve", "x", invite="h3") is None  # revoked
    assert store.create_account("eve", "x", invite="h2") is None  # expired
    assert store.create_account("eve", "x", invite="nope") is None
    assert store.find_account("eve") is None  # nothing was created by the refusals
    assert store.create_account("carol", "x", invite="h1") is not None
    assert store.create_account("dave", "x", invite="h1") is None  # used up
    assert not store.invite_usable("h1", _NOW)
    listed = {i.id: (i.by, i.used_by) for i in store.load_invites()}
    assert listed == {invite.id: ("admin", "carol"), expired.id: ("admin", None)}
    assert not store.revoke_invite(invite.id)  # a used invite is history


def test_room_settings_and_mutes_load_back(store: Store) -> None:
    alice = store.create_account("alice", None)
    bob = store.create_account("bob", None)
    assert alice is not None and bob is not None
    store.save_room(RoomRecord("#Dev"))
    settings = RoomSettings("#dev", True, True, frozenset({alice.id}), frozenset({bob.id}))
    store.save_room_settings(settings)
    assert store.load_room_settings() == [settings]
    store.save_room_settings(RoomSettings("#dev", operators=frozenset({alice.id})))
    assert store.load_room_settings() == [RoomSettings("#dev", operators=frozenset({alice.id}))]
    store.add_mute(Mute("#dev", bob.id, "alice", _PAST, _LATER))
    store.add_mute(Mute("#general", bob.id, "alice", _PAST, "2020-01-01T00:00:00.000Z"))
    assert store.load_mutes(_NOW) == [Mute("#dev", bob.id, "alice", _PAST, _LATER)]
    assert store.remove_mute("#dev", bob.id) and not store.remove_mute("#dev", bob.id)
    assert store.load_mutes(_NOW) == []


def test_stats_count_accounts_rooms_and_messages(store: Store) -> None:
    alice = store.create_account("alice", None, rooms=["#general"])
    assert alice is not None
    store.commit_messages([Draft(alice.id, "hi", room="#general", room_name="#general")])
    stats = store.stats()
    assert (stats.accounts, stats.rooms, stats.messages) == (1, 1, 1)
    assert stats.size_bytes > 0
