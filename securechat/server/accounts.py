"""The accounts the hub needs on every request, held in memory.

Looking an account up (does ``bob`` exist? has he opted out of history? is
``carol`` a former name?) happens on nearly every request, and the hub may
not touch the database while it handles one. So every account is loaded
once at start-up into an :class:`AccountDirectory`, and whoever changes an
account in the store (registration on the login pool, a rename, a history
setting) updates the directory right after, in the same order.

An :class:`Identity` is the one shared, mutable record of an account: all the
sessions of an account point at the same object, so a rename or a history
setting reaches every one of them at once. Its ``name`` and ``keep_history``
change only under the hub's lock; the directory's own lock guards its maps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..store.base import Account
from ..wire.names import fold

__all__ = ["AccountDirectory", "Identity"]


@dataclass(eq=False, slots=True)
class Identity:
    """An account as the running server sees it (shared by all its sessions)."""

    id: int
    name: str
    password: str | None
    keep_history: bool = True
    role: str = "user"
    away: str = ""
    """The away text (/away), "" when here; never stored (see :mod:`.away`)."""

    @classmethod
    def of(cls, account: Account) -> Identity:
        """The identity of a stored account."""
        return cls(account.id, account.name, account.password, account.keep_history, account.role)


class AccountDirectory:
    """Every account by id and by name (any case), and every reserved former name.

    Thread-safe. Lock order: the hub's lock, then this one, never the reverse.
    """

    def __init__(self, accounts: list[Account], former_names: dict[str, int]) -> None:
        self._lock = threading.Lock()
        self._by_id = {a.id: Identity.of(a) for a in accounts}
        self._by_name = {_key(i.name): i for i in self._by_id.values()}
        self._former = dict(former_names)

    def find(self, name: str) -> Identity | None:
        """The account called ``name`` (any case) now, if any."""
        with self._lock:
            return self._by_name.get(fold(name))

    def get(self, account_id: int) -> Identity | None:
        """The account with this id, if any."""
        with self._lock:
            return self._by_id.get(account_id)

    def reserved_for(self, name: str) -> int | None:
        """The account a former name ``name`` stays reserved for, if any."""
        with self._lock:
            return self._former.get(fold(name))

    def add(self, account: Account) -> Identity:
        """Record a newly registered account (or return the one already known)."""
        with self._lock:
            known = self._by_id.get(account.id)
            if known is not None:
                return known
            identity = Identity.of(account)
            self._by_id[account.id] = identity
            self._by_name[_key(account.name)] = identity
            return identity

    def delete(self, identity: Identity) -> None:
        """Record a deleted account: it is gone, and its name stays reserved for it."""
        with self._lock:
            self._by_id.pop(identity.id, None)
            if self._by_name.get(fold(identity.name)) is identity:
                del self._by_name[fold(identity.name)]
            self._former[fold(identity.name)] = identity.id

    def rename(self, identity: Identity, new_name: str) -> None:
        """Record a rename the store has made; the old name stays reserved for it.

        Call under the hub's lock: ``identity.name`` changes for every session.
        """
        with self._lock:
            old = fold(identity.name)
            self._by_name.pop(old, None)
            if old != fold(new_name):
                self._former[old] = identity.id
            self._former.pop(fold(new_name), None)
            identity.name = new_name
            self._by_name[_key(new_name)] = identity


def _key(name: str) -> str:
    """``name`` folded, sharing the name's own string when folding changes nothing (the
    usual case): one string less per account, for thousands of them."""
    folded = fold(name)
    return name if folded == name else folded
