"""Fan-out and replays: how committed messages and stored history reach sessions.

Both run under the hub's lock. A committed message is queued once per
recipient session, the same encoded bytes for all, and the sender's copy with
its ``rid`` is its acknowledgement; within one commit group everything for a
session is joined into one write (:meth:`Delivery.batch`).

A replay (at login, at ``join``, unread private messages) is read from the
store on the reader pool and streamed; while it is on its way, live messages
of that conversation are *held* for the session and released after it, less
those the replay already showed. So a session sees one order, without gaps or
repeats, and a slow replay costs nobody else anything.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..store.base import Store, StoredMessage, pair_key
from ..wire.protocol import encode
from .accounts import Identity
from .rooms import Room, RoomDirectory
from .sessions import Session, SessionTable
from .streamer import MAX_HISTORY, Streamer
from .writer import Outgoing

if TYPE_CHECKING:
    from .cluster.node import Cluster

__all__ = ["PRIVATE", "Delivery"]

PRIVATE = ""
"""The key under which live private messages wait while unread ones replay."""


class Delivery:
    """Queues committed messages and replays to sessions (under the hub's lock)."""

    def __init__(
        self,
        *,
        lock: threading.RLock,
        rooms: RoomDirectory,
        sessions: SessionTable,
        streamer: Streamer,
        store: Store,
        history_on_join: int,
    ) -> None:
        self._lock = lock
        self._rooms = rooms
        self._sessions = sessions
        self._streamer = streamer
        self._store = store
        self._history_on_join = history_on_join
        self._batch: dict[Session, list[bytes]] | None = None
        self.cluster: Cluster | None = None
        """In cluster mode: where committed messages are published, and the sequencer
        that keeps each conversation in order whichever server committed it."""

    def replay(
        self, session: Session, room: Room, *, since: int | None, since_seq: int | None = None
    ) -> None:
        """Stream the room's recent messages (or all after ``since``) to a session.

        Live messages for the room wait behind the replay, so the session sees
        one order, without gaps or repeats (under the lock).
        """
        if since is None and since_seq is None:
            query = _bind(self._store.room_history, room.key, limit=self._history_on_join)
        else:
            query = _bind(
                self._store.room_history,
                room.key,
                after=since,
                after_seq=since_seq,
                limit=MAX_HISTORY,
            )
        self._replay(session, room.key, query, room=room)

    def replay_private(self, session: Session) -> None:
        """Stream the private messages the account has not read yet (under the lock)."""
        query = _bind(self._store.unread_private, session.account_id, limit=MAX_HISTORY)
        self._replay(session, PRIVATE, query, room=None)

    def _replay(
        self,
        session: Session,
        key: str,
        query: Callable[[], list[StoredMessage]],
        *,
        room: Room | None,
    ) -> None:
        if session.held is None:
            session.held = {}
        elif key in session.held:
            return  # a replay of this conversation is already on its way
        session.held[key] = []

        def _release(rows: list[StoredMessage] | None) -> None:
            # Under the lock (the streamer takes it): what waited goes out now,
            # less what the replay already showed.
            held = session.held.pop(key, []) if session.held is not None else []
            if not session.held:
                session.held = None
            session.held_bytes -= sum(len(data) for _, data in held)
            if rows is None:
                return
            shown = {row.id for row in rows}
            if room is not None and rows and rows[-1].seq is not None:
                # Messages released later in cluster mode may already be in the replay.
                if session.shown_seq is None:
                    session.shown_seq = {}
                session.shown_seq[key] = max(session.shown_seq.get(key, 0), rows[-1].seq)
            for message_id, data in held:
                if message_id not in shown:
                    session.send(data)
            if room is not None and len(rows) == MAX_HISTORY:
                session.send(
                    encode(
                        "system",
                        event="history",
                        room=room.name,
                        text=f"more than {MAX_HISTORY} messages in {room.name} since you "
                        f"left: /history after {rows[-1].id} shows the rest",
                    )
                )

        self._streamer.answer(session, None, query, end=None, on_end=_release)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
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

    def _deliver(self, session: Session, key: str | None, message_id: int, data: bytes) -> None:
        """Queue ``data``; a live message of conversation ``key`` may wait behind a replay."""
        if key is not None and session.held and key in session.held:
            session.deliver(key, message_id, data)
        elif self._batch is not None:
            self._batch.setdefault(session, []).append(data)
        else:
            session.send(data)

    def send_after(self, session: Session, data: bytes) -> None:
        """Queue ``data`` behind what this commit group already queued for ``session``."""
        with self._lock:
            self._deliver(session, None, 0, data)

    def room(
        self, session: Session, rid: int | None, message: Outgoing, error: StoreError | None
    ) -> None:
        """Fan out a committed room message (or tell the sender it failed)."""
        with self._lock:
            if error is not None:
                self._deliver(session, None, 0, _not_stored(rid, error))
                return
            assert message.room is not None
            room = self._rooms.get(message.room)
            fields = _message_fields(
                message, session.name, room=room.name if room else message.room_name
            )
            ack = _ack("message", rid, message, fields)
            if room is None or message.duplicate:
                self._deliver(session, None, 0, ack)
                return
            data = encode("message", **fields)

            def _fan_out() -> None:
                self._fan_out(room, session, message.id, data, message.seq)
                self._deliver(session, None, 0, ack)

            self._release(message, room.key, _fan_out, ack, session)
            if self.cluster is not None:
                self.cluster.publish("message", frame="message", fields=fields, room=room.key)

    def _fan_out(
        self, room: Room, sender: Session | None, message_id: int, data: bytes, seq: int | None
    ) -> None:
        key, batch = room.key, self._batch
        # The hot loop of the server (one turn per recipient): kept flat.
        for member in room.live:
            if member is sender:
                continue
            if member.shown_seq and seq is not None and seq <= member.shown_seq.get(key, 0):
                continue  # its replay showed it already
            if member.held and key in member.held:
                member.deliver(key, message_id, data)
            elif batch is not None:
                parts = batch.get(member)
                if parts is None:
                    batch[member] = [data]
                else:
                    parts.append(data)
            else:
                member.send(data)

    def _release(
        self,
        message: Outgoing,
        conversation: str,
        deliver: Callable[[], None],
        ack: bytes,
        session: Session,
    ) -> None:
        """Deliver now, or (cluster mode) once every earlier message of the conversation
        is out; a message already shown from the store only acknowledges."""
        if self.cluster is None or message.seq is None:
            deliver()
            return
        self.cluster.sequencer.release(
            conversation, message.seq, deliver, lambda: self._deliver(session, None, 0, ack)
        )

    def private(
        self,
        session: Session,
        target: Identity,
        rid: int | None,
        message: Outgoing,
        error: StoreError | None,
    ) -> None:
        """Deliver a committed private message to every session of both accounts."""
        with self._lock:
            if error is not None:
                self._deliver(session, None, 0, _not_stored(rid, error))
                return
            fields = _message_fields(message, session.name, to=target.name)
            ack = _ack("private", rid, message, fields)
            if message.duplicate:
                self._deliver(session, None, 0, ack)
                return
            data = encode("private", **fields)
            sender = session.account_id

            def _deliver_all() -> None:
                self._private_copies(sender, target.id, message.id, data, skip=session)
                self._deliver(session, None, 0, ack)

            conversation = pair_key(sender, target.id)
            self._release(message, conversation, _deliver_all, ack, session)
            if self.cluster is not None:
                self.cluster.publish(
                    "message",
                    frame="private",
                    fields=fields,
                    sender=sender,
                    recipient=target.id,
                    conversation=conversation,
                )

    def _private_copies(
        self, sender: int, recipient: int, message_id: int, data: bytes, *, skip: Session | None
    ) -> None:
        for other in self._sessions.of(recipient):
            if other is not skip:
                self._deliver(other, PRIVATE, message_id, data)
        if recipient != sender:
            for other in self._sessions.of(sender):
                if other is not skip:
                    self._deliver(other, None, message_id, data)

    # -- messages committed by other servers (cluster mode, under the lock) ------------------

    def remote_room(self, room: Room, message_id: int, seq: int | None, data: bytes) -> None:
        """A message another server committed to ``room``: to every session here in it."""
        self._fan_out(room, None, message_id, data, seq)

    def remote_private(self, sender: int, recipient: int, message_id: int, data: bytes) -> None:
        """A private message another server committed: to the two accounts' sessions here."""
        self._private_copies(sender, recipient, message_id, data, skip=None)


def _bind(
    fn: Callable[..., list[StoredMessage]], *args: Any, **kwargs: Any
) -> Callable[[], list[StoredMessage]]:
    return lambda: fn(*args, **kwargs)


def _message_fields(message: Outgoing, sender: str, **where: str | None) -> dict[str, Any]:
    """The fields of a live ``message``/``private`` frame, in the order history uses."""
    fields: dict[str, Any] = {"id": message.id, "ts": message.ts, "from": sender, **where}
    fields["text"] = message.text
    if message.action:
        fields["action"] = True
    fields["stored"] = message.keep
    if message.seq is not None:
        fields["seq"] = message.seq
    return fields


def _ack(type_: str, rid: int | None, message: Outgoing, fields: dict[str, Any]) -> bytes:
    extra: dict[str, Any] = {}
    if message.key is not None:
        extra["key"] = message.key
    if message.duplicate:
        extra["duplicate"] = True
    return encode(type_, rid=rid, **fields, **extra)


def _not_stored(rid: int | None, error: StoreError) -> bytes:
    return encode(
        "error",
        rid=rid,
        code="not_stored",
        text=f"the server could not store your message ({error}); it was not delivered",
    )
