"""The budget and cap building blocks, with an injected clock (no sleeps)."""

from __future__ import annotations

import ipaddress
import logging
import threading

import pytest

from securechat.server.limits import (
    ConnectionCaps,
    FailureThrottle,
    RateLimitedLog,
    TokenBucket,
    WindowCounter,
    source_key,
)

pytestmark = pytest.mark.timeout(10)


# -- TokenBucket -------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(burst=3, rate=2.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.25) == pytest.approx(0.25)  # a refusal spends nothing
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) == pytest.approx(0.5)


def test_token_bucket_refills_only_up_to_its_burst() -> None:
    bucket = TokenBucket(burst=2, rate=10.0)
    assert bucket.take(0.0) == 0.0
    allowed = [bucket.take(1000.0) for _ in range(3)]
    assert allowed[:2] == [0.0, 0.0] and allowed[2] > 0


def test_token_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(burst=1, rate=1.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) == pytest.approx(1.0)


def test_token_bucket_waiting_retry_after_always_succeeds() -> None:
    bucket = TokenBucket(burst=20, rate=10.0)
    now, sent = 0.0, 0
    while sent < 200:
        wait = bucket.take(now)
        if wait:
            now += wait
        else:
            sent += 1
    assert now == pytest.approx((200 - 20) / 10.0)


def test_token_bucket_is_thread_safe() -> None:
    bucket = TokenBucket(burst=1000, rate=0.001)
    allowed = []

    def spend() -> None:
        allowed.append(sum(1 for _ in range(500) if bucket.take(1.0) == 0.0))

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 1000


@pytest.mark.parametrize(("burst", "rate"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_token_bucket_refuses_nonsense(burst: int, rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(burst=burst, rate=rate)


# -- FailureThrottle -----------------------------------------------------------------


def test_failure_throttle_grows_exponentially_after_free_failures_and_caps() -> None:
    throttle = FailureThrottle(free=2, base_delay=1.0, max_delay=8.0, forget_after=60.0)
    delays = []
    for _ in range(7):
        throttle.failed("1.2.3.4", 0.0)
        delays.append(throttle.delay("1.2.3.4", 0.0))
    assert delays == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert throttle.delay("1.2.3.4", 5.0) == pytest.approx(3.0)
    assert throttle.delay("1.2.3.4", 8.0) == 0.0
    assert throttle.delay("5.6.7.8", 0.0) == 0.0


def test_failure_throttle_success_clears_the_key() -> None:
    throttle = FailureThrottle(free=0, base_delay=1.0, max_delay=10.0, forget_after=60.0)
    throttle.failed("alice", 0.0)
    assert throttle.delay("alice", 0.0) == 1.0
    throttle.succeeded("alice")
    assert throttle.delay("alice", 0.0) == 0.0
    throttle.failed("alice", 0.0)
    assert throttle.delay("alice", 0.0) == 1.0  # counting starts over


def test_failure_throttle_forgets_quiet_keys() -> None:
    throttle = FailureThrottle(free=1, base_delay=1.0, max_delay=10.0, forget_after=100.0)
    for _ in range(3):
        throttle.failed("old", 0.0)
    throttle.failed("new", 50.0)
    assert len(throttle) == 2
    assert throttle.delay("new", 100.0) == 0.0
    assert len(throttle) == 1  # "old" expired at 100
    throttle.failed("old", 100.0)
    assert throttle.delay("old", 100.0) == 0.0  # its count started over


def test_failure_throttle_memory_is_bounded() -> None:
    throttle = FailureThrottle(free=0, max_keys=100)
    for i in range(10_000):
        throttle.failed(f"k{i}", 0.0)
    assert len(throttle) == 100
    assert throttle.delay("k9999", 0.0) > 0  # the newest keys are the ones kept
    assert throttle.delay("k0", 0.0) == 0.0


def test_failure_throttle_survives_endless_failures() -> None:
    throttle = FailureThrottle(free=0, base_delay=1.0, max_delay=300.0)
    for _ in range(5000):
        throttle.failed("k", 0.0)
    assert throttle.delay("k", 0.0) == 300.0


# -- WindowCounter ---------------------------------------------------------------------


def test_window_counter_allows_n_per_window() -> None:
    counter = WindowCounter(limit=3, window=60.0)
    assert [counter.take("10.0.0.1", t) for t in (0.0, 10.0, 20.0)] == [0.0, 0.0, 0.0]
    assert counter.take("10.0.0.1", 30.0) == pytest.approx(30.0)
    assert counter.take("10.0.0.2", 30.0) == 0.0
    assert counter.take("10.0.0.1", 60.0) == 0.0  # the event at 0.0 left the window
    assert counter.take("10.0.0.1", 61.0) == pytest.approx(9.0)


def test_window_counter_forgets_quiet_keys_and_is_bounded() -> None:
    counter = WindowCounter(limit=1, window=10.0, max_keys=50)
    for i in range(1000):
        counter.take(f"k{i}", 0.0)
    assert len(counter) == 50
    counter.take("late", 10.0)
    assert len(counter) == 1


# -- source_key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_source_key(ip: str, key: str) -> None:
    assert source_key(ip) == key


def test_source_key_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        source_key("localhost")


# -- ConnectionCaps --------------------------------------------------------------------


def test_connection_caps_count_connections_and_handshakes_per_source() -> None:
    caps = ConnectionCaps(connections=3, handshakes=2)
    first = caps.admit("10.0.0.1")
    second = caps.admit("10.0.0.1")
    assert not isinstance(first, str) and not isinstance(second, str)
    assert "handshakes" in str(caps.admit("10.0.0.1"))
    first.handshake_done()
    third = caps.admit("10.0.0.1")
    assert not isinstance(third, str)
    assert caps.counts() == {"10.0.0.1": (3, 2)}
    assert "connections open (limit 3)" in str(caps.admit("10.0.0.1"))
    assert not isinstance(caps.admit("10.0.0.2"), str)  # others are not affected


def test_connection_caps_release_exactly_once() -> None:
    caps = ConnectionCaps(connections=5, handshakes=5)
    ticket = caps.admit("2001:db8::1")
    other = caps.admit("2001:db8::2")  # the same /64
    assert not isinstance(ticket, str) and not isinstance(other, str)
    assert caps.counts() == {"2001:db8::/64": (2, 2)}
    for _ in range(3):
        ticket.handshake_done()
        ticket.release()
    assert caps.counts() == {"2001:db8::/64": (1, 1)}
    other.release()
    other.handshake_done()
    assert caps.counts() == {}


def test_listed_networks_have_their_own_cap_most_specific_first() -> None:
    caps = ConnectionCaps(
        connections=1,
        handshakes=1,
        networks=[
            (ipaddress.ip_network("10.0.0.0/8"), 3),
            (ipaddress.ip_network("10.1.0.0/16"), 5),
        ],
    )
    admitted = {ip: 0 for ip in ("10.2.0.1", "10.1.0.1", "192.0.2.1", "::ffff:10.2.0.2")}
    for ip in admitted:
        while not isinstance(caps.admit(ip), str):
            admitted[ip] += 1
    assert admitted == {"10.2.0.1": 3, "10.1.0.1": 5, "192.0.2.1": 1, "::ffff:10.2.0.2": 3}


def test_connection_caps_refuse_a_zero_cap() -> None:
    with pytest.raises(ValueError):
        ConnectionCaps(networks=[(ipaddress.ip_network("10.0.0.0/8"), 0)])


# -- RateLimitedLog --------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_writes_one_line_per_second_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    log = RateLimitedLog(logging.getLogger("test.limits"), clock=clock)
    with caplog.at_level(logging.INFO, logger="test.limits"):
        for i in range(1000):
            clock.now = i / 1000
            log.log("handshake", logging.WARNING, "%s: handshake failed", f"peer{i}")
        log.log("caps", logging.WARNING, "over the cap")
        clock.now = 1.0
        log.log("handshake", logging.WARNING, "%s: handshake failed", "late")
    assert [r.getMessage() for r in caplog.records] == [
        "peer0: handshake failed",
        "over the cap",
        "late: handshake failed (and 999 more like it held back)",
    ]


def test_rate_limited_log_flush_reports_what_was_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    log = RateLimitedLog(logging.getLogger("test.limits"), clock=clock)
    with caplog.at_level(logging.INFO, logger="test.limits"):
        log.log("plaintext", logging.INFO, "first")
        log.log("plaintext", logging.WARNING, "second")
        log.log("plaintext", logging.INFO, "third")
        log.flush()  # too early: nothing
        clock.now = 1.5
        log.flush()
        log.flush()  # already reported
        log.log("plaintext", logging.INFO, "fresh")  # logged at once, no stale count
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "first"),
        (logging.WARNING, "plaintext: 2 more like it in the last 2 s (held back)"),
        (logging.INFO, "fresh"),
    ]


def test_rate_limited_log_kinds_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("test.limits"), clock=_Clock())
    with caplog.at_level(logging.INFO, logger="test.limits"):
        for i in range(10_000):
            log.log(f"kind{i}", logging.INFO, "line %d", i)
    assert len(caplog.records) < 100
