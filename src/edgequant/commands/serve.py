"""``edgequant serve --host H --port P --store DIR [--api-key K] [--max-upload-mb N] [--workers N]``.

Runs the REST service (``edgequant.service``); needs the ``serve`` extra.  ``--workers`` is the
number of job worker processes; the HTTP server itself is one process.  The API key may also come
from the environment variable EDGEQUANT_API_KEY.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgequant.errors import EdgeQuantError


def run_serve(
    host: str, port: int, store: Path, api_key: str | None, max_upload_mb: float, workers: int, log_level: str
) -> None:
    from edgequant.service import serve

    serve(
        host, port, store, api_key=api_key, max_upload_mb=max_upload_mb, workers=workers, log_level=log_level
    )


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        store: Annotated[Path, typer.Option("--store", help="Directory for the job database and uploads.")],
        host: Annotated[
            str, typer.Option("--host", help="Interface to bind (loopback by default).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port")] = 8000,
        api_key: Annotated[
            str | None,
            typer.Option(
                "--api-key", envvar="EDGEQUANT_API_KEY", help="Require this X-API-Key on every request."
            ),
        ] = None,
        max_upload_mb: Annotated[
            float, typer.Option("--max-upload-mb", help="Upload size limit (413 above).")
        ] = 200.0,
        workers: Annotated[int, typer.Option("--workers", help="Job worker processes.")] = 2,
        log_level: Annotated[str, typer.Option("--log-level")] = "info",
    ) -> None:
        """Run the REST service: upload models and data, quantize in worker processes, download results."""
        try:
            run_serve(host, port, store, api_key, max_upload_mb, workers, log_level)
        except EdgeQuantError as exc:
            Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
