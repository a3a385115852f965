"""The server's log: one line per record, whatever the record carries, as text or JSON.

Names, quit reasons, room names and file names come from the network. A record is
formatted here, once for every logger, so that none of them can start a second line or
reorder one on a terminal: controls, U+2028/U+2029 and bidi controls are shown as
:func:`securechat.wire.sanitize.sanitize` shows them to a chat user (``^J``,
``<U+2028>``). A traceback keeps its lines for people to read, each indented, so a
line that does not start with whitespace is always the start of a record.

``--log-format json`` writes one JSON object per line (``time``, ``level``,
``logger``, ``message``, and ``exception`` if any) for log shippers; JSON's own
escaping keeps each object on one line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from ..wire.sanitize import sanitize

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "setup_logging"]

LOG_FORMATS = ("text", "json")


class TextFormatter(logging.Formatter):
    """``TIME LEVEL message`` with everything untrusted made visible, one line a record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line, its message sanitised."""
        record.message = sanitize(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        """The traceback, each of its lines sanitised and indented."""
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        """The stack, each of its lines sanitised and indented."""
        return _indented(stack_info)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object with its message sanitised."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": sanitize(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def setup_logging(*, level: str, log_format: str) -> None:
    """Send every record to stderr at ``level`` and above, in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _indented(text: str) -> str:
    return "\n".join("    " + sanitize(line) for line in text.splitlines())
