"""The files a run writes beside its QDQ model: TI's integer-only form and a vendor toolchain's build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgequant import toolchains
from edgequant.calibration import calib_source, held_source
from edgequant.export.ti_int_report import ti_npu_int_form
from edgequant.recipe import Recipe
from edgequant.runtime import OrtRuntime


def vendor_forms(
    quantized: onnx.ModelProto,
    recipe: Recipe,
    model: Any,
    float_model: onnx.ModelProto,
    calibration: Any,
    runtime: OrtRuntime,
    reference: Any,
) -> tuple[dict[str, bytes], dict[str, Any] | None, dict[str, Any] | None]:
    """``(artifacts, ti_int, toolchain)``: file suffix -> bytes for every extra file, the TI-NPU integer
    form's report section when ``recipe.format`` is ``ti-npu-int`` (checked against ``quantized`` on the
    held-back samples), and the vendor toolchain's report section when ``recipe.target`` has one
    (``toolchains.TARGETS``: compiled or converted, then run on the held-back samples against
    ``reference``).  ``model``: what the user gave (a path names the toolchain's source file)."""
    artifacts: dict[str, bytes] = {}
    toolchain: dict[str, Any] | None = None
    ti_int: dict[str, Any] | None = None
    if recipe.format == "ti-npu-int":
        model_int, ti_int = ti_npu_int_form(quantized, runtime, held_source(calibration, float_model, recipe))
        artifacts["_ti-npu-int.onnx"] = model_int.SerializeToString()
    if recipe.target in toolchains.TARGETS:
        suffix, blob, toolchain = toolchains.build(
            recipe.target, quantized, reference, list(held_source(calibration, float_model, recipe)),
            calibration=lambda: list(calib_source(calibration, float_model, recipe)), tune_trials=recipe.tune_trials,
            tune_budget_s=recipe.tune_budget_s,
            source=Path(model) if isinstance(model, str | Path) else None, bits=(recipe.weight_bits, recipe.act_bits),
        )  # fmt: skip
        artifacts[suffix] = blob
    return artifacts, ti_int, toolchain
