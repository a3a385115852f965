"""TLS contexts for the server and the client, and the one place TLS errors are explained.

The server follows Mozilla's "intermediate" profile (TLS 1.2 and 1.3, ECDHE key
exchange with AEAD ciphers, groups X25519/P-256/P-384, no compression, no
renegotiation); ``tls_min="1.3"`` gives the "modern" profile. Python's default
server context allows more than that, so everything is set explicitly.
"""

from __future__ import annotations

import ctypes
import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertificateVerifyError, ConfigError, TLSError

__all__ = [
    "GROUPS",
    "INTERMEDIATE_CIPHERS",
    "certificate_summary",
    "client_context",
    "describe_tls_error",
    "peer_common_name",
    "peer_has_server_usage",
    "pinning_context",
    "server_context",
    "sha256_fingerprint",
]

INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""TLS 1.2 suites of Mozilla's intermediate profile, less the finite-field DHE ones."""

GROUPS = "X25519:P-256:P-384"

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CTRL_MODE = 33
_SSL_MODE_RELEASE_BUFFERS = 0x10
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_SESS_CACHE_OFF = 0


def server_context(
    *,
    cert: Path,
    key: Path,
    client_ca: Path | None = None,
    tls_min: str = "1.2",
    key_password: bytes | None = None,
) -> ssl.SSLContext:
    """A server context with our profile; ``client_ca`` turns on mutual TLS.

    ``key_password`` decrypts an encrypted key; without it such a key is a ConfigError,
    never a prompt on standard input.
    """
    if tls_min not in _VERSIONS:
        raise ConfigError(f"--tls-min must be 1.2 or 1.3, not {tls_min!r}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls_min]
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    # No session resumption in either version (docs/server.md, "Certificates"): our
    # clients keep one long connection, so tickets would be wasted work, and TLS 1.2
    # tickets would be encrypted with a key OpenSSL never rotates, so one stolen key
    # would decrypt every recorded session's secrets (no forward secrecy).
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    _set_groups(ctx, GROUPS)
    _release_idle_buffers(ctx)
    _disable_session_cache(ctx)
    try:
        ctx.load_cert_chain(
            certfile=str(cert), keyfile=str(key), password=_password(key, key_password)
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load certificate {cert} with key {key}: {_reason(exc)}; "
            "check the paths and that the key matches (securechat-certs makes a pair)"
        ) from exc
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load client CA {client_ca}: {_reason(exc)}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    key_password: bytes | None = None,
) -> ssl.SSLContext:
    """A verifying client context: the chain and the host name, never unverified.

    Without ``ca`` the system trust store is used.
    """
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {ca}: {_reason(exc)}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.hostname_checks_common_name = False
    if (cert is None) != (key is None):
        raise ConfigError("--cert and --key go together: pass both or neither")
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(
                certfile=str(cert), keyfile=str(key), password=_password(key, key_password)
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load client certificate {cert} with key {key}: {_reason(exc)}"
            ) from exc
    return ctx


def pinning_context(*, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client context that checks neither the chain nor the host name: only for a
    connection whose certificate is compared with a pinned fingerprint before
    anything is sent on it (trust on first use, securechat/client/trust.py).

    Everything else (versions, client certificate) is as :func:`client_context`.
    """
    ctx = client_context(cert=cert, key=key)
    # A pin names one exact certificate: no chain to build, and the host name is
    # the one the user confirmed with that pin, so there is nothing else to check.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_common_name(sock: ssl.SSLSocket) -> str | None:
    """The common name of the peer's verified certificate, if it sent one."""
    cert = sock.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName":
                return str(attribute[1])
    return None


def peer_has_server_usage(sock: ssl.SSLSocket) -> bool:
    """True if the peer's verified certificate may identify a TLS server (serverAuth).

    Between the servers of a cluster each end presents its server certificate;
    OpenSSL checks the dialer's for clientAuth, and this check keeps a user's
    client certificate from the same CA from passing for a server. A
    certificate without the extension is good for any purpose, as RFC 5280 says.
    """
    der = sock.getpeercert(binary_form=True)
    if not der:
        return False
    try:
        usage = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        )
    except x509.ExtensionNotFound:
        return True
    except ValueError:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usage.value


def certificate_summary(sock: ssl.SSLSocket) -> dict[str, str]:
    """The verified peer certificate in words: subject, issuer, SHA-256 fingerprint."""
    der = sock.getpeercert(binary_form=True)
    if not der:
        return {}
    cert = sock.getpeercert()
    if not cert:
        # A pinned connection (verification off) gets no decoded certificate from ssl.
        parsed = x509.load_der_x509_certificate(der)
        return {
            "cert_subject": _x509_name(parsed.subject),
            "cert_issuer": _x509_name(parsed.issuer),
            "cert_sha256": sha256_fingerprint(der),
        }

    def _name(field: str) -> str:
        parts = [f"{attr[0]}={attr[1]}" for rdn in cert.get(field, ()) for attr in rdn]
        return ", ".join(parts)

    return {
        "cert_subject": _name("subject"),
        "cert_issuer": _name("issuer"),
        "cert_sha256": sha256_fingerprint(der),
    }


_OPENSSL_NAMES = {
    NameOID.COMMON_NAME: "commonName",
    NameOID.ORGANIZATION_NAME: "organizationName",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
    NameOID.COUNTRY_NAME: "countryName",
    NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName",
    NameOID.LOCALITY_NAME: "localityName",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.DOMAIN_COMPONENT: "domainComponent",
}
"""The attribute names ssl's decoded certificates use, so both paths read alike."""


def _x509_name(name: x509.Name) -> str:
    return ", ".join(
        f"{_OPENSSL_NAMES.get(attr.oid, attr.oid.dotted_string)}={attr.value!s}" for attr in name
    )


def sha256_fingerprint(der: bytes) -> str:
    """A DER certificate's SHA-256 fingerprint as clients show and pin it: ``4F:61:…:1E``."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


_VERIFY_REASONS = {
    9: "not_yet_valid",  # X509_V_ERR_CERT_NOT_YET_VALID
    10: "expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    2: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    18: "unknown_ca",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown_ca",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown_ca",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    62: "name_mismatch",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "name_mismatch",  # X509_V_ERR_IP_ADDRESS_MISMATCH
}
"""OpenSSL's verification result codes, grouped by what the user can do about them."""


def describe_tls_error(exc: BaseException, *, host: str | None = None) -> TLSError:
    """Our error for a failed handshake, saying what failed and what to do.

    A certificate that does not verify is a CertificateVerifyError whose
    ``reason`` names the failure; each gets its own advice (an expired
    certificate is for the server's administrator to renew, not a --ca problem).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _reason(exc)
        reason = _VERIFY_REASONS.get(exc.verify_code, "other")
        if reason == "other" and (
            "hostname" in detail.lower() or "ip address mismatch" in detail.lower()
        ):
            reason = "name_mismatch"
        return CertificateVerifyError(
            f"certificate verification failed: {detail}; {_verify_advice(reason, host)}",
            reason=reason,
        )
    if isinstance(exc, ssl.SSLError):
        reason = _reason(exc)
        if "CERTIFICATE_REQUIRED" in reason.upper() or "certificate required" in reason:
            return TLSError(
                f"TLS handshake failed: {reason}; this server requires a client certificate: "
                "pass --cert and --key (securechat-certs --client NAME makes them)"
            )
        return TLSError(f"TLS handshake failed: {reason}")
    return TLSError(f"TLS handshake failed: {exc}")


def _verify_advice(reason: str, host: str | None) -> str:
    if reason == "expired":
        return (
            "the server's certificate has expired (or this computer's clock is wrong): "
            "the server's administrator must renew it; no client option fixes this"
        )
    if reason == "not_yet_valid":
        return (
            "the server's certificate is not valid yet: check this computer's clock, "
            "or tell the server's administrator"
        )
    if reason == "name_mismatch":
        return (
            f"the server's certificate is not valid for {host!r}: connect with --host set "
            "to a name the certificate lists (securechat-certs --host NAME adds one)"
        )
    return (
        "pass --ca with the CA certificate that signed the server's certificate "
        "(for dev certificates: --ca certs/ca.pem), or, without --ca, trust the "
        "certificate on first use"
    )


def _password(key: Path, password: bytes | None) -> Callable[[], bytes]:
    """What OpenSSL calls for an encrypted key's passphrase, instead of prompting."""

    def supply() -> bytes:
        if password is None:
            raise ConfigError(
                f"the private key {key} is encrypted: pass --key-password-file with a file "
                "whose first line is its passphrase (securechat never prompts for it)"
            )
        return password

    return supply


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> tuple[ctypes.CDLL, int]:
    """libssl and the context's ``SSL_CTX*``, checked to be what it claims to be.

    The ssl module before 3.15 exposes neither the group list nor the mode
    flags we need, so we reach OpenSSL through ctypes. In CPython the SSL_CTX
    pointer is the first member after the object header; we only trust it
    after ``SSL_CTX_get_options`` on it returns the context's own options.
    """
    try:
        import _ssl  # noqa: PLC0415 - the extension module that links libssl

        lib = ctypes.CDLL(_ssl.__file__)
        get_options = lib.SSL_CTX_get_options
        get_options.restype = ctypes.c_uint64
        get_options.argtypes = [ctypes.c_void_p]
        ctrl = lib.SSL_CTX_ctrl
        ctrl.restype = ctypes.c_long
        ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    except (ImportError, AttributeError, OSError) as exc:
        raise TLSError(f"cannot reach OpenSSL from this Python: {exc}") from exc
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or get_options(ptr) != int(ctx.options):
        raise TLSError("cannot reach OpenSSL: unexpected ssl.SSLContext layout")
    return lib, ptr


def _release_idle_buffers(ctx: ssl.SSLContext) -> None:
    """Let OpenSSL free a connection's 34 KiB of record buffers while it is idle.

    Most chat connections are idle most of the time; this roughly halves the
    memory each one costs. Skipped (not fatal) where ctypes cannot reach OpenSSL.
    """
    try:
        lib, ptr = _ssl_ctx_pointer(ctx)
    except TLSError:
        return
    lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_MODE, _SSL_MODE_RELEASE_BUFFERS, None)


def _disable_session_cache(ctx: ssl.SSLContext) -> None:
    """Turn off TLS 1.2 resumption by session ID too (the server-side cache).

    Without tickets a TLS 1.2 client could still resume from the server's
    session cache; no resumption at all is simpler to state and to test.
    Skipped (not fatal) where ctypes cannot reach OpenSSL: then the cache only
    costs memory.
    """
    try:
        lib, ptr = _ssl_ctx_pointer(ctx)
    except TLSError:
        return
    lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)


def _set_groups(ctx: ssl.SSLContext, groups: str) -> None:
    """Restrict key exchange groups; ``set_ecdh_curve`` would allow only one."""
    setter = getattr(ctx, "set_groups", None)
    if setter is not None:
        setter(groups)
        return
    lib, ptr = _ssl_ctx_pointer(ctx)
    if lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode("ascii")) != 1:
        raise TLSError(f"OpenSSL refused the TLS groups {groups!r}")
