"""Databases made before the server starts, straight through the server's own store.

Filling a room through the server costs a round of TLS, parsing and group
commit per message, ~20 s for 150,000 of them on this machine; a scenario that
needs a big history makes it here in one transaction instead, the way the
writer thread would have stored it. The rows are indexed for search before the
server opens the file, as an old database would be: otherwise the server would
spend the first seconds of the measurement catching up with the index.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from securechat.server.passwords import hash_password
from securechat.store.base import NewMessage, RoomRecord, utc_timestamp
from securechat.store.sqlite import SQLiteStore
from securechat.wire.names import fold

from .common import FILLER, BenchError, password_of

__all__ = ["SeededRoom", "seed_database"]

BATCH = 10_000
"""Rows per ``insert_messages`` call: one transaction each, a few MiB of Python objects."""


@dataclass(frozen=True)
class SeededRoom:
    """What :func:`seed_database` stored: rows per sender, and the room's last seq."""

    room: str
    sent: dict[str, int]
    last_seq: int


def seed_database(path: Path, *, room: str, senders: Sequence[str], rows: int) -> SeededRoom:
    """Register ``senders`` (password :func:`~bench.common.password_of`), store ``rows``
    messages in ``room``, ~60 characters each, ids and ``seq`` 1 to ``rows``, and make
    the senders members who have read them all.

    The messages are dealt out in turn by the order of ``senders``, so a name that
    appears several times in it sends that much more of the room.
    """
    if not senders or rows < 1:
        raise BenchError("a seeded room needs at least one sender and one row")
    store = SQLiteStore(path)
    try:
        ids: dict[str, int] = {}
        for name in dict.fromkeys(senders):
            account = store.create_account(name, hash_password(password_of(name)))
            if account is None:
                raise BenchError(f"{path}: cannot register {name}")
            ids[name] = account.id
        sent = dict.fromkeys(ids, 0)
        # A minute per 60,000 rows, ending now: the stamps look like a busy room's.
        begin = datetime.datetime.now(datetime.UTC) - datetime.timedelta(milliseconds=rows)
        for first in range(1, rows + 1, BATCH):
            batch = []
            for seq in range(first, min(rows, first + BATCH - 1) + 1):
                name = senders[seq % len(senders)]
                sent[name] += 1
                batch.append(
                    NewMessage(
                        id=seq,
                        ts=utc_timestamp(begin + datetime.timedelta(milliseconds=seq)),
                        sender=ids[name],
                        text=f"{seq} {FILLER}",
                        room=fold(room),
                        room_name=room,
                        seq=seq,
                    )
                )
            store.insert_messages(batch, reserve_id=batch[-1].id)
        store.index_pending()
        # Members who have read it all: a returning account's login joins its rooms
        # (only a new one is put in #general), and nothing is left unread to count.
        store.save_room(RoomRecord(room))
        for account_id in ids.values():
            store.add_member(fold(room), account_id)
    finally:
        store.close()
    return SeededRoom(room, sent, rows)
