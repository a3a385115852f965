"""The server's SQLite store: accounts, rooms, memberships and messages. Knows nothing
of the network.

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

import datetime
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...wire.names import fold
from ..base import (
    KEY_TTL,
    Account,
    Committed,
    Draft,
    Membership,
    NewMessage,
    RoomRecord,
    SentKey,
    pair_key,
    utc_timestamp,
)
from .admin import SQLiteAdmin
from .files import create_private, make_private, refuse_foreign_file
from .maintenance import SQLiteMaintenance
from .numbering import Numbering
from .reads import SQLiteReads, store_errors
from .schema import FTS_SETUP, FTS_UNTRIGGER, MIGRATIONS, SCHEMA_VERSION

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

_SELECT_ACCOUNTS = "SELECT id, name, password, keep_history, role FROM accounts"


def _account(row: Sequence[Any]) -> Account:
    return Account(int(row[0]), row[1], row[2], bool(row[3]), row[4])


class SQLiteStore(SQLiteAdmin, SQLiteMaintenance, SQLiteReads):
    """The :class:`~securechat.store.base.Store` in one SQLite database file, opened,
    checked and migrated on construction."""

    def __init__(self, path: Path, *, durability: str = "normal") -> None:
        if durability not in ("normal", "full"):
            raise ConfigError(f"durability must be normal or full, not {durability!r}")
        self.path = path
        self._synchronous = durability.upper()
        refuse_foreign_file(path)
        create_private(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            self._db = self._connect()
            # Checked before anything is written: switching to WAL alone rewrites
            # the file header of a database that may not be ours.
            version = self._check_ownership()
            make_private(path)  # only now: a file that is not ours is left as it is
            self._db.execute("PRAGMA journal_mode=WAL")
            # Erased rows are overwritten, not just unlinked (see forget_sender).
            self._db.execute("PRAGMA secure_delete=ON")
            self._migrate(version)
            self.has_fts = self._ensure_fts()
            since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=KEY_TTL)
            self._numbering = Numbering(
                self.reserved_id(), self.load_last_seqs(), self.load_sent_keys(utc_timestamp(since))
            )
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
                self._transaction(FTS_UNTRIGGER)
            return True
        try:
            self._db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
            self._db.execute("DROP TABLE temp.fts5_probe")
        except sqlite3.OperationalError:
            return False  # no FTS5 in this SQLite: search falls back to LIKE
        self._transaction(FTS_SETUP)
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
        with self._lock, store_errors("read accounts"):
            rows = self._db.execute(_SELECT_ACCOUNTS + " WHERE NOT deleted").fetchall()
        return [_account(r) for r in rows]

    def load_former_names(self) -> dict[str, int]:
        """Every former name (folded) and the account it stays reserved for, and the
        names of deleted accounts (reserved for them for good)."""
        with self._lock, store_errors("read accounts"):
            rows = self._db.execute(
                "SELECT name_fold, account FROM former_names "
                "UNION ALL SELECT name_fold, id FROM accounts WHERE deleted"
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def load_rooms(self) -> list[RoomRecord]:
        """Every stored room."""
        with self._lock, store_errors("read rooms"):
            rows = self._db.execute("SELECT name, topic FROM rooms").fetchall()
        return [RoomRecord(r[0], r[1]) for r in rows]

    def load_memberships(self) -> list[Membership]:
        """Every membership."""
        with self._lock, store_errors("read memberships"):
            rows = self._db.execute("SELECT room, account FROM memberships").fetchall()
        return [Membership(r[0], int(r[1])) for r in rows]

    def load_sent_keys(self, since: str) -> list[SentKey]:
        """Idempotency keys of messages stored at or after ``since`` (ISO UTC)."""
        with self._lock, store_errors("read message keys"):
            rows = self._db.execute(
                "SELECT sender, client_key, id, ts, seq FROM messages "
                "WHERE client_key IS NOT NULL AND ts >= ?",
                (since,),
            ).fetchall()
        return [SentKey(int(r[0]), r[1], int(r[2]), r[3], r[4]) for r in rows]

    def load_last_seqs(self) -> dict[str, int]:
        """The highest sequence number of every conversation (room fold or pair key)."""
        with self._lock, store_errors("read sequence numbers"):
            rows = self._db.execute("SELECT key, last_seq FROM conversations").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- accounts ---------------------------------------------------------------------------

    def find_account(self, name: str) -> Account | None:
        """The account called ``name`` (in any case), or None."""
        with self._lock, store_errors("read accounts"):
            row = self._db.execute(
                _SELECT_ACCOUNTS + " WHERE name_fold = ? AND NOT deleted", (fold(name),)
            ).fetchone()
        return None if row is None else _account(row)

    def create_account(
        self,
        name: str,
        password: str | None,
        *,
        rooms: Sequence[str] = (),
        invite: str | None = None,
    ) -> Account | None:
        """Register ``name``, a member of ``rooms`` (folded names) from the start, in one
        transaction; None if the name (in any case) is taken or reserved, or ``invite``
        (a code's hash) cannot be used."""
        with self._lock, store_errors("create account"):
            if self._reserved_by(fold(name)) is not None:
                return None
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(
                    "INSERT INTO accounts (name, name_fold, password) VALUES (?, ?, ?)",
                    (name, fold(name), password),
                )
                assert cur.lastrowid is not None
                if invite is not None and not self._use_invite(invite, cur.lastrowid):
                    self._db.execute("ROLLBACK")
                    return None
                for room in rooms:
                    self._join(room, cur.lastrowid)
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                return None
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return Account(cur.lastrowid, name, password)

    def _use_invite(self, code_hash: str, account_id: int) -> bool:
        now = utc_timestamp()
        cur = self._db.execute(
            "UPDATE invites SET used_by = ?, used_at = ? "
            "WHERE code_hash = ? AND used_by IS NULL AND expires > ?",
            (account_id, now, code_hash, now),
        )
        return cur.rowcount == 1

    def _reserved_by(self, name_fold: str) -> int | None:
        row = self._db.execute(
            "SELECT account FROM former_names WHERE name_fold = ?", (name_fold,)
        ).fetchone()
        return int(row[0]) if row else None

    def rename_account(self, account_id: int, new_name: str) -> bool:
        """Rename an account, keeping its old name reserved for it; False if
        ``new_name`` belongs (or belonged) to another account."""
        new_fold = fold(new_name)
        with self._lock, store_errors("rename account"):
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
        with self._lock, store_errors("change history setting"):
            self._db.execute(
                "UPDATE accounts SET keep_history = ? WHERE id = ?", (int(keep), account_id)
            )

    # -- rooms, memberships and read markers (the writer thread) -------------------------------

    def save_room(self, room: RoomRecord) -> None:
        """Create the room, or update its display name and topic."""
        with self._lock, store_errors("save room"):
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
        with self._lock, store_errors("save membership"):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._join(room, account_id)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _join(self, room: str, account_id: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO memberships (room, account) VALUES (?, ?)", (room, account_id)
        )
        self._db.execute(
            "INSERT INTO read_markers (account, conversation, last_read) "
            "VALUES (?, ?, (SELECT coalesce(max(id), 0) FROM messages WHERE room = ?)) "
            "ON CONFLICT DO UPDATE SET last_read = max(last_read, excluded.last_read)",
            (account_id, room, room),
        )

    def remove_member(self, room: str, account_id: int) -> None:
        """End a membership; idempotent."""
        with self._lock, store_errors("save membership"):
            self._db.execute(
                "DELETE FROM memberships WHERE room = ? AND account = ?", (room, account_id)
            )

    def mark_read(self, account_id: int, conversation: str, message_id: int) -> None:
        """Move the account's read marker in ``conversation`` (room fold or pair key)
        forward to ``message_id``; never backward."""
        with self._lock, store_errors("save read marker"):
            self._db.execute(
                "INSERT INTO read_markers (account, conversation, last_read) VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET last_read = max(last_read, excluded.last_read)",
                (account_id, conversation, message_id),
            )

    # -- writing messages (the writer thread) --------------------------------------------------

    def last_id(self) -> int:
        """The highest message id handed out so far."""
        return self._numbering.last_id

    def commit_messages(self, drafts: Sequence[Draft]) -> list[Committed]:
        """Number ``drafts`` (see :mod:`.numbering`) and store the kept ones in one
        transaction; what each got. Raises StoreError with nothing written or used up."""
        plan = self._numbering.plan(drafts, utc_timestamp())
        if plan.rows or plan.reserve_id is not None:
            self._insert(plan.rows, plan.reserve_id)
        self._numbering.confirm(plan)
        return plan.committed

    def reserved_id(self) -> int:
        """The highest message id that may already have been handed out."""
        with self._lock, store_errors("read message ids"):
            (top,) = self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
            (reserved,) = self._db.execute(
                "SELECT value FROM meta WHERE key = 'reserved_id'"
            ).fetchone()
        return max(int(top), int(reserved))

    def insert_messages(self, rows: Sequence[NewMessage], *, reserve_id: int | None) -> None:
        """Store ``rows``, numbered by the caller (an import, a test's seed), in one
        transaction and move the id reservation, if given; later messages are numbered
        above them. Raises StoreError (disk full, read-only, ...) with nothing written.
        """
        self._insert(rows, reserve_id)
        self._numbering.seen(rows, reserve_id)

    def _insert(self, rows: Sequence[NewMessage], reserve_id: int | None) -> None:
        with self._lock, store_errors("store messages"):
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
                            m.action,
                        )
                    )
                self._db.executemany(
                    "INSERT INTO messages (id, ts, sender, room, room_name, recipient, pair, "
                    "text, seq, client_key, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
