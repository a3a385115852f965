"""Nothing one user does stalls the others: measured round trips of an unrelated user
while someone else makes the server do its heaviest work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from securechat.server.listener import Server
from securechat.server.passwords import hash_password
from securechat.store.base import NewMessage, utc_timestamp
from securechat.store.sqlite import SQLiteStore
from tests.conftest import RawClient

Factory = Callable[..., RawClient]

BIG = 150_000


def _big_database(db: Path, *, sender: str, count: int) -> None:
    """``count`` stored, indexed messages from ``sender`` in #general."""
    store = SQLiteStore(db)
    try:
        account = store.create_account(sender, hash_password("pw"), rooms=["#general"])
        assert account is not None
        ts = utc_timestamp()
        for start in range(1, count + 1, 10_000):
            rows = [
                NewMessage(
                    i,
                    ts,
                    account.id,
                    f"note {i} about the quarterly plan",
                    "#general",
                    "#general",
                    seq=i,
                )
                for i in range(start, min(count, start + 9_999) + 1)
            ]
            store.insert_messages(rows, reserve_id=count + 1)
        store.index_pending()
    finally:
        store.close()


def _round_trips(client: RawClient, until: threading.Event, *, say: bool) -> list[float]:
    """Round trips of ``time`` requests (or stored messages, ten a second) until ``until``."""
    times = []
    deadline = time.monotonic() + 60
    while not until.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        if say:
            rid = client.send("say", room="#general", text=f"still here {len(times)}")
            client.expect("message", rid=rid)
        else:
            rid = client.send("time")
            client.expect("time", rid=rid)
        times.append(time.monotonic() - started)
        time.sleep(max(0.0, (0.1 if say else 0.01) - (time.monotonic() - started)))
    return times


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_forget_on_a_150k_message_database_does_not_stall_others(
    make_server: Callable[..., Server], raw_client: Factory, tmp_path: Path
) -> None:
    db = tmp_path / "big.db"
    _big_database(db, sender="author", count=BIG)
    port = make_server(db=db).address[1]
    author, talker, prober = raw_client(port), raw_client(port), raw_client(port)
    author.login("author")
    talker.login("talker")
    prober.login("prober")
    done = threading.Event()
    results: dict[str, list[float]] = {}

    def measure(name: str, client: RawClient, say: bool) -> None:
        results[name] = _round_trips(client, done, say=say)

    threads = [
        threading.Thread(target=measure, args=("time", prober, False)),
        threading.Thread(target=measure, args=("say", talker, True)),
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    rid = author.send("forget")
    erased = author.expect("forgotten", rid=rid, timeout=60)
    took = time.monotonic() - started
    done.set()
    for thread in threads:
        thread.join(10)
    assert erased.get("count") == BIG
    print(
        f"forget of {BIG} took {took:.2f} s; others' round trips: "
        + ", ".join(
            f"{name} n={len(v)} p99={_p99(v) * 1000:.1f} ms max={max(v) * 1000:.1f} ms"
            for name, v in results.items()
        )
    )
    assert _p99(results["time"]) < 0.1
    assert _p99(results["say"]) < 0.1
