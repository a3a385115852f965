"""The PostgreSQL store: the chat state several server processes share.

PostgreSQL is the truth for every server of a cluster: accounts, rooms,
memberships, topics, messages, read markers and search. Nothing is cached here
between calls; a server's in-memory directories are its own business.

Connections (see :mod:`.connections`): a pool for readers and account work on
other threads, one connection for the writer thread. Durability is PostgreSQL's:
with its default ``synchronous_commit = on`` a message is acknowledged only once
its COMMIT is on the database server's disk (a warning is logged at start-up if
the server is set to ``off``). ``--durability`` is an SQLite setting.

Names are unique in any case (folded with :func:`securechat.wire.names.fold`), and
a former name stays reserved for its account. Registrations and renames take a
transaction-level advisory lock, so two servers cannot hand the same name out at
once (or hand out a name while another server is reserving it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ...errors import ConfigError
from ...wire.names import fold
from ..base import Account, Committed, Draft, Membership, RoomRecord, utc_timestamp
from .admin import PostgresAdmin
from .connections import WriterConnection, describe, open_pool, store_errors
from .maintenance import PostgresMaintenance, Vacuum
from .numbering import commit_drafts
from .reads import PostgresReads
from .schema import apply_migrations, unreachable

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

READERS = 4
"""Pooled connections at most per store: the server's history and login threads."""

# Taken by every registration and rename, in every server: names change one at a time.
_NAMES_LOCK = 0x5EC7_0A3E

_SELECT_ACCOUNTS = "SELECT id, name, password, keep_history, role FROM accounts"

_JOIN = "INSERT INTO memberships (room, account) VALUES (%s, %s) ON CONFLICT DO NOTHING"
# What the room said before the account joined does not count as unread.
_READ_ON_JOIN = """INSERT INTO read_markers (account, conversation, last_read)
    VALUES (%s, %s, (SELECT coalesce(max(id), 0) FROM messages WHERE room = %s))
    ON CONFLICT (account, conversation)
    DO UPDATE SET last_read = greatest(read_markers.last_read, excluded.last_read)"""


class PostgresStore(PostgresAdmin, PostgresMaintenance, PostgresReads):
    """The :class:`~securechat.store.base.Store` in a PostgreSQL database, reached at
    ``url`` (``postgresql://user:password@host:port/dbname``) and migrated on
    construction. ConfigError if it cannot be reached or is not ours."""

    has_fts = True

    def __init__(self, url: str, *, readers: int = READERS) -> None:
        self.where = describe(url)
        """Where the database is, for messages (no password)."""
        try:
            self._writer = WriterConnection(url)
        except psycopg.Error as exc:
            raise ConfigError(unreachable(self.where, exc)) from exc
        try:
            apply_migrations(self._writer.connection, self.where)
            self._warn_if_commits_are_not_durable()
            self._pool = open_pool(url, size=readers)
        except psycopg.Error as exc:
            self._writer.close()
            raise ConfigError(unreachable(self.where, exc)) from exc
        except BaseException:
            self._writer.close()
            raise
        self._vacuum = Vacuum(url)

    def _warn_if_commits_are_not_durable(self) -> None:
        row = self._writer.connection.execute("SHOW synchronous_commit").fetchone()
        if row is not None and row[0] == "off":
            log.warning(
                "PostgreSQL at %s has synchronous_commit = off: an acknowledged message "
                "can be lost if PostgreSQL crashes",
                self.where,
            )

    def close(self) -> None:
        """Close every connection; the store is unusable afterwards."""
        self._vacuum.close()
        self._pool.close()
        self._writer.close()

    # -- start-up ----------------------------------------------------------------------

    def load_accounts(self) -> list[Account]:
        """Every account."""
        rows = self._rows("read accounts", _SELECT_ACCOUNTS + " WHERE NOT deleted", ())
        return [Account(*r) for r in rows]

    def load_former_names(self) -> dict[str, int]:
        """Every former name (folded) and the account it stays reserved for, and the
        names of deleted accounts (reserved for them for good)."""
        rows = self._rows(
            "read accounts",
            "SELECT name_fold, account FROM former_names "
            "UNION ALL SELECT name_fold, id FROM accounts WHERE deleted",
            (),
        )
        return {r[0]: int(r[1]) for r in rows}

    def load_rooms(self) -> list[RoomRecord]:
        """Every stored room."""
        return [
            RoomRecord(r[0], r[1])
            for r in self._rows("read rooms", "SELECT name, topic FROM rooms", ())
        ]

    def load_memberships(self) -> list[Membership]:
        """Every membership."""
        rows = self._rows("read memberships", "SELECT room, account FROM memberships", ())
        return [Membership(r[0], int(r[1])) for r in rows]

    def load_last_seqs(self) -> dict[str, int]:
        """The highest sequence number of every conversation (room fold or pair key)."""
        rows = self._rows("read sequence numbers", "SELECT key, last_seq FROM conversations", ())
        return {r[0]: int(r[1]) for r in rows}

    # -- accounts (login and account threads, through the pool) -------------------------

    def find_account(self, name: str) -> Account | None:
        """The account called ``name`` (in any case) now, or None."""
        rows = self._rows(
            "read accounts",
            _SELECT_ACCOUNTS + " WHERE name_fold = %s AND NOT deleted",
            (fold(name),),
        )
        return Account(*rows[0]) if rows else None

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
        name_fold = fold(name)
        with store_errors("create account"), self._pool.connection() as conn:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_NAMES_LOCK,))
                    if _reserved_by(conn, name_fold) is not None:
                        return None
                    row = conn.execute(
                        "INSERT INTO accounts (name, name_fold, password) VALUES (%s, %s, %s) "
                        "ON CONFLICT (name_fold) DO NOTHING RETURNING id",
                        (name, name_fold, password),
                    ).fetchone()
                    if row is None:
                        return None
                    if invite is not None and not _use_invite(conn, invite, int(row[0])):
                        raise _Rollback
                    for room in rooms:
                        conn.execute(_JOIN, (room, row[0]))
                        conn.execute(_READ_ON_JOIN, (row[0], room, room))
            except pg_errors.ForeignKeyViolation:
                return None  # a room that does not exist (any more)
            except _Rollback:
                return None  # the invite was used up, revoked or expired meanwhile
        return Account(int(row[0]), name, password)

    def rename_account(self, account_id: int, new_name: str) -> bool:
        """Rename, keeping the old name reserved for the account; False if ``new_name``
        belongs (or belonged) to another account."""
        new_fold = fold(new_name)
        with store_errors("rename account"), self._pool.connection() as conn:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_NAMES_LOCK,))
                    owner = _reserved_by(conn, new_fold)
                    if owner is not None and owner != account_id:
                        return False
                    conn.execute(
                        "INSERT INTO former_names (name_fold, account) "
                        "SELECT name_fold, id FROM accounts WHERE id = %s AND name_fold <> %s "
                        "ON CONFLICT DO NOTHING",
                        (account_id, new_fold),
                    )
                    renamed = conn.execute(
                        "UPDATE accounts SET name = %s, name_fold = %s WHERE id = %s",
                        (new_name, new_fold, account_id),
                    ).rowcount
                    conn.execute(
                        "DELETE FROM former_names WHERE name_fold = %s AND account = %s",
                        (new_fold, account_id),
                    )
            except pg_errors.UniqueViolation:
                return False  # another account has the name
        return renamed == 1

    # -- chat state (the writer thread, through its own connection) ----------------------

    def _write(self, action: str, sql: str, params: Sequence[Any]) -> None:
        with store_errors(action):
            self._writer.transaction(lambda conn: conn.execute(sql, params))

    def set_keep_history(self, account_id: int, keep: bool) -> None:
        """Opt an account into (or out of) having its messages stored."""
        self._write(
            "change history setting",
            "UPDATE accounts SET keep_history = %s WHERE id = %s",
            (keep, account_id),
        )

    def save_room(self, room: RoomRecord) -> None:
        """Create the room, or update its display name and topic."""
        self._write(
            "save room",
            "INSERT INTO rooms (name_fold, name, topic) VALUES (%s, %s, %s) "
            "ON CONFLICT (name_fold) DO UPDATE SET name = excluded.name, topic = excluded.topic",
            (fold(room.name), room.name, room.topic),
        )

    def add_member(self, room: str, account_id: int) -> None:
        """Make ``account_id`` a member of ``room`` (folded name); idempotent. What the
        room said before the account joined does not count as unread."""

        def _join(conn: psycopg.Connection[Any]) -> None:
            conn.execute(_JOIN, (room, account_id))
            conn.execute(_READ_ON_JOIN, (account_id, room, room))

        with store_errors("save membership"):
            self._writer.transaction(_join)

    def remove_member(self, room: str, account_id: int) -> None:
        """End a membership; idempotent."""
        self._write(
            "save membership",
            "DELETE FROM memberships WHERE room = %s AND account = %s",
            (room, account_id),
        )

    def mark_read(self, account_id: int, conversation: str, message_id: int) -> None:
        """Move the account's read marker in ``conversation`` (room fold or pair key)
        forward to ``message_id``; never backward."""
        self._write(
            "save read marker",
            "INSERT INTO read_markers (account, conversation, last_read) VALUES (%s, %s, %s) "
            "ON CONFLICT (account, conversation) "
            "DO UPDATE SET last_read = greatest(read_markers.last_read, excluded.last_read)",
            (account_id, conversation, message_id),
        )

    # -- messages ----------------------------------------------------------------------

    def last_id(self) -> int:
        """The highest message id handed out so far, by any server."""
        ((top,),) = self._rows(
            "read message ids", "SELECT value FROM counters WHERE name = 'message_id'", ()
        )
        return int(top)

    def commit_messages(self, drafts: Sequence[Draft]) -> list[Committed]:
        """Number ``drafts`` and store the kept ones in one transaction (see
        :mod:`.numbering`); what each got. StoreError, with nothing written, if it fails."""
        if not drafts:
            return []

        def _commit(conn: psycopg.Connection[Any]) -> list[Committed]:
            return commit_drafts(conn, drafts)

        with store_errors("store messages"):
            try:
                return self._writer.transaction(_commit)
            except pg_errors.UniqueViolation:
                # Another server stored one of these keys meanwhile: once more, now
                # finding the original (see numbering).
                return self._writer.transaction(_commit)


class _Rollback(Exception):
    """Raised inside a transaction to undo it (psycopg rolls back on any exception)."""


def _use_invite(conn: psycopg.Connection[Any], code_hash: str, account_id: int) -> bool:
    now = utc_timestamp()
    return (
        conn.execute(
            "UPDATE invites SET used_by = %s, used_at = %s "
            "WHERE code_hash = %s AND used_by IS NULL AND expires > %s",
            (account_id, now, code_hash, now),
        ).rowcount
        == 1
    )


def _reserved_by(conn: psycopg.Connection[Any], name_fold: str) -> int | None:
    row = conn.execute(
        "SELECT account FROM former_names WHERE name_fold = %s", (name_fold,)
    ).fetchone()
    return None if row is None else int(row[0])
