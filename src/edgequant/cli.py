"""The ``edgequant`` command: a thin typer app over the public API.

Every EdgeQuantError is printed as one line ``error: ...`` on stderr with exit code 2, and nothing
is written: outputs are saved only after the whole run succeeded.  Running out of memory (a
MemoryError, or any error raised while handling one) is one line ``error: out of memory (limit ...)``,
exit 2.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgequant.cli_support import (
    VerbosityGroup,
    apply_verbosity,
    default,
    is_quiet,
    missing_extra,
    print_table,
    shape_from_calibration,
)
from edgequant.commands.executor_options import Address, Cpus, open_executor
from edgequant.commands.preprocess_options import Layout, Mean, Scale, Size, Std, preprocess_flags
from edgequant.errors import (
    EdgeQuantError,
    ModelError,
    RecipeError,
    TargetNotMetError,
    caused_by_memory,
    out_of_memory_error,
)
from edgequant.outputs import check_writable, output_paths
from edgequant.recipe import to_dict
from edgequant.recipe.schema import to_flag_dict

# plain help text: rich markup would swallow "[tf]" and print "edgequant" for "edgequant[tf]"
app = typer.Typer(
    cls=VerbosityGroup,  # -v/-q also after the subcommand's name
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Quantize ONNX models for real, and prove it.",
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from edgequant.result import __version__

        console.print(f"edgequant {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _main_options(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "-v",
            "--verbose",
            count=True,
            help="More log output: -v each stage run and its time (INFO), -vv also each node's decision "
            "(DEBUG); also accepted after the command.",
        ),
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option(
            "-q",
            "--quiet",
            help="No notes, progress or third-party deprecation warnings; results, warnings and errors still "
            "print. Also accepted after the command.",
        ),
    ] = False,
) -> None:
    """Quantize ONNX models for real, and prove it."""
    apply_verbosity(ctx, verbose, quiet)


def fail(exc: EdgeQuantError) -> None:
    if caused_by_memory(exc):  # an error raised while out of memory: the memory is the problem
        exc = out_of_memory_error()
    err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def run_guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except EdgeQuantError as exc:
        fail(exc)


class ProgressBar:
    """A rich progress bar fed by the pipeline's ``progress(stage, done, total)`` callback."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True, disable=not err_console.is_terminal,
        )  # fmt: skip
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


def _load_torch(
    model: Path, factory: str | None, checkpoint: Path | None, input_shape: str | None, calib: str | None
) -> Any:
    from edgequant.commands.torch_input import load_torch
    from edgequant.model.checkpoint import require_torch

    require_torch()  # one line naming the extra when torch is missing
    if input_shape is None:  # a TorchScript file declares no input shape: the first calibration sample's
        input_shape = shape_from_calibration(calib)
    module, examples, notes = load_torch(model, factory, checkpoint, input_shape)
    for note in [] if is_quiet() else notes:  # the checkpoint form found, the config used
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return module, examples


@app.command()
def quantize(
    model: Annotated[
        Path,
        typer.Argument(
            help="ONNX file, a TorchScript file (.pt) with --input-shape, or (with edgequant[tf]) a "
            ".keras/.h5 file or SavedModel directory."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "-o",
            "--out",
            help="Output directory, or a path ending in .onnx for the model file (sidecars beside it).",
        ),
    ],
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace this run's output files if they exist.", show_default="off"
        ),
    ] = False,
    method: Annotated[
        str | None, typer.Option(help="static | dynamic | fp16 | weight-only " + default("method"))
    ] = None,
    weight_bits: Annotated[
        str | None,
        typer.Option(
            help="8, 4, 2, 1 (binary) or ternary (int8 containers below 4) " + default("weight_bits")
        ),
    ] = None,
    weight_centring: Annotated[
        bool | None,
        typer.Option(
            "--weight-centring/--no-weight-centring",
            help="Binary weights: take each sign against its channel's mean. "
            + default("weight_centring", "off"),
        ),
    ] = None,
    act_bits: Annotated[int | None, typer.Option(help="8, 16 or 4 " + default("act_bits"))] = None,
    per_channel: Annotated[
        bool | None,
        typer.Option(
            "--per-channel/--per-tensor",
            help="Weight scales per output channel, or one per tensor. "
            + default("per_channel", "per-channel"),
        ),
    ] = None,
    symmetric: Annotated[
        bool | None,
        typer.Option(
            "--symmetric/--asymmetric",
            help="Activation ranges symmetric around 0, or with a zero point. "
            + default("act_symmetric", "asymmetric"),
        ),
    ] = None,
    act_signed: Annotated[
        str | None, typer.Option(help="Activation type: auto | signed | unsigned " + default("act_signed"))
    ] = None,
    power_of_two: Annotated[
        bool | None,
        typer.Option(
            "--power-of-two/--float-scales",
            help="Scales rounded to powers of two (shift-only hardware), or any float. "
            + default("power_of_two", "float-scales"),
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(
            help="Weight-only: weights in blocks of N along the input axis " + default("block_size")
        ),
    ] = None,
    calib_data: Annotated[
        str | None, typer.Option(help=".npy/.npz, image folder, video, HDF5 or CSV (see docs/data.md).")
    ] = None,
    calib_method: Annotated[
        str | None,
        typer.Option(help="auto | minmax | percentile | entropy | mse | search " + default("calib_method")),
    ] = None,
    percentile: Annotated[
        float | None,
        typer.Option(help="Percentile of |x| kept by --calib-method percentile " + default("percentile")),
    ] = None,
    calib_samples: Annotated[
        int | None, typer.Option(help="Calibration samples to read " + default("calib_samples"))
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Calibration batch size " + default("batch_size"))
    ] = None,
    sampling: Annotated[
        str | None, typer.Option(help="Which samples: first | random (seeded) " + default("sampling"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice " + default("seed"))] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Node name, op type, or re:REGEX to keep float. Repeatable. [default: none]"),
    ] = None,
    skip_first: Annotated[
        bool | None,
        typer.Option(
            "--skip-first/--no-skip-first",
            help="Keep the first compute node float. " + default("skip_first", "no"),
        ),
    ] = None,
    skip_last: Annotated[
        bool | None,
        typer.Option(
            "--skip-last/--no-skip-last",
            help="Keep the last compute node float. " + default("skip_last", "no"),
        ),
    ] = None,
    reduce_range: Annotated[
        str | None,
        typer.Option(help="7-bit weights for CPUs without VNNI: auto | on | off " + default("reduce_range")),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(help="Output name tag [default: from the settings, e.g. int8, int8_pt, w4a8]."),
    ] = None,
    mean: Mean = None,
    std: Std = None,
    scale: Scale = None,
    layout: Layout = None,
    size: Size = None,
    data_option: Annotated[
        list[str] | None, typer.Option(help="Data format option KEY=VALUE, e.g. video_frames=32. Repeatable.")
    ] = None,
    target_sqnr: Annotated[
        float | None,
        typer.Option(
            metavar="DB",
            help="Static: keep the most sensitive nodes float until the output SQNR reaches DB "
            + default("target_sqnr_db", "none: no search"),
        ),
    ] = None,
    max_float_nodes: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Cap for --target-sqnr [default: 10 % of the quantized compute nodes]."
        ),
    ] = None,
    allow_synthetic: Annotated[
        bool | None,
        typer.Option(
            "--allow-synthetic/--no-allow-synthetic",
            help="Static without --calib-data: calibrate on random inputs (refused otherwise) "
            + default("allow_synthetic", "no-allow-synthetic"),
        ),
    ] = None,
    check_samples: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Samples held back from calibration for the run check " + default("check_samples"),
        ),
    ] = None,
    bias_correction: Annotated[
        bool | None,
        typer.Option(
            "--bias-correction/--no-bias-correction",
            help="Static: fold the per-channel output mean shift of quantized Conv/Gemm into their biases "
            + default("bias_correction", "no-bias-correction"),
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Hardware target profile: cpu, ti-npu, vitis-dpu, cmsis-nn, akida, akida1 (.h5); tvm: Apache TVM "
            + default("target"),
        ),
    ] = None,
    tune_trials: Annotated[
        int | None,
        typer.Option(metavar="N", help="--target tvm: MetaSchedule tuning trials " + default("tune_trials")),
    ] = None,
    tune_budget_s: Annotated[
        float | None,
        typer.Option(
            metavar="S",
            help="--tune-trials: wall-time budget in seconds; tuning runs in rounds and starts no round after "
            "it " + default("tune_budget_s"),
        ),
    ] = None,
    algorithm: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="Static: run a pass (cle, smoothquant, adaround), in order. Repeatable. [default: none]",
        ),
    ] = None,
    keep_worse_passes: Annotated[
        bool | None,
        typer.Option(
            "--keep-worse-passes/--no-keep-worse-passes",
            help="Keep a pass that lowers the held-out output SQNR by more than 0.05 dB (reverted otherwise) "
            + default("keep_worse_passes", "no-keep-worse-passes"),
        ),
    ] = None,
    fix: Annotated[
        bool | None,
        typer.Option(
            "--fix/--no-fix",
            help="Apply the target's exact fixes (zero-padded channels, split tall kernels) "
            + default("fix", "no-fix"),
        ),
    ] = None,
    act16_below_db: Annotated[
        float | None,
        typer.Option(
            "--act16-below-db",
            metavar="DB",
            help="Static: 16-bit activations on tensors whose own 8-bit SQNR is below DB (transformers: 25) "
            + default("act16_below_db", "none: 8-bit everywhere"),
        ),
    ] = None,
    hoist_gru: Annotated[
        bool | None,
        typer.Option(
            "--hoist-gru",
            help="Static/dynamic: each GRU's input projection over the sequence becomes an int8 MatMul "
            "(recurrence float; measured slower than float in ORT, see README) "
            + default("hoist_gru", "off"),
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(
            metavar="auto|all|matmul-inputs",
            help="Static activation Q/DQ: all ops, or only MatMul/Gemm/Conv inputs (auto: that on transformers) "
            + default("placement"),
        ),
    ] = None,
    format_: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="qdq | ti-npu-int: with --target ti-npu, also write TI's integer-only NPU form "
            "<name>_<tag>_ti-npu-int.onnx (no DequantizeLinear inside), checked against the QDQ model "
            + default("format"),
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="YAML recipe file, or a preset name (int8-static, w4a8, ...); flags given here override it."
        ),
    ] = None,
    print_recipe: Annotated[
        bool,
        typer.Option(
            "--print-recipe", help="Print the effective recipe (YAML) before the run.", show_default="off"
        ),
    ] = False,
    factory: Annotated[str | None, typer.Option(help="PyTorch 'package.module:factory'.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint for --factory: file, or run dir with args.json/config.")
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            help="PyTorch example input shape, e.g. 1x3x32x32 [default: the first sample of a .npy/.npz --calib-data]."
        ),
    ] = None,
    dynamic_axis: Annotated[
        list[str] | None,
        typer.Option(help="PyTorch export: INPUT:AXIS made dynamic (e.g. input:1). Repeatable."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="cpu, cuda or cuda:N: ONNX Runtime's provider (no CPU fallback) [default: cpu]."),
    ] = None,
    gpu_number: Annotated[int | None, typer.Option(help="Alias for --device cuda:N.")] = None,
    executor: Annotated[
        str,
        typer.Option(help="local, or ray: the --target-sqnr per-node runs as Ray tasks (edgequant[ray])."),
    ] = "local",
    ray_address: Address = None,
    ray_cpus: Cpus = None,
) -> None:
    """Quantize MODEL and write <name>_<tag>.onnx, its report (.json) and plan (.plan.json) into OUT."""
    from edgequant.pipeline import quantize as run
    from edgequant.pipeline import resolve_recipe

    flags = {
        "method": method, "weight_bits": int(weight_bits) if weight_bits and weight_bits.isdigit() else weight_bits,
        "weight_centring": weight_centring, "act_bits": act_bits, "per_channel": per_channel,
        "act_symmetric": symmetric, "act_signed": act_signed, "power_of_two": power_of_two,
        "block_size": block_size, "calib_data": calib_data, "calib_method": calib_method,
        "percentile": percentile, "calib_samples": calib_samples, "batch_size": batch_size,
        "sampling": sampling, "seed": seed, "exclude": exclude or None, "skip_first": skip_first,
        "skip_last": skip_last, "reduce_range": reduce_range, "tag": tag,
        "target_sqnr_db": target_sqnr, "max_float_nodes": max_float_nodes, "bias_correction": bias_correction,
        "target": target, "fix": fix, "format": format_,
        "algorithms": algorithm or None, "keep_worse_passes": keep_worse_passes,
        "tune_trials": tune_trials, "tune_budget_s": tune_budget_s,
        "allow_synthetic": allow_synthetic, "check_samples": check_samples,
        "act16_below_db": act16_below_db, "hoist_gru": hoist_gru, "placement": placement,
    }  # fmt: skip
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    try:
        if data_option:
            overrides["data_options"] = parse_options(data_option)
        if dynamic_axis:
            from edgequant.commands.torch_input import parse_dynamic_axes

            overrides["dynamic_axes"] = parse_dynamic_axes(dynamic_axis)
        source: Any = model
        examples = None
        _refuse_ignored_model_options(model, factory, input_shape)
        pre = preprocess_flags(mean, std, scale, layout, size)
        if pre:  # merged into the recipe file's preprocess mapping, field by field
            overrides["preprocess"] = {**to_dict(resolve_recipe(recipe, {}))["preprocess"], **pre}
        resolved = resolve_recipe(recipe, overrides)
        if print_recipe:
            typer.echo(yaml.safe_dump(to_flag_dict(resolved), sort_keys=False, width=2**20), nl=False)
        planned = output_paths(out, model.stem, resolved.default_tag)  # refused now, not after the work
        check_writable(planned.folder, planned.files(with_float=False), overwrite=overwrite)
        if factory or model.suffix in (".pt", ".pth", ".ts", ".torchscript"):
            source, examples = _load_torch(
                model, factory, checkpoint, input_shape, overrides.get("calib_data")
            )
        runtime = None
        if device is not None or gpu_number is not None:
            from edgequant.runtime.device import runtime_for

            runtime = runtime_for(device, gpu_number)
        if executor != "local" and resolved.target_sqnr_db is None:
            raise RecipeError(
                f"--executor {executor} runs the --target-sqnr search's per-node runs, and no --target-sqnr "
                "was given; the option would be ignored.",
                "add --target-sqnr DB, or drop --executor.",
            )
        with open_executor(executor, ray_address, ray_cpus), ProgressBar() as bar:
            result = run(
                source, None, recipe, example_inputs=examples, progress=bar, runtime=runtime, **overrides
            )
        if examples is not None:  # a PyTorch file: outputs named after its stem (net.pt -> net_int8.onnx)
            result.name = model.stem
        paths = result.save(out, overwrite=overwrite)
    except TargetNotMetError as exc:  # the best model reached is written; the exit code says it fell short
        if exc.result is None:
            fail(exc)
        best = exc.result.save(out, overwrite=overwrite)
        print_summary(exc.result.report, best.model)
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except EdgeQuantError as exc:
        fail(exc)
    except ModuleNotFoundError as exc:
        dep = missing_extra(exc)
        if dep is None:
            raise
        fail(dep)
    print_summary(result.report, paths.model)


def _refuse_ignored_model_options(model: Path, factory: str | None, input_shape: str | None) -> None:
    """An option that this MODEL would not read is refused, naming it."""
    torch_file = model.suffix in (".pt", ".pth", ".ts", ".torchscript")
    if input_shape is not None and not (factory or torch_file):
        raise RecipeError(
            f"--input-shape {input_shape} is given but '{model}' is not a PyTorch model, whose export is the "
            "only thing the shape is for; the option would be ignored.",
            "drop --input-shape (an ONNX or Keras model carries its input shapes).",
        )
    if factory and not model.exists() and (model.suffix or len(model.parts) > 1):  # a bare name names it
        raise ModelError(
            f"--factory {factory} is given with MODEL '{model}', which does not exist.",
            "pass the path of the TorchScript/.pt file the factory belongs to, or check the spelling.",
        )


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["video_frames=32", "csv_columns=a,b"]`` -> ``{"video_frames": 32, "csv_columns": ["a", "b"]}``."""
    from edgequant.recipe.flags import key_values

    return key_values(items)


def print_summary(report: dict[str, Any], model_path: Path) -> None:
    from edgequant.evaluate.method_run import node_counts

    sizes = report["sizes"]
    t = Table(title=f"{report['method']} -> {model_path}", show_header=False)
    t.add_row("float size", f"{sizes['float_bytes'] / 1e6:.3f} MB")
    t.add_row("quantized file", f"{sizes['quantized_bytes'] / 1e6:.3f} MB")
    theory = (
        " theoretical: 1/2-bit weights are stored as int8 in the file"
        if sizes.get("packed_theoretical")
        else ""
    )
    t.add_row("packed size", f"{sizes['packed_bytes'] / 1e6:.3f} MB ({sizes['compression_ratio']}x{theory})")
    t.add_row("nodes", node_counts(report["nodes"]))
    t.add_row(
        "integer weights (in the file)", f"{report['integer_weights']} of {report['planned_weights']} planned"
    )
    if report.get("float_weights"):
        t.add_row("float weights", str(len(report["float_weights"])))
    for name, db in report["check"]["output_sqnr_db"].items():
        t.add_row(f"SQNR vs float ({name})", f"{db} dB")
    chain = report.get("toolchain")
    if chain:
        files = report.get("files", {}).get("toolchain_artifacts", [])
        vs = ", ".join(
            f"{k} {'identical' if v is None else f'{v} dB'}" for k, v in chain["sqnr_db_vs_float"].items()
        )
        t.add_row(f"{chain['toolchain']} artifact", f"{', '.join(files)} (vs float: {vs})")
    torch_file = report.get("files", {}).get("torch_model")
    if torch_file:  # a PyTorch input's own quantized model (edgequant.torch.quantized_outputs)
        tq = report.get("torch", {})
        sq: dict[str, Any] = tq.get("output_sqnr_db") or {"vs ONNX": tq.get("sqnr_db_vs_onnx")}
        t.add_row("PyTorch model", f"{torch_file} (SQNR {', '.join(f'{k} {v} dB' for k, v in sq.items())})")
    from edgequant.check import describe

    t.add_row("checked on", describe(report["check"]))
    t.add_row("time", f"{report['seconds']['total']} s")
    print_table(console, t)
    calib = report.get("calibration") or {}
    if calib.get("source"):  # the data as fed: preprocessing and the input value range
        console.print(f"calibration data: {calib['source']}", markup=False, highlight=False, soft_wrap=True)
    if not is_quiet():
        for n in report.get("notes", []):
            err_console.print(f"note: {n}", markup=False, highlight=False)
    for w in report["warnings"]:  # -q hides notes, never a warning (a collapse is not a silent success)
        err_console.print(f"warning: {w}", markup=False, highlight=False)


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="ONNX file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show inputs, outputs, an op histogram, the parameter count and the quantizable nodes."""
    from edgequant.model import load_model, summarize

    info = run_guarded(lambda: summarize(load_model(model)))
    if as_json:
        console.print_json(json.dumps(info))
        return
    console.print(f"[bold]{model}[/bold]  opset {info['opset']}  {info['producer']}")
    io = Table("", "name", "dtype", "shape")
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            io.add_row(kind[:-1], v["name"], v["dtype"], "x".join(map(str, v["shape"])) or "?")
    print_table(console, io)
    ops = Table("op", "count")
    for op, n in info["ops"].items():
        ops.add_row(op, str(n))
    print_table(console, ops)
    console.print(
        f"parameters: {info['parameters']:,}  nodes: {info['nodes']} (in subgraphs: {info['subgraph_nodes']})"
    )
    q = info["quantizable_nodes"]
    console.print(
        f"quantizable nodes ({len(q)}): " + ", ".join(f"{n['name']} [{n['op_type']}]" for n in q[:40])
    )


for _name in ("demo", "evaluate", "compare", "serve", "targets", "toolchain", "check", "qat", "sweep"):
    importlib.import_module(f"edgequant.commands.{_name}").register(app)


def main() -> None:
    try:
        app()
    except EdgeQuantError as exc:  # raised outside a command's own guard
        shown = out_of_memory_error() if caused_by_memory(exc) else exc
        err_console.print(f"error: {shown}", markup=False, soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # an optional extra that a command needs is not installed
        dep = missing_extra(exc)
        if dep is None:
            raise
        err_console.print(f"error: {dep}", markup=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # out of memory anywhere (or an error raised while handling it): one line
        if not caused_by_memory(exc):
            raise
        err_console.print(f"error: {out_of_memory_error()}", markup=False, soft_wrap=True)
        sys.exit(2)
