"""The float model's opset raised to what a plan's QuantizeLinear/DequantizeLinear nodes need.

Per-axis scales need opset 13, blocks and 4/16-bit types 21 (``planning.specs.required_opset`` sets
``plan.opset``); ``export_qdq`` refuses a model below it, so the pipeline (and the QAT wrapper)
raise it first with ONNX's version converter.
"""

from __future__ import annotations

import onnx

from edgequant.errors import UnsupportedError
from edgequant.model import ensure_opset
from edgequant.plan import QuantPlan


def raise_for_plan(
    model: onnx.ModelProto, plan: QuantPlan, notes: list[str]
) -> tuple[onnx.ModelProto, QuantPlan]:
    """``model`` at opset ``plan.opset`` or above (a note appended to ``notes`` when it was converted),
    and ``plan`` unchanged.  Raises ``UnsupportedError`` (with the fix) when the conversion fails: never
    a silent downgrade of the plan."""
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
