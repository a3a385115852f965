"""What only a shared engine has to get right: several stores (servers) on one database.

Two PostgresStore instances on the same database stand for two server processes.
Everything runs against a real PostgreSQL server (tests/services.py), which some
tests stop and start again.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from securechat.errors import ConfigError, StoreError
from securechat.store.base import KEY_TTL, Account, Committed, Draft, RoomRecord, pair_key
from securechat.store.postgres import SCHEMA_VERSION, PostgresStore, migrate
from tests.scripted import wait_until
from tests.services import PostgresServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


@pytest.fixture
def open_store(postgres_url: str) -> Iterator[Callable[[], PostgresStore]]:
    """Open stores on the test's database (servers sharing it); all closed afterwards."""
    opened: list[PostgresStore] = []

    def _open() -> PostgresStore:
        store = PostgresStore(postgres_url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def _accounts(store: PostgresStore, *names: str) -> list[Account]:
    made = [store.create_account(name, None, rooms=["#general"]) for name in names]
    assert all(a is not None for a in made)
    return [a for a in made if a is not None]


def _sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the engine's tables directly (what no interface shows)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def test_two_servers_committing_at_once_number_every_conversation_without_holes(
    open_store: Callable[[], PostgresStore],
) -> None:
    one, two = open_store(), open_store()
    alice, bob, carol = _accounts(one, "alice", "bob", "carol")
    one.save_room(RoomRecord("#Dev"))
    senders = [alice, bob, carol]
    got: dict[str, list[tuple[int, int]]] = defaultdict(list)  # conversation: (seq, id)
    ids: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def _send(store: PostgresStore, worker: int) -> None:
        start.wait()
        last = 0
        for group in range(25):
            drafts = []
            for n in range(20):
                sender = senders[(worker + n) % 3]
                if n % 4 == 0:  # a private message to the next account
                    other = senders[(worker + n + 1) % 3]
                    drafts.append(Draft(sender.id, f"{worker}/{group}/{n}", recipient=other.id))
                else:
                    room = ("#dev", "#Dev") if n % 2 else ("#general", "#general")
                    drafts.append(
                        Draft(
                            sender.id,
                            f"{worker}/{group}/{n}",
                            keep=n != 7,
                            room=room[0],
                            room_name=room[1],
                        )
                    )
            results = store.commit_messages(drafts)
            assert min(r.id for r in results) > last  # later commits, higher ids
            last = max(r.id for r in results)
            with lock:
                ids.extend(r.id for r in results)
                for draft, result in zip(drafts, results, strict=True):
                    if result.seq is not None:
                        got[draft.conversation].append((result.seq, result.id))

    threads = [
        threading.Thread(target=_send, args=(store, worker))
        for worker, store in enumerate([one, two, one, two])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(ids) == len(set(ids)) == 4 * 25 * 20
    assert two.last_id() == max(ids)
    assert set(got) == {
        "#general",
        "#dev",
        *(pair_key(a.id, b.id) for a, b in [(alice, bob), (bob, carol), (carol, alice)]),
    }
    for conversation, numbered in got.items():
        numbered.sort()
        assert [seq for seq, _ in numbered] == list(range(1, len(numbered) + 1)), conversation
        assert [i for _, i in numbered] == sorted(i for _, i in numbered), conversation
    stored = two.room_history("#dev", limit=10_000)
    assert [(m.seq, m.id) for m in stored] == got["#dev"]


def test_two_servers_migrating_a_fresh_database_at_once_both_succeed(postgres_url: str) -> None:
    start = threading.Barrier(3)
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    migrated: list[int] = []

    def _open() -> None:
        start.wait()
        try:
            stores.append(PostgresStore(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    def _migrate() -> None:
        start.wait()
        migrated.append(migrate(postgres_url))

    threads = [threading.Thread(target=t) for t in (_open, _open, _migrate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert errors == [] and len(stores) == 2 and len(migrated) == 1
        assert _sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        alice = stores[0].create_account("alice", None)
        assert alice is not None
        assert stores[1].find_account("ALICE") == alice
        assert migrate(postgres_url) == SCHEMA_VERSION  # nothing left to do
    finally:
        for store in stores:
            store.close()


def test_a_key_resent_through_the_other_server_is_a_duplicate(
    open_store: Callable[[], PostgresStore],
) -> None:
    one, two = open_store(), open_store()
    (alice,) = _accounts(one, "alice")
    (first,) = one.commit_messages([Draft(alice.id, "hi", room="#general", key="k1")])
    (again,) = two.commit_messages([Draft(alice.id, "hi", room="#general", key="k1")])
    assert again == Committed(first.id, first.ts, first.seq, duplicate=True)
    assert [m.text for m in two.room_history("#general", limit=10)] == ["hi"]


def test_keys_stored_at_the_same_moment_by_two_servers_store_one_message(
    open_store: Callable[[], PostgresStore], postgres_url: str
) -> None:
    """The race the unique index settles: the other server's insert of the same key
    waits for it, fails once it commits, and its group is committed again."""
    store = open_store()
    (alice,) = _accounts(store, "alice")
    results: list[list[Committed]] = []
    with psycopg.connect(postgres_url) as other_server:
        other_server.execute(  # stored, not committed yet
            "INSERT INTO messages (id, ts, sender, room, room_name, text, seq, client_key) "
            "VALUES (1000000, now(), %s, '#general', '#general', 'first', 1, 'k1')",
            (alice.id,),
        )
        drafts = [
            Draft(alice.id, "before", room="#general"),
            Draft(alice.id, "first", room="#general", key="k1"),
        ]
        sender = threading.Thread(target=lambda: results.append(store.commit_messages(drafts)))
        sender.start()
        wait_until(
            lambda: (
                _sql(
                    postgres_url,
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'INSERT INTO messages%%'",
                )
                == [(1,)]
            ),
            "the store's insert to wait for the other server's",
        )
        other_server.commit()
    sender.join(10)
    (before, first) = results[0]
    assert not before.duplicate and before.seq is not None
    assert first.duplicate and first.id == 1000000
    texts = [m.text for m in store.room_history("#general", limit=10)]
    assert texts.count("first") == 1 and "before" in texts


def test_a_key_older_than_its_time_to_live_is_new_again(
    open_store: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store = open_store()
    (alice,) = _accounts(store, "alice")
    (old,) = store.commit_messages([Draft(alice.id, "monday", room="#general", key="k1")])
    _sql(
        postgres_url,
        "UPDATE messages SET ts = ts - make_interval(secs => %s)",
        (KEY_TTL + 1,),
    )
    (new,) = store.commit_messages([Draft(alice.id, "tuesday", room="#general", key="k1")])
    assert not new.duplicate and new.id > old.id and new.seq == 2
    (repeat,) = store.commit_messages([Draft(alice.id, "tuesday", room="#general", key="k1")])
    assert repeat == Committed(new.id, new.ts, 2, duplicate=True)


def test_a_postgres_restart_fails_calls_while_down_and_loses_nothing_acknowledged(
    open_store: Callable[[], PostgresStore], postgres_server: PostgresServer
) -> None:
    store = open_store()
    (alice,) = _accounts(store, "alice")
    acknowledged = store.commit_messages(
        [Draft(alice.id, f"before {i}", room="#general") for i in range(5)]
    )
    postgres_server.stop()
    with pytest.raises(StoreError):
        store.commit_messages([Draft(alice.id, "while down", room="#general")])
    with pytest.raises(StoreError):
        store.mark_read(alice.id, "#general", acknowledged[-1].id)
    with pytest.raises(StoreError):
        store.room_history("#general", limit=10)
    postgres_server.start()
    # The writer's connection died with the server: the first commit replaces it.
    (after,) = store.commit_messages([Draft(alice.id, "after", room="#general")])
    assert after.seq == 6 and after.id > acknowledged[-1].id
    texts = [m.text for m in store.room_history("#general", limit=10)]
    assert texts == [f"before {i}" for i in range(5)] + ["after"]
    assert store.find_account("alice") == alice


def test_a_restart_between_two_commits_goes_unnoticed_by_the_writer(
    open_store: Callable[[], PostgresStore], postgres_server: PostgresServer
) -> None:
    store = open_store()
    (alice,) = _accounts(store, "alice")
    store.commit_messages([Draft(alice.id, "one", room="#general")])
    postgres_server.stop()
    postgres_server.start()
    # Nothing of a transaction that finds its connection dead was committed: it is
    # run again on a new connection rather than failing the group.
    (two,) = store.commit_messages([Draft(alice.id, "two", room="#general")])
    assert two.seq == 2


def test_an_erasure_is_followed_by_a_vacuum_of_the_messages(
    open_store: Callable[[], PostgresStore], postgres_url: str
) -> None:
    store = open_store()
    alice, bob = _accounts(store, "alice", "bob")
    store.commit_messages([Draft(alice.id, f"secret {i}", room="#general") for i in range(50)])
    store.commit_messages([Draft(bob.id, "kept", room="#general")])
    while store.forget_sender(alice.id, upto=store.last_id(), limit=20) == 20:
        pass
    assert store.merge_index(100) == 0
    assert store.truncate_wal()
    wait_until(
        lambda: (
            _sql(
                postgres_url,
                "SELECT n_dead_tup FROM pg_stat_user_tables "
                "WHERE relname = 'messages' AND last_vacuum IS NOT NULL",
            )
            == [(0,)]
        ),
        "VACUUM of messages",
        timeout=30,
    )
    assert store.search(bob.id, ["#general"], ["secret"], limit=10) == []
    assert [m.text for m in store.room_history("#general", limit=10)] == ["kept"]


def test_an_unreachable_or_refused_server_is_a_config_error_without_the_password(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    wrong = postgres_url.replace(":securechat-test@", ":wrong-password@")
    with pytest.raises(ConfigError) as refused:
        PostgresStore(wrong)
    assert "wrong-password" not in str(refused.value)
    assert f"127.0.0.1:{postgres_server.port}/" in str(refused.value)
    nowhere = postgres_url.replace(f":{postgres_server.port}/", ":1/")
    with pytest.raises(ConfigError, match="check that PostgreSQL runs there"):
        PostgresStore(nowhere)


def test_a_database_that_is_not_ours_or_is_newer_is_refused(postgres_url: str) -> None:
    _sql(postgres_url, "CREATE TABLE invoices (id int)")
    with pytest.raises(ConfigError, match="not a securechat database"):
        PostgresStore(postgres_url)
    _sql(postgres_url, "DROP TABLE invoices")
    PostgresStore(postgres_url).close()
    _sql(postgres_url, "UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer securechat"):
        PostgresStore(postgres_url)
