"""``QATModule.export``: the QDQ model, checked against the float model, with report and plan beside it.

The report is ``result.build_report``'s, as ``edgequant quantize`` writes it, plus a ``qat`` section
(epochs seen, BN and observer freezes, whether scales were learned).  Files: ``path`` (the QDQ model),
``path.with_suffix('.json')`` (report), ``<stem>.plan.json`` (plan) and ``<stem>_float.onnx`` (the
BN-folded float model the check compares with).  All are written atomically; on failure none is left.

``format="ti-npu-int"`` (a module made for ``target="ti-npu"``) also writes TI's integer-only NPU form
``<stem>_ti-npu-int.onnx`` (``edgequant.export.ti_int``: no DequantizeLinear inside), compared with the
QDQ model layer by layer and end to end on the check's samples (the report's ``ti_npu_int``), exactly as
``edgequant quantize --target ti-npu --format ti-npu-int`` does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from edgequant.errors import ExportError
from edgequant.result import QuantResult, _json_default, build_report

if TYPE_CHECKING:
    from edgequant.torch.wrapper import QATModule


def _rename(model: onnx.ModelProto, old: list[str], new: list[str] | None, what: str) -> None:
    if new is None:
        return
    if len(new) != len(old) or len(set(new)) != len(new):
        raise ExportError(
            f"{what}_names {new} must be {len(old)} distinct name(s), one per model {what}.",
            f"pass one unique name per {what}.",
        )
    mapping = dict(zip(old, new, strict=True))
    g = model.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        v.name = mapping.get(v.name, v.name)
    for n in g.node:
        for i, x in enumerate(n.input):
            n.input[i] = mapping.get(x, x)
        for i, x in enumerate(n.output):
            n.output[i] = mapping.get(x, x)


def export_result(
    module: QATModule,
    example_inputs: Any,
    path: Path,
    input_names: list[str] | None,
    output_names: list[str] | None,
    check_data: Any,
    fmt: str = "qdq",
) -> QuantResult:
    from edgequant.check import run_check
    from edgequant.runtime import OrtRuntime, detect
    from edgequant.torch.graph import as_tuple

    t0 = time.perf_counter()
    if path.suffix != ".onnx":
        raise ExportError(f"export path '{path}' does not end in .onnx.", "pass e.g. out/model_int8.onnx.")
    if fmt not in ("qdq", "ti-npu-int"):
        raise ExportError(
            f"export format '{fmt}' is not one of qdq, ti-npu-int.", "pass format='qdq' or 'ti-npu-int'."
        )
    recipe = module.recipe.replace(format=fmt)  # RecipeError unless target ti-npu (as quantize refuses)
    float_model, quantized, plan, _binding, notes, imported = module._exported()
    init_names = {t.name for t in float_model.graph.initializer}
    ins = [i.name for i in float_model.graph.input if i.name not in init_names]
    outs = [o.name for o in float_model.graph.output]
    for m in (float_model, quantized):
        _rename(m, ins, input_names, "input")
        _rename(m, outs, output_names, "output")
    ins = input_names or ins
    examples = as_tuple(example_inputs)
    data = check_data
    if data is None:
        data = {n: t.detach().cpu().numpy() for n, t in zip(ins, examples, strict=True)}
    runtime = OrtRuntime(allow_spinning=False)
    if check_data is None:
        first = np.asarray(next(iter(data.values())))
        recipe = recipe.replace(batch_size=max(1, int(first.shape[0])))
    # the check data is not what the observers read (or is the example inputs, marked in_sample below)
    check = run_check(
        runtime, float_model, quantized, data, recipe, calibrated=False, float_proto=float_model, plan=plan
    )
    stem = path.stem
    name, _, tag = stem.rpartition("_")
    result = QuantResult(quantized, float_model, plan, recipe, name or stem, tag or "qat", save_float=True)
    result.report = build_report(
        result,
        seconds={"export": time.perf_counter() - t0},
        calibration=None,
        notes=notes,
        warnings=[],
        cpu=detect().describe(),
        check=check,
    )
    result.report["import"] = imported
    result.report["qat"] = module.describe()
    if check_data is None:
        result.report["check"]["data"] = "the example inputs given to export()"
        result.report["check"]["kind"] = "in_sample"
    ti_int = None
    if fmt == "ti-npu-int":
        ti_int, result.report["ti_npu_int"] = _ti_npu_int(quantized, runtime, float_model, data, recipe)
    _save(result, path, ti_int)
    return result


def _ti_npu_int(
    quantized: onnx.ModelProto, runtime: Any, float_model: onnx.ModelProto, data: Any, recipe: Any
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """TI's integer form of ``quantized`` and its report section, checked on the run check's batches."""
    from edgequant.check import check_batches
    from edgequant.export.ti_int_report import ti_npu_int_form

    batches, _kind, _note, _description = check_batches(float_model, data, recipe, calibrated=False)
    return ti_npu_int_form(quantized, runtime, batches)


def _save(result: QuantResult, path: Path, ti_int: onnx.ModelProto | None = None) -> None:
    from edgequant.model.io import save_model, write_text_atomic

    out = path.parent
    if out.exists() and not out.is_dir():
        raise ExportError(f"'{out}' is not a directory.", "pass a path inside a directory.")
    out.mkdir(parents=True, exist_ok=True)
    report_path = path.with_suffix(".json")
    plan_path = path.with_name(path.stem + ".plan.json")
    float_path = path.with_name(path.stem + "_float.onnx")
    int_path = path.with_name(path.stem + "_ti-npu-int.onnx")
    models = [(float_path, result.float_model), (path, result.model)]
    if ti_int is not None:
        models.append((int_path, ti_int))
    written: list[Path] = []
    try:
        for target, model in models:
            save_model(model, target)
            written.append(target)
        write_text_atomic(plan_path, result.plan.to_json())
        written.append(plan_path)
        result.report["files"] = {"model": path.name, "report": report_path.name, "plan": plan_path.name,
                                  "float_model": float_path.name}  # fmt: skip
        if ti_int is not None:
            result.report["files"]["ti_npu_int"] = int_path.name
        write_text_atomic(report_path, json.dumps(result.report, indent=1, default=_json_default))
    except Exception:
        for p in written:
            p.unlink(missing_ok=True)
        raise
