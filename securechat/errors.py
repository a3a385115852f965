"""The one exception hierarchy of securechat.

Every error the package raises on purpose derives from :class:`SecureChatError`.
Lower-layer errors (``ssl.SSLError``, ``OSError``, ``sqlite3.Error``) are converted
once, where they enter the package, and chained with ``from exc``::

    SecureChatError
    ├── ConfigError            bad command line, unreadable certificate or key
    ├── ProtocolError          malformed bytes or frames on the wire
    │   └── FrameTooLarge      a length field over its limit (checked before buffering)
    ├── TLSError               a TLS handshake or certificate problem
    │   └── CertificateVerifyError   the peer's certificate is not trusted
    ├── ConnectionLost         the peer went away or stopped answering
    ├── StoreError             the database cannot be opened or written
    └── ChatError              a request refused by chat rules (has a wire ``code``)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CertificateVerifyError",
    "ChatError",
    "ConfigError",
    "ConnectionLost",
    "FrameTooLarge",
    "ProtocolError",
    "SecureChatError",
    "StoreError",
    "TLSError",
]


class SecureChatError(Exception):
    """Root of every error securechat raises on purpose."""


class ConfigError(SecureChatError):
    """The configuration cannot work: a bad option, an unreadable file, a port in use."""


class ProtocolError(SecureChatError):
    """Bytes or frames that do not follow docs/protocol.md."""


class FrameTooLarge(ProtocolError):
    """A frame whose declared header or body length is over the limit."""


class TLSError(SecureChatError):
    """The TLS layer failed: a handshake that cannot complete or a bad certificate."""


class CertificateVerifyError(TLSError):
    """The peer's certificate chain or host name did not verify, or is not the pinned one.

    ``reason`` says which, for advice that fits: ``expired``, ``not_yet_valid``,
    ``unknown_ca``, ``name_mismatch``, ``changed`` (not the certificate pinned on
    first use) or ``other``.
    """

    def __init__(self, message: str, *, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason


class ConnectionLost(SecureChatError):
    """The connection closed or stopped answering."""


class StoreError(SecureChatError):
    """The database could not be opened, migrated, read or written."""


class ChatError(SecureChatError):
    """A request refused by the chat rules; ``code`` is the wire error code.

    ``retry_after`` (seconds) tells the client when trying again can succeed,
    for refusals that are about timing (budgets), not about the request;
    ``fields`` are more facts for the error frame (such as a transfer's ``id``).
    """

    def __init__(
        self, code: str, text: str, *, retry_after: float | None = None, **fields: Any
    ) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.retry_after = retry_after
        self.fields = fields
