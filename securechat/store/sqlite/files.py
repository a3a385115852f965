"""The database file itself: refusing files that are not ours, and keeping ours private."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ...errors import ConfigError

__all__ = ["PRIVATE_MODE", "create_private", "make_private", "refuse_foreign_file"]

log = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"

PRIVATE_MODE = 0o600
"""Mode of the database and its -wal and -shm files: they hold password hashes and
private messages, so only the server's own user may read them."""

_GROUP_AND_OTHERS = 0o077
_SIDE_FILES = ("-wal", "-shm")


def refuse_foreign_file(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot read database {path}: {exc.strerror}") from exc
    if head and head != _SQLITE_MAGIC:
        raise ConfigError(
            f"{path} is not an SQLite database; refusing to overwrite it: pass another --db"
        )


def create_private(path: Path) -> None:
    """Create a missing database file with ``PRIVATE_MODE``, before SQLite creates it
    with the default mode; SQLite gives the -wal and -shm files the database's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create database {path}: {exc.strerror}") from exc


def make_private(path: Path) -> None:
    """Take access away from other users on the database files, saying so."""
    for file in (path, *(path.with_name(path.name + suffix) for suffix in _SIDE_FILES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & _GROUP_AND_OTHERS:
                file.chmod(mode & ~_GROUP_AND_OTHERS)
                log.warning(
                    "%s was open to other users (mode %03o); made it private (mode %03o)",
                    file,
                    mode,
                    mode & ~_GROUP_AND_OTHERS,
                )
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot make {file} private: {exc.strerror}") from exc
