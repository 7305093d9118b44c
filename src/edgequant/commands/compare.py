"""``edgequant compare MODEL --calib-data C --eval-data E -o OUTDIR``: every method, one report.

Files that exist are not replaced unasked: ``--overwrite`` replaces an earlier compare run in OUTDIR (its
listed files removed first, ``edgequant.evaluate.compare_files``); without it, exit 2 before any work.

Exit 0 with a recommendation; exit 1 (table and report written) when no method meets the limits,
the closest one named, or when a row asked for with ``--targets`` failed (each such row's error is
printed: the target was asked for and not delivered); exit 2 on bad input (nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgequant.cli_support import is_quiet
from edgequant.commands.executor_options import Address, Cpus, ExecutorName, open_executor
from edgequant.commands.shared_options import (
    Blank,
    Checkpoint,
    DataOption,
    Device,
    DynamicAxis,
    Factory,
    FloatModel,
    GpuNumber,
    InputShape,
    LayerSamples,
    MaxSamples,
    Task,
    Threads,
    TopK,
)
from edgequant.errors import EdgeQuantError


def _profile(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    import yaml

    from edgequant.errors import RecipeError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(
            f"energy profile '{path}' cannot be read: {exc}", "pass a YAML mapping file."
        ) from exc
    if not isinstance(data, dict):
        raise RecipeError(f"energy profile '{path}' is not a mapping.", "write key: value lines (pJ).")
    return data


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        model: FloatModel,
        outdir: Annotated[Path, typer.Option("-o", "--out", "--outdir", help="Output directory.")],
        calib_data: Annotated[str | None, typer.Option(help="Calibration data.")] = None,
        eval_data: Annotated[
            str | None, typer.Option(help="Evaluation data (with 'labels' for accuracy).")
        ] = None,
        methods: Annotated[str, typer.Option(help="all, or a comma-separated list of methods.")] = "all",
        max_drop: Annotated[
            float | None, typer.Option(help="Max accuracy drop (points of the metric).")
        ] = 1.0,
        max_drop_rel: Annotated[
            float | None, typer.Option(help="Max relative accuracy drop, a fraction (0.01 = 1 %).")
        ] = None,
        max_latency_ms: Annotated[float | None, typer.Option(help="Max median latency (ms).")] = None,
        max_size_mb: Annotated[float | None, typer.Option(help="Max file size (MB = 2**20 bytes).")] = None,
        max_energy_mj: Annotated[
            float | None, typer.Option(help="Max energy per inference, mJ (the estimate).")
        ] = None,
        prefer: Annotated[
            str, typer.Option(help="Optimise: latency | size | accuracy | energy.")
        ] = "latency",
        task: Task = "classification",
        runs: Annotated[int, typer.Option(help="Timed latency runs per method.")] = 30,
        threads: Threads = 1,
        batch_size: Annotated[int, typer.Option(help="Batch size for latency.")] = 1,
        memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Measure peak memory.")] = True,
        top_k: TopK = 10,
        layer_samples: LayerSamples = 8,
        max_eval_samples: MaxSamples = None,
        blank: Blank = 0,
        layout: Annotated[str, typer.Option(help="Sequence output layout: ntc or tnc.")] = "ntc",
        device: Device = None,
        gpu_number: GpuNumber = None,
        factory: Factory = None,
        checkpoint: Checkpoint = None,
        input_shape: InputShape = None,
        dynamic_axis: DynamicAxis = None,
        data_option: DataOption = None,
        eval_split: Annotated[
            str | None,
            typer.Option(help="Metadata CSV split to evaluate on (val, test, ...); calibration: train."),
        ] = None,
        energy_profile: Annotated[
            Path | None,
            typer.Option(help="YAML of per-op energies (pJ) replacing the Horowitz 45 nm numbers."),
        ] = None,
        allow_synthetic: Annotated[
            bool,
            typer.Option(
                "--allow-synthetic", help="Without --calib-data: calibrate static methods on random inputs."
            ),
        ] = False,
        target: Annotated[
            str | None, typer.Option(help="Hardware target profile ('edgequant targets'); default cpu.")
        ] = None,
        targets: Annotated[
            str | None,
            typer.Option(
                help="Extra rows: int8-static for each target, e.g. cpu,tvm,akida (toolchain artifacts are "
                "run and scored themselves)."
            ),
        ] = None,
        recipe: Annotated[
            str | None,
            typer.Option(help="Recipe file or preset: its data_options, target, allow_synthetic apply."),
        ] = None,
        executor: ExecutorName = "local",
        ray_address: Address = None,
        ray_cpus: Cpus = None,
        overwrite: Annotated[
            bool,
            typer.Option(
                "--overwrite",
                help="Replace an earlier compare run in OUTDIR: first remove the files its report.json lists "
                "(only those, only regular files in OUTDIR; links are not followed), then write this run's. "
                "Without it, any file this run would write that exists refuses the run before any work.",
                show_default="off",
            ),
        ] = False,
    ) -> None:
        """Quantize MODEL with every method, evaluate, and recommend one under the limits."""
        from edgequant.evaluate import compare as run
        from edgequant.evaluate.table import format_table, print_table

        err = Console(stderr=True)

        names: list[str] = []

        def progress(stage: str, done: int, total: int | None) -> None:
            if is_quiet():  # -q: no progress lines
                return
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
            from edgequant.commands.recipe_options import recipe_options
            from edgequant.commands.torch_input import to_onnx
            from edgequant.evaluate.target_rows import parse_targets, row_name

            used = ("data_options", "target", "allow_synthetic")
            opts, rec, notes = recipe_options(recipe, data_option, "compare", used)
            target = target or rec.get("target") or "cpu"
            allow_synthetic = allow_synthetic or bool(rec.get("allow_synthetic"))
            extra = parse_targets(targets, target)
            names.extend(row_name(t) for t in extra)
            from edgequant.evaluate.compare_files import CLI_FIX, check_outdir, planned_files

            planned = planned_files(  # refused now (a PyTorch model is exported next), not after the work
                model.stem,
                resolve_methods(methods),
                extra,
                target=target,
                allow_synthetic=allow_synthetic,
                report=True,
            )
            check_outdir(outdir, planned, overwrite=overwrite, model=model, fix=CLI_FIX)
            first = ("--calib-data", calib_data) if calib_data is not None else ("--eval-data", eval_data)
            source, more = to_onnx(model, factory, checkpoint, input_shape, dynamic_axis, first)
            notes += more
            for note in [] if is_quiet() else notes:
                err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
            with open_executor(executor, ray_address, ray_cpus) as ex:
                result = run(
                source, calib_data, eval_data, methods=methods, max_drop=max_drop, max_drop_rel=max_drop_rel,
                max_latency_ms=max_latency_ms, max_size_mb=max_size_mb, max_energy_mj=max_energy_mj,
                prefer=prefer, outdir=outdir, task=task, progress=progress, latency_runs=runs,
                threads=threads, batch_size=batch_size, measure_memory=memory, top_k=top_k,
                layer_samples=layer_samples, max_eval_samples=max_eval_samples, blank=blank, layout=layout,
                device=device, gpu_number=gpu_number, energy_profile=_profile(energy_profile),
                data_options=opts, eval_split=eval_split,
                allow_synthetic=allow_synthetic, target=target, targets=targets, executor=ex,
                overwrite=overwrite,
            )  # fmt: skip
        except EdgeQuantError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        console = Console()
        print_table(console, format_table(result))
        console.print(f"report: {outdir / result.files.get('html', 'report.html')}", markup=False)
        asked = {row_name(t) for t in parse_targets(targets, target)}
        failed = [m for m in result.methods if m.method in asked and not m.ok]
        for m in failed:  # an asked-for target that did not deliver is never a quiet exit 0
            err.print(f"error: {m.method} failed: {m.error}", markup=False, highlight=False, soft_wrap=True)
        if result.recommended is None or failed:  # limits not met (the table names the closest), or a target
            raise typer.Exit(1)
