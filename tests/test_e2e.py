"""End to end: real client processes against a real server over TLS."""

from __future__ import annotations

from collections.abc import Callable

from securechat.server import Server
from tests.conftest import ClientProcess


def test_two_users_chat_in_general(
    server: Server, client_process: Callable[..., ClientProcess]
) -> None:
    port = server.address[1]
    alice = client_process(port, "alice")
    alice.wait_for("connected", user="alice")
    bob = client_process(port, "bob")
    connected = bob.wait_for("connected", user="bob")
    assert connected["tls_version"] in ("TLSv1.2", "TLSv1.3")
    alice.wait_for("system", event="join", user="bob")
    alice.type("hello bob")
    got = bob.wait_for("message", text="hello bob")
    assert got["from"] == "alice" and got["room"] == "#general"
    echo = alice.wait_for("message", text="hello bob")
    assert echo["id"] == got["id"]
    bob.type("hi alice")
    assert alice.wait_for("message", text="hi alice")["from"] == "bob"
    assert alice.finish() [0] == 0
    assert bob.finish()[0] == 0
