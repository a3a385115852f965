"""Chat logic: sessions, rooms and messages. Knows nothing of sockets.

The rule: the hub never waits
-----------------------------
Every request is handled under one lock (an RLock), taken by the I/O loop
that decoded the frame. Nothing done under that lock, and nothing done on an
I/O thread, may block: no database call, no disk I/O, no password hashing, no
sleeping. What the hub needs on every request lives in memory: accounts in an
:class:`~securechat.server.accounts.AccountDirectory`, rooms, topics and
memberships in a :class:`~securechat.server.rooms.RoomDirectory`, both loaded
from the store at start-up. Slow work is handed off, never waited for:

* messages go to the :class:`~securechat.server.writer.MessageWriter`, which
  numbers, stores and then calls back to fan them out (under this lock);
* every change to stored chat state (a new room, a membership, a topic, a read
  marker, a history setting) is queued to the same writer, so the store sees
  it in the same order as everyone else did;
* reads (history, search, export, unread counts) run on the reader pool and
  stream their answers (:mod:`securechat.server.streamer`);
* logins, registrations and renames run on the login pool
  (:mod:`securechat.server.login`), which takes this lock only to admit.

One lock gives every room a single order of events that all its members see
alike. Messages are encoded once per fan-out and the same bytes queued to
every recipient; the sender's copy carries its request id (``rid``) and is its
acknowledgement. The request handlers live in :mod:`securechat.server.chat`
and :mod:`securechat.server.history_requests`, fan-out and replays in
:mod:`securechat.server.delivery`, who is here (on any server) in
:mod:`securechat.server.presence`; this module holds the state and the session
life cycle.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from ..errors import ChatError, ProtocolError, StoreError
from ..store.base import Store, UnreadCount, utc_timestamp
from ..wire.names import DEFAULT_ROOM, fold
from ..wire.protocol import PROTOCOL_VERSION, Frame, encode
from .accounts import AccountDirectory, Identity
from .delivery import Delivery
from .limits import TokenBucket
from .metrics import count_refusal
from .moderation import Moderation, address_of, ban_text
from .presence import presence, present_count, present_names, publish_presence
from .relay import DEFAULT_MAX_FILE_SIZE, FileRelay
from .rooms import Room, RoomDirectory
from .sessions import Peer, Session, SessionTable, State
from .streamer import Streamer
from .writer import MessageWriter

if TYPE_CHECKING:
    from .cluster.node import Cluster
    from .cluster.remote_files import RemoteFiles
    from .metrics import ServerStats

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MESSAGE_BURST",
    "DEFAULT_MESSAGE_RATE",
    "FEATURES",
    "REGISTRATION_POLICIES",
    "SERVER_SOFTWARE",
    "Hub",
    "error_frame",
]

log = logging.getLogger(__name__)

SERVER_SOFTWARE = "securechat/0.2"

FEATURES: tuple[str, ...] = (
    "chat",
    "history",
    "files",
    "sessions",
    "offline",
    "read",
    "resume",
    "login_since",
    "accounts",
    "moderation",
    "action",
    "away",
    "online",
)
"""What this server supports, announced in `hello` so clients need not guess."""

REGISTRATION_POLICIES = ("open", "invite", "closed")
"""Who may create an account: anyone at first login, holders of an invite code, or only
an admin with ``securechat-admin user add``."""

DEFAULT_MAX_SESSIONS = 10
"""Sessions one account may have at once: several devices and a script or two."""

DEFAULT_MESSAGE_BURST = 20
"""Messages an account may send at once before its steady rate applies."""

DEFAULT_MESSAGE_RATE = 10.0
"""Messages per second an account may send on average: faster than anyone types,
slow enough that one script cannot flood a room (or the disk)."""

# 200 names of at most 32 characters fit a `joined` frame with room to spare.
_JOINED_USERS_MAX = 200

# Fields only the server may set: a client frame carrying one is claiming to be
# someone else, or to be the server.
_SERVER_ONLY_FIELDS = frozenset({"from", "ts", "by", "seq"})
# In messages `id` is the server's message id too; file frames use it for the transfer.
_MESSAGE_FRAMES = frozenset({"say", "msg"})

Handler = Callable[["Hub", Session, Frame, "int | None"], None]


def error_frame(exc: ChatError, rid: int | None, **fields: Any) -> bytes:
    """The error frame for a refused request (counted by its code, for metrics)."""
    count_refusal(exc.code)
    if exc.retry_after is not None:
        # Rounded up: a client that waits exactly this long must get through.
        fields["retry_after"] = math.ceil(exc.retry_after * 1000) / 1000
    return encode("error", rid=rid, code=exc.code, text=exc.text, **exc.fields, **fields)


class Hub:
    """Chat state and the session life cycle; thread-safe (see the module notes).

    The attributes ``accounts``, ``rooms``, ``sessions`` and ``relay`` are
    guarded by ``lock``; handlers use them with it held.
    """

    def __init__(
        self,
        *,
        store: Store,
        writer: MessageWriter,
        reader_pool: Executor,
        account_pool: Executor,
        server_name: str,
        history_on_join: int = 20,
        retention_days: int = 0,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        message_burst: int = DEFAULT_MESSAGE_BURST,
        message_rate: float = DEFAULT_MESSAGE_RATE,
        registration: str = "open",
    ) -> None:
        self.store = store
        self.registration = registration
        """The registration policy, one of ``REGISTRATION_POLICIES``."""
        self.stats: ServerStats | None = None
        """The numbers /stats and the metrics endpoint show (set by the server)."""
        self.writer = writer
        self.account_pool = account_pool
        """Where logins, registrations and renames do their slow work."""
        self.server_name = server_name
        self.history_on_join = history_on_join
        self.retention_days = retention_days
        self.max_sessions = max_sessions
        self._message_budget = (message_burst, message_rate)
        self._budgets: dict[int, TokenBucket] = {}
        self.lock = threading.RLock()
        self.accounts = AccountDirectory(store.load_accounts(), store.load_former_names())
        self.rooms = RoomDirectory(store.load_rooms(), store.load_memberships())
        now = utc_timestamp()
        self.moderation = Moderation(
            store.load_bans(now), store.load_mutes(now), store.load_room_settings()
        )
        if self.rooms.get(DEFAULT_ROOM) is None:
            self.persist(store.save_room, self.rooms.create(DEFAULT_ROOM).record())
        self.sessions = SessionTable()
        self.relay = FileRelay(max_file_size=max_file_size)
        self.streamer = Streamer(reader_pool, self.lock)
        self.delivery = Delivery(
            lock=self.lock,
            rooms=self.rooms,
            sessions=self.sessions,
            streamer=self.streamer,
            store=store,
            history_on_join=history_on_join,
        )
        self.handlers: dict[str, Handler] = {}
        self.cluster: Cluster | None = None
        """The other servers of the chat, in cluster mode (set by the server)."""
        self.remote_files: RemoteFiles | None = None
        """File transfers with users on other servers, in cluster mode (set by the server)."""
        self._connections: set[Session] = set()
        self._closed = False
        writer.delivery_context = self.delivery.batch

    # -- connection life cycle --------------------------------------------------

    def open_session(
        self,
        link: Peer,
        *,
        cert_user: str | None,
        tls_version: str,
        source: str,
        cert_fingerprint: str | None = None,
        web: bool = False,
    ) -> Session:
        """A new connection from ``source`` (its address, see ``limits.source_key``)
        finished its TLS handshake (``web``: and its WebSocket upgrade): greet it,
        unless its address is banned."""
        session = Session(link, cert_user=cert_user, tls_version=tls_version, source=source)
        session.cert_fingerprint = cert_fingerprint
        session.web = web
        with self.lock:
            if self._closed:
                link.send(encode("bye", reason="server shutting down"))
                link.close("server shutting down")
                session.state = State.GONE
                return session
            ban = self.moderation.ban_for(
                account=None, fingerprint=None, address=address_of(link.peer), now=utc_timestamp()
            )
            if ban is not None:
                session.state = State.GONE
                link.send(encode("bye", code="banned", reason=ban_text(ban), until=ban.expires))
                link.close("address banned")
                return session
            self._connections.add(session)
        link.send(
            encode(
                "hello",
                server=self.server_name,
                software=SERVER_SOFTWARE,
                version=PROTOCOL_VERSION,
                features=list(FEATURES),
                auth="certificate" if cert_user is not None else "password",
                registration=self.registration,
            )
        )
        return session

    def close_session(self, session: Session, reason: str) -> None:
        """The connection is gone: the account is away from its rooms if this was its
        last session (its memberships stay)."""
        with self.lock:
            self._connections.discard(session)
            was_ready = session.state is State.READY
            session.state = State.GONE
            session.held = None
            if not was_ready:
                return
            last = self.sessions.remove(session)
            self.relay.drop(session)
            if self.remote_files is not None:
                self.remote_files.session_closed(session)
            if self.cluster is not None:
                publish_presence(self, session.account_id, reason)
                last = last and not self.cluster.remote_sessions(session.account_id)
            for room in self.rooms.leave(session):
                if last:
                    room.announce(presence("quit", room, session.name, reason))
            if last and session.identity is not None:
                session.identity.away = ""  # away ends with the last session (see away.py)

    def shutdown(self, reason: str, *, drain_timeout: float = 2.0) -> None:
        """Tell every client the server is going down and close them all.

        Frames that arrive from now on are ignored; every message accepted before
        is committed, acknowledged and delivered (for up to ``drain_timeout``
        seconds) before the ``bye``, so a client never misses the acknowledgement
        of a message that was stored.
        """
        bye = encode("bye", reason=reason)
        with self.lock:
            self._closed = True
            sessions = list(self._connections)
            for session in sessions:
                session.state = State.GONE  # handle() ignores their frames from now on
            self._connections.clear()
        if not self.writer.drain(drain_timeout):
            log.warning("shutdown: messages still queued after %.1f s get no answer", drain_timeout)
        for session in sessions:
            session.send(bye)
            session.link.close(reason)

    # -- requests ------------------------------------------------------------------

    def handle(self, session: Session, frame: Frame) -> None:
        """Carry out one request; ProtocolError for frames that break the protocol."""
        forged = {k for k in _SERVER_ONLY_FIELDS if frame.get(k) is not None}
        if frame.type in _MESSAGE_FRAMES and frame.get("id") is not None:
            forged.add("id")
        if forged:
            raise ProtocolError(f"clients may not set {', '.join(sorted(forged))!r}")
        handler = self.handlers.get(frame.type)
        if handler is None:
            raise ProtocolError(f"unknown frame type {frame.type!r}")
        if frame.body and frame.type != "file_chunk":
            raise ProtocolError(f"{frame.type!r} frames carry no body")
        rid = frame.int_field("rid", optional=True)
        try:
            with self.lock:
                if session.state is State.GONE:
                    return
                if frame.type != "login" and session.state is not State.READY:
                    raise ChatError("not_logged_in", "log in first: send a login frame")
                handler(self, session, frame, rid)
        except ChatError as exc:
            session.send(error_frame(exc, rid))
            if frame.type == "login" and session.state is State.NEW:
                session.state = State.GONE
                session.link.close(f"login refused: {exc.text}")

    def refuse_login(self, session: Session, exc: ChatError, rid: int | None) -> None:
        """End a login attempt with an error (under the lock)."""
        session.state = State.GONE
        session.send(error_frame(exc, rid))
        session.link.close(f"login refused: {exc.text}")

    def admit(
        self,
        session: Session,
        identity: Identity,
        rid: int | None,
        *,
        replay: bool,
        unread: list[UnreadCount],
        new_account: bool,
        since: dict[str, int] | None = None,
        number: int | None = None,
    ) -> None:
        """Log a session in (under the lock): welcome, its rooms, what it missed.

        ``since`` (room fold -> message id) is a reconnecting client's resume point: those
        rooms replay what came after it, ahead of anything live (a join asked for after
        the welcome would let live messages overtake the gap). ``number``: the session's
        number, in cluster mode one the cluster handed out."""
        sessions = self.sessions.count(identity.id)
        if self.cluster is not None:
            sessions += self.cluster.remote_sessions(identity.id)
        if sessions >= self.max_sessions:
            raise ChatError(
                "too_many_sessions",
                f"{identity.name} already has {self.max_sessions} sessions: "
                "/sessions close N in one of them, or quit one",
            )
        session.identity = identity
        session.state = State.READY
        self.sessions.add(session, number)
        session.link.cancel_deadline()
        if new_account:  # the store made it a member of the default room already
            general = self.rooms.get(DEFAULT_ROOM) or self.rooms.create(DEFAULT_ROOM)
            self.rooms.join(general, identity.id, [])  # present once it arrives, below
        first = self.sessions.count(identity.id) == 1
        if self.cluster is not None:
            publish_presence(self, identity.id, "")
            first = first and not self.cluster.remote_sessions(identity.id)
        if first:
            identity.away = ""  # a new arrival is here, whatever a late event said
        rooms = self.rooms.arrive(session)
        unread_by_room = {fold(u.conversation): u.unread for u in unread if u.is_room}
        session.send(
            encode(
                "welcome",
                rid=rid,
                user=identity.name,
                server=self.server_name,
                tls_version=session.tls_version,
                keep_history=identity.keep_history,
                retention_days=self.retention_days,
                session=session.number,
                sessions=self.sessions.count(identity.id),
                rooms=[
                    {
                        "room": r.name,
                        "topic": r.topic,
                        "unread": unread_by_room.get(r.key, 0),
                        "members": len(r.members),
                    }
                    for r in rooms
                ],
            )
        )
        session.send(encode("system", event="history", text=self.storage_notice(identity)))
        log.info("%s: %s logged in (session %d)", session.link.peer, identity.name, session.number)
        for room in rooms:
            if first:
                room.announce(presence("join", room, session.name), skip=session)
            self.send_joined(session, room, None)
            resume = since.get(room.key) if since else None
            if resume is not None:
                self.delivery.replay(session, room, since=resume)
            elif replay:
                self.delivery.replay(session, room, since=None)
        if not new_account:  # a new account has no mail yet
            self.delivery.replay_private(session)

    def join_room(self, session: Session, room: Room) -> None:
        """Make the session's account a member of ``room`` (under the lock)."""
        account_id = session.account_id
        others = self.sessions.of(account_id)
        self.rooms.join(room, account_id, others)
        self.persist(self.store.add_member, room.key, account_id)
        if self.cluster is not None:
            self.cluster.publish("member", room=room.key, account=account_id, joined=True)
        room.announce(presence("join", room, session.name), skip=session)
        for other in others:
            if other is not session:
                self.send_joined(other, room, None)

    def send_joined(self, session: Session, room: Room, rid: int | None) -> None:
        """Tell a session it is in ``room``, with the topic and (for small rooms) who is here."""
        count = present_count(self, room)
        # The list rides along while it surely fits one frame; /who pages longer ones
        # (and a big room is not sorted on every arrival).
        users = present_names(self, room) if count <= _JOINED_USERS_MAX else None
        session.send(
            encode(
                "joined",
                rid=rid,
                room=room.name,
                topic=room.topic,
                count=count,
                members=len(room.members),
                users=users,
            )
        )

    # -- shared helpers ----------------------------------------------------------------

    def persist(
        self, write: Callable[..., object], *args: Any, then: Callable[[], None] | None = None
    ) -> None:
        """Have the writer make a change to stored chat state, in order with messages;
        ``then`` runs (under the lock, on the writer thread) once it is stored."""

        def _write() -> None:
            try:
                write(*args)
            except StoreError as exc:
                log.error("could not store a change (%s): %s", write.__name__, exc)
                return
            if then is not None:
                with self.lock:
                    then()

        self.writer.run_in_order(_write)

    def spend_message(self, session: Session) -> None:
        """Take one message from the account's budget (shared by all its sessions), or
        refuse with ``rate_limited`` and when to try again (under the lock)."""
        bucket = self._budgets.get(session.account_id)
        if bucket is None:
            burst, rate = self._message_budget
            bucket = self._budgets[session.account_id] = TokenBucket(burst=burst, rate=rate)
        # An account on several servers has a bucket on each: each charges as many
        # tokens as there are servers, so together they allow the budget once.
        cost = 1 + (self.cluster.servers_of(session.account_id) if self.cluster else 0)
        wait = bucket.take(time.monotonic(), cost)
        if wait:
            raise ChatError(
                "rate_limited",
                f"you are sending faster than {self._message_budget[1]:g} messages a second; "
                f"this one was not sent: send it again in {wait:.1f} s",
                retry_after=wait,
            )

    def storage_notice(self, identity: Identity) -> str:
        """What is kept about this account, and for how long, in one sentence."""
        kept = (
            f"messages are kept for {self.retention_days} days"
            if self.retention_days > 0
            else "messages are kept until deleted"
        )
        mine = (
            "yours are stored (/history off to opt out)"
            if identity.keep_history
            else "yours are not stored (/history on to opt in)"
        )
        return f"history: {kept}; {mine}"

    def end_sessions(self, account_id: int, code: str, reason: str) -> int:
        """Disconnect every session of the account on this server with a ``bye`` that
        says why (under the lock); how many."""
        sessions = self.sessions.of(account_id)
        bye = encode("bye", code=code, reason=reason)
        for session in sessions:
            session.send(bye)
            session.link.close(f"{code}: {reason}")
        return len(sessions)

    def save_room(self, room: Room, *, by: str = "") -> None:
        """Persist a room's name and topic (``by``: who set the topic)."""
        self.persist(self.store.save_room, room.record())
        if self.cluster is not None:
            self.cluster.publish("room", name=room.name, topic=room.topic, by=by)
