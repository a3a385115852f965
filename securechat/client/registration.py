"""Deliberate registration: an unknown name creates an account only when the user means it.

The client's login says ``register: false`` unless the user asked to register
(docs/protocol.md §18.1), so a typo in ``--user`` is answered ``no_such_account``
instead of silently creating an account. Then:

* on a terminal, :func:`log_in` asks "create account NAME? [y/N]", the new
  password twice (unless it came from ``$SECURECHAT_PASSWORD`` or a file: the
  user chose it already), and an invite code if the server's ``hello`` says it
  registers by invitation; and logs in again with ``register: true``. A server
  that registers nobody itself (``closed``) gets a clear "ask an admin" instead;
* a script (no terminal, or ``--json``) registers only with ``--register``, the
  invite code from ``$SECURECHAT_INVITE`` or ``--invite-file`` (never the command
  line, where other users can read it); otherwise the unknown name ends the client
  with :data:`EXIT_NO_ACCOUNT`.

The questions go through :class:`Prompts`, so tests can answer them.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ChatError, ConfigError
from .core import ChatClient, Event

__all__ = [
    "EXIT_NO_ACCOUNT",
    "INVITE_ENV",
    "MAX_PASSWORD_TRIES",
    "Login",
    "Prompts",
    "ask_to_register",
    "hide_unknown_account",
    "log_in",
    "read_invite",
    "terminal_prompts",
]

EXIT_NO_ACCOUNT = 6
"""Exit status when the name has no account and none was created."""

INVITE_ENV = "SECURECHAT_INVITE"
"""The environment variable that may hold an invite code."""

MAX_PASSWORD_TRIES = 3
"""Times the new password may be mistyped (the two entries differ) before giving up."""

_UNKNOWN = "no_such_account"


@dataclass(frozen=True, slots=True)
class Login:
    """What the login sends: the password (None with a client certificate), whether
    it may register the name, and the invite code for that."""

    password: str | None
    register: bool = False
    invite: str | None = None


@dataclass(frozen=True, slots=True)
class Prompts:
    """How to ask: ``ask`` shows what is typed, ``ask_secret`` does not, ``say`` tells."""

    ask: Callable[[str], str]
    ask_secret: Callable[[str], str]
    say: Callable[[str], None]


def terminal_prompts() -> Prompts:
    """Questions on the terminal. Prompts and remarks go to standard error, like the
    diagnostics, so standard output keeps only events."""
    return Prompts(_ask, getpass.getpass, lambda text: print(text, file=sys.stderr))


def _ask(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def read_invite(path: Path | None) -> str | None:
    """The invite code from ``$SECURECHAT_INVITE``, else the first line of ``path``."""
    code = os.environ.get(INVITE_ENV, "").strip()
    if code or path is None:
        return code or None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --invite-file {path}: {exc}") from exc
    if not lines or not lines[0].strip():
        raise ConfigError(f"--invite-file {path} is empty")
    return lines[0].strip()


def hide_unknown_account(on_event: Callable[[Event], None]) -> Callable[[Event], None]:
    """``on_event`` without the ``no_such_account`` refusal, which the questions of
    :func:`ask_to_register` answer on a terminal instead."""

    def filtered(item: Event) -> None:
        if not (item.type == "error" and item.data.get("code") == _UNKNOWN):
            on_event(item)

    return filtered


def ask_to_register(
    name: str, policy: str | None, login: Login, prompts: Prompts, *, typed_password: bool
) -> Login:
    """Ask whether to create the account ``name`` (and what it needs); the login that
    registers it. ChatError ``no_such_account`` when the answer is no, the questions
    are abandoned (Ctrl+C, Ctrl+D) or the server registers nobody itself."""
    who = name or "for your certificate"
    if policy == "closed":
        raise ChatError(
            _UNKNOWN,
            f"there is no account {name} on this server, and it creates none itself: "
            "ask an admin for one (securechat-admin user add)",
        )
    try:
        answer = prompts.ask(
            f"There is no account {name} on this server. Create account {who}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            raise ChatError(_UNKNOWN, f"no account created; check the name {name!r}")
        password = login.password
        if typed_password:
            password = _new_password(name, prompts)
        invite = login.invite
        if policy == "invite" and not invite:
            invite = prompts.ask("This server registers by invitation. Invite code: ").strip()
            if not invite:
                raise ChatError(_UNKNOWN, "no invite code, so no account created")
    except (EOFError, KeyboardInterrupt):
        raise ChatError(_UNKNOWN, "no account created") from None
    return replace(login, password=password, register=True, invite=invite)


def _new_password(name: str, prompts: Prompts) -> str:
    for _ in range(MAX_PASSWORD_TRIES):
        first = prompts.ask_secret(f"new password for {name}: ")
        if not first:
            prompts.say("an empty password will not do")
            continue
        if prompts.ask_secret("the same password again: ") == first:
            return first
        prompts.say("the two passwords differ")
    raise ChatError(_UNKNOWN, "no account created: no password agreed on")


def log_in(
    make_client: Callable[[Login], ChatClient],
    login: Login,
    *,
    name: str,
    prompts: Prompts | None,
    typed_password: bool = False,
) -> ChatClient:
    """Connect and log in with ``login``; when the name has no account and ``prompts``
    may ask (a terminal), ask to register it and log in again with a new client.

    Raises what :meth:`ChatClient.connect` raises; ChatError ``no_such_account``
    when no account exists and none was created.
    """
    client = make_client(login)
    try:
        client.connect()
        return client
    except ChatError as exc:
        if exc.code != _UNKNOWN or prompts is None or login.register:
            raise
        policy = client.registration
    client = make_client(
        ask_to_register(name, policy, login, prompts, typed_password=typed_password)
    )
    client.connect()
    return client
