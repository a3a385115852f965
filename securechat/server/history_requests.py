"""Request handlers for stored history: paging, search, export, opt-out and erasure.

Like every handler they run under the hub's lock and never block: they
decide what the user may read, then hand the query to the streamer (reads)
or the writer (changes, in order with messages).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ChatError, ProtocolError, StoreError
from ..store.base import StoredMessage
from ..wire.names import check_user_name
from ..wire.protocol import Frame, encode
from .chat import find_user, member_room
from .hub import Hub, error_frame
from .sessions import Session
from .streamer import EXPORT_PAGE, MAX_HISTORY, MAX_SEARCH

__all__ = ["HANDLERS"]

_DEFAULT_PAGE = 50


def history(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """A page of a room's or a private conversation's history."""
    before = frame.int_field("before", optional=True)
    after = frame.int_field("after", optional=True)
    after_seq = frame.int_field("after_seq", optional=True)
    limit = frame.int_field("limit", optional=True)
    limit = _DEFAULT_PAGE if limit is None else limit
    if limit < 1:
        raise ChatError("usage", "the number of messages must be at least 1")
    limit = min(limit, MAX_HISTORY)
    room_name, user = frame.get("room"), frame.get("user")
    query: Callable[[], list[StoredMessage]]
    end: dict[str, Any]
    if isinstance(room_name, str) and user is None:
        room = member_room(hub, session, room_name)
        key = room.key

        def query() -> list[StoredMessage]:
            return hub.store.room_history(
                key, before=before, after=after, after_seq=after_seq, limit=limit
            )

        end = {"room": room.name}
    elif isinstance(user, str) and room_name is None:
        other = find_user(hub, check_user_name(user))
        me = session.account_id

        def query() -> list[StoredMessage]:
            return hub.store.private_history(
                me, other.id, before=before, after=after, after_seq=after_seq, limit=limit
            )

        end = {"user": other.name}
    else:
        raise ProtocolError("a history request names exactly one of 'room' or 'user'")
    hub.streamer.answer(session, rid, query, end=end)


def search(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """The user's visible messages containing every word, newest first."""
    words = frame.str_field("text").split()
    if not words:
        raise ChatError("usage", "usage: /history search WORDS")
    if len(words) > 16 or any(len(w) > 100 for w in words):
        raise ChatError("usage", "search for at most 16 words of at most 100 characters")
    me = session.account_id
    rooms = [room.key for room in hub.rooms.of(me)]

    def query() -> list[StoredMessage]:
        return hub.store.search(me, rooms, words, limit=MAX_SEARCH)

    def after_indexing(start: Callable[[], None]) -> None:
        # The writer indexes everything acknowledged so far, then the query runs
        # on the reader pool: a search finds every message answered before it.
        def _index() -> None:
            hub.writer.index_now()
            start()

        hub.writer.run_in_order(_index)

    hub.streamer.answer(
        session, rid, query, end={"search": " ".join(words)}, mark="search", via=after_indexing
    )


def export(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """One page of everything the user sent or received."""
    after = frame.int_field("after", optional=True) or 0
    me = session.account_id
    rooms = [room.key for room in hub.rooms.of(me)]

    def query() -> list[StoredMessage]:
        return hub.store.export_page(me, rooms, after=after, limit=EXPORT_PAGE)

    hub.streamer.answer(session, rid, query, end={"export": True}, mark="export")


def history_mode(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Opt in or out of storage; it applies to the next message already."""
    identity = session.identity
    assert identity is not None
    keep = frame.get("keep")
    if not isinstance(keep, bool):
        raise ProtocolError("'history_mode' needs a boolean 'keep'")
    identity.keep_history = keep
    hub.persist(hub.store.set_keep_history, identity.id, keep)
    if hub.cluster is not None:
        hub.cluster.publish("keep", account=identity.id, keep=keep)
    history_status(hub, session, frame, rid)


def history_status(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """What is stored about the user, counted on the reader pool."""
    identity = session.identity
    assert identity is not None
    keep = identity.keep_history
    notice = hub.storage_notice(identity)

    def _count_and_answer() -> None:
        try:
            stored = hub.store.sent_count(identity.id)
        except StoreError as exc:
            session.send(error_frame(ChatError("unavailable", f"cannot count: {exc}"), rid))
            return
        sent = "1 message you sent is" if stored == 1 else f"{stored} messages you sent are"
        session.send(
            encode(
                "history_status",
                rid=rid,
                keep=keep,
                stored=stored,
                retention_days=hub.retention_days,
                text=f"{notice}; {sent} stored",
            )
        )

    # In order after any change of setting the writer still has queued.
    hub.writer.run_in_order(lambda: hub.streamer.run(_count_and_answer))


def forget(hub: Hub, session: Session, frame: Frame, rid: int | None) -> None:
    """Erase every stored message the user sent before asking."""
    account_id = session.account_id

    def _erase() -> None:
        # On the writer thread: after every message this user already sent.
        try:
            count = hub.writer.forget_sender(account_id)
        except StoreError as exc:
            session.send(error_frame(ChatError("unavailable", f"could not erase: {exc}"), rid))
            return
        session.send(
            encode(
                "forgotten",
                rid=rid,
                count=count,
                text=f"erased {count} messages you sent, from history and search",
            )
        )

    hub.writer.run_in_order(_erase)


HANDLERS: dict[str, Any] = {
    "history": history,
    "search": search,
    "export": export,
    "history_mode": history_mode,
    "history_status": history_status,
    "forget": forget,
}
