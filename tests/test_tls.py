"""The TLS profile, proven with real handshakes on 127.0.0.1.

Each test connects a real client (pinned to a version, cipher or group) to a real
in-process server, or to a context from securechat.tls on a plain listener, and
checks what the handshake does. Nothing is mocked.
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from securechat.errors import CertificateVerifyError, ConfigError, TLSError
from securechat.server.listener import Server
from securechat.tls import (
    GROUPS,
    INTERMEDIATE_CIPHERS,
    client_context,
    describe_tls_error,
    server_context,
)
from securechat.wire.protocol import Decoder, Frame
from tests.conftest import TLS_VERSIONS, Pki, RawClient

IO_TIMEOUT = 5.0
VERSION_IDS = ["tls1.2", "tls1.3"]


@dataclass(frozen=True)
class RsaPki:
    """A CA and an RSA server certificate, for key-exchange tests.

    In TLS 1.2 an ECDSA certificate's own curve must be among the client's groups,
    so a P-384-only client cannot use the P-256 certificate whatever the server's
    group list says. With an RSA certificate the group is only the key exchange.
    """

    ca_pem: Path
    server_pem: Path
    server_key: Path


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> RsaPki:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.RSA)
    d = tmp_path_factory.mktemp("rsa")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    cert.private_key_pem.write_to_path(str(d / "server.key"))
    return RsaPki(d / "ca.pem", d / "server.pem", d / "server.key")


@pytest.fixture
def rsa_server(make_server: Callable[..., Server], rsa_pki: RsaPki) -> Server:
    """A chat server whose certificate has an RSA key."""
    return make_server(cert=rsa_pki.server_pem, key=rsa_pki.server_key)


def _client_ctx(
    pki: Pki | RsaPki,
    *,
    version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    curve: str | None = None,
) -> ssl.SSLContext:
    """A verifying client context, optionally pinned to a version, cipher list or group."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    return ctx


def _connect(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> ssl.SSLSocket:
    """A completed TLS handshake with 127.0.0.1:port (or the handshake's exception)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def _first_frame(sock: ssl.SSLSocket) -> Frame:
    """The first frame the server sends on ``sock``."""
    decoder = Decoder()
    while (frame := decoder.next_frame()) is None:
        data = sock.recv(65536)
        assert data, "server closed before sending a frame"
        decoder.feed(data)
    return frame


def _assert_refused(port: int, ctx: ssl.SSLContext) -> ssl.SSLError:
    with pytest.raises(ssl.SSLError) as info:
        _connect(port, ctx).close()
    return info.value


def _assert_serving(port: int, raw_client: Callable[..., RawClient], user: str) -> None:
    """A fresh client still gets a hello and can log in."""
    client = raw_client(port)
    assert client.login(user).get("user") == user


@pytest.fixture
def plain_listener() -> Iterator[Callable[[ssl.SSLContext], int]]:
    """Serve TLS handshakes with a given server context on a plain listener in a thread.

    Used where the test is about a bare context, not the chat server around it.
    """
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def _serve(ctx: ssl.SSLContext) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(IO_TIMEOUT)
        listeners.append(listener)

        def _run() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

        thread = threading.Thread(target=_run, daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    yield _serve
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(IO_TIMEOUT)


# -- versions ----------------------------------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_client_pinned_to_supported_version_gets_hello(
    server: Server, raw_client: Callable[..., RawClient], version: ssl.TLSVersion
) -> None:
    client = raw_client(server.address[1], tls_version=version)
    assert client.hello.type == "hello"
    assert (
        client.sock.version()
        == {
            ssl.TLSVersion.TLSv1_2: "TLSv1.2",
            ssl.TLSVersion.TLSv1_3: "TLSv1.3",
        }[version]
    )
    assert client.login("alice").get("tls_version") == client.sock.version()


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1], ids=["tls1.1", "tls1.0"]
)
def test_legacy_tls_client_is_refused_and_server_keeps_serving(
    server: Server, raw_client: Callable[..., RawClient], version: ssl.TLSVersion
) -> None:
    port = server.address[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        # Without SECLEVEL=0, OpenSSL 3 would not even offer TLS 1.0/1.1.
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = version
    error = _assert_refused(port, ctx)
    # Normally the server's protocol_version alert; a client OpenSSL built without
    # TLS 1.0/1.1 refuses on its own, which proves less but is still a refusal.
    assert error.reason in {"TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"}, error
    _assert_serving(port, raw_client, "alice")


def test_tls_min_1_3_refuses_tls_1_2_and_accepts_1_3(
    make_server: Callable[..., Server], raw_client: Callable[..., RawClient], pki: Pki
) -> None:
    port = make_server(tls_min="1.3").address[1]
    _assert_refused(port, _client_ctx(pki, version=ssl.TLSVersion.TLSv1_2))
    client = raw_client(port, tls_version=ssl.TLSVersion.TLSv1_3)
    assert client.sock.version() == "TLSv1.3"
    assert client.hello.type == "hello"


def test_tls_min_other_than_1_2_or_1_3_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"--tls-min must be 1\.2 or 1\.3"):
        server_context(cert=pki.server_pem, key=pki.server_key, tls_min="1.1")


# -- cipher suites -------------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_tls12_client_offering_only_cbc_is_refused(
    server: Server, raw_client: Callable[..., RawClient], pki: Pki, cipher: str
) -> None:
    ctx = _client_ctx(pki, version=ssl.TLSVersion.TLSv1_2, ciphers=f"{cipher}:@SECLEVEL=0")
    assert [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"] == [cipher]
    _assert_refused(server.address[1], ctx)
    _assert_serving(server.address[1], raw_client, "alice")


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_the_same_cbc_client_is_accepted_by_a_permissive_context(
    plain_listener: Callable[[ssl.SSLContext], int], pki: Pki, cipher: str
) -> None:
    # Control for the test above: the client can negotiate the suite, so the
    # refusal comes from the server's cipher list.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("ALL:@SECLEVEL=0")
    permissive.load_cert_chain(str(pki.server_pem), str(pki.server_key))
    port = plain_listener(permissive)
    ctx = _client_ctx(pki, version=ssl.TLSVersion.TLSv1_2, ciphers=f"{cipher}:@SECLEVEL=0")
    with _connect(port, ctx) as sock:
        assert sock.cipher()[0] == cipher  # type: ignore[index]
        assert sock.recv(2) == b"ok"


def test_tls12_client_offering_ecdhe_gcm_is_accepted(server: Server, pki: Pki) -> None:
    ctx = _client_ctx(pki, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    with _connect(server.address[1], ctx) as sock:
        name, protocol, _bits = sock.cipher()  # type: ignore[misc]
        assert (name, protocol) == ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2")
        assert name.startswith("ECDHE-") and "-GCM-" in name
        assert _first_frame(sock).type == "hello"


def test_default_tls12_client_negotiates_an_intermediate_aead_suite(
    server: Server, pki: Pki
) -> None:
    with _connect(server.address[1], _client_ctx(pki, version=ssl.TLSVersion.TLSv1_2)) as sock:
        name = sock.cipher()[0]  # type: ignore[index]
    assert name in INTERMEDIATE_CIPHERS.split(":")


def test_server_offers_only_intermediate_tls12_suites(pki: Pki) -> None:
    ctx = server_context(cert=pki.server_pem, key=pki.server_key)
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert tls12 == set(INTERMEDIATE_CIPHERS.split(":"))
    assert all(c.startswith("ECDHE-") and ("-GCM-" in c or "CHACHA20" in c) for c in tls12)


# -- key exchange groups --------------------------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_client_offering_only_p521_is_refused(
    rsa_server: Server,
    rsa_pki: RsaPki,
    raw_client: Callable[..., RawClient],
    version: ssl.TLSVersion,
) -> None:
    port = rsa_server.address[1]
    _assert_refused(port, _client_ctx(rsa_pki, version=version, curve="secp521r1"))
    with _connect(port, _client_ctx(rsa_pki, version=version)) as sock:
        assert _first_frame(sock).type == "hello"


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_the_same_p521_client_is_accepted_by_an_unrestricted_context(
    plain_listener: Callable[[ssl.SSLContext], int], rsa_pki: RsaPki, version: ssl.TLSVersion
) -> None:
    # Control for the test above: the refusal comes from the server's group list.
    unrestricted = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    unrestricted.load_cert_chain(str(rsa_pki.server_pem), str(rsa_pki.server_key))
    port = plain_listener(unrestricted)
    with _connect(port, _client_ctx(rsa_pki, version=version, curve="secp521r1")) as sock:
        assert sock.recv(2) == b"ok"


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_p521_only_client_is_refused_by_a_bare_server_context_too(
    plain_listener: Callable[[ssl.SSLContext], int], rsa_pki: RsaPki, version: ssl.TLSVersion
) -> None:
    # The restriction lives in server_context itself, not in the server around it.
    port = plain_listener(server_context(cert=rsa_pki.server_pem, key=rsa_pki.server_key))
    _assert_refused(port, _client_ctx(rsa_pki, version=version, curve="secp521r1"))


@pytest.mark.parametrize("curve", ["prime256v1", "secp384r1"])
@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_client_offering_p256_or_p384_is_accepted(
    rsa_server: Server, rsa_pki: RsaPki, version: ssl.TLSVersion, curve: str
) -> None:
    ctx = _client_ctx(rsa_pki, version=version, curve=curve)
    with _connect(rsa_server.address[1], ctx) as sock:
        assert _first_frame(sock).type == "hello"


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_p256_client_is_accepted_with_the_ecdsa_certificate(
    server: Server, pki: Pki, version: ssl.TLSVersion
) -> None:
    with _connect(server.address[1], _client_ctx(pki, version=version, curve="prime256v1")) as s:
        assert _first_frame(s).type == "hello"


def test_groups_are_x25519_p256_p384() -> None:
    assert GROUPS == "X25519:P-256:P-384"


# -- other options ---------------------------------------------------------------------


@pytest.mark.parametrize("tls_min", ["1.2", "1.3"])
def test_server_context_turns_off_compression_and_renegotiation(pki: Pki, tls_min: str) -> None:
    ctx = server_context(cert=pki.server_pem, key=pki.server_key, tls_min=tls_min)
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert (
        ctx.minimum_version
        == {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[tls_min]
    )
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_negotiated_connection_has_no_compression(
    server: Server, pki: Pki, version: ssl.TLSVersion
) -> None:
    with _connect(server.address[1], _client_ctx(pki, version=version)) as sock:
        assert sock.compression() is None


def test_server_context_with_client_ca_requires_client_certificates(pki: Pki) -> None:
    ctx = server_context(cert=pki.server_pem, key=pki.server_key, client_ca=pki.ca_pem)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert server_context(cert=pki.server_pem, key=pki.server_key).verify_mode == ssl.CERT_NONE


# -- client context and error messages ---------------------------------------------------


def test_client_context_verifies_chain_and_host_name_by_san_only(pki: Pki) -> None:
    ctx = client_context(ca=pki.ca_pem)
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.hostname_checks_common_name is False
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_client_context_completes_handshake_with_the_right_ca(
    server: Server, pki: Pki, version: ssl.TLSVersion
) -> None:
    ctx = client_context(ca=pki.ca_pem)
    ctx.minimum_version = ctx.maximum_version = version
    with _connect(server.address[1], ctx) as sock:
        assert _first_frame(sock).type == "hello"


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_wrong_ca_is_a_certificate_error_that_suggests_ca(
    server: Server, other_ca_pem: Path, version: ssl.TLSVersion
) -> None:
    ctx = client_context(ca=other_ca_pem)
    ctx.minimum_version = ctx.maximum_version = version
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _connect(server.address[1], ctx)
    error = describe_tls_error(info.value, host="localhost")
    assert isinstance(error, CertificateVerifyError)
    assert "--ca" in str(error)
    assert "certificate verification failed" in str(error)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_wrong_host_name_is_a_certificate_error_that_suggests_host(
    server: Server, pki: Pki, version: ssl.TLSVersion
) -> None:
    ctx = client_context(ca=pki.ca_pem)
    ctx.minimum_version = ctx.maximum_version = version
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _connect(server.address[1], ctx, server_hostname="wrong.example")
    error = describe_tls_error(info.value, host="wrong.example")
    assert isinstance(error, CertificateVerifyError)
    assert "--host" in str(error)
    assert "'wrong.example'" in str(error)
    assert "--ca" not in str(error)


def test_plain_ssl_error_is_described_as_a_handshake_failure(server: Server, pki: Pki) -> None:
    ctx = _client_ctx(pki, version=ssl.TLSVersion.TLSv1_2, curve="secp521r1")
    with pytest.raises(ssl.SSLError) as info:
        _connect(server.address[1], ctx)
    error = describe_tls_error(info.value)
    assert type(error) is TLSError
    assert str(error).startswith("TLS handshake failed: ")


def test_missing_client_ca_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope-ca.pem"
    with pytest.raises(ConfigError, match=r"nope-ca\.pem"):
        client_context(ca=missing)


def test_client_cert_without_key_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="--cert and --key go together"):
        client_context(ca=pki.ca_pem, cert=pki.alice_pem)


# -- server context configuration errors ----------------------------------------------------


def test_missing_certificate_file_is_a_config_error_naming_it(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing-cert.pem"
    with pytest.raises(ConfigError) as info:
        server_context(cert=missing, key=pki.server_key)
    assert str(missing) in str(info.value)
    assert isinstance(info.value.__cause__, OSError | ssl.SSLError)


def test_missing_key_file_is_a_config_error_naming_it(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(ConfigError) as info:
        server_context(cert=pki.server_pem, key=missing)
    assert str(missing) in str(info.value)


def test_mismatched_key_is_a_config_error_naming_both_files(pki: Pki) -> None:
    with pytest.raises(ConfigError) as info:
        server_context(cert=pki.server_pem, key=pki.alice_key)
    message = str(info.value)
    assert str(pki.server_pem) in message
    assert str(pki.alice_key) in message
    assert "key matches" in message


def test_unreadable_client_ca_is_a_config_error_naming_it(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "clients-ca.pem"
    with pytest.raises(ConfigError, match=r"clients-ca\.pem"):
        server_context(cert=pki.server_pem, key=pki.server_key, client_ca=missing)


# -- resumption -------------------------------------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=VERSION_IDS)
def test_server_offers_no_session_resumption(
    server: Server, pki: Pki, version: ssl.TLSVersion
) -> None:
    """No tickets in either version (a TLS 1.2 ticket key is never rotated) and no
    session-ID cache: a second connection offering the first one's session gets a
    full handshake."""
    ctx = _client_ctx(pki, version=version)
    with _connect(server.address[1], ctx) as first:
        _first_frame(first)  # TLS 1.3 tickets, if any, arrive after the handshake
        session = first.session
        assert session is not None
        assert not session.has_ticket
    raw = socket.create_connection(("127.0.0.1", server.address[1]), timeout=IO_TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as second:
        _first_frame(second)
        assert not second.session_reused
