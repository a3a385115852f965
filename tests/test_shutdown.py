"""Stopping the server: every stored message is acknowledged before ``bye``, and a
client that stopped reading cannot hold the server up.

Servers are in-process (``Server.stop``) or real ``securechat-server`` processes
sent SIGTERM; databases are real SQLite files read back afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.server.listener import Server
from securechat.store.base import NewMessage, utc_timestamp
from securechat.store.sqlite import SQLiteStore as Store
from securechat.wire.names import MAX_MESSAGE_CHARS, fold
from securechat.wire.protocol import Frame, encode
from tests.conftest import Pki, RawClient, ServerProcess, free_port
from tests.test_durability import _query

ROOM = "#general"
PIPELINED = 3000  # stored messages in flight when the server is told to stop
RID_BASE = 1000  # clear of the login's rid
STOP_LIMIT = 5.0  # seconds a stop may take, whatever the clients do
HISTORY_ROWS = 2000  # enough large history that a client which does not read falls behind
STALLED_REQUESTS = 8  # history requests the stalled client sends and never reads


def _pipeline_and_stop(client: RawClient, stop: Callable[[], None]) -> list[Frame]:
    """Send ``PIPELINED`` say frames at once; once the first is acknowledged, ``stop``
    the server (on a thread) and read until it hangs up. Every frame read."""
    client.send_raw(
        b"".join(
            encode("say", rid=RID_BASE + i, room=ROOM, text=f"pipelined {i}")
            for i in range(PIPELINED)
        )
    )
    frames: list[Frame] = []
    stopper = threading.Thread(target=stop)
    while (frame := client.recv_frame()) is not None:
        frames.append(frame)
        if not stopper.is_alive() and frame.get("rid") == RID_BASE:
            stopper.start()
    stopper.join(10)
    assert stopper.ident is not None, "the first message was never acknowledged"
    return frames


def _check_acknowledged_before_bye(frames: list[Frame], db: Path) -> None:
    types = [f.type for f in frames]
    assert "bye" in types, f"no bye; the last frames were {types[-5:]}"
    before_bye = frames[: types.index("bye")]
    acked = {f.get("rid") for f in before_bye if f.type == "message" and f.get("rid")}
    stored = {
        RID_BASE + int(str(text).removeprefix("pipelined "))
        for (text,) in _query(db, "SELECT text FROM messages WHERE text LIKE 'pipelined %'")
    }
    print(
        f"\n{len(stored)} of {PIPELINED} pipelined messages stored, "
        f"{len(acked)} acknowledged before bye, "
        f"{len(stored - acked)} stored but not acknowledged"
    )
    assert stored, "nothing was stored: the stop came before the first commit"
    assert stored <= acked, f"{len(stored - acked)} stored messages were never acknowledged"
    assert acked <= stored, "a message was acknowledged but not stored"


@pytest.mark.timeout(60)
def test_in_process_stop_acknowledges_every_stored_message_before_bye(
    make_server: Callable[..., Server], raw_client: Callable[..., RawClient], tmp_path: Path
) -> None:
    db = tmp_path / "pipelined.db"
    server = make_server(db=db)
    client = raw_client(server.address[1])
    client.login("piper")
    took: list[float] = []

    def _stop() -> None:
        started = time.monotonic()
        server.stop()
        took.append(time.monotonic() - started)

    frames = _pipeline_and_stop(client, _stop)
    assert took and took[0] < STOP_LIMIT
    _check_acknowledged_before_bye(frames, db)


@pytest.mark.timeout(60)
def test_sigterm_acknowledges_every_stored_message_before_bye(pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "pipelined.db"
    server = ServerProcess(pki, db, port=free_port())
    try:
        client = RawClient(server.wait_listening(), pki.ca_pem)
        try:
            client.login("piper")
            status: list[int] = []

            def _terminate() -> None:
                started = time.monotonic()
                status.append(server.terminate(timeout=30))
                status.append(round(time.monotonic() - started, 2))

            frames = _pipeline_and_stop(client, _terminate)
        finally:
            client.close()
        assert status[0] == 0, server.stderr
        assert status[1] < STOP_LIMIT, f"exit took {status[1]} s"
    finally:
        server.kill()
    _check_acknowledged_before_bye(frames, db)


def _largehistory_page(db: Path) -> None:
    store = Store(db)
    try:
        author = store.create_account("author", None)
        assert author is not None
        ts = utc_timestamp()
        store.insert_messages(
            [
                NewMessage(i, ts, author.id, "h" * MAX_MESSAGE_CHARS, fold(ROOM), ROOM)
                for i in range(1, HISTORY_ROWS + 1)
            ],
            reserve_id=None,
        )
    finally:
        store.close()


def _stall(client: RawClient) -> None:
    """Log in, ask for far more history than the socket buffers hold, and stop reading."""
    client.login("staller")
    for _ in range(STALLED_REQUESTS):
        client.send("history", room=ROOM, limit=500)


def _wait_until_stalled(watcher: RawClient) -> None:
    """Log ``watcher`` in once the stalled client's answers are queued: its own
    history request is answered all the same (nobody waits for a stalled reader)."""
    watcher.login("watcher")
    rid = watcher.send("history", room=ROOM, limit=1)
    watcher.expect("history_end", rid=rid)


@pytest.mark.timeout(60)
def test_in_process_stop_is_not_held_up_by_a_client_that_stopped_reading(
    make_server: Callable[..., Server], raw_client: Callable[..., RawClient], tmp_path: Path
) -> None:
    db = tmp_path / "history.db"
    _largehistory_page(db)
    server = make_server(db=db)
    staller = raw_client(server.address[1], recv_buffer=4096)
    _stall(staller)
    watcher = raw_client(server.address[1])
    _wait_until_stalled(watcher)
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    print(f"\nstop with a stalled reader took {took:.2f} s")
    assert took < STOP_LIMIT
    assert any(f.type == "bye" for f in watcher.wait_closed())


@pytest.mark.timeout(60)
def test_sigterm_exits_in_time_despite_a_client_that_stopped_reading(
    pki: Pki, tmp_path: Path
) -> None:
    db = tmp_path / "history.db"
    _largehistory_page(db)
    server = ServerProcess(pki, db, port=free_port())
    staller = watcher = None
    try:
        port = server.wait_listening()
        staller = RawClient(port, pki.ca_pem, recv_buffer=4096)
        _stall(staller)
        watcher = RawClient(port, pki.ca_pem)
        _wait_until_stalled(watcher)
        started = time.monotonic()
        status = server.terminate(timeout=40)
        took = time.monotonic() - started
        print(f"\nSIGTERM with a stalled reader: exit {status} after {took:.2f} s")
        assert status == 0, server.stderr
        assert took < STOP_LIMIT
    finally:
        for client in (staller, watcher):
            if client is not None:
                client.close()
        server.kill()
