"""The ``securechat-certs`` command: development certificates, and checking a real one.

``securechat-certs --out DIR`` makes a tiny two-level PKI for running securechat
on one machine or a LAN (how, in :mod:`securechat.devcerts`)::

    ca.pem / ca.key            self-signed CA, path length 0 (it signs leaves only)
    server.pem / server.key    serverAuth and clientAuth leaf (clientAuth: a cluster
                               server dials the others with it) for localhost,
                               127.0.0.1, ::1 and --host
    NAME.pem / NAME.key        clientAuth leaf, common name NAME (``--client NAME``)

A CA already in DIR is reused rather than replaced: client certificates are
handed out one by one, and a new CA would silently invalidate all of them.

``securechat-certs check`` prints a server certificate (any CA's), the
fingerprint clients pin, and what :mod:`securechat.certcheck` finds wrong with it.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .certcheck import (
    Severity,
    check_server_certificate,
    fingerprint_of,
    format_name,
    format_time,
    load_certificates,
)
from .certnames import certificate_names
from .commandline import add_version
from .devcerts import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CA_LIFETIME,
    DEFAULT_HOSTS,
    LEAF_LIFETIME,
    check_client_name,
    load_ca,
    make_ca,
    make_client_cert,
    make_server_cert,
    subject_alt_names,
    unique_hosts,
    write_cert,
    write_key,
)
from .errors import ConfigError

__all__ = ["MAX_LEAF_DAYS", "main"]

MAX_LEAF_DAYS = 398
"""Longest ``--days``: Apple platforms refuse server certificates valid for longer."""

# Names whose files the server set already uses: "--client ca" would overwrite the CA key.
_RESERVED_CLIENT_NAMES = frozenset({"ca", "server"})

_SERVER_CERT_FILE = "server.pem"
_SERVER_KEY_FILE = "server.key"

_PROG = "securechat-certs"


def main(argv: list[str] | None = None) -> int:
    """The ``securechat-certs`` command: write development certificates into --out DIR,
    or, as ``securechat-certs check``, check a server certificate (any CA's).

    Returns the exit status: 0 on success, 2 (after one line on stderr) on any
    failure the user can fix.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        return _check(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        # --help and --version end here; usage errors were already turned into ConfigError.
        return exc.code if isinstance(exc.code, int) else 0
    except ConfigError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    lifetime = datetime.timedelta(days=args.days)
    try:
        if args.client is not None:
            if args.host:
                raise ConfigError("--host applies to the server certificate, not to --client")
            _issue_client(out, args.client, lifetime=lifetime)
        else:
            _issue_server(out, [*DEFAULT_HOSTS, *args.host], lifetime=lifetime)
    except ConfigError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{_PROG}: error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _check(argv: Sequence[str]) -> int:
    """``securechat-certs check``: print the certificate, its fingerprint and every finding.

    Exit status: 0 with no errors (warnings and notes allowed), 1 with any
    error, 2 for a usage error.
    """
    parser = argparse.ArgumentParser(
        prog=f"{_PROG} check",
        description="Check a server certificate before clients do: the key matches, the "
        "chain is complete, the names clients use are listed, the dates, the usage. "
        "Prints the SHA-256 fingerprint clients pin, and one line per problem with its fix.",
    )
    parser.add_argument("--cert", type=Path, required=True, help="the certificate chain (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    parser.add_argument(
        "--ca", type=Path, help="the CA clients trust (default: this system's trust store)"
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name or address clients connect to (repeatable)",
    )
    args = parser.parse_args(argv)
    findings = check_server_certificate(args.cert, args.key, ca=args.ca, hosts=args.host)
    try:
        leaf = load_certificates(args.cert)[0]
    except (OSError, ValueError):
        leaf = None
    if leaf is not None:
        print(f"certificate: {format_name(leaf.subject)}")
        print(f"issuer:      {format_name(leaf.issuer)}")
        print(f"names:       {', '.join(certificate_names(leaf)) or '(none)'}")
        start, end = format_time(leaf.not_valid_before_utc), format_time(leaf.not_valid_after_utc)
        print(f"valid:       {start} to {end}")
        print(f"sha256:      {fingerprint_of(leaf)}")
    for finding in findings:
        print(finding)
    errors = sum(f.severity is Severity.ERROR for f in findings)
    if not findings:
        print("ok: no problems found")
    else:
        print(f"{errors} error(s), {len(findings) - errors} warning(s) or note(s)", file=sys.stderr)
    return 1 if errors else 0


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become one ConfigError line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {_PROG} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=_PROG,
        description=(
            "Make development TLS certificates for securechat: a private CA and a "
            "server certificate, or (with --client) a client certificate signed by "
            "the CA already in DIR. Never use them in production. "
            f"`{_PROG} check --help`: check a server certificate and key (any CA's)."
        ),
    )
    add_version(parser)
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="directory to write into (created if missing)"
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="extra server host name or IP address, besides localhost, 127.0.0.1 and ::1 "
        "(repeatable)",
    )
    parser.add_argument(
        "--client",
        metavar="NAME",
        help="make NAME.pem/NAME.key, a client certificate for user NAME, with the CA in DIR",
    )
    parser.add_argument(
        "--days",
        type=_days,
        default=LEAF_LIFETIME.days,
        metavar="N",
        help=f"validity of the server or client certificate, 1 to {MAX_LEAF_DAYS} "
        f"(default {LEAF_LIFETIME.days}); the CA's is always {CA_LIFETIME.days}",
    )
    return parser


def _days(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LEAF_DAYS):
        raise argparse.ArgumentTypeError(
            f"must be a whole number of days from 1 to {MAX_LEAF_DAYS}, not {text!r}"
        )
    return int(text)


def _issue_server(out: Path, hosts: Sequence[str], *, lifetime: datetime.timedelta) -> None:
    """Write the server certificate, reusing the CA in ``out`` when there is one."""
    # Validate the hosts before touching the disk, so a typo writes nothing.
    subject_alt_names(hosts)
    ca_files = [out / CA_CERT_FILE, out / CA_KEY_FILE]
    written: list[Path] = []
    if all(path.exists() for path in ca_files):
        ca_cert, ca_key = load_ca(out)
        print(f"Reusing the CA in {out}; client certificates it signed stay valid.")
    else:
        out.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = make_ca()
        # Key first: a ca.pem without its key would make the next run fail to reuse it.
        write_key(ca_files[1], ca_key)
        write_cert(ca_files[0], ca_cert)
        written += ca_files
    server_cert, server_key = make_server_cert(ca_cert, ca_key, hosts=hosts, lifetime=lifetime)
    cert_path, key_path = out / _SERVER_CERT_FILE, out / _SERVER_KEY_FILE
    write_key(key_path, server_key)
    write_cert(cert_path, server_cert)
    written += [cert_path, key_path]
    _print_written(written)
    print(f"Server certificate names: {', '.join(unique_hosts(hosts))}")
    print(f"Valid until {server_cert.not_valid_after_utc:%Y-%m-%d}; SHA-256 fingerprint:")
    print(f"  {fingerprint_of(server_cert)}")
    print("Start the server with:")
    print(f"  securechat-server --cert {_q(cert_path)} --key {_q(key_path)}")
    print("and connect with:")
    print(f"  securechat-client --ca {_q(out / CA_CERT_FILE)} --user NAME")
    print(f"For a client certificate: {_PROG} --out {_q(out)} --client NAME")


def _issue_client(out: Path, name: str, *, lifetime: datetime.timedelta) -> None:
    """Write NAME.pem/NAME.key signed by the CA already in ``out``."""
    check_client_name(name)
    if name.lower() in _RESERVED_CLIENT_NAMES:
        # Lower-cased because "CA.key" is "ca.key" on case-insensitive file systems.
        owner = "CA" if name.lower() == "ca" else "server"
        raise ConfigError(
            f"client name {name!r} is reserved: its files would replace the {owner}'s"
        )
    ca_cert, ca_key = load_ca(out)
    cert, key = make_client_cert(ca_cert, ca_key, name=name, lifetime=lifetime)
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    write_key(key_path, key)
    write_cert(cert_path, cert)
    _print_written([cert_path, key_path])
    print("Connect with:")
    print(
        f"  securechat-client --ca {_q(out / CA_CERT_FILE)} --user {name} "
        f"--cert {_q(cert_path)} --key {_q(key_path)}"
    )


def _print_written(paths: Sequence[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def _q(path: Path) -> str:
    """``path`` quoted for pasting into a POSIX shell."""
    return shlex.quote(str(path))


if __name__ == "__main__":
    raise SystemExit(main())
