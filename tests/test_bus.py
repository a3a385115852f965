"""The Redis bus between cluster servers, against a real redis-server."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from securechat.errors import ConfigError
from securechat.server.cluster.bus import RedisBus

from .services import RedisServer, free_port

pytestmark = pytest.mark.cluster


@pytest.fixture
def make_bus(redis_url: str) -> Iterator[Callable[..., tuple[RedisBus, queue.Queue[Any]]]]:
    made: list[RedisBus] = []

    def _make(server_id: str) -> tuple[RedisBus, queue.Queue[Any]]:
        bus = RedisBus(redis_url, server_id=server_id)
        received: queue.Queue[Any] = queue.Queue()
        bus.on_events = lambda events: [received.put(e) for e in events]  # type: ignore[func-returns-value]
        bus.on_health = lambda healthy: received.put(("health", healthy))
        bus.position()
        made.append(bus)
        return bus, received

    yield _make
    for bus in made:
        bus.stop(timeout=1.0)


def _next(received: queue.Queue[Any], timeout: float = 10.0) -> Any:
    return received.get(timeout=timeout)


def test_events_reach_every_other_server_in_order_but_not_their_sender(
    make_bus: Callable[..., tuple[RedisBus, queue.Queue[Any]]],
) -> None:
    one, from_one = make_bus("one")
    two, from_two = make_bus("two")
    one.start()
    two.start()
    for n in range(50):
        one.publish({"t": "message", "n": n})
    assert [_next(from_two)["n"] for _ in range(50)] == list(range(50))
    assert from_one.empty()


def test_online_accounts_and_liveness_are_visible_to_others(
    make_bus: Callable[..., tuple[RedisBus, queue.Queue[Any]]],
) -> None:
    one, _ = make_bus("one")
    two, _ = make_bus("two")
    one.start()
    two.start()
    two_sessions = [{"session": 1, "peer": "a"}, {"session": 2, "peer": "b"}]
    one.set_online(7, two_sessions)
    one.set_online(8, [{"session": 3}])
    one.set_online(8, [])
    deadline = time.monotonic() + 10
    while two.servers() != {"one": {7: two_sessions}}:
        assert time.monotonic() < deadline, two.servers()
        time.sleep(0.05)
    one.stop()
    assert two.servers() == {}  # left cleanly: its keys are gone at once


def test_a_redis_restart_loses_no_event_published_after_it_and_restores_liveness(
    make_bus: Callable[..., tuple[RedisBus, queue.Queue[Any]]], redis_server: RedisServer
) -> None:
    one, _ = make_bus("one")
    two, from_two = make_bus("two")
    one.start()
    two.start()
    one.set_online(7, [{"session": 41}])
    one.publish({"t": "message", "n": 0})
    assert _next(from_two)["n"] == 0
    redis_server.stop()
    for n in range(1, 6):  # queued while Redis is down
        one.publish({"t": "message", "n": n})
    assert _next(from_two) == ("health", False)
    redis_server.start()
    got = [_next(from_two) for _ in range(6)]
    assert ("health", True) in got
    assert [e["n"] for e in got if isinstance(e, dict)] == [1, 2, 3, 4, 5]
    deadline = time.monotonic() + 10
    # The heartbeat put the online table back.
    while two.servers() != {"one": {7: [{"session": 41}]}}:
        assert time.monotonic() < deadline, two.servers()
        time.sleep(0.1)
    assert two.next_session_number() > 41  # not a number still in use on "one"


def test_an_unreachable_redis_is_a_clear_start_up_error() -> None:
    with pytest.raises(ConfigError, match="cannot reach Redis"):
        RedisBus(f"redis://127.0.0.1:{free_port()}/0", server_id="x")
