"""securechat: a self-hosted, TLS-only chat server and terminal client.

The public API is small on purpose: the wire codec, the error hierarchy and
the version. Servers and clients are used through their command lines
(``securechat-server``, ``securechat-client``, ``securechat-certs``).
"""

from __future__ import annotations

from .errors import (
    CertificateVerifyError,
    ChatError,
    ConfigError,
    ConnectionLost,
    FrameTooLarge,
    ProtocolError,
    SecureChatError,
    StoreError,
    TLSError,
)
from .wire.protocol import PROTOCOL_VERSION, Decoder, Frame, encode, encode_frame

__all__ = [
    "PROTOCOL_VERSION",
    "CertificateVerifyError",
    "ChatError",
    "ConfigError",
    "ConnectionLost",
    "Decoder",
    "Frame",
    "FrameTooLarge",
    "ProtocolError",
    "SecureChatError",
    "StoreError",
    "TLSError",
    "__version__",
    "encode",
    "encode_frame",
]

__version__ = "0.1.0"
