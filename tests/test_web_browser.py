"""The web client in a real headless Chromium against a real server, with real terminal
clients (``securechat-client --json``) on the other side: signing in, chat and private
messages both ways, scrolling back through history, search, and files both ways.

One server and one browser serve the whole module; every test uses names of its own.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, expect

from tests.browser import (  # noqa: F401  (fixtures)
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

StartClient = Callable[..., ClientProcess]


def test_a_new_account_is_created_and_a_wrong_password_is_refused(
    web_server: WebServer, browser: Browser
) -> None:
    page = browser.page(web_server.url)
    expect(page.get_by_test_id("login-screen")).to_be_visible()
    screenshot(page, "login")
    login(page, "wanda")
    expect(page.get_by_test_id("buffer-title")).to_have_text("#general")

    other = browser.page(web_server.url)
    login_error = other.get_by_test_id("login-error")
    other.fill("#login-user", "wanda")
    other.fill("#login-password", "not her password")
    other.get_by_test_id("login-submit").click()
    expect(login_error).to_contain_text("wrong password for wanda")

    other.fill("#login-user", "nobody-here")
    other.fill("#login-password", "pw")
    other.get_by_test_id("login-submit").click()
    expect(login_error).to_contain_text(
        "no account nobody-here on this server: check the name, or choose"
    )

    other.get_by_test_id("tab-register").click()
    other.fill("#login-user", "walter")
    other.fill("#login-password", "one")
    other.fill("#login-password2", "two")
    other.get_by_test_id("login-submit").click()
    expect(login_error).to_have_text("The two passwords differ.")


@pytest.mark.parametrize("policy", ["invite", "closed"])
def test_the_sign_in_form_follows_the_registration_policy(
    pki: Pki, browser: Browser, tmp_path: Path, policy: str
) -> None:
    server = start_web_server(pki, tmp_path, "--registration", policy)
    try:
        page = browser.page(server.url)
        expect(page.locator("#login-server")).not_to_be_empty()
        if policy == "closed":
            expect(page.get_by_test_id("tab-register")).to_be_hidden()
            expect(page.locator("#login-closed")).to_be_visible()
            return
        page.get_by_test_id("tab-register").click()
        expect(page.locator("#login-invite")).to_be_visible()
        page.fill("#login-user", "ivan")
        page.fill("#login-password", "pw")
        page.fill("#login-password2", "pw")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("login-error")).to_have_text(
            "This server creates accounts by invitation: type your invite code."
        )
        page.fill("#login-invite", "not-a-real-code")
        page.get_by_test_id("login-submit").click()  # the server's own words come back
        expect(page.get_by_test_id("login-error")).to_have_text(
            "that invite code is unknown, used, revoked or expired"
        )
    finally:
        server.kill()


def test_room_messages_flow_between_the_browser_and_a_terminal_client(
    web_server: WebServer, browser: Browser, client_process: StartClient
) -> None:
    page = browser.page(web_server.url)
    login(page, "bella")
    term = client_process(web_server.port, "tom")
    term.wait_for("connected")
    expect(page.get_by_test_id("member").filter(has_text="tom")).to_be_visible()

    term.type("hello from the terminal, bella")
    expect(messages(page).filter(has_text="hello from the terminal")).to_have_count(1)
    # Her name in it is marked as a mention.
    expect(page.locator("mark.mention")).to_have_text("bella")

    type_line(page, "hello from the browser")
    event = term.wait_for("message", text="hello from the browser")
    assert event["from"] == "bella" and event["room"] == "#general"
    expect(messages(page).filter(has_text="hello from the browser")).to_have_count(1)

    # Actions (/me) both ways, shown as "* NAME action".
    term.type("/me waves at bella")
    expect(messages(page).filter(has_text="waves at bella")).to_have_text("* tom waves at bella")
    type_line(page, "/me waves back")
    assert term.wait_for("message", text="waves back").get("action") is True

    # Away: said to us, and shown to others in /list and the member list.
    type_line(page, "/away lunch")
    expect(page.get_by_test_id("notice").last).to_have_text(re.compile("away: lunch"))
    term.type("/list")
    listed = term.wait_for("users")
    assert listed.get("away", {}).get("bella") == "lunch", listed
    type_line(page, "/list")
    expect(page.get_by_test_id("notice").last).to_contain_text("bella (away: lunch)")
    type_line(page, "/away")
    expect(page.get_by_test_id("notice").last).to_contain_text("no longer marked as away")


def test_private_messages_flow_both_ways(
    web_server: WebServer, browser: Browser, client_process: StartClient
) -> None:
    page = browser.page(web_server.url)
    login(page, "petra")
    term = client_process(web_server.port, "paul")
    term.wait_for("connected")

    term.type("/msg petra a secret for you")
    item = page.locator('[data-testid="buffer-item"][data-name="paul"]')
    expect(item.get_by_test_id("unread-badge")).to_have_text("1")
    open_buffer(page, "paul")
    expect(messages(page)).to_have_text(["a secret for you"])
    expect(item.get_by_test_id("unread-badge")).to_have_count(0)

    type_line(page, "and one for you")
    event = term.wait_for("private", text="and one for you")
    assert event["from"] == "petra" and event["to"] == "paul"

    # /msg from the browser opens the conversation too.
    open_buffer(page, "#general")
    type_line(page, "/msg paul via the command")
    term.wait_for("private", text="via the command")
    expect(page.get_by_test_id("buffer-title")).to_have_text("@paul")


SCROLL_UP_UNTIL = """(text) => {
  const scroller = document.querySelector("[data-testid=messages]");
  scroller.scrollTop = 0;
  scroller.dispatchEvent(new Event("scroll"));
  return [...document.querySelectorAll("[data-testid=message-text]")].some(
    (el) => el.textContent === text);
}"""


def test_scrolling_up_pages_back_to_the_oldest_message(
    web_server: WebServer, browser: Browser, client_process: StartClient
) -> None:
    term = client_process(web_server.port, "scribe")
    term.wait_for("connected")
    term.type("/join #archive", *[f"line {n:03d} of the archive" for n in range(120)])
    term.wait_for("message", text="line 119 of the archive")

    page = browser.page(web_server.url)
    login(page, "reader")
    type_line(page, "/join #archive")
    expect(page.get_by_test_id("buffer-title")).to_have_text("#archive")
    expect(messages(page).last).to_have_text("line 119 of the archive")
    oldest = messages(page).filter(has_text="line 000 of the archive")
    scroller = page.get_by_test_id("messages")
    # Keep scrolling to the top, as a reader would, until the first line has come.
    page.wait_for_function(SCROLL_UP_UNTIL, arg="line 000 of the archive", polling=200)
    expect(oldest).to_have_count(1)
    expect(messages(page)).to_have_count(120)  # every line exactly once
    # One more page finds nothing older, and the view says so.
    scroller.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    expect(page.get_by_test_id("history-head")).to_contain_text("beginning of #archive")
    expect(messages(page)).to_have_count(120)


def test_search_shows_results_with_their_room_and_time(
    web_server: WebServer, browser: Browser, client_process: StartClient
) -> None:
    page = browser.page(web_server.url)
    login(page, "seeker")
    type_line(page, "the purple elephant is in the room")
    expect(messages(page).filter(has_text="purple elephant")).to_have_count(1)
    page.get_by_test_id("search-input").fill("purple elephant")
    page.get_by_test_id("search-input").press("Enter")
    result = page.get_by_test_id("search-result").filter(has_text="purple elephant")
    expect(result).to_have_count(1)
    expect(result).to_contain_text("#general")
    expect(result.locator("time")).to_have_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"))
    expect(page.get_by_test_id("search-summary")).to_contain_text("1 result")

    type_line(page, "/search nothing-matches-this")
    expect(page.get_by_test_id("search-summary")).to_contain_text("0 results")


def test_commands_answer_in_the_conversation(web_server: WebServer, browser: Browser) -> None:
    page = browser.page(web_server.url)
    login(page, "cmdr")
    type_line(page, "/frobnicate")
    expect(page.get_by_test_id("notice").last).to_contain_text("unknown command /frobnicate")
    type_line(page, "/kick someone")
    expect(page.get_by_test_id("notice").last).to_contain_text("there is no user called someone")
    type_line(page, "/password")
    expect(page.get_by_test_id("notice").last).to_contain_text("/password is not in the web client")
    type_line(page, "/join #ops")
    expect(page.get_by_test_id("buffer-title")).to_have_text("#ops")
    type_line(page, "/topic deploys at noon")
    expect(page.get_by_test_id("buffer-topic")).to_have_text("deploys at noon")
    type_line(page, "/who")
    expect(page.get_by_test_id("notice").last).to_contain_text("1 in #ops: cmdr")
    type_line(page, "/history status")
    expect(page.get_by_test_id("notice").last).to_contain_text("history:")
    type_line(page, "status: all green")
    type_line(page, "/nolog off the record")
    expect(page.locator(".msg .tag")).to_have_text("not stored")
    with page.expect_download() as info:
        type_line(page, "/history export")
    exported = Path(info.value.path()).read_text("utf-8").splitlines()
    assert (
        [line for line in exported if '"from":"cmdr"' in line]
        == [line for line in exported if '"text":"status: all green"' in line]
        != []
    )  # the stored message, not the /nolog one
    type_line(page, "/help")
    expect(page.get_by_test_id("notice").filter(has_text="/sendfile NAME")).to_have_count(1)
    type_line(page, "/nick commander")
    expect(page.get_by_test_id("me-name")).to_have_text("commander")
    expect(page.locator(".member-name")).to_have_text(["commander"])
    type_line(page, "/part")
    expect(page.locator('[data-testid="buffer-item"][data-name="#ops"]')).to_have_count(0)


def test_a_file_goes_from_the_browser_to_a_terminal_client(
    web_server: WebServer, browser: Browser, client_process: StartClient, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 1200 + b"tail"  # 307,204 bytes: several chunks
    downloads = tmp_path / "dl"
    term = client_process(web_server.port, "fred", extra=("--download-dir", str(downloads)))
    term.wait_for("connected")
    page = browser.page(web_server.url)
    login(page, "fiona")
    type_line(page, "/msg fred")
    page.get_by_test_id("file-input").set_input_files(
        files=[FilePayload(name="report.bin", mimeType="application/octet-stream", buffer=data)]
    )
    offer = term.wait_for("file_offer")
    assert offer["name"] == "report.bin" and offer["size"] == len(data)
    assert offer["sha256"] == hashlib.sha256(data).hexdigest()
    card = page.get_by_test_id("file-card")
    expect(card.get_by_test_id("file-status")).to_contain_text("waiting for an answer")
    term.type(f"/accept {offer['id']}")
    saved = term.wait_for("file_saved", timeout=30)
    assert Path(saved["path"]).read_bytes() == data
    expect(card.get_by_test_id("file-status")).to_contain_text("SHA-256 check passed")


def test_a_file_goes_from_a_terminal_client_to_the_browser(
    web_server: WebServer, browser: Browser, client_process: StartClient, tmp_path: Path
) -> None:
    data = hashlib.sha256(b"seed").digest() * 9000  # 288,000 bytes
    path = tmp_path / "photo.raw"
    path.write_bytes(data)
    page = browser.page(web_server.url)
    login(page, "gina")
    term = client_process(web_server.port, "gus")
    term.wait_for("connected")
    term.type(f"/sendfile gina {path}")
    item = page.locator('[data-testid="buffer-item"][data-name="gus"]')
    expect(item.get_by_test_id("unread-badge")).to_be_visible()
    open_buffer(page, "gus")
    card = page.get_by_test_id("file-card")
    expect(card.get_by_test_id("file-name")).to_have_text("photo.raw")
    screenshot(page, "file-offer")
    card.get_by_test_id("file-accept").click()
    download_link = card.get_by_test_id("file-download")
    expect(download_link).to_be_visible(timeout=30_000)
    expect(card.get_by_test_id("file-status")).to_contain_text("SHA-256 verified")
    with page.expect_download() as info:
        download_link.click()
    download = info.value
    assert download.suggested_filename == "photo.raw"
    assert (
        hashlib.sha256(Path(download.path()).read_bytes()).digest() == hashlib.sha256(data).digest()
    )
    term.wait_for("file_sent", timeout=30)


def test_a_declined_file_is_reported_to_the_sender(
    web_server: WebServer, browser: Browser, client_process: StartClient, tmp_path: Path
) -> None:
    path = tmp_path / "unwanted.txt"
    path.write_bytes(b"no thanks")
    page = browser.page(web_server.url)
    login(page, "hilda")
    term = client_process(web_server.port, "hank")
    term.wait_for("connected")
    term.type(f"/sendfile hilda {path}")
    offered = term.wait_for("system", event="file_offered")
    open_buffer(page, "hank")
    # Both sides call the transfer by the same short number, so "/reject 4821" works here.
    number = str(offered["id"])
    expect(page.get_by_test_id("file-card")).to_contain_text(f"#{number}")
    type_line(page, f"/reject {number}")
    term.wait_for("file_rejected")
    expect(page.get_by_test_id("file-status")).to_contain_text("declined")


def test_viewing_a_room_marks_it_read_for_the_other_sessions(
    web_server: WebServer,
    browser: Browser,
    client_process: StartClient,
    raw_client: Callable[..., RawClient],
) -> None:
    page = browser.page(web_server.url)
    login(page, "sam")
    other_session = client_process(web_server.port, "sam")
    other_session.wait_for("connected")
    sue = raw_client(web_server.port)
    sue.login("sue")
    sue.send("say", room="#general", text="are you there, sam?")
    expect(messages(page).filter(has_text="are you there")).to_have_count(1)
    said = sue.expect("message", text="are you there, sam?")
    event = other_session.wait_for("read", room="#general")
    assert event["id"] >= said.get("id")


# Records notifications instead of showing them (the page's CSP does not apply to this).
RECORD_NOTIFICATIONS = """
window.__notes = [];
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) {
    super(title, options);
    window.__notes.push(`${title}|${options.body}`);
  }
};
"""


def test_notifications_are_opt_in_and_come_for_mentions_and_private_messages(
    web_server: WebServer, browser: Browser, raw_client: Callable[..., RawClient]
) -> None:
    page = browser.page(
        web_server.url, permissions=("notifications",), init_script=RECORD_NOTIFICATIONS
    )
    login(page, "nora")
    nick = raw_client(web_server.port)
    nick.login("nick")
    nick.send("say", room="#general", text="nora, before you turned them on")
    expect(messages(page).filter(has_text="before you turned")).to_have_count(1)
    toggle = page.get_by_test_id("notify-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")

    nick.send("msg", to="nora", text="a private word")
    expect(page.locator('[data-name="nick"] [data-testid="unread-badge"]')).to_have_text("1")
    open_buffer(page, "nick")
    nick.send("say", room="#general", text="nora: look at this")
    nick.send("say", room="#general", text="nothing for her")
    expect(page.locator('[data-name="#general"] [data-testid="unread-badge"]')).to_have_text("1")
    notes = page.evaluate("window.__notes")
    assert notes == ["nick (private)|a private word", "nick in #general|nora: look at this"]


def test_coming_back_to_a_room_shows_where_the_new_messages_start(
    web_server: WebServer, browser: Browser, raw_client: Callable[..., RawClient]
) -> None:
    page = browser.page(web_server.url)
    login(page, "olga")
    oscar = raw_client(web_server.port)
    oscar.login("oscar")
    oscar.send("say", room="#general", text="seen before leaving")
    expect(messages(page).filter(has_text="seen before leaving")).to_have_count(1)
    type_line(page, "/msg oscar brb")
    for n in range(3):
        oscar.send("say", room="#general", text=f"while away {n}")
    general = page.locator('[data-testid="buffer-item"][data-name="#general"]')
    expect(general.get_by_test_id("unread-badge")).to_have_text("3")
    open_buffer(page, "#general")
    marker = page.get_by_test_id("new-marker")
    expect(marker).to_have_count(1)
    # The marker sits right above the first of the three.
    following = marker.locator("xpath=following-sibling::li[1]")
    expect(following).to_contain_text("while away 0")

    box = page.get_by_test_id("message-input")
    box.fill("osc")
    box.press("Tab")
    expect(box).to_have_value("oscar: ")
    box.fill("")
    box.press("ArrowUp")
    expect(box).to_have_value("/msg oscar brb")


DROP_FILE = """([name, text]) => {
  const dataTransfer = new DataTransfer();
  dataTransfer.items.add(new File([text], name, { type: "text/plain" }));
  const main = document.getElementById("main");
  const options = { dataTransfer, bubbles: true, cancelable: true };
  main.dispatchEvent(new DragEvent("dragover", options));
  main.dispatchEvent(new DragEvent("drop", options));
}"""


def test_a_file_dropped_on_a_conversation_is_offered_to_its_person(
    web_server: WebServer, browser: Browser, raw_client: Callable[..., RawClient]
) -> None:
    dora = raw_client(web_server.port)
    dora.login("dora")
    page = browser.page(web_server.url)
    login(page, "dmitri")
    page.evaluate(DROP_FILE, ["in-a-room.txt", "nobody to send to"])
    expect(page.get_by_test_id("notice").last).to_contain_text("open a private conversation first")
    type_line(page, "/msg dora")
    page.evaluate(DROP_FILE, ["notes.txt", "dropped notes"])
    offer = dora.expect("file_offer")
    assert offer.get("name") == "notes.txt" and offer.get("size") == len(b"dropped notes")
    assert offer.get("sha256") == hashlib.sha256(b"dropped notes").hexdigest()
    dora.send("file_reject", id=offer.get("id"))
    expect(page.get_by_test_id("file-status")).to_contain_text("declined")


def test_a_moderator_moderates_from_the_browser(
    web_server: WebServer, browser: Browser, client_process: StartClient
) -> None:
    page = browser.page(web_server.url)
    login(page, "boss")
    # The first admin is made by the operator, as docs/server.md says; it counts at the
    # next login.
    subprocess.run(
        [sys.executable, "-m", "securechat.admin", "--db", str(web_server.db),
         "user", "role", "boss", "admin"],
        check=True,
        capture_output=True,
    )
    page.reload()
    login(page, "boss", register=False)
    troll = client_process(web_server.port, "troll")
    troll.wait_for("connected")
    notices = page.get_by_test_id("notice")
    type_line(page, "/stats")
    expect(notices.filter(has_text="stats: uptime")).to_have_count(1)
    type_line(page, "/ban troll 1h flooding the room")
    troll.wait_for("disconnected", code="banned")
    pest = client_process(web_server.port, "pest")
    pest.wait_for("connected")
    type_line(page, "/kick pest be nice")
    assert "be nice" in pest.wait_for("disconnected", code="kicked")["reason"]
    type_line(page, "/kick #general nobody-here")
    expect(notices.last).to_contain_text("there is no user called nobody-here")
    type_line(page, "/bans")
    expect(notices.filter(has_text="ban: account troll by boss until")).to_contain_text(
        "flooding the room"
    )
    type_line(page, "/unban troll")
    type_line(page, "/bans")
    expect(notices.last).to_have_text(re.compile("no bans"))
    type_line(page, "/join #quiet")
    type_line(page, "/topic lock")
    expect(notices.last).to_contain_text("topic")
    # Erasing everything asks first; saying no sends nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    type_line(page, "/history forget")
    expect(notices.last).to_contain_text("nothing erased")
