"""The server's log: a line per security-relevant event with the account, nothing from the
network able to start a line of its own, and --log-format json (real server processes)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.server.logs import JsonFormatter, TextFormatter
from tests.conftest import EVENT_TIMEOUT, Pki, RawClient, ServerProcess

pytestmark = pytest.mark.timeout(60)

FORGED = "ls\u2028FAKE 2026-01-01 INFO root logged in\u202e\u2029\r\nINFO forged"


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("securechat.test", logging.INFO, __file__, 1, msg, args, info)


def test_a_text_record_is_one_line_whatever_its_arguments_hold() -> None:
    line = TextFormatter().format(_record("%s: closed: %s", "127.0.0.1:5", FORGED))
    assert "\n" not in line
    assert "\r" not in line
    assert "\u2028" not in line and "\u2029" not in line and "\u202e" not in line
    assert line.endswith(
        "127.0.0.1:5: closed: ls<U+2028>FAKE 2026-01-01 INFO root logged in<U+202E><U+2029>^M^JINFO"
        " forged"
    )


def test_a_traceback_keeps_its_lines_each_indented() -> None:
    try:
        raise ValueError(f"bad name {FORGED}")
    except ValueError as exc:
        text = TextFormatter().format(_record("failed", exc=exc))
    first, *rest = text.split("\n")
    assert first.endswith("INFO failed")
    assert rest and all(line.startswith("    ") for line in rest)
    assert "\u2028" not in text


def test_a_json_record_is_one_object_on_one_line() -> None:
    line = JsonFormatter().format(_record("closed: %s", FORGED))
    assert "\n" not in line and "\u2028" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "securechat.test"
    assert entry["message"].startswith("closed: ls<U+2028>FAKE")


def _wait_for(server: ServerProcess, text: str) -> str:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while time.monotonic() < deadline:
        for line in list(server.lines):
            if text in line:
                return line
        time.sleep(0.02)
    raise TimeoutError(f"no log line with {text!r}:\n{server.stderr}")


def test_security_events_are_logged_with_the_account_and_forged_lines_are_not(
    pki: Pki, tmp_path: Path, raw_client: Callable[..., RawClient]
) -> None:
    server = ServerProcess(pki, tmp_path / "chat.db", port=0)
    try:
        port = server.wait_listening()
        alice = raw_client(port)
        alice.login("alice", "alice-pw")
        _wait_for(server, "registered account alice")
        _wait_for(server, "alice logged in")
        bob = raw_client(port)
        bob.login("bob", "bob-pw")
        intruder = raw_client(port)
        intruder.send("login", user="alice", password="guess")
        intruder.expect("error", code="bad_password")
        assert "wrong password for alice" in _wait_for(
            server, "login as alice refused: bad_password"
        )
        alice.send("join", room="#ops")
        alice.expect("joined", room="#ops")
        _wait_for(server, "alice created room #ops")
        alice.send("file_offer", to="bob", name="notes\u202etxt.exe", size=3, sha256="0" * 64)
        bob.expect("file_offer")
        assert "notes<U+202E>txt.exe" in _wait_for(server, "alice offers file")
        bob.send("nick", name="robert")
        bob.expect("nick", new="robert")
        _wait_for(server, "bob renamed to robert")
        bob.send("quit", reason=FORGED)
        _wait_for(server, "closed: quit: ls<U+2028>FAKE")
    finally:
        assert server.terminate() == 0
    assert "\u2028" not in server.stderr
    assert "\u202e" not in server.stderr
    assert not any(line.startswith(("FAKE", "INFO forged")) for line in server.lines)


def test_json_log_format_writes_only_json_objects(pki: Pki, tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "securechat.server.cli",
        "--cert",
        str(pki.server_pem),
        "--key",
        str(pki.server_key),
        "--port",
        "0",
        "--db",
        str(tmp_path / "chat.db"),
        "--log-format",
        "json",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        entries = []
        for line in proc.stderr:  # the pytest timeout bounds this wait
            entries.append(json.loads(line))
            if "securechat-server: listening on" in entries[-1]["message"]:
                break
        proc.terminate()
        assert proc.wait(EVENT_TIMEOUT) == 0
        entries += [json.loads(line) for line in proc.stderr]
    finally:
        proc.kill()
        proc.wait(EVENT_TIMEOUT)
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["message"] == "securechat stopped" for e in entries)
