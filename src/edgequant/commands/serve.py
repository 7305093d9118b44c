"""``edgequant serve --store DIR [--host H] [--port P] [--api-key K] [limits ...]``.

Runs the REST service and its web page at ``/`` (``edgequant.service``); needs the ``serve`` extra.
``--workers`` is the number of job worker processes; the HTTP server itself is one process.  The API
key may also come from the environment variable EDGEQUANT_API_KEY; binding to an address other than
loopback requires one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgequant.errors import EdgeQuantError


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        store: Annotated[Path, typer.Option("--store", help="Directory for the job database and uploads.")],
        host: Annotated[
            str, typer.Option("--host", help="Interface to bind (loopback by default; others need a key).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = 8000,
        api_key: Annotated[
            str | None,
            typer.Option(
                "--api-key", envvar="EDGEQUANT_API_KEY", help="Require this X-API-Key (or a web login)."
            ),
        ] = None,
        max_upload_mb: Annotated[
            float, typer.Option("--max-upload-mb", help="Upload size limit (413 above).")
        ] = 200.0,
        workers: Annotated[int, typer.Option("--workers", help="Job worker processes.")] = 2,
        job_timeout: Annotated[float, typer.Option("--job-timeout", help="Seconds a job may run.")] = 1800.0,
        worker_memory_mb: Annotated[
            int, typer.Option("--worker-memory-mb", help="Address-space limit (RLIMIT_AS) of each worker.")
        ] = 8192,
        max_queued: Annotated[
            int, typer.Option("--max-queued", help="Queued jobs at most (429 beyond).")
        ] = 64,
        retention_days: Annotated[
            float | None, typer.Option("--retention-days", help="Delete finished jobs older than this.")
        ] = None,
        executor: Annotated[
            str, typer.Option("--executor", help="local (worker processes) or ray (jobs as Ray tasks).")
        ] = "local",
        ray_address: Annotated[
            str | None,
            typer.Option(
                help="Ray cluster for --executor ray, e.g. ray://head:10001 [default: a local instance]."
            ),
        ] = None,
        log_level: Annotated[
            str,
            typer.Option("--log-level", help="uvicorn log level: critical | error | warning | info | debug."),
        ] = "info",
    ) -> None:
        """Run the REST service and web page: upload models and data, quantize in worker processes, download."""
        from edgequant.service import serve

        try:
            serve(
                host, port, store, api_key=api_key, max_upload_mb=max_upload_mb, workers=workers,
                log_level=log_level, job_timeout_s=job_timeout, worker_memory_mb=worker_memory_mb,
                max_queued=max_queued, retention_days=retention_days, executor=executor,
                ray_address=ray_address,
            )  # fmt: skip
        except EdgeQuantError as exc:
            Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
