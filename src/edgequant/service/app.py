"""The FastAPI application: wiring, API-key and path guards, and JSON errors.

Every error body is ``{"error", "detail", "hint"}``.  EdgeQuantError subclasses map to 4xx (see
``config.status_of``); FastAPI validation errors are 422; unknown routes 404.  Any other exception
is a bug: it is logged with its traceback and answered 500 with the same JSON shape.

Guards run before routing, on the raw request path:

* API key (``--api-key`` or EDGEQUANT_API_KEY): when set, every request needs the header
  ``X-API-Key`` (constant-time compare), except ``/health``, ``/api/v1/health``, ``/docs``,
  ``/redoc`` and ``/openapi.json`` so liveness probes and the docs stay open.  Missing or wrong: 401.
* Traversal: the path is percent-decoded up to three times (``%252e`` -> ``%2e`` -> ``.``); a ``..``
  or ``.`` segment, a backslash or a NUL anywhere is a 400 before any handler sees it.  Handlers
  validate every name again (``safety.check_name``).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgequant.errors import EdgeQuantError
from edgequant.service.config import ServiceConfig, served_targets, status_of
from edgequant.service.jobs import JobManager
from edgequant.service.store import JobStore

log = logging.getLogger(__name__)
API = "/api/v1"
OPEN_PATHS = frozenset(
    {"/health", f"{API}/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_body(error: str, detail: str, hint: str = "") -> dict[str, str]:
    return {"error": error, "detail": detail, "hint": hint}


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


class GuardMiddleware:
    """API-key check, then the traversal check, on every HTTP request (pure ASGI: streams untouched)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        raw = scope.get("raw_path") or path.encode()
        raw_text = raw.decode("latin-1").split("?", 1)[0]
        response: JSONResponse | None = None
        if self.api_key and path not in OPEN_PATHS:
            headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
            given = headers.get("x-api-key", b"")
            if not hmac.compare_digest(given, self.api_key.encode()):
                what = "is missing" if not given else "is wrong"
                response = JSONResponse(
                    error_body("Unauthorized", f"the X-API-Key header {what}.", "send the server's API key."),
                    status_code=401,
                    headers={"WWW-Authenticate": "X-API-Key"},
                )
        if response is None and _unsafe_path(raw_text):
            response = JSONResponse(
                error_body(
                    "BadRequest",
                    f"the request path {raw_text[:200]!r} contains '..', '.', a backslash or NUL (after decoding).",
                    "use plain names: letters, digits, '.', '_', '-'.",
                ),
                status_code=400,
            )
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(EdgeQuantError)
    async def on_edgequant(request: Request, exc: EdgeQuantError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500 and status != 501:
            log.error("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return JSONResponse(exc.to_dict(), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse(
            error_body(
                "ValidationError", "; ".join(parts) or "invalid request.", "see /docs for the parameters."
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "NotFound", 405: "MethodNotAllowed"}
        hint = "see /docs for the endpoints." if exc.status_code in names else ""
        return JSONResponse(
            error_body(names.get(exc.status_code, "HTTPError"), str(exc.detail), hint),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body(
                "InternalError", f"{type(exc).__name__}: {str(exc)[:300]}", "this is a bug; please report it."
            ),
            status_code=500,
        )


def create_app(config: ServiceConfig) -> FastAPI:
    """The ASGI app for ``config``; the store is opened and the workers started in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = JobStore(config.store)
        manager = JobManager(store, config.workers)
        manager.start()
        app.state.store, app.state.manager = store, manager
        log.info("EdgeQuant service: store %s, %d worker(s), api key %s", config.store, config.workers,
                 "on" if config.api_key else "off")  # fmt: skip
        try:
            yield
        finally:
            manager.stop()
            store.close()

    app = FastAPI(
        title="EdgeQuant",
        version=_version(),
        description="Upload ONNX models and calibration data, quantize them in worker processes, "
        "download QDQ models that ONNX Runtime runs.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.commit_lock = threading.Lock()
    _install_handlers(app)
    from edgequant.service.routes_files import router as files_router
    from edgequant.service.routes_jobs import router as jobs_router

    app.include_router(files_router, prefix=API)
    app.include_router(jobs_router, prefix=API)

    @app.get("/health")
    @app.get(f"{API}/health")
    def health(request: Request) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": _version(),
            "jobs": request.app.state.manager.status(),
            "targets": served_targets(),
            "auth": bool(config.api_key),
        }

    app.add_middleware(GuardMiddleware, api_key=config.api_key)
    return app


def _version() -> str:
    try:
        from edgequant.result import __version__

        return __version__
    except Exception:
        return "unknown"
