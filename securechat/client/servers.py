"""The servers a client may use: ``--host`` entries, their addresses, the order to try them.

In cluster mode several servers serve one chat, and one name may stand for
several of them (``localhost`` is often 127.0.0.1 and ::1; a DNS round-robin
name lists every server). The client therefore connects to an :class:`Endpoint`:
one socket address, together with the entry it came from, whose name stays the
TLS server name so that certificate checks are the same whichever address answers.

:class:`ServerList` resolves the entries afresh for every round of tries (DNS
may move a name while we are away) and puts the endpoints in the order to try:
the given order at first; after a drop, starting with the endpoint after the one
that dropped us, which is probably dead and so comes last.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Endpoint", "ServerAddress", "ServerList", "parse_server", "resolve"]


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One ``--host`` entry: a host name or address literal, and a port."""

    host: str
    """As given, without the brackets of an IPv6 literal: also the TLS server name."""
    port: int

    def __str__(self) -> str:
        return _host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One socket address of a :class:`ServerAddress`: what one connection goes to."""

    server: ServerAddress
    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]
    """As ``getaddrinfo`` gives it: (address, port) or, for IPv6, with flow and scope."""

    @property
    def address(self) -> str:
        """The address and port, an IPv6 address in brackets: ``[::1]:7443``."""
        return _host_port(str(self.sockaddr[0]), int(self.sockaddr[1]))

    @property
    def label(self) -> str:
        """How messages name it: the entry, and the address when the entry is a name."""
        if self.sockaddr[0] == self.server.host:
            return str(self.server)
        return f"{self.server} ({self.sockaddr[0]})"


def parse_server(text: str, *, default_port: int) -> ServerAddress:
    """A ``--host`` value: ``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT``.

    A bare IPv6 address (``::1``, more than one colon) is a host without a port.
    Entries without a port get ``default_port``. Raises ConfigError, saying what
    is wrong, for anything else.
    """
    host, port = text, default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"--host {text!r}: {_FORMS}")
        _check_ipv6(host, text)
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        port = _port(digits, text)
    elif ":" in text:
        _check_ipv6(text, text)
    if not host:
        raise ConfigError(f"--host {text!r}: no host name or address")
    try:
        host.encode("idna")  # as the resolver will, which would fail on every try
    except UnicodeError as exc:
        raise ConfigError(f"--host {text!r}: not a valid host name ({exc})") from exc
    return ServerAddress(host, port)


def resolve(server: ServerAddress) -> list[Endpoint]:
    """Every address ``server`` stands for, in the resolver's order of preference.

    Raises OSError (``socket.gaierror``) when the name does not resolve.
    """
    found = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
    return [Endpoint(server, family, tuple(sockaddr)) for family, _, _, _, sockaddr in found]


class ServerList:
    """The ``--host`` entries in the order given, and where the client last logged in."""

    def __init__(self, servers: Sequence[ServerAddress]) -> None:
        if not servers:
            raise ValueError("a ServerList needs at least one server")
        self.servers = tuple(servers)
        self.current: Endpoint | None = None
        """The endpoint the client is logged in on, or was last: the next round
        starts after it. Set by the client core when a login succeeds."""

    def round(self) -> tuple[list[Endpoint], list[str]]:
        """Every endpoint, resolved now, in the order to try them; and, for each entry
        that does not resolve, ``"ENTRY: why"``."""
        endpoints: list[Endpoint] = []
        unresolved: list[str] = []
        for server in self.servers:
            try:
                endpoints += resolve(server)
            except OSError as exc:
                unresolved.append(f"{server}: {exc.strerror or exc}")
        if self.current in endpoints:
            after = endpoints.index(self.current) + 1
            endpoints = endpoints[after:] + endpoints[:after]
        return endpoints, unresolved


_FORMS = "write HOST, HOST:PORT or [IPv6 address]:PORT"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_ipv6(literal: str, text: str) -> None:
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        address = None
    if address is None or address.version != 6:
        raise ConfigError(f"--host {text!r}: {literal!r} is not an IPv6 address; {_FORMS}")


def _port(digits: str, text: str) -> int:
    if not (digits.isascii() and digits.isdigit() and 0 < int(digits) < 65536):
        raise ConfigError(f"--host {text!r}: the port must be a number from 1 to 65535")
    return int(digits)
