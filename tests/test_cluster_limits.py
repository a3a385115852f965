"""Budgets that several servers enforce together, so that spreading over them does not
multiply them: failed logins, registrations and connections per address, messages per
account."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import pytest

from securechat.server.limits import SHARE_FROM
from securechat.server.listener import Server
from tests.conftest import EVENT_TIMEOUT, RawClient

pytestmark = pytest.mark.cluster

Factory = Callable[..., RawClient]


def _pair(make_server: Callable[..., Server], store: str, bus: str, **config: object) -> list[int]:
    return [make_server(store=store, bus=bus, **config).address[1] for _ in range(2)]


def _login_code(client: RawClient, user: str, password: str) -> str:
    rid = client.send("login", user=user, password=password)
    while True:
        frame = client.recv_frame()
        assert frame is not None, "closed before answering the login"
        if frame.get("rid") == rid:
            return "ok" if frame.type == "welcome" else str(frame.get("code"))


def test_wrong_passwords_on_one_server_throttle_the_name_on_the_other(
    make_server: Callable[..., Server], raw_client: Factory, postgres_url: str, redis_url: str
) -> None:
    ports = _pair(make_server, postgres_url, redis_url)
    owner = raw_client(ports[0])
    owner.login("alice")
    codes = []
    for attempt in range(6):  # five are free, spread over both servers
        guesser = raw_client(ports[attempt % 2], source=f"127.0.0.{10 + attempt}")
        codes.append(_login_code(guesser, "alice", "guess"))
    assert codes == ["bad_password"] * 6
    # The name now waits on both servers, whichever got the failures.
    deadline = time.monotonic() + EVENT_TIMEOUT
    for port in ports:
        while True:
            code = _login_code(raw_client(port, source="127.0.1.1"), "alice", "guess")
            if code == "login_throttled":
                break
            assert time.monotonic() < deadline, code
            time.sleep(0.05)


def test_connections_per_address_count_on_every_server(
    make_server: Callable[..., Server], raw_client: Factory, postgres_url: str, redis_url: str
) -> None:
    cap = SHARE_FROM + 2
    ports = _pair(make_server, postgres_url, redis_url, max_connections_per_ip=cap)
    held = [raw_client(ports[0]) for _ in range(SHARE_FROM)]  # each has had its hello
    deadline = time.monotonic() + EVENT_TIMEOUT
    refused = False
    opened = []
    while not refused:  # room for two more on the other server, then refused
        try:
            opened.append(raw_client(ports[1]))
            if len(opened) > 2:
                opened.pop(0).close()  # the count may not have reached it yet: keep two
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            refused = True
        assert time.monotonic() < deadline, "never refused"
    assert len(opened) == 2 and len(held) == SHARE_FROM


def test_an_account_on_two_servers_shares_one_message_budget(
    make_server: Callable[..., Server], raw_client: Factory, postgres_url: str, redis_url: str
) -> None:
    burst = 4
    servers = [
        make_server(store=postgres_url, bus=redis_url, message_burst=burst, message_rate=0.01)
        for _ in range(2)
    ]
    sessions = []
    for server in servers:
        client = raw_client(server.address[1])
        client.login("alice")
        sessions.append(client)
    deadline = time.monotonic() + EVENT_TIMEOUT
    for server in servers:  # each knows the account is on the other too
        while True:
            with server.hub.lock:
                account = server.hub.accounts.find("alice")
                assert server.hub.cluster is not None and account is not None
                if server.hub.cluster.servers_of(account.id):
                    break
            assert time.monotonic() < deadline, "presence never arrived"
            time.sleep(0.02)
    sent = 0
    for n in range(2 * burst):
        client = sessions[n % 2]
        rid = client.send("say", room="#general", text=f"m{n}")
        while True:
            frame = client.recv_frame()
            assert frame is not None
            if frame.get("rid") == rid:
                break
        if frame.type == "message":
            sent += 1
        else:
            assert frame.get("code") == "rate_limited"
    assert sent == burst  # not burst on each server
