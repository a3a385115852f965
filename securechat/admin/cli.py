"""``securechat-admin``: the command line (argparse) and the store it works on."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..errors import ChatError, ConfigError, SecureChatError
from ..server.passwords import MAX_PASSWORD_BYTES
from ..store.base import Store
from ..store.open import open_store
from ..store.records import ROLES
from ..store.sqlite import backup
from ..wire.durations import parse_duration
from . import actions

__all__ = ["build_parser", "main"]

log = logging.getLogger("securechat.admin")

DEFAULT_INVITE_LIFETIME = "7d"
"""How long an invite code stays valid unless ``--expires`` says otherwise."""


def build_parser() -> argparse.ArgumentParser:
    """The admin tool's command line."""
    p = argparse.ArgumentParser(
        prog="securechat-admin",
        description="Administer a securechat store (offline, or while the server runs).",
    )
    p.add_argument("--version", action="version", version=f"securechat-admin {__version__}")
    p.add_argument(
        "--db", type=Path, default=Path("securechat.db"), help="SQLite file (default securechat.db)"
    )
    p.add_argument("--store", metavar="URL", help="a PostgreSQL store: postgresql://...")
    sub = p.add_subparsers(dest="area", required=True)

    user = sub.add_parser("user", help="accounts").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="user")
    add.add_argument(
        "--certificate-only",
        action="store_true",
        help="no password: the account logs in with a client certificate",
    )
    _password_file(add)
    passwd = user.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    _password_file(passwd)
    delete = user.add_parser(
        "delete", help="erase an account's messages and close it (its name stays reserved)"
    )
    delete.add_argument("name")
    user.add_parser("list", help="every account and its role")
    role = user.add_parser("role", help="give an account a role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)

    invite = sub.add_parser("invite", help="registration invites").add_subparsers(
        dest="action", required=True
    )
    create = invite.add_parser("create", help="a new one-time code")
    create.add_argument(
        "--expires",
        type=_duration,
        default=parse_duration(DEFAULT_INVITE_LIFETIME),
        metavar="DURATION",
        help=f"valid for this long: 30m, 2d, 1w (default {DEFAULT_INVITE_LIFETIME})",
    )
    invite.add_parser("list", help="every invite, used or not")
    revoke = invite.add_parser("revoke", help="withdraw an unused invite")
    revoke.add_argument("id", type=int)

    ban = sub.add_parser("ban", help="bans").add_subparsers(dest="action", required=True)
    ban_add = ban.add_parser("add", help="ban an account, a certificate or an address")
    _ban_target(ban_add)
    ban_add.add_argument(
        "--duration", type=_duration, metavar="DURATION", help="e.g. 2h, 7d (default: for good)"
    )
    ban_add.add_argument("--reason", default="", help="shown to the banned user")
    ban.add_parser("list", help="the bans in force")
    _ban_target(ban.add_parser("remove", help="lift a ban"))

    backup_p = sub.add_parser("backup", help="a consistent copy of the SQLite store")
    backup_p.add_argument("file", type=Path)
    sub.add_parser("stats", help="accounts, rooms, messages and the store's size")
    return p


def _duration(text: str) -> int:
    """A ``--expires``/``--duration`` value in seconds, for argparse."""
    try:
        return parse_duration(text)
    except ChatError as exc:
        raise argparse.ArgumentTypeError(exc.text) from None


def _password_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-file",
        type=Path,
        help="read the password from this file's first line (else a prompt, twice)",
    )


def _ban_target(p: argparse.ArgumentParser) -> None:
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--account", metavar="NAME")
    target.add_argument("--ip", metavar="ADDR|CIDR")
    target.add_argument("--fingerprint", metavar="SHA256", help="a client certificate's")


def read_new_password(path: Path | None, name: str) -> str:
    """A new password from ``path``'s first line, or typed twice on a terminal."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read --password-file {path}: {exc.strerror}") from exc
        password = lines[0] if lines else ""
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ; nothing was changed")
    else:
        raise ConfigError("no password: pass --password-file (stdin is not a terminal)")
    if not password:
        raise ConfigError("the password is empty; nothing was changed")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return password


def _run(args: argparse.Namespace, store: Store) -> list[str]:
    """Carry out the parsed command on ``store``; the lines to print."""
    area, action = args.area, getattr(args, "action", None)
    handlers: dict[tuple[str, str | None], Callable[[], list[str]]] = {
        ("user", "add"): lambda: actions.add_user(
            store,
            args.name,
            None if args.certificate_only else read_new_password(args.password_file, args.name),
            role=args.role,
        ),
        ("user", "passwd"): lambda: actions.change_password(
            store, args.name, read_new_password(args.password_file, args.name)
        ),
        ("user", "delete"): lambda: actions.delete_user(store, args.name),
        ("user", "list"): lambda: actions.list_users(store),
        ("user", "role"): lambda: actions.set_role(store, args.name, args.role),
        ("invite", "create"): lambda: actions.create_invite(store, expires_in=args.expires),
        ("invite", "list"): lambda: actions.list_invites(store),
        ("invite", "revoke"): lambda: actions.revoke_invite(store, args.id),
        ("ban", "add"): lambda: actions.add_ban(
            store,
            *_target(store, args),
            reason=args.reason,
            duration=args.duration,
        ),
        ("ban", "list"): lambda: actions.list_bans(store),
        ("ban", "remove"): lambda: actions.remove_ban(store, *_target(store, args)),
        ("stats", None): lambda: actions.stats(store),
    }
    return handlers[area, action]()


def _target(store: Store, args: argparse.Namespace) -> tuple[str, str, str]:
    return actions.ban_target(store, account=args.account, ip=args.ip, fingerprint=args.fingerprint)


def _backup(args: argparse.Namespace) -> int:
    if args.store is not None:
        print(
            "securechat-admin: backup copies an SQLite store; for PostgreSQL use its own "
            "tool: pg_dump --format=custom --file=FILE DBNAME (see docs/server.md)",
            file=sys.stderr,
        )
        return 2
    size = backup(args.db, args.file)
    log.info("backup of %s to %s (%d bytes)", args.db, args.file, size)
    print(f"backed up {args.db} to {args.file} ({size} bytes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one admin command; 0 on success, 1 if it was refused, 2 for a usage or
    store problem."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s securechat-admin: %(message)s", stream=sys.stderr
    )
    try:
        if args.area == "backup":
            return _backup(args)
        store = open_store(args.store, db=args.db)
        try:
            lines = _run(args, store)
        finally:
            store.close()
    except ChatError as exc:
        print(f"securechat-admin: {exc.text}", file=sys.stderr)
        return 1
    except SecureChatError as exc:
        print(f"securechat-admin: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0
