"""Durations as people type them (``90s``, ``30m``, ``2h``, ``7d``, ``1w``, ``1h30m``),
shared by the chat commands, the server and ``securechat-admin``."""

from __future__ import annotations

import re

from ..errors import ChatError

__all__ = ["MAX_DURATION", "format_duration", "looks_like_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(?:\d{1,6}[smhdw])+")
_PART_RE = re.compile(r"(\d+)([smhdw])")

MAX_DURATION = 10 * 365 * 86400
"""Ten years: longer is "for ever", which is what leaving the duration out means."""


def looks_like_duration(text: str) -> bool:
    """True if ``text`` is written as a duration (so ``/ban bob 2h spam`` reads ``2h``
    as the duration, and ``/ban bob spamming`` the whole rest as the reason)."""
    return bool(_DURATION_RE.fullmatch(text))


def parse_duration(text: str) -> int:
    """Seconds in ``text``; ChatError ``bad_duration`` if it is not a duration."""
    if not looks_like_duration(text):
        raise ChatError(
            "bad_duration", f"{text!r} is not a duration: write e.g. 90s, 30m, 2h, 7d or 1h30m"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART_RE.findall(text))
    if not 0 < seconds <= MAX_DURATION:
        raise ChatError("bad_duration", f"{text!r}: a duration is from 1 s to 10 years")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` the way people say it, roughly: ``2h 5m``, ``3d``, ``45s``."""
    left = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(parts)
