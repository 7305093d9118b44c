"""``edgequant sweep MODEL... --calib-data C --eval-data E --methods ... --targets ... --bits ... -o OUT``.

One row per (model, method, target, bits) in ``OUT/sweep.{json,csv,html}`` with the Pareto front per
model; finished cells are cached in ``OUT/.sweep-cache/`` and skipped by a re-run (it says how many).
Exit 0 when every cell ran (failed cells are rows with their error, listed at the end); exit 2 on
bad input (nothing written), among it an OUT holding files this run would write that is not an earlier
sweep's, without ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgequant.commands.executor_options import Address, Cpus, ExecutorName, Shared, open_executor
from edgequant.errors import EdgeQuantError, RecipeError


def _list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise RecipeError(f"--{what} is empty.", f"pass a comma-separated list to --{what}.")
    return items


def _bits(text: str) -> list[int]:
    try:
        return [int(b) for b in _list(text, "bits")]
    except ValueError as exc:
        raise RecipeError(f"--bits '{text}' is not a list of integers.", "pass e.g. --bits 8,4") from exc


def register(app: typer.Typer) -> None:
    @app.command()
    def sweep(
        models: Annotated[list[Path], typer.Argument(help="ONNX models (one or more).")],
        outdir: Annotated[Path, typer.Option("-o", "--out", help="Output directory (report, files, cache).")],
        eval_data: Annotated[str, typer.Option(help="Evaluation data (with 'labels' for accuracy).")],
        calib_data: Annotated[str | None, typer.Option(help="Calibration data.")] = None,
        methods: Annotated[str, typer.Option(help="all, or a comma-separated list of methods.")] = "all",
        targets: Annotated[
            str, typer.Option(help="Comma-separated target profiles ('edgequant targets').")
        ] = "cpu",
        bits: Annotated[
            str,
            typer.Option(
                help="Comma-separated weight bit widths (2, 4, 8) for methods with integer weights."
            ),
        ] = "8",
        task: Annotated[str, typer.Option(help="classification | regression | embedding | sequence")] = (
            "classification"
        ),
        runs: Annotated[int, typer.Option(help="Timed latency runs per cell.")] = 30,
        threads: Annotated[int, typer.Option(help="ORT intra-op threads for latency (0 = ORT default).")] = 1,
        batch_size: Annotated[int, typer.Option(help="Batch size for latency.")] = 1,
        memory: Annotated[
            bool, typer.Option("--memory/--no-memory", help="Measure peak memory (a subprocess per cell).")
        ] = False,
        max_eval_samples: Annotated[int | None, typer.Option(help="Evaluate at most N samples.")] = None,
        allow_synthetic: Annotated[
            bool, typer.Option("--allow-synthetic", help="Without --calib-data: calibrate on random inputs.")
        ] = False,
        executor: ExecutorName = "local",
        ray_address: Address = None,
        ray_cpus: Cpus = None,
        ray_shared_dir: Shared = None,
        overwrite: Annotated[
            bool,
            typer.Option(
                "--overwrite",
                help="Replace sweep.json/.csv/.html and cell folders in OUT that an earlier sweep did not write "
                "(an earlier sweep's OUT, with its .sweep-cache/, is resumed without it).",
                show_default="off",
            ),
        ] = False,
    ) -> None:
        """Run models x methods x targets x bits; one report with the Pareto front per model."""
        from edgequant.sweep import run_sweep

        err = Console(stderr=True)
        try:
            target_list, bit_list = _list(targets, "targets"), _bits(bits)
            if ray_shared_dir is not None and executor != "ray":
                raise RecipeError(
                    f"--ray-shared-dir {ray_shared_dir} is for Ray workers, and the executor is {executor}.",
                    "add --executor ray, or drop --ray-shared-dir.",
                )
            with open_executor(executor, ray_address, ray_cpus) as ex, Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=err, transient=True, disable=not err.is_terminal,
            ) as bar:  # fmt: skip
                task_id = bar.add_task("sweep", total=None)

                def progress(done: int, total: int, label: str) -> None:
                    bar.update(task_id, completed=done, total=total, description=f"sweep: {label}")

                result = run_sweep(
                    models, calib_data, eval_data, outdir=outdir, methods=methods, targets=target_list,
                    bits=bit_list, task=task, executor=ex, shared=ray_shared_dir, progress=progress,
                    latency_runs=runs, threads=threads, batch_size=batch_size, measure_memory=memory,
                    max_eval_samples=max_eval_samples, allow_synthetic=allow_synthetic, overwrite=overwrite,
                )  # fmt: skip
        except EdgeQuantError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        from edgequant.evaluate.table import print_table

        console = Console()
        table = Table(
            "model", "method", "target", "bits", "status", "score", "median ms", "MiB", "Pareto", "cache"
        )
        for r in result.rows:
            lat = (r.get("latency") or {}).get("median_ms")
            size = r.get("file_bytes")
            table.add_row(
                r["model"], r["method"], r["target"] or "-", str(r["bits"] or "-"), r["status"],
                "" if r.get("score") is None else f"{r['score']:.2f}", "" if lat is None else f"{lat:.3f}",
                "" if size is None else f"{size / 2**20:.3f}", "yes" if r.get("pareto") else "",
                "cached" if r.get("cached") else "",
            )  # fmt: skip
        print_table(console, table)  # whole off a terminal: no cell cut to "int8-…"
        console.print(
            f"{len(result.rows)} cells: {result.ran} ran, {result.cached} skipped (finished in an earlier run, "
            f"cached in {outdir / '.sweep-cache'}), {result.failed} failed.",
            markup=False,
        )
        for r in result.rows:
            if r["status"] != "ok":
                console.print(f"failed: {r['model']} {r['method']} {r['target'] or '-'} w{r['bits'] or '-'}: "
                              f"{r.get('error', '')}", markup=False, soft_wrap=True)  # fmt: skip
        console.print(f"report: {outdir / result.files.get('html', 'sweep.html')}", markup=False)
