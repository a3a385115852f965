"""``securechat-server --store URL``: a real server process keeping everything in PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    EVENT_TIMEOUT,
    Pki,
    RawClient,
    ServerProcess,
    free_port,
    history_page,
    server_argv,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.cluster
def test_two_clients_chat_through_a_server_on_postgres_and_history_survives_a_restart(
    pki: Pki, tmp_path: Path, postgres_url: str
) -> None:
    db, port = tmp_path / "unused.db", free_port()
    server = ServerProcess(pki, db, port=port, extra=("--store", postgres_url))
    try:
        server.wait_listening()
        alice, bob = RawClient(port, pki.ca_pem), RawClient(port, pki.ca_pem)
        alice.login("alice")
        bob.login("bob")
        rid = alice.send("say", room="#general", text="hello over postgres")
        said = alice.expect("message", rid=rid)
        assert bob.expect("message", text="hello over postgres").get("id") == said.get("id")
        rid = bob.send("msg", to="alice", text="and privately")
        bob.expect("private", rid=rid)
        alice.expect("private", text="and privately")
        alice.close()
        bob.close()
        server.kill()  # SIGKILL: what was acknowledged is in PostgreSQL already

        server = ServerProcess(pki, db, port=port, extra=("--store", postgres_url))
        server.wait_listening()
        alice = RawClient(port, pki.ca_pem)
        alice.login("alice")
        rows, _ = history_page(alice, room="#general", limit=10)
        assert [(r.get("from"), r.get("text"), r.get("seq")) for r in rows] == [
            ("alice", "hello over postgres", 1)
        ]
        rows, _ = history_page(alice, user="bob", limit=10)
        assert [(r.get("from"), r.get("text")) for r in rows] == [("bob", "and privately")]
        alice.close()
        assert not db.exists()  # nothing went to SQLite
        assert " ERROR " not in server.stderr, server.stderr
    finally:
        server.kill()


def _refused(pki: Pki, tmp_path: Path, store: str) -> str:
    """Start a server with ``--store store``; its stderr, after checking it exited 2."""
    argv = server_argv(pki, tmp_path / "unused.db", 0, "--store", store)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=EVENT_TIMEOUT, check=False)
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_a_store_url_of_another_kind_is_refused_with_exit_2(pki: Pki, tmp_path: Path) -> None:
    stderr = _refused(pki, tmp_path, "mysql://chat:hunter2@db.example/chat")
    assert "--store takes a postgresql:// URL" in stderr and "'mysql'" in stderr
    assert "hunter2" not in stderr
    assert not (tmp_path / "unused.db").exists()


def test_an_unreachable_postgres_is_refused_with_exit_2_and_what_to_check(
    pki: Pki, tmp_path: Path
) -> None:
    stderr = _refused(pki, tmp_path, "postgresql://chat:hunter2@127.0.0.1:1/chat")
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/chat as chat" in stderr
    assert "hunter2" not in stderr
