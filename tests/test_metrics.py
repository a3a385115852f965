"""--metrics: a Prometheus endpoint with sessions, messages, refusals by reason, store
commit latency and queue depths, scraped over real HTTP from a real server process."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.server.metrics import MetricsAddress, metrics_address
from tests.conftest import EVENT_TIMEOUT, Pki, RawClient, ServerProcess

pytestmark = pytest.mark.timeout(60)


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=EVENT_TIMEOUT) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _wait_for_sample(url: str, name: str, at_least: float) -> dict[str, float]:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        samples = _scrape(url)
        if samples.get(name, 0.0) >= at_least or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_metrics_endpoint_counts_sessions_messages_and_refusals(
    pki: Pki, tmp_path: Path, raw_client: Callable[..., RawClient]
) -> None:
    server = ServerProcess(pki, tmp_path / "chat.db", port=0, extra=("--metrics", "127.0.0.1:0"))
    try:
        port = server.wait_listening()
        found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", server.stderr)
        assert found, server.stderr
        url = found.group(1)
        alice = raw_client(port)
        alice.login("alice")
        bob = raw_client(port)
        bob.login("bob")
        for n in range(3):
            alice.send("say", room="#general", text=f"hello {n}")
            bob.expect("message", text=f"hello {n}")
        intruder = raw_client(port)
        intruder.send("login", user="alice", password="wrong")
        intruder.expect("error", code="bad_password")
        samples = _wait_for_sample(url, "securechat_messages_total", 3)
        assert samples["securechat_sessions"] == 2
        assert samples["securechat_accounts_online"] == 2
        assert samples["securechat_connections"] >= 2  # the refused one may be closed
        assert samples["securechat_messages_total"] == 3
        assert samples["securechat_store_commit_seconds_count"] >= 1
        assert samples["securechat_store_commit_seconds_sum"] > 0
        assert samples['securechat_refusals_total{reason="bad_password"}'] == 1
        assert samples["securechat_writer_queue"] >= 0
        assert samples["securechat_outbox_bytes"] >= 0
    finally:
        assert server.terminate() == 0


def test_metrics_address_defaults_to_loopback() -> None:
    assert metrics_address("9464") == MetricsAddress("127.0.0.1", 9464)
    assert metrics_address("0.0.0.0:9464") == MetricsAddress("0.0.0.0", 9464)
    assert metrics_address("[::1]:9464") == MetricsAddress("::1", 9464)
    assert metrics_address("[::1]:9464").is_loopback
    assert not metrics_address("0.0.0.0:1").is_loopback
    assert str(metrics_address("[::1]:9464")) == "[::1]:9464"
