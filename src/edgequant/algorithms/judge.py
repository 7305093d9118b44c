"""What a ``before_ranges`` pass is judged on: the QDQ model it leads to, not its weights alone.

A pass before calibration changes the float model and plan; what it buys shows only once activations
are quantized too (SmoothQuant moves error from activations into weights, so with activations left
float it always looks like a loss; CLE changes activation ranges as well as weight ranges).  So the
runner (``base.run_pass``) scores the model before and after the pass the same cheap way: activation
ranges by min-max over the first ``JUDGE_CALIB`` calibration samples (the exact ranges of
tanh/sigmoid/recurrent outputs, mask tensors left float, Relu inputs tied to their outputs, as
calibration does), the QDQ model exported, its first output's SQNR against the float model measured on
the held-out samples (``base.quantized_sqnr``).  A plan without quantized activations (weight-only) is
scored with its weights quantized and nothing else, which is that model exactly.

Cost: per judged state one min-max stream over ``JUDGE_CALIB`` samples, one export and one run over
the held-out samples; a state judged once is not judged again (the state after one pass is the state
before the next).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from edgequant.plan import QuantPlan

if TYPE_CHECKING:
    from edgequant.algorithms.base import Context

JUDGE_CALIB = 32  # calibration samples the judge's min-max ranges come from


def judged_sqnr(model: onnx.ModelProto, plan: QuantPlan, ctx: Context) -> float | None:
    """Output SQNR (dB) on the held-out samples of the QDQ model ``model`` + ``plan`` lead to, with
    min-max activation ranges from ``JUDGE_CALIB`` calibration samples; None without held-out samples."""
    from edgequant.algorithms.base import Stats, quantized_sqnr, weight_quantized_sqnr

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


def judged_on(plan: QuantPlan) -> str:
    """What ``judged_sqnr`` measures, for the report row."""
    if not plan.activations():
        return "weights quantized as planned (no activation is quantized)"
    return f"the QDQ model, activation ranges by min-max over {JUDGE_CALIB} calibration samples"
