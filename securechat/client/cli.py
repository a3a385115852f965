"""``securechat-client``: connect, verify the server, log in, chat.

``--host`` may be given several times (the servers of a cluster), each as
``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``; the client uses one at a time and
moves to the next when it cannot connect or loses its connection.

On a terminal (standard input and output both) the full-screen interface of
:mod:`securechat.ui` opens; otherwise, or with ``--json``, line mode.

Exit status: 0 after a clean quit or EOF, 1 if the connection was lost,
2 for a usage or configuration problem, 3 if TLS or certificate verification
failed, 4 if the server refused the login, 5 if the server could not be reached,
6 if the name has no account and none was created (see :mod:`.registration`).
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import sys
from pathlib import Path

from ..errors import ChatError, ConfigError, ConnectionLost, TLSError
from ..tls import client_context
from ..ui.linemode import HumanPrinter, JsonPrinter, Printer, run_line_mode
from ..wire.protocol import DEFAULT_PORT
from .core import ChatClient, Event
from .registration import (
    EXIT_NO_ACCOUNT,
    INVITE_ENV,
    Login,
    hide_unknown_account,
    log_in,
    read_invite,
    terminal_prompts,
)
from .servers import ServerAddress, parse_server

__all__ = ["EXIT_CONNECT", "EXIT_LOGIN", "EXIT_TLS", "build_parser", "main"]

EXIT_TLS = 3
EXIT_LOGIN = 4
EXIT_CONNECT = 5

PASSWORD_ENV = "SECURECHAT_PASSWORD"  # noqa: S105 - a variable name, not a secret


def build_parser() -> argparse.ArgumentParser:
    """The client's command line."""
    p = argparse.ArgumentParser(
        prog="securechat-client", description="Chat on a securechat server over verified TLS."
    )
    p.add_argument(
        "--ca", type=Path, help="CA certificate that signed the server's (default: system store)"
    )
    p.add_argument(
        "--host",
        action="append",
        metavar="HOST[:PORT]",
        help="server name or address, with a port or not ([IPv6]:PORT); repeat it for "
        "the servers of a cluster, tried in turn (default localhost)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port of the --host entries without one (default {DEFAULT_PORT})",
    )
    p.add_argument("--user", help="your user name")
    p.add_argument(
        "--register",
        action="store_true",
        help="create the account if the name is free (on a terminal the client asks instead)",
    )
    p.add_argument(
        "--invite-file",
        type=Path,
        help=f"read the invite code for --register from this file (after ${INVITE_ENV})",
    )
    p.add_argument("--cert", type=Path, help="client certificate, for servers run with --client-ca")
    p.add_argument("--key", type=Path, help="the client certificate's private key")
    p.add_argument(
        "--password-file",
        type=Path,
        help=f"read the password from this file's first line (after ${PASSWORD_ENV})",
    )
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    p.add_argument(
        "--download-dir",
        type=Path,
        default=Path("downloads"),
        help="where received files are saved (default ./downloads)",
    )
    return p


def read_password(args: argparse.Namespace) -> str | None:
    """The password from $SECURECHAT_PASSWORD, --password-file or a prompt, in that order.

    None when a client certificate identifies the user instead.
    """
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    path: Path | None = args.password_file
    if path is not None:
        try:
            first = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --password-file {path}: {exc}") from exc
        if not first or not first[0]:
            raise ConfigError(f"--password-file {path} is empty")
        return first[0]
    if args.cert is not None:
        return None
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.user}: ")
    raise ConfigError(
        f"no password: set {PASSWORD_ENV} or pass --password-file (stdin is not a terminal)"
    )


def _password_given(args: argparse.Namespace) -> bool:
    """True if the password came from the environment or a file, not typed at a prompt."""
    return bool(os.environ.get(PASSWORD_ENV)) or args.password_file is not None


def server_addresses(args: argparse.Namespace) -> list[ServerAddress]:
    """The ``--host`` entries in the order given (``localhost`` without any);
    ConfigError for one that is not ``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``."""
    return [parse_server(text, default_port=args.port) for text in args.host or ["localhost"]]


def main(argv: list[str] | None = None) -> int:
    """Run the client; see the module docstring for exit statuses."""
    args = build_parser().parse_args(argv)
    if not args.user and args.cert is None:
        print("securechat-client: --user NAME is required", file=sys.stderr)
        return 2
    try:
        servers = server_addresses(args)
        context = client_context(ca=args.ca, cert=args.cert, key=args.key)
        password = read_password(args)
        invite = read_invite(args.invite_file)
    except ConfigError as exc:
        print(f"securechat-client: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, EOFError):
        return 2
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A terminal or pipe that cannot show some character must not kill the chat.
        sys.stdout.reconfigure(errors="backslashreplace")
    printer: Printer = JsonPrinter(sys.stdout) if args.json else HumanPrinter(sys.stdout)
    ui = None
    if not args.json and sys.stdin.isatty() and sys.stdout.isatty():
        # Imported only for a terminal: scripts and bots skip prompt_toolkit's ~90 ms import.
        from ..ui import ChatApp  # noqa: PLC0415

        ui = ChatApp()
    asking = not args.json and sys.stdin.isatty()

    def make_client(login: Login) -> ChatClient:
        on_event = printer.emit if ui is None else ui.post_event
        client = ChatClient(
            servers=servers,
            context=context,
            user=args.user or "",
            password=login.password,
            on_event=hide_unknown_account(on_event) if asking else on_event,
            download_dir=args.download_dir,
            register=login.register,
            invite=login.invite,
        )
        if isinstance(printer, HumanPrinter):
            printer.client = client
        printer.on_broken = client.close
        printer.on_printed = client.mark_shown
        return client

    try:
        client = log_in(
            make_client,
            Login(password, register=args.register, invite=invite),
            name=args.user or "",
            prompts=terminal_prompts() if asking else None,
            typed_password=asking and password is not None and not _password_given(args),
        )
    except (TLSError, ChatError, ConnectionLost) as exc:
        status = (
            EXIT_TLS
            if isinstance(exc, TLSError)
            else (EXIT_NO_ACCOUNT if exc.code == "no_such_account" else EXIT_LOGIN)
            if isinstance(exc, ChatError)
            else EXIT_CONNECT
        )
        if args.json:
            if not isinstance(exc, ChatError):  # a refused login was already an error event
                code = "tls" if isinstance(exc, TLSError) else "connect"
                printer.emit(Event("error", {"code": code, "text": str(exc)}))
            printer.emit(Event("disconnected", {"reason": str(exc)}))
        print(f"securechat-client: {exc}", file=sys.stderr)
        return status
    try:
        if ui is not None:
            return ui.run(client)
        return run_line_mode(client, sys.stdin.fileno())
    except KeyboardInterrupt:
        client.quit("interrupted")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
