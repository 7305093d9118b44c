"""The whole flow, in one function: model + calibration data + recipe -> a QDQ model that runs.

model   -> load, check ORT can run it, repair (constants, constant Ifs, stale shapes)
recipe  -> plan (per tensor: bits, symmetry, granularity; per node: decision + reason)
data    -> streaming statistics of the planned activations -> ranges (``check_samples`` held back)
plan + ranges -> QDQ model -> loaded back in ORT (in a child process) and compared with float on the
                 held-back samples (``edgequant.check``)
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant import algorithms, planner, toolchains
from edgequant.algorithms.act16 import promote_sensitive
from edgequant.algorithms.calib_search import SEARCH_SAMPLES, search_ranges
from edgequant.check import run_check
from edgequant.data import CalibrationSource, input_specs, open_source
from edgequant.data.declared import with_declared
from edgequant.errors import DataError, InferenceError, ModelError, RecipeError, UnsupportedError
from edgequant.export import export_qdq
from edgequant.export.nbits import weight_only_kernels
from edgequant.export.sizes import disk_bytes
from edgequant.model import ensure_opset, load_model, prepare
from edgequant.model.io import serialized_size
from edgequant.model.patterns import bounded_outputs
from edgequant.model.recurrent import apply_exact_ranges
from edgequant.model.stream_calib import carry_states
from edgequant.plan import QuantPlan
from edgequant.recipe import PRESETS, Recipe, from_dict, load_recipe, preset, to_dict
from edgequant.recipe.presets import without_disabled
from edgequant.result import QuantResult, build_report
from edgequant.runtime import OrtRuntime, detect
from edgequant.targets.adapt import adapt as adapt_to_target
from edgequant.targets.check import check_model

log = logging.getLogger(__name__)
Progress = Callable[[str, int, "int | None"], None]
ModelLike = str | Path | onnx.ModelProto | Any
DataLike = str | Path | np.ndarray | dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]] | None


def resolve_recipe(
    recipe: Recipe | dict[str, Any] | str | Path | None,
    overrides: dict[str, Any],
    notes: list[str] | None = None,
) -> Recipe:
    if recipe is None:
        base: dict[str, Any] = {}
    elif isinstance(recipe, Recipe):
        base = to_dict(recipe)
    elif isinstance(recipe, dict):
        base = dict(recipe)
    elif isinstance(recipe, str) and recipe in PRESETS and not Path(recipe).exists():
        return preset(
            recipe, **overrides
        )  # quantize(model, data, "int8-static"): the preset sees the overrides
    elif isinstance(recipe, str) and not Path(recipe).suffix and not Path(recipe).exists():
        raise RecipeError(
            f"'{recipe}' is neither a recipe file nor a preset; presets: {', '.join(PRESETS)}.",
            "pass a preset name from the list, or the path of a YAML recipe.",
        )
    else:
        base = to_dict(load_recipe(recipe, notes))
    return from_dict(without_disabled({**base, **overrides}, overrides))


def load_input_model(
    model: ModelLike, example_inputs: Any = None, dynamic_axes: dict[str, list[int]] | None = None
) -> tuple[onnx.ModelProto, str, dict[str, Any] | None]:
    """An ONNX model, a name for it, and the export check when it came from PyTorch or TensorFlow.
    ``dynamic_axes`` (PyTorch only): more symbolic input axes, verified at two sizes (``export_torch``)."""
    from edgequant.model.tf_import import is_tf_model, is_tf_path

    if dynamic_axes and not (type(model).__module__.startswith("torch") or hasattr(model, "state_dict")):
        raise RecipeError(
            f"dynamic_axes {dynamic_axes} apply when a PyTorch model is exported; this model is not one.",
            "drop --dynamic-axis (an ONNX model's dynamic axes are set in the file).",
        )
    if isinstance(model, onnx.ModelProto):
        return model, (model.graph.name or "model").replace("/", "_"), None
    if isinstance(model, str | Path) and not is_tf_path(model):
        return load_model(model), Path(model).stem, None
    if isinstance(model, str | Path) or is_tf_model(model):
        from edgequant.model.tf_import import export_tf

        name = (
            Path(model).stem if isinstance(model, str | Path) else str(getattr(model, "name", "") or "model")
        )
        return _imported(lambda path: export_tf(model, path, example_inputs=example_inputs), name)
    if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
        from edgequant.model.torch_import import export_torch

        if example_inputs is None:
            raise ModelError(
                "a PyTorch module needs example inputs to be exported to ONNX.",
                "pass example_inputs=torch.randn(1, 3, 224, 224) (or a tuple for several inputs).",
            )
        return _imported(
            lambda path: export_torch(model, example_inputs, path, dynamic_axes=dynamic_axes or None),
            type(model).__name__.lower(),
        )
    raise ModelError(
        f"cannot quantize an object of type {type(model).__name__}.",
        "pass a path to an .onnx file, a Keras .keras/.h5 file or SavedModel directory, an onnx.ModelProto, "
        "a torch.nn.Module with example_inputs, or a Keras model.",
    )


def _imported(export: Callable[[Path], Any], name: str) -> tuple[onnx.ModelProto, str, dict[str, Any]]:
    """Run an importer into a temporary file; the ONNX model, its name and the import check."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgequant-") as tmp:
        path = Path(tmp) / "model.onnx"
        rep = export(path)
        check = {
            "source": rep.source,
            "max_abs_diff": rep.max_abs_diff,
            "sqnr_db": rep.sqnr_db if np.isfinite(rep.sqnr_db) else None,
            "opset": rep.opset,
        }
        return load_model(path), name.replace("/", "_"), check


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
    recipe_arg = recipe
    recipe_notes: list[str] = []  # e.g. a TI config naming a device without an NPU
    recipe, target_notes = adapt_to_target(resolve_recipe(recipe, overrides, recipe_notes))
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
    _require_loadable(runtime, reference)
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
    calib_info: dict[str, Any] | None = None
    passes = algorithms.Context(recipe, runtime, list, [])  # no passes (fp16, dynamic): replaced for static
    result_float = float_model  # the float model the result carries: passes change weights in a copy
    act16: dict[str, Any] | None = None
    if calibration is None and recipe.calib_data is not None:
        calibration = recipe.calib_data
    if recipe.hoist_gru:  # each GRU input projection X·Wᵀ -> a MatMul before the GRU (exact in float)
        float_model = _hoist_gru(float_model, notes)
        result_float = float_model
    excluded = planner.excluded_nodes(float_model, recipe)

    if recipe.method == "fp16":
        from edgequant.export.fp16 import convert_fp16

        quantized, plan = convert_fp16(
            float_model, keep_io_types=recipe.keep_io_types, exclude_nodes=excluded
        )
        _require_change(plan)
    elif recipe.method == "dynamic":
        from edgequant.export.dynamic import quantize_dynamic

        reduce = recipe.reduce_range == "on" or (recipe.reduce_range == "auto" and cpu.needs_reduce_range)
        quantized, plan = quantize_dynamic(
            float_model,
            weight_bits=recipe.weight_int_bits,
            per_channel=recipe.per_channel,
            reduce_range=reduce,
            exclude_nodes=excluded,
        )
        _require_change(plan)
        warnings += _mostly_float(float_model, quantized, plan)
    else:
        fixes: list[str] = []
        if recipe.fix:  # exact alignment fixes on the float graph; the check below compares with the original
            from edgequant.model.target_fix import apply_fixes
            from edgequant.targets import get as get_target

            float_model, fixes = apply_fixes(float_model, get_target(recipe.target))
        plan = planner.resolve(float_model, recipe, cpu)
        recipe = planner.with_default_passes(float_model, recipe, cpu)  # transformers: smoothquant
        plan.notes.extend(fixes)
        unblocked = [e.name for e in plan.tensors.values() if e.note.startswith(planner.UNBLOCKED)]
        if unblocked:
            warnings.append(
                f"--block-size {recipe.block_size}: {len(unblocked)} weight(s) are not blocked ("
                + ", ".join(unblocked[:5]) + ("..." if len(unblocked) > 5 else "")
                + "); each one's reason is in the plan."
            )  # fmt: skip
        float_model, plan = _raise_opset(float_model, plan, notes)
        if plan.activations() or algorithms.steps(recipe, "after_ranges"):
            _require_data(calibration, recipe)
            calibration, carried = carry_states(float_model, calibration, runtime)  # zero states: streamed
            notes += [carried] if carried else []
        result_float = float_model
        passes = algorithms.context(
            recipe, runtime, lambda r: _source(calibration, float_model, r), calibration is None,
            _named(recipe_arg, overrides) if recipe.algorithms else (),
            open_held=(lambda: _held(calibration, float_model, recipe)) if calibration is not None else None,
        )  # fmt: skip
        # each pass asks for statistics, then applies them (algorithms/); before ranges, on float weights
        for step in algorithms.steps(recipe, "before_ranges"):
            float_model, plan = algorithms.run_pass(step, float_model, plan, passes)
        if plan.activations():
            t1 = time.perf_counter()
            source = _source(calibration, float_model, recipe)
            if getattr(source.stats, "synthetic", False):
                warnings.append(
                    "activation ranges came from SYNTHETIC random data (--allow-synthetic), not real inputs."
                )
            plan, calib_info = _calibrate(float_model, plan, source, recipe, runtime, progress, calibration)
            if recipe.act16_below_db is not None:  # 16 bits where 8 cannot hold the tensor's outliers
                batch = next(iter(_source(calibration, float_model, recipe)))
                plan, act16 = promote_sensitive(float_model, plan, batch, runtime, recipe.act16_below_db)
                float_model, plan = _raise_opset(float_model, plan, notes)
            seconds["calibration"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        calibrated = plan
        quantized, plan = export_qdq(float_model, plan)
        if (
            recipe.method == "weight-only"
        ):  # MatMulNBits where it applies; a note where ORT dequantizes per run
            quantized, plan = weight_only_kernels(quantized, plan)
            warnings += [n for n in plan.notes if n.startswith("slower than float")]
        seconds["export"] = time.perf_counter() - t2
        state = algorithms.Quantized(float_model, calibrated, quantized, plan, reference=float_model)
        for step in algorithms.steps(recipe, "after_ranges"):  # on the QDQ model (bias correction, ...)
            state = algorithms.run_after(step, state, passes)
        quantized, plan = state.model, state.plan
        notes += passes.notes
        seconds.update({row["pass"]: row["seconds"] for row in passes.rows})
        if recipe.method == "static":  # biases beyond the target's bias width: re-scaled where exact
            from edgequant.export.bias_fit import fit_biases
            from edgequant.targets import get as get_target

            quantized, bias_notes = fit_biases(quantized, plan, get_target(recipe.target))
            plan.notes.extend(bias_notes)

    compliance = check_model(quantized, recipe.target) if recipe.method == "static" else None
    check = run_check(
        runtime, reference, quantized, calibration, recipe, calibrated=calib_info is not None or bool(passes.rows),
        float_proto=float_model, plan=plan,
    )  # fmt: skip
    if check["kind"] == "synthetic":
        warnings.append(
            "the check ran on SYNTHETIC random inputs (no data was given): its SQNR says nothing about real data."
        )
    if check.get("note"):
        warnings.append(check["note"])
    if check.get("collapse"):
        warnings.append(check["collapse"]["warning"])
    artifacts, toolchain = {}, None
    ti_int = None
    if recipe.format == "ti-npu-int":  # TI's integer-only form beside the QDQ model, checked against it
        ti_int, artifacts["_ti-npu-int.onnx"] = _ti_npu_int(
            quantized, runtime, _held(calibration, float_model, recipe)
        )
    if recipe.target in toolchains.TARGETS:  # compile/convert with the vendor toolchain, then run it
        suffix, blob, toolchain = toolchains.build(
            recipe.target, quantized, reference, list(_held(calibration, float_model, recipe)),
            calibration=lambda: list(_source(calibration, float_model, recipe)), tune_trials=recipe.tune_trials,
            source=Path(model) if isinstance(model, str | Path) else None, bits=(recipe.weight_bits, recipe.act_bits),
        )  # fmt: skip
        artifacts[suffix] = blob
        seconds["toolchain"] = sum(toolchain.get("seconds", {}).values())
    seconds["total"] = time.perf_counter() - t0
    result = QuantResult(
        quantized,
        result_float,
        plan,
        recipe,
        name,
        recipe.default_tag,
        save_float=bool(imported),
        artifacts=artifacts,
        input_bytes=input_bytes,
    )
    result.report = build_report(
        result,
        seconds=seconds,
        calibration=calib_info,
        notes=notes,
        warnings=warnings,
        cpu=cpu.describe(),
        check=check,
    )
    result.report["providers"] = list(runtime.providers)  # the ORT providers calibration and the check ran on
    if imported:
        result.report["import"] = imported
    if toolchain:
        result.report["toolchain"] = toolchain
    if act16:
        result.report["act16"] = act16
    result.report.update(passes.sections)  # e.g. bias_correction, sensitivity (mixed_precision)
    if passes.rows:
        result.report["algorithms"] = passes.rows
    if compliance is not None:  # per-layer findings against the target's rules, MAC/param shares
        result.report["compliance"] = compliance
    if ti_int is not None:
        result.report["ti_npu_int"] = ti_int
    if imported and _is_torch_module(model):  # <stem>.pth (static) / .pt (torch.ao, LSTM/GRU) beside the ONNX
        from edgequant.torch.quantized_outputs import attach

        attach(result, model, calibration, runtime)  # type: ignore[arg-type]
        if result.report["torch"].get("not_written"):
            result.report["notes"].append(f"no PyTorch file: {result.report['torch']['not_written']}")
    sensitivity = passes.sections.get("sensitivity")
    if sensitivity and not sensitivity["met"]:  # the best model reached goes with the error (CLI writes it)
        from edgequant.errors import TargetNotMetError

        result.report["warnings"].append(sensitivity["failure"]["detail"])
        raise TargetNotMetError(**sensitivity["failure"], result=result)
    return result


def _hoist_gru(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """``model`` with its GRU input projections hoisted (``model.gru_hoist``); refused when none is."""
    from edgequant.model.gru_hoist import hoist_gru_inputs

    hoisted, gru_notes = hoist_gru_inputs(model)
    if not any("hoisted into MatMul" in n for n in gru_notes):
        raise UnsupportedError(
            "hoist_gru is set, but no GRU of this model has a constant float W to hoist"
            + (f" ({gru_notes[0]})" if gru_notes else " (the model has no GRU)")
            + ".",
            "drop --hoist-gru.",
        )
    notes.extend(gru_notes)
    return hoisted


def _ti_npu_int(quantized: onnx.ModelProto, runtime: OrtRuntime, held: Any) -> tuple[dict[str, Any], bytes]:
    """The report section and bytes of the TI-NPU integer form (``edgequant.export.ti_int``)."""
    from edgequant.export.ti_int import to_ti_npu_int
    from edgequant.export.ti_int_report import compare
    from edgequant.targets import get as get_target

    model, notes, layers = to_ti_npu_int(quantized, get_target("ti-npu"))
    section = {"file_suffix": "_ti-npu-int.onnx", "layers": layers, "notes": notes}
    section.update(compare(quantized, model, runtime, list(held)))
    return section, model.SerializeToString()


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _named(recipe: Recipe | dict[str, Any] | str | Path | None, overrides: dict[str, Any]) -> tuple[str, ...]:
    """The passes the user named (a preset's passes are not named: finding nothing to do is a note);
    ``bias_correction``/``target_sqnr_db`` name their passes."""
    aliases: tuple[str, ...] = ("bias_correction",) if overrides.get("bias_correction") else ()
    aliases += ("mixed_precision",) if overrides.get("target_sqnr_db") is not None else ()
    if "algorithms" in overrides:
        return (*overrides["algorithms"], *aliases)
    if isinstance(recipe, str) and recipe in PRESETS:
        return aliases
    return (*resolve_recipe(recipe, {}).algorithms, *aliases)


def _require_change(plan: QuantPlan) -> None:
    """A method that changes no node would hand back a copy of the float model: refuse it."""
    if plan.quantized_nodes:
        return
    reasons = sorted({d.reason for d in plan.skipped_nodes})[:3]
    raise UnsupportedError(
        f"{plan.method} quantization changes no node of this model, so its output would be a copy of "
        "the float model; reasons: " + " | ".join(reasons),
        "use --method static for conv nets (or weight-only), or check --exclude.",
    )


def _mostly_float(before: onnx.ModelProto, after: onnx.ModelProto, plan: QuantPlan) -> list[str]:
    """A warning (also a plan note) when most weight values stay float: a change to a small head
    is not the model quantized."""
    from edgequant.export.sizes import float_weight_share

    share, left = float_weight_share(before, after)
    if share <= 0.5:
        return []
    readers = {i: n for n in after.graph.node for i in n.input}
    why = {d.node: d.reason for d in plan.nodes}
    nodes = list(dict.fromkeys(readers[w].name for w in left if w in readers))[:2]
    biggest = [why.get(n, "") for n in nodes]
    msg = (
        f"{100 * share:.0f} % of the weight values stay float under {plan.method} quantization; "
        + "; ".join(f"'{n}': {b}" for n, b in zip(nodes, biggest, strict=True))
        + ". Weight-only or static quantization stores those weights as integers."
    )
    plan.notes.append(msg)
    return [msg]


def _require_loadable(runtime: OrtRuntime, model: onnx.ModelProto | Path) -> None:
    """ONNX Runtime loads the user's model; the load runs in a child process on the CPU provider, so a
    native crash of ONNX Runtime on it is one error line (``edgequant.runtime.isolated``)."""
    try:
        if not any(runtime.provider_options or []) and runtime.providers == ["CPUExecutionProvider"]:
            from edgequant.runtime.isolated import run_isolated

            run_isolated(model, [], what="the input model", providers=runtime.providers)
        else:
            runtime.session(model, "the input model").close()
    except InferenceError as exc:
        raise ModelError(
            exc.detail, "re-export the model so that ONNX Runtime loads it; " + exc.hint
        ) from exc


def _require_data(calibration: DataLike, recipe: Recipe) -> None:
    """Calibrating on random inputs needs the user's consent (``allow_synthetic``)."""
    if calibration is None and not recipe.allow_synthetic:
        raise DataError(
            f"method '{recipe.method}' calibrates activation ranges on data, and no calibration data was "
            "given; ranges from random inputs are not the ranges of real inputs.",
            "pass --calib-data PATH (npy/npz, image folder, video, HDF5, CSV), or --allow-synthetic "
            "(recipe: allow_synthetic: true) to calibrate on random inputs knowingly.",
        )


def _raise_opset(
    model: onnx.ModelProto, plan: QuantPlan, notes: list[str]
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Raise the opset to what the plan's Q/DQ need; a failed conversion is an error, never a downgrade."""
    why = "per-axis/int4/int16 QuantizeLinear and DequantizeLinear"
    try:
        model, note = ensure_opset(model, plan.opset, why)
    except UnsupportedError as exc:
        raise UnsupportedError(
            f"{exc.detail} (the plan needs opset {plan.opset} for {why}).",
            "re-export the model at opset 13 or later; or use --per-tensor with 8-bit weights and "
            "activations, which need only opset 10" + (f"; {exc.hint}" if exc.hint else "."),
        ) from exc
    if note:
        notes.append(note)
    return model, plan


def _source(calibration: DataLike, model: onnx.ModelProto, recipe: Recipe) -> CalibrationSource:
    """The calibration part of the data: ``recipe.check_samples`` samples are held back for the check
    (with a metadata CSV, calibration reads its train rows and the check its evaluation rows)."""
    metadata = bool((recipe.data_options or {}).get("metadata_csv"))
    return open_source(
        calibration,
        input_specs(model),
        batch_size=recipe.batch_size,
        max_samples=recipe.calib_samples,
        sampling=recipe.sampling,
        seed=recipe.seed,
        preprocess=recipe.preprocess,
        input_map=recipe.input_map or None,
        options=recipe.data_options or None,
        split="calib" if metadata else "all",  # train rows only (the check reads the eval rows)
        held_out=recipe.check_samples if calibration is not None and not metadata else 0,
        part="rest" if calibration is not None and not metadata else "all",
    )


def _held(calibration: DataLike, model: onnx.ModelProto, recipe: Recipe) -> CalibrationSource:
    """The samples held back from calibration for the check (``_source``'s complement)."""
    return open_source(
        calibration, input_specs(model), batch_size=recipe.batch_size, seed=recipe.seed,
        preprocess=recipe.preprocess, input_map=recipe.input_map or None, options=recipe.data_options or None,
        held_out=recipe.check_samples, part="held",
    )  # fmt: skip


def _calibrate(
    model: onnx.ModelProto,
    plan: QuantPlan,
    source: CalibrationSource,
    recipe: Recipe,
    runtime: OrtRuntime,
    progress: Progress | None,
    calibration: DataLike = None,
) -> tuple[QuantPlan, dict[str, Any]]:
    from edgequant.observe import collect

    act = next(plan.tensors[n].spec for n in plan.activations())
    res = collect(
        model,
        source,
        plan.activations(),
        method="mse" if recipe.calib_method == "search" else recipe.calib_method,  # search: histograms
        percentile=recipe.percentile,
        qbits=act.bits,
        symmetric=act.symmetric,
        runtime=runtime,
        max_samples=recipe.calib_samples,
        progress=(lambda done, total: progress("calibrate", done, total)) if progress else None,
        full_range=bounded_outputs(model) if recipe.calib_method != "minmax" else (),
    )
    if res.samples == 0:
        from edgequant.errors import DataError

        raise DataError(
            "the calibration data yielded no samples.", "pass a non-empty dataset to --calib-data."
        )
    for name, count in res.sentinels.items():
        if count and name in plan.tensors:
            del plan.tensors[name]
            plan.notes.append(
                f"'{name}' holds {count} mask sentinel value(s) (-inf / finfo.min) on the calibration data; "
                "it stays float so the mask keeps its meaning and other values keep their resolution."
            )
    ranges, search = res.ranges, None
    if recipe.calib_method == "search":  # the method whose ranges give the best held-out output SQNR
        extra = recipe.replace(calib_samples=recipe.calib_samples + SEARCH_SAMPLES, sampling="first")
        held = algorithms.held_out(_source(calibration, model, extra), recipe.calib_samples)
        ranges, search = search_ranges(model, plan, res, recipe, runtime, held, source)
    exact = apply_exact_ranges(model.graph, ranges := dict(ranges))  # tanh/sigmoid/recurrent outputs
    plan = plan.with_ranges(ranges)
    for name, note in exact.items():
        if name in plan.tensors:
            plan.tensors[name].note = note
    plan = planner.tie_activation_ranges(model, plan)
    info = {
        "method": recipe.calib_method,
        "percentile": recipe.percentile if recipe.calib_method == "percentile" else None,
        "samples": res.samples,
        "batches": res.batches,
        "passes": res.passes,
        "synthetic": bool(getattr(source.stats, "synthetic", False)),
        "skipped_samples": int(getattr(source.stats, "skipped", 0)),
        "source": getattr(source.stats, "description", ""),
        **({"search": search} if search else {}),
        "held_out_for_check": int(getattr(source.stats, "held_out", 0)),
    }
    return plan, info
