"""What the file-transfer events of the client core do to the
:class:`~securechat.ui.model.ChatModel` (see :mod:`securechat.ui.handlers`).

A transfer belongs to the conversation with the other party: its offer and
outcome are notices there, its progress one line updated in place, and its
number (the last digits of the server's id, as the core gives it) is the same
for sender and receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .buffers import Buffer, Line, LineKind, utc_now
from .status import Transfer

if TYPE_CHECKING:
    from .handlers import Outcome
    from .model import ChatModel

__all__ = ["FILE_EVENTS", "FILE_SYSTEM_EVENTS"]


def _files(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    items = [t for t in d.get("transfers", []) if isinstance(t, dict)]
    model.learn_transfers(items)
    if not items:
        model.notice(model.current, "no file transfers", "info")
    for item in items:
        arrow = "to" if item.get("direction") == "send" else "from"
        model.notice(
            model.current,
            f"transfer {item.get('id')}: {item.get('name')} {arrow} {item.get('peer')}, "
            f"{item.get('state')}, {item.get('bytes')} of {item.get('size')} bytes",
            "info",
        )


def _transfer(model: ChatModel, tid: Any) -> Transfer:
    key = tid if isinstance(tid, int) else 0
    return model.transfers.setdefault(key, Transfer(key))


def _transfer_buffer(model: ChatModel, transfer: Transfer) -> Buffer:
    return model.open_private(transfer.peer) if transfer.peer else model.server


def _file_offer(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.direction, transfer.peer = "receive", str(d.get("from", ""))
    transfer.name, transfer.size = str(d.get("name", "")), int(d.get("size") or 0)
    buffer = _transfer_buffer(model, transfer)
    model.add_line(buffer, Line("notice", utc_now(), str(d.get("text", ""))), unread=True)
    if buffer is not model.current:
        buffer.highlight += 1
    outcome.bell = True


def _file_offered(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.direction, transfer.peer = "send", str(d.get("to", transfer.peer))
    model.notice(_transfer_buffer(model, transfer), str(d.get("text", "")))


def _file_accepted(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.state = "moving"
    buffer = _transfer_buffer(model, transfer)
    model.notice(buffer, str(d.get("text", "")))
    _show_transfer(model, transfer, buffer)


def _file_progress(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.direction = str(d.get("direction") or transfer.direction)
    transfer.progress(int(d.get("bytes") or 0), int(d.get("size") or 0), now)
    _show_transfer(model, transfer, _transfer_buffer(model, transfer))


def _show_transfer(model: ChatModel, transfer: Transfer, buffer: Buffer) -> None:
    """Give ``transfer`` its one progress line, the first time it moves."""
    if not transfer.shown:
        transfer.shown = True
        model.add_line(buffer, Line("transfer", utc_now(), transfer=transfer.id))


def _file_end(model: ChatModel, d: dict[str, Any], state: str, kind: LineKind = "notice") -> None:
    transfer = _transfer(model, d.get("id"))
    transfer.state = state
    if state == "done":
        transfer.bytes = transfer.size = int(d.get("size") or transfer.size)
    model.notice(_transfer_buffer(model, transfer), str(d.get("text", "")), kind)


def _file_done(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "done")


def _file_rejected(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "rejected")


def _file_failed(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "failed", "error")


def _file_cancelled(model: ChatModel, d: dict[str, Any], outcome: Outcome, now: float) -> None:
    _file_end(model, d, "cancelled")


_Handler = Callable[["ChatModel", dict[str, Any], "Outcome", float], None]

FILE_EVENTS: dict[str, _Handler] = {
    "files": _files,
    "file_offer": _file_offer,
    "file_progress": _file_progress,
    "file_saved": _file_done,
    "file_sent": _file_done,
    "file_rejected": _file_rejected,
    "file_failed": _file_failed,
}
"""Handlers of the core's file events, by event type."""

FILE_SYSTEM_EVENTS: dict[str, _Handler] = {
    "file_offered": _file_offered,
    "file_accepted": _file_accepted,
    "file_accepting": _file_accepted,
    "file_rejected": _file_rejected,
    "file_cancelled": _file_cancelled,
}
"""Handlers of the file notices that come as ``system`` events, by their ``event``."""
