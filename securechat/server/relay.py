"""The server side of file transfer: offers, relayed chunks, flow control, outcomes.

Strategy
--------
Files move inside the chat connections: the sender's chunks (binary frame
bodies of at most ``FILE_CHUNK`` bytes) are relayed by the server to the
recipient as they arrive. The server never holds a file: it forwards each
chunk at once, as *bulk* traffic that the recipient's connection writes only
after any queued chat, and it enforces end-to-end flow control: the sender
may have at most ``FILE_WINDOW`` bytes that the recipient has not yet
acknowledged (``file_ack``). A slow recipient therefore slows the sender, and
the server's memory per transfer is bounded by the window.

Every chunk is checked: it must come from the offerer, for an accepted
transfer, at the next offset, within the offered size and the window. Any
violation aborts the transfer and both sides are told (``file_failed``).

The relay keeps no lock of its own: the hub calls it with its lock held.
Refusals about an existing transfer are answered here rather than by the hub,
so that the ``error`` frame carries the transfer's ``id`` as a field.
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..errors import ChatError, ProtocolError
from ..wire.names import UNSENDABLE_RE
from ..wire.protocol import FILE_WINDOW, Frame, encode
from .sessions import Session

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "MAX_OFFERS",
    "MAX_TRANSFERS",
    "FileRelay",
    "Transfer",
]

DEFAULT_MAX_FILE_SIZE = 1024**3
"""Offers above this are refused up front (``--max-file-size``)."""

MAX_TRANSFERS = 4
"""Accepted (moving) transfers per recipient; with the window, this bounds queued bulk data."""

MAX_OFFERS = 8
"""Unanswered offers one user may have out at a time, so nobody can flood another with offers."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MAX_NAME_CHARS = 255


class _State(Enum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DONE = "done"  # all bytes relayed; waiting for the recipient's verdict


@dataclass(eq=False)
class Transfer:
    """One file on its way from ``sender`` to ``recipient``."""

    id: int
    sender: Session
    recipient: Session
    name: str
    size: int
    sha256: str
    state: _State = _State.OFFERED
    start: int = 0  # resume point the recipient asked for
    sent: int = 0  # absolute offset of the next byte expected from the sender
    acked: int = 0  # absolute offset the recipient has written


class FileRelay:
    """All transfers of one server. Call with the hub's lock held."""

    def __init__(self, *, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> None:
        self.max_file_size = max_file_size
        self._transfers: dict[int, Transfer] = {}
        # Chunks still in flight when a transfer ends are dropped quietly, not
        # answered with one error each.
        self._ended: deque[int] = deque(maxlen=256)

    def offer(self, sender: Session, recipient: Session, frame: Frame, rid: int | None) -> None:
        """A user offers a file to another (online) user."""
        name = frame.str_field("name")
        size = frame.int_field("size")
        sha256 = frame.str_field("sha256")
        if not name or len(name) > _MAX_NAME_CHARS or UNSENDABLE_RE.search(name):
            raise ChatError("bad_file", "file names are 1-255 characters without control codes")
        if not _SHA256_RE.fullmatch(sha256):
            raise ProtocolError("'sha256' must be 64 lowercase hex digits")
        assert size is not None
        if size < 0:
            raise ProtocolError("'size' must not be negative")
        if size > self.max_file_size:
            raise ChatError(
                "too_large",
                f"{name} is {size} bytes; this server accepts files up to "
                f"{self.max_file_size} bytes",
            )
        if recipient is sender:
            raise ChatError("bad_file", "you cannot send a file to yourself")
        pending = sum(
            1 for t in self._transfers.values() if t.sender is sender and t.state is _State.OFFERED
        )
        if pending >= MAX_OFFERS:
            raise ChatError(
                "busy", f"you have {pending} offers nobody answered yet; /cancel some first"
            )
        transfer = Transfer(self._new_id(), sender, recipient, name, size, sha256)
        self._transfers[transfer.id] = transfer
        recipient.send(
            encode(
                "file_offer",
                id=transfer.id,
                name=name,
                size=size,
                sha256=sha256,
                **{"from": sender.name},
            )
        )
        sender.send(
            encode("file_offered", rid=rid, id=transfer.id, to=recipient.name, name=name, size=size)
        )

    def accept(self, party: Session, frame: Frame, rid: int | None) -> None:
        """The recipient accepts, from ``offset`` (the bytes it already has) on."""
        transfer = self._own(party, frame, as_recipient=True)
        if transfer is None:
            return
        offset = frame.int_field("offset", optional=True) or 0
        if transfer.state is not _State.OFFERED:
            raise ChatError("bad_transfer", f"transfer {transfer.id} was already accepted")
        if not 0 <= offset <= transfer.size:
            raise ProtocolError(f"'offset' must be between 0 and {transfer.size}")
        moving = sum(
            1
            for t in self._transfers.values()
            if t.recipient is party and t.state is not _State.OFFERED
        )
        if moving >= MAX_TRANSFERS:
            raise ChatError(
                "busy", f"you are receiving {moving} files already; accept this one afterwards"
            )
        transfer.state = _State.ACCEPTED
        transfer.start = transfer.sent = transfer.acked = offset
        transfer.sender.send(encode("file_accepted", id=transfer.id, offset=offset, by=party.name))
        party.send(encode("ok", rid=rid))

    def reject(self, party: Session, frame: Frame, rid: int | None) -> None:
        """The recipient declines an offer."""
        transfer = self._own(party, frame, as_recipient=True)
        if transfer is None:
            return
        if transfer.state is not _State.OFFERED:
            raise ChatError("bad_transfer", f"transfer {transfer.id} is under way: /cancel it")
        self._end(transfer)
        transfer.sender.send(encode("file_rejected", id=transfer.id, by=party.name))
        party.send(encode("ok", rid=rid))

    def cancel(self, party: Session, frame: Frame, rid: int | None) -> None:
        """Either side stops a transfer."""
        transfer = self._find(frame)
        if transfer is None:
            party.send(encode("ok", rid=rid))  # already over: nothing left to stop
            return
        if party is not transfer.sender and party is not transfer.recipient:
            raise ChatError("no_such_transfer", f"there is no transfer {transfer.id} of yours")
        self._fail(transfer, f"cancelled by {party.name}")
        party.send(encode("ok", rid=rid))

    def chunk(self, party: Session, frame: Frame) -> None:
        """Relay one chunk of file data, after checking everything about it."""
        tid = frame.int_field("id") or 0
        transfer = self._transfers.get(tid)
        if transfer is None:
            if tid in self._ended:
                return
            raise ChatError("no_such_transfer", f"chunk for unknown transfer {tid}")
        data = frame.body
        offset = frame.int_field("offset")
        problem = None
        if party is not transfer.sender:
            problem = f"{party.name} sent data for a transfer that is not theirs"
        elif transfer.state is not _State.ACCEPTED:
            problem = "data before the offer was accepted, or after the end"
        elif offset != transfer.sent:
            problem = f"chunk at offset {offset}, expected {transfer.sent}"
        elif not data or transfer.sent + len(data) > transfer.size:
            problem = f"more bytes than the {transfer.size} offered"
        elif transfer.sent + len(data) - transfer.acked > FILE_WINDOW:
            problem = "the sender ignored flow control"
        if problem is not None:
            self._fail(transfer, problem)
            raise ChatError("bad_transfer", f"transfer {transfer.id} aborted: {problem}")
        transfer.sent += len(data)
        transfer.recipient.send(
            encode("file_chunk", data, id=transfer.id, offset=offset), bulk=True
        )

    def ack(self, party: Session, frame: Frame) -> None:
        """The recipient has written everything up to ``bytes``: open the sender's window."""
        transfer = self._own(party, frame, as_recipient=True)
        if transfer is None:
            return
        written = frame.int_field("bytes") or 0
        if not transfer.acked <= written <= transfer.sent:
            self._fail(transfer, "the recipient acknowledged bytes it was never sent")
            return
        transfer.acked = written
        transfer.sender.send(encode("file_ack", id=transfer.id, bytes=written))

    def done(self, party: Session, frame: Frame) -> None:
        """The sender has sent every byte."""
        transfer = self._own(party, frame, as_recipient=False)
        if transfer is None:
            return
        if transfer.state is not _State.ACCEPTED or transfer.sent != transfer.size:
            self._fail(transfer, f"ended after {transfer.sent} of {transfer.size} bytes")
            return
        transfer.state = _State.DONE
        # In the bulk lane, behind the last chunks it announces.
        transfer.recipient.send(encode("file_done", id=transfer.id), bulk=True)

    def result(self, party: Session, frame: Frame) -> None:
        """The recipient's verdict: saved (hash matched) or failed, with a reason."""
        ok = frame.get("ok")
        if not isinstance(ok, bool):
            # Reading a missing verdict as failure would blame the file for a broken client.
            raise ProtocolError("'file_result' needs a boolean 'ok'")
        reason = UNSENDABLE_RE.sub("", frame.str_field("reason", optional=True))[:300]
        transfer = self._own(party, frame, as_recipient=True)
        if transfer is None:
            return
        self._end(transfer)
        if ok and transfer.state is not _State.DONE:
            # Success is only possible once every byte went through us.
            ok, reason = False, "the recipient claimed success before the file was complete"
        fields: dict[str, Any] = {"id": transfer.id, "ok": ok, "by": party.name}
        if not ok:
            fields["reason"] = reason or "the recipient could not save the file"
        transfer.sender.send(encode("file_result", **fields))

    def drop(self, party: Session, reason: str | None = None) -> None:
        """``party`` disconnected (or became unreachable, for ``reason``): fail its
        transfers and tell the other sides; the recipient's partial file stays resumable."""
        why = reason or f"{party.name} disconnected"
        for transfer in list(self._transfers.values()):
            if party is transfer.sender:
                self._fail(transfer, why, tell=transfer.recipient)
            elif party is transfer.recipient:
                self._fail(transfer, why, tell=transfer.sender)

    def _end(self, transfer: Transfer) -> None:
        self._transfers.pop(transfer.id, None)
        self._ended.append(transfer.id)

    def _fail(self, transfer: Transfer, reason: str, *, tell: Session | None = None) -> None:
        self._end(transfer)
        # A disconnect leaves the recipient's partial file resumable; anything else does not.
        failed = encode(
            "file_failed", id=transfer.id, reason=reason, resumable=True if tell else None
        )
        for side in (tell,) if tell is not None else (transfer.sender, transfer.recipient):
            if side is not None:
                side.send(failed)

    def _new_id(self) -> int:
        # Unguessable, so nobody but the two parties can address a transfer (a
        # stray chunk aborts it); below 2**53 so every JSON parser keeps it exact.
        while (tid := secrets.randbelow(2**53 - 1) + 1) in self._transfers:
            pass
        return tid

    def _find(self, frame: Frame) -> Transfer | None:
        """The transfer named by ``id``; None for one that ended a moment ago (frames
        that crossed its end are dropped quietly); ChatError for an unknown one."""
        tid = frame.int_field("id") or 0
        transfer = self._transfers.get(tid)
        if transfer is None and tid not in self._ended:
            raise ChatError("no_such_transfer", f"there is no transfer {tid}: /files lists them")
        return transfer

    def _own(self, party: Session, frame: Frame, *, as_recipient: bool) -> Transfer | None:
        transfer = self._find(frame)
        if transfer is None:
            return None
        owner = transfer.recipient if as_recipient else transfer.sender
        if party is not owner:
            raise ChatError("no_such_transfer", f"there is no transfer {transfer.id} of yours")
        return transfer
