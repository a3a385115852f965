"""What ``securechat-admin`` does to a store: one function per action.

Each takes the open :class:`~securechat.store.base.Store` and what the command line
said, logs what it changed (one line, with the account name) and returns the lines
to print. They raise :class:`~securechat.errors.ChatError` for a request that
cannot be carried out (an unknown name, a taken name), with the same codes the
server uses.

A running server keeps accounts in memory; what is changed here reaches it through
the store at the account's next login (password, role, deletion, bans, invites are
all read back from the store on the login path). docs/server.md lists what takes
effect when.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import secrets
import threading

from ..errors import ChatError, StoreError
from ..server.passwords import hash_password
from ..server.writer import MessageWriter
from ..store.base import Account, Store, utc_timestamp
from ..store.records import ROLES, Ban
from ..wire.names import DEFAULT_ROOM, check_user_name, fold

__all__ = [
    "add_ban",
    "add_user",
    "change_password",
    "create_invite",
    "delete_user",
    "hash_invite",
    "list_bans",
    "list_invites",
    "list_users",
    "remove_ban",
    "revoke_invite",
    "set_role",
    "stats",
]

log = logging.getLogger("securechat.admin")

ADMIN = "(securechat-admin)"
"""Who a ban or invite made with this tool is by."""


def hash_invite(code: str) -> str:
    """What the store keeps of an invite code (it is random: a plain hash suffices)."""
    return hashlib.sha256(code.strip().encode("utf-8")).hexdigest()


def later(seconds: int) -> str:
    """The ISO UTC time ``seconds`` from now."""
    return utc_timestamp(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds))


def _account(store: Store, name: str) -> Account:
    account = store.find_account(check_user_name(name))
    if account is None:
        raise ChatError("no_such_user", f"there is no account called {name}")
    return account


def add_user(store: Store, name: str, password: str | None, *, role: str = "user") -> list[str]:
    """Create an account (``password`` None: it logs in with a client certificate)."""
    check_user_name(name)
    account = store.create_account(
        name, hash_password(password) if password is not None else None, rooms=[DEFAULT_ROOM]
    )
    if account is None:
        raise ChatError("name_in_use", f"{name} belongs, or belonged, to an account")
    if role != "user":
        store.set_role(account.id, role)
    log.info("user add %s (role %s)", name, role)
    return [f"created {name} ({role})"]


def change_password(store: Store, name: str, password: str) -> list[str]:
    """Set a new password for an account."""
    account = _account(store, name)
    store.set_password(account.id, hash_password(password))
    log.info("user passwd %s", account.name)
    return [f"new password set for {account.name}: it applies from their next login"]


def delete_user(store: Store, name: str) -> list[str]:
    """Erase what the account sent (as ``/history forget`` does, through the message
    writer) and close the account; its name stays reserved."""
    account = _account(store, name)
    writer = MessageWriter(store)
    writer.start()
    finished = threading.Event()
    outcome: list[int | StoreError] = []

    def _erase_then_close() -> None:
        try:
            outcome.append(writer.forget_sender(account.id))
            store.delete_account(account.id)
        except StoreError as exc:
            outcome.append(exc)
        finally:
            finished.set()

    writer.run_in_order(_erase_then_close)
    finished.wait()
    writer.stop()
    (result,) = outcome
    if isinstance(result, StoreError):
        raise result
    log.info("user delete %s (%d messages erased)", account.name, result)
    return [f"deleted {account.name}: {result} messages erased; the name stays reserved"]


def list_users(store: Store) -> list[str]:
    """Every account and its role."""
    return [
        f"{a.name}\t{a.role}" for a in sorted(store.load_accounts(), key=lambda a: fold(a.name))
    ]


def set_role(store: Store, name: str, role: str) -> list[str]:
    """Give an account a role."""
    if role not in ROLES:
        raise ChatError("bad_role", f"a role is one of {', '.join(ROLES)}")
    account = _account(store, name)
    store.set_role(account.id, role)
    log.info("user role %s %s (was %s)", account.name, role, account.role)
    return [f"{account.name} is now {role}: it applies from their next login"]


def create_invite(store: Store, *, expires_in: int) -> list[str]:
    """A new one-time invite code; only its hash is stored, so it is shown once."""
    code = secrets.token_urlsafe(12)
    invite = store.create_invite(hash_invite(code), by=ADMIN, expires=later(expires_in))
    log.info("invite create %d (expires %s)", invite.id, invite.expires)
    return [code, f"invite {invite.id}, valid until {invite.expires}; the code is not stored"]


def list_invites(store: Store) -> list[str]:
    """Every invite: number, by whom, until when, and who used it."""
    now = utc_timestamp()
    lines = []
    for i in store.load_invites():
        state = (
            f"used by {i.used_by} at {i.used_at}"
            if i.used_by
            else ("expired" if i.expires <= now else "unused")
        )
        lines.append(f"{i.id}\t{i.created}\tby {i.by}\tuntil {i.expires}\t{state}")
    return lines


def revoke_invite(store: Store, invite_id: int) -> list[str]:
    """Withdraw an unused invite."""
    if not store.revoke_invite(invite_id):
        raise ChatError("no_such_invite", f"there is no unused invite {invite_id}")
    log.info("invite revoke %d", invite_id)
    return [f"invite {invite_id} revoked"]


def ban_target(
    store: Store, *, account: str | None, ip: str | None, fingerprint: str | None
) -> tuple[str, str, str]:
    """(kind, target, what to call it) for exactly one of the three."""
    if account is not None:
        found = _account(store, account)
        return "account", str(found.id), found.name
    if ip is not None:
        try:
            network = ipaddress.ip_network(ip, strict=False)
        except ValueError:
            raise ChatError("bad_address", f"{ip!r} is not an address or a network") from None
        return "ip", str(network), str(network)
    assert fingerprint is not None
    digest = fingerprint.replace(":", "").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ChatError("bad_fingerprint", "a fingerprint is a SHA-256: 64 hex digits")
    return "fingerprint", digest, digest


def add_ban(
    store: Store, kind: str, target: str, shown: str, *, reason: str, duration: int | None
) -> list[str]:
    """Ban an account, a certificate or a network, for ``duration`` seconds or for good."""
    expires = later(duration) if duration is not None else None
    store.add_ban(Ban(kind, target, reason, ADMIN, utc_timestamp(), expires))
    log.info("ban add %s %s until %s: %s", kind, shown, expires or "lifted", reason)
    until = f"until {expires}" if expires else "until lifted"
    return [f"banned {kind} {shown} {until}; a session already open ends at its next login"]


def remove_ban(store: Store, kind: str, target: str, shown: str) -> list[str]:
    """Lift a ban."""
    if not store.remove_ban(kind, target):
        raise ChatError("not_banned", f"{shown} is not banned")
    log.info("ban remove %s %s", kind, shown)
    return [f"lifted the ban on {shown}"]


def list_bans(store: Store) -> list[str]:
    """Every ban in force."""
    return [
        f"{b.kind}\t{b.shown}\tby {b.by}\tsince {b.created}\t"
        f"until {b.expires or 'lifted'}\t{b.reason}"
        for b in store.load_bans(utc_timestamp())
    ]


def stats(store: Store) -> list[str]:
    """Accounts, rooms, messages and the store's size."""
    s = store.stats()
    return [
        f"accounts\t{s.accounts}",
        f"rooms\t{s.rooms}",
        f"messages\t{s.messages}",
        f"store size\t{s.size_bytes} bytes",
    ]
