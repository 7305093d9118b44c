"""The whole flow, in one function: model + calibration data + recipe -> a QDQ model that runs.

model   -> load, check ORT can run it (``intake``), repair (constants, constant Ifs, stale shapes)
recipe  -> plan (per tensor: bits, symmetry, granularity; per node: decision + reason)   (``planner``)
data    -> streaming statistics of the planned activations -> ranges (``check_samples`` held back;
           ``calibration``); fp16 and dynamic need none (``methods``)
plan + ranges -> QDQ model -> loaded back in ORT (in a child process) and compared with float on the
                 held-back samples (``edgequant.check``)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgequant import algorithms, methods, planner, toolchains
from edgequant.algorithms import act16, float_effect, weight_8bit
from edgequant.calibration import DataLike, Progress, require_data
from edgequant.calibration import calib_source as _source
from edgequant.calibration import calibrate as _calibrate
from edgequant.check import run_check
from edgequant.data.declared import with_declared
from edgequant.export import export_qdq, round_trips
from edgequant.export.nbits import eight_bit_weights, int8_gather_tables, weight_only_kernels
from edgequant.export.opset import raise_for_plan
from edgequant.export.sizes import disk_bytes
from edgequant.intake import (
    ModelLike,
    hoist_gru,
    is_torch_module,
    load_input_model,
    named_passes,
    require_batch_first,
    require_loadable,
    require_pass_data,
    require_recipe_calib_data,
    resolve_recipe,
)
from edgequant.model import prepare
from edgequant.model.io import serialized_size
from edgequant.model.stream_calib import carry_states
from edgequant.plan import QuantPlan
from edgequant.planning import specs
from edgequant.planning.mixed import named as named_8bit
from edgequant.planning.mixed import to_eight
from edgequant.recipe import Recipe
from edgequant.result import QuantResult, build_report
from edgequant.runtime import OrtRuntime, detect
from edgequant.runtime.cpu import CpuFeatures
from edgequant.targets.adapt import adapt as adapt_to_target
from edgequant.targets.check import check_model
from edgequant.toolchains.forms import vendor_forms

__all__ = ["DataLike", "ModelLike", "Progress", "load_input_model", "quantize", "resolve_recipe"]

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """What one ``quantize`` call carries from step to step; each step reads and updates it."""

    model: ModelLike  # as the caller gave it
    recipe: Recipe
    runtime: OrtRuntime
    cpu: CpuFeatures
    calibration: DataLike
    reference: onnx.ModelProto | Path  # the user's float model, as ORT loads it for the check
    float_model: onnx.ModelProto  # repaired; passes change weights in a copy
    result_float: onnx.ModelProto  # the float model the result carries
    name: str
    imported: dict[str, Any] | None
    input_bytes: int
    notes: list[str]
    warnings: list[str]
    seconds: dict[str, float]
    passes: algorithms.Context
    calib_info: dict[str, Any] | None = None
    act16: dict[str, Any] | None = None
    float_effect: dict[str, Any] | None = None  # each float-kept / 16-bit kind's measured effect
    tag: str = ""  # the output tag, from the recipe as asked (before a target adapts it)


def quantize(
    model: ModelLike,
    calibration: DataLike = None,
    recipe: Recipe | dict[str, Any] | str | Path | None = None,
    *,
    example_inputs: Any = None,
    runtime: OrtRuntime | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> QuantResult:
    """Quantize ``model`` as ``recipe`` says; the result's model is checked to run in ORT."""
    t0 = time.perf_counter()
    run = _start(model, calibration, recipe, overrides, example_inputs, runtime, t0)
    log.info(
        "loaded '%s' (%d nodes) and repaired it in %.3f s; method %s, target %s, output tag %s",
        run.name, len(run.float_model.graph.node), run.seconds["load"], run.recipe.method, run.recipe.target,
        run.tag,
    )  # fmt: skip
    excluded = planner.excluded_nodes(run.float_model, run.recipe)  # a pattern matching no node: refused
    t1 = time.perf_counter()
    if run.recipe.method == "fp16":
        quantized, plan = methods.fp16(run.float_model, run.recipe, excluded)
    elif run.recipe.method == "dynamic":
        quantized, plan, mostly_float = methods.dynamic(run.float_model, run.recipe, run.cpu, excluded)
        run.warnings += mostly_float
    else:  # plan, passes before ranges, calibration, QDQ export, passes after ranges
        quantized, plan = _static(run, recipe, overrides, progress)
    log.info(
        "%s: %d nodes quantized, %d kept float, in %.3f s",
        run.recipe.method, len(plan.quantized_nodes), len(plan.skipped_nodes), time.perf_counter() - t1,
    )  # fmt: skip
    for d in plan.nodes:
        log.debug("node %s (%s): %s", d.node, d.op_type, "quantized" if d.quantized else d.reason)
    compliance = check_model(quantized, run.recipe.target) if run.recipe.method == "static" else None
    t2 = time.perf_counter()
    check = _check(run, quantized, plan)
    log.info("check: output SQNR %s dB vs float (%s samples), in %.3f s", check.get("output_sqnr_db"),
             check.get("kind"), time.perf_counter() - t2)  # fmt: skip
    artifacts, ti_int, toolchain = vendor_forms(
        quantized, run.recipe, run.model, run.float_model, run.calibration, run.runtime, run.reference
    )
    if toolchain:
        run.seconds["toolchain"] = sum(toolchain.get("seconds", {}).values())
    run.seconds["total"] = time.perf_counter() - t0
    return _result(run, quantized, plan, check, artifacts, toolchain, compliance, ti_int)


def _start(
    model: ModelLike,
    calibration: DataLike,
    recipe_arg: Recipe | dict[str, Any] | str | Path | None,
    overrides: dict[str, Any],
    example_inputs: Any,
    runtime: OrtRuntime | None,
    t0: float,
) -> _Run:
    """Recipe, runtime and the repaired float model; refusals that need no work come first."""
    recipe_notes: list[str] = []  # e.g. a TI config naming a device without an NPU
    asked = resolve_recipe(recipe_arg, overrides, recipe_notes)
    require_pass_data(asked, recipe_arg, overrides, calibration)  # adaround without data: before any work
    require_recipe_calib_data(asked, recipe_arg, overrides, calibration)  # a recipe's calib_data: exists
    toolchains.check_source(asked.target, model)  # the input a vendor route needs: the first refusal
    recipe, target_notes = adapt_to_target(asked)
    target_notes = recipe_notes + target_notes
    runtime = runtime or OrtRuntime(allow_spinning=False)
    if recipe.target in toolchains.TARGETS:  # before any work: a missing toolchain is a one-line refusal
        toolchains.require(toolchains.TARGETS[recipe.target])
        toolchains.check_recipe(recipe.target, recipe.weight_bits, recipe.act_bits, source=model)
    onnx_model, name, imported = load_input_model(model, example_inputs, recipe.dynamic_axes)
    recipe, declared_notes = with_declared(
        recipe, onnx_model, calibration if calibration is not None else recipe.calib_data
    )
    # an ONNX file is the user's float model: ORT reads it from disk (external data included) for the
    # load check and the final comparison, and the loaded copy is repaired in place (one copy of the
    # weights in memory, which matters above 2 GB)
    on_disk = isinstance(model, str | Path) and imported is None
    reference: onnx.ModelProto | Path = Path(model) if on_disk else onnx_model
    require_loadable(runtime, reference)
    input_bytes = disk_bytes(Path(model)) if on_disk else serialized_size(onnx_model)  # sizes: vs this
    float_model, notes = prepare(onnx_model, copy=not on_disk)
    notes.extend(target_notes)
    notes += declared_notes
    del onnx_model
    cpu = detect()
    warnings: list[str] = []
    if recipe.target != "cpu" and recipe.reduce_range == "off" and cpu.needs_reduce_range:
        warnings.append(
            f"target '{recipe.target}' gets full 8-bit weights, but ONNX Runtime on this CPU ({cpu.describe()}, no "
            "VNNI) can saturate their int8 products: the SQNR measured here understates the device's."
        )
    seconds: dict[str, float] = {"load": time.perf_counter() - t0}
    passes = algorithms.Context(recipe, runtime, list, [])  # no passes (fp16, dynamic): replaced for static
    if calibration is None and recipe.calib_data is not None:
        calibration = recipe.calib_data
    require_batch_first(float_model, calibration)  # data cut along a time-major input's time axis: refused
    if recipe.hoist_gru:  # each GRU input projection X·Wᵀ -> a MatMul before the GRU (exact in float)
        float_model = hoist_gru(float_model, notes)
    return _Run(
        model, recipe, runtime, cpu, calibration, reference, float_model, float_model, name, imported,
        input_bytes, notes, warnings, seconds, passes, tag=asked.default_tag,
    )  # fmt: skip


def _static(
    run: _Run,
    recipe_arg: Recipe | dict[str, Any] | str | Path | None,
    overrides: dict[str, Any],
    progress: Progress | None,
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Static and weight-only: plan, passes before ranges, calibration, QDQ export, passes after ranges."""
    fixes: list[str] = []
    if run.recipe.fix:  # exact alignment fixes on the float graph; the check below compares with the original
        from edgequant.model.target_fix import apply_fixes
        from edgequant.targets import get as get_target

        run.float_model, fixes = apply_fixes(run.float_model, get_target(run.recipe.target))
    plan = planner.resolve(run.float_model, run.recipe, run.cpu)
    plan = int8_gather_tables(run.float_model, plan) if run.recipe.method == "weight-only" else plan
    w8 = run.recipe.weight_8bit  # mixed 4/8, named; static plans them in the planner (planning/mixed.py)
    if w8 and run.recipe.method == "weight-only" and not weight_8bit.is_auto(w8):
        plan = eight_bit_weights(run.float_model, plan, named_8bit(run.float_model, w8))
    run.recipe = recipe = planner.with_default_passes(run.float_model, run.recipe, run.cpu)  # transformers
    plan.notes.extend(fixes)
    unblocked = [e.name for e in plan.tensors.values() if e.note.startswith(planner.UNBLOCKED)]
    if unblocked:
        run.warnings.append(
            f"--block-size {recipe.block_size}: {len(unblocked)} weight(s) are not blocked ("
            + ", ".join(unblocked[:5]) + ("..." if len(unblocked) > 5 else "")
            + "); each one's reason is in the plan."
        )  # fmt: skip
    run.float_model, plan = raise_for_plan(run.float_model, plan, run.notes)
    if plan.activations() or algorithms.steps(recipe, "after_ranges"):
        require_data(run.calibration, recipe)
        run.calibration, carried = carry_states(run.float_model, run.calibration, run.runtime)  # zero states
        run.notes += [carried] if carried else []
    run.result_float = run.float_model
    run.passes = passes = algorithms.context(
        recipe,
        run.runtime,
        lambda r: _source(run.calibration, run.float_model, r),
        run.calibration is None,
        named_passes(recipe_arg, overrides) if recipe.algorithms else (),
    )  # fmt: skip  (the passes are judged on samples neither calibration nor the check reads)
    auto8 = weight_8bit.is_auto(recipe.weight_8bit)  # mixed 4/8 by measured sensitivity
    if auto8 and recipe.method == "static":  # before AdaRound & co., which round each layer on its grid
        run.float_model, plan, passes.sections["weight_8bit"] = weight_8bit.choose(
            run.result_float, run.float_model, plan, passes, to_eight(recipe, run.cpu)
        )
        run.seconds["weight_8bit"] = passes.sections["weight_8bit"]["seconds"]
    # each pass asks for statistics, then applies them (algorithms/); before ranges, on float weights;
    # a reshaping pass (cle) is judged after the rounding pass (adaround) that follows it
    steps = algorithms.steps(recipe, "before_ranges")
    run.float_model, plan = algorithms.run_before(steps, run.float_model, plan, passes)
    if auto8 and recipe.method == "weight-only":  # after GPTQ & co.
        run.float_model, plan, passes.sections["weight_8bit"] = weight_8bit.choose(
            run.result_float, run.float_model, plan, passes
        )
        run.seconds["weight_8bit"] = passes.sections["weight_8bit"]["seconds"]
    if plan.activations():
        t1 = time.perf_counter()
        source = _source(run.calibration, run.float_model, recipe)
        if getattr(source.stats, "synthetic", False):
            run.warnings.append(
                "activation ranges came from SYNTHETIC random data (--allow-synthetic), not real inputs."
            )
        plan, run.calib_info = _calibrate(
            run.float_model, plan, source, recipe, run.runtime, progress, run.calibration, run.result_float
        )
        below_db = act16.threshold(recipe, run.result_float, run.cpu)  # auto: 25 dB on transformers
        if below_db is not None:  # 16 bits where 8 cannot hold the tensor's outliers
            batch = next(iter(_source(run.calibration, run.float_model, recipe)))
            auto = recipe.act16_below_db == "auto"
            plan, run.act16 = act16.promote_sensitive(
                run.float_model, plan, batch, run.runtime, below_db, auto
            )
            run.float_model, plan = raise_for_plan(run.float_model, plan, run.notes)
        run.seconds["calibration"] = time.perf_counter() - t1
        log.info("calibration (%s): %d activation ranges in %.3f s", recipe.calib_method,
                 len(plan.activations()), run.seconds["calibration"])  # fmt: skip
    t2 = time.perf_counter()
    calibrated = plan
    quantized, plan = export_qdq(run.float_model, plan)
    if round_trips.applies(recipe) and calibrated.activations():
        calibrated, dropped = round_trips.drop_round_trips(calibrated, quantized, run.runtime.providers)
        if dropped:  # Q/DQ pairs ORT would run between two float ops (export/round_trips.py)
            quantized, plan = export_qdq(run.float_model, calibrated)
            plan.notes.append(round_trips.note(run.float_model, dropped))
    if recipe.method == "weight-only":  # MatMulNBits where it applies; a note where ORT dequantizes per run
        quantized, plan = weight_only_kernels(quantized, plan, recipe.nbits_accuracy_level)
        run.warnings += [n for n in plan.notes if n.startswith("slower than float")]
    run.seconds["export"] = time.perf_counter() - t2
    log.info("QDQ export: %d nodes in %.3f s", len(quantized.graph.node), run.seconds["export"])
    if calibrated.activations():  # what the float / 16-bit activations are worth, on this export
        run.float_effect = float_effect.measure(
            run.float_model, calibrated, passes, lambda r: _source(run.calibration, run.float_model, r),
            quantized,
        )  # fmt: skip
        if run.float_effect is not None:
            run.seconds["float_effect"] = run.float_effect["seconds"]
    state = algorithms.Quantized(run.float_model, calibrated, quantized, plan, reference=run.float_model)
    for step in algorithms.steps(recipe, "after_ranges"):  # on the QDQ model (bias correction, ...)
        state = algorithms.run_after(step, state, passes)
    quantized, plan = state.model, state.plan
    run.notes += passes.notes
    run.warnings += passes.warnings  # a pass the user named was reverted
    run.seconds.update({row["pass"]: row["seconds"] for row in passes.rows})
    if recipe.method == "static":  # biases beyond the target's bias width: re-scaled where exact
        from edgequant.export.bias_fit import fit_biases
        from edgequant.targets import get as get_target

        quantized, bias_notes = fit_biases(quantized, plan, get_target(recipe.target))
        plan.notes.extend(bias_notes)
    if round_trips.applies(recipe):  # Q/DQ pairs that nothing reads: ORT would run them for nothing
        plan.notes.extend(round_trips.unread_note(round_trips.drop_unread(quantized)))
    # the final plan's float-kernel note (issue #16 section 5): 16-bit tensors chosen after calibration put Convs
    # in float, and a pass (target_sqnr) may have kept nodes float that the planner's note named
    specs.refresh_float_kernel_note(run.float_model, plan, recipe)
    return quantized, plan


def _check(run: _Run, quantized: onnx.ModelProto, plan: QuantPlan) -> dict[str, Any]:
    """The quantized model loaded back in ORT and compared with float on the held-back samples."""
    check = run_check(
        run.runtime, run.reference, quantized, run.calibration, run.recipe,
        calibrated=run.calib_info is not None or bool(run.passes.rows), float_proto=run.float_model, plan=plan,
    )  # fmt: skip
    if check["kind"] == "synthetic":
        run.warnings.append(
            "the check ran on SYNTHETIC random inputs (no data was given): its SQNR says nothing about real data."
        )
    if check.get("note"):
        run.warnings.append(check["note"])
    if check.get("collapse"):
        run.warnings.append(check["collapse"]["warning"])
    return check


def _result(
    run: _Run,
    quantized: onnx.ModelProto,
    plan: QuantPlan,
    check: dict[str, Any],
    artifacts: dict[str, bytes],
    toolchain: dict[str, Any] | None,
    compliance: dict[str, Any] | None,
    ti_int: dict[str, Any] | None,
) -> QuantResult:
    """The QuantResult with its report; raises TargetNotMetError (carrying it) when a target SQNR was
    not reached."""
    recipe, passes = run.recipe, run.passes
    result = QuantResult(
        quantized,
        run.result_float,
        plan,
        recipe,
        run.name,
        run.tag or recipe.default_tag,
        save_float=bool(run.imported),
        artifacts=artifacts,
        input_bytes=run.input_bytes,
        source=Path(run.model) if isinstance(run.model, str | Path) else None,
    )
    result.report = build_report(
        result,
        seconds=run.seconds,
        calibration=run.calib_info,
        notes=run.notes,
        warnings=run.warnings,
        cpu=run.cpu.describe(),
        check=check,
    )
    result.report["providers"] = list(run.runtime.providers)  # what calibration and the check ran on
    if run.imported:
        result.report["import"] = run.imported
    if toolchain:
        result.report["toolchain"] = toolchain
    if run.act16:
        result.report["act16"] = run.act16
    if run.float_effect:
        result.report["float_effect"] = run.float_effect
    result.report.update(passes.sections)  # e.g. bias_correction, sensitivity (mixed_precision)
    if passes.rows:
        result.report["algorithms"] = passes.rows
    if compliance is not None:  # per-layer findings against the target's rules, MAC/param shares
        result.report["compliance"] = compliance
    if ti_int is not None:
        result.report["ti_npu_int"] = ti_int
    if run.imported and is_torch_module(run.model):  # <stem>.pth (static) / .pt (torch.ao) beside the ONNX
        from edgequant.torch.quantized_outputs import attach

        attach(result, run.model, run.calibration, run.runtime)  # type: ignore[arg-type]
        if result.report["torch"].get("not_written"):
            result.report["notes"].append(f"no PyTorch file: {result.report['torch']['not_written']}")
    sensitivity = passes.sections.get("sensitivity")
    if sensitivity and not sensitivity["met"]:  # the best model reached goes with the error (CLI writes it)
        from edgequant.errors import TargetNotMetError

        result.report["warnings"].append(sensitivity["failure"]["detail"])
        raise TargetNotMetError(**sensitivity["failure"], result=result)
    return result
