"""The request guard (pure ASGI middleware, runs before routing) and the web sessions.

In order, for every HTTP request:

1. **Host** (DNS rebinding): when no API key is set, the ``Host`` header must name this server's
   loopback bind address (``127.0.0.1``, ``localhost`` or ``[::1]``, with the port); anything else
   is a 421.  A non-loopback bind needs an API key (``ServiceConfig`` refuses to start otherwise).
2. **Cross-site**: a POST/PUT/PATCH/DELETE whose ``Origin`` is not this host, or that a browser
   marks ``Sec-Fetch-Site: cross-site``, is a 403 (no cross-site form can drive the API).
3. **Auth**: with an API key, every path except ``OPEN_PATHS`` (health, docs, the login page and
   static files) needs ``X-API-Key`` (constant-time compare) or a web session cookie.
4. **CSRF**: a request that authenticates with the session cookie and changes state must carry the
   session's token in the ``X-CSRF-Token`` header (the page's JavaScript sends it).
5. **Traversal**: the path is percent-decoded up to three times; a ``..`` or ``.`` segment, a
   backslash or a NUL is a 400.
6. **Body size**: every body except the two upload routes (which stream to disk with their own
   limit) is read here up to ``max_body_kb``; a larger one is a 413 before any handler runs.

Sessions (``Sessions``): a random 256-bit id in the cookie ``eq_session`` (HttpOnly,
SameSite=Strict, Path=/), a random CSRF token per session, both kept in the server's memory only
(a restart logs everyone out), 12 hours each.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.responses import JSONResponse

from edgequant.service.config import LOOPBACK_HOSTS, ServiceConfig

API = "/api/v1"
OPEN_PATHS = frozenset(
    {"/health", f"{API}/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/login"}
)
UPLOAD_PATHS = frozenset({f"{API}/models", f"{API}/datasets"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SESSION_COOKIE = "eq_session"
SESSION_TTL_S = 12 * 3600.0
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_body(error: str, detail: str, hint: str = "") -> dict[str, str]:
    return {"error": error, "detail": detail, "hint": hint}


class Sessions:
    """Web sessions: id -> (csrf token, expiry); thread-safe, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str, float]] = {}

    def create(self) -> tuple[str, str]:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._items = {k: v for k, v in self._items.items() if v[1] > now}
            self._items[sid] = (csrf, now + SESSION_TTL_S)
        return sid, csrf

    def csrf(self, sid: str | None) -> str | None:
        """The CSRF token of a live session, else None."""
        if not sid:
            return None
        with self._lock:
            item = self._items.get(sid)
        if item is None or item[1] < time.time():
            return None
        return item[0]

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)


def cookie_value(headers: dict[str, str], name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _unsafe_path(raw: str) -> bool:
    path = raw
    for _ in range(3):
        segments = path.split("/")
        if any(s in ("..", ".") for s in segments) or "\\" in path or "\x00" in path:
            return True
        decoded = unquote(path)
        if decoded == path:
            return False
        path = decoded
    return "%" in path


def allowed_hosts(config: ServiceConfig) -> frozenset[str] | None:
    """Host header values accepted without an API key (None: any, the key protects the server)."""
    if config.api_key:
        return None
    names = set(LOOPBACK_HOSTS) | {config.host}
    out = set()
    for name in names:
        host = f"[{name}]" if ":" in name and not name.startswith("[") else name
        out |= {host, f"{host}:{config.port}"}
    return frozenset(out)


class GuardMiddleware:
    """See the module doc; ``app.state.sessions`` is the ``Sessions`` it reads."""

    def __init__(self, app: ASGIApp, config: ServiceConfig, sessions: Sessions) -> None:
        self.app, self.config, self.sessions = app, config, sessions
        self.hosts = allowed_hosts(config)

    def _check(self, scope: Scope, headers: dict[str, str]) -> JSONResponse | None:
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        host = headers.get("host", "")
        if self.hosts is not None and host.lower() not in self.hosts:
            return _deny(421, "MisdirectedRequest", f"the Host header {host[:80]!r} is not this server.",
                         "connect to the address the server is bound to (e.g. 127.0.0.1).")  # fmt: skip
        if method in UNSAFE:
            origin = headers.get("origin")
            if headers.get("sec-fetch-site") == "cross-site" or (
                origin is not None
                and (
                    # Chromium sends "null" on same-origin form posts under Referrer-Policy no-referrer,
                    # always with Sec-Fetch-Site; a bare "null" (sandboxed or scripted) is refused
                    headers.get("sec-fetch-site") != "same-origin"
                    if origin == "null"
                    else urlsplit(origin).netloc.lower() != host.lower()
                )
            ):
                return _deny(
                    403, "Forbidden", "cross-site requests are refused.", "use the page of this server."
                )
        sid = cookie_value(headers, SESSION_COOKIE)
        csrf = self.sessions.csrf(sid)
        open_path = path in OPEN_PATHS or path.startswith("/static/") or path == "/"
        if self.config.api_key and not open_path:
            given = headers.get("x-api-key", "").encode("latin-1")
            if not hmac.compare_digest(given, self.config.api_key.encode()) and csrf is None:
                what = "is missing" if not given else "is wrong"
                response = _deny(
                    401, "Unauthorized", f"the X-API-Key header {what}.", "send the server's API key."
                )
                response.headers["WWW-Authenticate"] = "X-API-Key"
                return response
        key_ok = bool(self.config.api_key) and hmac.compare_digest(
            headers.get("x-api-key", "").encode("latin-1"), (self.config.api_key or "").encode()
        )
        if csrf is not None and method in UNSAFE and path != "/login" and not key_ok:
            token = headers.get("x-csrf-token", "")
            if not hmac.compare_digest(token.encode("latin-1"), csrf.encode()):
                return _deny(
                    403, "Forbidden", "the X-CSRF-Token header is missing or wrong.", "reload the page."
                )
        raw = scope.get("raw_path") or path.encode()
        raw_text = raw.decode("latin-1").split("?", 1)[0]
        if _unsafe_path(raw_text):
            return _deny(
                400,
                "BadRequest",
                f"the request path {raw_text[:200]!r} contains '..', '.', a backslash or NUL (after decoding).",
                "use plain names: letters, digits, '.', '_', '-'.",
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        response = self._check(scope, headers)
        if response is None and scope.get("path") not in UPLOAD_PATHS:
            receive, response = await self._bounded(headers, receive)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _bounded(
        self, headers: dict[str, str], receive: Receive
    ) -> tuple[Receive, JSONResponse | None]:
        limit = self.config.max_body_kb * 1024
        too_large = _deny(413, "PayloadTooLarge", f"the request body is larger than this server's limit of "
                          f"{self.config.max_body_kb} KB.", "send a smaller body.")  # fmt: skip
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return receive, too_large
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive, None
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > limit:
                return receive, too_large
        done = False

        async def replay() -> Message:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return replay, None


def _deny(status: int, error: str, detail: str, hint: str) -> JSONResponse:
    return JSONResponse(error_body(error, detail, hint), status_code=status)


__all__ = ["OPEN_PATHS", "SESSION_COOKIE", "GuardMiddleware", "Sessions", "cookie_value", "error_body"]
