"""The web client under hostile text and lost connections, in a real headless Chromium:
markup, scripts, ``javascript:`` links and bidi controls from other users stay inert text;
a server restart is bridged without losing or repeating a message. Also takes the
screenshots of docs/web.md (only with SECURECHAT_SCREENSHOTS=1).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from securechat.web.site import Site
from securechat.wire.protocol import encode
from securechat.wire.sanitize import sanitize
from tests.browser import (  # noqa: F401  (fixtures)
    DESKTOP,
    PHONE,
    Browser,
    WebServer,
    browser_fixture,
    close_pages_fixture,
    login,
    messages,
    open_buffer,
    screenshot,
    start_web_server,
    type_line,
    web_server_fixture,
)
from tests.conftest import ClientProcess, Pki, RawClient

pytestmark = pytest.mark.timeout(120)

IMG = "<img src=x onerror=window.__pwned=1>"
SCRIPT = "<script>window.__pwned=1</script>"
JS_LINK = "javascript:window.__pwned=1"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: would make "txt.exe" read "exe.txt"

NO_MARKUP_RAN = """() => ({
    pwned: window.__pwned,
    images: document.querySelectorAll('#app img:not(.brand img)').length,
    scripts: document.querySelectorAll('body script').length,
    jsLinks: [...document.querySelectorAll('a[href]')].filter(
        a => !/^(https?|blob):/i.test(a.href)).length,
})"""


# What the web client's connection holds, for a failure message.
CLIENT_STATE = """() => {
  const conn = window.securechat.conn;
  return {
    state: conn.state, final: conn.final, credentials: Boolean(conn.credentials),
    loggedIn: conn.loggedIn, outbox: conn.outbox.length, pending: conn.pending.size,
    notices: [...document.querySelectorAll("[data-testid=notice]")].map((n) => n.textContent),
  };
}"""


def assert_inert(page) -> None:  # type: ignore[no-untyped-def]
    state = page.evaluate(NO_MARKUP_RAN)
    assert state == {"pwned": None, "images": 0, "scripts": 0, "jsLinks": 0}, state


def test_hostile_messages_topics_quit_reasons_and_file_names_stay_text(
    web_server: WebServer,
    browser: Browser,
    client_process: Callable[..., ClientProcess],
    tmp_path: Path,
) -> None:
    page = browser.page(web_server.url)
    login(page, "victim")
    type_line(page, "/join #xss")
    mallory = client_process(web_server.port, "mallory")
    mallory.wait_for("connected")
    mallory.type("/join #xss")
    mallory.wait_for("system", event="joined", room="#xss")
    mallory.type(
        f"look {IMG} here",
        f"and {SCRIPT} there",
        f"click {JS_LINK} or https://example.org/ok",
        f"invoice{RLO}txt.exe",
        f"/topic {IMG}{RLO}cipot",
    )
    texts = messages(page)
    expect(texts.filter(has_text=f"look {IMG} here")).to_have_count(1)
    expect(texts.filter(has_text=f"and {SCRIPT} there")).to_have_count(1)
    expect(texts.filter(has_text="click javascript:window.__pwned=1 or")).to_have_count(1)
    # The bidi override is shown, visibly, as the terminal client shows it.
    bidi = texts.filter(has_text="invoice")
    expect(bidi).to_have_text("invoice<U+202E>txt.exe")
    expect(bidi.locator(".ctrl")).to_have_text("<U+202E>")
    expect(page.get_by_test_id("buffer-topic")).to_have_text(f"{IMG}<U+202E>cipot")
    # Only the http(s) URL became a link, and a safe one.
    link = page.locator("#message-list a")
    expect(link).to_have_count(1)
    expect(link).to_have_attribute("href", "https://example.org/ok")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")

    name = f"{IMG}{RLO}gpj.exe"
    hostile = tmp_path / name
    hostile.write_bytes(b"not really a picture")
    mallory.type(f"/sendfile victim {hostile}")
    open_buffer(page, "mallory")
    card = page.get_by_test_id("file-card")
    expect(card.get_by_test_id("file-name")).to_have_text(f"{IMG}<U+202E>gpj.exe")
    card.get_by_test_id("file-accept").click()
    with page.expect_download() as info:
        card.get_by_test_id("file-download").click()
    saved = info.value.suggested_filename
    assert RLO not in saved and "<" not in saved and "/" not in saved, saved
    assert (
        hashlib.sha256(Path(info.value.path()).read_bytes()).hexdigest()
        == hashlib.sha256(b"not really a picture").hexdigest()
    )

    open_buffer(page, "#xss")
    # An action and an away text are text too: the away shows as a tooltip, made visible.
    mallory.type(f"/me {IMG}{RLO} waves", f"/away {SCRIPT}{RLO}")
    expect(texts.filter(has_text=f"{IMG}<U+202E> waves")).to_have_count(1)
    mallory.wait_for("system", event="away")
    type_line(page, "/who")  # away is not announced to a room: /who tells it
    away = page.get_by_test_id("member").filter(has_text="mallory")
    expect(away).to_have_attribute("title", f"message mallory (away: {SCRIPT}<U+202E>)")
    mallory.type(f"/quit {SCRIPT}{RLO}")
    notice = page.get_by_test_id("notice").filter(has_text="mallory left")
    expect(notice).to_contain_text(f"{SCRIPT}<U+202E>")
    expect(page.locator(".member-name")).to_have_text(["victim"])  # mallory is gone
    assert_inert(page)


def test_a_file_whose_hash_does_not_match_is_thrown_away(
    web_server: WebServer, browser: Browser, raw_client: Callable[..., RawClient]
) -> None:
    page = browser.page(web_server.url)
    login(page, "vera")
    liar = raw_client(web_server.port)
    liar.login("liar")
    claimed = hashlib.sha256(b"the real report").hexdigest()
    liar.send("file_offer", to="vera", name="report.txt", size=15, sha256=claimed)
    transfer = liar.expect("file_offered").get("id")
    open_buffer(page, "liar")
    card = page.get_by_test_id("file-card")
    card.get_by_test_id("file-accept").click()
    liar.expect("file_accepted", id=transfer)
    liar.send_raw(encode("file_chunk", b"a forged report", id=transfer, offset=0))
    liar.send_raw(encode("file_done", id=transfer))
    result = liar.expect("file_result", id=transfer)
    assert result.get("ok") is False and "SHA-256 mismatch" in result.get("reason")
    expect(card.get_by_test_id("file-status")).to_contain_text("SHA-256 MISMATCH")
    expect(card.get_by_test_id("file-download")).to_have_count(0)


def test_a_file_over_the_browser_limit_is_declined_with_a_reason(
    web_server: WebServer, browser: Browser, raw_client: Callable[..., RawClient]
) -> None:
    page = browser.page(web_server.url)
    login(page, "bruno")
    sender = raw_client(web_server.port)
    sender.login("bigfoot")
    sender.send("file_offer", to="bruno", name="disk.img", size=300 * 1024 * 1024, sha256="0" * 64)
    transfer = sender.expect("file_offered").get("id")
    open_buffer(page, "bigfoot")
    card = page.get_by_test_id("file-card")
    card.get_by_test_id("file-accept").click()
    sender.expect("file_rejected", id=transfer)
    expect(card).to_contain_text("the web client receives files up to 256 MB")


def test_a_server_restart_loses_and_repeats_nothing(
    pki: Pki,
    browser: Browser,
    client_process: Callable[..., ClientProcess],
    tmp_path: Path,
) -> None:
    server = start_web_server(pki, tmp_path)
    try:
        page = browser.page(server.url)
        login(page, "rita")
        ted = client_process(server.port, "ted")
        ted.wait_for("connected")
        ted.type("before the restart", "/msg rita private before")
        expect(messages(page).filter(has_text="before the restart")).to_have_count(1)

        assert server.stop() == 0
        state = page.get_by_test_id("connection-state")
        expect(state).to_contain_text("reconnecting")
        type_line(page, "typed while the server was away")
        server.start()  # the same ports and database

        ted.wait_for("connected", timeout=45)
        ted.type(*[f"after the restart {n}" for n in range(5)], "/msg rita private after")
        # The browser tries again after 1, 2, 4, 8, 15 s: it may come back after ted.
        expect(state).to_be_hidden(timeout=45_000)
        try:
            ted.wait_for("message", text="typed while the server was away", timeout=30)
        except TimeoutError:
            held = page.evaluate(CLIENT_STATE)
            log = server.process.stderr if server.process else ""
            pytest.fail(f"the line typed offline never came; client: {held}; server:\n{log}")
        for n in range(5):
            expect(messages(page).filter(has_text=f"after the restart {n}")).to_have_count(1)
        expect(messages(page).filter(has_text="before the restart")).to_have_count(1)
        expect(messages(page).filter(has_text="typed while the server was away")).to_have_count(1)
        open_buffer(page, "ted")
        expect(messages(page)).to_have_text(["private before", "private after"])
    finally:
        server.kill()


# Drop the connection as a network would, with the client's next attempt 8 s away.
DROP_CONNECTION = (
    "() => { const conn = window.securechat.conn; conn.attempt = 3; conn.ws.close(); }"
)


def test_an_idle_page_answers_the_servers_pings_and_stays_connected(
    pki: Pki, browser: Browser, raw_client: Callable[..., RawClient], tmp_path: Path
) -> None:
    # The server pings after 1 s of silence and drops a peer that has not answered 1 s later.
    server = start_web_server(pki, tmp_path, "--ping-interval", "1")
    try:
        page = browser.page(server.url)
        login(page, "idler")
        watcher = raw_client(server.port)
        watcher.login("watcher")
        # Several ping rounds pass in silence; a page that did not answer would be gone.
        with pytest.raises(TimeoutError):
            watcher.expect("system", event="quit", user="idler", timeout=4.0)
        expect(page.get_by_test_id("connection-state")).to_be_hidden()
        watcher.send("say", room="#general", text="still there?")
        expect(messages(page).filter(has_text="still there?")).to_have_count(1)
    finally:
        server.kill()


def test_more_missed_messages_than_one_replay_holds_are_all_fetched(
    web_server: WebServer, browser: Browser, raw_client: Callable[..., RawClient]
) -> None:
    page = browser.page(web_server.url)
    login(page, "reader2")
    type_line(page, "/join #flood")
    flood = raw_client(web_server.port)
    flood.login("flooder")
    flood.send("join", room="#flood")
    flood.expect("joined", room="#flood")
    flood.send("say", room="#flood", text="before the drop")
    expect(messages(page)).to_have_text(["before the drop"])

    page.evaluate(DROP_CONNECTION)
    expect(page.get_by_test_id("connection-state")).to_contain_text("reconnecting")
    for n in range(520):
        flood.send("say", room="#flood", text=f"missed {n:03d}")
    flood.expect("message", text="missed 519", timeout=30)

    expect(page.get_by_test_id("connection-state")).to_be_hidden(timeout=30_000)
    expect(messages(page)).to_have_count(521, timeout=30_000)  # each exactly once
    expect(messages(page).first).to_have_text("before the drop")
    expect(messages(page).last).to_have_text("missed 519")
    notice = page.get_by_test_id("notice").filter(has_text="catching up on more than 500")
    expect(notice).to_have_count(1)  # the login's replay stopped at 500; the rest was fetched


def test_the_layout_themes_and_phone_drawer(
    web_server: WebServer, browser: Browser, raw_client: Callable[..., RawClient]
) -> None:
    people = {name: raw_client(web_server.port) for name in ("alice", "bob", "carol", "dave")}
    for name, client in people.items():
        client.login(name)
    page = browser.page(web_server.url)
    login(page, "maya")
    for client in people.values():
        client.send("join", room="#design")
    alice, bob, carol, dave = people.values()
    script = [
        (alice, "morning all! the new palette is up for review"),
        (alice, "mock-ups: https://example.org/palette-v3"),
        (bob, "looks great, the contrast on the sidebar is much better"),
        (carol, "maya, can you check the dark theme before the release?"),
        (dave, "I ran the accessibility checker: all AA except the muted grey"),
        (dave, "bumping it from #8d94a1 to #7b8290 fixes it"),
        (bob, "ship it!"),
    ]
    type_line(page, "/join #design")
    for client, text in script:
        client.send("say", room="#design", text=text)
        client.expect("message", text=text)
    type_line(page, "on it, carol: dark theme review this afternoon")
    bob.send("topic", room="#design", text="Design system v3 · release Friday")
    bob.send("join", room="#random")
    bob.send("say", room="#random", text="anyone for lunch?")
    page.locator("body").evaluate("() => 0")  # let the frames arrive
    type_line(page, "/join #random")
    type_line(page, "/join #design")
    dave.send("msg", to="maya", text="got a minute for the icons?")
    expect(page.locator('[data-name="dave"] [data-testid="unread-badge"]')).to_have_text("1")
    expect(messages(page).last).to_contain_text("dark theme review")
    expect(page.get_by_test_id("member")).to_have_count(5)
    screenshot(page, "desktop-light")

    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    screenshot(page, "desktop-dark")
    page.get_by_test_id("search-input").fill("theme")
    page.get_by_test_id("search-input").press("Enter")
    expect(page.get_by_test_id("search-result")).to_have_count(2)
    screenshot(page, "search-dark")
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")

    page.set_viewport_size(PHONE)
    page.locator(".search-title button").click()
    sidebar = page.locator("#sidebar")
    expect(page.get_by_test_id("menu-button")).to_be_visible()
    assert sidebar.bounding_box()["x"] < 0  # type: ignore[index]  # the drawer is closed
    screenshot(page, "phone-light")
    page.get_by_test_id("menu-button").click()
    expect(sidebar).to_be_in_viewport(ratio=0.9)
    screenshot(page, "phone-drawer")
    page.locator('[data-testid="buffer-item"][data-name="dave"]').click()
    expect(page.get_by_test_id("buffer-title")).to_have_text("@dave")
    expect(sidebar).not_to_be_in_viewport()
    page.get_by_test_id("menu-button").click()  # the theme switch lives in the drawer
    page.get_by_test_id("theme-toggle").click()
    page.locator("#scrim").click(position={"x": 380, "y": 400})
    expect(sidebar).not_to_be_in_viewport()
    screenshot(page, "phone-dark")
    page.set_viewport_size(DESKTOP)


def module_url(page: Page, name: str) -> str:
    """The URL the page loads module ``name`` (e.g. ``text.js``) from, hash included."""
    expect(page.locator("#login-server")).not_to_be_empty()
    return page.url.rstrip("/") + Site().url_of(name)


JS_UNSAFE = """async (url) => {
  const { sanitize } = await import(url);
  const unsafe = [];
  for (let cp = 0; cp < 0x110000; cp += 1) {
    if (cp >= 0xd800 && cp < 0xe000) continue;
    const ch = String.fromCodePoint(cp);
    if (sanitize(ch) !== ch) unsafe.push(cp);
  }
  return unsafe;
}"""


def test_the_browser_makes_the_same_characters_visible_as_the_terminal_client(
    web_server: WebServer, browser: Browser
) -> None:
    page = browser.page(web_server.url)
    text_js = module_url(page, "text.js")
    in_browser = set(page.evaluate(JS_UNSAFE, text_js))
    in_terminal = {
        cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000 and sanitize(chr(cp)) != chr(cp)
    }
    assert in_terminal <= in_browser
    # The browser's Unicode may be newer: it may also know format characters that
    # Python's tables do not have yet, never fewer.
    assert all(unicodedata.category(chr(cp)) == "Cn" for cp in in_browser - in_terminal)
    sample = "".join(map(chr, sorted(in_terminal))) + " emoji 👩\u200d💻 stay whole"
    shown = page.evaluate(
        "async ([url, text]) => (await import(url)).sanitize(text)", [text_js, sample]
    )
    assert shown == sanitize(sample)


ENCODE = """async ([url, header, body]) => {
  const { encodeFrame } = await import(url);
  return Array.from(encodeFrame(header, body ? new Uint8Array(body) : null));
}"""

DECODE = """async ([url, bytes]) => {
  const { decodeFrames } = await import(url);
  try {
    return decodeFrames(new Uint8Array(bytes).buffer).map(
      ({ header, body }) => [header, body ? Array.from(body) : null]);
  } catch (error) {
    return `${error.name}: ${error.message}`;
  }
}"""


def test_the_browser_codec_writes_and_reads_frames_as_the_python_one(
    web_server: WebServer, browser: Browser
) -> None:
    page = browser.page(web_server.url)
    base = module_url(page, "wire.js")
    say = {"type": "say", "rid": 3, "room": "#x", "text": "héllo ✓ " + "é" * 4000}
    written = bytes(page.evaluate(ENCODE, [base, {**say, "nolog": None}, None]))
    assert written == encode("say", rid=3, room="#x", text=say["text"])  # raw UTF-8, no nulls
    chunk = bytes(
        page.evaluate(ENCODE, [base, {"type": "file_chunk", "id": 7, "offset": 0}, [1, 2]])
    )
    assert chunk == encode("file_chunk", b"\x01\x02", id=7, offset=0)

    two = encode("ping") + encode("file_chunk", b"\x00\xff", id=9, offset=4)
    assert page.evaluate(DECODE, [base, list(two)]) == [
        [{"type": "ping"}, None],
        [{"type": "file_chunk", "id": 9, "offset": 4}, [0, 255]],
    ]
    assert page.evaluate(DECODE, [base, list(two[:-1])]).startswith("Error: frame split")
    assert "unsupported protocol version 2" in page.evaluate(DECODE, [base, [2, *two[1:]]])
    assert "empty frame header" in page.evaluate(DECODE, [base, [1, 0, 0, 0, 0, 0, 0, 0]])
