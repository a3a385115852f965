"""The web port without a browser: HTTP answers and headers, the WebSocket's gate, and the
chat protocol over WebSocket answering exactly as over TCP.

Everything runs against a real server on 127.0.0.1 through real TLS sockets: HTTP
through the standard library's client, WebSocket through wsproto (tests/websocket.py).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError as WebSocketLocalError

from securechat.channel import Channel
from securechat.ioloop import IOLoop
from securechat.server.listener import Server, ServerConfig
from securechat.web.channel import MAX_PIPELINED, MAX_REQUEST_HEAD, WebChannel
from securechat.web.site import CONTENT_SECURITY_POLICY, Site
from securechat.wire.protocol import MAX_BODY, PREFIX, PROTOCOL_VERSION, Frame, encode
from tests.conftest import EVENT_TIMEOUT, UNMETERED, Pki, RawClient, tls_pair
from tests.websocket import WebSocketClient, WebSocketRefused, tls_connect

ServerFactory = Callable[..., Server]


@pytest.fixture
def web(make_server: ServerFactory) -> Server:
    """A server with the web client on an ephemeral port."""
    return make_server(web_port=0)


def web_port(server: Server) -> int:
    """The port the server serves the web client on."""
    assert server.web_address is not None
    return server.web_address[1]


def get(
    server: Server, pki: Pki, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    """One HTTPS request to the web port; the response and its body."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    conn = http.client.HTTPSConnection(
        "localhost", web_port(server), context=ctx, timeout=EVENT_TIMEOUT
    )
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def read_until_closed(sock: ssl.SSLSocket | socket.socket, timeout: float = EVENT_TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


class _ErrorLog(logging.Handler):
    """What the in-process servers log at ERROR and above."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the line."""
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def server_errors() -> Iterator[_ErrorLog]:
    """The servers' errors. An internal error costs only its own connection now (the I/O
    loop survives it), so tests of bad peers look here to see that none happened."""
    handler = _ErrorLog()
    logger = logging.getLogger("securechat")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def ws_client(pki: Pki) -> Iterator[Callable[..., WebSocketClient]]:
    """Factory of WebSocket clients; all closed after the test."""
    made: list[WebSocketClient] = []

    def _make(port: int, **kwargs: Any) -> WebSocketClient:
        client = WebSocketClient(port, pki.ca_pem, **kwargs)
        made.append(client)
        return client

    yield _make
    for client in made:
        client.close()


# -- the page and its files ------------------------------------------------------------


def test_the_page_and_every_asset_carry_the_security_headers(web: Server, pki: Pki) -> None:
    response, body = get(web, pki, "/")
    assert response.status == 200
    assert response.getheader("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    for directive in ("script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("Referrer-Policy") == "no-referrer"
    assert response.getheader("Cache-Control") == "no-cache"
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert response.getheader("Set-Cookie") is None
    assert b"%ASSETS%" not in body
    # The page names its files by the hash of this release, and each is served for a year.
    linked = re.findall(rb'(?:src|href)="(/assets/[^"]+)"', body)
    assert linked, body
    site = Site()
    for path in site.asset_paths:
        asset, content = get(web, pki, path)
        assert asset.status == 200, path
        assert asset.getheader("Cache-Control") == "public, max-age=31536000, immutable"
        assert asset.getheader("Content-Security-Policy") == CONTENT_SECURITY_POLICY
        assert asset.getheader("X-Content-Type-Options") == "nosniff"
        assert int(asset.getheader("Content-Length") or -1) == len(content)
    assert {p.decode() for p in linked} <= set(site.asset_paths)


def test_each_asset_is_named_by_the_hash_of_what_is_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script type="module" src="%ASSETS%/app.js"></script>')
    (tmp_path / "app.js").write_text('import { x } from "./lib/x.js";\nimport("./other.js");')
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "x.js").write_text("export const x = 1;")
    (tmp_path / "other.js").write_text("export const y = 2;")
    (tmp_path / "notes.md").write_text("not served")
    first = Site(tmp_path)
    app, lib, other = (first.url_of(n) for n in ("app.js", "lib/x.js", "other.js"))
    assert re.fullmatch(r"/assets/app\.[0-9a-f]{16}\.js", app)
    assert re.fullmatch(r"/assets/lib/x\.[0-9a-f]{16}\.js", lib)
    assert first.asset_paths == sorted([app, lib, other])
    # Imports name the hashed URLs, so a module's hash covers what it imports.
    served = first.respond("GET", app).body
    assert served == f'import {{ x }} from "{lib}";\nimport("{other}");'.encode()
    assert first.respond("GET", "/").body == f'<script type="module" src="{app}"></script>'.encode()
    # A change renames the file and its importers, and nothing else.
    (tmp_path / "lib" / "x.js").write_text("export const x = 3;")
    second = Site(tmp_path)
    assert second.url_of("lib/x.js") != lib and second.url_of("app.js") != app
    assert second.url_of("other.js") == other
    assert first.respond("GET", lib).status == 200 and second.respond("GET", lib).status == 404


def test_a_broken_web_client_stops_the_server_at_start(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="%ASSETS%/app.js"></script>')
    (tmp_path / "app.js").write_text('import "./missing.js";')
    with pytest.raises(FileNotFoundError, match=r"imports missing\.js"):
        Site(tmp_path)
    (tmp_path / "app.js").write_text('import "./b.js";')
    (tmp_path / "b.js").write_text('import "./app.js";')
    with pytest.raises(ValueError, match="cycle"):
        Site(tmp_path)
    (tmp_path / "b.js").write_text("")
    (tmp_path / "index.html").write_text('<link href="%ASSETS%/gone.css">')
    with pytest.raises(FileNotFoundError, match=r"gone\.css"):
        Site(tmp_path)


def test_unknown_paths_other_methods_and_bodies_get_clear_errors(web: Server, pki: Pki) -> None:
    missing, text = get(web, pki, "/etc/passwd")
    assert missing.status == 404 and missing.getheader("Cache-Control") == "no-store"
    old, text = get(web, pki, "/assets/app.0123456789abcdef.js")
    assert old.status == 404 and b"reload the page" in text
    post, text = get(web, pki, "/", method="POST", headers={"Content-Length": "0"})
    assert post.status == 405 and post.getheader("Allow") == "GET, HEAD"
    head, text = get(web, pki, "/", method="HEAD")
    assert head.status == 200 and text == b"" and int(head.getheader("Content-Length") or 0) > 0
    sock = tls_connect(web_port(web), pki.ca_pem)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    assert b"Content-Security-Policy: " in answer


def test_several_requests_share_one_connection(web: Server, pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    conn = http.client.HTTPSConnection("localhost", web_port(web), context=ctx, timeout=5)
    for path in ["/", *Site().asset_paths, "/"]:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    conn.close()


def test_pipelined_requests_are_answered_in_order(web: Server, pki: Pki) -> None:
    sock = tls_connect(web_port(web), pki.ca_pem)
    request = b"GET /nothing-%d HTTP/1.1\r\nHost: localhost\r\n\r\n"
    sock.sendall(b"".join(request % i for i in range(5)) + b"GET / HTTP/1.1\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    answer = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 404 ") == 5
    assert answer.rindex(b"HTTP/1.1 200 ") > answer.rindex(b"HTTP/1.1 404 ")


def test_an_oversized_request_head_is_refused_and_closed(web: Server, pki: Pki) -> None:
    sock = tls_connect(web_port(web), pki.ca_pem)
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    try:
        head = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + filler * (MAX_REQUEST_HEAD // 1000 + 2)
        sock.sendall(head)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # closed while we were still sending: also a refusal
    answer = read_until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]


def test_a_slow_or_half_open_request_is_cut_off(make_server: ServerFactory, pki: Pki) -> None:
    server = make_server(web_port=0, handshake_timeout=0.5)
    started = time.monotonic()
    silent = tls_connect(web_port(server), pki.ca_pem)
    trickle = tls_connect(web_port(server), pki.ca_pem)
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    trickle.settimeout(0.1)
    sent = 0
    closed = False
    while not closed and time.monotonic() - started < EVENT_TIMEOUT:
        try:
            trickle.sendall(request[sent : sent + 1])  # a byte every 0.1 s: alive, never done
            sent += 1
            closed = trickle.recv(1024) == b""
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            closed = True
    assert closed and sent < len(request)
    assert time.monotonic() - started >= 0.5
    assert read_until_closed(silent) == b""
    # Between requests, an idle connection gets the same time and no more.
    idle = tls_connect(web_port(server), pki.ca_pem)
    idle.sendall(request)
    assert read_until_closed(idle).startswith(b"HTTP/1.1 200 ")


def test_plaintext_http_on_the_web_port_gets_nothing(web: Server) -> None:
    with socket.create_connection(("127.0.0.1", web_port(web)), timeout=EVENT_TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = read_until_closed(sock)
    assert b"HTTP" not in answer and b"<html" not in answer.lower()


def test_the_chat_port_serves_no_web_page(
    web: Server, raw_client: Callable[..., RawClient]
) -> None:
    client = raw_client(web.address[1])
    client.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    frames = client.wait_closed()
    assert [f.get("code") for f in frames] == ["bad_frame"]


def test_without_web_port_nothing_listens_for_browsers(server: Server) -> None:
    assert server.web_address is None


# -- the WebSocket's gate ---------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://localhost:{port}", "https://localhost:1", "null", ""],
)
def test_a_websocket_from_another_origin_is_refused(
    web: Server, ws_client: Callable[..., WebSocketClient], origin: str
) -> None:
    port = web_port(web)
    with pytest.raises(WebSocketRefused) as refused:
        ws_client(port, origin=origin.format(port=port) or "")
    assert refused.value.status == 403
    assert f"only accepted from https://localhost:{port}" in refused.value.body.decode()
    ws_client(port).login("still-served")


def test_a_plain_get_of_the_websocket_path_is_told_to_upgrade(web: Server, pki: Pki) -> None:
    response, body = get(web, pki, "/ws")
    assert response.status == 426 and response.getheader("Upgrade") == "websocket"
    assert b"WebSocket connections only" in body


def test_a_text_message_is_a_protocol_error_closed_with_a_reason(
    web: Server, ws_client: Callable[..., WebSocketClient]
) -> None:
    client = ws_client(web_port(web))
    client.login("texter")
    client.send_text('{"type":"time"}')
    frames = client.wait_closed()
    assert [(f.type, f.get("code")) for f in frames] == [("error", "bad_frame")]
    assert "binary messages" in frames[0].get("text")
    assert client.close_code == 1000


def test_frames_split_across_messages_and_batched_in_one_are_both_read(
    web: Server, ws_client: Callable[..., WebSocketClient]
) -> None:
    client = ws_client(web_port(web))
    client.login("splitter")
    frame = encode("time", rid=50)
    client.send_raw(frame[:3])
    client.send_raw(frame[3:] + encode("time", rid=51))
    assert client.expect("time", rid=50) and client.expect("time", rid=51)


def test_websocket_pings_are_answered(
    web: Server, ws_client: Callable[..., WebSocketClient]
) -> None:
    client = ws_client(web_port(web))
    client.sock.sendall(client.ws.send(Ping(payload=b"are you there")))
    while True:
        client.ws.receive_data(client.sock.recv(65536))
        events = list(client.ws.events())
        pongs = [e for e in events if isinstance(e, Pong)]
        if pongs:
            assert pongs[0].payload == b"are you there"
            break


def test_a_stopping_server_says_goodbye_and_closes_as_going_away(
    make_server: ServerFactory, ws_client: Callable[..., WebSocketClient]
) -> None:
    server = make_server(web_port=0)
    client = ws_client(web_port(server))
    client.login("leaver")
    server.stop(timeout=3.0)
    frames = client.wait_closed()
    assert any(f.type == "bye" for f in frames), frames
    assert client.close_code == 1001


# -- one protocol over both transports ---------------------------------------------------


def _conversation(client: RawClient, steps: list[bytes]) -> list[tuple[str, Any, Any]]:
    """Send each step and collect what comes back until the server closes or falls silent."""
    answers: list[tuple[str, Any, Any]] = []
    for step in steps:
        client.send_raw(step)
    while True:
        try:
            frame = client.recv_frame(timeout=1.0)
        except TimeoutError:
            break
        if frame is None:
            answers.append(("closed", None, None))
            break
        if frame.type in ("system", "joined", "message", "unread"):
            continue  # the room's own events, which differ with timing
        answers.append((frame.type, frame.get("code"), frame.get("text")))
    return answers


BAD_INPUT: list[tuple[str, list[bytes]]] = [
    ("invalid utf-8", [PREFIX.pack(PROTOCOL_VERSION, 0, 4, 0) + b"\xff\xfe{}"]),
    ("invalid json", [PREFIX.pack(PROTOCOL_VERSION, 0, 5, 0) + b"{nope"]),
    ("not an object", [PREFIX.pack(PROTOCOL_VERSION, 0, 2, 0) + b"[]"]),
    ("unknown type", [encode("launch_missiles")]),
    ("forged sender", [encode("say", room="#general", text="hi", **{"from": "bob"})]),
    ("wrong version", [PREFIX.pack(99, 0, 2, 0) + b"{}"]),
    ("reserved flags", [PREFIX.pack(PROTOCOL_VERSION, 1, 2, 0) + b"{}"]),
    ("empty header", [PREFIX.pack(PROTOCOL_VERSION, 0, 0, 0)]),
    ("oversized body", [PREFIX.pack(PROTOCOL_VERSION, 0, 2, MAX_BODY + 1)]),
    ("bad field type", [encode("say", room=["#general"], text="hi")]),
    ("ping with a body", [encode("ping", b"payload")]),
    ("huge integer", [encode("history", room="#general", before=2**70)]),
    ("too long", [encode("say", rid=1, room="#general", text="x" * 4001)]),
    ("control character", [encode("say", rid=2, room="#general", text="a\x1b[2Jb")]),
    ("empty message", [encode("say", rid=3, room="#general", text="")]),
    ("unknown user", [encode("msg", rid=4, to="nobody-here", text="hi")]),
    ("bad room", [encode("join", rid=5, room="#no spaces")]),
    ("second login", [encode("login", rid=6, user="x", password="y")]),
    ("file to nobody", [encode("file_offer", rid=7, to="nobody-here", name="a", size=1,
                               sha256="0" * 64)]),
]


@pytest.mark.parametrize(("name", "steps"), BAD_INPUT, ids=[n for n, _ in BAD_INPUT])
def test_bad_input_gets_the_same_answers_over_websocket_as_over_tcp(
    make_server: ServerFactory,
    raw_client: Callable[..., RawClient],
    ws_client: Callable[..., WebSocketClient],
    name: str,
    steps: list[bytes],
) -> None:
    server = make_server(web_port=0, **UNMETERED)
    over_tcp = raw_client(server.address[1])
    over_tcp.login("tcp-user")
    over_web = ws_client(web_port(server))
    over_web.login("web-user")
    tcp_answers = _conversation(over_tcp, steps)
    web_answers = _conversation(over_web, steps)
    assert tcp_answers, name
    assert web_answers == tcp_answers


def test_before_login_the_websocket_gets_the_tcp_answers(
    web: Server, raw_client: Callable[..., RawClient], ws_client: Callable[..., WebSocketClient]
) -> None:
    steps = [encode("say", rid=1, room="#general", text="hi"), encode("time", rid=2)]
    tcp = _conversation(raw_client(web.address[1]), steps)
    assert tcp[0][:2] == ("error", "not_logged_in")
    assert _conversation(ws_client(web_port(web)), steps) == tcp
    assert ws_client(web_port(web)).hello.fields == raw_client(web.address[1]).hello.fields


def test_a_browser_session_chats_with_a_terminal_session_both_ways(
    web: Server, raw_client: Callable[..., RawClient], ws_client: Callable[..., WebSocketClient]
) -> None:
    terminal = raw_client(web.address[1])
    terminal.login("term")
    browser = ws_client(web_port(web))
    browser.login("brow")
    browser.send("say", room="#general", text="from the browser")
    terminal.expect("message", text="from the browser", **{"from": "brow"})
    terminal.send("msg", to="brow", text="private, from the terminal")
    browser.expect("private", text="private, from the terminal", **{"from": "term"})
    terminal.send("sessions")
    listed = terminal.expect("sessions")
    assert [s.get("web") for s in listed.get("sessions")] == [None], listed
    browser.send("sessions")
    mine = browser.expect("sessions")
    assert [s.get("web") for s in mine.get("sessions")] == [True], mine


def test_budgets_and_frame_deadlines_apply_to_browsers_unchanged(
    make_server: ServerFactory, ws_client: Callable[..., WebSocketClient]
) -> None:
    server = make_server(web_port=0, message_burst=3, message_rate=0.01, frame_timeout=0.5)
    client = ws_client(web_port(server))
    client.login("burst")
    for i in range(4):
        client.send("say", room="#general", text=f"message {i}")
    refused = client.expect("error", code="rate_limited")
    assert refused.get("retry_after")
    slow = ws_client(web_port(server))
    slow.login("slow")
    slow.send_raw(encode("time")[:5])
    frames = slow.wait_closed()
    assert [f.get("text") for f in frames if f.type == "error"] == [
        "protocol error: a frame was not completed within 0.5 s"
    ]


def test_web_connections_count_against_the_per_address_cap(
    make_server: ServerFactory, pki: Pki, raw_client: Callable[..., RawClient]
) -> None:
    server = make_server(web_port=0, max_connections_per_ip=2)
    held = [tls_connect(web_port(server), pki.ca_pem) for _ in range(2)]
    try:
        third = socket.create_connection(("127.0.0.1", server.address[1]), timeout=EVENT_TIMEOUT)
        assert read_until_closed(third) == b""
    except ConnectionResetError:
        pass  # reset before connect() returned: refused all the same
    for sock in held:
        sock.close()
    deadline = time.monotonic() + EVENT_TIMEOUT
    while server.connection_caps.counts() and time.monotonic() < deadline:
        time.sleep(0.05)
    raw_client(server.address[1]).login("after")


def test_a_browser_fetching_the_page_holds_no_handshake_slot(
    make_server: ServerFactory, pki: Pki
) -> None:
    server = make_server(web_port=0, max_handshakes_per_ip=2)
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    pages = []
    for _ in range(4):  # more kept-alive page connections than handshake slots
        conn = http.client.HTTPSConnection("localhost", web_port(server), context=ctx, timeout=5)
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        pages.append(conn)
    for conn in pages:
        conn.close()


def test_a_close_right_behind_a_request_costs_only_that_connection(
    web: Server,
    ws_client: Callable[..., WebSocketClient],
    raw_client: Callable[..., RawClient],
    server_errors: _ErrorLog,
) -> None:
    server_errors.lines.clear()
    bystander = raw_client(web.address[1])
    bystander.login("bystander")
    leaver = ws_client(web_port(web))
    leaver.login("leaver")
    # The answer to "time" is queued while the close arrives: it must be dropped, not
    # written into a closed WebSocket.
    leaver.sock.sendall(
        leaver.ws.send(BytesMessage(data=encode("time", rid=9)))
        + leaver.ws.send(CloseConnection(code=1000))
    )
    read_until_closed(leaver.sock)
    bystander.expect("system", event="quit", user="leaver")
    assert all(loop.is_running for loop in web.io_loops)
    assert server_errors.lines == []
    bystander.send("time")
    bystander.expect("time")
    ws_client(web_port(web)).login("after")


def _garbage_after_upgrade(port: int, pki: Pki, data: bytes, events: list[Any]) -> None:
    """Open a WebSocket, send ``events`` (well-formed WebSocket messages of any kind),
    then ``data`` raw, and read until closed."""
    try:
        client = WebSocketClient(port, pki.ca_pem)
        for event in events:
            try:
                client.sock.sendall(client.ws.send(event))
            except WebSocketLocalError:
                break  # wsproto will not send after its own close
        client.sock.sendall(data)
        read_until_closed(client.sock, timeout=0.6)
        client.close()
    except (OSError, ssl.SSLError):
        pass  # closed on us, or still open when we gave up: either is fine


@pytest.fixture(scope="module")
def fuzzed(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for every example of the fuzz test (quick to give up on a request)."""
    config = ServerConfig(
        cert=pki.server_pem,
        key=pki.server_key,
        port=0,
        web_port=0,
        db=tmp_path_factory.mktemp("fuzz") / "chat.db",
        handshake_timeout=0.5,
    )
    server = Server(config)
    server.start()
    yield server
    server.stop(timeout=3.0)


_HTTP_LINES = [
    b"GET / HTTP/1.1",
    b"GET /ws HTTP/1.1",
    b"POST /x HTTP/1.0",
    b"Host: localhost",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==",
    b"Origin: https://localhost",
    b"Content-Length: 3",
    b"Transfer-Encoding: chunked",
    b"\x00\xff",
    b"",
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    http=st.one_of(
        st.binary(max_size=3000),
        st.lists(st.sampled_from(_HTTP_LINES), max_size=12).map(b"\r\n".join),
    ),
    frames=st.binary(max_size=3000),
    events=st.lists(
        st.one_of(
            st.binary(max_size=300).map(lambda b: BytesMessage(data=b)),
            st.sampled_from([encode("time"), encode("login", user="x", password="y")]).map(
                lambda b: BytesMessage(data=b)
            ),
            st.text(max_size=40).map(lambda t: TextMessage(data=t)),
            st.binary(max_size=125).map(lambda b: Ping(payload=b)),
            st.integers(1000, 4999).map(lambda code: CloseConnection(code=code)),
        ),
        max_size=6,
    ),
)
def test_garbage_on_the_web_port_costs_only_its_own_connection(
    fuzzed: Server,
    pki: Pki,
    server_errors: _ErrorLog,
    http: bytes,
    frames: bytes,
    events: list[Any],
) -> None:
    sock = tls_connect(web_port(fuzzed), pki.ca_pem)
    try:
        sock.sendall(http)
        read_until_closed(sock, timeout=0.6)
    except (OSError, ssl.SSLError):
        pass  # closed on us while sending
    sock.close()
    _garbage_after_upgrade(web_port(fuzzed), pki, frames, events)
    assert all(loop.is_running for loop in fuzzed.io_loops)
    assert server_errors.lines == []  # bad input is refused, never an internal error


def test_a_peer_flooding_pings_without_reading_the_pongs_is_disconnected(
    web: Server, pki: Pki, raw_client: Callable[..., RawClient], server_errors: _ErrorLog
) -> None:
    server_errors.lines.clear()
    bystander = raw_client(web.address[1])
    bystander.login("bystander")
    flooder = WebSocketClient(web_port(web), pki.ca_pem)
    flooder.login("flooder")  # logged in: no login deadline will end it instead
    ping = flooder.ws.send(Ping(payload=b"p" * 125))
    closed = False
    try:
        for _ in range(20_000):  # 2.6 MB of pongs asked for, none read
            flooder.sock.sendall(ping * 50)
    except (OSError, ssl.SSLError):
        closed = True  # reset while we were still sending
    if not closed:
        read_until_closed(flooder.sock)
    notice = bystander.expect("system", event="quit", user="flooder")
    assert "bytes of pongs not read" in notice.get("text")
    bystander.send("time")
    bystander.expect("time")
    assert all(loop.is_running for loop in web.io_loops)
    assert server_errors.lines == []


class _ClosedReason:
    """A channel handler that only notes why the channel closed."""

    def __init__(self) -> None:
        self.reason = ""
        self.closed = threading.Event()

    def on_open(self, channel: Channel) -> None:
        """Not reached: no upgrade."""

    def on_frame(self, channel: Channel, frame: Frame) -> None:
        """Not reached: no upgrade."""

    def on_close(self, channel: Channel, reason: str) -> None:
        """Note why."""
        self.reason = reason
        self.closed.set()


def test_requests_piling_up_behind_unread_answers_are_cut_off(pki: Pki) -> None:
    # Small socket buffers, so that answers the peer does not read back up at once.
    server_end, peer = tls_pair(pki, server_sndbuf=4096, client_rcvbuf=4096)
    handler = _ClosedReason()
    loop = IOLoop("web")
    loop.start()
    try:
        # A long request deadline: only the bound on waiting requests can end this.
        site = Site()
        assert loop.add(
            WebChannel(server_end, handler, site=site, peer="peer", request_timeout=60.0)
        )
        peer.settimeout(EVENT_TIMEOUT)
        peer.do_handshake()
        biggest = max(site.asset_paths, key=lambda p: len(site.respond("GET", p).body))
        peer.sendall(f"GET {biggest} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() * 20)
        filler = b"X-Filler: " + b"a" * 200 + b"\r\n"
        with contextlib.suppress(OSError, ssl.SSLError):  # cut off while still sending
            peer.sendall(b"GET / HTTP/1.1\r\n")
            for _ in range(MAX_PIPELINED // len(filler) * 4):
                peer.sendall(filler)  # the next request's head, never finished
        assert handler.closed.wait(EVENT_TIMEOUT)
        assert handler.reason == f"too slow: {MAX_PIPELINED} bytes of requests waiting"
    finally:
        loop.stop()
