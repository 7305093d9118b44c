"""The REST service (optional extra ``edgequant[serve]``: fastapi, uvicorn, python-multipart).

``serve(...)`` runs one uvicorn process with the FastAPI app of ``edgequant.service.app``; jobs run
in ``workers`` separate worker processes (``edgequant.service.jobs``), never in a request handler.
State lives in ``--store DIR`` (SQLite job table + uploaded files); see ``edgequant.service.store``.
Importing this package does not import fastapi, so the CLI works without the extra.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgequant.errors import DependencyError, first_line
from edgequant.service.config import TARGETS, BadRequest, ServiceConfig

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
    the fix) when it cannot be reached, before anything listens.  The port is bound and the store
    directory checked before anything is created: a port in use, or a store that cannot be created
    or written, is a BadRequest and leaves no store behind.
    """
    require_extra()
    import uvicorn

    config = ServiceConfig.create(
        store, api_key=api_key, max_upload_mb=max_upload_mb, workers=workers, host=host, port=port, **limits
    )
    if config.executor == "ray" and config.ray_address is not None:
        from edgequant.executors.ray import probe

        probe(config.ray_address)  # refuse to start (ExecutorError) rather than fail every job later
    check_store(config.store)
    sock = bind(host, port)
    try:
        config.store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sock.close()
        raise BadRequest(
            f"cannot create the store directory '{config.store}': {exc.strerror or first_line(exc)}.",
            "pass a --store directory you can write.",
        ) from exc
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            log_level=log_level,
            workers=1,
            timeout_graceful_shutdown=5,
        )
    )
    server.run(sockets=[sock])


def check_store(path: Path) -> None:
    """BadRequest unless ``path`` is a writable directory or can be created as one (its nearest
    existing ancestor is a writable directory); creates nothing."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = ""
    if not existing.is_dir():
        problem = f"'{existing}' is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"'{existing}' is not writable by this user"
    if problem:
        raise BadRequest(
            f"cannot use --store '{path}': {problem}.", "pass a --store directory you can write."
        )


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` for uvicorn to listen on; BadRequest (naming the address and
    the system's reason, e.g. 'Address already in use') when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BadRequest(
            f"cannot listen on {host}:{port}: {exc.strerror or first_line(exc)}.",
            f"choose another --port, or stop the process that holds {port} (`ss -ltnp 'sport = :{port}'` shows it).",
        ) from exc
    sock.set_inheritable(True)
    return sock


__all__ = ["TARGETS", "ServiceConfig", "create_app", "require_extra", "serve"]
