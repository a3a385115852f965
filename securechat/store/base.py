"""The store interface: everything the server keeps, whatever engine keeps it.

The server talks to storage only through :class:`Store`; an engine
(:class:`~securechat.store.sqlite.SQLiteStore`, one server's file, or
:class:`~securechat.store.postgres.PostgresStore`, shared by several servers)
implements it, and :func:`~securechat.store.open.open_store` picks one. Nothing outside
``securechat.store`` imports a database driver.

Who calls what, and from which thread
-------------------------------------
* Writes of messages, and everything that must keep their order (account
  settings, rooms, memberships, topics, read markers, erasure, retention),
  come from the server's one message-writer thread.
* Reads (history, search, export, unread summaries) come from worker threads,
  never from an I/O thread or under the hub's lock; engines give each thread
  what it needs to read without waiting for a commit.
* The ``load_*`` methods are called once at start-up to fill the server's
  in-memory directories (accounts, rooms, memberships), which the writer then
  keeps current as it writes.

Every method raises :class:`~securechat.errors.StoreError` (and only that) when
the engine fails: disk full, read-only file, lost connection.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .records import Ban, Invite, Mute, RoomSettings, StoreStats

__all__ = [
    "KEY_TTL",
    "Account",
    "Committed",
    "Draft",
    "Membership",
    "NewMessage",
    "RoomRecord",
    "SentKey",
    "Store",
    "StoredMessage",
    "UnreadCount",
    "pair_key",
    "utc_timestamp",
]


KEY_TTL = 600.0
"""Seconds a stored message's idempotency key is remembered at least: longer than
any reconnect, so a message re-sent after a lost acknowledgement is not stored twice."""


def utc_timestamp(when: datetime.datetime | None = None) -> str:
    """``when`` (default: now) as ISO 8601 UTC with milliseconds and a ``Z``."""
    when = when or datetime.datetime.now(datetime.UTC)
    return when.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pair_key(a: int, b: int) -> str:
    """The key under which the private conversation of two accounts is kept."""
    return f"{min(a, b)}:{max(a, b)}"


@dataclass(frozen=True, slots=True)
class Account:
    """A registered user. ``password`` is None for certificate-only accounts."""

    id: int
    name: str
    password: str | None
    keep_history: bool = True
    role: str = "user"
    """``admin``, ``moderator`` or ``user`` (see :data:`~securechat.store.records.ROLES`)."""


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A stored room: its display name (``#Name``) and topic."""

    name: str
    topic: str = ""


@dataclass(frozen=True, slots=True)
class Membership:
    """One account's membership of one room (``room`` is the folded name)."""

    room: str
    account: int


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store: a room message (``room`` set) or a private one (``recipient``).

    ``seq`` numbers it within its conversation; ``key`` is the sender's own
    idempotency key, if it gave one.
    """

    id: int
    ts: str
    sender: int
    text: str
    room: str | None = None
    room_name: str | None = None
    recipient: int | None = None
    seq: int | None = None
    key: str | None = None
    action: bool = False
    """Sent with /me: an action, shown as ``* alice waves``."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A message to number (and, if ``keep``, to store): a room message (``room`` set)
    or a private one (``recipient`` set). ``key`` is the sender's idempotency key."""

    sender: int
    text: str
    keep: bool = True
    room: str | None = None
    room_name: str | None = None
    recipient: int | None = None
    key: str | None = None
    action: bool = False

    @property
    def conversation(self) -> str:
        """The room (folded) or the pair of accounts it belongs to."""
        if self.room is not None:
            return self.room
        assert self.recipient is not None
        return pair_key(self.sender, self.recipient)


@dataclass(frozen=True, slots=True)
class Committed:
    """What committing a :class:`Draft` gave it: its id and time, and its sequence
    number in its conversation if it was stored. ``duplicate``: its key was seen
    within ``KEY_TTL``, so nothing was stored and these are the original's."""

    id: int
    ts: str
    seq: int | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message read back, with the accounts' current names."""

    id: int
    ts: str
    sender: str
    room: str | None
    recipient: str | None
    text: str
    seq: int | None = None
    action: bool = False

    def wire_fields(self) -> dict[str, Any]:
        """The fields of its ``message`` or ``private`` frame."""
        fields: dict[str, Any] = {"id": self.id, "ts": self.ts, "from": self.sender}
        if self.room is not None:
            fields["room"] = self.room
        else:
            fields["to"] = self.recipient
        fields["text"] = self.text
        if self.action:
            fields["action"] = True
        if self.seq is not None:
            fields["seq"] = self.seq
        return fields

    @property
    def frame_type(self) -> str:
        """``message`` for a room message, ``private`` for a private one."""
        return "message" if self.room is not None else "private"


@dataclass(frozen=True, slots=True)
class SentKey:
    """A stored message sent with an idempotency key: what a repeat is answered with."""

    sender: int
    key: str
    id: int
    ts: str
    seq: int | None


@dataclass(frozen=True, slots=True)
class UnreadCount:
    """Unread messages in one conversation: a room (folded name) or a private partner."""

    conversation: str
    """The room's display name, or the partner's current name."""
    is_room: bool
    unread: int
    first: int
    """The id of the oldest unread message."""


class Store(Protocol):
    """What the server keeps. See the module docstring for threads and errors."""

    has_fts: bool
    """True when search uses a full-text index (else a slower substring scan)."""

    def close(self) -> None:
        """Release every connection; the store is unusable afterwards."""

    # -- start-up ---------------------------------------------------------------------

    def load_accounts(self) -> list[Account]:
        """Every account."""

    def load_former_names(self) -> dict[str, int]:
        """Every former name (folded) and the account it stays reserved for."""

    def load_rooms(self) -> list[RoomRecord]:
        """Every stored room."""

    def load_memberships(self) -> list[Membership]:
        """Every membership."""

    def load_last_seqs(self) -> dict[str, int]:
        """The highest sequence number of every conversation (room fold or pair key)."""

    # -- accounts -----------------------------------------------------------------------

    def find_account(self, name: str) -> Account | None:
        """The account called ``name`` (in any case) now, or None. For a server that
        shares the store with others and has not heard of an account yet."""

    def create_account(
        self,
        name: str,
        password: str | None,
        *,
        rooms: Sequence[str] = (),
        invite: str | None = None,
    ) -> Account | None:
        """Register ``name``, a member of ``rooms`` (folded names) from the start; None if
        the name (in any case) is taken or reserved. With ``invite`` (a code's hash) the
        invite is used up in the same transaction, and None returned (nothing created)
        if it is unknown, used, revoked or expired."""

    def rename_account(self, account_id: int, new_name: str) -> bool:
        """Rename, keeping the old name reserved for the account; False if ``new_name``
        belongs (or belonged) to another account."""

    def set_keep_history(self, account_id: int, keep: bool) -> None:
        """Opt an account into (or out of) having its messages stored."""

    # -- administration and moderation (see securechat.store.records) --------------------

    def set_password(self, account_id: int, password: str | None) -> None:
        """Replace the account's password hash."""

    def set_role(self, account_id: int, role: str) -> None:
        """Give the account a role (one of ``ROLES``)."""

    def delete_account(self, account_id: int) -> None:
        """Close the account for good: its memberships, read markers, room rights and
        mutes go, it can no longer log in or be found, and its name (and former names)
        stay reserved so nobody can pass for it. Its messages are erased beforehand, by
        the writer (``forget_sender``)."""

    def add_ban(self, ban: Ban) -> None:
        """Ban, replacing any ban of the same kind and target."""

    def remove_ban(self, kind: str, target: str) -> bool:
        """Lift a ban; False if there was none."""

    def load_bans(self, now: str) -> list[Ban]:
        """Every ban that applies at ``now``, oldest first."""

    def create_invite(self, code_hash: str, *, by: str, expires: str) -> Invite:
        """Store a new invite (the hash of its code)."""

    def load_invites(self) -> list[Invite]:
        """Every invite, used or not, oldest first."""

    def invite_usable(self, code_hash: str, now: str) -> bool:
        """True if an unused invite with this hash applies at ``now``."""

    def revoke_invite(self, invite_id: int) -> bool:
        """Withdraw an unused invite; False if there is no such unused invite."""

    def save_room_settings(self, settings: RoomSettings) -> None:
        """Store a room's flags, operators and invite list (replacing what was there)."""

    def load_room_settings(self) -> list[RoomSettings]:
        """The settings of every room that has any."""

    def add_mute(self, mute: Mute) -> None:
        """Mute an account in a room, replacing any mute it had there."""

    def remove_mute(self, room: str, account_id: int) -> bool:
        """Unmute; False if it was not muted."""

    def load_mutes(self, now: str) -> list[Mute]:
        """Every mute that applies at ``now``."""

    def stats(self) -> StoreStats:
        """How many accounts, rooms and messages, and the store's size on disk."""

    # -- rooms, memberships, read markers ------------------------------------------------

    def save_room(self, room: RoomRecord) -> None:
        """Create the room, or update its display name and topic."""

    def add_member(self, room: str, account_id: int) -> None:
        """Make ``account_id`` a member of ``room`` (folded name); idempotent."""

    def remove_member(self, room: str, account_id: int) -> None:
        """End a membership; idempotent."""

    def mark_read(self, account_id: int, conversation: str, message_id: int) -> None:
        """Move the account's read marker in ``conversation`` (room fold or pair key)
        forward to ``message_id``; never backward."""

    # -- messages ----------------------------------------------------------------------

    def last_id(self) -> int:
        """The highest message id handed out so far."""

    def commit_messages(self, drafts: Sequence[Draft]) -> list[Committed]:
        """Number ``drafts`` and store the kept ones, all in one transaction; what each
        got, in order. Nothing is written (and StoreError raised) if it fails.

        Every draft gets an id, unique and increasing in commit order across every
        server sharing the store; a kept draft gets the next sequence number of its
        conversation, allocated in the same transaction, so numbers follow commit
        order and have no holes. A kept draft whose ``(sender, key)`` was stored
        within ``KEY_TTL`` seconds is not stored again: it gets the original's id,
        time and number, with ``duplicate`` set.
        """

    # -- maintenance, in slices the writer interleaves with messages ------------------------

    def index_pending(self, limit: int | None = None) -> int:
        """Add up to ``limit`` (default: all) unindexed messages to the search index."""

    def forget_sender(self, account_id: int, *, upto: int, limit: int) -> int:
        """Delete up to ``limit`` of the messages ``account_id`` sent with ids up to
        ``upto``; how many. ``merge_index`` and ``truncate_wal`` complete the erasure."""

    def delete_older_than(self, cutoff: str, *, limit: int) -> int:
        """Retention: delete up to ``limit`` messages stamped before ``cutoff``, oldest
        first; how many (fewer than ``limit``: none is left)."""

    def merge_index(self, pages: int) -> int:
        """Merge about ``pages`` pages of the search index, dropping deleted words; under
        2 once nothing is left to merge."""

    def truncate_wal(self) -> bool:
        """Leave no older page image in the engine's log; False if it must be retried."""

    # -- reads (worker threads) ----------------------------------------------------------

    def room_history(
        self,
        room: str,
        *,
        before: int | None = None,
        after: int | None = None,
        after_seq: int | None = None,
        limit: int,
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of ``room``, oldest first: the latest, or the first
        ones after ``after`` (an id) or ``after_seq``."""

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

    def search(
        self, account_id: int, rooms: Sequence[str], words: Sequence[str], *, limit: int
    ) -> list[StoredMessage]:
        """Messages the account may see that contain every word, newest first."""

    def export_page(
        self, account_id: int, rooms: Sequence[str], *, after: int, limit: int
    ) -> list[StoredMessage]:
        """The next ``limit`` messages after id ``after`` the account sent or received."""

    def sent_count(self, account_id: int) -> int:
        """How many stored messages ``account_id`` sent."""

    def unread(self, account_id: int, rooms: Sequence[str]) -> list[UnreadCount]:
        """Conversations with messages after the account's read marker (others'
        messages only): its ``rooms`` (folded names) and its private conversations."""

    def unread_private(self, account_id: int, *, limit: int) -> list[StoredMessage]:
        """Private messages to the account after its read markers, oldest first."""
