"""The message writer on real SQLite files: its bounds and how it stops."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat.errors import StoreError
from securechat.server.writer import MAX_BACKLOG_BYTES, MessageWriter, Outgoing
from securechat.store.base import Account
from securechat.store.sqlite import SQLiteStore as Store
from securechat.wire.names import fold

ROOM = "#general"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "chat.db")
    yield store
    store.close()


@pytest.fixture
def alice(store: Store) -> Account:
    account = store.create_account("alice", None)
    assert account is not None
    return account


def _message(sender: Account, text: str, done: list[int]) -> Outgoing:
    def _on_done(message: Outgoing, error: StoreError | None) -> None:
        assert error is None
        done.append(message.id)

    return Outgoing(
        sender=sender.id, text=text, keep=False, room=fold(ROOM), room_name=ROOM, on_done=_on_done
    )


@pytest.mark.timeout(30)
def test_backlog_is_bounded_in_bytes_of_text_not_only_in_messages(
    store: Store, alice: Account
) -> None:
    writer = MessageWriter(store)  # not started yet: nothing leaves the queue
    big = "x" * (1024 * 1024)
    done: list[int] = []
    accepted = 0
    while writer.submit(_message(alice, big, done)):
        accepted += 1
        assert accepted < 100, "64 MiB of text was queued and more was accepted"
    assert accepted == MAX_BACKLOG_BYTES // sys.getsizeof(big)  # 63: far below MAX_BACKLOG
    assert writer.submit(_message(alice, "a short one still fits", done))
    writer.start()
    try:
        delivered = threading.Event()
        writer.run_in_order(delivered.set)
        assert delivered.wait(20)
        assert len(done) == accepted + 1
        assert writer.submit(_message(alice, big, done)), "the bound did not free up"
    finally:
        writer.stop()
