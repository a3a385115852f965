"""The client's I/O thread keeps answering the server whatever its consumers do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from securechat.server.listener import Server
from tests.conftest import UNMETERED, Pki, RawClient


def _events(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    for line in stream:
        yield json.loads(line)


@pytest.fixture
def stalled_reader_client(pki: Pki) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """A ``--json`` client process whose standard output the test reads only when it wants."""
    procs: list[subprocess.Popen[bytes]] = []

    def _start(port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "SECURECHAT_PASSWORD": "pw"}
        argv = ["--ca", str(pki.ca_pem), "--port", str(port), "--user", "alice", "--json"]
        argv.append("--register")
        proc = subprocess.Popen(
            [sys.executable, "-m", "securechat.client.cli", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        proc.kill()
        proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_consumer_that_stops_reading_output_does_not_stall_pings(
    make_server: Callable[..., Server],
    raw_client: Callable[..., RawClient],
    stalled_reader_client: Callable[[int], subprocess.Popen[bytes]],
) -> None:
    server = make_server(ping_interval=0.3, ping_timeout=0.6, **UNMETERED)
    port = server.address[1]
    alice = stalled_reader_client(port)
    assert alice.stdout is not None
    events = _events(alice.stdout)
    next(e for e in events if e.get("event") == "joined")
    bob = raw_client(port)
    bob.login("bob")
    # Far more than a pipe holds (64 KiB): alice's output blocks while unread.
    for i in range(40):
        rid = bob.send("say", room="#general", text=f"{i} " + "x" * 3000)
        bob.expect("message", rid=rid)
    # Proof that a ping timeout has passed while alice's output was not read:
    # carol, who never answers pings, is dropped for it.
    carol = raw_client(port)
    carol.login("carol")
    quit_ = bob.expect("system", event="quit", user="carol", timeout=15)
    assert "ping timeout" in str(quit_.get("text"))
    assert alice.stdin is not None
    alice.stdin.close()  # EOF: alice quits once everything is shown
    rest = list(events)  # to the end of her output
    assert alice.wait(15) == 0
    texts = [e["text"] for e in rest if e["type"] == "message" and e["from"] == "bob"]
    assert texts == [f"{i} " + "x" * 3000 for i in range(40)]
    assert [e["reason"] for e in rest if e["type"] == "disconnected"] == ["you quit"]
