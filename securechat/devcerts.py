"""Development certificates: a private CA, a server certificate and client certificates.

Strategy
--------
A tiny two-level PKI for running securechat on one machine or a LAN (the
``securechat-certs`` command, :mod:`securechat.certs`, writes it to files): a
self-signed CA with path length 0 (it signs leaves only), a serverAuth and
clientAuth server certificate (clientAuth: a cluster server dials the others
with it), and clientAuth client certificates whose common name is the user's.

Every key is ECDSA P-256 and every signature SHA-256. The extensions are the
ones OpenSSL's ``X509_V_FLAG_X509_STRICT`` insists on (critical basic
constraints and key usage on the CA, subject and authority key identifiers that
chain), so a client built with ``ssl.VERIFY_X509_STRICT`` accepts the server.

Files are written atomically (temporary file in the same directory, fsync,
``os.replace``), so a crash leaves either the old file or the new one. Private
keys are 0600 from the moment they exist on disk; they are never chmod-ed down
after the fact.

These certificates are for development only: the CA key sits unencrypted next
to the certificates it signs.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ChatError, ConfigError
from .wire.names import check_user_name

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_LIFETIME",
    "DEFAULT_HOSTS",
    "LEAF_LIFETIME",
    "check_client_name",
    "load_ca",
    "make_ca",
    "make_client_cert",
    "make_server_cert",
    "subject_alt_names",
    "unique_hosts",
    "write_cert",
    "write_key",
]

StrPath: TypeAlias = str | os.PathLike[str]

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""What the server certificate names when no --host is given: every loopback spelling."""

CA_LIFETIME = datetime.timedelta(days=3650)
"""Long, because replacing the CA invalidates every client certificate it signed."""

LEAF_LIFETIME = datetime.timedelta(days=90)
"""The default for server and client certificates (``--days``): Mozilla's "modern"
TLS profile recommends 90 days, the lifetime of Let's Encrypt's certificates."""

CA_CERT_FILE = "ca.pem"
"""The CA certificate's file name in a certificate directory."""

CA_KEY_FILE = "ca.key"
"""The CA key's file name in a certificate directory."""

_CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Back-dating of not_valid_before, so a peer whose clock is a little behind still accepts."""

# An ASCII host name (A-labels for internationalised names); anything else
# would either be rejected by cryptography or never match in a TLS client.
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_MAX_DNS_NAME = 253


def make_ca(
    *, common_name: str = "securechat development CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA certificate and its private key.

    The CA may sign leaf certificates only (path length 0), and is valid for
    :data:`CA_LIFETIME` from a few minutes ago.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "securechat"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_server_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    lifetime: datetime.timedelta = LEAF_LIFETIME,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A serverAuth (and clientAuth) certificate signed by ``ca_cert``, and its new key.

    It is valid for ``lifetime`` (never beyond the CA's own end).

    ``hosts`` are exactly the names the certificate is valid for: each IP
    address string becomes an IP subject alternative name, anything else a DNS
    name. Duplicates are dropped. The command line passes :data:`DEFAULT_HOSTS`
    plus its --host values.

    Raises ConfigError for an empty ``hosts`` or a host that is neither an IP
    address nor a valid ASCII DNS name.
    """
    names = subject_alt_names(hosts)
    if not names:
        raise ConfigError("a server certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf_builder(
        ca_cert,
        ca_key,
        key,
        common_name="securechat development server",
        lifetime=lifetime,
        # clientAuth too: in a cluster each server presents this certificate when it
        # dials another (OpenSSL checks a client's certificate for clientAuth).
        usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    ).add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_client_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    name: str,
    lifetime: datetime.timedelta = LEAF_LIFETIME,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A clientAuth certificate for user ``name`` signed by ``ca_cert``, and its new key,
    valid for ``lifetime`` (never beyond the CA's own end).

    The common name is ``name``, which must follow the chat user-name rule
    (1-32 ASCII letters, digits, ``_`` or ``-``); ConfigError otherwise.
    """
    check_client_name(name)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf_builder(
        ca_cert,
        ca_key,
        key,
        common_name=name,
        usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        lifetime=lifetime,
    )
    return builder.sign(ca_key, hashes.SHA256()), key


def write_cert(path: StrPath, cert: x509.Certificate) -> None:
    """Write ``cert`` as PEM to ``path`` (mode 0644), atomically replacing any old file.

    Raises OSError if the file cannot be written.
    """
    _write_atomically(Path(path), cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def write_key(path: StrPath, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM to ``path`` (mode 0600), atomically.

    The file is 0600 from the moment it is created, never readable by others
    even briefly. Raises OSError if it cannot be written.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(Path(path), pem, mode=0o600)


def load_ca(directory: StrPath) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key from ``directory``/ca.pem and ``directory``/ca.key.

    Raises ConfigError, with a message meant for the user, if either file is
    missing or unreadable, the key is not an EC key matching the certificate, or
    the CA has expired.
    """
    directory = Path(directory)
    cert_path = directory / CA_CERT_FILE
    key_path = directory / CA_KEY_FILE
    if not (cert_path.is_file() and key_path.is_file()):
        raise ConfigError(
            f"no CA in {directory} (need {CA_CERT_FILE} and {CA_KEY_FILE}): "
            f"run `securechat-certs --out {shlex.quote(str(directory))}` first"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {cert_path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{cert_path} is not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read {key_path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError is how cryptography reports an encrypted key given no password.
        raise ConfigError(f"{key_path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path} is not an EC private key")
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{key_path} does not belong to the certificate in {cert_path}")
    if cert.not_valid_after_utc <= _now():
        raise ConfigError(
            f"the CA in {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            f"remove {CA_CERT_FILE} and {CA_KEY_FILE} to make a new one"
        )
    return cert, key


def _leaf_builder(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    usages: Sequence[x509.ObjectIdentifier],
    lifetime: datetime.timedelta,
) -> x509.CertificateBuilder:
    """The parts every leaf shares; the caller adds names and signs."""
    now = _now()
    # A leaf outliving its CA would just fail verification later, with a less clear error.
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert, ca_key), critical=False)
    )


def _authority_key_identifier(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> x509.AuthorityKeyIdentifier:
    """The AKI matching the CA's own SKI, which is what chain building compares."""
    # A reused CA made by another tool may have computed its SKI differently,
    # so copy it rather than recompute it from the key.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def unique_hosts(hosts: Sequence[str]) -> list[str]:
    """``hosts`` normalised (lower-case names, canonical addresses), first occurrence kept."""
    seen: dict[str, None] = {}
    for host in hosts:
        try:
            seen.setdefault(str(ipaddress.ip_address(host)), None)
        except ValueError:
            seen.setdefault(host.lower(), None)
    return list(seen)


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """SAN entries for ``hosts``; ConfigError for a host that is not a name or an address."""
    names: list[x509.GeneralName] = []
    for host in unique_hosts(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if len(host) > _MAX_DNS_NAME or not _DNS_NAME_RE.fullmatch(host):
            raise ConfigError(
                f"host {host!r} is neither an IP address nor a valid DNS name "
                "(ASCII letters, digits, '-' and dots; use the xn-- form for other scripts)"
            )
        names.append(x509.DNSName(host))
    return names


def check_client_name(name: str) -> None:
    """ConfigError unless ``name`` may name a client certificate (and its files)."""
    # The common name is the chat user name, so it follows the chat's rule; the
    # rule also keeps NAME.pem / NAME.key safe as file names (no "/", no "..").
    try:
        check_user_name(name)
    except ChatError as exc:
        raise ConfigError(
            f"client name {name[:40]!r} is not a valid user name: use 1-32 ASCII letters, "
            "digits, '_' or '-'"
        ) from exc


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data``; readers see the old file or the new, never a part."""
    # mkstemp creates the file 0600, so a key is never world-readable, not even
    # between creation and a chmod. Keeping the target's suffix means a temporary
    # file left by a crash still matches the *.pem / *.key git-ignore rules.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort, as not every platform can."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
