"""Tests for securechat-certs: the files it writes and real TLS handshakes with them."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from securechat.certs import main
from securechat.devcerts import (
    DEFAULT_HOSTS,
    load_ca,
    make_ca,
    make_client_cert,
    make_server_cert,
    write_cert,
    write_key,
)
from securechat.errors import ConfigError

TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3"),
]

IO_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def dev_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate directory with the CA, the server and client "alice"; read-only use."""
    out = tmp_path_factory.mktemp("certs")
    assert main(["--out", str(out), "--host", "chat.example"]) == 0
    assert main(["--out", str(out), "--client", "alice"]) == 0
    return out


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 000, so only the code itself can make a file private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _client_context(
    certs: Path, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, *, user: str | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certs / "ca.pem")
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.check_hostname = True
    context.minimum_version = context.maximum_version = version
    if user is not None:
        context.load_cert_chain(certs / f"{user}.pem", certs / f"{user}.key")
    return context


def _server_context(certs: Path, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        context.load_verify_locations(certs / "ca.pem")
    return context


def _handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, server_hostname: str
) -> dict[str, Any]:
    """Run one TLS connection over 127.0.0.1; the client certificate the server saw."""
    seen: dict[str, Any] = {}
    errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(IO_TIMEOUT)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(IO_TIMEOUT)
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    seen.update(tls.getpeercert() or {})
                    tls.sendall(b"ok")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            port = listener.getsockname()[1]
            with (
                socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw,
                client_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                # With TLS 1.3 the server judges the client certificate after the
                # client's handshake is done, so only this read proves it was accepted.
                assert tls.recv(2) == b"ok"
        finally:
            thread.join(IO_TIMEOUT)
    if errors:
        raise errors[0]
    return seen


def _common_name(peer: dict[str, Any]) -> str:
    return str(next(value for rdn in peer["subject"] for key, value in rdn if key == "commonName"))


@pytest.mark.parametrize("version", TLS_VERSIONS)
@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_server_certificate_passes_strict_verification(
    dev_certs: Path, version: ssl.TLSVersion, hostname: str
) -> None:
    _handshake(_server_context(dev_certs), _client_context(dev_certs, version), hostname)


def test_server_certificate_is_refused_for_unlisted_host(dev_certs: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(_server_context(dev_certs), _client_context(dev_certs), "example.org")


def test_private_keys_are_created_mode_0600(tmp_path: Path, open_umask: None) -> None:
    out = tmp_path / "certs"
    out.mkdir()
    # A key left world-readable by some earlier tool must not keep its mode.
    (out / "server.key").write_text("old")
    (out / "server.key").chmod(0o644)

    assert main(["--out", str(out)]) == 0
    assert main(["--out", str(out), "--client", "bob"]) == 0

    for key in ("ca.key", "server.key", "bob.key"):
        assert _mode(out / key) == 0o600, key
    for cert in ("ca.pem", "server.pem", "bob.pem"):
        assert _mode(out / cert) == 0o644, cert
    assert sorted(p.name for p in out.iterdir()) == [
        "bob.key", "bob.pem", "ca.key", "ca.pem", "server.key", "server.pem",
    ]  # fmt: skip


def test_write_key_never_widens_permissions(tmp_path: Path, open_umask: None) -> None:
    _, key = make_ca()
    path = tmp_path / "direct.key"
    write_key(path, key)
    assert _mode(path) == 0o600
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()  # PKCS#8, unencrypted


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_client_certificate_is_signed_by_existing_ca(
    dev_certs: Path, version: ssl.TLSVersion
) -> None:
    alice = _load(dev_certs / "alice.pem")
    alice.verify_directly_issued_by(_load(dev_certs / "ca.pem"))
    assert alice.subject.rfc4514_string() == "CN=alice"

    peer = _handshake(
        _server_context(dev_certs, require_client_cert=True),
        _client_context(dev_certs, version, user="alice"),
        "localhost",
    )

    assert _common_name(peer) == "alice"


def test_rerun_reuses_existing_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--client", "carol"]) == 0
    ca_before = (tmp_path / "ca.pem").read_bytes()
    server_before = (tmp_path / "server.pem").read_bytes()
    capsys.readouterr()

    assert main(["--out", str(tmp_path), "--host", "chat.example"]) == 0

    out = capsys.readouterr().out
    assert "Reusing the CA" in out
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "server.pem").read_bytes() != server_before
    ca = _load(tmp_path / "ca.pem")
    _load(tmp_path / "carol.pem").verify_directly_issued_by(ca)
    _load(tmp_path / "server.pem").verify_directly_issued_by(ca)


def test_first_run_prints_files_and_how_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "dir"  # created, parents included

    assert main(["--out", str(out)]) == 0

    printed = capsys.readouterr().out
    for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
        assert f"wrote {out / name}" in printed
    assert f"securechat-server --cert {out / 'server.pem'} --key {out / 'server.key'}" in printed
    assert f"securechat-client --ca {out / 'ca.pem'} --user NAME" in printed


def test_client_without_ca_fails_with_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path), "--client", "alice"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert f"run `securechat-certs --out {tmp_path}` first" in captured.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    ["", "x" * 33, "bad name", "../evil", "a/b", "ünï", "tab\there", "name\n", "é"],
)
def test_invalid_client_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    before = sorted(tmp_path.iterdir())
    capsys.readouterr()

    assert main(["--out", str(tmp_path), "--client", name]) == 2

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "not a valid user name" in err
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("name", ["x" * 32, "A-b_9"])
def test_longest_and_mixed_client_names_are_accepted(tmp_path: Path, name: str) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--client", name]) == 0
    assert _load(tmp_path / f"{name}.pem").subject.rfc4514_string() == f"CN={name}"


@pytest.mark.parametrize("name", ["ca", "CA", "server"])
def test_client_name_cannot_replace_ca_or_server_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    contents = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()

    assert main(["--out", str(tmp_path), "--client", name]) == 2

    assert "reserved" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == contents


def test_extra_host_appears_in_san(tmp_path: Path) -> None:
    hosts = ["chat.example", "192.0.2.7", "2001:db8::1", "LOCALHOST"]
    assert main(["--out", str(tmp_path), *[arg for h in hosts for arg in ("--host", h)]]) == 0

    san = _load(tmp_path / "server.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "chat.example"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.7", "2001:db8::1")
    ]
    _handshake(_server_context(tmp_path), _client_context(tmp_path), "chat.example")


@pytest.mark.parametrize("host", ["bad host", "", "under_score.example", "-x.example", "a..b"])
def test_invalid_host_is_refused_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    out = tmp_path / "certs"

    assert main(["--out", str(out), f"--host={host}"]) == 2

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "neither an IP address nor a valid DNS name" in err
    assert not out.exists()


def test_leaf_lifetime_is_at_most_366_days(dev_certs: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for name in ("server.pem", "alice.pem"):
        cert = _load(dev_certs / name)
        assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=366)
        # Back-dated so that a peer whose clock is slightly behind still accepts it.
        assert cert.not_valid_before_utc <= now - datetime.timedelta(minutes=1)
    ca = _load(dev_certs / "ca.pem")
    assert ca.not_valid_after_utc - now > datetime.timedelta(days=3000)


def test_ca_extensions_are_critical(dev_certs: Path) -> None:
    ca = _load(dev_certs / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize(
    ("name", "purposes"),
    [
        # clientAuth as well: a cluster server dials the others with its certificate.
        ("server.pem", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("alice.pem", [ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_leaf_extensions_chain_to_the_ca(
    dev_certs: Path, name: str, purposes: list[x509.ObjectIdentifier]
) -> None:
    ca = _load(dev_certs / "ca.pem")
    leaf = _load(dev_certs / name)
    extensions = leaf.extensions
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == purposes
    extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert leaf.issuer == ca.subject


def test_keys_are_p256_and_signatures_sha256(dev_certs: Path) -> None:
    serials = set()
    for name in ("ca.pem", "server.pem", "alice.pem"):
        cert = _load(dev_certs / name)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        assert 0 < cert.serial_number < 2**159
        serials.add(cert.serial_number)
    assert len(serials) == 3


def test_library_functions_compose_without_the_command_line(tmp_path: Path) -> None:
    ca_cert, ca_key = make_ca(common_name="test CA")
    write_cert(tmp_path / "ca.pem", ca_cert)
    write_key(tmp_path / "ca.key", ca_key)

    loaded_cert, loaded_key = load_ca(tmp_path)
    server, _ = make_server_cert(loaded_cert, loaded_key, hosts=["only.example"])
    client, _ = make_client_cert(loaded_cert, loaded_key, name="dave")

    assert loaded_cert == ca_cert
    server.verify_directly_issued_by(ca_cert)
    client.verify_directly_issued_by(ca_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["only.example"]
    assert "localhost" in DEFAULT_HOSTS


def test_load_ca_refuses_a_key_from_another_ca(tmp_path: Path) -> None:
    cert, _ = make_ca()
    _, other_key = make_ca()
    write_cert(tmp_path / "ca.pem", cert)
    write_key(tmp_path / "ca.key", other_key)

    with pytest.raises(ConfigError, match="does not belong"):
        load_ca(tmp_path)


def test_load_ca_refuses_garbage(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ca.key").write_text("not a key")

    with pytest.raises(ConfigError, match="not a PEM certificate"):
        load_ca(tmp_path)


def test_corrupt_ca_is_reported_not_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ca.key").write_text("not a key")

    assert main(["--out", str(tmp_path)]) == 2

    assert "not a PEM certificate" in capsys.readouterr().err
    assert (tmp_path / "ca.pem").read_text() == "not a certificate"


@pytest.mark.parametrize(
    "argv",
    [[], ["--out"], ["--out", "x", "--bogus"], ["--out", "x", "--client", "a", "--host", "h"]],
    ids=["no-out", "out-without-dir", "unknown-option", "client-with-host"],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # should "x" be created, not in the working tree

    assert main(argv) == 2

    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith("securechat-certs: error: ")
    assert "Traceback" not in captured.err


def test_unwritable_directory_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    assert main(["--out", str(blocker / "sub")]) == 2

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "cannot write" in err


def test_module_runs_with_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "securechat.certs", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "server.pem").exists()
