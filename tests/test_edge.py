"""The server's edge through real sockets: connection caps, deadlines, I/O loops.

Sources other than 127.0.0.1 are other loopback addresses (127.0.0.2 and so on):
the client binds to one before connecting, and loopback is not exempt from caps.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest

from securechat.channel import Channel
from securechat.ioloop import IOLoop
from securechat.server.cli import build_parser, main
from securechat.server.listener import Server
from securechat.tls import server_context
from securechat.wire.protocol import PREFIX, PROTOCOL_VERSION, Decoder, Frame, encode
from tests.conftest import EVENT_TIMEOUT, Pki, RawClient, tls_pair

Factory = Callable[..., RawClient]

pytestmark = pytest.mark.timeout(60)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = EVENT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _plain_socket(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(EVENT_TIMEOUT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _assert_refused_at_once(port: int, pki: Pki, source: str) -> None:
    """A TLS connection from ``source`` is closed before its handshake completes."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    try:
        # The reset can come so fast that it is connect() which reports it.
        with _plain_socket(port, source) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost").close()
    except TimeoutError:
        pytest.fail("the server neither refused nor served the connection")
    except (ssl.SSLError, OSError):
        return
    pytest.fail(f"a connection from {source} was accepted over the cap")


def _source_counts(server: Server, source: str) -> tuple[int, int]:
    return server.connection_caps.counts().get(source, (0, 0))


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _logged_events(caplog: pytest.LogCaptureFixture, kind: str) -> tuple[int, int]:
    """(lines written, events they account for) about closes of ``kind``."""
    lines = events = 0
    for record in caplog.records:
        text = record.getMessage()
        if f"closed: {kind}" in text:
            held = re.search(r"\(and (\d+) more like it held back\)", text)
            lines, events = lines + 1, events + 1 + (int(held.group(1)) if held else 0)
        elif summary := re.fullmatch(rf"{kind}: (\d+) more like it in the last .*", text):
            lines, events = lines + 1, events + int(summary.group(1))
    return lines, events


# -- connection caps -------------------------------------------------------------------


def test_connections_over_the_per_address_cap_are_refused_and_others_served(
    make_server: Callable[..., Server],
    raw_client: Factory,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(max_connections_per_ip=3)
    port = server.address[1]
    held = [raw_client(port, source="127.0.0.2") for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="securechat.server.listener"):
        for _ in range(20):
            _assert_refused_at_once(port, pki, "127.0.0.2")
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= 2, [r.getMessage() for r in refusals]
    assert "3 connections open (limit 3)" in refusals[0].getMessage()

    other = raw_client(port, source="127.0.0.3")
    assert other.login("other").get("user") == "other"
    held[0].close()
    _wait_for(lambda: _source_counts(server, "127.0.0.2") == (2, 0), "a slot to be released")
    again = raw_client(port, source="127.0.0.2")
    assert again.login("again").get("user") == "again"


def test_unfinished_handshakes_over_the_cap_are_refused(
    make_server: Callable[..., Server], raw_client: Factory, pki: Pki
) -> None:
    server = make_server(max_handshakes_per_ip=2, handshake_timeout=30.0)
    port = server.address[1]
    silent = [_plain_socket(port, "127.0.0.4") for _ in range(2)]
    _wait_for(lambda: _source_counts(server, "127.0.0.4") == (2, 2), "two pending handshakes")
    try:
        with _plain_socket(port, "127.0.0.4") as third:
            assert third.recv(1) == b""  # closed at once, not after the handshake timeout
    except ConnectionResetError:
        pass
    _assert_refused_at_once(port, pki, "127.0.0.4")
    raw_client(port, source="127.0.0.5").login("elsewhere")
    for sock in silent:
        sock.close()
    _wait_for(lambda: _source_counts(server, "127.0.0.4") == (0, 0), "the handshakes to end")
    assert raw_client(port, source="127.0.0.4").login("patient").get("user") == "patient"


def test_a_listed_network_has_its_own_cap(
    make_server: Callable[..., Server], raw_client: Factory, pki: Pki
) -> None:
    office = ipaddress.ip_network("127.0.0.8/29")
    server = make_server(
        max_connections_per_ip=1, max_handshakes_per_ip=1, connection_limits=((office, 3),)
    )
    port = server.address[1]
    for _ in range(3):
        raw_client(port, source="127.0.0.9")
    _assert_refused_at_once(port, pki, "127.0.0.9")
    raw_client(port, source="127.0.0.20")
    _assert_refused_at_once(port, pki, "127.0.0.20")


def test_counts_threads_and_descriptors_return_to_baseline_after_200_connections(
    server: Server, pki: Pki
) -> None:
    port = server.address[1]
    RawClient(port, pki.ca_pem, source="127.0.0.6").close()  # warm up
    _wait_for(lambda: not server.connection_caps.counts(), "the warm-up to be released")
    threads, fds = threading.active_count(), _fd_count()
    for i in range(200):
        client = RawClient(port, pki.ca_pem, source="127.0.0.6")
        if i % 2:
            client.send("time")  # some close after a request, some right after hello
        client.close()
    _wait_for(lambda: not server.connection_caps.counts(), "every count to be released")
    _wait_for(
        lambda: (threading.active_count(), _fd_count()) == (threads, fds),
        f"threads and descriptors back to {threads} and {fds}",
    )


def test_cap_options_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    required = ["--cert", "c.pem", "--key", "k.pem"]
    args = build_parser().parse_args(
        [
            *required,
            "--max-connections-per-ip",
            "8",
            "--connection-limit",
            "10.1.2.3/8=500",
            "--connection-limit",
            "2001:db8::/48=50",
        ]
    )
    assert (args.max_connections_per_ip, args.max_handshakes_per_ip) == (8, 16)
    assert args.connection_limit == [
        (ipaddress.ip_network("10.0.0.0/8"), 500),
        (ipaddress.ip_network("2001:db8::/48"), 50),
    ]
    for bad in (
        ["--connection-limit", "10.0.0.0/8"],
        ["--connection-limit", "10.0.0.0/8=0"],
        ["--connection-limit", "tenet=5"],
        ["--max-handshakes-per-ip", "0"],
        ["--frame-timeout", "0"],
    ):
        with pytest.raises(SystemExit):
            main([*required, *bad])
        assert "securechat-server: error:" in capsys.readouterr().err


# -- logging under a flood -------------------------------------------------------------


def test_a_flood_of_failed_connections_logs_a_few_lines_that_count_them_all(
    server: Server, raw_client: Factory, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.address[1]
    caplog.set_level(logging.INFO, logger="securechat.server.listener")
    for _ in range(30):
        with _plain_socket(port, "127.0.0.7") as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                while plain.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    for _ in range(10):
        bad = raw_client(port, source="127.0.0.7")
        bad.send_raw(PREFIX.pack(PROTOCOL_VERSION, 0, 5, 0) + b"{nope")
        assert [f.get("code") for f in bad.wait_closed()] == ["bad_frame"]
    _wait_for(
        lambda: _logged_events(caplog, "TLS handshake failed")[1] == 30,
        "every failed handshake to be accounted for",
    )
    _wait_for(
        lambda: _logged_events(caplog, "protocol error")[1] == 10,
        "every bad frame to be accounted for",
    )
    assert _logged_events(caplog, "TLS handshake failed")[0] <= 4
    assert _logged_events(caplog, "protocol error")[0] <= 4


# -- the frame deadline ----------------------------------------------------------------


def test_a_frame_trickled_too_slowly_closes_the_connection_with_a_reason(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(frame_timeout=0.5)
    port = server.address[1]
    watcher = raw_client(port)
    watcher.login("watcher")
    slow = raw_client(port)
    slow.login("slow")
    frame = encode("say", room="#general", text="x" * 200)
    slow.send_raw(frame[:10])
    started, sent = time.monotonic(), 10
    while True:
        try:
            answer = slow.recv_frame(timeout=0.1)
        except TimeoutError:
            slow.send_raw(frame[sent : sent + 1])  # a byte every 0.1 s: alive, never done
            sent += 1
            continue
        break
    assert sent < len(frame)
    assert time.monotonic() - started >= 0.5
    assert answer is not None and answer.type == "error"
    assert answer.get("code") == "bad_frame"
    assert answer.get("text") == "protocol error: a frame was not completed within 0.5 s"
    assert slow.wait_closed() == []
    notice = watcher.expect("system", event="quit", user="slow")
    assert "a frame was not completed within 0.5 s" in notice.get("text")


def test_the_frame_deadline_restarts_with_every_frame(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(frame_timeout=0.5)
    client = raw_client(server.address[1])
    client.login("steady")
    frame = encode("time")
    half = len(frame) // 2
    client.send_raw(frame[:half])
    started = time.monotonic()
    # Each write ends one frame and begins the next, so a frame is always half
    # received, for longer than the deadline in all; but each one is quick.
    while time.monotonic() - started < 1.5:
        with pytest.raises(TimeoutError):
            client.recv_frame(timeout=0.1)
        client.send_raw(frame[half:] + frame[:half])
        client.expect("time")
    client.send_raw(frame[half:])
    client.expect("time")


# -- I/O loops -------------------------------------------------------------------------


def test_a_stopped_loop_ignores_late_calls_and_writes_to_no_reused_descriptor(pki: Pki) -> None:
    loop = IOLoop("late")
    loop.start()
    loop.stop()
    assert not loop.is_running
    # The loop's selector, then its pipe's two ends, are free again. A descriptor
    # and then new pipes take those numbers: the old write end is a write end again.
    placeholder = os.open(os.devnull, os.O_RDONLY)
    pipes = [os.pipe() for _ in range(4)]
    try:
        context = server_context(cert=pki.server_pem, key=pki.server_key)
        with socket.socket() as raw:
            tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            channel = Channel(tls, _NoHandler(), peer="nobody")
            assert loop.add(channel) is False
            loop.call_soon(lambda: None)
            loop.mark_dirty(channel)
            loop.mark_dirty(channel, read=True)
            channel.send(encode("time"))  # an outbox put from another thread wakes the loop
            loop.stop()
        for read_end, _ in pipes:
            os.set_blocking(read_end, False)
            with pytest.raises(BlockingIOError):
                os.read(read_end, 1)
    finally:
        os.close(placeholder)
        for read_end, write_end in pipes:
            os.close(read_end)
            os.close(write_end)


class _NoHandler:
    def on_open(self, channel: Channel) -> None:
        """Never called."""

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """Never called."""

    def on_close(self, channel: Channel, reason: str) -> None:
        """Never called."""


def test_connections_go_to_the_loops_still_running_and_none_left_stops_accepting(
    make_server: Callable[..., Server],
    raw_client: Factory,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(io_threads=2)
    port = server.address[1]
    first, second = server.io_loops
    victim, witness = raw_client(port), raw_client(port)  # one per loop, in turn
    victim.login("victim")
    witness.login("witness")
    # A broken selector is the kind of failure nothing inside the loop can recover from.
    first.call_soon(first.selector.close)
    _wait_for(lambda: not first.is_running, "the first loop to crash")
    victim.wait_closed()
    assert witness.expect("system", event="quit", user="victim").get("text") == (
        "victim left (internal error)"
    )
    for i in range(4):  # every new connection lands on the loop still running
        client = raw_client(port)
        client.login(f"later{i}")
        client.send("say", room="#general", text=f"hello {i}")
        witness.expect("message", text=f"hello {i}")
    assert "I/O loop io-0 has stopped" in caplog.text

    second.call_soon(second.selector.close)
    _wait_for(lambda: not second.is_running, "the second loop to crash")
    _assert_refused_at_once(port, pki, "127.0.0.1")
    _wait_for(lambda: "not accepting connections any more" in caplog.text, "the error line")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=EVENT_TIMEOUT).close()
    _wait_for(lambda: not server.connection_caps.counts(), "every count to be released")


# -- protocol rules the edge enforces --------------------------------------------------


@pytest.mark.parametrize("type_", ["ping", "pong"])
def test_ping_or_pong_with_a_body_is_a_protocol_error(
    server: Server, raw_client: Factory, type_: str
) -> None:
    client = raw_client(server.address[1])
    client.send_raw(encode(type_, b"payload"))
    frames = client.wait_closed()
    assert [(f.type, f.get("code"), f.get("text")) for f in frames] == [
        ("error", "bad_frame", f"protocol error: '{type_}' frames carry no body")
    ]


@pytest.mark.parametrize("field", ["before", "after", "limit", "rid"])
def test_history_with_an_integer_beyond_64_bits_gets_one_error_and_is_closed(
    server: Server, raw_client: Factory, field: str
) -> None:
    port = server.address[1]
    client = raw_client(port)
    client.login("alice")
    request = {"room": "#general", "before": 5, field: 2**70}
    client.send_raw(encode("history", **request))
    frames = client.wait_closed()
    assert [(f.type, f.get("code"), f.get("rid")) for f in frames] == [("error", "bad_frame", None)]
    assert f"'{field}' is outside the 64-bit integer range" in frames[0].get("text")
    raw_client(port).login("bob")  # and the server serves on


class _Recorder:
    """A handler that keeps the frames and the close reason."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed = threading.Event()
        self.reason = ""

    def on_open(self, channel: Channel) -> None:
        """Nothing to do."""

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """Answer every frame with a copy of it."""
        self.frames.append(frame)
        channel.send(encode(frame.type))

    def on_close(self, channel: Channel, reason: str) -> None:
        """Note why."""
        self.reason = reason
        self.closed.set()


class _BuggyChannel(Channel):
    """A channel whose own code fails on the first bytes it reads."""

    def _received(self, data: bytes) -> None:
        raise RuntimeError("a bug in the channel")


def test_a_bug_in_one_channel_closes_that_channel_and_the_loop_serves_on(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    loop = IOLoop("guarded")
    loop.start()
    try:
        buggy_end, buggy_peer = tls_pair(pki)
        good_end, good_peer = tls_pair(pki)
        buggy_handler, good_handler = _Recorder(), _Recorder()
        assert loop.add(_BuggyChannel(buggy_end, buggy_handler, peer="buggy"))
        assert loop.add(Channel(good_end, good_handler, peer="good"))
        for peer in (buggy_peer, good_peer):
            peer.settimeout(EVENT_TIMEOUT)
            peer.do_handshake()
        buggy_peer.sendall(encode("time"))
        assert buggy_handler.closed.wait(EVENT_TIMEOUT)
        assert buggy_handler.reason == "internal error"
        assert "internal error on buggy" in caplog.text
        good_peer.sendall(encode("time"))
        decoder = Decoder()
        while (frame := decoder.next_frame()) is None:
            decoder.feed(good_peer.recv(65536))
        assert frame.type == "time"
        assert loop.is_running
    finally:
        loop.stop()
