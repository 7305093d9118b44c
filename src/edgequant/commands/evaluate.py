"""``edgequant evaluate FLOAT QUANT --data PATH``: task metrics float vs quantized, optionally
per-layer error and latency; results to the console (rich table), JSON (-o) and CSV (atomic)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgequant.cli_support import is_quiet, print_table
from edgequant.commands.preprocess_options import Mean, Scale, Size, Std, preprocess_flags
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
from edgequant.errors import EdgeQuantError, ExportError
from edgequant.outputs import check_writable


def _fail(exc: EdgeQuantError) -> None:
    Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _name(model: Any) -> str:
    return str(model) if isinstance(model, str | Path) else f"{model.graph.name} (exported from PyTorch)"


def run_evaluate(
    float_model: Path | Any,
    quant_model: Path,
    data: str,
    task: str,
    *,
    metric: str | None,
    blank: int,
    layout: str,
    output_name: str | None,
    batch_size: int,
    max_samples: int | None,
    per_layer: bool,
    top_k: int,
    layer_samples: int,
    latency: bool,
    runs: int,
    threads: int,
    latency_batch: int,
    memory: bool,
    data_options: dict[str, Any] | None = None,
    eval_split: str | None = None,
    device: str | None = None,
    gpu_number: int | None = None,
    preprocess: Any = None,
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Everything the command computes: (EvalResult, JSON-able dict, CSV rows).  ``preprocess``: the
    image/video fields the user set (``recipe.Preprocess``; the model's declared ones fill the rest)."""
    from edgequant.evaluate import core, layers, perf, tasks

    tasks.check_task(task)
    fm, qm = core.as_model(float_model), core.as_model(quant_model)
    option = "--output-name"
    name = core.output_name(fm, output_name, f"the float model '{float_model}'", option)
    core.output_name(qm, name, f"the quantized model '{quant_model}'", option)
    from edgequant.runtime.device import runtime_for

    rt = runtime_for(device, gpu_number)
    opts = core.eval_options(data_options, eval_split)
    ev = core.load_eval_data(
        data, fm, batch_size=batch_size, max_samples=max_samples, options=opts, preprocess=preprocess
    )
    lay = core.ev_layout(task, layout)
    ref = core.join(core.run_outputs(fm, ev.batches, name, rt, "the float model"), task, lay, ev.steps)
    got = core.join(core.run_outputs(qm, ev.batches, name, rt, "the quantized model"), task, lay, ev.steps)
    result = core.score_outputs(
        task, ref, got, ev.labels, name, metric=metric, blank=blank, samples=ev.scored
    )
    out: dict[str, Any] = {"kind": "evaluate", "float_model": _name(float_model), "quant_model": str(quant_model),
                           "data": ev.description, "providers": rt.providers, **result.to_dict()}  # fmt: skip
    rows = result.rows()
    sizes = {"float": perf.model_size(float_model), "quantized": perf.model_size(quant_model)}
    out["sizes"] = {k: v.to_dict() for k, v in sizes.items()}
    for key in ("file_bytes", "packed_bytes"):
        f, q = getattr(sizes["float"], key), getattr(sizes["quantized"], key)
        rows.append({"metric": f"size.{key}", "float": f, "quantized": q, "delta": q - f})
    if latency:
        lat = {k: perf.measure_latency(p, ev.batches[0], runs=runs, threads=threads, batch_size=latency_batch,
                                       runtime=rt)
               for k, p in (("float", float_model), ("quantized", quant_model))}  # fmt: skip
        out["latency"] = {k: v.to_dict() for k, v in lat.items()}
        for key in ("median_ms", "p90_ms", "throughput"):
            f, q = getattr(lat["float"], key), getattr(lat["quantized"], key)
            rows.append({"metric": f"latency.{key}", "float": f, "quantized": q, "delta": q - f})
    if memory:
        mem = {k: perf.measure_memory(p, ev.batches[0], batch_size=latency_batch, threads=threads)
               for k, p in (("float", float_model), ("quantized", quant_model))}  # fmt: skip
        out["memory"] = mem
        f, q = mem["float"]["peak_rss_delta_mb"], mem["quantized"]["peak_rss_delta_mb"]
        rows.append({"metric": "memory.peak_rss_delta_mb", "float": f, "quantized": q, "delta": q - f})
    if per_layer:
        samples = core.load_eval_data(
            data, fm, batch_size=layer_samples, max_samples=layer_samples, options=opts
        ).batches
        out["per_layer"] = layers.per_layer_error(
            fm, qm, samples, top_k=top_k, output=name, runtime=rt
        ).to_dict()
    return result, out, rows


_PERF_UNITS = {
    "size.file_bytes": ("file size", "MiB", 2.0**-20),
    "size.packed_bytes": ("packed size", "MiB", 2.0**-20),
    "latency.median_ms": ("median latency", "ms", 1.0),
    "latency.p90_ms": ("p90 latency", "ms", 1.0),
    "latency.throughput": ("throughput", "samples/s", 1.0),
    "memory.peak_rss_delta_mb": ("peak session memory", "MiB", 1.0),
}


def perf_table(rows: list[dict[str, Any]]) -> Table:
    """The size, latency and memory rows of ``rows`` with their units, float vs quantized."""
    t = Table("measure", "unit", "float", "quantized", "quantized / float", title="size, speed, memory")
    for r in rows:
        if r["metric"] not in _PERF_UNITS:
            continue
        label, unit, k = _PERF_UNITS[r["metric"]]
        f, q = float(r["float"]) * k, float(r["quantized"]) * k
        t.add_row(label, unit, f"{f:.4g}", f"{q:.4g}", f"{q / f:.3f}" if f else "-")
    return t


def _check_outputs(paths: dict[str, Path | None], overwrite: bool, inputs: list[Path]) -> None:
    """``outputs.check_writable`` for each output file given (by its flag: ``-o``, ``--output-csv``):
    ExportError (one line, its fix naming that flag) for a folder that cannot be written (/proc,
    read-only), a directory or a symbolic link at the path, the input model, or an existing file
    without ``overwrite``."""
    for option, path in paths.items():
        if path is None:
            continue
        example = "result.csv" if option == "--output-csv" else "result.json"
        if path.is_dir():
            raise ExportError(
                f"output '{path}' is a directory.", f"give a file path (e.g. {option} {example})."
            )
        fix = f"pass --overwrite to replace it, or choose another {option} file."
        check_writable(
            path.parent,
            [path],
            overwrite=overwrite,
            inputs=inputs,
            clash_fix=fix,
            option=option,
            example=example,
        )


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        float_model: FloatModel,
        quant_model: Annotated[Path, typer.Argument(help="The quantized ONNX model.")],
        data: Annotated[
            str, typer.Option(help="Evaluation data (.npz with inputs and 'labels', images, ...).")
        ],
        task: Task = "classification",
        metric: Annotated[str | None, typer.Option(help="Custom metric module:function.")] = None,
        blank: Blank = 0,
        layout: Annotated[
            str, typer.Option(help="Sequence output layout: ntc ([N,T,C]) or tnc ([T,N,C]).")
        ] = "ntc",
        output_name: Annotated[
            str | None, typer.Option(help="Model output to score (default: the first).")
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 32,
        max_samples: MaxSamples = None,
        output_json: Annotated[
            Path | None, typer.Option("-o", "--output-json", help="Write JSON here.")
        ] = None,
        output_csv: Annotated[Path | None, typer.Option("--output-csv", help="Write CSV here.")] = None,
        overwrite: Annotated[
            bool,
            typer.Option(
                "--overwrite",
                help="Replace the -o / --output-csv file if it exists (without it an existing one is refused).",
                show_default="off",
            ),
        ] = False,
        per_layer: Annotated[bool, typer.Option("--per-layer", help="Per-layer SQNR analysis.")] = False,
        top_k: TopK = 10,
        layer_samples: LayerSamples = 8,
        latency: Annotated[bool, typer.Option("--latency", help="Measure ORT CPU latency of both.")] = False,
        runs: Annotated[int, typer.Option(help="Timed runs for latency.")] = 50,
        threads: Threads = 1,
        latency_batch: Annotated[int, typer.Option(help="Batch size for latency/memory.")] = 1,
        memory: Annotated[
            bool, typer.Option("--memory", help="Peak memory of each model's ORT session (subprocess, MiB).")
        ] = False,
        data_option: DataOption = None,
        eval_split: Annotated[
            str | None, typer.Option(help="Metadata CSV split to evaluate on (val, test, ...).")
        ] = None,
        device: Device = None,
        gpu_number: GpuNumber = None,
        factory: Factory = None,
        checkpoint: Checkpoint = None,
        input_shape: InputShape = None,
        dynamic_axis: DynamicAxis = None,
        recipe: Annotated[
            str | None,
            typer.Option(help="Recipe file or preset: its data_options and preprocess apply (flags win)."),
        ] = None,
        mean: Mean = None,
        std: Std = None,
        scale: Scale = None,
        image_layout: Annotated[
            str | None,
            typer.Option(
                "--image-layout", help="Image/video data: nchw | nhwc (quantize's --layout) [default: nchw]."
            ),
        ] = None,
        size: Size = None,
    ) -> None:
        """Compare a quantized model with its float model on labeled or unlabeled data."""
        from edgequant.evaluate.table import format_table
        from edgequant.report import render_csv, render_json, write_text

        try:
            from edgequant.commands.recipe_options import recipe_options
            from edgequant.commands.torch_input import to_onnx
            from edgequant.recipe import from_dict

            _check_outputs(
                {"-o": output_json, "--output-csv": output_csv}, overwrite, [float_model, quant_model]
            )  # before the work
            opts, rec, notes = recipe_options(recipe, data_option, "evaluate", ("data_options", "preprocess"))
            flags = preprocess_flags(mean, std, scale, image_layout, size)  # field by field over the recipe's
            pre = from_dict({"preprocess": {**(rec.get("preprocess") or {}), **flags}}).preprocess
            source, more = to_onnx(
                float_model, factory, checkpoint, input_shape, dynamic_axis, ("--data", data)
            )
            notes += more
            for note in [] if is_quiet() else notes:
                Console(stderr=True).print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
            result, out, rows = run_evaluate(
                source, quant_model, data, task, metric=metric, blank=blank, layout=layout,
                output_name=output_name, batch_size=batch_size, max_samples=max_samples, per_layer=per_layer,
                top_k=top_k, layer_samples=layer_samples, latency=latency, runs=runs, threads=threads,
                latency_batch=latency_batch, memory=memory, data_options=opts, eval_split=eval_split,
                device=device, gpu_number=gpu_number, preprocess=pre,
            )  # fmt: skip
            if output_json is not None:
                write_text(output_json, render_json(out))
            if output_csv is not None:
                write_text(output_csv, render_csv(rows, ("metric", "float", "quantized", "delta")))
        except EdgeQuantError as exc:
            _fail(exc)
        console = Console()
        if "preprocessing:" in out["data"]:  # images/video: the preprocessing used and the value range
            console.print(f"evaluation data: {out['data']}", markup=False, highlight=False, soft_wrap=True)
        print_table(console, format_table(result))
        print_table(console, perf_table(rows))
        if per_layer:
            from edgequant.evaluate.layers import LayerReport, NodeError, TensorError
            from edgequant.evaluate.table import format_layer_table

            pl = out["per_layer"]
            rep = LayerReport(pl["samples"], pl["output"], [TensorError(**t) for t in pl["tensors"]],
                              [NodeError(**n) for n in pl["isolated"]], pl["unmatched"])  # fmt: skip
            print_table(console, format_layer_table(rep))
