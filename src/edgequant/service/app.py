"""The FastAPI application: wiring, the request guard, and JSON errors.

Every error body is an ``ErrorBody`` ``{"error", "detail", "hint"}``, declared for every route in
the OpenAPI.  EdgeQuantError subclasses map to 4xx (see ``config.status_of``); FastAPI validation
errors are 422; unknown routes 404.  Any other exception is a bug: it is logged with its traceback
and answered 500 with an incident number only (no exception text, no server path).

The guard (``guard.GuardMiddleware``) runs before routing: Host check, cross-site refusal, API key
or web session, CSRF, traversal, body size.  The web page is ``web``; the routes are ``routes_*``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgequant.errors import EdgeQuantError
from edgequant.recipe.flags import rest_error
from edgequant.service.config import ServiceConfig, served_targets, status_of
from edgequant.service.guard import API, GuardMiddleware, Sessions, error_body
from edgequant.service.jobs import JobManager
from edgequant.service.schemas import ERROR_RESPONSES, CompareBody, RecipeBody, unknown_body_key
from edgequant.service.store import JobStore

log = logging.getLogger(__name__)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(EdgeQuantError)
    async def on_edgequant(request: Request, exc: EdgeQuantError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500 and status != 501:
            log.error("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return JSONResponse(rest_error(exc.to_dict()), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        for err in exc.errors():  # an unknown recipe key: the library's own words (with a suggestion)
            loc = tuple(err.get("loc", ()))
            if err.get("type") == "extra_forbidden" and len(loc) == 2 and loc[0] == "body":
                body = CompareBody if request.url.path.endswith("/compare") else RecipeBody
                return JSONResponse(unknown_body_key(str(loc[1]), body).to_dict(), status_code=422)
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

    @app.exception_handler(MemoryError)
    async def on_memory(request: Request, exc: MemoryError) -> JSONResponse:
        log.error("out of memory on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(
                "ServiceUnavailable", "the server ran out of memory for this request.", "retry later."
            ),
            status_code=503,
        )

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        incident = secrets.token_hex(4)
        log.error("unhandled error on %s %s (incident %s)", request.method, request.url.path, incident,
                  exc_info=exc)  # fmt: skip
        return JSONResponse(
            error_body(
                "InternalError",
                f"an unexpected {type(exc).__name__} (incident {incident}; details are in the server log).",
                "this is a bug; please report it with the incident number.",
            ),
            status_code=500,
        )


def start_ray(config: ServiceConfig) -> tuple[bool, str | None]:
    """(started here, address for the workers): None for the local executor; ``config.ray_address``;
    or a local Ray instance started in this process (no dashboard), whose GCS address is returned."""
    if config.executor != "ray":
        return False, None
    if config.ray_address is not None:
        return False, config.ray_address
    from edgequant.executors.ray import RayExecutor, keep_signal_handlers

    with keep_signal_handlers():  # uvicorn's SIGTERM stays: a clean shutdown, jobs marked interrupted
        ex = RayExecutor()
    import ray

    address: str = ray.get_runtime_context().gcs_address
    return ex.started, address


def create_app(config: ServiceConfig) -> FastAPI:
    """The ASGI app for ``config``; the store is opened and the workers started in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = JobStore(config.store)
        ray_started, ray_address = start_ray(config)
        manager = JobManager(
            store,
            config.workers,
            job_timeout_s=config.job_timeout_s,
            memory_mb=config.worker_memory_mb,
            retention_days=config.retention_days,
            ray_address=ray_address,
        )
        manager.start()
        app.state.store, app.state.manager = store, manager
        log.info("EdgeQuant service: store %s, %d worker(s), api key %s", config.store, config.workers,
                 "on" if config.api_key else "off")  # fmt: skip
        try:
            yield
        finally:
            manager.stop()
            store.close()
            if ray_started:
                import ray

                ray.shutdown()

    app = FastAPI(
        title="EdgeQuant",
        version=_version(),
        description="Upload ONNX models and calibration data, quantize them in worker processes, "
        "download QDQ models that ONNX Runtime runs.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,  # type: ignore[arg-type]
    )
    app.state.config = config
    app.state.commit_lock = threading.Lock()
    app.state.sessions = Sessions()
    _install_handlers(app)
    from edgequant.service.routes_compare import router as compare_router
    from edgequant.service.routes_files import router as files_router
    from edgequant.service.routes_jobs import router as jobs_router
    from edgequant.service.routes_lifecycle import router as lifecycle_router
    from edgequant.service.web import mount as mount_web

    app.include_router(files_router, prefix=API)
    app.include_router(lifecycle_router, prefix=API)
    app.include_router(jobs_router, prefix=API)
    app.include_router(compare_router, prefix=API)
    mount_web(app)

    @app.get("/health", summary="Liveness, workers and targets")
    @app.get(f"{API}/health", summary="Liveness, workers and targets")
    def health(request: Request) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": _version(),
            "jobs": request.app.state.manager.status(),
            "targets": served_targets(),
            "auth": bool(config.api_key),
        }

    app.add_middleware(GuardMiddleware, config=config, sessions=app.state.sessions)
    return app


def _version() -> str:
    try:
        from edgequant.result import __version__

        return __version__
    except Exception:
        return "unknown"
