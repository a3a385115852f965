"""``securechat-server``: serve until SIGINT or SIGTERM; SIGHUP reloads (see reload.py)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from ..certcheck import check_server_certificate, log_findings
from ..channel import FRAME_TIMEOUT
from ..commandline import Number, OneLineParser, add_version
from ..errors import SecureChatError
from ..tls import server_context
from ..wire.protocol import DEFAULT_PORT
from . import sdnotify
from .config import effective_lines, parse_with_config
from .hub import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MESSAGE_BURST,
    DEFAULT_MESSAGE_RATE,
    REGISTRATION_POLICIES,
)
from .keyfile import exposed_key_warning, read_key_password
from .limits import DEFAULT_CONNECTIONS_PER_SOURCE, DEFAULT_HANDSHAKES_PER_SOURCE, IPNetwork
from .listener import Server, ServerConfig
from .login import DEFAULT_REGISTRATIONS
from .logs import LOG_FORMATS, setup_logging
from .metrics import MetricsAddress, MetricsEndpoint, metrics_address
from .relay import DEFAULT_MAX_FILE_SIZE
from .reload import Reloader

__all__ = ["build_parser", "main", "server_config"]

_PORT = Number(low=0, high=65535)  # 0: any free port (tests, and --peer-port's default use)
_AT_LEAST_ONE = Number(low=1)
_NOT_NEGATIVE = Number(low=0)
_POSITIVE = Number(whole=False, low=0, above=True)
_IO_THREADS = Number(low=1, high=64)  # more loops than cores only adds switching
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser() -> OneLineParser:
    """The server's command line."""
    p = OneLineParser(
        prog="securechat-server", description="Serve securechat over TLS (never plaintext)."
    )
    add_version(p)
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read options from this TOML file (keys: the long options without their "
        "dashes, e.g. max-file-size = 1048576); the command line overrides it",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, print it in effect (secrets hidden) and exit",
    )
    p.add_argument("--cert", type=Path, required=True, help="server certificate chain (PEM)")
    p.add_argument("--key", type=Path, required=True, help="the certificate's private key (PEM)")
    p.add_argument(
        "--key-password-file",
        type=Path,
        metavar="FILE",
        help="for an encrypted key: a file whose first line is its passphrase "
        "(the server never prompts)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_PORT, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--web-port",
        type=_PORT,
        metavar="PORT",
        help="also serve the web client on this port of --host, over HTTPS with the same "
        "certificate (browsers open https://HOST:PORT/); default: no web client",
    )
    p.add_argument(
        "--db", type=Path, default=Path("securechat.db"), help="SQLite file (default securechat.db)"
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="keep everything in PostgreSQL, shared with other servers: "
        "postgresql://user@host:5432/dbname (password best in ~/.pgpass or $PGPASSWORD); "
        "default: the SQLite file of --db",
    )
    p.add_argument(
        "--bus",
        metavar="URL",
        help="cluster mode: a Redis URL (redis://host:port/0) through which the servers "
        "sharing one --store tell each other what happens; needs a PostgreSQL --store",
    )
    p.add_argument(
        "--peer-port",
        type=_PORT,
        metavar="PORT",
        help="cluster mode: the port on which the other servers connect to this one to pass "
        "file data between users on different servers (mutual TLS; needs --peer-ca)",
    )
    p.add_argument(
        "--peer-host",
        metavar="NAME",
        help="the name or address the other servers dial for --peer-port; this server's "
        "certificate must list it (default: --host)",
    )
    p.add_argument(
        "--peer-ca",
        type=Path,
        metavar="PEM",
        help="the CA that signs every cluster server's certificate (and nothing else): "
        "both ends of a link between servers present and verify one",
    )
    p.add_argument(
        "--client-ca",
        type=Path,
        help="require client certificates signed by this CA; their common name is the user",
    )
    p.add_argument(
        "--tls-min", choices=("1.2", "1.3"), default="1.2", help="oldest TLS version accepted"
    )
    p.add_argument("--io-threads", type=_IO_THREADS, default=2, help="I/O loop threads (default 2)")
    p.add_argument(
        "--ping-interval",
        type=_POSITIVE,
        default=30.0,
        help="seconds of silence before a client is pinged; as long again without an answer "
        "drops it (default 30)",
    )
    p.add_argument(
        "--frame-timeout",
        type=_POSITIVE,
        default=FRAME_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds a client gets to finish a frame it has begun (default {FRAME_TIMEOUT:g})",
    )
    p.add_argument(
        "--durability",
        choices=("normal", "full"),
        default="normal",
        help="normal: committed messages survive a crash of the server; full: also a power "
        "loss (an fsync per group commit). SQLite only: with --store, PostgreSQL's "
        "synchronous_commit decides",
    )
    p.add_argument(
        "--retention-days",
        type=_NOT_NEGATIVE,
        default=0,
        help="delete messages older than this many days (0, the default, keeps everything)",
    )
    p.add_argument(
        "--history-on-join",
        type=_NOT_NEGATIVE,
        default=20,
        help="messages replayed to a user joining a room (default 20)",
    )
    p.add_argument(
        "--max-file-size",
        type=_NOT_NEGATIVE,
        default=DEFAULT_MAX_FILE_SIZE,
        help=f"largest file a user may send, in bytes (default {DEFAULT_MAX_FILE_SIZE}: 1 GiB)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=_AT_LEAST_ONE,
        default=DEFAULT_CONNECTIONS_PER_SOURCE,
        metavar="N",
        help="open connections one address (an IPv6 /64) may hold "
        f"(default {DEFAULT_CONNECTIONS_PER_SOURCE})",
    )
    p.add_argument(
        "--max-handshakes-per-ip",
        type=_AT_LEAST_ONE,
        default=DEFAULT_HANDSHAKES_PER_SOURCE,
        metavar="N",
        help="unfinished TLS handshakes one address may have "
        f"(default {DEFAULT_HANDSHAKES_PER_SOURCE})",
    )
    p.add_argument(
        "--connection-limit",
        type=_connection_limit,
        action="append",
        default=[],
        metavar="CIDR=N",
        help="both caps for each address in a network, e.g. an office behind one NAT "
        "address: 203.0.113.0/24=500 (repeatable; the most specific network wins)",
    )
    p.add_argument(
        "--max-sessions",
        type=_AT_LEAST_ONE,
        default=DEFAULT_MAX_SESSIONS,
        metavar="N",
        help=f"sessions one account may have at once (default {DEFAULT_MAX_SESSIONS})",
    )
    p.add_argument(
        "--message-burst",
        type=_AT_LEAST_ONE,
        default=DEFAULT_MESSAGE_BURST,
        metavar="N",
        help=f"messages an account may send at once (default {DEFAULT_MESSAGE_BURST})",
    )
    p.add_argument(
        "--message-rate",
        type=_POSITIVE,
        default=DEFAULT_MESSAGE_RATE,
        metavar="PER_S",
        help="messages per second an account may send after its burst "
        f"(default {DEFAULT_MESSAGE_RATE:g})",
    )
    p.add_argument(
        "--registrations-per-ip",
        type=_AT_LEAST_ONE,
        default=DEFAULT_REGISTRATIONS,
        metavar="N",
        help="new accounts one address may register per 10 minutes "
        f"(default {DEFAULT_REGISTRATIONS})",
    )
    p.add_argument(
        "--registration",
        choices=REGISTRATION_POLICIES,
        default="open",
        help="who may create an account: open (anyone, at first login), invite (with a code "
        "from securechat-admin invite create) or closed (only securechat-admin user add); "
        "default open",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="the least severe log lines written (default INFO)",
    )
    p.add_argument(
        "--metrics",
        type=metrics_address,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics over plain HTTP here (host default 127.0.0.1: "
        "keep it off public networks), e.g. 9464",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text lines, or one JSON object per line for log shippers (default text)",
    )
    return p


def _connection_limit(text: str) -> tuple[IPNetwork, int]:
    """``CIDR=N`` from the command line, e.g. ``203.0.113.0/24=500``."""
    cidr, sep, number = text.partition("=")
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
        limit = int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not CIDR=N, e.g. 10.0.0.0/8=500") from None
    if not sep or limit < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be a whole number of at least 1")
    return network, limit


def config_key_password(args: argparse.Namespace) -> bytes | None:
    """The private key's passphrase from ``--key-password-file``, if given."""
    password = args.key_password_file
    return read_key_password(password) if password is not None else None


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The server's configuration from parsed arguments."""
    return ServerConfig(
        cert=args.cert,
        key=args.key,
        key_password=config_key_password(args),
        host=args.host,
        port=args.port,
        db=args.db,
        store=args.store,
        bus=args.bus,
        peer_port=args.peer_port,
        web_port=args.web_port,
        peer_host=args.peer_host,
        peer_ca=args.peer_ca,
        client_ca=args.client_ca,
        tls_min=args.tls_min,
        io_threads=args.io_threads,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_interval,
        frame_timeout=args.frame_timeout,
        durability=args.durability,
        retention_days=args.retention_days,
        history_on_join=args.history_on_join,
        max_file_size=args.max_file_size,
        max_connections_per_ip=args.max_connections_per_ip,
        max_handshakes_per_ip=args.max_handshakes_per_ip,
        connection_limits=tuple(args.connection_limit),
        max_sessions=args.max_sessions,
        message_burst=args.message_burst,
        message_rate=args.message_rate,
        registrations_per_ip=args.registrations_per_ip,
        registration=args.registration,
    )


def _check_config(args: argparse.Namespace) -> int:
    """``--check-config``: load the certificate and key too, then print what is in effect."""
    try:
        server_context(
            cert=args.cert,
            key=args.key,
            client_ca=args.client_ca,
            tls_min=args.tls_min,
            key_password=server_config(args).key_password,
        )
    except SecureChatError as exc:
        print(f"securechat-server: {exc}", file=sys.stderr)
        return 2
    print("\n".join(effective_lines(build_parser(), args)))
    return 0


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing: the wake-up pipe carries the signal."""


def _wait_for_signals(signals: int, reloader: Reloader) -> bool:
    """Block until signals arrive; reload for SIGHUP; True once SIGINT or SIGTERM came."""
    stop = False
    for signum in os.read(signals, 64):
        if signum == signal.SIGHUP and not stop:
            sdnotify.reloading()
            reloader.reload()
            sdnotify.notify("READY=1")
        elif signum in (signal.SIGINT, signal.SIGTERM):
            stop = True
    return stop


def _reparse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments and config file read again, for a reload: ConfigError, never an exit."""

    def build() -> OneLineParser:
        parser = build_parser()
        parser.raise_errors = True
        return parser

    return parse_with_config(build, argv)[0]


def main(argv: list[str] | None = None) -> int:
    """Run the server; 0 after a clean shutdown, 2 if it cannot start."""
    args, _ = parse_with_config(build_parser, argv)
    if args.peer_port is not None and (args.bus is None or args.peer_ca is None):
        build_parser().error("--peer-port needs --bus and --peer-ca")
    if args.check_config:
        return _check_config(args)
    setup_logging(level=args.log_level, log_format=args.log_format)
    if (warning := exposed_key_warning(args.key)) is not None:
        logging.getLogger(__name__).warning("%s", warning)
    # The checks securechat-certs check makes: a certificate clients would refuse
    # is better refused here, with the fix, than by every client.
    try:
        key_password = config_key_password(args)
    except SecureChatError as exc:
        print(f"securechat-server: {exc}", file=sys.stderr)
        return 2
    findings = check_server_certificate(args.cert, args.key, key_password=key_password)
    if not log_findings(findings, logging.getLogger("securechat.certificate"), cert=args.cert):
        print(
            f"securechat-server: not starting: the certificate has errors (above); "
            f"securechat-certs check --cert {args.cert} --key {args.key} checks it again",
            file=sys.stderr,
        )
        return 2
    # The I/O loops, the writer and the reader pool share the GIL; Python's default
    # 5 ms switch interval let one busy thread hold a message back that long.
    sys.setswitchinterval(0.0005)
    # The C-level handler writes each signal's number to this pipe, and the main thread
    # acts on it outside any handler: a Python handler that took a lock (Event.set)
    # could deadlock against the very code it interrupted.
    signals_r, signals_w = os.pipe()
    os.set_blocking(signals_w, False)
    signal.set_wakeup_fd(signals_w)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _ignore)
    try:
        server = Server(server_config(args))
        server.start()
    except SecureChatError as exc:
        print(f"securechat-server: {exc}", file=sys.stderr)
        return 2
    reloader = Reloader(
        server,
        args=args,
        load=lambda: _reparse(argv),
        to_config=server_config,
        on_log_level=logging.getLogger().setLevel,
    )
    endpoint: MetricsEndpoint | None = None
    if args.metrics is not None:
        if not args.metrics.is_loopback:
            logging.getLogger(__name__).warning(
                "--metrics %s is plain HTTP beyond this machine: firewall it", args.metrics
            )
        try:
            endpoint = MetricsEndpoint(server.stats, args.metrics)
        except SecureChatError as exc:
            server.stop()
            print(f"securechat-server: {exc}", file=sys.stderr)
            return 2
        bound = MetricsAddress(args.metrics.host, endpoint.port)
        logging.getLogger(__name__).info("metrics on http://%s/metrics", bound)
    lines = []
    if server.web_address is not None:  # first: once "listening" shows, this is there
        web_host, web_port = server.web_address
        shown = f"[{web_host}]" if ":" in web_host else web_host
        lines.append(f"securechat-server: web client on https://{shown}:{web_port}/")
    host, port = server.address
    lines.append(f"securechat-server: listening on {host}:{port}")
    for line in lines:
        if args.log_format == "json":  # every line a JSON object, these too
            logging.getLogger(__name__).info("%s", line)
        else:
            print(line, file=sys.stderr, flush=True)
    sdnotify.notify(f"READY=1\nSTATUS=listening on {host}:{port}")
    while not _wait_for_signals(signals_r, reloader):
        pass
    sdnotify.notify("STOPPING=1")
    if endpoint is not None:
        endpoint.stop()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
