"""One connection attempt of the client: TCP, TLS, and what its failures mean.

:func:`dial` opens the TCP connection and wraps it for TLS (the handshake then
runs on the attempt's own I/O loop thread, the only thread that touches the
socket). :class:`Attempt` is the channel handler of one attempt and remembers
how far it got; callbacks from an attempt the client has moved on from are
ignored by the client. :func:`login_failure` explains a connection that closed
before the login completed, and :func:`reconnect_with_backoff` is the policy
for coming back after a drop: which failures to retry, and how long to wait.
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

__all__ = [
    "MAX_BACKOFF",
    "RETRYABLE",
    "Attempt",
    "AttemptOwner",
    "GiveUp",
    "dial",
    "login_failure",
    "reconnect_with_backoff",
]

MAX_BACKOFF = 30.0
"""Longest wait between reconnection attempts, in seconds."""

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

    def __init__(self, owner: AttemptOwner, *, replay: bool) -> None:
        self.owner = owner
        self.replay = replay
        self.loop = IOLoop("client-io")
        self.channel: Channel | None = None
        self.ready = False
        """Logged in: the server takes requests on this connection."""
        self.live = False
        """Ready, rejoined, and everything queued meanwhile sent: requests go straight out."""
        self.login_rid: int | None = None
        self.features: frozenset[str] = frozenset()
        """The features the server's ``hello`` announced."""
        self.closed = False
        self.failure: SecureChatError | None = None
        self.bye_reason: str | None = None
        self.bye_code: str | None = None
        """The ``code`` of the server's ``bye``, if it gave one (``session_closed``)."""
        self.greeted = False

    def on_open(self, channel: Channel) -> None:
        """The TLS handshake completed."""
        self.owner._on_open(self, channel)

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """A frame arrived."""
        self.owner._on_frame(self, frame)

    def on_close(self, channel: Channel, reason: str) -> None:
        """The connection ended."""
        self.owner._on_close(self, channel, reason)


def dial(host: str, port: int, context: ssl.SSLContext, *, timeout: float) -> ssl.SSLSocket:
    """A non-blocking TLS socket to ``host:port``, handshake not yet done.

    ConnectionLost if the server cannot be reached, a TLSError if TLS cannot start.
    """
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ConnectionLost(
            f"cannot connect to {host}:{port}: {exc.strerror or exc}; "
            "is the server running, and are --host and --port right?"
        ) from exc
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        return context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise describe_tls_error(exc, host=host) from exc


def login_failure(attempt: Attempt, channel: Channel, reason: str, host: str) -> SecureChatError:
    """Why a connection that closed before its login completed failed."""
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
    return ConnectionLost(f"connection closed during login: {reason}")


class GiveUp(SecureChatError):
    """Reconnecting cannot succeed: the login was refused for good, or the
    server's certificate no longer verifies. The message says why."""


def reconnect_with_backoff(
    connect: Callable[[], Attempt],
    *,
    reason: str,
    first_delay: float,
    stop: threading.Event,
    announce: Callable[[float, str], None],
) -> Attempt | None:
    """Call ``connect`` until it succeeds; the attempt, or None once ``stop`` is set.

    Before each try ``announce(delay, reason)`` says how long we wait and why the
    last try failed. The delay doubles from ``first_delay`` up to MAX_BACKOFF,
    with ±20 % jitter so that clients dropped together do not return together.
    Raises GiveUp when retrying cannot help.
    """
    delay = first_delay
    while not stop.is_set():
        wait = delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
        announce(wait, reason)
        if stop.wait(wait):
            return None
        try:
            return connect()
        except CertificateVerifyError as exc:
            raise GiveUp(str(exc)) from exc
        except ChatError as exc:
            if exc.code not in RETRYABLE:
                raise GiveUp(exc.text) from exc
            reason = exc.text
        except (ConnectionLost, TLSError) as exc:
            reason = str(exc)
        delay = min(delay * 2, MAX_BACKOFF)
    return None
