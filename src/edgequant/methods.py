"""The methods that need no calibration: fp16 and dynamic (weights integer, activations quantized per
run by ORT).  Both are refused when they change no node, and dynamic warns when most weight values stay
float (a change to a small head is not the model quantized).
"""

from __future__ import annotations

import onnx

from edgequant.errors import UnsupportedError
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe
from edgequant.runtime.cpu import CpuFeatures


def fp16(
    float_model: onnx.ModelProto, recipe: Recipe, excluded: set[str]
) -> tuple[onnx.ModelProto, QuantPlan]:
    """fp16 weights and activations (``export.fp16``); refused when no node changes."""
    from edgequant.export.fp16 import convert_fp16

    quantized, plan = convert_fp16(float_model, keep_io_types=recipe.keep_io_types, exclude_nodes=excluded)
    require_change(plan)
    return quantized, plan


def dynamic(
    float_model: onnx.ModelProto, recipe: Recipe, cpu: CpuFeatures, excluded: set[str]
) -> tuple[onnx.ModelProto, QuantPlan, list[str]]:
    """Dynamic quantization (``export.dynamic``) and its warnings; refused when no node changes."""
    from edgequant.export.dynamic import quantize_dynamic

    reduce = recipe.reduce_range == "on" or (recipe.reduce_range == "auto" and cpu.needs_reduce_range)
    quantized, plan = quantize_dynamic(
        float_model,
        weight_bits=recipe.weight_int_bits,
        per_channel=recipe.per_channel,
        reduce_range=reduce,
        exclude_nodes=excluded,
    )
    require_change(plan)
    return quantized, plan, mostly_float(float_model, quantized, plan)


def require_change(plan: QuantPlan) -> None:
    """A method that changes no node would hand back a copy of the float model: refuse it."""
    if plan.quantized_nodes:
        return
    reasons = sorted({d.reason for d in plan.skipped_nodes})[:3]
    raise UnsupportedError(
        f"{plan.method} quantization changes no node of this model, so its output would be a copy of "
        "the float model; reasons: " + " | ".join(reasons),
        (
            "use --method weight-only (integer storage of any constant weight, a GRU's too) or static"
            if plan.method == "dynamic"
            else "use --method static or weight-only"
        )
        + ", or check --exclude.",
    )


def mostly_float(before: onnx.ModelProto, after: onnx.ModelProto, plan: QuantPlan) -> list[str]:
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
