"""Password hashing with scrypt and a per-user salt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["MAX_PASSWORD_BYTES", "hash_password", "verify_password"]

MAX_PASSWORD_BYTES = 1024
"""Longer passwords buy no security and would let a client make us hash megabytes."""

# scrypt cost as recommended for interactive logins (RFC 7914 section 2): about
# 40 ms and 16 MiB per hash, which is why logins are hashed off the I/O threads.
_N, _R, _P, _DKLEN, _SALT = 2**14, 8, 1, 32, 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=_DKLEN
    )


def hash_password(password: str) -> str:
    """A self-describing hash ``scrypt$n$r$p$salt$key`` of ``password`` with a fresh salt."""
    salt = os.urandom(_SALT)
    key = _scrypt(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
