"""``securechat-server``: run a server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from ..channel import FRAME_TIMEOUT
from ..errors import SecureChatError
from ..wire.protocol import DEFAULT_PORT
from .hub import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MESSAGE_BURST,
    DEFAULT_MESSAGE_RATE,
    REGISTRATION_POLICIES,
)
from .limits import DEFAULT_CONNECTIONS_PER_SOURCE, DEFAULT_HANDSHAKES_PER_SOURCE, IPNetwork
from .listener import Server, ServerConfig
from .login import DEFAULT_REGISTRATIONS
from .relay import DEFAULT_MAX_FILE_SIZE

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The server's command line."""
    p = argparse.ArgumentParser(
        prog="securechat-server", description="Serve securechat over TLS (never plaintext)."
    )
    p.add_argument("--cert", type=Path, required=True, help="server certificate chain (PEM)")
    p.add_argument("--key", type=Path, required=True, help="the certificate's private key (PEM)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
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
        type=int,
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
    p.add_argument("--io-threads", type=int, default=2, help="I/O loop threads (default 2)")
    p.add_argument(
        "--ping-interval",
        type=float,
        default=30.0,
        help="seconds of silence before a client is pinged; as long again without an answer "
        "drops it (default 30)",
    )
    p.add_argument(
        "--frame-timeout",
        type=float,
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
        type=int,
        default=0,
        help="delete messages older than this many days (0, the default, keeps everything)",
    )
    p.add_argument(
        "--history-on-join",
        type=int,
        default=20,
        help="messages replayed to a user joining a room (default 20)",
    )
    p.add_argument(
        "--max-file-size",
        type=int,
        default=DEFAULT_MAX_FILE_SIZE,
        help=f"largest file a user may send, in bytes (default {DEFAULT_MAX_FILE_SIZE}: 1 GiB)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=DEFAULT_CONNECTIONS_PER_SOURCE,
        metavar="N",
        help="open connections one address (an IPv6 /64) may hold "
        f"(default {DEFAULT_CONNECTIONS_PER_SOURCE})",
    )
    p.add_argument(
        "--max-handshakes-per-ip",
        type=int,
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
        type=int,
        default=DEFAULT_MAX_SESSIONS,
        metavar="N",
        help=f"sessions one account may have at once (default {DEFAULT_MAX_SESSIONS})",
    )
    p.add_argument(
        "--message-burst",
        type=int,
        default=DEFAULT_MESSAGE_BURST,
        metavar="N",
        help=f"messages an account may send at once (default {DEFAULT_MESSAGE_BURST})",
    )
    p.add_argument(
        "--message-rate",
        type=float,
        default=DEFAULT_MESSAGE_RATE,
        metavar="PER_S",
        help="messages per second an account may send after its burst "
        f"(default {DEFAULT_MESSAGE_RATE:g})",
    )
    p.add_argument(
        "--registrations-per-ip",
        type=int,
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
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
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


def main(argv: list[str] | None = None) -> int:
    """Run the server; 0 after a clean shutdown, 2 if it cannot start."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("retention_days", "history_on_join", "max_file_size"):
        if getattr(args, option) < 0:
            parser.error(f"--{option.replace('_', '-')} must not be negative")
    if args.peer_port is not None:
        if args.bus is None or args.peer_ca is None:
            parser.error("--peer-port needs --bus and --peer-ca")
        if not 0 <= args.peer_port <= 65535:
            parser.error("--peer-port must be between 0 and 65535")
    for option in ("frame_timeout", "message_rate"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be positive")
    for option in (
        "io_threads",
        "max_connections_per_ip",
        "max_handshakes_per_ip",
        "max_sessions",
        "message_burst",
        "registrations_per_ip",
    ):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    config = ServerConfig(
        cert=args.cert,
        key=args.key,
        host=args.host,
        port=args.port,
        db=args.db,
        store=args.store,
        bus=args.bus,
        peer_port=args.peer_port,
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
    # The I/O loops, the writer and the reader pool share the GIL; Python's default
    # 5 ms switch interval let one busy thread hold a message back that long.
    sys.setswitchinterval(0.0005)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        server = Server(config)
        server.start()
    except SecureChatError as exc:
        print(f"securechat-server: {exc}", file=sys.stderr)
        return 2
    host, port = server.address
    print(f"securechat-server: listening on {host}:{port}", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
