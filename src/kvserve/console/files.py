"""Serves the console's files under /console/ with headers that keep the page locked down.

The files are read once at start and served from memory: a fixed set of names, so no
request path can reach anything else. Every answer carries a strict Content-Security-
Policy (scripts and styles from this origin only, nothing inline, no framing), and the
page keeps keys in headers it sends, never in cookies or URLs, so there is no session a
cross-site request could ride on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIX = "/console"
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".json": b"application/json",
}
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
KINDS = ("gateway", "server")  # which pages the console offers


@dataclass(frozen=True)
class File:
    body: bytes
    content_type: bytes
    etag: bytes


def load_files(kind: str) -> dict[str, File]:
    """Every file under static/, plus meta.json telling the page where it runs."""
    if kind not in KINDS:
        raise ValueError(f"console kind must be one of {KINDS}, not {kind!r}")
    files: dict[str, File] = {}
    static = resources.files("kvserve.console") / "static"
    for entry in static.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = make_file(entry.read_bytes(), CONTENT_TYPES[suffix])
    files["meta.json"] = make_file(json.dumps({"kind": kind}).encode(), CONTENT_TYPES[".json"])
    return files


def make_file(body: bytes, content_type: bytes) -> File:
    return File(body, content_type, b'"' + hashlib.sha256(body).hexdigest()[:16].encode() + b'"')


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ConsoleFiles:
    """ASGI handler for /console and /console/*."""

    def __init__(self, kind: str) -> None:
        self.files = load_files(kind)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == PREFIX:
            await answer(send, 308, b"", b"text/plain", [(b"location", b"/console/")])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await answer(send, 405, b"the console only answers GET\n", b"text/plain", [(b"allow", b"GET, HEAD")])
            return
        file = self.files.get(path[len(PREFIX) + 1:] or "index.html")
        if file is None:
            await answer(send, 404, b"no such console file\n", b"text/plain")
            return
        if dict(scope["headers"]).get(b"if-none-match") == file.etag:
            await answer(send, 304, b"", file.content_type, [(b"etag", file.etag)])
            return
        body = b"" if scope["method"] == "HEAD" else file.body
        await answer(send, 200, body, file.content_type, [(b"etag", file.etag), (b"cache-control", b"no-cache")],
                     length=len(file.body))


async def answer(send: Send, status: int, body: bytes, content_type: bytes,
                 extra: list[tuple[bytes, bytes]] = (), length: int | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body) if length is None else length).encode()),
               *SECURITY_HEADERS, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ConsoleMiddleware:
    """Puts the console in front of another ASGI app (the server's FastAPI app)."""

    def __init__(self, app: ASGIApp, kind: str = "server") -> None:
        self.app = app
        self.console = ConsoleFiles(kind)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_console_path(scope["path"]):
            await self.console(scope, receive, send)
        else:
            await self.app(scope, receive, send)
