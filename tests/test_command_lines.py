"""Every command says its version, and refuses a bad option value in one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from securechat.client.cli import main as client_main
from securechat.server.cli import main as server_main

BIN = Path(sys.executable).parent
COMMANDS = ("securechat-server", "securechat-client", "securechat-certs")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_prints_the_package_version(command: str) -> None:
    done = subprocess.run(
        [str(BIN / command), "--version"], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{command} {metadata.version('securechat')}"


BAD_SERVER_VALUES = [
    (["--port", "99999"], "--port: 99999 is not a whole number from 0 to 65535"),
    (["--port", "-1"], "--port: -1 is not a whole number from 0 to 65535"),
    (["--peer-port", "70000"], "--peer-port: 70000 is not a whole number from 0 to 65535"),
    (["--log-level", "chatty"], "--log-level: invalid choice: 'CHATTY'"),
    (["--io-threads", "0"], "--io-threads: 0 is not a whole number from 1 to 64"),
    (["--max-sessions", "0"], "--max-sessions: 0 is not a whole number of at least 1"),
    (["--retention-days", "-3"], "--retention-days: -3 is not a whole number of at least 0"),
    (["--message-rate", "nan"], "--message-rate: nan is not a number above 0"),
    (["--ping-interval", "0"], "--ping-interval: 0 is not a number above 0"),
    (["--frame-timeout", "soon"], "--frame-timeout: 'soon' is not a number above 0"),
    (["--max-file-size", "1.5"], "--max-file-size: '1.5' is not a whole number of at least 0"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("argv", "message"), BAD_SERVER_VALUES, ids=str)
def test_a_bad_server_option_value_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        server_main(["--cert", "c.pem", "--key", "k.pem", *argv])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("securechat-server: error: argument ")
    assert message in err


@pytest.mark.timeout(10)
def test_a_bad_client_port_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        client_main(["--user", "alice", "--port", "65536"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "securechat-client: error: argument --port: 65536 is not a whole number from 1 to "
        "65535 (see securechat-client --help)\n"
    )


@pytest.mark.timeout(30)
def test_port_out_of_range_from_the_real_command_is_no_traceback() -> None:
    done = subprocess.run(
        [str(BIN / "securechat-server"), "--cert", "c", "--key", "k", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
