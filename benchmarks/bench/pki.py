"""Certificates for the benchmark: a CA, the server's certificate, numbered client ones.

They are cached between runs (``--cache``): 5,000 client certificates take a while to make.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from securechat.devcerts import (
    load_ca,
    make_ca,
    make_client_cert,
    make_server_cert,
    write_cert,
    write_key,
)

from .common import HOST, SERVER_NAME

__all__ = ["Pki", "cert_name", "prepare_pki"]


@dataclass(frozen=True)
class Pki:
    """The cached CA, the server's certificate and numbered client certificates."""

    directory: Path
    ca_pem: Path
    server_pem: Path
    server_key: Path

    def client_pem(self, index: int) -> Path:
        """Certificate and key (one PEM file) of client ``index``, common name cert_name()."""
        return self.directory / "clients" / f"{cert_name(index)}.pem"


def cert_name(index: int) -> str:
    """The user name in client certificate ``index``."""
    return f"c{index:05d}"


def prepare_pki(cache: Path, *, clients: int) -> Pki:
    """Make (or reuse) a CA, a server certificate and ``clients`` client certificates.

    Client certificates are written as one PEM file each (certificate then key)
    without the fsyncs of ``write_cert``/``write_key``: they are a cache, and
    thousands of fsyncs would dominate the set-up. A lock file keeps two
    benchmark processes from generating at once.
    """
    directory = cache / "pki-v1"
    (directory / "clients").mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pki = Pki(
            directory, directory / "ca.pem", directory / "server.pem", directory / "server.key"
        )
        fresh = not (pki.ca_pem.exists() and pki.server_pem.exists() and pki.server_key.exists())
        if fresh:
            for old in (directory / "clients").glob("*.pem"):
                old.unlink()
            ca_cert, ca_key = make_ca(common_name="securechat benchmark CA")
            write_cert(directory / "ca.pem", ca_cert)
            write_key(directory / "ca.key", ca_key)
            cert, key = make_server_cert(ca_cert, ca_key, hosts=(SERVER_NAME, HOST))
            write_cert(pki.server_pem, cert)
            write_key(pki.server_key, key)
        ca_cert, ca_key = load_ca(directory)
        for index in range(clients):
            path = pki.client_pem(index)
            if path.exists():
                continue
            cert, key = make_client_cert(ca_cert, ca_key, name=cert_name(index))
            pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            tmp.replace(path)
    return pki
