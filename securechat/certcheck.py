"""What an administrator gets wrong with a server certificate, found before a client does.

:func:`check_server_certificate` reads a certificate file and its key and
returns a :class:`Finding` per problem, each with the fix. ``securechat-certs
check`` (:mod:`securechat.certs`) prints them; the server runs the same checks
when it starts (errors refuse to start, warnings are logged, notes only at debug
level). Which host names a certificate covers is :mod:`securechat.certnames`.

What is checked, in the order an administrator would fix it:

1. both files read, the key belongs to the first certificate (the server's);
2. dates: expired or not yet valid is an error, under
   :data:`RENEW_WARNING` left a warning (for every certificate in the file);
3. usage: key usage with ``digitalSignature`` (ECDHE suites sign with the
   key) and, if present, extended key usage with ``serverAuth``;
4. names: a subject alternative name extension (clients never fall back to
   the common name), and every host name clients will use in it;
5. the chain: each certificate in the file issued by the next, and the last
   one issued by a trusted CA: the ``ca`` file when given, else the system
   trust store. Chain building uses ``cryptography``'s X.509 verifier, the
   same rules (RFC 5280 and the CA/Browser Forum's) a strict client applies.

Without ``ca`` the checker cannot tell a private root CA from a missing
intermediate when the file's last certificate was issued by a CA the system
does not know. A publicly issued certificate says where its issuer's
certificate can be fetched (the Authority Information Access extension): that
case is a warning, naming the issuer to append. Otherwise it is a note: clients
need ``--ca`` with that CA, or trust on first use.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import itertools
import logging
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .certnames import certificate_names, names_cover
from .tls import sha256_fingerprint

__all__ = [
    "RENEW_WARNING",
    "Finding",
    "Severity",
    "check_server_certificate",
    "fingerprint_of",
    "format_name",
    "format_time",
    "load_certificates",
    "log_findings",
]

RENEW_WARNING = datetime.timedelta(days=30)
"""Warn when a certificate has less than this left: Let's Encrypt renews at 30 days
left, so a certificate closer to its end than that has missed a renewal."""


_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
}


class Severity(enum.Enum):
    """How bad a finding is: errors break clients, warnings will, notes may."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem with a certificate setup, and what to do about it."""

    severity: Severity
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.problem}; fix: {self.fix}"


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every PEM certificate in ``path``, in file order.

    Raises OSError if the file cannot be read and ValueError if it holds no
    PEM certificate.
    """
    return x509.load_pem_x509_certificates(path.read_bytes())


def check_server_certificate(
    cert: Path,
    key: Path,
    *,
    ca: Path | None = None,
    hosts: Sequence[str] = (),
    key_password: bytes | None = None,
    now: datetime.datetime | None = None,
) -> list[Finding]:
    """The problems of serving ``cert`` (the server's certificate, then its chain) with ``key``.

    ``ca`` is the CA clients trust (default: this system's trust store);
    ``hosts`` the names and addresses clients will connect to (none: only the
    presence of names is checked). ``key_password`` opens a passphrase-protected
    key. An empty list means nothing to fix. Never raises for bad input: an
    unreadable file is a finding too.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    findings: list[Finding] = []
    try:
        chain = load_certificates(cert)
    except OSError as exc:
        return [_error(f"cannot read {cert}: {exc.strerror or exc}", "check the --cert path")]
    except ValueError:
        return [
            _error(
                f"{cert} holds no PEM certificate",
                "give the PEM file that starts with -----BEGIN CERTIFICATE----- "
                "(Let's Encrypt: fullchain.pem)",
            )
        ]
    leaf = chain[0]
    findings += _check_key(cert, key, leaf, key_password)
    for index, item in enumerate(chain):
        findings += _check_dates(item, now, what="the server's certificate" if index == 0 else None)
    findings += _check_usage(leaf)
    names = certificate_names(leaf)
    findings += _check_names(names, hosts)
    findings += _check_chain(cert, chain, ca, names, now)
    return findings


def fingerprint_of(cert: x509.Certificate) -> str:
    """The certificate's SHA-256 fingerprint as clients show and pin it."""
    return sha256_fingerprint(cert.public_bytes(serialization.Encoding.DER))


_LOG_LEVELS = {Severity.ERROR: logging.ERROR, Severity.WARNING: logging.WARNING}


def log_findings(findings: Sequence[Finding], logger: logging.Logger, *, cert: Path) -> bool:
    """Log each finding (errors and warnings at their level, notes at debug: a private
    CA's certificate gets one at every start, and it is no news to its owner); True if
    none is an error, i.e. the certificate can be served. For the server, at start
    and on reload."""
    for finding in findings:
        logger.log(
            _LOG_LEVELS.get(finding.severity, logging.DEBUG), "certificate %s: %s", cert, finding
        )
    return not any(f.severity is Severity.ERROR for f in findings)


# -- the checks ---------------------------------------------------------------------------


def _check_key(
    cert: Path, key: Path, leaf: x509.Certificate, password: bytes | None
) -> list[Finding]:
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=password)
    except OSError as exc:
        return [_error(f"cannot read {key}: {exc.strerror or exc}", "check the --key path")]
    except TypeError:
        # How cryptography says "encrypted, and no password" (or a password for a plain key).
        return [
            _warning(
                f"{key} is passphrase-protected, so it was not compared with the certificate",
                "give the passphrase, or use an unencrypted key readable only by the server",
            )
        ]
    except (ValueError, UnsupportedAlgorithm):
        return [
            _error(
                f"{key} is not a PEM private key (or the passphrase is wrong)",
                "give the key file made with the certificate (Let's Encrypt: privkey.pem)",
            )
        ]
    if _public_der(private.public_key()) != _public_der(leaf.public_key()):
        return [
            _error(
                f"the key in {key} does not belong to the first certificate in {cert} "
                f"({format_name(leaf.subject)})",
                "use the key made together with this certificate (Let's Encrypt: privkey.pem "
                "beside fullchain.pem), and put the server's certificate first in the file",
            )
        ]
    return []


def _check_dates(
    cert: x509.Certificate, now: datetime.datetime, *, what: str | None
) -> list[Finding]:
    what = what or f"the CA certificate {format_name(cert.subject)}"
    renew = "renew it (Let's Encrypt: certbot renew), then reload the server"
    if now < cert.not_valid_before_utc:
        return [
            _error(
                f"{what} is not valid until {format_time(cert.not_valid_before_utc)}",
                "check this machine's clock, or use a certificate valid now",
            )
        ]
    if now >= cert.not_valid_after_utc:
        return [_error(f"{what} expired on {format_time(cert.not_valid_after_utc)}", renew)]
    left = cert.not_valid_after_utc - now
    if left < RENEW_WARNING:
        return [
            _warning(
                f"{what} expires on {format_time(cert.not_valid_after_utc)}, in {left.days} days",
                f"{renew}; automate renewal so this never comes this close",
            )
        ]
    return []


def _check_usage(leaf: x509.Certificate) -> list[Finding]:
    findings = []
    fix = "issue a TLS server certificate (securechat-certs makes one; public CAs do by default)"
    try:
        basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if basic.ca:
            findings.append(_error("the server's certificate is a CA certificate", fix))
    except x509.ExtensionNotFound:
        pass
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            findings.append(
                _error("the certificate's key usage lacks digitalSignature, which TLS needs", fix)
            )
    except x509.ExtensionNotFound:
        pass  # no extension: any usage (RFC 5280)
    try:
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return findings
    if not {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(
        extended
    ):
        listed = ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in extended)
        findings.append(
            _error(
                f"the certificate is not for TLS servers (extended key usage: {listed}); "
                "is it a client certificate?",
                fix,
            )
        )
    return findings


def _check_names(names: list[str], hosts: Sequence[str]) -> list[Finding]:
    if not names:
        return [
            _error(
                "the certificate has no subject alternative names, and clients ignore the "
                "common name",
                "issue it with the server's host names as DNS names (securechat-certs --host NAME)",
            )
        ]
    findings = []
    for host in hosts:
        if not names_cover(names, host):
            findings.append(
                _error(
                    f"clients connecting to {host!r} will refuse the certificate: it lists only "
                    f"{', '.join(names)}",
                    f"add {host} to the certificate's names, or have clients use a listed name",
                )
            )
    return findings


def _check_chain(
    path: Path,
    chain: list[x509.Certificate],
    ca: Path | None,
    names: list[str],
    now: datetime.datetime,
) -> list[Finding]:
    for child, parent in itertools.pairwise(chain):
        if not _issued_by(child, parent):
            return [
                _error(
                    f"the certificates in {path} are not a chain: {format_name(parent.subject)} "
                    f"did not issue {format_name(child.subject)}",
                    "put the server's certificate first, then its issuer, then that one's "
                    "(Let's Encrypt: fullchain.pem is in this order)",
                )
            ]
    last = chain[-1]
    if ca is not None:
        try:
            anchors = load_certificates(ca)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "no PEM certificate in it"
            return [_error(f"cannot read --ca {ca}: {why}", "give the CA's PEM certificate")]
        where = f"the CA in {ca}"
    else:
        anchors = _system_roots()
        where = "this system's trust store"
    if _is_self_issued(last):
        # The root is in the file: clients ignore it and need it from their own store.
        roots = [c for c in anchors if c.subject == last.subject]
        if not roots and ca is not None:
            return [
                _error(
                    f"the chain in {path} ends at the root {format_name(last.subject)}, which is "
                    f"not {where}",
                    "pass the --ca that signed this certificate",
                )
            ]
        intermediates = chain[1:-1]
    else:
        roots = [c for c in anchors if c.subject == last.issuer]
        intermediates = chain[1:]
    if not roots:
        return [_missing_issuer(path, chain, last, where, explicit_ca=ca is not None)]
    return _verify(path, chain[0], intermediates, roots=roots, names=names, now=now)


def _missing_issuer(
    path: Path,
    chain: list[x509.Certificate],
    last: x509.Certificate,
    where: str,
    *,
    explicit_ca: bool,
) -> Finding:
    issuer = format_name(last.issuer)
    holds = "only the server's certificate" if len(chain) == 1 else f"{len(chain)} certificates"
    problem = (
        f"clients cannot build the chain: {path} holds {holds}, the last issued by {issuer}, "
        f"which is neither in the file nor in {where}"
    )
    append = f"append the certificate of {issuer} to {path} (Let's Encrypt: use fullchain.pem)"
    if explicit_ca:
        return _error(problem, f"{append}, or pass the --ca that issued it")
    if _names_its_issuer(last):
        return _warning(problem, append)
    return Finding(
        Severity.NOTE,
        problem,
        f"if {issuer} is your private CA, clients need --ca with it (or trust on first use); "
        f"if it is an intermediate, {append}",
    )


def _verify(
    path: Path,
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    *,
    roots: list[x509.Certificate],
    names: list[str],
    now: datetime.datetime,
) -> list[Finding]:
    if not names:
        return []  # the verifier needs a name to check; the missing names are already an error
    # Dates were checked above, each with its own advice; here only the chain counts.
    when = now
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        when = leaf.not_valid_before_utc + lifetime / 2
    # The CA/Browser Forum's extension rules for the CAs, as strict clients apply them;
    # for the leaf, OpenSSL's leniency (it accepts, say, a critical SAN beside a
    # subject), as our own checks above already cover what a server certificate needs.
    policy = PolicyBuilder().store(Store(roots)).time(when)
    policy = policy.extension_policies(
        ca_policy=ExtensionPolicy.webpki_defaults_ca(),
        ee_policy=ExtensionPolicy.permit_all().require_present(
            x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
        ),
    )
    verifier = policy.build_server_verifier(_subject(names[0]))
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        return [
            _error(
                f"the chain in {path} does not verify: {exc}",
                "install the certificate chain exactly as the CA issued it",
            )
        ]
    return []


# -- helpers -----------------------------------------------------------------------------


def _error(problem: str, fix: str) -> Finding:
    return Finding(Severity.ERROR, problem, fix)


def _warning(problem: str, fix: str) -> Finding:
    return Finding(Severity.WARNING, problem, fix)


def format_name(name: x509.Name) -> str:
    """A certificate's subject or issuer as findings (and ``securechat-certs check``) show it."""
    return name.rfc4514_string() or "(empty name)"


def format_time(moment: datetime.datetime) -> str:
    """A certificate's date as findings (and ``securechat-certs check``) show it."""
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _public_der(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    der: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _subject(name: str) -> x509.DNSName | x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _issued_by(cert, cert)


def _names_its_issuer(cert: x509.Certificate) -> bool:
    """True if ``cert`` says where its issuer's certificate is, as public CAs' certificates do."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return False
    return any(d.access_method == AuthorityInformationAccessOID.CA_ISSUERS for d in access)


def _system_roots() -> list[x509.Certificate]:
    """The CA certificates of OpenSSL's default trust store (what clients without --ca use)."""
    context = ssl.create_default_context()
    with warnings.catch_warnings():
        # Some long-trusted roots have a negative serial number, which cryptography
        # warns about; they are the system's business, not a finding of ours.
        warnings.simplefilter("ignore")
        roots = [
            x509.load_der_x509_certificate(der) for der in context.get_ca_certs(binary_form=True)
        ]
    if roots:
        return roots
    # Only a bundle file is loaded up front; a hashed directory (HASH.0 files) is
    # read lazily by OpenSSL, so without a bundle read the directory ourselves.
    directory = Path(ssl.get_default_verify_paths().capath or "")
    for entry in sorted(directory.glob("*.[0-9]")) if directory.is_dir() else []:
        try:
            roots += load_certificates(entry)
        except (OSError, ValueError):
            continue
    return roots
