"""Sessions: one connected client each, and the account they are logged in as.

A :class:`Peer` is what the chat logic sees of a connection: somewhere to
queue bytes (and streams), and a way to hang up. It is the only view of a
connection that the hub, the history streamer and the file relay have; the
channel (see :mod:`securechat.channel`) implements it.

An account may have several sessions at once (laptop and desktop, a person
and a script): :class:`SessionTable` keeps them by account. All of it is
guarded by the hub's lock.
"""

from __future__ import annotations

import itertools
import time
from enum import Enum
from typing import Protocol

from ..outbox import Stream
from .accounts import Identity

__all__ = ["MAX_HELD_BYTES", "Peer", "Session", "SessionTable", "State"]

MAX_HELD_BYTES = 4 * 1024 * 1024
"""Live messages held back for a session while a replay streams ahead of them
(the outbox limit): a session whose reader cannot take its replay plus that
much is too slow, and is dropped like any other stuck reader."""


class Peer(Protocol):
    """A connection as the chat logic sees it: queue bytes, hang up."""

    @property
    def peer(self) -> str:
        """The peer's address (``ip:port``), for logs and ``/sessions``."""

    def send(self, data: bytes, *, bulk: bool = False) -> bool:
        """Queue encoded frames (``bulk`` for file chunks); False if closing or overflowed."""

    def send_stream(self, stream: Stream) -> bool:
        """Queue a long answer produced as the peer reads; False if closing."""

    def close(self, reason: str) -> None:
        """Deliver what is queued, then hang up."""

    def cancel_deadline(self) -> None:
        """The peer has logged in: stop the login timer."""


class State(Enum):
    """Where a session is in its life."""

    NEW = "new"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    GONE = "gone"


class Session:
    """One connected client as the chat logic sees it."""

    __slots__ = (
        "cert_fingerprint",
        "cert_user",
        "held",
        "held_bytes",
        "identity",
        "link",
        "number",
        "shown_seq",
        "since",
        "source",
        "state",
        "streams",
        "tls_version",
        "web",
    )

    def __init__(self, link: Peer, *, cert_user: str | None, tls_version: str, source: str) -> None:
        self.link = link
        self.source = source
        """The peer's address as budgets count it (IPv6 by its /64)."""
        self.cert_user = cert_user
        self.cert_fingerprint: str | None = None
        """The SHA-256 of the client certificate (hex), in mutual-TLS mode."""
        self.tls_version = tls_version
        self.web = False
        """True for a browser, connected through the web port's WebSocket."""
        self.state = State.NEW
        self.identity: Identity | None = None
        self.number = 0
        self.since = time.time()
        """When it connected (seconds since the epoch; formatted only when asked)."""
        self.streams = 0
        """Streaming answers (history, search, export) queued and not yet complete."""
        self.held: dict[str, list[tuple[int, bytes]]] | None = None
        """Per conversation (room fold, or ``""`` for private messages): live messages
        waiting behind its replay. None when nothing waits, as almost always."""
        self.held_bytes = 0
        self.shown_seq: dict[str, int] | None = None
        """Per room: the highest sequence number a replay showed this session. In cluster
        mode a message may be released here after a replay read it from the store."""

    @property
    def name(self) -> str:
        """The logged-in user's current name (empty before login)."""
        return self.identity.name if self.identity else ""

    @property
    def account_id(self) -> int:
        """The logged-in account's id (login first)."""
        assert self.identity is not None
        return self.identity.id

    def send(self, data: bytes, *, bulk: bool = False) -> bool:
        """Queue encoded frames for this client."""
        return self.link.send(data, bulk=bulk)

    def deliver(self, room: str | None, message_id: int, data: bytes) -> None:
        """Queue a live message, unless a replay of ``room`` is still ahead of it."""
        held = self.held.get(room) if room is not None and self.held is not None else None
        if held is None:
            self.link.send(data)
            return
        held.append((message_id, data))
        self.held_bytes += len(data)
        if self.held_bytes > MAX_HELD_BYTES:
            self.link.close("too slow: the history being replayed was not read in time")


class SessionTable:
    """Every logged-in session, by account."""

    def __init__(self) -> None:
        self._by_account: dict[int, list[Session]] = {}
        self._numbers = itertools.count(1)

    def of(self, account_id: int) -> list[Session]:
        """The account's sessions, oldest first (a copy)."""
        return list(self._by_account.get(account_id, ()))

    def all(self) -> list[Session]:
        """Every logged-in session."""
        return [session for sessions in self._by_account.values() for session in sessions]

    def count(self, account_id: int) -> int:
        """How many sessions the account has."""
        return len(self._by_account.get(account_id, ()))

    def add(self, session: Session, number: int | None = None) -> None:
        """A session logged in; it gets ``number`` (in cluster mode, one unique in the
        cluster) or a number unique on this server."""
        session.number = number if number is not None else next(self._numbers)
        self._by_account.setdefault(session.account_id, []).append(session)

    def remove(self, session: Session) -> bool:
        """A session ended; True if it was the account's last."""
        sessions = self._by_account.get(session.account_id)
        if not sessions or session not in sessions:
            return False
        sessions.remove(session)
        if sessions:
            return False
        del self._by_account[session.account_id]
        return True
