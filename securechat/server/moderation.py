"""Moderation as the running server sees it: bans, mutes, room settings and roles.

Like accounts and rooms, everything the hub checks on a request lives in memory
(:class:`Moderation`), loaded from the store at start and changed by the hub under
its lock; each change is also persisted through the writer and, in cluster mode,
published so every server enforces it. The store stays the truth: the login path
(on the login pool) reads the bans again from the store at every login, so a ban
made offline with ``securechat-admin`` applies from the banned user's next login
and the in-memory list catches up with it there.

Who may do what
---------------
* admins: everything;
* moderators: kick and ban anyone but an admin, mute, change any room's settings;
* a room's operators (its creator, and whoever an operator or moderator names):
  set a locked topic, kick from the room, mute in the room, make it invite-only
  and invite people to it;
* users: chat.
"""

from __future__ import annotations

import ipaddress

from ..errors import ChatError
from ..store.records import Ban, Mute, RoomSettings, is_active
from .accounts import Identity

__all__ = ["STAFF", "Moderation", "address_of", "ban_text", "require_staff"]

STAFF = frozenset({"admin", "moderator"})
"""The roles that moderate the whole chat."""


def address_of(peer: str) -> str:
    """The IP address in a peer's ``ip:port``."""
    return peer.rsplit(":", 1)[0].strip("[]")


def require_staff(identity: Identity) -> None:
    """Refuse with ``forbidden`` unless the account is an admin or a moderator."""
    if identity.role not in STAFF:
        raise ChatError("forbidden", "only moderators and admins may do that")


def ban_text(ban: Ban) -> str:
    """What a banned person is told: why, and until when."""
    until = f"until {ban.expires}" if ban.expires else "until an admin lifts it"
    why = f": {ban.reason}" if ban.reason else ""
    return f"you are banned {until}{why}"


class Moderation:
    """Bans, mutes and room settings in memory (guarded by the hub's lock)."""

    def __init__(self, bans: list[Ban], mutes: list[Mute], settings: list[RoomSettings]) -> None:
        self._bans = {(b.kind, b.target): b for b in bans}
        self._mutes = {(m.room, m.account): m for m in mutes}
        self._settings = {s.room: s for s in settings}

    # -- bans -----------------------------------------------------------------------

    def bans(self, now: str) -> list[Ban]:
        """The bans in force at ``now``, oldest first."""
        return sorted(
            (b for b in self._bans.values() if is_active(b.expires, now)), key=lambda b: b.created
        )

    def set_bans(self, bans: list[Ban]) -> None:
        """Replace every ban with what the store holds now (the login path reads it)."""
        self._bans = {(b.kind, b.target): b for b in bans}

    def add_ban(self, ban: Ban) -> None:
        """Record a ban (replacing one of the same kind and target)."""
        self._bans[ban.kind, ban.target] = ban

    def remove_ban(self, kind: str, target: str) -> Ban | None:
        """Forget a ban; the one removed, if any."""
        return self._bans.pop((kind, target), None)

    def ban_for(
        self, *, account: int | None, fingerprint: str | None, address: str | None, now: str
    ) -> Ban | None:
        """The ban in force that matches any of these, if one does."""
        return matching_ban(
            self.bans(now), account=account, fingerprint=fingerprint, address=address
        )

    # -- mutes ----------------------------------------------------------------------

    def muted(self, room: str, account: int, now: str) -> Mute | None:
        """The mute in force for the account in ``room``, if any."""
        mute = self._mutes.get((room, account))
        return mute if mute is not None and is_active(mute.expires, now) else None

    def set_mute(self, mute: Mute | None, room: str, account: int) -> None:
        """Mute (``mute`` given) or unmute an account in a room."""
        if mute is None:
            self._mutes.pop((room, account), None)
        else:
            self._mutes[room, account] = mute

    def forget_account(self, account: int) -> None:
        """A deleted account: its mutes and room rights go."""
        self._mutes = {k: m for k, m in self._mutes.items() if m.account != account}
        for room, s in list(self._settings.items()):
            if account in s.operators or account in s.invited:
                self._settings[room] = RoomSettings(
                    room,
                    s.topic_locked,
                    s.invite_only,
                    s.operators - {account},
                    s.invited - {account},
                )

    # -- rooms ----------------------------------------------------------------------

    def settings(self, room: str) -> RoomSettings:
        """The settings of ``room`` (folded name); defaults if it has none."""
        return self._settings.get(room) or RoomSettings(room)

    def set_settings(self, settings: RoomSettings) -> None:
        """Replace a room's settings."""
        self._settings[settings.room] = settings

    def may_operate(self, room: str, identity: Identity) -> bool:
        """True if the account may change ``room``'s settings and moderate in it."""
        return identity.role in STAFF or identity.id in self.settings(room).operators

    def require_operator(self, room: str, identity: Identity, shown: str) -> None:
        """Refuse with ``forbidden`` unless the account may operate ``room``."""
        if not self.may_operate(room, identity):
            raise ChatError(
                "forbidden", f"only the operators of {shown} (and moderators) may do that"
            )

    def may_join(self, room: str, identity: Identity) -> bool:
        """True unless ``room`` is invite-only and the account is not invited (operators
        and staff always may)."""
        s = self.settings(room)
        return not s.invite_only or identity.id in s.invited or self.may_operate(room, identity)


def matching_ban(
    bans: list[Ban], *, account: int | None, fingerprint: str | None, address: str | None
) -> Ban | None:
    """The first of ``bans`` that matches the account, certificate or address."""
    ip = None
    if address:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
    for ban in bans:
        if ban.kind == "account" and account is not None and ban.target == str(account):
            return ban
        if ban.kind == "fingerprint" and fingerprint is not None and ban.target == fingerprint:
            return ban
        if ban.kind == "ip" and ip is not None:
            network = ipaddress.ip_network(ban.target, strict=False)
            if ip.version == network.version and ip in network:
                return ban
    return None
