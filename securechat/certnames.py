"""The names a certificate is valid for, and whether a host name is one of them.

What a TLS client checks before it talks to a server: the certificate's subject
alternative names (DNS names and IP addresses; the common name is ignored) must
cover the host it dialled. :mod:`securechat.certcheck` uses this to warn an
administrator, the client to explain a refused certificate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cryptography import x509

__all__ = ["certificate_names", "names_cover"]


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and addresses a certificate is valid for (its SAN), in its order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return names


def names_cover(names: Sequence[str], host: str) -> bool:
    """True if a client connecting to ``host`` accepts a certificate listing ``names``.

    The RFC 6125 rules OpenSSL applies: addresses match exactly, names without
    regard to case, and ``*.example.com`` stands for exactly one leftmost label.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        return any(_same_address(name, address) for name in names)
    host = host.lower().rstrip(".")
    for name in (n.lower() for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _same_address(name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(name) == address
    except ValueError:
        return False
