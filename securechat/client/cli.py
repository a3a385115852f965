"""``securechat-client``: connect, verify the server, log in, chat.

``--host`` may be given several times (the servers of a cluster), each as
``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``; the client uses one at a time and
moves to the next when it cannot connect or loses its connection.

On a terminal (standard input and output both) the full-screen interface of
:mod:`securechat.ui` opens; otherwise, or with ``--json``, line mode.

``securechat-client NAME`` takes its options from profile NAME of the client's
config file (:mod:`securechat.client.profiles`); options given on the command
line override it. Without ``--ca``, a server the system trust store does not
verify can be trusted on first use (:mod:`securechat.client.trust`).

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
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from cryptography import x509

from ..certnames import certificate_names, names_cover
from ..commandline import Number, OneLineParser, add_version
from ..errors import CertificateVerifyError, ChatError, ConfigError, ConnectionLost, TLSError
from ..tls import client_context, pinning_context, sha256_fingerprint
from ..ui.linemode import HumanPrinter, JsonPrinter, Printer, run_line_mode
from ..wire.protocol import DEFAULT_PORT
from .commands import JOIN_FILTERS
from .core import ChatClient, Event
from .lifecycle import CONNECT_TIMEOUT
from .profiles import default_config_path, load_profile
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
from .trust import (
    KNOWN_SERVERS_FILE,
    KnownServers,
    ServerTrust,
    config_dir,
    fetch_certificate,
    pin_on_first_use,
    verify_before_login,
)

__all__ = ["EXIT_CONNECT", "EXIT_LOGIN", "EXIT_TLS", "build_parser", "main"]

EXIT_TLS = 3
EXIT_LOGIN = 4
EXIT_CONNECT = 5

PASSWORD_ENV = "SECURECHAT_PASSWORD"  # noqa: S105 - a variable name, not a secret


def build_parser() -> argparse.ArgumentParser:
    """The client's command line."""
    p = OneLineParser(
        prog="securechat-client", description="Chat on a securechat server over verified TLS."
    )
    add_version(p)
    p.add_argument(
        "profile",
        nargs="?",
        help=f"take the options of [profiles.PROFILE] in {default_config_path()} "
        "(options given here override them)",
    )
    p.add_argument(
        "--trust-on-first-use",
        action="store_true",
        default=None,
        help="without --ca, trust and pin a server certificate no known CA signed, without "
        "asking (scripts; on a terminal the client asks)",
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
        type=Number(low=1, high=65535),
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
        "--filter-joins",
        choices=JOIN_FILTERS,
        help="full-screen client: hide join/part/quit notices in every room (on), none (off), "
        "or rooms of more than 50 members (auto, the default); /filter joins changes it",
    )
    p.add_argument(
        "--download-dir",
        type=Path,
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


def _password_typed(args: argparse.Namespace) -> bool:
    """True if :func:`read_password` will ask for the password at a prompt."""
    return not _password_given(args) and args.cert is None and sys.stdin.isatty()


def server_addresses(args: argparse.Namespace) -> list[ServerAddress]:
    """The ``--host`` entries in the order given (``localhost`` without any);
    ConfigError for one that is not ``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``."""
    port = DEFAULT_PORT if args.port is None else args.port
    return [parse_server(text, default_port=port) for text in args.host or ["localhost"]]


def apply_profile(args: argparse.Namespace) -> None:
    """Fill the options not given on the command line from ``args.profile`` (if named),
    then the defaults; ConfigError for a missing or malformed profile."""
    if args.profile is not None:
        profile = load_profile(default_config_path(), args.profile)
        for key, value in profile.options.items():
            option = "host" if key == "hosts" else key
            if getattr(args, option) is None:
                setattr(args, option, value)
    if args.port is None:
        args.port = DEFAULT_PORT
    if args.download_dir is None:
        args.download_dir = Path("downloads")
    args.trust_on_first_use = bool(args.trust_on_first_use)


def server_trust(args: argparse.Namespace) -> tuple[ServerTrust, KnownServers | None]:
    """How each server is trusted: ``--ca`` (pins ignored), or the system store and
    the pins of known_servers; and that file, when trust on first use applies."""
    context = client_context(ca=args.ca, cert=args.cert, key=args.key)
    if args.ca is not None:
        return ServerTrust(context), None
    known = KnownServers(config_dir() / KNOWN_SERVERS_FILE)
    pinned = pinning_context(cert=args.cert, key=args.key)
    trust = ServerTrust(context, pinned=pinned, pins=known.pins, known_file=known.path)
    return trust, known


def _confirm_first_use(args: argparse.Namespace, server: ServerAddress, der: bytes) -> bool:
    """Show the certificate and ask (or, with --trust-on-first-use, accept) it."""
    cert = x509.load_der_x509_certificate(der)
    print(
        f"The certificate of {server} is not signed by a CA this computer trusts.\n"
        f"  subject: {cert.subject.rfc4514_string()}\n"
        f"  issuer:  {cert.issuer.rfc4514_string()}\n"
        f"  names:   {', '.join(certificate_names(cert)) or '(none)'}\n"
        f"  SHA-256: {sha256_fingerprint(der)}\n"
        "Compare this fingerprint with the one the server's administrator gives you "
        "(securechat-certs check prints it).",
        file=sys.stderr,
    )
    if args.trust_on_first_use:
        print(f"Trusted on first use (--trust-on-first-use): pinned for {server}.", file=sys.stderr)
        return True
    if not sys.stdin.isatty():
        print(
            "Not trusted: standard input is not a terminal to ask on; pass "
            "--trust-on-first-use, or --ca with the CA that signed it.",
            file=sys.stderr,
        )
        return False
    print(f"Trust it and remember it for {server}? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in {"y", "yes"}


def _name_advice(
    args: argparse.Namespace, servers: list[ServerAddress], exc: CertificateVerifyError
) -> CertificateVerifyError:
    """``exc`` with the names the server's certificate does list, where one can be fetched."""
    probe = pinning_context(cert=args.cert, key=args.key)
    for server in servers:
        try:
            der = fetch_certificate(server, probe, timeout=5.0)
        except (ConnectionLost, TLSError):
            continue
        names = certificate_names(x509.load_der_x509_certificate(der))
        if not names_cover(names, server.host):
            listed = ", ".join(names) or "no names at all"
            return CertificateVerifyError(f"{exc}; it lists: {listed}", reason=exc.reason)
    return exc


def _login_errors_on_stderr(on_event: Callable[[Event], None]) -> Callable[[Event], None]:
    """``on_event`` without the errors that come before the first ``connected``: a
    refused login ends the client, and :func:`main` says why once, on standard error
    (``--json`` keeps the ``error`` event for scripts)."""
    connected = threading.Event()

    def filtered(item: Event) -> None:
        if item.type == "connected":
            connected.set()
        if connected.is_set() or item.type != "error":
            on_event(item)

    return filtered


def main(argv: list[str] | None = None) -> int:
    """Run the client; see the module docstring for exit statuses."""
    args = build_parser().parse_args(argv)
    try:
        apply_profile(args)
    except ConfigError as exc:
        print(f"securechat-client: {exc}", file=sys.stderr)
        return 2
    if not args.user and args.cert is None:
        print("securechat-client: --user NAME is required", file=sys.stderr)
        return 2
    try:
        servers = server_addresses(args)
        trust, known = server_trust(args)
        # A typed password is asked for once the server's certificate verified (connect).
        password = None if _password_typed(args) else read_password(args)
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
        ui.model.join_filter = args.filter_joins or "auto"
    asking = not args.json and sys.stdin.isatty()

    def make_client(trust: ServerTrust, login: Login) -> ChatClient:
        on_event: Callable[[Event], None] = printer.emit if ui is None else ui.post_event
        if not args.json:
            on_event = _login_errors_on_stderr(on_event)
        client = ChatClient(
            servers=servers,
            context=trust,
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

    def connect(trust: ServerTrust) -> ChatClient:
        nonlocal password
        if password is None and _password_typed(args):
            # A wrong --ca or an impostor is reported before the user types a secret.
            verify_before_login(servers, trust, timeout=CONNECT_TIMEOUT)
            password = read_password(args)
        return log_in(
            partial(make_client, trust),
            Login(password, register=args.register, invite=invite),
            name=args.user or "",
            prompts=terminal_prompts() if asking else None,
            typed_password=asking and password is not None and not _password_given(args),
        )

    try:
        try:
            client = connect(trust)
        except CertificateVerifyError as exc:
            if exc.reason == "name_mismatch":
                raise _name_advice(args, servers, exc) from exc
            if exc.reason != "unknown_ca" or known is None:
                raise
            # Trust on first use: pin what the user confirms, then connect with the pins.
            skipped = pin_on_first_use(
                servers,
                known,
                pinning_context(cert=args.cert, key=args.key),
                confirm=lambda server, der: _confirm_first_use(args, server, der),
                timeout=10.0,
            )
            if len(skipped) == len(servers):
                raise
            trust, known = server_trust(args)
            client = connect(trust)
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
    except (KeyboardInterrupt, EOFError):  # at the password prompt
        return 2
    try:
        if ui is not None:
            return ui.run(client)
        # A person at a terminal confirms /history forget; scripts (pipes, --json) do not.
        return run_line_mode(client, sys.stdin.fileno(), confirm=asking)
    except KeyboardInterrupt:
        client.quit("interrupted")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
