"""``/history export FILE``: every stored message the user sent or received, as JSON Lines.

The messages are fetched page by page (the server bounds each page) through a
``fetch`` function the client core provides, and written to a temporary file
beside FILE that replaces it only once complete: FILE is never half written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..wire.protocol import Frame
from .events import message_event

__all__ = ["Fetch", "export_messages"]

Fetch = Callable[[str, dict[str, Any]], tuple[list[Frame], Frame]]
"""Send a request and return its rows and the frame that ended them."""


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
