"""``/history export FILE``: every stored message the user sent or received, as JSON Lines.

The messages are fetched page by page (the server bounds each page) through a
``fetch`` function the client core provides, and written to a temporary file
beside FILE that replaces it only once complete: FILE is never half written.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ChatError, ConnectionLost
from ..wire.protocol import Frame
from .events import message_event

__all__ = ["Collector", "Fetch", "export_messages"]

Fetch = Callable[[str, dict[str, Any]], tuple[list[Frame], Frame]]
"""Send a request and return its rows and the frame that ended them."""


class Collector:
    """Answers gathered for a caller that waits for them, instead of shown as events.

    The I/O thread offers every frame with a rid (:meth:`offer`); those of a
    request being collected are kept until its ``history_end`` (or ``error``).
    Uses the client's condition, so a waiter also wakes when the client stops.
    """

    def __init__(self, lock: threading.Condition, *, stopped: Callable[[], bool]) -> None:
        self._lock = lock
        self._stopped = stopped
        self._rows: dict[int, list[Frame]] = {}
        self._ends: dict[int, Frame] = {}

    def start(self, rid: int) -> None:
        """Collect the answers to request ``rid`` (call before sending it)."""
        with self._lock:
            self._rows[rid] = []

    def offer(self, rid: int, frame: Frame) -> bool:
        """Keep ``frame`` if it answers a collected request; False if it is not ours."""
        with self._lock:
            if rid not in self._rows:
                return False
            if frame.type in ("history_end", "error"):
                self._ends[rid] = frame
                self._lock.notify_all()
            else:
                self._rows[rid].append(frame)
        return True

    def wait(self, rid: int, timeout: float) -> tuple[list[Frame], Frame]:
        """The rows and the end of request ``rid``; ConnectionLost without a complete
        answer in ``timeout`` seconds, ChatError if the server refused it."""
        with self._lock:
            self._lock.wait_for(lambda: rid in self._ends or self._stopped(), timeout)
            end = self._ends.pop(rid, None)
            rows = self._rows.pop(rid, [])
        if end is None:
            raise ConnectionLost("no complete answer from the server")
        if end.type == "error":
            raise ChatError(end.str_field("code"), end.str_field("text"))
        return rows, end

    def cancel(self, rid: int) -> None:
        """Stop collecting for ``rid`` (its request could not be sent)."""
        with self._lock:
            self._rows.pop(rid, None)
            self._ends.pop(rid, None)


def export_messages(fetch: Fetch, path: Path) -> int:
    """Write what ``fetch("export", ...)`` pages through to ``path``; returns the count."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=".jsonl")
    count, after = 0, 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            while True:
                rows, end = fetch("export", {"after": after})
                for frame in rows:
                    record = message_event(frame).as_dict()
                    record.pop("history", None)  # everything exported is history
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += len(rows)
                last = end.get("last")
                if not rows or not isinstance(last, int):
                    break
                after = last
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return count
