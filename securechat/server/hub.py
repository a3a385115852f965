"""Chat logic: sessions, accounts, rooms and private messages. Knows nothing of sockets.

The hub sees each connection as a :class:`Link` (queue bytes, hang up) and
routes frames between them. All chat state is guarded by one lock, taken for
every request: requests are short, and one lock gives every room a single
order of events that all its members see alike. Messages are encoded once per
fan-out and the same bytes queued to every recipient; the sender's copy
carries its request id (``rid``) and is its acknowledgement.

Password hashing is slow on purpose (scrypt), so logins are checked on a
worker pool, never on the I/O thread that received them and never under the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Protocol

from ..errors import ChatError, ProtocolError, StoreError
from ..store.sqlite import Account, Store, StoredMessage, utc_timestamp
from ..wire.names import (
    DEFAULT_ROOM,
    MAX_TOPIC_CHARS,
    UNSENDABLE_RE,
    check_room_name,
    check_text,
    check_user_name,
    fold,
)
from ..wire.protocol import PROTOCOL_VERSION, Frame, encode
from .history import EXPORT_PAGE, MAX_HISTORY, MAX_SEARCH, HistoryService, history_frame
from .passwords import MAX_PASSWORD_BYTES, hash_password, verify_password
from .relay import DEFAULT_MAX_FILE_SIZE, FileRelay
from .writer import MessageWriter, Outgoing

__all__ = ["ANNOUNCE_LIMIT", "FEATURES", "SERVER_SOFTWARE", "Hub", "Link", "Room", "Session"]

log = logging.getLogger(__name__)

SERVER_SOFTWARE = "securechat/0.1"

FEATURES: tuple[str, ...] = ("chat", "history", "files")
"""What this server supports, announced in `hello` so clients need not guess."""

ANNOUNCE_LIMIT = 200
"""Rooms with more members than this do not announce joins, parts and quits."""

# A list frame's items stay under this many bytes, leaving room for the envelope.
_LIST_CHUNK_BYTES = 12 * 1024
# 200 names of at most 32 characters fit a `joined` frame with room to spare.
_JOINED_USERS_MAX = 200

# Fields only the server may set: a client frame carrying one is claiming to be
# someone else, or to be the server.
_SERVER_ONLY_FIELDS = frozenset({"from", "ts", "by"})
# In messages `id` is the server's message id too; file frames use it for the transfer.
_MESSAGE_FRAMES = frozenset({"say", "msg"})


class Link(Protocol):
    """What the hub sees of a connection."""

    @property
    def peer(self) -> str:
        """The peer's address, for logs."""

    @property
    def tls_version(self) -> str:
        """The negotiated TLS version, e.g. ``TLSv1.3``."""

    def send(self, data: bytes, *, bulk: bool = False) -> bool:
        """Queue encoded frames (``bulk`` for file chunks); False if closing or overflowed."""

    def close(self, reason: str) -> None:
        """Deliver what is queued, then hang up."""

    def cancel_deadline(self) -> None:
        """The peer has logged in: stop the login timer."""

    def backlog(self) -> int:
        """Bytes queued and not yet written."""


class _State(Enum):
    NEW = "new"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    GONE = "gone"


class Session:
    """One connected client as the chat logic sees it."""

    __slots__ = ("account", "cert_user", "link", "rooms", "state")

    def __init__(self, link: Link, cert_user: str | None) -> None:
        self.link = link
        self.cert_user = cert_user
        self.state = _State.NEW
        self.account: Account | None = None
        self.rooms: set[str] = set()

    @property
    def name(self) -> str:
        """The logged-in user's current name (empty before login)."""
        return self.account.name if self.account else ""

    def send(self, data: bytes) -> bool:
        """Queue encoded frames for this client."""
        return self.link.send(data)

    def send_bulk(self, data: bytes) -> bool:
        """Queue a file chunk, to be written after any queued chat."""
        return self.link.send(data, bulk=True)


@dataclass(eq=False)
class Room:
    """A chat room: its display name, topic and members (keyed by account id)."""

    name: str
    topic: str = ""
    members: dict[int, Session] = field(default_factory=dict)

    def broadcast(self, data: bytes, *, skip: Session | None = None) -> None:
        """Queue ``data`` to every member but ``skip``."""
        for member in self.members.values():
            if member is not skip:
                member.send(data)

    def announce(self, data: bytes, *, skip: Session | None = None) -> None:
        """Broadcast a join, part or quit notice, unless the room is large.

        In a room of thousands every arrival would otherwise cost a notice to
        everyone (quadratic work and noise); its members use /who instead.
        """
        if len(self.members) <= ANNOUNCE_LIMIT:
            self.broadcast(data, skip=skip)

    def user_names(self) -> list[str]:
        """Members' names, sorted case-insensitively."""
        return sorted((s.name for s in self.members.values()), key=fold)


_Handler = Callable[["Hub", Session, Frame, "int | None"], None]


class Hub:
    """Routes frames between sessions; thread-safe."""

    def __init__(
        self,
        *,
        store: Store,
        writer: MessageWriter,
        login_executor: Executor,
        history_pool: Executor,
        server_name: str,
        history_on_join: int = 20,
        retention_days: int = 0,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    ) -> None:
        self._store = store
        self._writer = writer
        self._executor = login_executor
        self._history = HistoryService(store, history_pool)
        self._server_name = server_name
        self._history_on_join = history_on_join
        self._retention_days = retention_days
        self._relay = FileRelay(max_file_size=max_file_size)
        self._batch: dict[Session, list[bytes]] | None = None
        writer.delivery_context = self._delivery_batch
        self._lock = threading.RLock()
        self._sessions: set[Session] = set()
        self._online: dict[str, Session] = {}
        self._rooms: dict[str, Room] = {fold(DEFAULT_ROOM): Room(DEFAULT_ROOM)}
        self._closed = False

    # -- connection life cycle --------------------------------------------------

    def open_session(self, link: Link, *, cert_user: str | None = None) -> Session:
        """A new connection finished its TLS handshake: greet it."""
        session = Session(link, cert_user)
        with self._lock:
            if self._closed:
                link.send(encode("bye", reason="server shutting down"))
                link.close("server shutting down")
                session.state = _State.GONE
                return session
            self._sessions.add(session)
        link.send(
            encode(
                "hello",
                server=self._server_name,
                software=SERVER_SOFTWARE,
                version=PROTOCOL_VERSION,
                features=list(FEATURES),
                auth="certificate" if cert_user is not None else "password",
            )
        )
        return session

    def close_session(self, session: Session, reason: str) -> None:
        """The connection is gone: take the user out of every room and say why."""
        with self._lock:
            self._sessions.discard(session)
            was_ready = session.state is _State.READY
            session.state = _State.GONE
            if not was_ready or session.account is None:
                return
            name = session.name
            if self._online.get(fold(name)) is session:
                del self._online[fold(name)]
            self._relay.drop(session)
            for key in sorted(session.rooms):
                room = self._rooms[key]
                room.members.pop(session.account.id, None)
                room.announce(
                    encode(
                        "system",
                        event="quit",
                        room=room.name,
                        user=name,
                        text=f"{name} left ({reason})",
                    )
                )
                self._drop_if_empty(room)
            session.rooms.clear()

    def shutdown(self, reason: str, *, drain_timeout: float = 2.0) -> None:
        """Tell every client the server is going down and close them all.

        Frames that arrive from now on are ignored; every message accepted before
        is committed, acknowledged and delivered (for up to ``drain_timeout``
        seconds) before the ``bye``, so a client never misses the acknowledgement
        of a message that was stored.
        """
        bye = encode("bye", reason=reason)
        with self._lock:
            self._closed = True
            sessions = list(self._sessions)
            for session in sessions:
                session.state = _State.GONE  # handle() ignores their frames from now on
            self._sessions.clear()
            self._online.clear()
        if not self._writer.drain(drain_timeout):
            log.warning("shutdown: messages still queued after %.1f s get no answer", drain_timeout)
        self._history.close()
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
        handler = _HANDLERS.get(frame.type)
        if handler is None:
            raise ProtocolError(f"unknown frame type {frame.type!r}")
        if frame.body and frame.type != "file_chunk":
            raise ProtocolError(f"{frame.type!r} frames carry no body")
        rid = frame.int_field("rid", optional=True)
        try:
            with self._lock:
                if session.state is _State.GONE:
                    return
                if frame.type != "login" and session.state is not _State.READY:
                    raise ChatError("not_logged_in", "log in first: send a login frame")
                handler(self, session, frame, rid)
        except ChatError as exc:
            session.send(_error(exc, rid))
            if frame.type == "login" and session.state is _State.NEW:
                session.state = _State.GONE
                session.link.close(f"login refused: {exc.text}")
        except StoreError as exc:
            log.error("store error: %s", exc)
            session.send(encode("error", rid=rid, code="unavailable", text=f"server error: {exc}"))

    def _login(self, session: Session, frame: Frame, rid: int | None) -> None:
        if session.state is not _State.NEW:
            raise ChatError("already_logged_in", "you are already logged in (or logging in)")
        if session.cert_user is not None:
            self._login_by_certificate(session, frame, rid)
            return
        name = check_user_name(frame.str_field("user"))
        password = frame.str_field("password", optional=True)
        if not password:
            raise ChatError(
                "bad_password",
                "a password is required: set SECURECHAT_PASSWORD or pass --password-file",
            )
        if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            raise ChatError("bad_password", f"password longer than {MAX_PASSWORD_BYTES} bytes")
        # Whether the name is online is checked only after the password: a stranger
        # must not learn who is connected.
        session.state = _State.AUTHENTICATING
        replay = frame.get("replay") is not False
        self._executor.submit(self._authenticate, session, name, password, rid, replay)

    def _login_by_certificate(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.cert_user is not None
        name = session.cert_user
        try:
            check_user_name(name)
        except ChatError as exc:
            raise ChatError(
                "invalid_name",
                f"your certificate's common name {name!r} is not a valid user name: "
                "ask for a certificate whose common name is your user name",
            ) from exc
        asked = frame.str_field("user", optional=True)
        if asked and fold(asked) != fold(name):
            raise ChatError(
                "cert_mismatch",
                f"your client certificate is for {name!r}, not {asked!r}: "
                f"pass --user {name} or another certificate",
            )
        self._refuse_if_online(name)
        replay = frame.get("replay") is not False
        try:
            account = self._store.find_account(name) or self._store.create_account(name, None)
        except StoreError as exc:
            log.error("login of %s failed: %s", name, exc)
            account = None
        if account is None:
            raise ChatError("unavailable", "the server cannot register your account; try later")
        self._admit(session, account, rid, replay=replay)

    def _authenticate(
        self, session: Session, name: str, password: str, rid: int | None, replay: bool
    ) -> None:
        """Runs on the login pool: hash without holding the lock, then admit or refuse."""
        error: ChatError | None = None
        account: Account | None = None
        try:
            account = self._store.find_account(name)
            if account is None:
                account = self._store.create_account(name, hash_password(password))
                if account is None and self._store.is_reserved(name):
                    error = ChatError(
                        "name_reserved",
                        f"{name} was the name of another account and stays reserved for it; "
                        "pick another name",
                    )
                elif account is None:
                    account = self._store.find_account(name)  # registered meanwhile
                    error = ChatError("name_in_use", f"{name} was registered just now; try again")
            elif account.password is None:
                error = ChatError(
                    "bad_password",
                    f"{account.name} logs in with a client certificate: pass --cert and --key",
                )
            elif not verify_password(password, account.password):
                error = ChatError(
                    "bad_password",
                    f"wrong password for {account.name}: a new name registers a new account",
                )
        except StoreError as exc:
            log.error("login of %s failed: %s", name, exc)
            error = ChatError("unavailable", "the server cannot read its accounts; try later")
        with self._lock:
            if session.state is not _State.AUTHENTICATING:
                return  # the connection went away while we were hashing
            try:
                if error is not None:
                    raise error
                assert account is not None
                self._admit(session, account, rid, replay=replay)
            except ChatError as exc:
                session.state = _State.GONE
                session.send(_error(exc, rid))
                session.link.close(f"login refused: {exc.text}")
                log.info("%s: login as %s refused: %s", session.link.peer, name, exc.code)

    def _refuse_if_online(self, name: str) -> None:
        if fold(name) in self._online:
            raise ChatError(
                "name_in_use",
                f"{self._online[fold(name)].name} is already connected; "
                "pick another --user, or wait for the other session to end",
            )

    def _admit(
        self, session: Session, account: Account, rid: int | None, *, replay: bool = True
    ) -> None:
        self._refuse_if_online(account.name)
        session.account = account
        session.state = _State.READY
        self._online[fold(account.name)] = session
        session.link.cancel_deadline()
        session.send(
            encode(
                "welcome",
                rid=rid,
                user=account.name,
                server=self._server_name,
                tls_version=session.link.tls_version,
                keep_history=account.keep_history,
                retention_days=self._retention_days,
            )
        )
        session.send(encode("system", event="history", text=self._storage_notice(account)))
        log.info("%s: %s logged in", session.link.peer, account.name)
        self._enter_room(session, DEFAULT_ROOM, None, replay=replay)

    def _say(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        room = self._member_room(session, frame.str_field("room"))
        text = check_text(frame.str_field("text"))
        keep = session.account.keep_history and frame.get("nolog") is not True
        self._submit(
            Outgoing(
                sender=session.account.id,
                text=text,
                keep=keep,
                room=fold(room.name),
                room_name=room.name,
                on_done=partial(self._deliver_room, session, rid),
            )
        )

    def _private(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        target = self._online_user(frame.str_field("to"))
        assert target.account is not None
        text = check_text(frame.str_field("text"))
        # Stored only if neither party opted out.
        keep = session.account.keep_history and target.account.keep_history
        self._submit(
            Outgoing(
                sender=session.account.id,
                text=text,
                keep=keep,
                recipient=target.account.id,
                on_done=partial(self._deliver_private, session, target, rid),
            )
        )

    def _submit(self, message: Outgoing) -> None:
        if not self._writer.submit(message):
            raise ChatError("busy", "the server is overloaded; nothing was sent, try again")

    @contextlib.contextmanager
    def _delivery_batch(self) -> Iterator[None]:
        """Deliver one commit group under one lock, one queued write per connection.

        Under load a group holds many messages for the same recipients; joining
        them saves a queue operation and a wake-up per message and recipient,
        and the connection writes them with one TLS record run.
        """
        with self._lock:
            self._batch = {}
            try:
                yield
            finally:
                batch, self._batch = self._batch, None
                for session, parts in batch.items():
                    session.send(parts[0] if len(parts) == 1 else b"".join(parts))

    def _deliver(self, session: Session, data: bytes) -> None:
        if self._batch is not None:
            self._batch.setdefault(session, []).append(data)
        else:
            session.send(data)

    def _deliver_room(
        self, session: Session, rid: int | None, message: Outgoing, error: StoreError | None
    ) -> None:
        """Runs on the writer thread once the message is committed (or failed)."""
        with self._lock:
            if error is not None:
                self._deliver(session, _not_stored(rid, error))
                return
            assert message.room is not None
            room = self._rooms.get(message.room)
            fields = {
                "id": message.id,
                "ts": message.ts,
                "room": room.name if room else message.room_name,
                "from": session.name,
                "text": message.text,
                "stored": message.keep,
            }
            if room is not None:
                data = encode("message", **fields)
                for member in room.members.values():
                    if member is not session:
                        self._deliver(member, data)
            self._deliver(session, encode("message", rid=rid, **fields))

    def _deliver_private(
        self,
        session: Session,
        target: Session,
        rid: int | None,
        message: Outgoing,
        error: StoreError | None,
    ) -> None:
        """Runs on the writer thread once the message is committed (or failed)."""
        with self._lock:
            if error is not None:
                self._deliver(session, _not_stored(rid, error))
                return
            fields = {
                "id": message.id,
                "ts": message.ts,
                "from": session.name,
                "to": target.name,
                "text": message.text,
                "stored": message.keep,
            }
            if target is not session:
                self._deliver(target, encode("private", **fields))
            self._deliver(session, encode("private", rid=rid, **fields))

    def _join(self, session: Session, frame: Frame, rid: int | None) -> None:
        room = check_room_name(frame.str_field("room"))
        since = frame.int_field("since", optional=True)
        self._enter_room(session, room, rid, since=since)

    def _enter_room(
        self,
        session: Session,
        name: str,
        rid: int | None,
        *,
        since: int | None = None,
        replay: bool = True,
    ) -> None:
        assert session.account is not None
        room = self._rooms.setdefault(fold(name), Room(name))
        if session.account.id not in room.members:
            room.announce(
                encode(
                    "system",
                    event="join",
                    room=room.name,
                    user=session.name,
                    text=f"{session.name} joined {room.name}",
                )
            )
            room.members[session.account.id] = session
            session.rooms.add(fold(name))
        count = len(room.members)
        # The member list rides along while it surely fits one frame; /who pages longer
        # ones (and a big room is not sorted on every join).
        session.send(
            encode(
                "joined",
                rid=rid,
                room=room.name,
                topic=room.topic,
                count=count,
                users=room.user_names() if count <= _JOINED_USERS_MAX else None,
            )
        )
        if replay:
            self._replay(session, room, since)

    def _replay(self, session: Session, room: Room, since: int | None) -> None:
        """Send a joining user the room's recent messages, or all since ``since``.

        Done here, under the lock and before anything else is queued for the
        session, so the replay comes before every live message that follows.
        """
        try:
            if since is None:
                rows = self._store.room_history(room.name, limit=self._history_on_join)
            else:
                rows = self._store.room_history(room.name, after=since, limit=MAX_HISTORY)
        except StoreError as exc:
            log.error("replay of %s failed: %s", room.name, exc)
            return
        for row in rows:
            session.send(history_frame(row))
        if since is not None and len(rows) == MAX_HISTORY:
            session.send(
                encode(
                    "system",
                    event="history",
                    room=room.name,
                    text=f"more than {MAX_HISTORY} messages in {room.name} since you left: "
                    f"/history after {rows[-1].id} shows the rest",
                )
            )

    def _part(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        room = self._member_room(session, frame.str_field("room"))
        del room.members[session.account.id]
        session.rooms.discard(fold(room.name))
        room.announce(
            encode(
                "system",
                event="part",
                room=room.name,
                user=session.name,
                text=f"{session.name} left {room.name}",
            )
        )
        session.send(encode("parted", rid=rid, room=room.name))
        self._drop_if_empty(room)

    def _list_rooms(self, session: Session, frame: Frame, rid: int | None) -> None:
        rooms = [
            {"name": r.name, "users": len(r.members), "topic": r.topic}
            for r in sorted(self._rooms.values(), key=lambda r: fold(r.name))
        ]
        _send_list(session, "rooms", "rooms", rooms, rid=rid)

    def _who(self, session: Session, frame: Frame, rid: int | None) -> None:
        room = self._existing_room(frame.str_field("room"))
        _send_list(session, "users", "users", room.user_names(), rid=rid, room=room.name)

    def _topic(self, session: Session, frame: Frame, rid: int | None) -> None:
        room = self._member_room(session, frame.str_field("room"))
        if frame.get("text") is None:
            session.send(encode("topic", rid=rid, room=room.name, topic=room.topic))
            return
        text = frame.str_field("text")
        if text:
            check_text(text, limit=MAX_TOPIC_CHARS, what="topic")
        room.topic = text
        fields: dict[str, Any] = {"room": room.name, "topic": text, "by": session.name}
        room.broadcast(encode("topic", **fields), skip=session)
        session.send(encode("topic", rid=rid, **fields))

    def _nick(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        if session.cert_user is not None:
            raise ChatError(
                "forbidden", "your name comes from your client certificate and cannot change"
            )
        old = session.name
        new = check_user_name(frame.str_field("name"))
        if new == old:
            raise ChatError("invalid_name", f"you are already {old}")
        if fold(new) != fold(old):
            self._refuse_if_online(new)
        if not self._store.rename_account(session.account.id, new):
            raise ChatError(
                "name_in_use",
                f"{new} belongs, or belonged, to another account; pick another name",
            )
        session.account = dataclasses.replace(session.account, name=new)
        del self._online[fold(old)]
        self._online[fold(new)] = session
        notice = encode("nick", old=old, new=new, text=f"{old} is now known as {new}")
        for peer in self._room_peers(session):
            peer.send(notice)
        session.send(encode("nick", rid=rid, old=old, new=new, text=f"you are now {new}"))

    def _time(self, session: Session, frame: Frame, rid: int | None) -> None:
        session.send(encode("time", rid=rid, ts=utc_timestamp()))

    def _quit(self, session: Session, frame: Frame, rid: int | None) -> None:
        reason = _printable(frame.str_field("reason", optional=True))[:200]
        why = f"quit: {reason}" if reason else "quit"
        # Leave the rooms now, not when the socket closes, so nobody can reach a
        # user who has already said goodbye.
        self.close_session(session, why)
        session.send(encode("bye", rid=rid, reason="you quit"))
        session.link.close(why)

    # -- files -----------------------------------------------------------------------

    def _file_offer(self, session: Session, frame: Frame, rid: int | None) -> None:
        target = self._online_user(frame.str_field("to"))
        self._relay.offer(session, target, frame, rid)

    def _file_accept(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._relay.accept(session, frame, rid)

    def _file_reject(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._relay.reject(session, frame, rid)

    def _file_cancel(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._relay.cancel(session, frame, rid)

    def _file_chunk(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._relay.chunk(session, frame)

    def _file_ack(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._relay.ack(session, frame)

    def _file_done(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._relay.done(session, frame)

    def _file_result(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._relay.result(session, frame)

    # -- history ---------------------------------------------------------------------

    def _history_request(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        before = frame.int_field("before", optional=True)
        after = frame.int_field("after", optional=True)
        limit = frame.int_field("limit", optional=True)
        limit = 50 if limit is None else limit
        if limit < 1:
            raise ChatError("usage", "the number of messages must be at least 1")
        limit = min(limit, MAX_HISTORY)
        room_name, user = frame.get("room"), frame.get("user")
        query: Callable[[], list[StoredMessage]]
        end: dict[str, Any]
        if isinstance(room_name, str) and user is None:
            room = self._member_room(session, room_name)
            query = partial(
                self._store.room_history, room.name, before=before, after=after, limit=limit
            )
            end = {"room": room.name}
        elif isinstance(user, str) and room_name is None:
            other = self._store.find_account(check_user_name(user))
            if other is None:
                raise ChatError("no_such_user", f"there is no user called {user}")
            query = partial(
                self._store.private_history,
                session.account.id,
                other.id,
                before=before,
                after=after,
                limit=limit,
            )
            end = {"user": other.name}
        else:
            raise ProtocolError("a history request names exactly one of 'room' or 'user'")
        self._history.answer(session.link, rid, query, end=end)

    def _search(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        words = frame.str_field("text").split()
        if not words:
            raise ChatError("usage", "usage: /history search WORDS")
        if len(words) > 16 or any(len(w) > 100 for w in words):
            raise ChatError("usage", "search for at most 16 words of at most 100 characters")
        rooms = [self._rooms[key].name for key in session.rooms]
        query = partial(self._store.search, session.account.id, rooms, words, limit=MAX_SEARCH)

        def _index_then_search() -> None:
            # On the writer thread, after every message acknowledged so far.
            self._writer.index_now()
            self._history.answer(
                session.link, rid, query, end={"search": " ".join(words)}, mark="search"
            )

        self._writer.run_in_order(_index_then_search)

    def _export(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        after = frame.int_field("after", optional=True) or 0
        rooms = [self._rooms[key].name for key in session.rooms]
        query = partial(
            self._store.export_page, session.account.id, rooms, after=after, limit=EXPORT_PAGE
        )
        self._history.answer(session.link, rid, query, end={"export": True}, mark="export")

    def _history_mode(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        keep = frame.get("keep")
        if not isinstance(keep, bool):
            raise ProtocolError("'history_mode' needs a boolean 'keep'")
        self._store.set_keep_history(session.account.id, keep)
        session.account = dataclasses.replace(session.account, keep_history=keep)
        self._send_status(session, rid)

    def _history_status(self, session: Session, frame: Frame, rid: int | None) -> None:
        self._send_status(session, rid)

    def _send_status(self, session: Session, rid: int | None) -> None:
        account = session.account
        assert account is not None

        def _count_and_answer() -> None:
            try:
                stored = self._store.sent_count(account.id)
            except StoreError as exc:
                session.send(_error(ChatError("unavailable", f"cannot count: {exc}"), rid))
                return
            sent = "1 message you sent is" if stored == 1 else f"{stored} messages you sent are"
            text = f"{self._storage_notice(account)}; {sent} stored"
            session.send(
                encode(
                    "history_status",
                    rid=rid,
                    keep=account.keep_history,
                    stored=stored,
                    retention_days=self._retention_days,
                    text=text,
                )
            )

        self._history.run(_count_and_answer)

    def _forget(self, session: Session, frame: Frame, rid: int | None) -> None:
        assert session.account is not None
        account_id = session.account.id

        def _erase() -> None:
            # On the writer thread: after every message this user already sent.
            try:
                count = self._writer.forget_sender(account_id)
            except StoreError as exc:
                session.send(_error(ChatError("unavailable", f"could not erase: {exc}"), rid))
                return
            session.send(
                encode(
                    "forgotten",
                    rid=rid,
                    count=count,
                    text=f"erased {count} messages you sent, and their search index entries",
                )
            )

        self._writer.run_in_order(_erase)

    def _storage_notice(self, account: Account) -> str:
        kept = (
            f"messages are kept for {self._retention_days} days"
            if self._retention_days > 0
            else "messages are kept until deleted"
        )
        mine = (
            "yours are stored (/history off to opt out)"
            if account.keep_history
            else "yours are not stored (/history on to opt in)"
        )
        return f"history: {kept}; {mine}"

    # -- helpers ---------------------------------------------------------------------

    def _existing_room(self, name: str) -> Room:
        check_room_name(name)
        room = self._rooms.get(fold(name))
        if room is None:
            raise ChatError("no_such_room", f"there is no room {name}: /rooms lists them")
        return room

    def _member_room(self, session: Session, name: str) -> Room:
        room = self._existing_room(name)
        if fold(name) not in session.rooms:
            raise ChatError("not_in_room", f"you are not in {room.name}: /join {room.name} first")
        return room

    def _online_user(self, name: str) -> Session:
        check_user_name(name)
        target = self._online.get(fold(name))
        if target is not None:
            return target
        if self._store.find_account(name) is None:
            raise ChatError("no_such_user", f"there is no user called {name}")
        raise ChatError("not_online", f"{name} is not online; try again when they are")

    def _room_peers(self, session: Session) -> list[Session]:
        peers: dict[int, Session] = {}
        for key in session.rooms:
            for account_id, member in self._rooms[key].members.items():
                if member is not session:
                    peers[account_id] = member
        return list(peers.values())

    def _drop_if_empty(self, room: Room) -> None:
        if not room.members and fold(room.name) != fold(DEFAULT_ROOM):
            del self._rooms[fold(room.name)]


def _send_list(session: Session, type_: str, key: str, items: list[Any], **fields: Any) -> None:
    """Send ``items`` under ``key`` in as many frames as the header limit needs.

    Every frame but the last carries ``more: true``; the client joins them.
    """
    chunk: list[Any] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, ensure_ascii=False).encode("utf-8")) + 1
        if chunk and size + item_size > _LIST_CHUNK_BYTES:
            session.send(encode(type_, more=True, **{key: chunk}, **fields))
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    session.send(encode(type_, **{key: chunk}, **fields))


def _printable(text: str) -> str:
    """``text`` without the characters chat text may not contain (for free-form reasons)."""
    return UNSENDABLE_RE.sub("", text)


def _not_stored(rid: int | None, error: StoreError) -> bytes:
    return encode(
        "error",
        rid=rid,
        code="not_stored",
        text=f"the server could not store your message ({error}); it was not delivered",
    )


def _error(exc: ChatError, rid: int | None) -> bytes:
    return encode("error", rid=rid, code=exc.code, text=exc.text)


_HANDLERS: dict[str, _Handler] = {
    "login": Hub._login,
    "say": Hub._say,
    "msg": Hub._private,
    "join": Hub._join,
    "part": Hub._part,
    "rooms": Hub._list_rooms,
    "who": Hub._who,
    "topic": Hub._topic,
    "nick": Hub._nick,
    "time": Hub._time,
    "quit": Hub._quit,
    "history": Hub._history_request,
    "search": Hub._search,
    "export": Hub._export,
    "history_mode": Hub._history_mode,
    "history_status": Hub._history_status,
    "forget": Hub._forget,
    "file_offer": Hub._file_offer,
    "file_accept": Hub._file_accept,
    "file_reject": Hub._file_reject,
    "file_cancel": Hub._file_cancel,
    "file_chunk": Hub._file_chunk,
    "file_ack": Hub._file_ack,
    "file_done": Hub._file_done,
    "file_result": Hub._file_result,
}
