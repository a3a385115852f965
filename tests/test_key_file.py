"""The private key file: a warning when others can read it, and an encrypted key's
passphrase from --key-password-file, never from a prompt (real server processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import Pki, ServerProcess

pytestmark = pytest.mark.timeout(60)


def _encrypted_key(pki: Pki, path: Path, passphrase: bytes) -> Path:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    )
    path.chmod(0o600)
    return path


def _start_and_fail(pki: Pki, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "securechat.server.cli",
            "--cert",
            str(pki.server_pem),
            "--port",
            "0",
            "--db",
            str(tmp_path / "chat.db"),
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_an_encrypted_key_without_a_password_file_is_refused_up_front(
    pki: Pki, tmp_path: Path
) -> None:
    key = _encrypted_key(pki, tmp_path / "server.key", b"correct horse")
    done = _start_and_fail(pki, tmp_path, "--key", str(key))
    assert done.returncode == 2
    assert f"the private key {key} is encrypted: pass --key-password-file" in done.stderr
    assert "Enter PEM pass phrase" not in done.stderr + done.stdout


def test_a_wrong_passphrase_is_refused(pki: Pki, tmp_path: Path) -> None:
    key = _encrypted_key(pki, tmp_path / "server.key", b"correct horse")
    (tmp_path / "pw").write_text("battery staple\n", encoding="utf-8")
    done = _start_and_fail(
        pki, tmp_path, "--key", str(key), "--key-password-file", str(tmp_path / "pw")
    )
    assert done.returncode == 2
    # The start-up certificate check finds it before the TLS context is made.
    assert "or the passphrase is wrong" in done.stderr


def test_an_encrypted_key_loads_with_its_password_file(pki: Pki, tmp_path: Path) -> None:
    key = _encrypted_key(pki, tmp_path / "server.key", b"correct horse")
    (tmp_path / "pw").write_text("correct horse\n", encoding="utf-8")
    server = ServerProcess(
        pki,
        tmp_path / "chat.db",
        port=0,
        extra=("--key", str(key), "--key-password-file", str(tmp_path / "pw")),
    )
    try:
        server.wait_listening()
    finally:
        assert server.terminate() == 0
    assert "readable by" not in server.stderr


def test_a_key_readable_by_others_gets_a_warning_at_start(pki: Pki, tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(pki.server_key.read_bytes())
    key.chmod(0o644)
    server = ServerProcess(pki, tmp_path / "chat.db", port=0, extra=("--key", str(key)))
    try:
        server.wait_listening()
    finally:
        assert server.terminate() == 0
    assert (
        f"the private key {key} is readable by its group and others (mode 0644): chmod 600 {key}"
        in server.stderr
    )
