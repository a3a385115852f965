"""Administration and moderation in the SQLite store: passwords, roles, deletion,
bans, invites, room settings and mutes (see :mod:`securechat.store.records`).

Everything here is rare next to messages, so it uses the one write connection
under its lock, like account changes; reads of these tables are small and take
the same lock rather than a reader connection of their own.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..base import utc_timestamp
from ..records import Ban, Invite, Mute, RoomSettings, StoreStats, room_settings
from .reads import store_errors

__all__ = ["SQLiteAdmin"]

T = TypeVar("T")


class SQLiteAdmin:
    """The administration side of :class:`~securechat.store.sqlite.SQLiteStore` (a base
    class)."""

    path: Path
    _db: sqlite3.Connection
    _lock: threading.Lock

    def _in_transaction(self, action: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(db)`` in one immediate transaction under the write lock."""
        with self._lock, store_errors(action):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return result

    def _select(self, action: str, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock, store_errors(action):
            return self._db.execute(sql, params).fetchall()

    # -- accounts ---------------------------------------------------------------------------

    def set_password(self, account_id: int, password: str | None) -> None:
        """Replace the account's password hash."""
        self._in_transaction(
            "change password",
            lambda db: db.execute(
                "UPDATE accounts SET password = ? WHERE id = ?", (password, account_id)
            ),
        )

    def set_role(self, account_id: int, role: str) -> None:
        """Give the account a role."""
        self._in_transaction(
            "change role",
            lambda db: db.execute("UPDATE accounts SET role = ? WHERE id = ?", (role, account_id)),
        )

    def delete_account(self, account_id: int) -> None:
        """Close the account for good, keeping its names reserved (see the Store)."""

        def _delete(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE accounts SET deleted = 1, password = NULL, role = 'user', "
                "keep_history = 0 WHERE id = ?",
                (account_id,),
            )
            for table in ("memberships", "read_markers", "room_rights", "mutes"):
                db.execute(f"DELETE FROM {table} WHERE account = ?", (account_id,))  # noqa: S608

        self._in_transaction("delete account", _delete)

    # -- bans -------------------------------------------------------------------------------

    def add_ban(self, ban: Ban) -> None:
        """Ban, replacing any ban of the same kind and target."""
        self._in_transaction(
            "store ban",
            lambda db: db.execute(
                "INSERT OR REPLACE INTO bans (kind, target, reason, by_name, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    ban.kind,
                    ban.target,
                    ban.reason,
                    ban.by,
                    ban.created or utc_timestamp(),
                    ban.expires,
                ),
            ),
        )

    def remove_ban(self, kind: str, target: str) -> bool:
        """Lift a ban; False if there was none."""
        cur = self._in_transaction(
            "remove ban",
            lambda db: db.execute("DELETE FROM bans WHERE kind = ? AND target = ?", (kind, target)),
        )
        return cur.rowcount == 1

    def load_bans(self, now: str) -> list[Ban]:
        """Every ban that applies at ``now``, oldest first."""
        rows = self._select(
            "read bans",
            "SELECT b.kind, b.target, b.reason, b.by_name, b.created, b.expires, "
            "coalesce(a.name, '') FROM bans b LEFT JOIN accounts a "
            "ON b.kind = 'account' AND a.id = CAST(b.target AS INTEGER) "
            "WHERE b.expires IS NULL OR b.expires > ? ORDER BY b.created",
            (now,),
        )
        return [Ban(*row) for row in rows]

    # -- invites ----------------------------------------------------------------------------

    def create_invite(self, code_hash: str, *, by: str, expires: str) -> Invite:
        """Store a new invite (the hash of its code)."""
        created = utc_timestamp()
        cur = self._in_transaction(
            "create invite",
            lambda db: db.execute(
                "INSERT INTO invites (code_hash, by_name, created, expires) VALUES (?, ?, ?, ?)",
                (code_hash, by, created, expires),
            ),
        )
        assert cur.lastrowid is not None
        return Invite(cur.lastrowid, code_hash, by, created, expires)

    def load_invites(self) -> list[Invite]:
        """Every invite, used or not, oldest first."""
        rows = self._select(
            "read invites",
            "SELECT i.id, i.code_hash, i.by_name, i.created, i.expires, a.name, i.used_at "
            "FROM invites i LEFT JOIN accounts a ON a.id = i.used_by ORDER BY i.id",
        )
        return [Invite(*row) for row in rows]

    def invite_usable(self, code_hash: str, now: str) -> bool:
        """True if an unused invite with this hash applies at ``now``."""
        return bool(
            self._select(
                "read invites",
                "SELECT 1 FROM invites WHERE code_hash = ? AND used_by IS NULL AND expires > ?",
                (code_hash, now),
            )
        )

    def revoke_invite(self, invite_id: int) -> bool:
        """Withdraw an unused invite; False if there is no such unused invite."""
        cur = self._in_transaction(
            "revoke invite",
            lambda db: db.execute(
                "DELETE FROM invites WHERE id = ? AND used_by IS NULL", (invite_id,)
            ),
        )
        return cur.rowcount == 1

    # -- rooms and mutes --------------------------------------------------------------------

    def save_room_settings(self, settings: RoomSettings) -> None:
        """Store a room's flags, operators and invite list (replacing what was there)."""

        def _save(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE rooms SET topic_locked = ?, invite_only = ? WHERE name_fold = ?",
                (int(settings.topic_locked), int(settings.invite_only), settings.room),
            )
            db.execute("DELETE FROM room_rights WHERE room = ?", (settings.room,))
            db.executemany(
                "INSERT INTO room_rights (room, account, kind) VALUES (?, ?, ?)",
                [(settings.room, a, "operator") for a in settings.operators]
                + [(settings.room, a, "invited") for a in settings.invited],
            )

        self._in_transaction("save room settings", _save)

    def load_room_settings(self) -> list[RoomSettings]:
        """The settings of every room that has any."""
        flags = self._select(
            "read room settings",
            "SELECT name_fold, topic_locked, invite_only FROM rooms "
            "WHERE topic_locked OR invite_only "
            "OR name_fold IN (SELECT room FROM room_rights)",
        )
        rights = self._select("read room settings", "SELECT room, account, kind FROM room_rights")
        return room_settings(
            [(r[0], bool(r[1]), bool(r[2])) for r in flags], [(r[0], r[1], r[2]) for r in rights]
        )

    def add_mute(self, mute: Mute) -> None:
        """Mute an account in a room, replacing any mute it had there."""
        self._in_transaction(
            "store mute",
            lambda db: db.execute(
                "INSERT OR REPLACE INTO mutes (room, account, by_name, created, expires) "
                "VALUES (?, ?, ?, ?, ?)",
                (mute.room, mute.account, mute.by, mute.created or utc_timestamp(), mute.expires),
            ),
        )

    def remove_mute(self, room: str, account_id: int) -> bool:
        """Unmute; False if it was not muted."""
        cur = self._in_transaction(
            "remove mute",
            lambda db: db.execute(
                "DELETE FROM mutes WHERE room = ? AND account = ?", (room, account_id)
            ),
        )
        return cur.rowcount == 1

    def load_mutes(self, now: str) -> list[Mute]:
        """Every mute that applies at ``now``."""
        rows = self._select(
            "read mutes",
            "SELECT room, account, by_name, created, expires FROM mutes "
            "WHERE expires IS NULL OR expires > ?",
            (now,),
        )
        return [Mute(*row) for row in rows]

    def stats(self) -> StoreStats:
        """How many accounts, rooms and messages, and the files' size."""
        ((accounts, rooms, messages),) = self._select(
            "count",
            "SELECT (SELECT count(*) FROM accounts WHERE NOT deleted), "
            "(SELECT count(*) FROM rooms), (SELECT count(*) FROM messages)",
        )
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += Path(f"{self.path}{suffix}").stat().st_size
            except OSError:
                pass  # no log file right now
        return StoreStats(accounts, rooms, messages, size)
