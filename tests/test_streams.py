"""Long answers stream as the reader reads: whole to a reader that keeps up, and
never at the cost of other users when one stops reading."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from securechat.server.listener import Server
from securechat.server.streamer import MAX_HISTORY, MAX_STREAMS
from securechat.store.base import NewMessage, utc_timestamp
from securechat.store.sqlite import SQLiteStore
from tests.conftest import RawClient, history_page

Factory = Callable[..., RawClient]

WIDE = "\U00020000" * 4000  # 4,000 four-byte characters: the largest message there is


def _fill(db: Path, count: int, text: str) -> list[int]:
    """Store ``count`` messages from ``filler`` in #general before the server starts."""
    store = SQLiteStore(db)
    try:
        sender = store.create_account("filler", None)
        assert sender is not None
        ts = utc_timestamp()
        rows = [
            NewMessage(i, ts, sender.id, f"{i} {text}", "#general", "#general", seq=i)
            for i in range(1, count + 1)
        ]
        store.insert_messages(rows, reserve_id=count + 1)
    finally:
        store.close()
    return [row.id for row in rows]


def test_join_replay_of_500_maximum_size_messages_arrives_whole(
    make_server: Callable[..., Server], raw_client: Factory, tmp_path: Path
) -> None:
    db = tmp_path / "wide.db"
    ids = _fill(db, 600, WIDE)
    server = make_server(db=db)
    client = raw_client(server.address[1])
    client.send("login", user="reader", password="pw", replay=False)
    client.expect("welcome")
    client.expect("joined", room="#general")
    client.send("join", room="#general", since=0)
    client.expect("joined", room="#general")
    got = [client.expect("message", history=True).get("id") for _ in range(MAX_HISTORY)]
    assert got == ids[:MAX_HISTORY]
    notice = client.expect("system", event="history")
    assert f"/history after {ids[MAX_HISTORY - 1]}" in notice.get("text")
    rid = client.send("time")
    client.expect("time", rid=rid)  # still connected, and answered after the replay


def test_a_reader_stalling_200_history_requests_does_not_delay_others(
    make_server: Callable[..., Server], raw_client: Factory, tmp_path: Path
) -> None:
    db = tmp_path / "many.db"
    _fill(db, 2000, "x" * 2000)
    server = make_server(db=db)
    port = server.address[1]
    staller = raw_client(port, recv_buffer=4096)
    staller.login("staller")
    for _ in range(200):
        staller.send("history", room="#general", limit=MAX_HISTORY)
    other = raw_client(port)
    other.login("other")
    for _ in range(5):
        started = time.monotonic()
        rows, end = history_page(other, room="#general", limit=MAX_HISTORY)
        assert len(rows) == MAX_HISTORY and end.get("count") == MAX_HISTORY
        assert time.monotonic() - started < 1.0
    # Every request was answered once: streamed whole, or refused as busy while the
    # staller had MAX_STREAMS answers in flight, never queued behind them.
    staller.sock.settimeout(10)
    answers: dict[str, int] = {}
    while sum(answers.values()) < 200:
        frame = staller.recv_frame()
        assert frame is not None
        if frame.type in ("history_end", "error"):
            answers[frame.type] = answers.get(frame.type, 0) + 1
            assert frame.type == "history_end" or (
                frame.get("code") == "busy" and frame.get("retry_after") > 0
            )
    assert MAX_STREAMS <= answers["history_end"] < 20 and answers["error"] > 180, answers
