"""The client's side of accounts and moderation: deliberate registration, the /commands
of docs/protocol.md §18, and what a kicked or banned client does, with real servers and
real ``securechat-client`` processes (a pseudo-terminal for the registration questions)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securechat.client.commands import parse_input
from securechat.client.core import ChatClient
from securechat.client.registration import (
    EXIT_NO_ACCOUNT,
    Login,
    Prompts,
    ask_to_register,
    log_in,
)
from securechat.client.servers import ServerAddress
from securechat.errors import ChatError
from securechat.server.listener import Server
from securechat.tls import client_context
from tests.conftest import EVENT_TIMEOUT, ClientProcess, Pki, RawClient

Clients = Callable[..., ClientProcess]
Raw = Callable[..., RawClient]


def _admin(db: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "securechat.admin", "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _answers(*replies: str) -> tuple[Prompts, list[str]]:
    """Prompts that answer from ``replies`` in turn; the second item collects what was said."""
    queue, said = list(replies), []

    def ask(prompt: str) -> str:
        said.append(prompt)
        if not queue:
            raise EOFError
        return queue.pop(0)

    return Prompts(ask, ask, said.append), said


@pytest.fixture
def staff_server(make_server: Callable[..., Server], tmp_path: Path) -> Callable[..., Server]:
    """A server whose store already holds alice, an admin (password ``pw``)."""

    def _start(**options: object) -> Server:
        pw = tmp_path / "pw"
        pw.write_text("pw\n")
        db = tmp_path / "chat.db"
        _admin(db, "user", "add", "alice", "--password-file", str(pw), "--role", "admin")
        return make_server(**options)

    return _start


# -- registration --------------------------------------------------------------------------


def test_a_script_with_an_unknown_name_and_no_register_flag_exits_6(
    server: Server, client_process: Clients, raw_client: Raw
) -> None:
    port = server.address[1]
    typo = client_process(port, "alcie", register=False)
    status, stderr = typo.finish()
    assert status == EXIT_NO_ACCOUNT
    assert stderr.count("\n") == 1 and "no account alcie" in stderr
    assert typo.events[0]["code"] == "no_such_account"
    # Nothing was created: the name is still free to register.
    assert client_process(port, "alcie").wait_for("connected")["user"] == "alcie"


def test_register_flag_creates_the_account_and_later_logins_need_no_flag(
    server: Server, client_process: Clients
) -> None:
    port = server.address[1]
    first = client_process(port, "newbie", "pw-1")
    first.wait_for("system", event="joined")
    assert first.finish()[0] == 0
    again = client_process(port, "newbie", "pw-1", register=False)
    again.wait_for("system", event="joined")
    assert again.finish()[0] == 0


def test_register_on_an_invite_server_reads_the_code_from_a_file_or_the_environment(
    make_server: Callable[..., Server], client_process: Clients, tmp_path: Path
) -> None:
    port = make_server(registration="invite").address[1]
    db = tmp_path / "chat.db"
    without = client_process(port, "carol")
    status, stderr = without.finish()
    assert status == 4 and "invite" in stderr
    code_file = tmp_path / "invite"
    code_file.write_text(_admin(db, "invite", "create").splitlines()[0] + "\n")
    carol = client_process(port, "carol", extra=("--invite-file", str(code_file)))
    carol.wait_for("connected")
    code = _admin(db, "invite", "create").splitlines()[0]
    dave = client_process(port, "dave", env={"SECURECHAT_INVITE": code})
    dave.wait_for("connected")


def test_the_questions_register_on_an_invite_server_and_log_in(
    make_server: Callable[..., Server], pki: Pki, tmp_path: Path
) -> None:
    port = make_server(registration="invite").address[1]
    code = _admin(tmp_path / "chat.db", "invite", "create").splitlines()[0]
    prompts, said = _answers("y", "new-pw", "typo", "new-pw", "new-pw", code)
    made: list[ChatClient] = []

    def make_client(login: Login) -> ChatClient:
        client = ChatClient(
            servers=[ServerAddress("localhost", port)],
            context=client_context(ca=pki.ca_pem),
            user="erin",
            password=login.password,
            on_event=lambda e: None,
            register=login.register,
            invite=login.invite,
        )
        made.append(client)
        return client

    try:
        client = log_in(
            make_client, Login("first-pw"), name="erin", prompts=prompts, typed_password=True
        )
        assert client.connected and client.user == "erin"
        assert len(made) == 2
        assert "the two passwords differ" in said
        assert any("Invite code" in line for line in said)
        # The account has the password typed twice, not the one typed first.
        make_client(Login("new-pw")).connect()
    finally:
        for one in made:
            one.close()


def test_the_questions_explain_a_closed_server_and_take_no_for_an_answer() -> None:
    prompts, said = _answers()
    with pytest.raises(ChatError, match="ask an admin"):
        ask_to_register("zed", "closed", Login("pw"), prompts, typed_password=True)
    assert said == []  # nothing asked: nothing could come of it
    with pytest.raises(ChatError) as refused:
        ask_to_register("zed", "open", Login("pw"), _answers("n")[0], typed_password=True)
    assert refused.value.code == "no_such_account"
    with pytest.raises(ChatError):  # Ctrl+D at the question
        ask_to_register("zed", "open", Login("pw"), _answers()[0], typed_password=True)
    # A password from the environment or a file is not asked for again.
    login = ask_to_register("zed", "open", Login("env-pw"), _answers("y")[0], typed_password=False)
    assert login == Login("env-pw", register=True)


class Terminal:
    """A ``securechat-client`` whose standard input is a pseudo-terminal (its controlling
    terminal, so getpass asks there) and whose output and stderr are pipes."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()

        def take_terminal() -> None:  # in the child: the pty becomes its terminal
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = {k: v for k, v in os.environ.items() if k != "SECURECHAT_PASSWORD"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "securechat.client.cli", *argv],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=take_terminal,  # noqa: PLW1509 - no threads of ours touch the fork
        )
        os.close(slave)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._fds = {
            "tty": self.master,
            "stdout": self.proc.stdout.fileno(),
            "stderr": self.proc.stderr.fileno(),
        }
        self.seen = dict.fromkeys(self._fds, b"")

    def wait_for(self, text: str, where: str) -> None:
        """Read the terminal (``tty``), stdout and stderr until ``text`` shows in ``where``."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while text.encode() not in self.seen[where]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {text!r} on {where}; saw {self.seen}")
            ready, _, _ = select.select(list(self._fds.values()), [], [], left)
            for name, fd in self._fds.items():
                if fd in ready:
                    try:
                        self.seen[name] += os.read(fd, 4096)
                    except OSError:  # the pty once the child is gone
                        self._fds.pop(name)
                        break

    def type(self, line: str) -> None:
        """Type ``line`` and Enter (wait for the question first: getpass flushes early typing)."""
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, str]:
        """Ctrl+D at the start of a line (EOF); the exit status and everything printed."""
        os.write(self.master, b"\x04")
        status = self.proc.wait(EVENT_TIMEOUT)
        for name in ("stdout", "stderr"):
            self.seen[name] += os.read(self._fds[name], 1 << 20) if name in self._fds else b""
        os.close(self.master)
        return status, (self.seen["stderr"] + self.seen["stdout"]).decode()


@pytest.fixture
def terminal(pki: Pki) -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def _start(port: int, user: str) -> Terminal:
        made.append(Terminal(["--ca", str(pki.ca_pem), "--port", str(port), "--user", user]))
        return made[-1]

    yield _start
    for one in made:
        if one.proc.poll() is None:
            one.proc.kill()
            one.proc.wait(5)


def test_on_a_terminal_an_unknown_name_asks_before_creating_the_account(
    server: Server, terminal: Callable[..., Terminal], raw_client: Raw
) -> None:
    port = server.address[1]
    chat = terminal(port, "newbie")
    chat.wait_for("password for newbie:", "tty")
    chat.type("first")
    chat.wait_for("Create account newbie? [y/N]", "stderr")
    chat.type("y")
    chat.wait_for("new password for newbie:", "tty")
    chat.type("chosen-pw")
    chat.wait_for("again:", "tty")
    chat.type("chosen-pw")
    chat.wait_for("you joined #general", "stdout")
    chat.type("hello after registering")
    chat.wait_for("<newbie> hello after registering", "stdout")
    status, output = chat.finish()
    assert status == 0, output
    assert "<newbie> hello after registering" in output
    check = raw_client(port)
    check.send("login", user="newbie", password="chosen-pw", register=False)
    check.expect("welcome")


def test_on_a_terminal_no_creates_nothing_and_exits_6(
    server: Server, terminal: Callable[..., Terminal], raw_client: Raw
) -> None:
    port = server.address[1]
    chat = terminal(port, "typo")
    chat.wait_for("password for typo:", "tty")
    chat.type("pw")
    chat.wait_for("Create account typo? [y/N]", "stderr")
    chat.type("")
    status, output = chat.finish()
    assert status == EXIT_NO_ACCOUNT, output
    check = raw_client(port)
    check.send("login", user="typo", password="pw", register=False)
    assert check.expect("error").get("code") == "no_such_account"


# -- commands --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "type_", "fields"),
    [
        ("/kick bob", "kick", {"user": "bob"}),
        (
            "/kick #dev bob talks too much",
            "kick",
            {"room": "#dev", "user": "bob", "reason": "talks too much"},
        ),
        ("/ban bob 2h spam", "ban", {"user": "bob", "duration": "2h", "reason": "spam"}),
        ("/ban bob spamming", "ban", {"user": "bob", "reason": "spamming"}),
        (
            "/ban --ip 203.0.113.0/24 7d flood",
            "ban",
            {"ip": "203.0.113.0/24", "duration": "7d", "reason": "flood"},
        ),
        ("/unban 2001:db8::1", "unban", {"ip": "2001:db8::1"}),
        ("/unban bob", "unban", {"user": "bob"}),
        ("/bans", "bans", {}),
        ("/mute bob 10m", "mute", {"room": "#dev", "user": "bob", "duration": "10m"}),
        ("/unmute bob", "mute", {"room": "#dev", "user": "bob", "unmute": True}),
        ("/topic lock", "room_mode", {"room": "#dev", "topic_locked": True}),
        ("/topic unlock", "room_mode", {"room": "#dev", "topic_locked": False}),
        ("/room invite-only on", "room_mode", {"room": "#dev", "invite_only": True}),
        ("/invite carol", "room_invite", {"room": "#dev", "user": "carol"}),
        ("/stats", "stats", {}),
    ],
)
def test_moderation_commands_become_the_frames_of_protocol_section_18(
    line: str, type_: str, fields: dict[str, object]
) -> None:
    request = parse_input(line, current_room="#dev")
    assert (request.type, request.fields) == (type_, fields)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("/ban", "usage"),
        ("/mute bob forever", "bad_duration"),
        ("/ban --ip not-an-address", "bad_address"),
        ("/password old new", "usage"),
        ("/account remove", "usage"),
        ("/room invite-only maybe", "usage"),
        ("/kick", "usage"),
    ],
)
def test_malformed_moderation_commands_are_refused_before_sending(line: str, code: str) -> None:
    with pytest.raises(ChatError) as refused:
        parse_input(line, current_room="#dev")
    assert refused.value.code == code


def test_a_kicked_client_says_why_and_exits_instead_of_reconnecting(
    staff_server: Callable[..., Server], client_process: Clients
) -> None:
    port = staff_server().address[1]
    alice = client_process(port, "alice", register=False)
    bob = client_process(port, "bob")
    bob.wait_for("system", event="joined")
    alice.type("/kick bob calm down")
    assert "kicked bob" in alice.wait_for("system", event="done")["text"]
    gone = bob.wait_for("disconnected")
    assert gone["code"] == "kicked" and "calm down" in gone["reason"]
    status, _ = bob.finish()
    assert status == 1
    assert not [e for e in bob.events if e.get("event") == "reconnecting"]


def test_a_ban_ends_the_session_refuses_the_next_login_and_unban_lifts_it(
    staff_server: Callable[..., Server], client_process: Clients
) -> None:
    port = staff_server().address[1]
    alice = client_process(port, "alice", register=False)
    bob = client_process(port, "bob")
    bob.wait_for("system", event="joined")
    alice.type("/ban bob 2h spamming links")
    alice.wait_for("system", event="done")
    gone = bob.wait_for("disconnected")
    assert gone["code"] == "banned" and gone["until"] and "spamming links" in gone["reason"]
    assert bob.finish()[0] == 1
    assert not [e for e in bob.events if e.get("event") == "reconnecting"]
    again = client_process(port, "bob")
    status, stderr = again.finish()
    assert status == 4 and "banned" in stderr
    refusal = again.events[0]
    assert refusal["code"] == "banned" and refusal["reason"] == "spamming links"
    assert refusal["until"]
    alice.type("/bans")
    listed = alice.wait_for("bans")
    assert [b["target"] for b in listed["bans"]] == ["bob"]
    alice.type("/unban bob")
    assert "lifted" in alice.wait_for("system", event="done")["text"]
    client_process(port, "bob").wait_for("connected")


def test_an_address_ban_refuses_the_connection_as_a_login_refusal(
    staff_server: Callable[..., Server], client_process: Clients
) -> None:
    port = staff_server().address[1]
    alice = client_process(port, "alice", register=False)
    alice.wait_for("system", event="joined")
    alice.type("/ban --ip 10.9.0.0/16 10m flood", "/bans")
    assert alice.wait_for("bans")["bans"][0]["target"] == "10.9.0.0/16"
    alice.type("/unban 10.9.0.0/16", "/ban --ip 127.0.0.1 1h everyone here")
    gone = alice.wait_for("disconnected")  # alice is on 127.0.0.1 too
    assert gone["code"] == "banned"
    carol = client_process(port, "carol")
    status, stderr = carol.finish()
    assert status == 4 and "banned" in stderr and "TLS" not in stderr


def test_room_operators_lock_the_topic_mute_invite_and_kick(
    server: Server, client_process: Clients
) -> None:
    port = server.address[1]
    bob, carol, dave = (client_process(port, n) for n in ("bob", "carol", "dave"))
    for one in (bob, carol, dave):
        one.wait_for("system", event="joined")
    bob.type("/join #ops")
    bob.wait_for("system", event="joined", room="#ops")
    carol.type("/join #ops")
    carol.wait_for("system", event="joined", room="#ops")
    bob.type("/topic lock")
    assert carol.wait_for("system", event="mode")["topic_locked"] is True
    carol.type("/topic mine now")
    assert carol.wait_for("error")["code"] == "forbidden"
    bob.type("/mute carol 10m")
    assert "muted" in carol.wait_for("system", event="mute")["text"]
    carol.type("can I talk?")
    assert carol.wait_for("error")["code"] == "muted"
    bob.type("/unmute carol", "/room invite-only on")
    bob.wait_for("system", event="mode", invite_only=True)
    dave.type("/join #ops")
    assert dave.wait_for("error")["code"] == "invite_only"
    bob.type("/invite dave")
    assert "/join #ops" in dave.wait_for("system", event="invite")["text"]
    dave.type("/join #ops")
    dave.wait_for("system", event="joined", room="#ops")
    bob.type("/kick #ops carol off topic")
    parted = carol.wait_for("system", event="parted", room="#ops")
    assert parted["by"] == "bob" and parted["reason"] == "off topic"
    assert "kicked" in carol.wait_for("system", event="kick")["text"]
    carol.type("still connected")
    carol.wait_for("message", text="still connected")


def test_stats_for_staff_and_forbidden_for_others(
    staff_server: Callable[..., Server], client_process: Clients
) -> None:
    port = staff_server().address[1]
    alice = client_process(port, "alice", register=False)
    bob = client_process(port, "bob")
    alice.type("/stats")
    stats = alice.wait_for("stats")
    assert stats["sessions"] >= 1 and "uptime" in stats["text"]
    bob.type("/stats")
    assert bob.wait_for("error")["code"] == "forbidden"


def test_line_mode_refuses_password_and_deletes_the_account_only_by_name(
    server: Server, client_process: Clients, raw_client: Raw
) -> None:
    port = server.address[1]
    bob = client_process(port, "bob")
    bob.wait_for("system", event="joined")
    bob.type("/password")
    assert "securechat-admin user passwd" in bob.wait_for("error", code="needs_terminal")["text"]
    bob.type("something to erase", "/account delete")
    refused = bob.wait_for("error", code="confirm")
    assert "erases every message you sent" in refused["text"]
    bob.type("/account delete bob")
    assert "account deleted" in bob.wait_for("system", event="done")["text"]
    assert bob.wait_for("disconnected")["code"] == "account_deleted"
    assert bob.finish()[0] == 1
    again = raw_client(port)
    again.send("login", user="bob", password="pw", register=True)
    assert again.expect("error").get("code") in ("account_deleted", "name_reserved")
