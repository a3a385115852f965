"""Helpers for the browser tests: a real ``securechat-server`` serving the web client on
``--web-port``, and a real headless Chromium (Debian's, driven by Playwright) that trusts
the test server's certificate by its public key, not by ignoring certificate errors.

Nothing is mocked: the browser loads the page over HTTPS, runs the client's JavaScript
and speaks the chat protocol over the server's WebSocket endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import (
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.conftest import UNMETERED_ARGS, Pki, ServerProcess
from tests.services import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
UI_TIMEOUT = 10_000  # ms: how long a condition in the page may take


def spki_sha256(cert_pem: Path) -> str:
    """Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's
    ``--ignore-certificate-errors-spki-list`` wants it: it trusts exactly this key."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@dataclass
class WebServer:
    """A ``securechat-server`` process with the web client on ``web_port``."""

    pki: Pki
    db: Path
    port: int
    web_port: int
    extra: tuple[str, ...] = ()
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.web_port}/"

    def start(self) -> WebServer:
        self.process = ServerProcess(
            self.pki,
            self.db,
            port=self.port,
            extra=(
                "--web-port",
                str(self.web_port),
                *UNMETERED_ARGS,
                *self.extra,
            ),
        )
        self.process.wait_listening()
        return self

    def stop(self) -> int:
        """SIGTERM, as an operator stops it; the exit status."""
        assert self.process is not None
        status = self.process.terminate()
        if self.process.proc.stderr is not None:
            self.process.proc.stderr.close()
        self.process = None
        return status

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None


def start_web_server(pki: Pki, directory: Path, *extra: str) -> WebServer:
    """A new server on free ports with its database in ``directory``."""
    return WebServer(pki, directory / "chat.db", free_port(), free_port(), extra).start()


class Browser:
    """One Chromium process; each ``page()`` is a fresh context (its own storage)."""

    def __init__(self, pki: Pki) -> None:
        if not CHROMIUM.exists():
            # CI installs it and sets SECURECHAT_BROWSER_TESTS=required: fail there, skip here.
            message = f"the browser tests need Chromium at {CHROMIUM}"
            if os.environ.get("SECURECHAT_BROWSER_TESTS") == "required":
                pytest.fail(f"{message} (SECURECHAT_BROWSER_TESTS=required)", pytrace=False)
            pytest.skip(message)
        self._playwright = sync_playwright().start()
        self._profile = tempfile.mkdtemp(prefix="securechat-chromium-")
        self.browser = self._playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *CHROMIUM_ARGS,
                f"--ignore-certificate-errors-spki-list={spki_sha256(pki.server_pem)}",
            ],
            headless=True,
        )
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []  # uncaught exceptions and CSP refusals in any page

    def page(
        self,
        url: str,
        *,
        viewport: ViewportSize = DESKTOP,
        dark: bool = False,
        permissions: tuple[str, ...] = (),
        init_script: str | None = None,
    ) -> Page:
        context = self.browser.new_context(
            viewport=viewport,
            color_scheme="dark" if dark else "light",
            accept_downloads=True,
            device_scale_factor=1,
        )
        context.set_default_timeout(UI_TIMEOUT)
        if permissions:
            context.grant_permissions(list(permissions), origin=url.rstrip("/"))
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{error}"))
        # The page must live within its Content-Security-Policy: a refusal is a bug.
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        if init_script:
            page.add_init_script(init_script)
        page.goto(url)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.browser.close()
        self._playwright.stop()
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module", name="web_server")
def web_server_fixture(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One server with the web client for the whole module."""
    server = start_web_server(pki, tmp_path_factory.mktemp("web"))
    yield server
    server.kill()


@pytest.fixture(scope="module", name="browser")
def browser_fixture(pki: Pki) -> Iterator[Browser]:
    """One headless Chromium for the whole module; each test's pages close after it."""
    b = Browser(pki)
    yield b
    b.close()


@pytest.fixture(autouse=True, name="close_pages")
def close_pages_fixture(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the pages a test opened, so that later tests share the machine with fewer
    live WebSockets; and fail the test if the web client threw an uncaught exception or
    broke its Content-Security-Policy."""
    yield
    if "browser" in request.fixturenames:
        b: Browser = request.getfixturevalue("browser")
        for context in b.contexts:
            context.close()
        b.contexts.clear()
        errors, b.errors = b.errors, []
        assert not errors, f"the web client threw: {errors}"


def login(page: Page, user: str, password: str = "pw", *, register: bool = True) -> None:
    """Sign in through the form (creating the account first if ``register``)."""
    # The server's hello names it: the page's script runs and is connected.
    expect(page.locator("#login-server")).not_to_be_empty()
    if register:
        page.get_by_test_id("tab-register").click()
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    if register:
        page.fill("#login-password2", password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("me-name")).to_have_text(user)


def type_line(page: Page, line: str) -> None:
    """Type a line into the message box and press Enter."""
    box = page.get_by_test_id("message-input")
    box.fill(line)
    box.press("Enter")


def open_buffer(page: Page, name: str) -> None:
    """Click a room (``#name``) or a person in the sidebar."""
    page.locator(f'[data-testid="buffer-item"][data-name="{name}"]').click()
    expect(page.get_by_test_id("buffer-title")).to_have_text(
        name if name.startswith("#") else f"@{name}"
    )


def messages(page: Page) -> Locator:
    """The message texts of the conversation on screen."""
    return page.get_by_test_id("message-text")


def screenshot(page: Page, name: str) -> None:
    """Save docs/screenshots/NAME.png, only when SECURECHAT_SCREENSHOTS=1."""
    if os.environ.get("SECURECHAT_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)  # no hover highlight left where the last click was
    # animations="disabled" finishes the drawer's slide, so no picture catches it half-way.
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), animations="disabled")
