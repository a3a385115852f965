"""Safe local names for files a peer offers: the naming half of the download rules.

The offered name comes from an untrusted peer: a name like ``../../.bashrc``, an
absolute path, or one that hides its real extension behind a bidi override.
:func:`safe_name` reduces it to one harmless path component, and
:func:`numbered_name` gives the alternatives (``name (1).ext``...) tried when
it is taken. Neither can produce a separator, which is what lets
:class:`~securechat.client.downloads.Download` keep every file inside its
directory. Pure functions: no filesystem access here.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_NAME_BYTES", "numbered_name", "safe_name"]

# Linux allows 255 bytes per name (NAME_MAX); 200 leaves room for " (999)" and
# keeps names usable on filesystems and archive formats with tighter limits.
MAX_NAME_BYTES = 200

# A dot-suffix up to this long (and without spaces) is treated as an extension
# worth keeping when a name is shortened or numbered; longer ones are just text.
_MAX_EXT_BYTES = 16
_FALLBACK_NAME = "file"

# Categories that never belong in a file name: controls (Cc), invisible format
# characters such as bidi overrides and zero-width spaces (Cf), line and
# paragraph separators (Zl, Zp), private-use (Co), lone surrogates (Cs, which
# cannot even be encoded as UTF-8) and unassigned code points (Cn).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
_SEPARATORS_RE = re.compile(r"[/\\]")
# No hidden files ('.bashrc'), nothing that reads as a command-line option
# ('-rf'), no leading blanks.
_LEADING_RE = re.compile(r"^[\s.\-]+")
# Windows and some tools drop trailing dots and spaces, changing the name.
_TRAILING_RE = re.compile(r"[\s.]+$")


def safe_name(offered: str) -> str:
    """A safe base name for the file name a peer offered.

    Only the last path component is kept (after both ``/`` and ``\\``), the
    text is NFC-normalised, and control, invisible-format, separator,
    private-use, surrogate and unassigned characters each become ``_``. Leading
    dots, dashes and blanks are dropped (no hidden or option-like names), as
    are trailing dots and blanks. The result is at most :data:`MAX_NAME_BYTES`
    bytes of UTF-8, shortened before the extension so that ``.pdf`` stays
    ``.pdf``. It is never empty, ``.`` or ``..``: ``file`` stands in when
    nothing usable remains.
    """
    text = unicodedata.normalize("NFC", offered)
    # The last non-empty component, so "dir/" does not lose "dir".
    components = [part for part in _SEPARATORS_RE.split(text) if part]
    name = components[-1] if components else ""
    # Replacing with '_' (a starter that composes with nothing) keeps the text NFC.
    name = "".join("_" if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in name)
    name = _TRAILING_RE.sub("", _LEADING_RE.sub("", name))
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, ext = _split_ext(name)
        name = _TRAILING_RE.sub("", _fit(stem, ext))
    return name or _FALLBACK_NAME


def _split_ext(name: str) -> tuple[str, str]:
    """``("report", ".pdf")`` for ``"report.pdf"``; ``(name, "")`` without a short extension."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext:
        return name, ""
    suffix = dot + ext
    if len(suffix.encode("utf-8")) > _MAX_EXT_BYTES or any(ch.isspace() for ch in ext):
        return name, ""
    return stem, suffix


def _fit(stem: str, tail: str) -> str:
    """``stem + tail``, with ``stem`` cut (at a character boundary) to fit MAX_NAME_BYTES."""
    budget = MAX_NAME_BYTES - len(tail.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return cut + tail


def numbered_name(name: str, n: int) -> str:
    """The ``n``-th name to try for ``name``: ``name.ext``, ``name (1).ext``, ``name (2).ext``, …"""
    if n == 0:
        return name
    stem, ext = _split_ext(name)
    return _fit(stem, f" ({n}){ext}")
