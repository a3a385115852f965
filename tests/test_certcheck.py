"""securechat-certs check and the server's start-time certificate check, on real certificates.

Certificates come from trustme (a CA with an intermediate, short or expired
validity) or are built with cryptography where trustme cannot make the mistake
(a publicly issued leaf that names its issuer, a client certificate).
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from securechat.certcheck import Finding, Severity, check_server_certificate
from securechat.certs import main as certs_main
from securechat.devcerts import make_ca, make_client_cert, write_cert, write_key
from securechat.tls import sha256_fingerprint

pytestmark = pytest.mark.timeout(60)

NOW = datetime.datetime.now(datetime.UTC)
PROCESS_TIMEOUT = 20.0


def _write_leaf(
    directory: Path,
    leaf: trustme.LeafCert,
    *,
    chain: bool = True,
    name: str = "server",
) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    pems = leaf.cert_chain_pems if chain else leaf.cert_chain_pems[:1]
    cert.write_bytes(b"".join(blob.bytes() for blob in pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def _ca_file(directory: Path, ca: trustme.CA) -> Path:
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _errors(findings: list[Finding], severity: Severity = Severity.ERROR) -> list[str]:
    return [f"{f.problem} | {f.fix}" for f in findings if f.severity is severity]


def test_good_certificate_with_its_ca_and_hosts_has_no_findings(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write_leaf(tmp_path, ca.issue_cert("chat.example", "127.0.0.1"))
    findings = check_server_certificate(
        cert, key, ca=_ca_file(tmp_path, ca), hosts=["chat.example", "127.0.0.1"]
    )
    assert findings == []


def test_check_command_prints_the_fingerprint_clients_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    cert, key = _write_leaf(tmp_path, ca.issue_cert("chat.example"))
    status = certs_main(
        ["check", "--cert", str(cert), "--key", str(key), "--ca", str(_ca_file(tmp_path, ca))]
    )
    out = capsys.readouterr().out
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert status == 0
    assert f"sha256:      {sha256_fingerprint(der)}" in out
    assert "ok: no problems found" in out


def test_expired_certificate_is_an_error_that_says_renew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert(
        "chat.example",
        not_before=NOW - datetime.timedelta(days=100),
        not_after=NOW - datetime.timedelta(days=10),
    )
    cert, key = _write_leaf(tmp_path, leaf)
    status = certs_main(
        ["check", "--cert", str(cert), "--key", str(key), "--ca", str(_ca_file(tmp_path, ca))]
    )
    out = capsys.readouterr().out
    assert status == 1
    [line] = [line for line in out.splitlines() if line.startswith("error:")]
    assert "expired on" in line
    assert "renew" in line


def test_short_validity_is_a_warning_not_an_error(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("chat.example", not_after=NOW + datetime.timedelta(days=10))
    cert, key = _write_leaf(tmp_path, leaf)
    findings = check_server_certificate(cert, key, ca=_ca_file(tmp_path, ca))
    assert _errors(findings) == []
    [warning] = _errors(findings, Severity.WARNING)
    assert "in 9 days" in warning or "in 10 days" in warning


def test_key_of_another_certificate_is_an_error(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, _ = _write_leaf(tmp_path, ca.issue_cert("chat.example"))
    _, other_key = _write_leaf(tmp_path, ca.issue_cert("chat.example"), name="other")
    [error] = _errors(check_server_certificate(cert, other_key, ca=_ca_file(tmp_path, ca)))
    assert "does not belong" in error
    assert str(other_key) in error


def test_host_missing_from_the_names_is_an_error_listing_them(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write_leaf(tmp_path, ca.issue_cert("chat.example", "*.chat.example"))
    findings = check_server_certificate(
        cert,
        key,
        ca=_ca_file(tmp_path, ca),
        hosts=["chat.example", "eu.chat.example", "CHAT.EXAMPLE", "a.b.chat.example"],
    )
    [error] = _errors(findings)
    assert "'a.b.chat.example'" in error
    assert "chat.example, *.chat.example" in error


def test_leaf_without_its_intermediate_names_the_missing_issuer(tmp_path: Path) -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("chat.example")
    ca = _ca_file(tmp_path, root)
    cert, key = _write_leaf(tmp_path, leaf, chain=False)
    [error] = _errors(check_server_certificate(cert, key, ca=ca))
    issuer = x509.load_pem_x509_certificate(cert.read_bytes()).issuer.rfc4514_string()
    assert "holds only the server's certificate" in error
    assert issuer in error
    full, full_key = _write_leaf(tmp_path, leaf, chain=True, name="full")
    assert check_server_certificate(full, full_key, ca=ca) == []


def test_chain_in_the_wrong_order_is_an_error(tmp_path: Path) -> None:
    root = trustme.CA()
    leaf = root.create_child_ca().issue_cert("chat.example")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in reversed(leaf.cert_chain_pems)))
    leaf.private_key_pem.write_to_path(str(key))
    errors = _errors(check_server_certificate(cert, key, ca=_ca_file(tmp_path, root)))
    assert any("does not belong" in e for e in errors)
    assert any("not a chain" in e for e in errors)


def test_client_certificate_is_not_a_server_certificate(tmp_path: Path) -> None:
    ca_cert, ca_key = make_ca()
    cert, key = make_client_cert(ca_cert, ca_key, name="alice")
    write_cert(tmp_path / "ca.pem", ca_cert)
    write_cert(tmp_path / "alice.pem", cert)
    write_key(tmp_path / "alice.key", key)
    errors = _errors(
        check_server_certificate(
            tmp_path / "alice.pem", tmp_path / "alice.key", ca=tmp_path / "ca.pem"
        )
    )
    assert any("not for TLS servers" in e and "clientAuth" in e for e in errors)
    assert any("no subject alternative names" in e for e in errors)


def test_unreadable_files_are_findings_not_exceptions(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    [missing] = _errors(check_server_certificate(tmp_path / "nope.pem", garbage))
    assert "nope.pem" in missing
    [bad] = _errors(check_server_certificate(garbage, garbage))
    assert "no PEM certificate" in bad


def test_check_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        certs_main(["check", "--cert", "x.pem"])
    assert info.value.code == 2
    assert "--key" in capsys.readouterr().err


# -- a publicly issued certificate served without its intermediate ------------------------


def _public_style_leaf(directory: Path) -> tuple[Path, Path, str]:
    """A leaf from an intermediate no trust store knows, naming its issuer's URL (AIA)
    as public CAs' leaves do; the file holds the leaf only. Returns the files and the issuer."""
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing CA R1")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example")]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=80))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier("http://r1.example/issuer.der"),
                    )
                ]
            ),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    write_cert(directory / "cert.pem", cert)
    write_key(directory / "privkey.pem", key)
    return directory / "cert.pem", directory / "privkey.pem", issuer.rfc4514_string()


def test_public_leaf_without_intermediate_is_a_warning_naming_the_issuer(tmp_path: Path) -> None:
    cert, key, issuer = _public_style_leaf(tmp_path)
    [warning] = _errors(check_server_certificate(cert, key), Severity.WARNING)
    assert issuer in warning
    assert "fullchain.pem" in warning


def _server(cert: Path, key: Path, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "securechat.server.cli"),
            *("--cert", str(cert), "--key", str(key), "--port", "0", "--db", str(db)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_server_starts_with_a_warning_for_a_leaf_only_public_certificate(tmp_path: Path) -> None:
    cert, key, issuer = _public_style_leaf(tmp_path)
    proc = _server(cert, key, tmp_path / "chat.db")
    try:
        assert proc.stderr is not None
        lines = []
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"server exited: {lines}"
            lines.append(line)
            if "listening on" in line:
                break
        text = "".join(lines)
        assert "WARNING certificate" in text
        assert issuer in text
    finally:
        proc.terminate()
        proc.wait(PROCESS_TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()


def test_server_refuses_to_start_with_an_expired_certificate(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert(
        "localhost",
        not_before=NOW - datetime.timedelta(days=100),
        not_after=NOW - datetime.timedelta(days=1),
    )
    cert, key = _write_leaf(tmp_path, leaf)
    proc = _server(cert, key, tmp_path / "chat.db")
    _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 2
    assert "expired on" in err
    assert "not starting" in err


# -- --days ---------------------------------------------------------------------------------


def _lifetime(path: Path) -> datetime.timedelta:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def test_days_sets_server_and_client_lifetimes_and_defaults_to_90(tmp_path: Path) -> None:
    five_minutes = datetime.timedelta(minutes=5)  # the back-dating for clock skew
    assert certs_main(["--out", str(tmp_path / "a")]) == 0
    assert _lifetime(tmp_path / "a" / "server.pem") == datetime.timedelta(days=90) + five_minutes
    assert certs_main(["--out", str(tmp_path / "a"), "--days", "30"]) == 0
    assert certs_main(["--out", str(tmp_path / "a"), "--client", "bob", "--days", "7"]) == 0
    assert _lifetime(tmp_path / "a" / "server.pem") == datetime.timedelta(days=30) + five_minutes
    assert _lifetime(tmp_path / "a" / "bob.pem") == datetime.timedelta(days=7) + five_minutes


@pytest.mark.parametrize("days", ["0", "399", "ten", "-1"])
def test_days_out_of_range_is_a_usage_error(
    tmp_path: Path, days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert certs_main(["--out", str(tmp_path), f"--days={days}"]) == 2
    assert "398" in capsys.readouterr().err
    assert not (tmp_path / "server.pem").exists()
