"""Which server certificates the client trusts: a CA's, or one pinned on first use.

Strategy
--------
With ``--ca``, or when the system trust store verifies the server, every
connection verifies the chain and the host name (:func:`securechat.tls.client_context`).

Without ``--ca``, a server whose certificate no trusted CA signed (a private
CA, a self-signed certificate) can be trusted on first use, the ssh
``known_hosts`` habit: the client shows the certificate's SHA-256 fingerprint,
the user confirms it once (or passes ``--trust-on-first-use``), and it is
pinned in ``known_servers`` under the user's config directory, keyed by
``host:port`` (one line each: ``HOST:PORT FINGERPRINT``). From then on a
connection to that ``host:port`` is made without chain or host-name
verification (:func:`securechat.tls.pinning_context`) and its certificate must
be exactly the pinned one: :meth:`ServerTrust.check_peer` runs right after the
handshake, before the login (and its password) is sent. A different
certificate is refused loudly, whatever signed it: it may be an attacker's,
or a renewed certificate that only the server's administrator can vouch for.

A pin is per ``host:port``, as the servers of a cluster may each have their
own certificate. ``--ca`` ignores pins entirely.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..errors import CertificateVerifyError, ConfigError, ConnectionLost, TLSError
from ..tls import describe_tls_error, sha256_fingerprint
from .servers import ServerAddress

__all__ = [
    "KNOWN_SERVERS_FILE",
    "KnownServers",
    "ServerTrust",
    "config_dir",
    "fetch_certificate",
    "pin_on_first_use",
    "verify_before_login",
]

KNOWN_SERVERS_FILE = "known_servers"

_FINGERPRINT_LENGTH = 32 * 3 - 1
"""``AB:CD:…`` for the 32 bytes of a SHA-256 digest."""


def config_dir() -> Path:
    """securechat's directory under ``$XDG_CONFIG_HOME``, or ``~/.config`` without it."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG base directory spec: a relative path there is invalid and ignored.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "securechat"


def _key(server: ServerAddress) -> str:
    """How ``server`` is named in known_servers (names are case-insensitive)."""
    return str(ServerAddress(server.host.lower(), server.port))


class KnownServers:
    """The pinned fingerprints in one known_servers file (read on creation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pins: dict[str, str] = {}
        """``host:port`` to fingerprint, as in the file."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 2 or len(fields[1]) != _FINGERPRINT_LENGTH:
                raise ConfigError(
                    f"{path}, line {number}: expected HOST:PORT and a SHA-256 fingerprint; "
                    "fix or delete the line"
                )
            self.pins[fields[0].lower()] = fields[1].upper()

    def pin(self, server: ServerAddress) -> str | None:
        """The fingerprint pinned for ``server``, if any."""
        return self.pins.get(_key(server))

    def add(self, server: ServerAddress, fingerprint: str) -> None:
        """Pin ``fingerprint`` for ``server``, rewriting the file atomically.

        Raises ConfigError if the file cannot be written.
        """
        self.pins[_key(server)] = fingerprint
        lines = ["# securechat-client: server certificates trusted on first use"]
        lines += [f"{name} {pin}" for name, pin in self.pins.items()]
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write("\n".join(lines) + "\n")
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from exc


class ServerTrust:
    """The TLS context to use for each server, and the check after its handshake.

    ``verified`` verifies chain and name (for ``--ca`` or the system store);
    servers in ``pins`` (``host:port`` to fingerprint) use ``pinned`` instead and
    must present exactly that certificate. ``known_file`` is named in errors.
    """

    def __init__(
        self,
        verified: ssl.SSLContext,
        *,
        pinned: ssl.SSLContext | None = None,
        pins: Mapping[str, str] | None = None,
        known_file: Path | None = None,
    ) -> None:
        self._verified = verified
        self._pinned = pinned
        self._pins = dict(pins or {}) if pinned is not None else {}
        self._known_file = known_file

    def context_for(self, server: ServerAddress) -> ssl.SSLContext:
        """The context for a connection to ``server``."""
        if self._pinned is not None and _key(server) in self._pins:
            return self._pinned
        return self._verified

    def check_peer(self, server: ServerAddress, der: bytes | None) -> None:
        """Raise CertificateVerifyError (``reason`` ``changed``) unless ``der``, the
        certificate ``server`` presented, is the pinned one; servers without a pin
        were verified by their context already."""
        pin = self._pins.get(_key(server))
        if pin is None:
            return
        presented = sha256_fingerprint(der) if der else "(no certificate)"
        if presented == pin:
            return
        where = self._known_file or KNOWN_SERVERS_FILE
        raise CertificateVerifyError(
            f"WARNING: THE CERTIFICATE OF {server} HAS CHANGED since you trusted it. "
            "Someone may be intercepting this connection, or the server's administrator "
            f"replaced the certificate. Pinned SHA-256: {pin}; presented: {presented}. "
            "Nothing was sent to the server. Only if its administrator confirms the new "
            f"fingerprint, delete the line for {_key(server)} from {where} and connect again",
            reason="changed",
        )


def fetch_certificate(server: ServerAddress, context: ssl.SSLContext, *, timeout: float) -> bytes:
    """The DER certificate ``server`` presents, fetched over a connection closed at once.

    With a context that does not verify (:func:`securechat.tls.pinning_context`)
    the certificate is only shown to the user, never trusted by this call; with
    one that verifies, a certificate that does not verify raises. Raises
    ConnectionLost if the server cannot be reached, TLSError if the handshake fails.
    """
    try:
        raw = socket.create_connection((server.host, server.port), timeout=timeout)
    except OSError as exc:
        raise ConnectionLost(f"{server}: {exc.strerror or exc}") from exc
    try:
        with context.wrap_socket(raw, server_hostname=server.host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise describe_tls_error(exc, host=server.host) from exc
    finally:
        raw.close()
    if not der:
        raise TLSError(f"{server} presented no certificate")
    return der


def verify_before_login(
    servers: Sequence[ServerAddress], trust: ServerTrust, *, timeout: float
) -> None:
    """Complete a TLS handshake with the first of ``servers`` that answers, verify its
    certificate as the login will (CA, name, pin), and close: so a certificate that
    does not verify is reported before the user types a password.

    Raises TLSError (CertificateVerifyError for the certificate); servers that cannot
    be reached are left for the login to report.
    """
    for server in servers:
        try:
            der = fetch_certificate(server, trust.context_for(server), timeout=timeout)
        except ConnectionLost:
            continue
        trust.check_peer(server, der)
        return


def pin_on_first_use(
    servers: Sequence[ServerAddress],
    known: KnownServers,
    context: ssl.SSLContext,
    *,
    confirm: Callable[[ServerAddress, bytes], bool],
    timeout: float,
) -> list[str]:
    """Fetch and, if ``confirm(server, der)`` agrees, pin the certificate of each of
    ``servers`` without a pin. Returns one line for each server that could not be
    fetched or was declined (the caller says why it cannot connect to those)."""
    skipped = []
    for server in servers:
        if known.pin(server) is not None:
            continue
        try:
            der = fetch_certificate(server, context, timeout=timeout)
        except (ConnectionLost, TLSError) as exc:
            skipped.append(f"{server}: {exc}")
            continue
        if confirm(server, der):
            known.add(server, sha256_fingerprint(der))
        else:
            skipped.append(f"{server}: not trusted")
    return skipped
