"""Lists sent over as many frames as the header limit needs (rooms, users, bans...)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..wire.protocol import encode

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ["send_list"]

# A list frame's items stay under this many bytes, leaving room for the envelope.
_LIST_CHUNK_BYTES = 12 * 1024


def send_list(
    session: Session,
    type_: str,
    key: str,
    items: list[Any],
    *,
    away: dict[str, str] | None = None,
    **fields: Any,
) -> None:
    """Send ``items`` under ``key`` in as many frames as the header limit needs.

    Every frame but the last carries ``more: true``; the client joins them. ``away``
    (for lists of names): the away texts of those listed, each in the frame that
    lists the name.
    """
    texts = away or {}
    chunk: list[Any] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, ensure_ascii=False).encode("utf-8")) + 1
        if isinstance(item, str) and item in texts:
            item_size += len(json.dumps(texts[item], ensure_ascii=False).encode("utf-8")) * 2
        if chunk and size + item_size > _LIST_CHUNK_BYTES:
            session.send(
                encode(type_, more=True, **{key: chunk}, **_away_of(chunk, away), **fields)
            )
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    session.send(encode(type_, **{key: chunk}, **_away_of(chunk, away), **fields))


def _away_of(chunk: list[Any], away: dict[str, str] | None) -> dict[str, Any]:
    """The ``away`` field of a list frame: present (maybe empty) for lists of names."""
    if away is None:
        return {}
    return {"away": {n: away[n] for n in chunk if isinstance(n, str) and n in away}}
