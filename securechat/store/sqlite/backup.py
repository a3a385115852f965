"""A consistent copy of a live SQLite store, with SQLite's online backup API.

The copy is taken through a connection of its own, page by page: SQLite restarts
the copy if the server writes meanwhile, so what ends up in the file is the
database as one transaction saw it, with every message committed (acknowledged)
before the copy began. The server is never stopped, nor held up for more than one
step. The copy is written to a new file readable by its owner only, then renamed
into place, so a half-written backup never has the final name.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ...errors import ConfigError, StoreError
from .files import create_private

__all__ = ["PAGES_PER_STEP", "backup"]

PAGES_PER_STEP = 256
"""Pages copied per step (1 MiB at the default page size): the server's writer waits at
most one step for the read lock the copy holds meanwhile."""


def backup(source: Path, target: Path) -> int:
    """Copy the database ``source`` to the new file ``target``; its size in bytes.
    ConfigError if ``source`` is missing or ``target`` exists; StoreError if it fails."""
    if not source.exists():
        raise ConfigError(f"there is no database at {source}")
    if target.exists():
        raise ConfigError(f"{target} exists already: give the backup a new name")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    create_private(partial)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst, pages=PAGES_PER_STEP)
                # A backup of a WAL database is in WAL mode too; a file that stands on
                # its own is easier to copy around and restore.
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(partial, target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot back up {source}: {exc}") from exc
    return target.stat().st_size
