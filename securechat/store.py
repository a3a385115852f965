"""The server's SQLite database: accounts now, message history later.

Knows nothing of the network. The schema is versioned with ``PRAGMA
user_version``; ``MIGRATIONS[i]`` takes a database from version ``i`` to
``i + 1`` inside one transaction, so a crash mid-upgrade leaves the old
version intact. A database from a newer securechat is refused, as is any file
that is not a securechat database: we never overwrite what we do not own.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, StoreError
from .names import fold

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Account", "Store"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_fold TEXT NOT NULL UNIQUE,
            password TEXT,
            created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True, slots=True)
class Account:
    """A registered user. ``password`` is None for certificate-only accounts."""

    id: int
    name: str
    password: str | None


class Store:
    """One SQLite database file, opened, checked and migrated on construction.

    Thread-safe: calls are serialised on one connection, which is enough for
    account traffic (a few rows per login).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _refuse_foreign_file(path)
        try:
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot use database {path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path} was written by a newer securechat (schema {version}, this "
                f"version knows {SCHEMA_VERSION}); upgrade securechat or use another --db"
            )
        if version == 0:
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise ConfigError(
                    f"{self.path} is an SQLite database but not a securechat one; "
                    "refusing to change it: pass another --db"
                )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target:d}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def find_account(self, name: str) -> Account | None:
        """The account registered under ``name`` (any case), if any."""
        with self._lock, _store_errors("read account"):
            row = self._db.execute(
                "SELECT id, name, password FROM accounts WHERE name_fold = ?", (fold(name),)
            ).fetchone()
        return Account(*row) if row else None

    def create_account(self, name: str, password: str | None) -> Account | None:
        """Register ``name``; None if the name (in any case) is already taken."""
        with self._lock, _store_errors("create account"):
            try:
                cur = self._db.execute(
                    "INSERT INTO accounts (name, name_fold, password) VALUES (?, ?, ?)",
                    (name, fold(name), password),
                )
            except sqlite3.IntegrityError:
                return None
        assert cur.lastrowid is not None
        return Account(cur.lastrowid, name, password)

    def rename_account(self, account_id: int, new_name: str) -> bool:
        """Rename an account; False if ``new_name`` belongs to another account."""
        with self._lock, _store_errors("rename account"):
            try:
                cur = self._db.execute(
                    "UPDATE accounts SET name = ?, name_fold = ? WHERE id = ?",
                    (new_name, fold(new_name), account_id),
                )
            except sqlite3.IntegrityError:
                return False
        return cur.rowcount == 1


@contextlib.contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """Convert sqlite3 errors into StoreError at this one boundary."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"cannot {action}: {exc}") from exc


def _refuse_foreign_file(path: Path) -> None:
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
