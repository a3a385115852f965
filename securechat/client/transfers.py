"""The client side of file transfer: offering, uploading, receiving, verifying.

Uploads run on a thread of their own per transfer, reading the file in
``FILE_CHUNK`` pieces and never having more than ``FILE_WINDOW`` bytes that
the recipient has not acknowledged; chunks are queued as bulk traffic, so
anything typed meanwhile is sent before the next chunk. Downloads are written
by :class:`~securechat.client.downloads.Download`, which owns every filesystem rule
(sanitised names, no overwriting, no symlinks, SHA-256 verified before the
file appears under its name).

This module knows nothing of sockets or TLS: it is given a ``send`` function
(frame bytes, bulk flag) and an ``emit`` function for events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ChatError, ConnectionLost
from ..wire.protocol import FILE_CHUNK, FILE_WINDOW, Frame, encode
from .downloads import Download, DownloadError
from .fileinfo import file_digest, format_size
from .transfer_numbers import TransferNumbers

__all__ = ["Transfers"]

_PROGRESS_EVERY = 1.0  # seconds between file_progress events of one transfer
_STALL_TIMEOUT = 60.0  # an upload waiting this long for acknowledgements gives up


@dataclass(eq=False)
class _Upload:
    id: int
    to: str
    path: Path
    name: str
    size: int
    sha256: str
    state: str = "offered"  # offered, sending, sent, failed
    acked: int = 0
    last_progress: float = 0.0


@dataclass(eq=False)
class _Download:
    id: int
    sender: str
    name: str
    size: int
    sha256: str
    state: str = "offered"  # offered, receiving, failed
    download: Download | None = None
    received: int = 0
    last_progress: float = 0.0


Send = Callable[[bytes, bool], None]
Emit = Callable[..., None]


class Transfers:
    """Every transfer of one client, in both directions. Thread-safe."""

    def __init__(self, *, download_dir: Path, send: Send, emit: Emit) -> None:
        self._download_dir = download_dir
        self._send = send
        self._emit = emit
        self._lock = threading.Condition()
        self._offering: dict[int, _Upload] = {}  # by request id, until the server numbers it
        self._accepting: dict[int, int] = {}  # request id of a file_accept -> transfer id
        self._numbers = TransferNumbers()
        self._uploads: dict[int, _Upload] = {}
        self._downloads: dict[int, _Download] = {}

    # -- what the user asks for ----------------------------------------------------------

    def offer(self, to: str, path: Path, request: Callable[[str, dict[str, Any]], int]) -> None:
        """Hash ``path`` and offer it to ``to``."""
        try:
            if not path.is_file():
                raise ChatError("file", f"{path} is not a readable file")
            size, sha256 = file_digest(path)
        except OSError as exc:
            raise ChatError("file", f"cannot read {path}: {exc.strerror or exc}") from exc
        upload = _Upload(0, to, path, path.name, size, sha256)
        fields = {"to": to, "name": upload.name, "size": size, "sha256": sha256}
        with self._lock:
            rid = request("file_offer", fields)
            self._offering[rid] = upload

    def accept(self, handle: int, request: Callable[[str, dict[str, Any]], int]) -> None:
        """Start receiving offer ``handle``: open the download, then send ``file_accept``."""
        with self._lock:
            tid = self._numbers.server_id(handle)
            item = self._downloads.get(tid)
            if item is None or item.state != "offered":
                raise ChatError("no_such_transfer", f"no pending offer {handle}: /files lists them")
            item.state = "opening"
        # Outside the lock: resuming hashes the partial file, which may take a while.
        try:
            download = Download.start(
                self._download_dir, name=item.name, size=item.size, sha256=item.sha256
            )
        except DownloadError as exc:
            with self._lock:
                item.state = "offered"
            raise ChatError("file", f"cannot receive {item.name}: {exc.reason}") from exc
        with self._lock:
            item.download = download
            item.state = "receiving"
            item.received = download.offset
            # Recorded under the lock that refused() takes, so a refusal arriving
            # before request() returns still finds it.
            rid = request("file_accept", {"id": tid, "offset": item.received})
            self._accepting[rid] = tid
        resumed = f", resuming at byte {item.received}" if item.received else ""
        self._emit(
            "system",
            event="file_accepting",
            id=self._numbers.number(tid),
            text=f"receiving {item.name} from {item.sender}{resumed}",
        )

    def forget_offer(self, handle: int) -> int:
        """The user rejected offer ``handle``; its server id, to tell the server."""
        with self._lock:
            tid = self._numbers.server_id(handle)
            item = self._downloads.get(tid)
            if item is None or item.state != "offered":
                raise ChatError("no_such_transfer", f"no pending offer {handle}: /files lists them")
            del self._downloads[tid]
        self._emit("system", event="file_rejected", id=handle, text=f"rejected {item.name}")
        return tid

    def cancel(self, handle: int) -> int:
        """Stop transfer ``handle`` on our side; its server id, to tell the server."""
        with self._lock:
            tid = self._numbers.server_id(handle)
            upload, item = self._uploads.get(tid), self._downloads.get(tid)
            if upload is None and item is None:
                raise ChatError("no_such_transfer", f"no transfer {handle}: /files lists them")
            self._end(tid, keep_partial=False)
        name = upload.name if upload is not None else item.name if item is not None else ""
        self._emit("system", event="file_cancelled", id=handle, text=f"cancelled {name}")
        return tid

    def refused(self, rid: int) -> None:
        """The server refused request ``rid``: forget the offer it made, or take back
        the acceptance (the offer stays pending, its partial file kept)."""
        with self._lock:
            self._offering.pop(rid, None)
            tid = self._accepting.pop(rid, None)
            item = self._downloads.get(tid) if tid is not None else None
            if item is not None and item.state == "receiving":
                if item.download is not None:
                    item.download.abort(keep_partial=True)
                item.download = None
                item.state = "offered"
            self._lock.notify_all()

    def listing(self) -> list[dict[str, Any]]:
        """Pending and active transfers, for /files."""
        with self._lock:
            items = [
                {
                    "id": self._numbers.number(u.id),
                    "direction": "send",
                    "peer": u.to,
                    "name": u.name,
                    "size": u.size,
                    "bytes": u.acked,
                    "state": u.state,
                }
                for u in self._uploads.values()
            ] + [
                {
                    "id": self._numbers.number(d.id),
                    "direction": "receive",
                    "peer": d.sender,
                    "name": d.name,
                    "size": d.size,
                    "bytes": d.received,
                    "state": d.state,
                }
                for d in self._downloads.values()
            ]
        return sorted(items, key=lambda item: int(item["id"]))

    def wait_idle(self, timeout: float = _STALL_TIMEOUT) -> bool:
        """Wait while uploads or downloads are moving; False if one stalls for ``timeout``."""
        with self._lock:
            while self._busy():
                if not self._lock.wait(timeout):
                    return False
            return True

    def _busy(self) -> bool:
        # Offers we made count: a script that offers a file and ends its input
        # still wants the file to go once the recipient accepts.
        return (
            any(u.state in ("offered", "sending") for u in self._uploads.values())
            or any(d.state in ("opening", "receiving") for d in self._downloads.values())
            or bool(self._offering)
        )

    # -- frames from the server (I/O thread) -----------------------------------------------

    def handle(self, frame: Frame) -> None:
        """Act on one ``file_*`` frame."""
        handler = _HANDLERS.get(frame.type)
        if handler is not None:
            handler(self, frame)

    def connection_lost(self) -> None:
        """Everything in flight failed; partial downloads are kept for a resume."""
        with self._lock:
            ids = list(self._uploads) + list(self._downloads)
            self._offering.clear()
        for tid in ids:
            self._fail(
                tid,
                "connection lost; /sendfile the same file again to resume",
                keep_partial=True,
                tell_server=False,
            )

    def _on_offered(self, frame: Frame) -> None:
        with self._lock:
            upload = self._offering.pop(frame.int_field("rid") or 0, None)
            if upload is None:
                return
            upload.id = frame.int_field("id") or 0
            self._uploads[upload.id] = upload
        self._emit(
            "system",
            event="file_offered",
            id=self._numbers.number(upload.id),
            to=upload.to,
            text=f"offered {upload.name} ({format_size(upload.size)}) to {upload.to} as transfer "
            f"{self._numbers.number(upload.id)}; waiting for them to accept",
        )

    def _on_offer(self, frame: Frame) -> None:
        tid = frame.int_field("id") or 0
        item = _Download(
            tid,
            frame.str_field("from"),
            frame.str_field("name"),
            frame.int_field("size") or 0,
            frame.str_field("sha256"),
        )
        with self._lock:
            self._downloads[tid] = item
        self._emit(
            "file_offer",
            id=self._numbers.number(tid),
            name=item.name,
            size=item.size,
            sha256=item.sha256,
            text=f"{item.sender} offers {item.name} ({format_size(item.size)}): "
            f"/accept {self._numbers.number(tid)} or /reject {self._numbers.number(tid)}",
            **{"from": item.sender},
        )

    def _on_accepted(self, frame: Frame) -> None:
        tid = frame.int_field("id") or 0
        offset = frame.int_field("offset") or 0
        with self._lock:
            upload = self._uploads.get(tid)
            if upload is None or upload.state != "offered":
                return
            upload.state = "sending"
            upload.acked = offset
        resumed = f" from byte {offset}" if offset else ""
        self._emit(
            "system",
            event="file_accepted",
            id=self._numbers.number(tid),
            text=f"{upload.to} accepted {upload.name}; sending{resumed}",
        )
        threading.Thread(
            target=self._upload, args=(upload, offset), name=f"upload-{tid}", daemon=True
        ).start()

    def _upload(self, upload: _Upload, offset: int) -> None:
        """Runs on the transfer's own thread: read, wait for window, queue chunks."""
        try:
            with upload.path.open("rb") as fh:
                fh.seek(offset)
                position = offset
                while position < upload.size:
                    in_flight_limit = position - FILE_WINDOW
                    with self._lock:
                        opened = self._lock.wait_for(
                            lambda: upload.state != "sending" or upload.acked > in_flight_limit,  # noqa: B023 - waited on at once
                            _STALL_TIMEOUT,
                        )
                        if upload.state != "sending":
                            return
                    if not opened:
                        self._fail(upload.id, "the recipient stopped acknowledging data")
                        return
                    data = fh.read(min(FILE_CHUNK, upload.size - position))
                    if not data:
                        self._fail(upload.id, f"{upload.path} shrank while being sent")
                        return
                    self._send(encode("file_chunk", data, id=upload.id, offset=position), True)
                    position += len(data)
            self._send(encode("file_done", id=upload.id), True)
        except ConnectionLost:
            return
        except OSError as exc:
            self._fail(upload.id, f"cannot read {upload.path}: {exc.strerror or exc}")

    def _on_ack(self, frame: Frame) -> None:
        tid = frame.int_field("id") or 0
        with self._lock:
            upload = self._uploads.get(tid)
            if upload is None:
                return
            upload.acked = frame.int_field("bytes") or 0
            self._lock.notify_all()
            due = self._progress_due(upload)
        if due:
            self._progress(tid, upload.acked, upload.size, "send")

    def _on_chunk(self, frame: Frame) -> None:
        tid = frame.int_field("id") or 0
        with self._lock:
            item = self._downloads.get(tid)
            download = item.download if item is not None else None
        if item is None or download is None or item.state != "receiving":
            return  # a chunk still in flight after we ended the transfer
        try:
            download.write(frame.int_field("offset") or 0, frame.body)
        except DownloadError as exc:
            self._fail(tid, exc.reason, verdict=True)
            return
        with self._lock:
            item.received = (frame.int_field("offset") or 0) + len(frame.body)
            self._lock.notify_all()  # progress: wait_idle's stall timer starts over
            due = self._progress_due(item)
        self._send(encode("file_ack", id=tid, bytes=item.received), False)
        if due:
            self._progress(tid, item.received, item.size, "receive")

    def _on_done(self, frame: Frame) -> None:
        tid = frame.int_field("id") or 0
        with self._lock:
            item = self._downloads.get(tid)
        if item is None or item.download is None:
            return
        try:
            path = item.download.finish()
        except DownloadError as exc:
            self._fail(tid, exc.reason, verdict=True)
            return
        with self._lock:
            self._end(tid, keep_partial=True)  # finished: nothing partial is left to keep
        self._send(encode("file_result", id=tid, ok=True), False)
        self._emit(
            "file_saved",
            id=self._numbers.number(tid),
            path=str(path),
            **{"from": item.sender},
            size=item.size,
            sha256=item.sha256,
            text=f"saved {item.name} from {item.sender} as {path} (SHA-256 verified)",
        )

    def _on_result(self, frame: Frame) -> None:
        tid = frame.int_field("id") or 0
        with self._lock:
            upload = self._uploads.pop(tid, None)
            self._lock.notify_all()
        if upload is None:
            return
        if frame.get("ok") is True:
            upload.state = "sent"
            self._emit(
                "file_sent",
                id=self._numbers.number(tid),
                to=upload.to,
                text=f"{upload.name} arrived intact at {upload.to}",
            )
        else:
            reason = frame.str_field("reason", optional=True) or "the recipient could not save it"
            self._emit(
                "file_failed",
                id=self._numbers.number(tid),
                reason=reason,
                text=f"transfer {self._numbers.number(tid)} failed: {reason}",
            )

    def _on_rejected(self, frame: Frame) -> None:
        tid = frame.int_field("id") or 0
        with self._lock:
            upload = self._uploads.pop(tid, None)
        if upload is not None:
            by = frame.str_field("by")
            number = self._numbers.number(tid)
            text = f"{by} rejected {upload.name}"
            self._emit("file_rejected", id=number, by=by, text=text)

    def _on_failed(self, frame: Frame) -> None:
        reason = frame.str_field("reason", optional=True) or "failed"
        keep = frame.get("resumable") is True
        self._fail(
            frame.int_field("id") or 0,
            reason,
            keep_partial=keep,
            tell_server=False,
            resumable=keep,
        )

    # -- helpers ----------------------------------------------------------------------------

    def _fail(
        self,
        tid: int,
        reason: str,
        *,
        keep_partial: bool = False,
        verdict: bool = False,
        tell_server: bool = True,
        resumable: bool = False,
    ) -> None:
        """End ``tid`` as failed, tell the user, and (unless the server told us) the server."""
        with self._lock:
            known = tid in self._uploads or tid in self._downloads
            self._end(tid, keep_partial=keep_partial)
        if not known:
            return
        if tell_server:
            try:
                if verdict:
                    self._send(encode("file_result", id=tid, ok=False, reason=reason), False)
                else:
                    self._send(encode("file_cancel", id=tid), False)
            except ConnectionLost:
                pass
        self._emit(
            "file_failed",
            id=self._numbers.number(tid),
            reason=reason,
            resumable=True if resumable else None,
            text=f"transfer {self._numbers.number(tid)} failed: {reason}",
        )

    def _end(self, tid: int, *, keep_partial: bool) -> None:
        """Forget ``tid`` (lock held); stops its upload thread and closes its download."""
        upload = self._uploads.pop(tid, None)
        if upload is not None:
            upload.state = "failed"
        item = self._downloads.pop(tid, None)
        if item is not None and item.download is not None:
            item.download.abort(keep_partial=keep_partial)
        for rid in [r for r, t in self._accepting.items() if t == tid]:
            del self._accepting[rid]
        self._lock.notify_all()

    def _progress_due(self, item: _Upload | _Download) -> bool:
        now = time.monotonic()
        if now - item.last_progress < _PROGRESS_EVERY:
            return False
        item.last_progress = now
        return True

    def _progress(self, tid: int, done: int, size: int, direction: str) -> None:
        percent = 100 * done // size if size else 100
        self._emit(
            "file_progress",
            id=self._numbers.number(tid),
            bytes=done,
            size=size,
            direction=direction,
            text=f"transfer {self._numbers.number(tid)}: {percent}% "
            f"({format_size(done)} of {format_size(size)})",
        )


_HANDLERS: dict[str, Callable[[Transfers, Frame], None]] = {
    "file_offered": Transfers._on_offered,
    "file_offer": Transfers._on_offer,
    "file_accepted": Transfers._on_accepted,
    "file_ack": Transfers._on_ack,
    "file_chunk": Transfers._on_chunk,
    "file_done": Transfers._on_done,
    "file_result": Transfers._on_result,
    "file_rejected": Transfers._on_rejected,
    "file_failed": Transfers._on_failed,
}
