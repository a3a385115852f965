"""Budgets: what one user (or one address) may take, refused with a reason and a
``retry_after``, never dropped silently, and never at the cost of anyone else."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from securechat.server.listener import Server
from securechat.wire.protocol import encode
from tests.conftest import EVENT_TIMEOUT, Pki, RawClient

Factory = Callable[..., RawClient]

FLOOD = 10_000
GUESSERS = 8


def test_a_flood_of_messages_is_rate_limited_and_every_one_answered(
    server: Server, raw_client: Factory
) -> None:
    port = server.address[1]
    flooder, other, watcher = raw_client(port), raw_client(port), raw_client(port)
    flooder.login("flooder")
    other.login("other")
    watcher.login("watcher")
    started = time.monotonic()
    flooder.send_raw(
        b"".join(
            encode("say", rid=rid, room="#general", text=f"flood {rid}")
            for rid in range(1, FLOOD + 1)
        )
    )
    answers: dict[int, str] = {}
    retry_after = []
    while len(answers) < FLOOD:
        frame = flooder.recv_frame()
        assert frame is not None, "the flooder was disconnected"
        rid = frame.get("rid")
        if rid is None:
            continue
        assert rid not in answers, f"two answers to {rid}"
        if frame.type == "error":
            assert frame.get("code") == "rate_limited"
            retry_after.append(frame.get("retry_after"))
            answers[rid] = "refused"
        else:
            assert frame.type == "message"
            answers[rid] = "acknowledged"
    elapsed = time.monotonic() - started
    acked = sum(1 for a in answers.values() if a == "acknowledged")
    # The burst, then ten a second while the flood lasted.
    assert 20 <= acked <= 20 + 10 * elapsed + 1
    assert all(0 < wait <= 0.1 + 1e-3 for wait in retry_after), sorted(set(retry_after))[:5]
    # Others talk as usual meanwhile, and see only what was acknowledged.
    rid = other.send("say", room="#general", text="can anyone hear me?")
    other.expect("message", rid=rid)
    seen = 0
    while watcher.expect("message").get("text") != "can anyone hear me?":
        seen += 1
    assert seen == acked


def test_an_honest_login_is_quick_during_a_flood_of_wrong_passwords(
    make_server: Callable[..., Server], raw_client: Factory, pki: Pki
) -> None:
    port = make_server().address[1]
    victim = raw_client(port)
    victim.login("victim", "right")
    victim.close()
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    started = 0

    def guess() -> None:
        nonlocal started
        while not stop.is_set():
            with lock:
                if started >= 1000:
                    return
                started += 1
            try:
                attacker = RawClient(port, pki.ca_pem, source="127.0.0.1")
            except OSError:
                outcome = "refused at connect"
            else:
                try:
                    attacker.send("login", user="victim", password="wrong")
                    frame = attacker.recv_frame()
                    outcome = frame.get("code") if frame is not None else "closed"
                except OSError:
                    outcome = "closed"
                finally:
                    attacker.close()
            with lock:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

    threads = [threading.Thread(target=guess) for _ in range(GUESSERS)]
    for thread in threads:
        thread.start()
    try:
        waits = []
        for i in range(3):
            began = time.monotonic()
            honest = raw_client(port, source="127.0.0.2")
            assert honest.login(f"honest{i}", "pw").get("user") == f"honest{i}"
            waits.append(time.monotonic() - began)
            honest.close()
        for thread in threads:
            thread.join(EVENT_TIMEOUT * 6)
    finally:
        stop.set()
    assert max(waits) < 2.0, waits
    assert sum(outcomes.values()) == 1000, outcomes
    # Five guesses are checked (plus those already in flight when the fifth failed),
    # then the address and the name are throttled without hashing anything.
    assert outcomes.get("bad_password", 0) <= 5 + GUESSERS, outcomes
    assert outcomes.get("login_throttled", 0) > 900, outcomes


def test_registrations_per_address_are_limited(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    port = make_server(registrations_per_ip=3).address[1]
    for i in range(3):
        raw_client(port).login(f"new{i}")
    late = raw_client(port)
    late.send("login", user="new3", password="pw")
    error = late.expect("error")
    assert error.get("code") == "registration_limited" and error.get("retry_after") > 0
    raw_client(port).login("new0")  # logging in to an existing account is not limited
    raw_client(port, source="127.0.0.3").login("new3")  # nor is another address


def test_an_account_has_at_most_max_sessions(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    port = make_server(max_sessions=2).address[1]
    first, second = raw_client(port), raw_client(port)
    first.login("alice")
    second.login("alice")
    third = raw_client(port)
    third.send("login", user="alice", password="pw")
    assert third.expect("error").get("code") == "too_many_sessions"
    third.wait_closed()
    second.send("quit")
    second.wait_closed()
    raw_client(port).login("alice")
