"""What the store keeps about administration and moderation: roles, bans, invites,
mutes, and the settings of rooms (operators, a locked topic, invite-only).

Times are ISO 8601 UTC strings as :func:`~securechat.store.base.utc_timestamp` writes
them (``2025-01-31T12:00:00.000Z``): they compare correctly as strings, in both
engines alike. An expiry of None never expires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BAN_KINDS",
    "ROLES",
    "Ban",
    "Invite",
    "Mute",
    "RoomSettings",
    "StoreStats",
    "is_active",
    "room_settings",
]

ROLES = ("admin", "moderator", "user")
"""Every role, most powerful first: admins do everything, moderators kick, ban, mute and
change room settings, users chat."""

BAN_KINDS = ("account", "fingerprint", "ip")
"""What a ban matches: an account (by id), a client certificate (its SHA-256, hex), or
an address or network (CIDR)."""


def is_active(expires: str | None, now: str) -> bool:
    """True if something with this expiry still applies at ``now``."""
    return expires is None or expires > now


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban. ``target`` is the account id (as text), the fingerprint or the CIDR;
    ``name`` is what to show: the account's current name, else the target."""

    kind: str
    target: str
    reason: str = ""
    by: str = ""
    created: str = ""
    expires: str | None = None
    name: str = ""

    @property
    def shown(self) -> str:
        """The banned account's name, fingerprint or network."""
        return self.name or self.target


@dataclass(frozen=True, slots=True)
class Invite:
    """A one-time registration code; the store keeps only ``code_hash`` (SHA-256, hex)."""

    id: int
    code_hash: str
    by: str
    created: str
    expires: str
    used_by: str | None = None
    """The name of the account that registered with it, once used."""
    used_at: str | None = None


@dataclass(frozen=True, slots=True)
class Mute:
    """An account that may not speak in ``room`` (folded name) until ``expires``."""

    room: str
    account: int
    by: str = ""
    created: str = ""
    expires: str | None = None


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """A room's moderation settings (``room`` is the folded name)."""

    room: str
    topic_locked: bool = False
    invite_only: bool = False
    operators: frozenset[int] = field(default_factory=frozenset)
    invited: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for ``securechat-admin stats`` and ``/stats``."""

    accounts: int
    rooms: int
    messages: int
    size_bytes: int


def room_settings(
    flags: list[tuple[str, bool, bool]], rights: list[tuple[str, int, str]]
) -> list[RoomSettings]:
    """Room settings assembled from rooms' flags ``(room, topic_locked, invite_only)``
    and rights rows ``(room, account, "operator" | "invited")``."""
    operators: dict[str, set[int]] = {}
    invited: dict[str, set[int]] = {}
    for room, account, kind in rights:
        (operators if kind == "operator" else invited).setdefault(room, set()).add(int(account))
    return [
        RoomSettings(
            room,
            topic_locked,
            invite_only,
            frozenset(operators.get(room, ())),
            frozenset(invited.get(room, ())),
        )
        for room, topic_locked, invite_only in flags
    ]
