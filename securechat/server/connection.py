"""One client connection: the glue between its channel and the hub.

A :class:`ClientConnection` is the handler of one client's
:class:`~securechat.channel.Channel`, made by the listener
(:mod:`securechat.server.listener`) for every accepted socket. It runs only in
that channel's I/O loop thread, the one owner of the socket: it reads what the
TLS handshake established (the certificate's user and fingerprint), hands each
decoded frame to the hub, and ends the session when the channel closes.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import sys
import time

from ..channel import PROTOCOL_ERROR, Channel
from ..tls import peer_common_name
from ..web.channel import WebChannel
from ..wire.protocol import Frame
from .hub import Hub
from .limits import ConnectionTicket, RateLimitedLog
from .sessions import Session

__all__ = ["ClientConnection"]

# The listener's logger, as before this glue had a module of its own: log
# filters and JSON logs (which name the logger) see the same lines.
log = logging.getLogger("securechat.server.listener")


def _peer_fingerprint(sock: ssl.SSLSocket) -> str | None:
    """The SHA-256 (hex) of the peer's certificate, what certificate bans match."""
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


class ClientConnection:
    """Glue between one channel and the hub (runs in the channel's loop thread)."""

    __slots__ = ("_hub", "_login_timeout", "_mutual_tls", "_problems", "_ticket", "session")

    def __init__(
        self,
        hub: Hub,
        ticket: ConnectionTicket,
        problems: RateLimitedLog,
        *,
        mutual_tls: bool,
        login_timeout: float,
    ) -> None:
        self._hub = hub
        self._ticket = ticket
        self._problems = problems
        self._mutual_tls = mutual_tls
        self._login_timeout = login_timeout
        self.session: Session | None = None

    def on_open(self, channel: Channel) -> None:
        """The handshake is done: start the login deadline and open a hub session."""
        self._ticket.handshake_done()
        channel.deadline = time.monotonic() + self._login_timeout
        channel.deadline_reason = "login timed out"
        # Under mutual TLS a certificate without a common name is an invalid name,
        # never a fall-back to password login.
        cert_user = (peer_common_name(channel.sock) or "") if self._mutual_tls else None
        fingerprint = _peer_fingerprint(channel.sock) if self._mutual_tls else None
        # Read here, on the socket's own thread: it is an SSL call.
        self.session = self._hub.open_session(
            channel,
            cert_user=cert_user,
            # Interned: thousands of sessions share a handful of these strings.
            tls_version=sys.intern(channel.tls_version),
            source=sys.intern(self._ticket.source),
            cert_fingerprint=fingerprint,
            web=isinstance(channel, WebChannel),
        )

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """Hand one decoded frame to the hub."""
        assert self.session is not None
        self._hub.handle(self.session, frame)

    def on_close(self, channel: Channel, reason: str) -> None:
        """The channel is closed: free its slot, log why, and end its session."""
        self._ticket.release()
        if channel.routine_close:
            log.debug("%s: closed: %s", channel.peer, reason)
        elif self.session is None or reason.startswith(PROTOCOL_ERROR):
            # Failed handshakes, plaintext and bad frames are what a flood is made of:
            # one line per second per kind of failure, with a count of the rest.
            kind = reason.partition(":")[0]
            self._problems.log(kind, logging.WARNING, "%s: closed: %s", channel.peer, reason)
        else:
            log.info("%s: closed: %s", channel.peer, reason)
        if self.session is not None:
            self._hub.close_session(self.session, reason)
