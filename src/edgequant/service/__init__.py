"""The REST service (optional extra ``edgequant[serve]``: fastapi, uvicorn, python-multipart).

``serve(...)`` runs one uvicorn process with the FastAPI app of ``edgequant.service.app``; jobs run
in ``workers`` separate worker processes (``edgequant.service.jobs``), never in a request handler.
State lives in ``--store DIR`` (SQLite job table + uploaded files); see ``edgequant.service.store``.
Importing this package does not import fastapi, so the CLI works without the extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgequant.errors import DependencyError
from edgequant.service.config import TARGETS, ServiceConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

_EXTRA_MODULES = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart"))


def require_extra() -> None:
    """Raise DependencyError when a package of the ``serve`` extra is missing."""
    for module, package in _EXTRA_MODULES:
        if importlib.util.find_spec(module) is None:
            raise DependencyError.missing(package, "serve", "The REST service")


def create_app(config: ServiceConfig) -> FastAPI:
    """The ASGI application for ``config`` (workers start when the app's lifespan starts)."""
    require_extra()
    from edgequant.service.app import create_app as _create

    return _create(config)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    store: str | Path = "edgequant-store",
    *,
    api_key: str | None = None,
    max_upload_mb: float = 200.0,
    workers: int = 2,
    log_level: str = "info",
    **limits: Any,
) -> None:
    """Run the service until interrupted (SIGTERM / Ctrl-C: running jobs are marked interrupted).

    ``limits`` are the ServiceConfig limit fields (``job_timeout_s``, ``worker_memory_mb``, ...).
    A non-loopback ``host`` needs an API key (BadRequest otherwise).  With ``executor="ray"`` and a
    ``ray_address`` the cluster is probed first: ExecutorError (naming the address, Ray's reason and
    the fix) when it cannot be reached, before anything listens.
    """
    require_extra()
    import uvicorn

    config = ServiceConfig.create(
        store, api_key=api_key, max_upload_mb=max_upload_mb, workers=workers, host=host, port=port, **limits
    )
    if config.executor == "ray" and config.ray_address is not None:
        from edgequant.executors.ray import probe

        probe(config.ray_address)  # refuse to start (ExecutorError) rather than fail every job later
    uvicorn.run(
        create_app(config), host=host, port=port, log_level=log_level, workers=1, timeout_graceful_shutdown=5
    )


__all__ = ["TARGETS", "ServiceConfig", "create_app", "require_extra", "serve"]
