"""What the web port serves over HTTP: the web client's files and the headers that guard them.

The files come from the installed package (``securechat/web/static``), read
once at start: no CDN, nothing from elsewhere, nothing read from disk while
serving. Every file but ``index.html`` is served under ``/assets/<hash>/``,
where ``<hash>`` is a SHA-256 over all of them, so a new release changes every
asset URL and browsers may cache them for a year (``immutable``). The page
itself is never cached; it names the current hash by the placeholder
``%ASSETS%``, and JavaScript modules import each other by relative paths, which
resolve under the same hashed folder.

This module knows nothing of sockets, TLS or WebSocket: :meth:`Site.respond`
turns a request's method, target and headers into a :class:`Response`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "WEBSOCKET_PATH",
    "Response",
    "Site",
    "error_response",
]

WEBSOCKET_PATH = "/ws"
"""Where browsers open the WebSocket that carries the chat protocol."""

ASSETS_PREFIX = "/assets/"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""No inline script or style, no eval, nothing from another origin, never in a frame:
chat text that slipped into the page as markup still could not run."""

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    # Two years: the web port never speaks plaintext, so there is nothing to fall back to.
    ("Strict-Transport-Security", "max-age=63072000"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),  # frame-ancestors for browsers that predate it
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
)
"""Sent with every response, errors included."""

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
"""The only kinds of file served; anything else in the folder stays private."""

_IMMUTABLE = "public, max-age=31536000, immutable"
_ASSET_PLACEHOLDER = b"%ASSETS%"


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response to send: status, headers (beyond the security ones) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Site:
    """The web client's files, loaded once, and the answers to requests for them."""

    def __init__(self, root: Traversable | None = None) -> None:
        root = root if root is not None else resources.files(__package__) / "static"
        files = dict(_walk(root, ""))
        index = files.pop("index.html", None)
        if index is None:
            # The package is broken; say so at start, not on the first request.
            raise FileNotFoundError(f"the web client's index.html is missing from {root}")
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        self.asset_hash = digest.hexdigest()[:16]
        """The hash naming this release's asset folder."""
        prefix = f"{ASSETS_PREFIX}{self.asset_hash}/"
        self._assets = {
            prefix + name: (body, _TYPES[_suffix(name)]) for name, body in files.items()
        }
        self._index = index.replace(_ASSET_PLACEHOLDER, prefix.rstrip("/").encode())

    @property
    def asset_paths(self) -> list[str]:
        """Every asset's URL path, for tests and logs."""
        return sorted(self._assets)

    def respond(self, method: str, target: str) -> Response:
        """The answer to a body-less ``GET`` or ``HEAD`` of ``target`` (HEAD: no body)."""
        path = target.partition("?")[0].partition("#")[0]
        if method not in ("GET", "HEAD"):
            return error_response(405, "only GET is served here", (("Allow", "GET, HEAD"),))
        if path in ("/", "/index.html"):
            found: tuple[bytes, str] | None = (self._index, _TYPES[".html"])
            cache = "no-cache"
        else:
            found = self._assets.get(path)
            cache = _IMMUTABLE
        if found is None:
            if path.startswith(ASSETS_PREFIX):
                # An old page asking for the previous release's files: reload the page.
                return error_response(404, "no such file in this release: reload the page")
            return error_response(404, "not found")
        body, content_type = found
        headers = (
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
        )
        return Response(200, headers, body if method == "GET" else b"")


def error_response(
    status: int, text: str, extra: tuple[tuple[str, str], ...] = ()
) -> Response:
    """A short plain-text error page, never cached."""
    body = (text + "\n").encode()
    headers = (
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *extra,
    )
    return Response(status, headers, body)


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > name.rfind("/") else ""


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, bytes]]:
    """Every servable file under ``folder`` as (relative path, bytes)."""
    found: list[tuple[str, bytes]] = []
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.name.startswith("."):
            continue  # editor and VCS droppings are never served
        if entry.is_dir():
            found.extend(_walk(entry, name + "/"))
        elif _suffix(name) in _TYPES:
            found.append((name, entry.read_bytes()))
    return found

