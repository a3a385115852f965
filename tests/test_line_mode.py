"""Line mode as a person reads it: real ``securechat-client`` processes without ``--json``
against a real server, or a scripted hostile one over real TLS."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securechat.client.cli import EXIT_TLS
from securechat.client.core import Event
from securechat.server.listener import Server
from securechat.ui.linemode import HumanPrinter
from tests.conftest import EVENT_TIMEOUT, ClientProcess, Pki, RawClient, offline_account
from tests.scripted import ScriptedServer
from tests.test_client_moderation import Terminal

HOSTILE = "\x1b]0;PWNED\x07\x1b[2J\u202e"


@pytest.fixture
def scripted(pki: Pki) -> Iterator[ScriptedServer]:
    server = ScriptedServer(pki)
    yield server
    server.close()


def human_client(pki: Pki, port: int, password: str, *extra: str) -> subprocess.Popen[bytes]:
    """A ``securechat-client`` in line mode for people (no ``--json``), input from a pipe."""
    env = {**os.environ, "SECURECHAT_PASSWORD": password}
    argv = ["--ca", str(pki.ca_pem), "--port", str(port), "--user", "alice", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "securechat.client.cli", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_every_field_a_hostile_server_sends_is_printed_sanitised(
    scripted: ScriptedServer, pki: Pki
) -> None:
    alice = human_client(pki, scripted.port, "pw")
    peer = scripted.accept()
    general = {"room": "#general", "topic": "", "unread": 0, "members": 1}
    peer.greet_and_welcome(version=2, join_general=False, rooms=[general])
    assert alice.stdin is not None
    alice.stdin.write(b"/rooms\n/sessions\n/history unread\n")
    alice.stdin.close()
    rid = peer.expect("rooms").get("rid")
    room = {"name": "#dev", "users": HOSTILE, "topic": HOSTILE}
    peer.send("rooms", rid=rid, rooms=[room])
    rid = peer.expect("sessions").get("rid")
    peer.send("sessions", rid=rid, sessions=[{"session": HOSTILE, "peer": HOSTILE, "since": 5}])
    rid = peer.expect("unread").get("rid")
    peer.send("unread", rid=rid, rooms=[{"room": "#dev", "unread": HOSTILE, "first": HOSTILE}])
    peer.send("system", event="notice", room=HOSTILE, count=HOSTILE, text="bye")
    peer.expect("quit")
    peer.close()
    assert alice.stdout is not None
    text = alice.stdout.read().decode("utf-8")
    alice.wait(EVENT_TIMEOUT)
    assert "-- rooms: #dev (^[]0;PWNED^G^[[2J<U+202E>)" in text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def test_a_refused_login_is_said_once_on_stderr_not_also_on_stdout(
    server: Server, raw_client: Callable[..., RawClient], pki: Pki
) -> None:
    offline_account(raw_client, server.address[1], "alice")
    alice = human_client(pki, server.address[1], "wrong")
    out, err = alice.communicate(b"", timeout=EVENT_TIMEOUT)
    assert alice.returncode != 0
    assert out == b""
    [line] = err.decode().splitlines()
    assert line.startswith("securechat-client: ") and "password" in line


def test_a_quit_in_another_room_names_the_room() -> None:
    printer = HumanPrinter(io.StringIO())
    notice = {"event": "quit", "user": "jsonbot", "text": "jsonbot left (quit)"}
    lines = [printer.format(Event("system", {**notice, "room": r})) for r in ("#a", "#b")]
    assert [line.split("] ", 1)[1] for line in lines] == [
        "-- #a: jsonbot left (quit)",
        "-- #b: jsonbot left (quit)",
    ]
    joined = printer.format(Event("system", {"event": "join", "room": "#a", "text": "x joined #a"}))
    assert joined.endswith("] -- x joined #a")


def test_a_wrong_ca_is_reported_before_the_password_is_asked(
    server: Server, other_ca_pem: Path
) -> None:
    port = str(server.address[1])
    term = Terminal(["--ca", str(other_ca_pem), "--port", port, "--user", "alice"])
    term.wait_for("certificate", "stderr")
    assert term.proc.wait(EVENT_TIMEOUT) == EXIT_TLS
    assert b"password" not in term.seen["tty"]
    os.close(term.master)


def test_the_password_is_asked_once_the_certificate_verified(server: Server, pki: Pki) -> None:
    port = str(server.address[1])
    term = Terminal(["--ca", str(pki.ca_pem), "--port", port, "--user", "alice", "--register"])
    term.wait_for("password for alice: ", "tty")
    term.type("pw")
    term.wait_for("-- connected to", "stdout")
    status, _ = term.finish()
    assert status == 0


def test_history_forget_asks_a_person_at_a_terminal_and_not_a_script(
    server: Server, pki: Pki, client_process: Callable[..., ClientProcess]
) -> None:
    port = str(server.address[1])
    term = Terminal(["--ca", str(pki.ca_pem), "--port", port, "--user", "alice", "--register"])
    term.wait_for("password for alice: ", "tty")
    term.type("pw")
    term.wait_for("-- connected to", "stdout")
    term.type("kept")
    term.wait_for("<alice> kept", "stdout")
    term.type("/history forget")
    term.wait_for("-- erase every message you have sent, in every room? [y/N]", "stdout")
    term.type("no")
    term.wait_for("-- nothing erased", "stdout")
    term.type("/history forget")
    term.type("y")
    term.wait_for("-- erased 1 messages you sent", "stdout")
    assert term.finish()[0] == 0
    script = client_process(server.address[1], "bob")  # --json, input from a pipe
    script.wait_for("connected")
    script.type("/history forget")
    assert script.wait_for("system", event="forgotten")["count"] == 0
