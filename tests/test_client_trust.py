"""The client side of trust: pins on first use, profiles, and advice that fits each failure.

Every test runs a real ``securechat-client`` process against a real TLS server,
with its own ``XDG_CONFIG_HOME`` so the pins and profiles are the test's.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from securechat.client.servers import ServerAddress
from securechat.client.trust import KnownServers
from securechat.errors import ConfigError
from securechat.server.listener import Server
from securechat.tls import server_context, sha256_fingerprint
from tests.conftest import ClientProcess, Pki

pytestmark = pytest.mark.timeout(60)

EXIT_TIMEOUT = 20.0


def _fingerprint(pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return sha256_fingerprint(cert.public_bytes(serialization.Encoding.DER))


@pytest.fixture
def config_home(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def client(config_home: Path) -> Iterator[Callable[..., ClientProcess]]:
    """Start ``securechat-client`` processes (no --ca unless given) with their own config dir."""
    procs: list[ClientProcess] = []

    def _start(*args: str) -> ClientProcess:
        proc = ClientProcess(
            [*args, "--register", "--json"],
            password="pw",
            env={"XDG_CONFIG_HOME": str(config_home)},
        )
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        proc.kill()


def _known(config_home: Path) -> Path:
    return config_home / "securechat" / "known_servers"


# -- trust on first use ---------------------------------------------------------------------


def test_unknown_ca_on_a_pipe_shows_the_fingerprint_and_pins_nothing(
    server: Server, pki: Pki, client: Callable[..., ClientProcess], config_home: Path
) -> None:
    proc = client("--port", str(server.address[1]), "--user", "alice")
    status, err = proc.finish(EXIT_TIMEOUT)
    assert status == 3
    assert _fingerprint(pki.server_pem) in err
    assert "--trust-on-first-use" in err
    assert not _known(config_home).exists()


def test_trust_on_first_use_pins_and_the_pin_is_used_next_time(
    server: Server, pki: Pki, client: Callable[..., ClientProcess], config_home: Path
) -> None:
    port = server.address[1]
    first = client("--port", str(port), "--user", "alice", "--trust-on-first-use")
    connected = first.wait_for("connected")
    assert connected["cert_sha256"] == _fingerprint(pki.server_pem)
    assert (
        "commonName=" in connected["cert_issuer"] or "organizationName=" in connected["cert_issuer"]
    )
    assert first.finish(EXIT_TIMEOUT)[0] == 0
    assert f"localhost:{port} {_fingerprint(pki.server_pem)}" in _known(config_home).read_text()
    second = client("--port", str(port), "--user", "alice")  # no flag: the pin suffices
    assert second.wait_for("connected")["cert_sha256"] == _fingerprint(pki.server_pem)
    assert second.finish(EXIT_TIMEOUT)[0] == 0


@pytest.fixture
def silent_tls_server(pki: Pki) -> Iterator[tuple[int, list[bytes]]]:
    """A TLS server that records every byte a client sends after the handshake."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(EXIT_TIMEOUT)
    ctx = server_context(cert=pki.server_pem, key=pki.server_key)

    def _serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(EXIT_TIMEOUT)
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(65536):
                    received.append(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=_serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1]), received
    listener.close()
    thread.join(EXIT_TIMEOUT)


def test_changed_certificate_is_refused_loudly_before_anything_is_sent(
    silent_tls_server: tuple[int, list[bytes]],
    client: Callable[..., ClientProcess],
    config_home: Path,
) -> None:
    port, received = silent_tls_server
    known = KnownServers(_known(config_home))
    wrong = ":".join(["AB"] * 32)
    known.add(ServerAddress("localhost", port), wrong)
    proc = client("--port", str(port), "--user", "alice", "--trust-on-first-use")
    status, err = proc.finish(EXIT_TIMEOUT)
    assert status == 3
    assert f"THE CERTIFICATE OF localhost:{port} HAS CHANGED" in err
    assert wrong in err
    assert str(_known(config_home)) in err
    assert received == []  # not even the login frame (and its password)
    assert wrong in _known(config_home).read_text()  # the flag never replaces a pin


def test_ca_ignores_pins(
    server: Server, pki: Pki, client: Callable[..., ClientProcess], config_home: Path
) -> None:
    port = server.address[1]
    KnownServers(_known(config_home)).add(ServerAddress("localhost", port), ":".join(["00"] * 32))
    proc = client("--ca", str(pki.ca_pem), "--port", str(port), "--user", "alice")
    proc.wait_for("connected")
    assert proc.finish(EXIT_TIMEOUT)[0] == 0


def test_malformed_known_servers_line_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "known_servers"
    path.write_text("# comment\nlocalhost:7443 AB:CD\n")
    with pytest.raises(ConfigError, match=r"known_servers, line 2"):
        KnownServers(path)


# -- advice ------------------------------------------------------------------------------------


def test_expired_certificate_advice_is_renewal_not_ca(
    make_server: Callable[..., Server],
    pki: Pki,
    tmp_path: Path,
    client: Callable[..., ClientProcess],
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    leaf = pki.ca.issue_cert(
        "localhost",
        not_before=now - datetime.timedelta(days=90),
        not_after=now - datetime.timedelta(days=1),
    )
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "old.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "old.key"))
    server = make_server(cert=tmp_path / "old.pem", key=tmp_path / "old.key")
    proc = client("--ca", str(pki.ca_pem), "--port", str(server.address[1]), "--user", "alice")
    status, err = proc.finish(EXIT_TIMEOUT)
    assert status == 3
    assert "expired" in err
    assert "administrator must renew" in err
    assert "--ca" not in err


def test_name_mismatch_lists_the_names_the_certificate_has(
    make_server: Callable[..., Server],
    pki: Pki,
    tmp_path: Path,
    client: Callable[..., ClientProcess],
) -> None:
    leaf = pki.ca.issue_cert("chat.example", "chat2.example")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "named.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "named.key"))
    server = make_server(cert=tmp_path / "named.pem", key=tmp_path / "named.key")
    proc = client(
        "--ca", str(pki.ca_pem), "--host", f"127.0.0.1:{server.address[1]}", "--user", "alice"
    )
    status, err = proc.finish(EXIT_TIMEOUT)
    assert status == 3
    assert "it lists: chat.example, chat2.example" in err


# -- profiles ---------------------------------------------------------------------------------


def _write_profiles(config_home: Path, text: str) -> Path:
    path = config_home / "securechat" / "client.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_profile_supplies_options_and_the_command_line_overrides_them(
    server: Server, pki: Pki, client: Callable[..., ClientProcess], config_home: Path
) -> None:
    _write_profiles(
        config_home,
        f'[profiles.work]\nhosts = ["localhost"]\nport = {server.address[1]}\n'
        f'ca = "{pki.ca_pem}"\nuser = "alice"\n',
    )
    proc = client("work")
    assert proc.wait_for("connected")["user"] == "alice"
    assert proc.finish(EXIT_TIMEOUT)[0] == 0
    other = client("work", "--user", "bob")
    assert other.wait_for("connected")["user"] == "bob"
    assert other.finish(EXIT_TIMEOUT)[0] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[profiles.work]\nhots = ["x"]\n', "profiles.work.hots: unknown key"),
        ("[profiles.work]\nport = 70000\n", "profiles.work.port: must be a number"),
        ('[profiles.home]\nuser = "a"\n', "no profile 'work' (profiles: home)"),
        ('colour = "red"\n', "unknown key 'colour'"),
        ("[profiles.work\n", "not valid TOML"),
    ],
)
def test_bad_profile_is_refused_with_file_and_key_exit_2(
    client: Callable[..., ClientProcess], config_home: Path, text: str, expected: str
) -> None:
    path = _write_profiles(config_home, text)
    status, err = client("work").finish(EXIT_TIMEOUT)
    assert status == 2
    assert str(path) in err
    assert expected in err


def test_trust_on_first_use_from_a_profile(
    server: Server, client: Callable[..., ClientProcess], config_home: Path
) -> None:
    _write_profiles(
        config_home,
        f'[profiles.lan]\nhosts = "localhost:{server.address[1]}"\nuser = "alice"\n'
        "trust_on_first_use = true\n",
    )
    proc = client("lan")
    proc.wait_for("connected")
    assert proc.finish(EXIT_TIMEOUT)[0] == 0
    assert _known(config_home).exists()


def test_other_ca_certificate_is_not_a_trust_anchor(
    server: Server, other_ca_pem: Path, client: Callable[..., ClientProcess], config_home: Path
) -> None:
    """A wrong --ca is an error with the --ca advice, never trust on first use."""
    proc = client(
        "--ca",
        str(other_ca_pem),
        "--port",
        str(server.address[1]),
        "--user",
        "alice",
        "--trust-on-first-use",
    )
    status, err = proc.finish(EXIT_TIMEOUT)
    assert status == 3
    assert "pass --ca" in err
    assert not _known(config_home).exists()
