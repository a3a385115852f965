"""Registration policies, roles and moderation, on real servers with real clients."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.server.listener import Server
from tests.conftest import RawClient

Factory = Callable[..., RawClient]


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


def _refused(client: RawClient, **fields: object) -> dict[str, object]:
    client.send("login", password="pw", **fields)
    return dict(client.expect("error").fields)


def test_hello_says_the_registration_policy(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(registration="invite")
    assert raw_client(server.address[1]).hello.get("registration") == "invite"


def test_a_login_that_will_not_register_names_an_unknown_account(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    refused = _refused(raw_client(port), user="typo", register=False)
    assert refused["code"] == "no_such_account"
    raw_client(port).login("alice")
    alice = raw_client(port)
    alice.send("login", user="alice", password="pw", register=False)
    alice.expect("welcome")


def test_closed_registration_only_admits_accounts_an_admin_made(
    make_server: Callable[..., Server], raw_client: Factory, tmp_path: Path
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    _admin(tmp_path / "chat.db", "user", "add", "alice", "--password-file", str(pw))
    port = make_server(registration="closed").address[1]
    assert _refused(raw_client(port), user="mallory")["code"] == "registration_closed"
    raw_client(port).login("alice")


def test_invite_registration_needs_a_valid_unused_code(
    make_server: Callable[..., Server], raw_client: Factory, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    port = make_server(registration="invite").address[1]
    code = _admin(db, "invite", "create").splitlines()[0]
    assert _refused(raw_client(port), user="carol")["code"] == "invite_required"
    assert _refused(raw_client(port), user="carol", invite="wrong")["code"] == "bad_invite"
    carol = raw_client(port)
    carol.send("login", user="carol", password="pw", invite=code)
    carol.expect("welcome")
    assert _refused(raw_client(port), user="dave", invite=code)["code"] == "bad_invite"


def test_an_admin_ban_made_offline_refuses_the_next_login_with_reason_and_end(
    server: Server, raw_client: Factory, tmp_path: Path
) -> None:
    port = server.address[1]
    raw_client(port).login("mallory")
    _admin(
        tmp_path / "chat.db",
        "ban",
        "add",
        "--account",
        "mallory",
        "--duration",
        "1h",
        "--reason",
        "flooding",
    )
    refused = _refused(raw_client(port), user="mallory")
    assert refused["code"] == "banned" and refused["reason"] == "flooding"
    assert isinstance(refused["until"], str) and "flooding" in str(refused["text"])


def test_roles_come_from_the_admin_tool_and_users_cannot_moderate(
    server: Server, raw_client: Factory, tmp_path: Path
) -> None:
    port = server.address[1]
    bob = raw_client(port)
    bob.login("bob")
    rid = bob.send("kick", user="bob")
    assert bob.expect("error", rid=rid).get("code") == "forbidden"
    raw_client(port).login("mod")
    _admin(tmp_path / "chat.db", "user", "role", "mod", "moderator")
    mod = raw_client(port)
    mod.login("mod")  # the role applies from this login
    rid = mod.send("stats")
    stats = mod.expect("stats", rid=rid)
    assert stats.get("sessions") == 3 and stats.get("accounts") == 2


def test_a_user_changes_their_password_and_deletes_their_account(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    alice = raw_client(port)
    alice.login("alice")
    rid = alice.send("password", old="wrong", new="new-pw")
    assert alice.expect("error", rid=rid).get("code") == "bad_password"
    rid = alice.send("password", old="pw", new="new-pw")
    alice.expect("done", rid=rid)
    again = raw_client(port)
    again.login("alice", "new-pw")
    rid = alice.send("say", room="#general", text="soon gone")
    alice.expect("message", rid=rid)
    rid = alice.send("account_delete")
    assert "1 messages erased" in str(alice.expect("done", rid=rid).get("text"))
    assert alice.expect("bye").get("code") == "account_deleted"
    assert again.expect("bye").get("code") == "account_deleted"
    assert _refused(raw_client(port), user="alice")["code"] == "name_reserved"


def test_room_operators_lock_the_topic_make_rooms_invite_only_and_mute(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    owner, bob = raw_client(port), raw_client(port)
    owner.login("owner")
    bob.login("bob")
    owner.send("join", room="#ops")
    owner.expect("joined", room="#ops")
    rid = owner.send("room_mode", room="#ops", topic_locked=True, invite_only=True)
    owner.expect("done", rid=rid)
    rid = bob.send("join", room="#ops")
    assert bob.expect("error", rid=rid).get("code") == "invite_only"
    rid = owner.send("room_invite", room="#ops", user="bob")
    owner.expect("done", rid=rid)
    bob.expect("system", event="invite")
    rid = bob.send("join", room="#ops")
    bob.expect("joined", rid=rid)
    rid = bob.send("topic", room="#ops", text="mine now")
    assert bob.expect("error", rid=rid).get("code") == "forbidden"
    rid = owner.send("mute", room="#ops", user="bob", duration="10m")
    owner.expect("done", rid=rid)
    bob.expect("system", event="mute")
    rid = bob.send("say", room="#ops", text="hello?")
    assert bob.expect("error", rid=rid).get("code") == "muted"
    rid = owner.send("kick", room="#ops", user="bob", reason="off topic")
    owner.expect("done", rid=rid)
    assert bob.expect("parted", room="#ops").get("reason") == "off topic"


@pytest.mark.timeout(60)
def test_an_ip_ban_refuses_connections_from_that_network(
    server: Server, raw_client: Factory, tmp_path: Path
) -> None:
    port = server.address[1]
    raw_client(port).login("mod")
    _admin(tmp_path / "chat.db", "user", "role", "mod", "admin")
    mod = raw_client(port)
    mod.login("mod")
    rid = mod.send("ban", ip="127.0.0.2/32", duration="1h", reason="flood")
    mod.expect("done", rid=rid)
    rid = mod.send("bans")
    assert [b["target"] for b in mod.expect("bans", rid=rid).get("bans")] == ["127.0.0.2/32"]
    with pytest.raises(ConnectionError):  # a bye with the reason instead of hello
        raw_client(port, source="127.0.0.2")
    rid = mod.send("unban", ip="127.0.0.2")
    mod.expect("done", rid=rid)
    raw_client(port, source="127.0.0.2").login("back")
