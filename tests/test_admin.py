"""``securechat-admin`` as an administrator runs it: a real process on a real SQLite file
(or the PostgreSQL fixture), offline or beside a running server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.server.listener import Server
from securechat.store.sqlite import SQLiteStore
from tests.conftest import EVENT_TIMEOUT, Pki, RawClient, ServerProcess, history_page

ADMIN_TIMEOUT = 30.0


def admin(where: list[str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``securechat-admin`` on the store ``where`` (``--db F`` or ``--store URL``)."""
    return subprocess.run(
        [sys.executable, "-m", "securechat.admin", *where, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=ADMIN_TIMEOUT,
        check=False,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.cluster)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return ["--db", str(tmp_path / "chat.db")]
    return ["--store", request.getfixturevalue("postgres_url")]


def _password_file(tmp_path: Path, password: str) -> str:
    path = tmp_path / f"pw-{password}"
    path.write_text(password + "\n")
    return str(path)


@pytest.mark.timeout(90)
def test_users_are_added_listed_given_roles_and_new_passwords(
    where: list[str], tmp_path: Path
) -> None:
    pw = _password_file(tmp_path, "first")
    added = admin(where, "user", "add", "alice", "--password-file", pw)
    assert added.returncode == 0, added.stderr
    assert "user add alice" in added.stderr  # every action is logged
    assert admin(where, "user", "add", "ALICE", "--password-file", pw).returncode == 1
    assert admin(where, "user", "role", "alice", "admin").returncode == 0
    assert admin(where, "user", "add", "bob", "--certificate-only").returncode == 0
    listed = admin(where, "user", "list")
    assert listed.stdout.splitlines() == ["alice\tadmin", "bob\tuser"]
    changed = admin(
        where, "user", "passwd", "alice", "--password-file", _password_file(tmp_path, "x")
    )
    assert changed.returncode == 0 and "user passwd alice" in changed.stderr
    missing = admin(where, "user", "passwd", "nobody", "--password-file", pw)
    assert missing.returncode == 1 and "no account called nobody" in missing.stderr
    no_terminal = admin(where, "user", "passwd", "alice")
    assert no_terminal.returncode == 2 and "--password-file" in no_terminal.stderr
    stats = admin(where, "stats")
    assert "accounts\t2" in stats.stdout.splitlines()


@pytest.mark.timeout(90)
def test_invites_are_created_listed_and_revoked(where: list[str]) -> None:
    made = admin(where, "invite", "create", "--expires", "2d")
    assert made.returncode == 0, made.stderr
    code = made.stdout.splitlines()[0]
    assert len(code) >= 16
    listed = admin(where, "invite", "list").stdout
    assert "\tunused" in listed and code not in listed  # only a hash is kept
    invite_id = listed.split("\t")[0]
    assert admin(where, "invite", "revoke", invite_id).returncode == 0
    assert admin(where, "invite", "list").stdout == ""
    assert admin(where, "invite", "revoke", invite_id).returncode == 1
    assert admin(where, "invite", "create", "--expires", "soon").returncode == 2


@pytest.mark.timeout(90)
def test_bans_are_added_listed_and_removed(where: list[str]) -> None:
    assert admin(where, "user", "add", "mallory", "--certificate-only").returncode == 0
    banned = admin(
        where, "ban", "add", "--account", "mallory", "--duration", "1d", "--reason", "spam"
    )
    assert banned.returncode == 0, banned.stderr
    assert "ban add account mallory" in banned.stderr
    assert admin(where, "ban", "add", "--ip", "203.0.113.7/24").returncode == 0
    assert admin(where, "ban", "add", "--ip", "not-an-address").returncode == 1
    rows = [line.split("\t") for line in admin(where, "ban", "list").stdout.splitlines()]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("account", "mallory", "spam"),
        ("ip", "203.0.113.0/24", ""),
    ]
    assert admin(where, "ban", "remove", "--ip", "203.0.113.0/24").returncode == 0
    assert admin(where, "ban", "remove", "--ip", "203.0.113.0/24").returncode == 1
    assert [r.split("\t")[1] for r in admin(where, "ban", "list").stdout.splitlines()] == [
        "mallory"
    ]


@pytest.mark.timeout(60)
def test_deleting_an_account_erases_its_messages_and_keeps_its_name(
    make_server: Callable[..., Server], raw_client: Callable[..., RawClient], tmp_path: Path
) -> None:
    server = make_server()
    port = server.address[1]
    alice = raw_client(port)
    alice.login("alice")
    bob = raw_client(port)
    bob.login("bob")
    for text in ("one", "two"):
        rid = alice.send("say", room="#general", text=text)
        alice.expect("message", rid=rid)
    rid = bob.send("say", room="#general", text="bob stays")
    bob.expect("message", rid=rid)
    alice.send("quit")
    alice.wait_closed()
    # While the server runs, on its own database file.
    deleted = admin(["--db", str(tmp_path / "chat.db")], "user", "delete", "alice")
    assert deleted.returncode == 0, deleted.stderr
    assert "2 messages erased" in deleted.stdout
    rows, _ = history_page(bob, room="#general")
    assert [r.get("text") for r in rows] == ["bob stays"]
    again = raw_client(port)
    again.send("login", user="alice", password="pw")
    refused = again.expect("error")
    assert refused.get("code") == "account_deleted"


@pytest.mark.timeout(90)
def test_backup_while_the_server_writes_has_every_acknowledged_message(
    pki: Pki, tmp_path: Path, raw_client: Callable[..., RawClient]
) -> None:
    db = tmp_path / "live.db"
    server = ServerProcess(
        pki, db, port=0, extra=("--message-burst=100000", "--message-rate=100000")
    )
    try:
        port = server.wait_listening()
        writer = raw_client(port)
        writer.login("alice")
        acked: list[int] = []
        stop = threading.Event()

        def _chat() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                rid = writer.send("say", room="#general", text=f"m{n}")
                acked.append(int(writer.expect("message", rid=rid).get("id")))

        talker = threading.Thread(target=_chat, daemon=True)
        talker.start()
        while len(acked) < 50:
            talker.join(0.01)
        before = list(acked)  # acknowledged before the backup starts
        copy = tmp_path / "backup.db"
        done = admin(["--db", str(db)], "backup", str(copy))
        stop.set()
        talker.join(EVENT_TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert len(acked) > len(before)  # the server kept writing meanwhile
        assert oct(copy.stat().st_mode & 0o777) == oct(0o600)
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        restored = SQLiteStore(copy)  # opens as a store, as a restored server would
        try:
            ids = {m.id for m in restored.room_history("#general", limit=100_000)}
        finally:
            restored.close()
        assert set(before) <= ids
        assert admin(["--db", str(db)], "backup", str(copy)).returncode == 2  # never overwrites
    finally:
        server.terminate()


@pytest.mark.timeout(60)
@pytest.mark.cluster
def test_backup_of_postgresql_points_at_pg_dump(postgres_url: str, tmp_path: Path) -> None:
    done = admin(["--store", postgres_url], "backup", str(tmp_path / "x"))
    assert done.returncode != 0 and "pg_dump" in done.stderr
    assert not (tmp_path / "x").exists()


def test_admin_has_a_version() -> None:
    done = admin([], "--version")
    assert done.returncode == 0 and done.stdout.startswith("securechat-admin ")
