"""contrib/securechat.service: its ExecStart and ExecReload lines run for real (paths
substituted), and the server speaks sd_notify to a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat.server.sdnotify import notify
from tests.conftest import EVENT_TIMEOUT, Pki

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "securechat.service"
EXAMPLE = ROOT / "contrib" / "securechat.toml"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(60)


def _unit() -> dict[str, str]:
    """The unit's ``Key=value`` lines (the last of each key wins, as in systemd)."""
    settings = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(EVENT_TIMEOUT)
    yield sock
    sock.close()


def _next_state(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_the_unit_asks_for_what_a_service_should_have() -> None:
    unit = _unit()
    assert unit["Type"] == "notify"
    assert unit["User"] == "securechat"
    assert unit["StateDirectory"] == "securechat"
    assert unit["WorkingDirectory"] == "/var/lib/securechat"
    assert unit["ProtectSystem"] == "strict"
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["Restart"] == "on-failure"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_the_units_exec_lines_run_a_server_that_notifies_readiness_reload_and_stop(
    pki: Pki, tmp_path: Path, notify_socket: socket.socket
) -> None:
    # The example config, with this test's certificate and a free port.
    config = tmp_path / "securechat.toml"
    config.write_text(
        EXAMPLE.read_text(encoding="utf-8")
        .replace('"/etc/securechat/fullchain.pem"', f'"{pki.server_pem}"')
        .replace('"/etc/securechat/privkey.pem"', f'"{pki.server_key}"')
        + "port = 0\n",
        encoding="utf-8",
    )
    state = tmp_path / "state"  # StateDirectory, and the WorkingDirectory
    state.mkdir(mode=0o700)
    argv = [
        str(BIN / "securechat-server")
        if word == "/opt/securechat/bin/securechat-server"
        else str(config)
        if word == "/etc/securechat/securechat.toml"
        else word
        for word in shlex.split(_unit()["ExecStart"])
    ]
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname()}
    proc = subprocess.Popen(
        argv, cwd=state, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        ready = _next_state(notify_socket)
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("listening on 127.0.0.1:")
        assert (state / "securechat.db").exists()  # the database went to the state directory
        reload = [
            str(proc.pid) if word == "$MAINPID" else word
            for word in shlex.split(_unit()["ExecReload"])
        ]
        subprocess.run(reload, check=True, timeout=EVENT_TIMEOUT)
        reloading = _next_state(notify_socket)
        assert reloading["RELOADING"] == "1"
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert _next_state(notify_socket) == {"READY": "1"}
        proc.send_signal(signal.SIGTERM)
        assert _next_state(notify_socket) == {"STOPPING": "1"}
        assert proc.wait(EVENT_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait(EVENT_TIMEOUT)
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert "reload: changed: nothing" in log, log


def test_notify_reaches_an_abstract_socket_and_is_silent_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"securechat-test-{os.getpid()}"
        sock.bind("\0" + name)
        sock.settimeout(EVENT_TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1")
        assert sock.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")
