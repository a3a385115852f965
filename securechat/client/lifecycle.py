"""The client core's connection life cycle: connect, log in, reconnect, fill the gap.

:class:`ConnectionLifecycle` is the base of :class:`~securechat.client.core.ChatClient`:
it owns the connection attempts and their callbacks, turns frames into events
for the front end, and sends on the logged-in connection.

Each connection attempt is a :class:`~securechat.channel.Channel` owned by a
private :class:`~securechat.ioloop.IOLoop` thread, the only thread that
touches its socket; ``request`` queues frames into the channel's outbox.
That thread never waits for the front end or the disk: events go to the front
end from a :class:`~securechat.client.worker.SerialWorker` thread of their own,
in the order the server sent them, and file frames (download writes and
fsyncs) are handled on another, so a consumer that stops reading our output
cannot stop us answering the server's pings.

Reconnecting without gaps
-------------------------
The client remembers the newest message id it has shown for every room and
private conversation. When an established connection drops (anything but
``/quit``), it reconnects (to the other servers of a cluster at once, then to
all of them with exponential backoff), logs in without the automatic replay,
rejoins its rooms asking for everything ``since`` those ids, and fetches each
private conversation ``after`` its id. Replayed messages it has already shown
are dropped, so each message is shown once. Requests made while
it is reconnecting wait in a :class:`~securechat.client.sending.SendQueue` and
go out, in order, after that rejoin; unacknowledged messages go again with
their idempotency keys (to servers that remember keys).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ..channel import Channel
from ..errors import ChatError, ConnectionLost
from ..tls import certificate_summary
from ..wire.protocol import Frame, encode
from .connection import (
    Attempt,
    GiveUp,
    dial,
    login_failure,
    reconnect_with_backoff,
)
from .events import Event, event, throttled_event
from .export import Collector
from .inbound import Inbound
from .reads import ReadMarkers
from .requests import Requests
from .resync import Resync
from .servers import Endpoint, ServerAddress, ServerList
from .state import ChatState
from .transfers import Transfers
from .trust import ServerTrust
from .worker import SerialWorker

__all__ = ["CONNECT_TIMEOUT", "ConnectionLifecycle"]

CONNECT_TIMEOUT = 10.0
"""Seconds for reaching a server and the TLS handshake; the login may take 5 more."""
_THROTTLE_NOTICE_EVERY = 10.0
"""Seconds between two "sending faster than the server allows" notices."""
_FINAL_BYES = frozenset({"session_closed", "kicked", "banned", "account_deleted"})
"""``bye`` codes after which coming back would undo what someone meant: a session
logged out by /sessions close, a kick, a ban, a deleted account."""
_EVENT_BACKLOG = 50_000
"""Events waiting for the front end before the I/O thread waits too (see worker.py)."""
_DISK_BACKLOG = 1024
"""File frames waiting for the disk: far more than the transfer windows let arrive."""
_FLUSH_TIMEOUT = 5.0
"""How long stopping waits for the last events to reach the front end."""


class ConnectionLifecycle:
    """The connection behind :class:`~securechat.client.core.ChatClient`: attempts, login,
    reconnection with gap fill, and the frames of the live connection turned into events.

    Its constructor's arguments are :class:`~securechat.client.core.ChatClient`'s.
    """

    def __init__(
        self,
        *,
        servers: Sequence[ServerAddress],
        context: ssl.SSLContext | ServerTrust,
        user: str,
        password: str | None,
        on_event: Callable[[Event], None],
        ping_interval: float = 30.0,
        reconnect: bool = True,
        reconnect_delay: float = 1.0,
        download_dir: Path = Path("downloads"),
        register: bool = False,
        invite: str | None = None,
    ) -> None:
        self._servers = ServerList(servers)
        self._register = register
        self._invite = invite
        self.registration: str | None = None
        """The registration policy the server's ``hello`` announced (``open``,
        ``invite``, ``closed``), None before it or from a server that says none."""
        self._endpoint: Endpoint | None = None
        """Where the newest attempt connected (for its ``connected`` event)."""
        # One context for every server, or the choice per server (pins: trust.py).
        self._trust = context if isinstance(context, ServerTrust) else ServerTrust(context)
        self._password = password
        self._on_event = on_event
        self._events = SerialWorker("client-events", limit=_EVENT_BACKLOG)
        # Downloads write and fsync: on a thread of their own, in frame order.
        self._disk = SerialWorker("client-disk", limit=_DISK_BACKLOG)
        self._ping_interval = ping_interval
        self._reconnect_enabled = reconnect
        self._first_delay = reconnect_delay
        self._lock = threading.Condition()
        self._requests = Requests(
            self._lock, live_channel=self._live_channel, stopped=lambda: self._finished
        )
        self._attempt: Attempt | None = None
        self._finished = False
        self._stop = threading.Event()
        self._collector = Collector(self._lock, stopped=lambda: self._finished)
        self._resync = Resync()
        self._state = ChatState(user)
        self._server_features: frozenset[str] = frozenset()
        """The features the server last connected to announced in ``hello``."""
        self._reads = ReadMarkers(self._send_read)
        self._throttle_noticed = -_THROTTLE_NOTICE_EVERY  # monotonic time of the last notice
        self.tls_version = ""
        self._certificate: dict[str, str] = {}
        self.unconfirmed = 0
        """Requests the server never answered because the connection dropped."""
        self._inbound = Inbound(
            state=self._state,
            resync=self._resync,
            quiet=self._requests.is_quiet,
            deliver=self._deliver,
            connection=lambda: {
                "server": str(self._endpoint.server) if self._endpoint else None,
                "address": self._endpoint.address if self._endpoint else None,
                "tls_version": self.tls_version,
                **self._certificate,
            },
        )
        self._transfers = Transfers(download_dir=download_dir, send=self._send_raw, emit=self._emit)

    # -- sending on the connection ------------------------------------------------------

    def _send_read(self, fields: dict[str, Any]) -> None:
        if "read" in self._server_features:  # an older server drops us for an unknown frame
            self._send("read", fields)

    def _send_raw(self, data: bytes, bulk: bool) -> None:
        with self._lock:
            attempt = self._attempt
        if attempt is None or attempt.channel is None or attempt.closed:
            raise ConnectionLost("not connected to the server")
        attempt.channel.send(data, bulk=bulk)

    def _send(self, type_: str, fields: dict[str, Any], *, resync: bool = False) -> int:
        """Send now, on a logged-in connection, or raise ConnectionLost: never kept."""
        with self._lock:
            attempt = self._attempt
            if (
                self._finished
                or attempt is None
                or attempt.closed
                or attempt.channel is None
                or not attempt.ready
            ):
                raise ConnectionLost("not connected to the server (reconnecting); nothing sent")
            rid = self._requests.new_rid()
            self._requests.sent(rid)
            if resync:
                # Marked before sending: the answer may arrive before send() returns.
                self._resync.mark(rid, fields.get("user"))
        attempt.channel.send(encode(type_, rid=rid, **fields))
        return rid

    # -- connecting ------------------------------------------------------------------------

    def _connect_once(self, endpoint: Endpoint, *, replay: bool, timeout: float) -> Attempt:
        """One attempt to connect to ``endpoint`` and log in; the attempt once it is ready."""
        tls = dial(endpoint, self._trust.context_for(endpoint.server), timeout=timeout)
        attempt = Attempt(
            self,
            endpoint,
            replay=replay,
            check_peer=partial(self._trust.check_peer, endpoint.server),
        )
        attempt.channel = Channel(
            tls,
            attempt,
            peer=endpoint.label,
            handshake_timeout=timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_interval,
        )
        attempt.channel.deadline_reason = "the server did not complete the TLS handshake in time"
        with self._lock:
            self._attempt = attempt
        attempt.loop.start()
        attempt.loop.add(attempt.channel)
        with self._lock:
            self._lock.wait_for(lambda: attempt.ready or attempt.closed, timeout + 5.0)
            # A login that succeeded counts even if the connection dropped right
            # after: from then on reconnecting is on_close's business.
            failure, ready = attempt.failure, attempt.ready
        if failure is not None or not ready:
            attempt.loop.stop()
            raise failure or ConnectionLost(f"no login within {timeout + 5.0:.0f} s")
        return attempt

    def _go_live(self, attempt: Attempt) -> None:
        """Send what was kept while reconnecting, oldest first, then send directly."""
        with self._lock:
            if attempt is not self._attempt or attempt.closed or attempt.channel is None:
                return  # dropped again: the next connection sends it
            attempt.live = True
            self._requests.send_due()
            self._lock.notify_all()

    def _live_channel(self) -> Channel | None:
        attempt = self._attempt
        if attempt is None or attempt.channel is None or attempt.closed or not attempt.live:
            return None
        return attempt.channel

    def _finish(self) -> None:
        with self._lock:
            self._finished = True
            attempt = self._attempt
            self._lock.notify_all()
        self._requests.stopped()
        if attempt is not None:
            attempt.loop.stop()
        # What the connection left to do reaches the front end before we stop.
        self._disk.wait_idle(_FLUSH_TIMEOUT)
        self._events.wait_idle(_FLUSH_TIMEOUT)
        self._disk.stop()
        self._events.stop()

    def _reconnect(self, reason: str) -> None:
        """Runs on its own thread after a drop: back off, reconnect, fill the gap."""

        def announce(wait: float, why: str) -> None:
            when = f"reconnecting in {wait:.0f} s" if wait else "trying the next server now"
            text = f"connection lost ({why}); {when}"
            self._emit("system", event="reconnecting", delay=round(wait, 1), text=text)

        try:
            attempt = reconnect_with_backoff(
                partial(self._connect_once, replay=False, timeout=CONNECT_TIMEOUT),
                self._servers,
                reason=reason,
                first_delay=self._first_delay,
                stop=self._stop,
                announce=announce,
            )
        except GiveUp as exc:
            self._give_up(str(exc))
            return
        if attempt is not None:
            # A resumed login is back in the rooms the server listed; the others it
            # forgot (a new database), and the user never left them.
            self._fill_gap(self._state.dropped_rooms if attempt.resumed else self._state.rooms)
            self._go_live(attempt)

    def _give_up(self, reason: str) -> None:
        self._emit("disconnected", reason=f"cannot reconnect: {reason}")
        self._finish()

    def _fill_gap(self, rejoin: list[str]) -> None:
        """Fetch what was missed, rejoining the rooms in ``rejoin`` (those whose resume
        points the login did not name), marking those answers as gap fill."""
        try:
            for type_, fields in self._resync.requests(rejoin):
                self._send(type_, fields, resync=True)
        except ConnectionLost:
            pass  # dropped again: the next reconnect fills the gap

    def _fetch(
        self, type_: str, fields: dict[str, Any], timeout: float
    ) -> tuple[list[Frame], Frame]:
        """Send a request and collect its rows instead of showing them."""
        rid = self._requests.new_rid()
        self._collector.start(rid)
        try:
            self._send_raw(encode(type_, rid=rid, **fields), False)
        except ConnectionLost:
            self._collector.cancel(rid)
            raise
        return self._collector.wait(rid, timeout)

    # -- channel callbacks (I/O thread of the attempt) --------------------------------------

    def _current(self, attempt: Attempt) -> bool:
        with self._lock:
            return attempt is self._attempt

    def _on_open(self, attempt: Attempt, channel: Channel) -> None:
        if not self._current(attempt):
            return
        self._endpoint = attempt.endpoint
        self.tls_version = channel.tls_version
        self._certificate = certificate_summary(channel.sock)
        fields: dict[str, Any] = {"user": self._state.user, "register": self._register}
        if self._password is not None:
            fields["password"] = self._password
        if self._register and self._invite:
            fields["invite"] = self._invite
        if not attempt.replay:
            fields["replay"] = False
            if "login_since" in self._server_features:  # the last server's: the same chat
                fields["since"] = self._resync.room_marks(self._state.rooms)
                attempt.resumed = True
        with self._lock:
            rid = self._requests.new_rid()
            self._requests.sent(rid)
            attempt.login_rid = rid
        channel.send(encode("login", rid=rid, **fields))

    def _on_frame(self, attempt: Attempt, frame: Frame) -> None:
        if not self._current(attempt):
            return
        rid = frame.int_field("rid", optional=True)
        if rid is not None and self._collector.offer(rid, frame):
            return
        if frame.type == "hello":
            attempt.greeted = True
            features = frame.get("features")
            if isinstance(features, list):
                attempt.features = frozenset(f for f in features if isinstance(f, str))
            self._server_features = attempt.features
            policy = frame.get("registration")
            self.registration = policy if isinstance(policy, str) else None
        elif frame.type == "bye":
            attempt.bye_reason = frame.str_field("reason", optional=True) or "server closed"
            attempt.bye_code = frame.str_field("code", optional=True) or None
            attempt.bye_until = frame.str_field("until", optional=True) or None
            if not attempt.ready and attempt.bye_code == "banned":
                # A banned address is refused instead of greeted: a refusal, not a TLS fault.
                with self._lock:
                    attempt.failure = ChatError("banned", attempt.bye_reason)
        elif frame.type == "error" and not attempt.ready and rid == attempt.login_rid:
            with self._lock:
                attempt.failure = ChatError(frame.str_field("code"), frame.str_field("text"))
        if frame.type.startswith("file_"):
            self._disk.submit(partial(self._transfers.handle, frame))
        if frame.type == "error":
            self._on_error(frame)
        elif self._inbound.handle(frame) and not attempt.ready:
            # Ready once we know our rooms, so the first typed line has a room to
            # go to: from the welcome (v2), or the server's join of #general (v1).
            self._logged_in(attempt)
        if rid is not None and frame.get("more") is not True:
            self._requests.answered(rid, frame.type)
            self._resync.answered(rid)

    def _logged_in(self, attempt: Attempt) -> None:
        endpoint = attempt.endpoint
        with self._lock:
            attempt.ready = True
            # Set before any close of this attempt can start a reconnect, which
            # begins with the endpoints after this one.
            previous, self._servers.current = self._servers.current, endpoint
            self._lock.notify_all()
        if previous is not None and previous != endpoint:
            self._emit(
                "system",
                event="server_changed",
                server=str(endpoint.server),
                address=endpoint.address,
                text=f"reconnected to {endpoint.label} instead of {previous.label}",
            )

    def _on_close(self, attempt: Attempt, channel: Channel, reason: str) -> None:
        with self._lock:
            if attempt is not self._attempt:
                return
            was_ready = attempt.ready
            attempt.closed = True
            if not was_ready and attempt.failure is None:
                attempt.failure = login_failure(attempt, channel, reason)
            # Messages go again with their keys, but only to a server that
            # remembers keys (feature "resume"): an older one would store them twice.
            lost = self._requests.connection_lost(resend="resume" in attempt.features)
            self.unconfirmed += lost
            self._lock.notify_all()
        self._state.connection_lost()
        if not was_ready:
            return
        # This connection is over: its loop thread, selector and wake-up pipe go
        # with it (stop() from the loop's own thread only asks it to end).
        attempt.loop.stop()
        self._disk.submit(self._transfers.connection_lost)
        why = attempt.bye_reason or reason
        self._emit("disconnected", reason=why, code=attempt.bye_code, until=attempt.bye_until)
        if lost and attempt.bye_reason != "you quit":
            self._emit(
                "error",
                code="unconfirmed",
                text=f"{lost} request(s) were not confirmed before the connection was lost; "
                "check /history before sending them again",
            )
        # Logged out on purpose (here, from another session with /sessions close, or
        # by a moderator): coming back would undo it.
        logged_out = attempt.bye_reason == "you quit" or attempt.bye_code in _FINAL_BYES
        if self._stop.is_set() or not self._reconnect_enabled or logged_out:
            self._finish()
            return
        threading.Thread(target=self._reconnect, args=(why,), name="reconnect", daemon=True).start()

    # -- frames to events --------------------------------------------------------------------

    def _emit(self, type_: str, **data: Any) -> None:
        self._deliver(event(type_, **data))

    def _deliver(self, item: Event) -> None:
        # Never on_event itself here: the front end may block (a full stdout pipe).
        self._events.submit(partial(self._on_event, item))

    def _on_error(self, frame: Frame) -> None:
        rid = frame.int_field("rid", optional=True)
        code = frame.str_field("code")
        if rid is not None:
            retry, paused = self._requests.refused(rid, code, frame.get("retry_after"))
            if retry is not None:
                # One notice while the pace holds, not one per refused line: a
                # script piping lines at full speed hits the budget on every one.
                now = time.monotonic()
                if not paused and now - self._throttle_noticed >= _THROTTLE_NOTICE_EVERY:
                    self._throttle_noticed = now
                    self._deliver(throttled_event(retry))
                return
            self._disk.submit(partial(self._transfers.refused, rid))
            if self._resync.fills_conversation(rid):
                return  # the partner renamed or left while we were away: nothing to fill
            if self._requests.is_quiet(rid):
                return  # the front end's own refresh: nothing the user asked for
        # A ban's refusal says why and until when (null: until lifted).
        extra = {k: frame.get(k) for k in ("reason", "until") if k in frame.fields}
        self._emit("error", code=code, text=frame.str_field("text"), **extra)
