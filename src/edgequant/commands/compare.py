"""``edgequant compare MODEL --calib-data C --eval-data E -o OUTDIR``: every method, one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgequant.errors import EdgeQuantError


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        model: Annotated[Path, typer.Argument(help="The float ONNX model.")],
        outdir: Annotated[Path, typer.Option("-o", "--out", "--outdir", help="Output directory.")],
        calib_data: Annotated[str | None, typer.Option(help="Calibration data.")] = None,
        eval_data: Annotated[
            str | None, typer.Option(help="Evaluation data (with 'labels' for accuracy).")
        ] = None,
        methods: Annotated[str, typer.Option(help="all, or a comma-separated list of methods.")] = "all",
        max_drop: Annotated[float | None, typer.Option(help="Max accuracy drop (pp).")] = 1.0,
        max_latency_ms: Annotated[float | None, typer.Option(help="Max median latency (ms).")] = None,
        max_size_mb: Annotated[float | None, typer.Option(help="Max file size (MB = 2**20 bytes).")] = None,
        task: Annotated[str, typer.Option(help="classification | regression | embedding | sequence")] = (
            "classification"
        ),
        runs: Annotated[int, typer.Option(help="Timed latency runs per method.")] = 30,
        threads: Annotated[int, typer.Option(help="ORT intra-op threads (0 = ORT default).")] = 1,
        batch_size: Annotated[int, typer.Option(help="Batch size for latency.")] = 1,
        memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Measure peak memory.")] = True,
        top_k: Annotated[int, typer.Option(help="Nodes for the only-this-layer analysis.")] = 10,
        layer_samples: Annotated[int, typer.Option(help="Samples for the per-layer analysis.")] = 8,
        max_eval_samples: Annotated[int | None, typer.Option(help="Evaluate at most N samples.")] = None,
        blank: Annotated[int, typer.Option(help="CTC blank index (sequence).")] = 0,
        layout: Annotated[str, typer.Option(help="Sequence output layout: ntc or tnc.")] = "ntc",
    ) -> None:
        """Quantize MODEL with every method, evaluate, and recommend one under the limits."""
        from edgequant.evaluate import compare as run
        from edgequant.evaluate.table import format_table

        err = Console(stderr=True)

        names: list[str] = []

        def progress(stage: str, done: int, total: int | None) -> None:
            what = names[done] if done < len(names) else "report"
            err.print(f"[{min(done + 1, total or 0)}/{total}] {what}", markup=False, highlight=False)

        try:
            if eval_data is None:
                from edgequant.errors import DataError

                raise DataError(
                    "compare needs evaluation data.", "pass --eval-data PATH (.npz with 'labels')."
                )
            from edgequant.evaluate import resolve_methods

            names.extend(resolve_methods(methods))
            result = run(
                model, calib_data, eval_data, methods=methods, max_drop=max_drop, max_latency_ms=max_latency_ms,
                max_size_mb=max_size_mb, outdir=outdir, task=task, progress=progress, latency_runs=runs,
                threads=threads, batch_size=batch_size, measure_memory=memory, top_k=top_k,
                layer_samples=layer_samples, max_eval_samples=max_eval_samples, blank=blank, layout=layout,
            )  # fmt: skip
        except EdgeQuantError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        console = Console()
        console.print(format_table(result))
        console.print(f"report: {outdir / result.files.get('html', 'report.html')}", markup=False)
