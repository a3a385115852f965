"""Receive a file from a peer onto the local disk without letting the peer choose where it goes.

Knows nothing of sockets, frames or threads: the caller feeds it chunks.

Threat model
------------
The offered name, size and SHA-256 come from an untrusted peer, and the
recipient's disk is what they would attack: a name like ``../../.bashrc``, an
absolute path, a name that hides its real extension behind a bidi override, a
transfer that never stops, or a symlink that someone with access to the
download directory planted where we are about to write (scp's CVE-2019-6111
let a server write anywhere the client could).

Strategy
--------
* **One directory, one fd.** :meth:`Download.start` opens the download
  directory once (``O_DIRECTORY``) and every later open, link and unlink is
  relative to that fd (``dir_fd=``). The only names ever used are the output
  of :func:`~securechat.client.filenames.safe_name` (filenames.py) and our own
  ``.securechat-<sha256>.part``, neither of which can contain a separator, so
  nothing can land outside the directory,
  and renaming or replacing the directory's path afterwards cannot redirect us.
* **Never follow, never overwrite.** The partial file is opened with
  ``O_NOFOLLOW`` and must be a regular file we own with a single link. The
  finished file is published with ``link()``, which fails on *any* existing
  entry (including a dangling symlink) instead of following or replacing it;
  a taken name just moves us on to ``name (1).ext``.
* **Bytes are only trusted once hashed.** Resuming reuses the bytes of an
  earlier partial for the same SHA-256, but they are hashed like new ones and
  the final digest covers the whole file; a mismatch deletes everything.
* **The offered size is a hard limit**, checked before each chunk is written,
  and the free space is checked against it before the first byte.

Errors
------
Every filesystem problem leaves :meth:`Download.start`, :meth:`Download.write`
and :meth:`Download.finish` as :class:`DownloadError`, whose ``reason`` says what
happened in words a person can act on. A ``DownloadError`` from ``write`` or
``finish`` also ends the download (its files are closed); the partial file is
kept only when a later offer of the same file can resume it.

Threads
-------
The module starts none, but a ``Download`` may be aborted (say, by a user's
``/cancel``) while another thread is writing to it. Each call holds the
download's lock, so a file descriptor is never closed under a running write:
otherwise its number could be reused by an unrelated open and the peer's bytes
written there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import stat
import sys
import threading
from pathlib import Path
from types import TracebackType

from ..errors import SecureChatError
from .filenames import numbered_name, safe_name

__all__ = ["Download", "DownloadError"]

# Give up after "name (999).ext": more copies than that means something is wrong.
_MAX_CANDIDATES = 1000
# Read size when hashing a resumed partial file or copying one.
_IO_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

# linkat() errors meaning "this filesystem cannot hard-link": copy instead.
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
)


class DownloadError(SecureChatError):
    """A file could not be received or saved; ``reason`` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(action: str, exc: OSError) -> str:
    """A sentence a person can act on for an ``OSError`` raised while doing ``action``."""
    if exc.errno == errno.ENOSPC:
        return f"{action}: the disk is full (no space left on device)"
    if exc.errno == errno.EDQUOT:
        return f"{action}: the disk quota is exceeded"
    return f"{action}: {exc.strerror or exc}"


def _free_bytes(dir_fd: int) -> int:
    """Bytes an unprivileged user may still write on the directory's filesystem.

    Checked against an offer up front, so one that cannot fit is refused before
    most of it has arrived; the write path still catches a disk filling up later.
    """
    try:
        vfs = os.fstatvfs(dir_fd)
    except OSError:
        return sys.maxsize  # unknown: let the writes find out
    return vfs.f_bavail * vfs.f_frsize


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _write_all(fd: int, data: bytes | memoryview, position: int) -> None:
    """Write all of ``data`` at ``position``, however short the individual writes are."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        if written == 0:
            # A regular file never accepts zero bytes without an error; do not spin.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        position += written


class Download:
    """One file being received into a download directory.

    Create it with :meth:`start`, feed it chunks with :meth:`write` starting at
    :attr:`offset`, then call :meth:`finish`; :meth:`abort` gives up. As a
    context manager it closes its files on exit, keeping an unfinished partial
    file so a later offer can resume it.
    """

    final_name: str
    """The name the file will be saved under: :func:`safe_name` of the offered name."""
    size: int
    """The offered size in bytes; no more is accepted."""
    sha256: str
    """The offered SHA-256, as 64 lowercase hex digits."""

    def __init__(
        self,
        *,
        directory: Path,
        dir_fd: int,
        fd: int,
        partial_name: str,
        final_name: str,
        size: int,
        sha256: str,
        position: int,
        hasher: hashlib._Hash,
    ) -> None:
        """Internal: use :meth:`start`."""
        self._directory = directory
        self._dir_fd = dir_fd
        self._fd = fd
        self._partial = partial_name
        self._position = position
        self._hasher = hasher
        self._closed = False
        self._lock = threading.Lock()
        self.final_name = final_name
        self.size = size
        self.sha256 = sha256

    @classmethod
    def start(cls, directory: Path, *, name: str, size: int, sha256: str) -> Download:
        """Begin (or resume) receiving ``name`` of ``size`` bytes into ``directory``.

        ``directory`` is created (mode 0700) if missing. If an earlier partial
        file for the same ``sha256`` exists, its bytes are kept and
        :attr:`offset` says where the sender should resume. Raises
        :class:`DownloadError` for a bad size or digest, a directory that cannot
        be used, a partial file that is not a plain file of ours (a symlink, a
        hard link, a device), the same file already being received, or too
        little free space.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise DownloadError(f"invalid file size {size!r}: must be a whole number of bytes")
        if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
            raise DownloadError("invalid SHA-256: expected 64 lowercase hexadecimal digits")
        final_name = safe_name(name)
        directory = Path(os.path.abspath(directory))
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise DownloadError(_reason(f"cannot use download directory {directory}", exc)) from exc
        try:
            return cls._open_partial(directory, dir_fd, final_name, size, sha256)
        except BaseException:
            _close_quietly(dir_fd)
            raise

    @classmethod
    def _open_partial(
        cls, directory: Path, dir_fd: int, final_name: str, size: int, sha256: str
    ) -> Download:
        partial = f".securechat-{sha256}.part"
        # O_NOFOLLOW: a planted symlink fails with ELOOP instead of being followed.
        # O_NONBLOCK, O_NOCTTY: a planted FIFO or terminal cannot hang us or become
        # our controlling terminal before fstat() rejects it (no effect on files).
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        try:
            fd = os.open(partial, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DownloadError(
                    f"refusing to resume: {directory / partial} is a symbolic link; remove it"
                ) from exc
            raise DownloadError(_reason(f"cannot create a file in {directory}", exc)) from exc
        try:
            position, hasher = cls._adopt(fd, directory / partial, size)
            free = _free_bytes(dir_fd)
            if size - position > free:
                if position == 0:
                    os.unlink(partial, dir_fd=dir_fd)  # nothing worth keeping for a resume
                raise DownloadError(
                    f"the disk is full: {final_name} needs {size - position} bytes "
                    f"but only {free} are free in {directory}"
                )
        except OSError as exc:
            _close_quietly(fd)
            raise DownloadError(_reason(f"cannot create a file in {directory}", exc)) from exc
        except BaseException:
            # The caller (start) closes dir_fd; closing it here too could close a
            # descriptor another thread has since been given the same number.
            _close_quietly(fd)
            raise
        return cls(
            directory=directory,
            dir_fd=dir_fd,
            fd=fd,
            partial_name=partial,
            final_name=final_name,
            size=size,
            sha256=sha256,
            position=position,
            hasher=hasher,
        )

    @staticmethod
    def _adopt(fd: int, path: Path, size: int) -> tuple[int, hashlib._Hash]:
        """Vet an opened partial file, lock it and hash what it already holds."""
        try:
            info = os.fstat(fd)
        except OSError as exc:
            raise DownloadError(_reason(f"cannot inspect {path}", exc)) from exc
        # Checked before the first write or truncate: a hard link planted under the
        # partial name (say, to ~/.bashrc) must not be appended to or emptied.
        if not stat.S_ISREG(info.st_mode):
            raise DownloadError(f"refusing to resume: {path} is not a regular file; remove it")
        if info.st_nlink != 1 or info.st_uid != os.geteuid():
            raise DownloadError(
                f"refusing to resume: {path} has other links or another owner; remove it"
            )
        try:
            # Two downloads of the same content would interleave into one partial.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DownloadError("this file is already being received") from exc
        except OSError:
            pass  # a filesystem without locks still works for a single download
        hasher = hashlib.sha256()
        try:
            length = os.fstat(fd).st_size
            if length > size:
                # Not a prefix of the offered file: start again.
                os.ftruncate(fd, 0)
                return 0, hasher
            position = 0
            while position < length:
                chunk = os.pread(fd, min(_IO_CHUNK, length - position), position)
                if not chunk:
                    break
                hasher.update(chunk)
                position += len(chunk)
        except OSError as exc:
            raise DownloadError(_reason(f"cannot read {path}", exc)) from exc
        return position, hasher

    @property
    def offset(self) -> int:
        """Bytes already written; the next chunk must start here (a resume starts above 0)."""
        return self._position

    def write(self, offset: int, data: bytes) -> None:
        """Append ``data``, which the sender says starts at byte ``offset``.

        Raises :class:`DownloadError` (and ends the download) if ``offset`` is
        not :attr:`offset`, if the chunk would go past the offered size (the
        partial file is deleted) or if the disk is full or failing (the
        partial file is deleted).
        """
        with self._lock:
            self._write(offset, data)

    def _write(self, offset: int, data: bytes) -> None:
        self._check_open()
        if offset != self._position:
            self._end(remove_partial=False)
            raise DownloadError(
                f"chunk out of order: expected offset {self._position}, got {offset}"
            )
        if self._position + len(data) > self.size:
            self._end(remove_partial=True)
            raise DownloadError(
                f"the sender sent more bytes than offered ({self.size}); nothing was saved"
            )
        try:
            _write_all(self._fd, data, self._position)
        except OSError as exc:
            self._end(remove_partial=True)
            raise DownloadError(_reason(f"cannot save {self.final_name}", exc)) from exc
        self._hasher.update(data)
        self._position += len(data)

    def finish(self) -> Path:
        """Verify the SHA-256 and save the file under a free name; return its path.

        The file is never written over an existing entry: if
        :attr:`final_name` is taken, ``name (1).ext``, ``name (2).ext`` … are
        tried. Raises :class:`DownloadError` if bytes are missing (the partial
        file is kept for a resume), if the SHA-256 does not match (everything
        is deleted) or if the file cannot be saved. The download is over
        either way.
        """
        with self._lock:
            return self._finish()

    def _finish(self) -> Path:
        self._check_open()
        if self._position != self.size:
            self._end(remove_partial=False)
            raise DownloadError(f"incomplete: got {self._position} of {self.size} bytes")
        if self._hasher.hexdigest() != self.sha256:
            self._end(remove_partial=True)
            raise DownloadError(
                "SHA-256 mismatch: the file was corrupted or tampered with; nothing was saved"
            )
        try:
            # The bytes must be on disk before a name points at them.
            os.fsync(self._fd)
            saved = self._publish()
        except OSError as exc:
            self._end(remove_partial=True)
            raise DownloadError(_reason(f"cannot save {self.final_name}", exc)) from exc
        except BaseException:
            self._end(remove_partial=True)
            raise
        try:
            os.fsync(self._dir_fd)  # make the new name itself durable
        except OSError:
            pass  # the file is saved; only its durability across a power cut is in doubt
        self._end(remove_partial=True)
        return self._directory / saved

    def _publish(self) -> str:
        """Give the verified partial file its final name without replacing anything."""
        use_link = True
        for n in range(_MAX_CANDIDATES):
            candidate = numbered_name(self.final_name, n)
            if use_link:
                try:
                    # linkat() fails with EEXIST on any existing entry, even a
                    # dangling symlink; it never follows or replaces it.
                    os.link(
                        self._partial,
                        candidate,
                        src_dir_fd=self._dir_fd,
                        dst_dir_fd=self._dir_fd,
                        follow_symlinks=False,
                    )
                    return candidate
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS:
                        raise
                    use_link = False
            if self._copy_to(candidate):
                return candidate
        raise DownloadError(
            f"cannot save {self.final_name}: {_MAX_CANDIDATES} files with that name "
            f"already exist in {self._directory}"
        )

    def _copy_to(self, candidate: str) -> bool:
        """Copy the partial file to a new ``candidate``; False if that name is taken."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            out = os.open(candidate, flags, 0o600, dir_fd=self._dir_fd)
        except FileExistsError:
            return False
        try:
            position = 0
            while position < self.size:
                chunk = os.pread(self._fd, min(_IO_CHUNK, self.size - position), position)
                if not chunk:
                    raise OSError(errno.EIO, "the partial file shrank while being copied")
                _write_all(out, chunk, position)
                position += len(chunk)
            os.fsync(out)
        except BaseException:
            _close_quietly(out)
            try:
                os.unlink(candidate, dir_fd=self._dir_fd)
            except OSError:
                pass
            raise
        os.close(out)
        return True

    def abort(self, *, keep_partial: bool = False) -> None:
        """Give up: close the files and delete the partial file unless ``keep_partial``.

        Keep it when the connection dropped, so the same offer can resume later.
        Does nothing if the download has already ended. Never raises. Safe to
        call from another thread: it waits for a running write or finish.
        """
        with self._lock:
            if not self._closed:
                self._end(remove_partial=not keep_partial)

    def close(self) -> None:
        """Close the files, keeping any partial file for a resume (``abort(keep_partial=True)``)."""
        self.abort(keep_partial=True)

    def __enter__(self) -> Download:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DownloadError("this download has already ended")

    def _end(self, *, remove_partial: bool) -> None:
        """Close both fds, first unlinking the partial file (relative to the dir fd) if asked."""
        self._closed = True
        if remove_partial:
            # Unlinked while we still hold its lock, so no resumer can adopt it meanwhile.
            try:
                os.unlink(self._partial, dir_fd=self._dir_fd)
            except OSError:
                pass  # already gone, or the directory is read-only: nothing more to do
        _close_quietly(self._fd)
        _close_quietly(self._dir_fd)
