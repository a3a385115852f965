"""The client core: a connection to one of the servers, its state, and events for a front end.

Front ends (line mode, the full-screen UI) see :class:`Event` objects shaped
like the ``--json`` contract in docs/client.md, and call :meth:`ChatClient.request`
to act. They know nothing of TLS or frames.

:class:`ChatClient` is what front ends use: the state they show and the
requests they make. How it connects, logs in, reconnects without gaps and turns
frames into events is :class:`~securechat.client.lifecycle.ConnectionLifecycle`,
its base (lifecycle.py, where the threading model is described).

Where the parts live
--------------------
This class ties together: ``lifecycle.py`` (the connection's life, its
callbacks and events), ``servers.py`` (the addresses to try, in order),
``connection.py`` (one attempt: TCP, TLS, why it failed; the reconnect policy),
``requests.py`` and ``sending.py`` (what is in flight and what waits),
``resync.py`` (what was shown, for the gap fill), ``state.py`` and
``inbound.py`` (rooms and name; frames to events), ``reads.py`` (read markers),
``export.py``, ``transfers.py`` and ``worker.py``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ..errors import ChatError, ConnectionLost, SecureChatError
from .connection import MAX_BACKOFF, connect_in_turn
from .events import Event
from .export import export_messages
from .lifecycle import CONNECT_TIMEOUT, ConnectionLifecycle

__all__ = ["MAX_BACKOFF", "ChatClient", "Event"]

_FEATURE_OF = {
    "sessions": "sessions",
    "session_close": "sessions",
    "unread": "read",
    "read": "read",
    **dict.fromkeys(("password", "account_delete"), "accounts"),
    **dict.fromkeys(
        ("kick", "ban", "unban", "bans", "mute", "room_mode", "room_invite", "stats"),
        "moderation",
    ),
}
"""Requests only a server announcing that feature knows (an older one closes the
connection on an unknown frame type)."""


class ChatClient(ConnectionLifecycle):
    """A logged-in connection to one of ``servers`` that comes back by itself when dropped.

    ``connect()`` blocks until the client is logged in and in its first room,
    or raises: CertificateVerifyError or TLSError for TLS failures, ChatError
    when the server refuses the login, ConnectionLost when no server can be
    reached. ``reconnect_delay`` is the first wait before reconnecting to a
    server already tried (it doubles up to :data:`MAX_BACKOFF`).

    ``register``: the login may create the account (with ``invite``, a code for a
    server that registers by invitation); otherwise an unknown name is refused
    with ``no_such_account``. Reconnections log in the same way (an existing
    account just logs in, whatever ``register`` says).
    """

    # -- state for front ends ----------------------------------------------------------

    @property
    def user(self) -> str:
        """Our name, as the server spells it once logged in."""
        return self._state.user

    @property
    def rooms(self) -> list[str]:
        """The rooms we are in, in the order joined."""
        return self._state.rooms

    @property
    def current_room(self) -> str | None:
        """Where plain lines go; None when in no room."""
        return self._state.current_room

    @property
    def connected(self) -> bool:
        """True while logged in on a live connection."""
        with self._lock:
            return self._attempt is not None and self._attempt.ready and not self._attempt.closed

    @property
    def waiting(self) -> int:
        """Requests kept until the client is connected again."""
        return self._requests.waiting

    @property
    def closed(self) -> bool:
        """True once the client has stopped for good (quit, refused, or given up)."""
        with self._lock:
            return self._finished

    # -- actions -------------------------------------------------------------------------

    def connect(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect, verify the server, log in and wait for the first room."""
        try:
            attempt = connect_in_turn(
                partial(self._connect_once, replay=True, timeout=timeout), self._servers
            )
        except SecureChatError:
            self._finish()
            raise
        self._go_live(attempt)

    def request(
        self, type_: str, fields: dict[str, Any] | None = None, *, quiet: bool = False
    ) -> int:
        """Send a request frame; returns its request id (``rid``).

        While the client is reconnecting the request is kept and sent, in order,
        once it is logged in and back in its rooms. Raises ConnectionLost once
        the client has stopped for good, and ChatError ``queue_full`` when too
        many requests are waiting already.

        ``quiet``: the front end asks for itself (a /who refreshing a member
        list), not for the user: its ``users`` or ``rooms`` answer carries
        ``quiet: true``, and a refusal or its loss in a dropped connection is not
        shown.
        """
        feature = _FEATURE_OF.get(type_)
        if feature is not None and feature not in self._server_features:
            raise ChatError(
                "unsupported",
                f"this server does not support {type_!r} (it does not announce the "
                f"{feature!r} feature); nothing was sent",
            )
        return self._requests.submit(type_, fields or {}, quiet=quiet)

    def mark_shown(self, shown: Event) -> None:
        """A front end showed ``shown``: a message marks its conversation read up to
        it, for the account's other sessions (at most once a second)."""
        if "read" in self._server_features:
            self._reads.shown_event(shown, me=self.user)

    def mark_read(self, *, room: str | None = None, user: str | None = None, mid: int) -> None:
        """The user has seen ``room`` (or the conversation with ``user``) up to message
        ``mid``: tell the server (at most once a second per conversation)."""
        if "read" in self._server_features:
            self._reads.shown(room=room, user=user, mid=mid)

    def wait_for_reply(self, rid: int, timeout: float = 30.0) -> bool:
        """Wait until the server answered ``rid`` (sent or still waiting to be sent);
        False on timeout or disconnect."""
        return self._requests.wait_for_reply(rid, timeout)

    def wait_for_replies(self, timeout: float = 30.0) -> bool:
        """Wait until every request made so far is sent and answered; False once
        ``timeout`` seconds pass without a request sent or answered, or when the
        client stops."""
        return self._requests.wait_for_replies(timeout)

    def quit(self, reason: str = "", timeout: float = 5.0) -> None:
        """Say goodbye, wait (briefly) for the server to close, and stop for good."""
        self._stop.set()
        try:
            self._send("quit", {"reason": reason} if reason else {})
        except ConnectionLost:
            pass
        else:
            with self._lock:
                self._lock.wait_for(lambda: self._attempt is None or self._attempt.closed, timeout)
        self._finish()

    def close(self) -> None:
        """Drop the connection at once and stop for good."""
        self._stop.set()
        self._finish()

    def send_file(self, to: str, path: Path) -> None:
        """Offer the file at ``path`` to user ``to`` (hashing it first)."""
        self._transfers.offer(to, path, self._send)

    def accept_file(self, tid: int) -> None:
        """Accept offer ``tid``, resuming from any partial download of the same file."""
        self._transfers.accept(tid, self._send)

    def reject_file(self, tid: int) -> None:
        """Decline offer ``tid``."""
        self.request("file_reject", {"id": self._transfers.forget_offer(tid)})

    def cancel_file(self, tid: int) -> None:
        """Stop transfer ``tid``; nothing partial is kept."""
        self.request("file_cancel", {"id": self._transfers.cancel(tid)})

    def transfers(self) -> list[dict[str, Any]]:
        """Pending and active file transfers."""
        return self._transfers.listing()

    def wait_for_transfers(self) -> bool:
        """Wait while files are moving; False if one stalls."""
        return self._transfers.wait_idle()

    def show(self, event: Event) -> None:
        """Pass a locally made event (help text, usage errors) to the front end, in
        order with the server's."""
        self._deliver(event)

    def export(self, path: Path, *, timeout: float = 60.0) -> int:
        """Write every stored message we sent or received to ``path`` as JSON Lines
        (see :mod:`securechat.client.export`); returns the count."""
        return export_messages(lambda type_, fields: self._fetch(type_, fields, timeout), path)
