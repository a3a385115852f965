"""Facts about a file, for people and for the protocol: its size and SHA-256, and a size
written for people."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_digest", "format_size"]


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 (hex) of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def format_size(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 MiB``."""
    if n < 1024:
        return f"{n:.0f} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
