"""The server's private key file: who may read it, and the passphrase of an encrypted one.

A key readable by the group or by everyone is a key every local account can copy; ssh
refuses such keys, and the server at least says so at start and on every reload.
An encrypted key's passphrase comes from ``--key-password-file``, never from a prompt:
a service has no terminal, and OpenSSL's prompt on its standard input would hang it.
"""

from __future__ import annotations

import stat
from pathlib import Path

from ..errors import ConfigError

__all__ = ["exposed_key_warning", "read_key_password"]


def exposed_key_warning(key: Path) -> str | None:
    """A warning if ``key`` is readable by its group or by others, else None."""
    try:
        mode = key.stat().st_mode
    except OSError:
        return None  # loading it will say what is wrong
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return None
    who = " and ".join(
        name for bit, name in ((stat.S_IRGRP, "its group"), (stat.S_IROTH, "others")) if mode & bit
    )
    return (
        f"the private key {key} is readable by {who} (mode {stat.S_IMODE(mode):04o}): "
        f"chmod 600 {key}"
    )


def read_key_password(path: Path) -> bytes:
    """The passphrase in the first line of ``path``; ConfigError if unreadable or empty."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read --key-password-file {path}: {exc.strerror or exc}") from exc
    if not lines or not lines[0]:
        raise ConfigError(f"--key-password-file {path} is empty: its first line is the passphrase")
    return lines[0]
