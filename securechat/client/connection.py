"""One connection attempt of the client: TCP, TLS, and what its failures mean.

:func:`dial` opens the TCP connection to one endpoint and wraps it for TLS (the
handshake then runs on the attempt's own I/O loop thread, the only thread that
touches the socket). :class:`Attempt` is the channel handler of one attempt and
remembers how far it got; callbacks from an attempt the client has moved on from
are ignored by the client. :func:`login_failure` explains a connection that
closed before the login completed.

Which endpoint to try, and when, is decided here too. :func:`connect_in_turn`
makes the first connection: the endpoints in order until one logs us in.
:func:`reconnect_with_backoff` comes back after a drop: every other endpoint
at once (the server that dropped us is probably dead: in a cluster the client
is back as soon as another one logs it in), then rounds of all of them with a
growing wait between rounds. Only a server that cannot be reached, or
goes away during the login, is a reason to try the next one (and, when
reconnecting, another TLS failure, as those were always retried): a refused
login or a certificate that does not verify would be the same on every server.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Protocol

from ..channel import Channel
from ..errors import CertificateVerifyError, ChatError, ConnectionLost, SecureChatError, TLSError
from ..ioloop import IOLoop
from ..tls import describe_tls_error
from ..wire.protocol import Frame
from .servers import Endpoint, ServerList

__all__ = [
    "MAX_BACKOFF",
    "RETRYABLE",
    "Attempt",
    "AttemptOwner",
    "GiveUp",
    "connect_in_turn",
    "dial",
    "login_failure",
    "reconnect_with_backoff",
]

MAX_BACKOFF = 30.0
"""Longest wait between reconnection attempts, in seconds."""

_UNREACHABLE_HINT = "is the server running, and are --host and --port right?"

RETRYABLE = frozenset(
    # login_throttled: someone else's guesses at this name can throttle it for a while;
    # a reconnecting client with the right password waits it out.
    {"name_in_use", "unavailable", "busy", "not_logged_in", "login_throttled"}
)
"""Login refusals that go away by themselves: the server still holds our old
session until its keepalive notices, or it is briefly overloaded.
``not_logged_in`` answers a frame that reached the server before our login did:
it says nothing about the login itself."""


class AttemptOwner(Protocol):
    """What an attempt reports to: the client core."""

    def _on_open(self, attempt: Attempt, channel: Channel) -> None: ...
    def _on_frame(self, attempt: Attempt, frame: Frame) -> None: ...
    def _on_close(self, attempt: Attempt, channel: Channel, reason: str) -> None: ...


class Attempt:
    """One connection: its I/O loop, channel and login progress."""

    def __init__(
        self,
        owner: AttemptOwner,
        endpoint: Endpoint,
        *,
        replay: bool,
        check_peer: Callable[[bytes | None], None] | None = None,
    ) -> None:
        self.owner = owner
        self.check_peer = check_peer
        """Raises CertificateVerifyError for a certificate (DER) the handshake's own
        checks cannot refuse: one that is not the pinned one (trust.py)."""
        self.endpoint = endpoint
        self.replay = replay
        self.loop = IOLoop("client-io")
        self.channel: Channel | None = None
        self.ready = False
        """Logged in: the server takes requests on this connection."""
        self.live = False
        """Ready, rejoined, and everything queued meanwhile sent: requests go straight out."""
        self.login_rid: int | None = None
        self.resumed = False
        """The login named the rooms' resume points (``since``): the server replays the
        gaps itself, so the gap fill does not rejoin them."""
        self.features: frozenset[str] = frozenset()
        """The features the server's ``hello`` announced."""
        self.closed = False
        self.failure: SecureChatError | None = None
        self.bye_reason: str | None = None
        self.bye_code: str | None = None
        """The ``code`` of the server's ``bye``, if it gave one (``session_closed``)."""
        self.bye_until: str | None = None
        """When the ban a ``bye`` announces ends (ISO UTC), if it does."""
        self.greeted = False

    def on_open(self, channel: Channel) -> None:
        """The TLS handshake completed: check the certificate against its pin, if any,
        before the owner sends anything (the login carries the password)."""
        if self.check_peer is not None:
            try:
                self.check_peer(channel.sock.getpeercert(binary_form=True))
            except CertificateVerifyError as exc:
                # Read by the owner once on_close has run, under its lock.
                self.failure = exc
                channel.close("certificate is not the pinned one")
                return
        self.owner._on_open(self, channel)

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """A frame arrived."""
        self.owner._on_frame(self, frame)

    def on_close(self, channel: Channel, reason: str) -> None:
        """The connection ended."""
        self.owner._on_close(self, channel, reason)


def dial(endpoint: Endpoint, context: ssl.SSLContext, *, timeout: float) -> ssl.SSLSocket:
    """A non-blocking TLS socket to ``endpoint``, handshake not yet done.

    The TLS server name is the entry's name, whichever of its addresses this is.
    ConnectionLost if the server cannot be reached, a TLSError if TLS cannot start.
    """
    raw = socket.socket(endpoint.family, socket.SOCK_STREAM)
    try:
        raw.settimeout(timeout)
        raw.connect(endpoint.sockaddr)
    except OSError as exc:
        raw.close()
        raise ConnectionLost(exc.strerror or str(exc)) from exc
    host = endpoint.server.host
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        return context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise describe_tls_error(exc, host=host) from exc


def login_failure(attempt: Attempt, channel: Channel, reason: str) -> SecureChatError:
    """Why a connection that closed before its login completed failed."""
    host = attempt.endpoint.server.host
    if isinstance(channel.error, ssl.SSLError) and not isinstance(channel.error, ssl.SSLEOFError):
        # Under TLS 1.3 a refused client certificate arrives after the
        # handshake, as an alert on the first read: still a TLS failure.
        return describe_tls_error(channel.error, host=host)
    if channel.is_handshaken and not attempt.greeted:
        # The server greets every connection it accepts; closing on us
        # before that means it refused our TLS session.
        return TLSError(
            f"the server closed the connection right after the TLS handshake "
            f"({reason}); if it requires client certificates, pass --cert and "
            "--key (securechat-certs --client NAME makes them)"
        )
    return ConnectionLost(f"connection closed during login: {attempt.bye_reason or reason}")


def _unreachable(failures: list[str]) -> str:
    """One line naming every endpoint tried (``"LABEL: why"`` each) and a hint."""
    return f"cannot connect to {'; '.join(failures)}; {_UNREACHABLE_HINT}"


def connect_in_turn(connect: Callable[[Endpoint], Attempt], servers: ServerList) -> Attempt:
    """The first connection: ``connect`` each endpoint in order until one logs us in.

    Raises ConnectionLost naming every endpoint and why it failed when none can
    be reached; a TLSError or a refused login (ChatError) at once, as it is.
    """
    endpoints, unresolved = servers.round()
    failures = []
    for endpoint in endpoints:
        try:
            return connect(endpoint)
        except ConnectionLost as exc:
            failures.append(f"{endpoint.label}: {exc}")
    raise ConnectionLost(_unreachable(failures + unresolved))


class GiveUp(SecureChatError):
    """Reconnecting cannot succeed: the login was refused for good, or the
    server's certificate no longer verifies. The message says why."""


def reconnect_with_backoff(
    connect: Callable[[Endpoint], Attempt],
    servers: ServerList,
    *,
    reason: str,
    first_delay: float,
    stop: threading.Event,
    announce: Callable[[float, str], None],
) -> Attempt | None:
    """``connect`` to the endpoints in turn until one logs us in; the attempt, or
    None once ``stop`` is set.

    The endpoints other than ``servers.current`` (the one that dropped us) are
    tried at once, after ``announce(0.0, reason)``. Then, in rounds of every
    endpoint starting after that one, each round after ``announce(delay, why)``
    and a wait of ``delay``: it doubles from ``first_delay`` up to MAX_BACKOFF,
    with ±20 % jitter so that clients dropped together do not return together.
    A login refused for a while (RETRYABLE) ends a round: another server would
    refuse it too. Raises GiveUp when retrying cannot help.
    """
    endpoints, unresolved = servers.round()
    others = [endpoint for endpoint in endpoints if endpoint != servers.current]
    if others:
        announce(0.0, reason)
    attempt, reason = _connect_round(connect, others, unresolved, stop, reason)
    delay = first_delay
    while attempt is None and not stop.is_set():
        wait = delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
        announce(wait, reason)
        if stop.wait(wait):
            return None
        endpoints, unresolved = servers.round()
        attempt, reason = _connect_round(connect, endpoints, unresolved, stop, reason)
        delay = min(delay * 2, MAX_BACKOFF)
    return attempt


def _connect_round(
    connect: Callable[[Endpoint], Attempt],
    endpoints: list[Endpoint],
    unresolved: list[str],
    stop: threading.Event,
    reason: str,
) -> tuple[Attempt | None, str]:
    """One round of tries: the attempt that logged in, or None and why the round failed
    (``reason`` if it tried nothing and nothing failed to resolve)."""
    failures = []
    for endpoint in endpoints:
        if stop.is_set():
            break
        try:
            return connect(endpoint), reason
        except CertificateVerifyError as exc:
            raise GiveUp(str(exc)) from exc
        except ChatError as exc:
            if exc.code not in RETRYABLE:
                raise GiveUp(exc.text) from exc
            return None, exc.text
        except (ConnectionLost, TLSError) as exc:
            failures.append(f"{endpoint.label}: {exc}")
    failures += unresolved
    return None, _unreachable(failures) if failures else reason
