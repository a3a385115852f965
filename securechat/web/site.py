"""What the web port serves over HTTP: the web client's files and the headers that guard them.

The files come from the installed package (``securechat/web/static``), read
once at start: no CDN, nothing from elsewhere, nothing read from disk while
serving. Every file but ``index.html`` is served as ``/assets/NAME.HASH.EXT``,
``HASH`` being the SHA-256 of what is served, so browsers may cache each for a
year (``immutable``) and a release re-downloads only the files it changed. The
page itself is never cached: it names each file as ``%ASSETS%/NAME.EXT``, which
becomes that file's URL. JavaScript modules import each other by relative paths
(``./wire.js``), rewritten to the hashed URLs as the files are loaded, imported
files first, so a module's hash covers the names of what it imports.

This module knows nothing of sockets, TLS or WebSocket: :meth:`Site.respond`
turns a request's method, target and headers into a :class:`Response`.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
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
_HASH_CHARS = 16  # 64 bits of SHA-256: no two releases' files meet by chance
_PLACEHOLDER_RE = re.compile(rb"%ASSETS%/([A-Za-z0-9_./-]+)")
_IMPORT_RE = re.compile(rb"""(\bfrom\s*|\bimport\s*\(?\s*)(["'])(\.{1,2}/[^"'\s]+)\2""")
"""A static or dynamic import of a relative module: ``from "./x.js"``, ``import("./x.js")``."""


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
        self._urls: dict[str, str] = {}  # file name -> its hashed URL path
        self._assets: dict[str, tuple[bytes, str]] = {}  # URL path -> (body, content type)
        for name in sorted(files):
            self._load(name, files, ())

        def _url(match: re.Match[bytes]) -> bytes:
            name = match.group(1).decode()
            if name not in self._urls:
                raise FileNotFoundError(f"index.html names {name}, which is not in {root}")
            return self._urls[name].encode()

        self._index = _PLACEHOLDER_RE.sub(_url, index)

    def url_of(self, name: str) -> str:
        """The URL path serving the file ``name`` (relative to the static folder)."""
        return self._urls[name]

    @property
    def asset_paths(self) -> list[str]:
        """Every asset's URL path, for tests and logs."""
        return sorted(self._assets)

    def _load(self, name: str, files: dict[str, bytes], importers: tuple[str, ...]) -> str:
        """Hash ``name`` (its imports first, rewritten to their URLs) and keep it; its URL."""
        if name in self._urls:
            return self._urls[name]
        if name in importers:
            raise ValueError(f"the web client's modules import each other in a cycle: {name}")
        body = files[name]
        if name.endswith(".js"):
            folder = posixpath.dirname(name)

            def _imported(match: re.Match[bytes]) -> bytes:
                target = posixpath.normpath(posixpath.join(folder, match.group(3).decode()))
                if target not in files:
                    raise FileNotFoundError(f"{name} imports {target}, which is not there")
                url = self._load(target, files, (*importers, name))
                return match.group(1) + match.group(2) + url.encode() + match.group(2)

            body = _IMPORT_RE.sub(_imported, body)
        stem, dot, ext = name.rpartition(".")
        digest = hashlib.sha256(body).hexdigest()[:_HASH_CHARS]
        url = f"{ASSETS_PREFIX}{stem}.{digest}{dot}{ext}"
        self._urls[name] = url
        self._assets[url] = (body, _TYPES[_suffix(name)])
        return url

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

