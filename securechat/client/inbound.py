"""Frames from the server turned into events for the front end.

:class:`Inbound` applies each chat frame to the client's state
(:class:`~securechat.client.state.ChatState`) and reconnect bookkeeping
(:class:`~securechat.client.resync.Resync`) and hands the events to show to
``deliver``. It runs on the I/O thread and never blocks: ``deliver`` only
queues. Errors, file frames and request bookkeeping stay with the core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..wire.protocol import Frame
from .events import (
    Event,
    bans_event,
    done_event,
    event,
    forgotten_event,
    history_end_event,
    history_status_event,
    message_event,
    read_event,
    session_closed_event,
    sessions_event,
    stats_event,
    system_event,
    time_event,
    topic_event,
    unread_event,
)
from .resync import Resync
from .state import ChatState

__all__ = ["Inbound"]


class Inbound:
    """Chat frames to events; see the module docstring."""

    def __init__(
        self,
        *,
        state: ChatState,
        resync: Resync,
        deliver: Callable[[Event], None],
        connection: Callable[[], dict[str, Any]],
    ) -> None:
        self._state = state
        self._resync = resync
        self._deliver = deliver
        self._connection = connection
        """The ``connected`` event's fields other than ``user``."""

    def handle(self, frame: Frame) -> bool:
        """Apply ``frame`` and show what it says; frames of other types are ignored.

        True when the frame completes the login: a ``welcome`` listing our rooms
        (feature ``offline``), or the first ``joined``.
        """
        if frame.type == "welcome":
            return self._welcome(frame)
        handler = _HANDLERS.get(frame.type)
        if handler is not None:
            handler(self, frame)
        return frame.type == "joined"

    def _welcome(self, frame: Frame) -> bool:
        ready = self._state.welcome(frame)
        session, sessions = frame.get("session"), frame.get("sessions")
        self._deliver(
            event(
                "connected",
                user=self._state.user,
                **self._connection(),
                session=session if isinstance(session, int) else None,
                sessions=sessions if isinstance(sessions, int) else None,
            )
        )
        return ready

    def _joined(self, frame: Frame) -> None:
        gap_fill = self._resync.is_gap_fill(frame.int_field("rid", optional=True))
        shown = self._state.joined(frame, gap_fill=gap_fill)
        if shown is not None:
            self._deliver(shown)

    def _parted(self, frame: Frame) -> None:
        self._deliver(self._state.parted(frame))

    def _message(self, frame: Frame) -> None:
        if self._resync.first_showing(frame, self._state.user):
            self._deliver(message_event(frame))

    def _history_end(self, frame: Frame) -> None:
        if not self._resync.is_gap_fill(frame.int_field("rid", optional=True)):
            self._deliver(history_end_event(frame))

    def _list(self, frame: Frame) -> None:
        key = frame.type
        gathered = self._state.gather(frame, key)
        if gathered is None:
            return
        items, away = gathered
        if key == "bans":
            self._deliver(bans_event([b for b in items if isinstance(b, dict)]))
            return
        room = (frame.str_field("room", optional=True) or None) if key == "users" else None
        self._deliver(event(key, room=room, **{key: items}, away=away or None))

    def _nick(self, frame: Frame) -> None:
        self._resync.renamed(frame.str_field("old"), frame.str_field("new"))
        self._deliver(self._state.renamed(frame))

    def _read(self, frame: Frame) -> None:
        if frame.get("rid") is None:  # with a rid it only confirms our own marker
            self._deliver(read_event(frame))

    def _plain(self, frame: Frame) -> None:
        self._deliver(_PLAIN[frame.type](frame))


_PLAIN: dict[str, Callable[[Frame], Event]] = {
    "history_status": history_status_event,
    "forgotten": forgotten_event,
    "system": system_event,
    "topic": topic_event,
    "time": time_event,
    "sessions": sessions_event,
    "session_closed": session_closed_event,
    "unread": unread_event,
    "done": done_event,
    "stats": stats_event,
}

_HANDLERS: dict[str, Callable[[Inbound, Frame], None]] = {
    "joined": Inbound._joined,
    "parted": Inbound._parted,
    "message": Inbound._message,
    "private": Inbound._message,
    "history_end": Inbound._history_end,
    "users": Inbound._list,
    "rooms": Inbound._list,
    "bans": Inbound._list,
    "nick": Inbound._nick,
    "read": Inbound._read,
    **dict.fromkeys(_PLAIN, Inbound._plain),
}
