"""Administration and moderation in the PostgreSQL store: passwords, roles, deletion,
bans, invites, room settings and mutes (see :mod:`securechat.store.records`).

All of it is rare next to messages and may come from any thread (the login pool,
the writer, ``securechat-admin``), so each call borrows a pooled connection for one
transaction; every server of a cluster sees it once committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from ..base import utc_timestamp
from ..records import Ban, Invite, Mute, RoomSettings, StoreStats, room_settings
from .connections import store_errors

__all__ = ["PostgresAdmin"]

T = TypeVar("T")


class PostgresAdmin:
    """The administration side of :class:`~securechat.store.postgres.PostgresStore` (a
    base class)."""

    _pool: ConnectionPool

    def _in_transaction(self, action: str, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        with store_errors(action), self._pool.connection() as conn, conn.transaction():
            return work(conn)

    def _run(self, action: str, sql: str, params: Sequence[Any]) -> int:
        """One statement in its own transaction; how many rows it changed."""
        return self._in_transaction(action, lambda conn: conn.execute(sql, params).rowcount)

    def _fetch(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with store_errors(action), self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    # -- accounts ---------------------------------------------------------------------------

    def set_password(self, account_id: int, password: str | None) -> None:
        """Replace the account's password hash."""
        self._run(
            "change password",
            "UPDATE accounts SET password = %s WHERE id = %s",
            (password, account_id),
        )

    def set_role(self, account_id: int, role: str) -> None:
        """Give the account a role."""
        self._run("change role", "UPDATE accounts SET role = %s WHERE id = %s", (role, account_id))

    def delete_account(self, account_id: int) -> None:
        """Close the account for good, keeping its names reserved (see the Store)."""

        def _delete(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "UPDATE accounts SET deleted = true, password = NULL, role = 'user', "
                "keep_history = false WHERE id = %s",
                (account_id,),
            )
            for table in ("memberships", "read_markers", "room_rights", "mutes"):
                conn.execute(
                    f"DELETE FROM {table} WHERE account = %s",  # noqa: S608
                    (account_id,),
                )

        self._in_transaction("delete account", _delete)

    # -- bans -------------------------------------------------------------------------------

    def add_ban(self, ban: Ban) -> None:
        """Ban, replacing any ban of the same kind and target."""
        self._run(
            "store ban",
            "INSERT INTO bans (kind, target, reason, by_name, created, expires) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (kind, target) DO UPDATE SET "
            "reason = excluded.reason, by_name = excluded.by_name, "
            "created = excluded.created, expires = excluded.expires",
            (ban.kind, ban.target, ban.reason, ban.by, ban.created or utc_timestamp(), ban.expires),
        )

    def remove_ban(self, kind: str, target: str) -> bool:
        """Lift a ban; False if there was none."""
        return (
            self._run(
                "remove ban", "DELETE FROM bans WHERE kind = %s AND target = %s", (kind, target)
            )
            == 1
        )

    def load_bans(self, now: str) -> list[Ban]:
        """Every ban that applies at ``now``, oldest first."""
        rows = self._fetch(
            "read bans",
            "SELECT b.kind, b.target, b.reason, b.by_name, b.created, b.expires, "
            "coalesce(a.name, '') FROM bans b LEFT JOIN accounts a "
            "ON b.kind = 'account' AND a.id::text = b.target "
            "WHERE b.expires IS NULL OR b.expires > %s ORDER BY b.created",
            (now,),
        )
        return [Ban(*row) for row in rows]

    # -- invites ----------------------------------------------------------------------------

    def create_invite(self, code_hash: str, *, by: str, expires: str) -> Invite:
        """Store a new invite (the hash of its code)."""
        created = utc_timestamp()

        def _create(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "INSERT INTO invites (code_hash, by_name, created, expires) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (code_hash, by, created, expires),
            ).fetchone()
            assert row is not None
            return int(row[0])

        invite_id = self._in_transaction("create invite", _create)
        return Invite(invite_id, code_hash, by, created, expires)

    def load_invites(self) -> list[Invite]:
        """Every invite, used or not, oldest first."""
        rows = self._fetch(
            "read invites",
            "SELECT i.id, i.code_hash, i.by_name, i.created, i.expires, a.name, i.used_at "
            "FROM invites i LEFT JOIN accounts a ON a.id = i.used_by ORDER BY i.id",
        )
        return [Invite(int(r[0]), *r[1:]) for r in rows]

    def invite_usable(self, code_hash: str, now: str) -> bool:
        """True if an unused invite with this hash applies at ``now``."""
        return bool(
            self._fetch(
                "read invites",
                "SELECT 1 FROM invites WHERE code_hash = %s AND used_by IS NULL AND expires > %s",
                (code_hash, now),
            )
        )

    def revoke_invite(self, invite_id: int) -> bool:
        """Withdraw an unused invite; False if there is no such unused invite."""
        return (
            self._run(
                "revoke invite",
                "DELETE FROM invites WHERE id = %s AND used_by IS NULL",
                (invite_id,),
            )
            == 1
        )

    # -- rooms and mutes --------------------------------------------------------------------

    def save_room_settings(self, settings: RoomSettings) -> None:
        """Store a room's flags, operators and invite list (replacing what was there)."""

        def _save(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "UPDATE rooms SET topic_locked = %s, invite_only = %s WHERE name_fold = %s",
                (settings.topic_locked, settings.invite_only, settings.room),
            )
            conn.execute("DELETE FROM room_rights WHERE room = %s", (settings.room,))
            rows = [(settings.room, a, "operator") for a in settings.operators] + [
                (settings.room, a, "invited") for a in settings.invited
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO room_rights (room, account, kind) VALUES (%s, %s, %s)", rows
                )

        self._in_transaction("save room settings", _save)

    def load_room_settings(self) -> list[RoomSettings]:
        """The settings of every room that has any."""
        flags = self._fetch(
            "read room settings",
            "SELECT name_fold, topic_locked, invite_only FROM rooms "
            "WHERE topic_locked OR invite_only OR name_fold IN (SELECT room FROM room_rights)",
        )
        rights = self._fetch("read room settings", "SELECT room, account, kind FROM room_rights")
        return room_settings(
            [(r[0], bool(r[1]), bool(r[2])) for r in flags], [(r[0], r[1], r[2]) for r in rights]
        )

    def add_mute(self, mute: Mute) -> None:
        """Mute an account in a room, replacing any mute it had there."""
        self._run(
            "store mute",
            "INSERT INTO mutes (room, account, by_name, created, expires) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (room, account) DO UPDATE SET "
            "by_name = excluded.by_name, created = excluded.created, expires = excluded.expires",
            (mute.room, mute.account, mute.by, mute.created or utc_timestamp(), mute.expires),
        )

    def remove_mute(self, room: str, account_id: int) -> bool:
        """Unmute; False if it was not muted."""
        return (
            self._run(
                "remove mute",
                "DELETE FROM mutes WHERE room = %s AND account = %s",
                (room, account_id),
            )
            == 1
        )

    def load_mutes(self, now: str) -> list[Mute]:
        """Every mute that applies at ``now``."""
        rows = self._fetch(
            "read mutes",
            "SELECT room, account, by_name, created, expires FROM mutes "
            "WHERE expires IS NULL OR expires > %s",
            (now,),
        )
        return [Mute(r[0], int(r[1]), *r[2:]) for r in rows]

    def stats(self) -> StoreStats:
        """How many accounts, rooms and messages, and the database's size."""
        ((accounts, rooms, messages, size),) = self._fetch(
            "count",
            "SELECT (SELECT count(*) FROM accounts WHERE NOT deleted), "
            "(SELECT count(*) FROM rooms), (SELECT count(*) FROM messages), "
            "pg_database_size(current_database())",
        )
        return StoreStats(int(accounts), int(rooms), int(messages), int(size))
