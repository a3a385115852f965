"""SIGHUP, with real server processes: a new certificate for new connections while
sessions continue, a broken one kept out, and config keys applied or named for a restart."""

from __future__ import annotations

import hashlib
import shutil
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import EVENT_TIMEOUT, Pki, RawClient, ServerProcess

pytestmark = pytest.mark.timeout(60)


def _fingerprint(client: RawClient) -> str:
    der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _pem_fingerprint(cert: trustme.LeafCert) -> str:
    return hashlib.sha256(
        ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    ).hexdigest()


def _install(cert: trustme.LeafCert, pem: Path, key: Path) -> None:
    """Replace the files as certbot does: write new ones, then rename over the old."""
    new_pem, new_key = pem.with_name(pem.name + ".new"), key.with_name(key.name + ".new")
    cert.cert_chain_pems[0].write_to_path(str(new_pem))
    cert.private_key_pem.write_to_path(str(new_key))
    new_pem.replace(pem)
    new_key.replace(key)


def _wait_for_line(server: ServerProcess, text: str, start: int = 0) -> str:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while time.monotonic() < deadline:
        for line in server.lines[start:]:
            if text in line:
                return line
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}:\n{server.stderr}")
        time.sleep(0.02)
    raise TimeoutError(f"no log line with {text!r}:\n{server.stderr}")


@pytest.fixture
def live_cert(pki: Pki, tmp_path: Path) -> tuple[Path, Path]:
    pem, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(pki.server_pem, pem)
    shutil.copy(pki.server_key, key)
    key.chmod(0o600)
    return pem, key


def test_sighup_gives_new_connections_the_new_certificate_and_sessions_continue(
    pki: Pki,
    tmp_path: Path,
    live_cert: tuple[Path, Path],
    raw_client: Callable[..., RawClient],
) -> None:
    pem, key = live_cert
    server = ServerProcess(
        pki, tmp_path / "chat.db", port=0, extra=("--cert", str(pem), "--key", str(key))
    )
    try:
        port = server.wait_listening()
        alice = raw_client(port)
        alice.login("alice")
        old = _fingerprint(alice)
        renewed = pki.ca.issue_cert("localhost", "127.0.0.1")
        _install(renewed, pem, key)
        mark = len(server.lines)
        server.proc.send_signal(signal.SIGHUP)
        line = _wait_for_line(server, "reload: changed:", mark)
        assert "need a restart to change: nothing" in line
        bob = raw_client(port)
        assert _fingerprint(bob) == _pem_fingerprint(renewed) != old
        bob.login("bob")
        # The session from before the reload carries on, on its old certificate.
        alice.send("say", room="#general", text="still here after the reload")
        bob.expect("message", text="still here after the reload")
        assert _fingerprint(alice) == old

        # A broken certificate keeps the one in use, and says why.
        pem.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n", encoding="ascii")
        mark = len(server.lines)
        server.proc.send_signal(signal.SIGHUP)
        assert "cannot load certificate" in _wait_for_line(
            server, "reload: keeping the old certificate and key", mark
        )
        _wait_for_line(server, "reload: changed:", mark)
        carol = raw_client(port)
        assert _fingerprint(carol) == _pem_fingerprint(renewed)
        # A key that does not match the certificate is kept out the same way.
        _install(renewed, pem, key)
        pki.ca.issue_cert("localhost").private_key_pem.write_to_path(str(key))
        mark = len(server.lines)
        server.proc.send_signal(signal.SIGHUP)
        _wait_for_line(server, "reload: keeping the old certificate and key", mark)
        assert _fingerprint(raw_client(port)) == _pem_fingerprint(renewed)
        alice.send("say", room="#general", text="and after a failed one")
        bob.expect("message", text="and after a failed one")
    finally:
        status = server.terminate()
    assert status == 0, server.stderr


def test_sighup_rereads_the_config_file_applies_what_it_can_and_names_the_rest(
    pki: Pki, tmp_path: Path, raw_client: Callable[..., RawClient]
) -> None:
    config = tmp_path / "s.toml"
    config.write_text("max-sessions = 10\nhistory-on-join = 20\n", encoding="utf-8")
    server = ServerProcess(pki, tmp_path / "chat.db", port=0, extra=("--config", str(config)))
    try:
        port = server.wait_listening()
        config.write_text(
            'max-sessions = 1\nhistory-on-join = 5\nlog-level = "debug"\n', encoding="utf-8"
        )
        mark = len(server.lines)
        server.proc.send_signal(signal.SIGHUP)
        line = _wait_for_line(server, "reload: changed:", mark)
        assert "max-sessions 10 -> 1" in line
        assert "log-level INFO -> DEBUG" in line
        assert line.endswith("need a restart to change: history-on-join")
        first = raw_client(port)
        first.login("alice")
        second = raw_client(port)
        second.send("login", user="alice", password="pw")
        second.expect("error", code="too_many_sessions")

        config.write_text("max-sessions = oops\n", encoding="utf-8")
        mark = len(server.lines)
        server.proc.send_signal(signal.SIGHUP)
        assert "not valid TOML" in _wait_for_line(server, "configuration not reloaded", mark)
    finally:
        status = server.terminate()
    assert status == 0, server.stderr
