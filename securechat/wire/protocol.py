"""The securechat wire codec: bytes in, frames out.

Strategy
--------
A frame is an 8-byte prefix, a JSON header and an optional raw body::

    version:u8  flags:u8  header_len:u16  body_len:u32  header[header_len]  body[body_len]

All integers are big-endian. The header is a UTF-8 JSON object whose ``type``
member names the frame; the body carries raw bytes (file chunks) and is usually
empty. Both lengths are checked against their limits as soon as the prefix is
complete, before a single byte of header or body is buffered, so a peer cannot
make us hold more than ``PREFIX.size + MAX_HEADER + MAX_BODY`` bytes per frame.

This module imports no socket, ssl, threading or time: it is fed bytes and hands
back :class:`Frame` objects, so every reader is testable byte by byte. Anything
malformed raises :class:`~securechat.errors.ProtocolError` and nothing else.
See docs/protocol.md for the frame catalogue.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import FrameTooLarge, ProtocolError

__all__ = [
    "DEFAULT_PORT",
    "FILE_CHUNK",
    "FILE_WINDOW",
    "INT_MAX",
    "INT_MIN",
    "MAX_BODY",
    "MAX_HEADER",
    "PREFIX",
    "PROTOCOL_VERSION",
    "Decoder",
    "Frame",
    "encode",
    "encode_frame",
]

PROTOCOL_VERSION = 1
"""Bumped on any change a version-1 peer could not parse; see docs/protocol.md."""

PREFIX = struct.Struct("!BBHI")

MAX_HEADER = 16 * 1024
"""A header holds one chat message (4,000 characters, at most 16,000 UTF-8 bytes
once control characters are refused) plus its envelope; nothing legitimate is larger."""

MAX_BODY = 64 * 1024
"""One file chunk. Small enough that a chunk never delays chat by more than
~1 ms on the wire, large enough that per-frame overhead stays under 0.1 %."""

DEFAULT_PORT = 7443
"""The port securechat listens on unless told otherwise."""

FILE_CHUNK = MAX_BODY
"""Bytes of file data per chunk frame (the protocol's body limit)."""

FILE_WINDOW = 16 * FILE_CHUNK
"""Unacknowledged bytes a sender may have in flight: 1 MiB keeps loopback and LAN
links full while a recipient's queue never holds more than this per transfer."""

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""The range of integer fields: what a signed 64-bit integer (and SQLite) holds."""

_TYPE_RE = re.compile(r"[a-z][a-z_]{0,31}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True, slots=True)
class Frame:
    """One protocol frame: its ``type``, the other header ``fields`` and a raw ``body``."""

    type: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    body: bytes = b""

    def get(self, key: str, default: Any = None) -> Any:
        """The header field ``key``, or ``default`` when absent."""
        return self.fields.get(key, default)

    def str_field(self, key: str, *, optional: bool = False) -> str:
        """Header field ``key`` as a string; ProtocolError if missing or not a string.

        With ``optional=True`` a missing field reads as the empty string.
        """
        value = self.fields.get(key)
        if value is None and optional:
            return ""
        if not isinstance(value, str):
            raise ProtocolError(f"{self.type!r} frame needs a string field {key!r}")
        return value

    def int_field(self, key: str, *, optional: bool = False) -> int | None:
        """Header field ``key`` as an integer (never a bool); ProtocolError if malformed.

        Integers outside the signed 64-bit range are malformed too: nothing in the
        protocol needs them, and the store could not take them. With
        ``optional=True`` a missing field reads as None.
        """
        value = self.fields.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError(f"{self.type!r} frame needs an integer field {key!r}")
        if not INT_MIN <= value <= INT_MAX:
            raise ProtocolError(f"{self.type!r} field {key!r} is outside the 64-bit integer range")
        return value


# One encoder for every frame: json.dumps with options builds a new one per call,
# which was the largest single cost of encoding a chat message. allow_nan=False:
# NaN and Infinity are not JSON, and our own decoder refuses them.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# Types seen valid before skip the regex; only encode() adds to it, so the set stays
# as small as the protocol, whatever peers send.
_valid_types: set[str] = set()


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of ``frame``. Raises FrameTooLarge if a part is over its limit.

    Fields whose value is None are left out: absent and null mean the same.
    """
    return encode(frame.type, frame.body, **frame.fields)


def encode(type_: str, body: bytes = b"", /, **fields: Any) -> bytes:
    """The wire bytes of a ``type_`` frame with ``fields`` and ``body`` (see encode_frame)."""
    if type_ not in _valid_types:
        if not _TYPE_RE.fullmatch(type_):
            raise ProtocolError(f"invalid frame type {type_!r}")
        _valid_types.add(type_)
    if "type" in fields:
        raise ProtocolError(f"a {type_!r} frame cannot have a 'type' field")
    header: dict[str, Any] = {"type": type_}
    for key, value in fields.items():
        if value is not None:
            header[key] = value
    try:
        raw = _JSON.encode(header).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot encode {type_!r} frame: {exc}") from exc
    if len(raw) > MAX_HEADER:
        raise FrameTooLarge(f"{type_!r} header is {len(raw)} bytes (limit {MAX_HEADER})")
    if len(body) > MAX_BODY:
        raise FrameTooLarge(f"{type_!r} body is {len(body)} bytes (limit {MAX_BODY})")
    return PREFIX.pack(PROTOCOL_VERSION, 0, len(raw), len(body)) + raw + body


class Decoder:
    """Turns a byte stream into frames. Knows nothing of sockets.

    Call :meth:`feed` with whatever bytes arrived, then :meth:`next_frame` until
    it returns None. After a ProtocolError the stream is unrecoverable: the
    caller should report the error and close the connection.
    """

    def __init__(self, *, max_header: int = MAX_HEADER, max_body: int = MAX_BODY) -> None:
        self._max_header = max_header
        self._max_body = max_body
        self._buf = bytearray()
        self._pos = 0
        self._lengths: tuple[int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Add received bytes; raises FrameTooLarge as soon as a prefix declares too much."""
        self._buf += data
        self._check_prefix()

    def next_frame(self) -> Frame | None:
        """A complete frame, or None until more bytes arrive.

        Raises FrameTooLarge before buffering a body over the limit, and
        ProtocolError for anything malformed; never any other exception.
        """
        self._check_prefix()
        if self._lengths is None:
            return None
        header_len, body_len = self._lengths
        start = self._pos + PREFIX.size
        end = start + header_len + body_len
        if len(self._buf) < end:
            return None
        header = self._buf[start : start + header_len]
        body = bytes(self._buf[start + header_len : end]) if body_len else b""
        self._pos = end
        self._lengths = None
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        # The next prefix is checked on the next call (or feed), not here: raising now
        # would lose this complete, valid frame.
        return _parse_header(header, body)

    def _check_prefix(self) -> None:
        if self._lengths is not None or len(self._buf) - self._pos < PREFIX.size:
            return
        version, flags, header_len, body_len = PREFIX.unpack_from(self._buf, self._pos)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {version} (this peer speaks {PROTOCOL_VERSION})"
            )
        if flags != 0:
            raise ProtocolError(f"reserved flags must be 0, got {flags:#04x}")
        if header_len == 0:
            raise ProtocolError("empty frame header")
        if header_len > self._max_header:
            raise FrameTooLarge(f"header of {header_len} bytes (limit {self._max_header})")
        if body_len > self._max_body:
            raise FrameTooLarge(f"body of {body_len} bytes (limit {self._max_body})")
        self._lengths = (header_len, body_len)


def _parse_header(raw: bytearray, body: bytes) -> Frame:
    try:
        header = _JSON_DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors; deep nesting
        # makes the JSON scanner raise RecursionError.
        raise ProtocolError(f"frame header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError("frame header must be a JSON object")
    type_ = header.pop("type", None)
    if not isinstance(type_, str) or (type_ not in _valid_types and not _TYPE_RE.fullmatch(type_)):
        raise ProtocolError("frame header needs a 'type' of 1-32 lowercase letters or '_'")
    return Frame(type_, header, body)
