"""What a ``before_ranges`` pass is judged on: the QDQ model it leads to, not its weights alone.

A pass before calibration changes the float model and plan; what it buys shows only once activations
are quantized too (SmoothQuant moves error from activations into weights, so with activations left
float it always looks like a loss; CLE changes activation ranges as well as weight ranges).  So the
runner (``base.run_pass``) scores the model before and after the pass the same cheap way: activation
ranges by min-max over the first ``JUDGE_CALIB`` calibration samples (the exact ranges of
tanh/sigmoid/recurrent outputs, mask tensors left float, Relu inputs tied to their outputs, as
calibration does), the QDQ model exported, its first output's SQNR against the float model measured on
the held-out samples (``base.quantized_sqnr``; padded positions left out: ``real_positions``).  A
plan without quantized activations (weight-only) is scored with its weights quantized and nothing
else, which is that model exactly.

Cost: per judged state one min-max stream over ``JUDGE_CALIB`` samples, one export and one run over
the held-out samples; a state judged once is not judged again (the state after one pass is the state
before the next).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.data.base import Batch
from edgequant.plan import QuantPlan
from edgequant.schemes.qparams import dequantize, quantize_weight

if TYPE_CHECKING:
    from edgequant.algorithms.base import Context

JUDGE_CALIB = 32  # calibration samples the judge's min-max ranges come from


def judged_sqnr(model: onnx.ModelProto, plan: QuantPlan, ctx: Context) -> float | None:
    """Output SQNR (dB) on the held-out samples of the QDQ model ``model`` + ``plan`` lead to, with
    min-max activation ranges from ``JUDGE_CALIB`` calibration samples; None without held-out samples."""
    from edgequant.algorithms.base import Stats, quantized_sqnr

    if ctx.judged is not None and ctx.judged[0] is model and ctx.judged[1] is plan:
        return ctx.judged[2]
    acts = plan.activations()
    if not acts or not ctx.held_out or ctx.reference is None:
        value = weight_quantized_sqnr(model, plan, ctx)
    else:
        from edgequant import planner
        from edgequant.export import export_qdq
        from edgequant.model.recurrent import apply_exact_ranges
        from edgequant.observe import collect

        spec = plan.tensors[acts[0]].spec
        samples = min(JUDGE_CALIB, ctx.recipe.calib_samples)
        res = collect(
            model, Stats(ctx.data, samples, ctx.runtime, ctx.recipe), acts, method="minmax",
            qbits=spec.bits, symmetric=spec.symmetric, runtime=ctx.runtime, max_samples=samples,
        )  # fmt: skip
        ranged = QuantPlan.from_dict(plan.to_dict())
        for name, count in res.sentinels.items():  # mask tensors stay float, as calibration leaves them
            if count and name in ranged.tensors:
                del ranged.tensors[name]
        ranges = dict(res.ranges)
        apply_exact_ranges(model.graph, ranges)
        ranged = planner.tie_activation_ranges(model, ranged.with_ranges(ranges))
        value = quantized_sqnr(export_qdq(model, ranged)[0], ctx)
    ctx.judged = (model, plan, value)
    return value


def real_positions(batch: Batch, ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ref`` and ``got`` (one output, ``[B, T, ...]``) flattened, without the padded positions: those
    where the batch's padding mask is 0.  The mask is a 2-D integer/bool input named like ``*mask*``
    holding only 0 and 1 (``attention_mask``) whose shape is the output's first two dims; without one,
    every position counts.  On all-MiniLM-L6-v2 86 % of the positions are padding, and the SQNR over
    all of them said SmoothQuant cost 0.3 dB (14.12 -> 13.80) where on the real tokens it bought 5.9 dB
    (17.21 -> 23.13)."""
    for name, value in batch.items():
        v = np.asarray(value)
        if (
            "mask" in name.lower()
            and v.ndim == 2
            and (v.dtype == np.bool_ or np.issubdtype(v.dtype, np.integer))
            and ref.shape[:2] == v.shape
            and np.isin(v, (0, 1)).all()
            and v.any()
        ):
            keep = v.astype(bool)
            return ref[keep].reshape(-1), got[keep].reshape(-1)
    return ref.reshape(-1), got.reshape(-1)


def judged_on(plan: QuantPlan) -> str:
    """What ``judged_sqnr`` measures, for the report row."""
    if not plan.activations():
        return "weights quantized as planned (no activation is quantized)"
    return f"the QDQ model, activation ranges by min-max over {JUDGE_CALIB} calibration samples"


def weight_quantized(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """A copy of ``model`` whose planned weights are replaced by their quantized-dequantized values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        entry = plan.tensors.get(t.name)
        if entry is None or entry.role != "weight":
            continue
        w = numpy_helper.to_array(t).astype(np.float32)
        q, scale, zero = fixed_or_fresh(w, entry)
        t.CopyFrom(numpy_helper.from_array(dequantize(q, scale, zero, entry.spec), t.name))
    return out


def fixed_or_fresh(w: np.ndarray, entry: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero) of a weight: with the scale a pass fixed in the plan, or the exporter's own."""
    from edgequant.schemes.qparams import quantize_fixed

    if entry.scale is not None and entry.zero_point is not None:
        return quantize_fixed(w, entry.spec, entry.scale, entry.zero_point)
    return quantize_weight(w, entry.spec)


def weight_quantized_sqnr(model: onnx.ModelProto, plan: QuantPlan, ctx: Context) -> float | None:
    """Output SQNR (dB, first output, all held-out samples) of the weight-quantized model against the
    float model as it was before the first pass."""
    if not plan.weights() or not ctx.held_out or ctx.reference is None:
        return None
    from edgequant.algorithms.base import quantized_sqnr

    return quantized_sqnr(weight_quantized(model, plan), ctx)
