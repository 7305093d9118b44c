"""``edgequant quantize MODEL -o OUT``: one quantized model, its report and plan, and a summary table.

Exit 0 when written; exit 1 when ``--target-sqnr`` was not reached (the best model reached is written and
the summary printed); exit 2 on bad input, with nothing written.  The options are declared in
``commands.quantize_options`` (this command's own) and ``commands.shared_options``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from edgequant.cli_support import is_quiet, missing_extra, print_table, shape_from_calibration
from edgequant.commands import quantize_options as q
from edgequant.commands.executor_options import Address, Cpus, open_executor
from edgequant.commands.preprocess_options import Layout, Mean, Scale, Size, Std, preprocess_flags
from edgequant.commands.shared_options import Checkpoint, Device, DynamicAxis, Factory, GpuNumber
from edgequant.errors import EdgeQuantError, ModelError, RecipeError, TargetNotMetError
from edgequant.outputs import check_writable, output_paths
from edgequant.recipe import to_dict
from edgequant.recipe.schema import to_flag_dict


def _load_torch(
    model: Path, factory: str | None, checkpoint: Path | None, input_shape: str | None, calib: str | None
) -> Any:
    from edgequant.cli import err_console
    from edgequant.commands.torch_input import load_torch
    from edgequant.model.checkpoint import require_torch

    require_torch()  # one line naming the extra when torch is missing
    if input_shape is None:  # a TorchScript file declares no input shape: the first calibration sample's
        input_shape = shape_from_calibration(calib)
    module, examples, notes = load_torch(model, factory, checkpoint, input_shape)
    for note in [] if is_quiet() else notes:  # the checkpoint form found, the config used
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return module, examples


def register(app: typer.Typer) -> None:
    @app.command()
    def quantize(
        model: q.Model,
        out: q.Out,
        overwrite: q.Overwrite = False,
        method: q.Method = None,
        weight_bits: q.WeightBits = None,
        weight_centring: q.WeightCentring = None,
        act_bits: q.ActBits = None,
        per_channel: q.PerChannel = None,
        symmetric: q.Symmetric = None,
        act_signed: q.ActSigned = None,
        power_of_two: q.PowerOfTwo = None,
        block_size: q.BlockSize = None,
        calib_data: q.CalibData = None,
        calib_method: q.CalibMethod = None,
        percentile: q.Percentile = None,
        calib_samples: q.CalibSamples = None,
        batch_size: q.BatchSize = None,
        sampling: q.Sampling = None,
        seed: q.Seed = None,
        exclude: q.Exclude = None,
        weight_8bit: q.Weight8bit = None,
        skip_first: q.SkipFirst = None,
        skip_last: q.SkipLast = None,
        reduce_range: q.ReduceRange = None,
        tag: q.Tag = None,
        mean: Mean = None,
        std: Std = None,
        scale: Scale = None,
        layout: Layout = None,
        size: Size = None,
        data_option: q.DataOption = None,
        target_sqnr: q.TargetSqnr = None,
        max_float_nodes: q.MaxFloatNodes = None,
        allow_synthetic: q.AllowSynthetic = None,
        check_samples: q.CheckSamples = None,
        bias_correction: q.BiasCorrection = None,
        target: q.Target = None,
        tune_trials: q.TuneTrials = None,
        tune_budget_s: q.TuneBudgetS = None,
        algorithm: q.Algorithm = None,
        keep_worse_passes: q.KeepWorsePasses = None,
        fix: q.Fix = None,
        act16_below_db: q.Act16BelowDb = None,
        hoist_gru: q.HoistGru = None,
        placement: q.Placement = None,
        format_: q.Format = None,
        recipe: q.Recipe = None,
        print_recipe: q.PrintRecipe = False,
        factory: Factory = None,
        checkpoint: Checkpoint = None,
        input_shape: q.InputShape = None,
        dynamic_axis: DynamicAxis = None,
        device: Device = None,
        gpu_number: GpuNumber = None,
        executor: q.Executor = "local",
        ray_address: Address = None,
        ray_cpus: Cpus = None,
    ) -> None:
        """Quantize MODEL and write <name>_<tag>.onnx, its report (.json) and plan (.plan.json) into OUT."""
        from edgequant.cli import ProgressBar, err_console, fail, parse_options
        from edgequant.pipeline import quantize as run
        from edgequant.pipeline import resolve_recipe

        flags = {
            "method": method, "weight_bits": q.weight_bits_value(weight_bits),
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
            "act16_below_db": q.act16_value(act16_below_db), "hoist_gru": hoist_gru, "placement": placement,
            "weight_8bit": weight_8bit or None,
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
            check_writable(
                planned.folder, planned.files(with_float=False), overwrite=overwrite, inputs=[model]
            )
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
        except (
            TargetNotMetError
        ) as exc:  # the best model reached is written; the exit code says it fell short
            if exc.result is None:
                fail(exc)
            best = exc.result.save(out, overwrite=overwrite)
            print_summary(exc.result.report, best.model, said=exc.detail)  # the error line says it once
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


def print_summary(report: dict[str, Any], model_path: Path, said: str = "") -> None:
    """The summary table of a quantize run (sizes, nodes, SQNR, check, time), then its notes and warnings
    (but the warning ``said``, which the error line after the summary prints)."""
    from edgequant.cli import console, err_console
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
            if n not in report["warnings"]:  # printed once, as the warning below
                err_console.print(f"note: {n}", markup=False, highlight=False)
    for w in report["warnings"]:  # -q hides notes, never a warning (a collapse is not a silent success)
        if w == said:
            continue
        err_console.print(f"warning: {w}", markup=False, highlight=False)
