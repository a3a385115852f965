"""The server's SQLite database: accounts and message history. Knows nothing of the network.

Schema and upgrades
-------------------
The schema is versioned with ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes a
database from version ``i`` to ``i + 1`` inside one transaction, so a crash
mid-upgrade leaves the old version intact. A database from a newer securechat
is refused, as is any file that is not a securechat database: we never
overwrite what we do not own.

Connections
-----------
One *write* connection, guarded by a lock, serves the message writer thread
(group commits, erasure, retention) and the rare account updates. Readers
(history replay, search, export) each get a connection of their own per
thread, so a long read never waits for a commit and vice versa (WAL mode).

Durability
----------
WAL with ``synchronous=NORMAL`` (default): a committed message survives a
crash of the process, not necessarily a power loss. ``durability="full"``
(``synchronous=FULL``) also survives power loss, at the cost of an fsync per
commit, which group commit spreads over every message of the group.

Search uses FTS5 when this SQLite has it (detected when the database is
opened), else a LIKE scan. Every query is parameterised: no name or room is
ever interpolated into SQL.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from ..wire.names import fold
from .base import (
    Account,
    Membership,
    NewMessage,
    RoomRecord,
    SentKey,
    StoredMessage,
    UnreadCount,
    pair_key,
)

__all__ = ["MIGRATIONS", "PRIVATE_MODE", "SCHEMA_VERSION", "SQLiteStore"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_fold TEXT NOT NULL UNIQUE,
            password TEXT,
            created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
    ),
    (
        "ALTER TABLE accounts ADD COLUMN keep_history INTEGER NOT NULL DEFAULT 1",
        # Ids are assigned by the writer, not by SQLite, so that messages that are
        # never stored (opt-out, /nolog) still get unique, increasing ids.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            sender INTEGER NOT NULL REFERENCES accounts(id),
            room TEXT,
            room_name TEXT,
            recipient INTEGER REFERENCES accounts(id),
            pair TEXT,
            text TEXT NOT NULL,
            CHECK ((room IS NULL) = (recipient IS NOT NULL))
        )""",
        "CREATE INDEX messages_by_room ON messages(room, id) WHERE room IS NOT NULL",
        "CREATE INDEX messages_by_pair ON messages(pair, id) WHERE pair IS NOT NULL",
        "CREATE INDEX messages_by_sender ON messages(sender)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('reserved_id', 0)",
    ),
    (
        # A name an account gave up stays that account's: nobody else may register
        # it and pass for the person others knew by it.
        """CREATE TABLE former_names (
            name_fold TEXT PRIMARY KEY,
            account INTEGER NOT NULL REFERENCES accounts(id)
        )""",
    ),
    (
        # Rooms, memberships and read markers are chat state that must outlive a
        # connection and a restart (and be shared by several server processes).
        """CREATE TABLE rooms (
            name_fold TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            topic TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
        """CREATE TABLE memberships (
            room TEXT NOT NULL REFERENCES rooms(name_fold),
            account INTEGER NOT NULL REFERENCES accounts(id),
            PRIMARY KEY (room, account)
        ) WITHOUT ROWID""",
        """CREATE TABLE read_markers (
            account INTEGER NOT NULL REFERENCES accounts(id),
            conversation TEXT NOT NULL,
            last_read INTEGER NOT NULL,
            PRIMARY KEY (account, conversation)
        ) WITHOUT ROWID""",
        # The last sequence number handed out in each conversation: kept here, not
        # derived from the messages, so an erased tail is never numbered again.
        "CREATE TABLE conversations (key TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)"
        " WITHOUT ROWID",
        "ALTER TABLE messages ADD COLUMN seq INTEGER",
        "ALTER TABLE messages ADD COLUMN client_key TEXT",
        "CREATE INDEX messages_by_recipient ON messages(recipient, id) WHERE recipient IS NOT NULL",
        """UPDATE messages SET seq = n.seq FROM (
            SELECT id, row_number() OVER (PARTITION BY coalesce(room, pair) ORDER BY id) AS seq
            FROM messages) AS n WHERE n.id = messages.id""",
        "INSERT INTO conversations (key, last_seq) "
        "SELECT coalesce(room, pair), max(seq) FROM messages GROUP BY 1",
        # Rooms that have history come back under their latest display name.
        "INSERT INTO rooms (name_fold, name) "
        "SELECT room, room_name FROM (SELECT room, room_name, max(id) FROM messages "
        "WHERE room IS NOT NULL GROUP BY room)",
        "INSERT OR IGNORE INTO rooms (name_fold, name) VALUES ('#general', '#general')",
        # Every account was put in the default room at each login until now.
        "INSERT INTO memberships (room, account) SELECT '#general', id FROM accounts",
        # What existed before the upgrade counts as read: nobody is greeted by
        # thousands of "unread" messages they saw long ago.
        "INSERT INTO read_markers (account, conversation, last_read) SELECT id, '#general', "
        "(SELECT coalesce(max(id), 0) FROM messages) FROM accounts",
        """INSERT INTO read_markers (account, conversation, last_read)
            SELECT p.account, p.pair, (SELECT max(id) FROM messages WHERE pair = p.pair) FROM (
                SELECT sender AS account, pair FROM messages WHERE pair IS NOT NULL
                UNION SELECT recipient, pair FROM messages WHERE pair IS NOT NULL) AS p""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

log = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"

PRIVATE_MODE = 0o600
"""Mode of the database and its -wal and -shm files: they hold password hashes and
private messages, so only the server's own user may read them."""

_GROUP_AND_OTHERS = 0o077
_SIDE_FILES = ("-wal", "-shm")

# The search index trails the messages table: rows up to meta.indexed_id are
# indexed, later ones are indexed in batches by index_pending(), off the path
# that acknowledges messages (indexing a row costs three times storing it).
# Only indexed rows may be removed from the index: FTS5 cannot delete what it
# never saw.
_FTS_DELETE_TRIGGER = """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
    WHEN old.id <= (SELECT value FROM meta WHERE key = 'indexed_id') BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END"""

_FTS_SETUP = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='id')",
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('indexed_id', 0)",
    _FTS_DELETE_TRIGGER,
)

# An index made by an earlier build, kept current by an insert trigger: take the
# trigger away, and record that every row so far is indexed.
_FTS_UNTRIGGER = (
    "DROP TRIGGER messages_fts_insert",
    "DROP TRIGGER messages_fts_delete",
    "INSERT OR REPLACE INTO meta (key, value) "
    "SELECT 'indexed_id', coalesce(max(id), 0) FROM messages",
    _FTS_DELETE_TRIGGER,
)

_SELECT = """SELECT m.id, m.ts, s.name, m.room_name, r.name, m.text, m.seq
    FROM messages m JOIN accounts s ON s.id = m.sender LEFT JOIN accounts r ON r.id = m.recipient"""


# Unread: others' messages after the account's read marker in each conversation.
_UNREAD_ROOMS = """SELECT r.name, count(m.id), min(m.id) FROM json_each(?) j
    JOIN rooms r ON r.name_fold = j.value JOIN messages m ON m.room = j.value
    AND m.sender != ? AND m.id > coalesce((SELECT last_read FROM read_markers
        WHERE account = ? AND conversation = j.value), 0)
    GROUP BY j.value"""
_UNREAD_PRIVATE = """SELECT s.name, count(m.id), min(m.id)
    FROM messages m JOIN accounts s ON s.id = m.sender
    WHERE m.recipient = ? AND m.id > coalesce((SELECT last_read FROM read_markers
        WHERE account = ? AND conversation = m.pair), 0)
    GROUP BY m.pair"""
_UNREAD_PRIVATE_WHERE = """ WHERE m.recipient = ? AND m.id > coalesce((SELECT last_read
    FROM read_markers WHERE account = ? AND conversation = m.pair), 0) ORDER BY m.id LIMIT ?"""

_EXPORT_WHERE = (
    " WHERE m.id > ? AND (m.sender = ? OR m.recipient = ? "
    "OR m.room IN (SELECT value FROM json_each(?))) ORDER BY m.id LIMIT ?"
)


class SQLiteStore:
    """The :class:`~securechat.store.base.Store` in one SQLite database file, opened,
    checked and migrated on construction."""

    def __init__(self, path: Path, *, durability: str = "normal") -> None:
        if durability not in ("normal", "full"):
            raise ConfigError(f"durability must be normal or full, not {durability!r}")
        self.path = path
        self._synchronous = durability.upper()
        _refuse_foreign_file(path)
        _create_private(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            self._db = self._connect()
            # Checked before anything is written: switching to WAL alone rewrites
            # the file header of a database that may not be ours.
            version = self._check_ownership()
            _make_private(path)  # only now: a file that is not ours is left as it is
            self._db.execute("PRAGMA journal_mode=WAL")
            # Erased rows are overwritten, not just unlinked (see forget_sender).
            self._db.execute("PRAGMA secure_delete=ON")
            self._migrate(version)
            self.has_fts = self._ensure_fts()
        except BaseException as exc:
            if hasattr(self, "_db"):
                self._db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise ConfigError(f"cannot use database {path}: {exc}") from exc
            raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def close(self) -> None:
        """Close every connection."""
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        with self._lock:
            self._db.close()

    # -- schema ----------------------------------------------------------------------------

    def _check_ownership(self) -> int:
        """The schema version, after refusing files securechat did not write."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path} was written by a newer securechat (schema {version}, this "
                f"version knows {SCHEMA_VERSION}); upgrade securechat or use another --db"
            )
        if version == 0:
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise ConfigError(
                    f"{self.path} is an SQLite database but not a securechat one; "
                    "refusing to change it: pass another --db"
                )
        return int(version)

    def _migrate(self, version: int) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._transaction(MIGRATIONS[target - 1] + (f"PRAGMA user_version = {target:d}",))

    def _ensure_fts(self) -> bool:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'"
        ).fetchone()
        if exists:
            triggered = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'messages_fts_insert'"
            ).fetchone()
            if triggered:
                self._transaction(_FTS_UNTRIGGER)
            return True
        try:
            self._db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
            self._db.execute("DROP TABLE temp.fts5_probe")
        except sqlite3.OperationalError:
            return False  # no FTS5 in this SQLite: search falls back to LIKE
        self._transaction(_FTS_SETUP)
        return True

    def _transaction(self, statements: Sequence[str]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- start-up ------------------------------------------------------------------------------

    def load_accounts(self) -> list[Account]:
        """Every account."""
        with self._lock, _store_errors("read accounts"):
            rows = self._db.execute(
                "SELECT id, name, password, keep_history FROM accounts"
            ).fetchall()
        return [Account(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def load_former_names(self) -> dict[str, int]:
        """Every former name (folded) and the account it stays reserved for."""
        with self._lock, _store_errors("read accounts"):
            rows = self._db.execute("SELECT name_fold, account FROM former_names").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def load_rooms(self) -> list[RoomRecord]:
        """Every stored room."""
        with self._lock, _store_errors("read rooms"):
            rows = self._db.execute("SELECT name, topic FROM rooms").fetchall()
        return [RoomRecord(r[0], r[1]) for r in rows]

    def load_memberships(self) -> list[Membership]:
        """Every membership."""
        with self._lock, _store_errors("read memberships"):
            rows = self._db.execute("SELECT room, account FROM memberships").fetchall()
        return [Membership(r[0], int(r[1])) for r in rows]

    def load_sent_keys(self, since: str) -> list[SentKey]:
        """Idempotency keys of messages stored at or after ``since`` (ISO UTC)."""
        with self._lock, _store_errors("read message keys"):
            rows = self._db.execute(
                "SELECT sender, client_key, id, ts, seq FROM messages "
                "WHERE client_key IS NOT NULL AND ts >= ?",
                (since,),
            ).fetchall()
        return [SentKey(int(r[0]), r[1], int(r[2]), r[3], r[4]) for r in rows]

    def load_last_seqs(self) -> dict[str, int]:
        """The highest sequence number of every conversation (room fold or pair key)."""
        with self._lock, _store_errors("read sequence numbers"):
            rows = self._db.execute("SELECT key, last_seq FROM conversations").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- accounts ---------------------------------------------------------------------------

    def create_account(self, name: str, password: str | None) -> Account | None:
        """Register ``name``; None if the name (in any case) is taken or reserved."""
        with self._lock, _store_errors("create account"):
            if self._reserved_by(fold(name)) is not None:
                return None
            try:
                cur = self._db.execute(
                    "INSERT INTO accounts (name, name_fold, password) VALUES (?, ?, ?)",
                    (name, fold(name), password),
                )
            except sqlite3.IntegrityError:
                return None
        assert cur.lastrowid is not None
        return Account(cur.lastrowid, name, password)

    def _reserved_by(self, name_fold: str) -> int | None:
        row = self._db.execute(
            "SELECT account FROM former_names WHERE name_fold = ?", (name_fold,)
        ).fetchone()
        return int(row[0]) if row else None

    def rename_account(self, account_id: int, new_name: str) -> bool:
        """Rename an account, keeping its old name reserved for it; False if
        ``new_name`` belongs (or belonged) to another account."""
        new_fold = fold(new_name)
        with self._lock, _store_errors("rename account"):
            owner = self._reserved_by(new_fold)
            if owner is not None and owner != account_id:
                return False
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR IGNORE INTO former_names (name_fold, account) "
                    "SELECT name_fold, id FROM accounts WHERE id = ? AND name_fold != ?",
                    (account_id, new_fold),
                )
                cur = self._db.execute(
                    "UPDATE accounts SET name = ?, name_fold = ? WHERE id = ?",
                    (new_name, new_fold, account_id),
                )
                self._db.execute(
                    "DELETE FROM former_names WHERE name_fold = ? AND account = ?",
                    (new_fold, account_id),
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                return False
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def set_keep_history(self, account_id: int, keep: bool) -> None:
        """Opt an account into (or out of) having its messages stored."""
        with self._lock, _store_errors("change history setting"):
            self._db.execute(
                "UPDATE accounts SET keep_history = ? WHERE id = ?", (int(keep), account_id)
            )

    # -- rooms, memberships and read markers (the writer thread) -------------------------------

    def save_room(self, room: RoomRecord) -> None:
        """Create the room, or update its display name and topic."""
        with self._lock, _store_errors("save room"):
            self._db.execute(
                "INSERT INTO rooms (name_fold, name, topic) VALUES (?, ?, ?) "
                "ON CONFLICT (name_fold) DO UPDATE SET name = excluded.name, "
                "topic = excluded.topic",
                (fold(room.name), room.name, room.topic),
            )

    def add_member(self, room: str, account_id: int) -> None:
        """Make ``account_id`` a member of ``room`` (folded name); idempotent.

        What the room said before the account joined does not count as unread.
        """
        with self._lock, _store_errors("save membership"):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR IGNORE INTO memberships (room, account) VALUES (?, ?)",
                    (room, account_id),
                )
                self._db.execute(
                    "INSERT INTO read_markers (account, conversation, last_read) "
                    "VALUES (?, ?, (SELECT coalesce(max(id), 0) FROM messages WHERE room = ?)) "
                    "ON CONFLICT DO UPDATE SET last_read = max(last_read, excluded.last_read)",
                    (account_id, room, room),
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def remove_member(self, room: str, account_id: int) -> None:
        """End a membership; idempotent."""
        with self._lock, _store_errors("save membership"):
            self._db.execute(
                "DELETE FROM memberships WHERE room = ? AND account = ?", (room, account_id)
            )

    def mark_read(self, account_id: int, conversation: str, message_id: int) -> None:
        """Move the account's read marker in ``conversation`` (room fold or pair key)
        forward to ``message_id``; never backward."""
        with self._lock, _store_errors("save read marker"):
            self._db.execute(
                "INSERT INTO read_markers (account, conversation, last_read) VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET last_read = max(last_read, excluded.last_read)",
                (account_id, conversation, message_id),
            )

    # -- writing messages (the writer thread) --------------------------------------------------

    def reserved_id(self) -> int:
        """The highest message id that may already have been handed out."""
        with self._lock, _store_errors("read message ids"):
            (top,) = self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
            (reserved,) = self._db.execute(
                "SELECT value FROM meta WHERE key = 'reserved_id'"
            ).fetchone()
        return max(int(top), int(reserved))

    def insert_messages(self, rows: Sequence[NewMessage], *, reserve_id: int | None) -> None:
        """Store ``rows`` in one transaction (and move the id reservation, if given).

        Raises StoreError (disk full, read-only, ...) with nothing written.
        """
        with self._lock, _store_errors("store messages"):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                last_seqs: dict[str, int] = {}
                values = []
                for m in rows:
                    pair = pair_key(m.sender, m.recipient) if m.recipient is not None else None
                    if m.seq is not None:
                        last_seqs[m.room or pair or ""] = m.seq
                    values.append(
                        (
                            m.id,
                            m.ts,
                            m.sender,
                            m.room,
                            m.room_name,
                            m.recipient,
                            pair,
                            m.text,
                            m.seq,
                            m.key,
                        )
                    )
                self._db.executemany(
                    "INSERT INTO messages (id, ts, sender, room, room_name, recipient, pair, "
                    "text, seq, client_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                self._db.executemany(
                    "INSERT INTO conversations (key, last_seq) VALUES (?, ?) "
                    "ON CONFLICT DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                    last_seqs.items(),
                )
                if reserve_id is not None:
                    self._db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'reserved_id'", (reserve_id,)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def index_pending(self, limit: int | None = None) -> int:
        """Add up to ``limit`` (default: all) not yet indexed messages to the search
        index, in one transaction; returns how many. Idempotent after a crash."""
        if not self.has_fts:
            return 0
        with self._lock, _store_errors("index messages"):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                (done,) = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'indexed_id'"
                ).fetchone()
                (top, count) = self._db.execute(
                    "SELECT max(id), count(*) FROM (SELECT id FROM messages WHERE id > ? "
                    "ORDER BY id LIMIT ?)",
                    (done, -1 if limit is None else limit),
                ).fetchone()
                if count:
                    self._db.execute(
                        "INSERT INTO messages_fts (rowid, text) "
                        "SELECT id, text FROM messages WHERE id > ? AND id <= ?",
                        (done, top),
                    )
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'indexed_id'", (top,))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return int(count)

    def forget_sender(self, account_id: int, *, upto: int, limit: int) -> int:
        """Delete up to ``limit`` of the messages ``account_id`` sent with ids up to
        ``upto``, in one transaction; how many.

        ``secure_delete`` overwrites the rows, but their words stay in the search
        index and older page images in the write-ahead log until ``merge_index``
        and ``truncate_wal`` have run to the end: only then is the erasure complete.

        One gap remains, SQLite's: ``secure_delete`` clears deleted cells and freed
        pages, not the unused space of a page that a rebalance rebuilt, so a copy of
        a row (or index block) moved before its deletion can survive there; a large
        deletion leaves a few, one DELETE as much as many small ones. Only VACUUM
        rewrites every page.
        """
        with self._lock, _store_errors("erase messages"):
            cur = self._write(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE sender = ? AND id <= ? ORDER BY id LIMIT ?)",
                (account_id, upto, limit),
            )
        return int(cur.rowcount)

    def delete_older_than(self, cutoff: str, *, limit: int) -> int:
        """Retention: delete up to ``limit`` messages stamped before ``cutoff`` (ISO UTC),
        oldest first, in one transaction; how many (fewer than ``limit``: none is left).

        Messages are stamped in id order, so the expired ones are the first rows by
        id: each call deletes from the front and stops at the first message still
        kept, reading no more rows than it deletes (``ts`` has no index). A clock
        stepped back can only delay a deletion, never make one early. As with
        ``forget_sender``, ``merge_index`` and ``truncate_wal`` finish the erasure.
        """
        with self._lock, _store_errors("apply retention"):
            rows = self._db.execute(
                "SELECT id, ts FROM messages ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            expired = list(itertools.takewhile(lambda row: row[1] < cutoff, rows))
            if expired:
                self._write("DELETE FROM messages WHERE id <= ?", (expired[-1][0],))
        return len(expired)

    def merge_index(self, pages: int) -> int:
        """Merge about ``pages`` pages of the search index in one transaction; how many
        rows it wrote (about one per page): under 2 once the index is one segment.

        A deleted row only adds a tombstone to FTS5: its words stay in the older
        segments until those are merged with it. Repeated until it returns less
        than 2, this ends as FTS5's 'optimize' does (one segment, no deleted words)
        but in short steps: a negative 'merge' takes every segment into the merge,
        and with nothing else writing to the index meanwhile (the writer thread
        does both) the steps run that merge to its end.
        """
        if not self.has_fts:
            return 0
        with self._lock, _store_errors("merge the search index"):
            before = self._db.total_changes
            self._write(
                "INSERT INTO messages_fts (messages_fts, rank) VALUES ('merge', ?)", (-pages,)
            )
            return self._db.total_changes - before

    def truncate_wal(self) -> bool:
        """Copy the write-ahead log into the database and truncate it to nothing, so no
        older page image survives there; False, at once, if a reader still uses part
        of it (call again shortly).

        The passive checkpoint copies back what it can without waiting; the
        truncating one then has nothing left to copy, so it takes a moment, and
        readers that start meanwhile read the database file, not the log. Neither
        waits for a reader while holding up message commits.
        """
        with self._lock, _store_errors("truncate the write-ahead log"):
            (patience,) = self._db.execute("PRAGMA busy_timeout").fetchone()
            self._db.execute("PRAGMA busy_timeout = 0")
            try:
                busy, logged, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy or logged != copied:
                    return False
                (busy, _, _) = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                return not busy
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {int(patience):d}")

    def _write(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        """Run one statement in its own immediate transaction (write lock held)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(sql, params)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return cur

    # -- reading (any thread; each has its own connection) --------------------------------------

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            db.execute("PRAGMA query_only=ON")
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def _query(self, sql: str, params: Sequence[Any]) -> list[StoredMessage]:
        with _store_errors("read history"):
            rows = self._reader().execute(sql, params).fetchall()
        return [StoredMessage(*row) for row in rows]

    def room_history(
        self,
        room: str,
        *,
        before: int | None = None,
        after: int | None = None,
        after_seq: int | None = None,
        limit: int,
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of ``room`` (any case), oldest first.

        Without ``before``/``after``/``after_seq``: the latest. With ``after`` (an
        id) or ``after_seq``: the first ones after it.
        """
        return self._page(
            "m.room = ?", fold(room), before=before, after=after, after_seq=after_seq, limit=limit
        )

    def private_history(
        self,
        a: int,
        b: int,
        *,
        before: int | None = None,
        after: int | None = None,
        after_seq: int | None = None,
        limit: int,
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages between accounts ``a`` and ``b``, oldest first."""
        return self._page(
            "m.pair = ?",
            pair_key(a, b),
            before=before,
            after=after,
            after_seq=after_seq,
            limit=limit,
        )

    def _page(
        self,
        where: str,
        key: str,
        *,
        before: int | None,
        after: int | None,
        after_seq: int | None,
        limit: int,
    ) -> list[StoredMessage]:
        params: tuple[Any, ...] = (key,)
        if after_seq is not None:
            # Numbers rise with ids within a conversation: find the id of the last
            # message at or below the number by walking back from the newest, so
            # the cost is the messages missed, not the whole conversation.
            inner = where.replace("m.", "m2.")
            where += (
                " AND m.id > coalesce((SELECT m2.id FROM messages m2 WHERE "  # noqa: S608
                + inner
                + " AND m2.seq <= ? ORDER BY m2.id DESC LIMIT 1), 0)"
            )
            params += (key, after_seq)
        if before is not None:
            where += " AND m.id < ?"
            params += (before,)
        if after is not None:
            where += " AND m.id > ?"
            params += (after,)
        order = "ASC" if after is not None or after_seq is not None else "DESC"
        rows = self._query(
            f"{_SELECT} WHERE {where} ORDER BY m.id {order} LIMIT ?", (*params, limit)
        )
        return rows if order == "ASC" else rows[::-1]

    def search(
        self, account_id: int, rooms: Sequence[str], words: Sequence[str], *, limit: int
    ) -> list[StoredMessage]:
        """Messages ``account_id`` may see (its rooms, its private messages) that contain
        every word, newest first."""
        visible = (
            "(m.room IN (SELECT value FROM json_each(?)) "
            "OR (m.room IS NULL AND (m.sender = ? OR m.recipient = ?)))"
        )
        params: list[Any] = [json.dumps([fold(r) for r in rooms]), account_id, account_id]
        if self.has_fts:
            match = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            sql = (
                f"{_SELECT} JOIN messages_fts f ON f.rowid = m.id "
                f"WHERE f.messages_fts MATCH ? AND {visible} ORDER BY m.id DESC LIMIT ?"
            )
            return self._query(sql, [match, *params, limit])
        likes = " AND ".join("m.text LIKE ? ESCAPE '\\'" for _ in words)
        patterns = ["%" + _escape_like(w) + "%" for w in words]
        sql = f"{_SELECT} WHERE {likes} AND {visible} ORDER BY m.id DESC LIMIT ?"
        return self._query(sql, [*patterns, *params, limit])

    def export_page(
        self, account_id: int, rooms: Sequence[str], *, after: int, limit: int
    ) -> list[StoredMessage]:
        """The next ``limit`` messages after id ``after`` that ``account_id`` sent or
        received (private messages both ways, and the messages of its rooms)."""
        sql = _SELECT + _EXPORT_WHERE
        rooms_json = json.dumps([fold(r) for r in rooms])
        return self._query(sql, [after, account_id, account_id, rooms_json, limit])

    def sent_count(self, account_id: int) -> int:
        """How many stored messages ``account_id`` sent."""
        with _store_errors("count messages"):
            (count,) = (
                self._reader()
                .execute("SELECT count(*) FROM messages WHERE sender = ?", (account_id,))
                .fetchone()
            )
        return int(count)

    def unread(self, account_id: int, rooms: Sequence[str]) -> list[UnreadCount]:
        """Conversations with others' messages after the account's read marker: its
        ``rooms`` (folded names) and its private conversations."""
        with _store_errors("count unread messages"):
            db = self._reader()
            rooms_json = json.dumps(list(rooms))
            room_rows = db.execute(_UNREAD_ROOMS, (rooms_json, account_id, account_id)).fetchall()
            private_rows = db.execute(_UNREAD_PRIVATE, (account_id, account_id)).fetchall()
        return [UnreadCount(r[0], True, int(r[1]), int(r[2])) for r in room_rows] + [
            UnreadCount(r[0], False, int(r[1]), int(r[2])) for r in private_rows
        ]

    def unread_private(self, account_id: int, *, limit: int) -> list[StoredMessage]:
        """Private messages to the account after its read markers, oldest first."""
        return self._query(_SELECT + _UNREAD_PRIVATE_WHERE, (account_id, account_id, limit))


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@contextlib.contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """Convert sqlite3 errors into StoreError at this one boundary."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"cannot {action}: {exc}") from exc


def _refuse_foreign_file(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot read database {path}: {exc.strerror}") from exc
    if head and head != _SQLITE_MAGIC:
        raise ConfigError(
            f"{path} is not an SQLite database; refusing to overwrite it: pass another --db"
        )


def _create_private(path: Path) -> None:
    """Create a missing database file with ``PRIVATE_MODE``, before SQLite creates it
    with the default mode; SQLite gives the -wal and -shm files the database's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create database {path}: {exc.strerror}") from exc


def _make_private(path: Path) -> None:
    """Take access away from other users on the database files, saying so."""
    for file in (path, *(path.with_name(path.name + suffix) for suffix in _SIDE_FILES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & _GROUP_AND_OTHERS:
                file.chmod(mode & ~_GROUP_AND_OTHERS)
                log.warning(
                    "%s was open to other users (mode %03o); made it private (mode %03o)",
                    file,
                    mode,
                    mode & ~_GROUP_AND_OTHERS,
                )
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot make {file} private: {exc.strerror}") from exc
