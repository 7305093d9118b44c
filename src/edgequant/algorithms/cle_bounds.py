"""Cross-layer equalization through ReLU6 with exact per-channel bounds (``cle_bounds``, opt-in).

``cle`` crosses a ``Clip(0, hi)`` (ReLU6) only for channels whose calibration peak stays below
``hi`` with headroom: ``clip(y / S, 0, hi) != clip(y, 0, hi) / S`` once ``y`` reaches the bound.  On
BN-folded mobile nets most channels before the early ReLU6s do reach it (EfficientNet-Lite0: 44-78 %),
so little is equalized there, and per-tensor int8 stays at 55 % top-1 agreement with float.  Replacing
ReLU6 by ReLU before equalizing, as AIMET's CLE does, changes the model: on EfficientNet-Lite0 the
float model with ReLU agrees with the ReLU6 one on 27.9 % of images (benchmarks/pertensor_analysis.py).

This pass keeps the bounded ReLU6s exact for every input.  Behind a chosen ``Clip(0, hi)`` it puts a
``Min`` with a per-channel bound ``hi / S_i`` (what Vitis AI's ``ReLUk`` holds per channel) and lets
the equalization (``cle.equalize``, Nagel et al. 2019, sec. 4.1) only shrink that pair's channels
(``S_i >= 1``): ``min(clip(y / S, 0, hi), hi / S) == clip(y, 0, hi) / S``, and the next layer's input
channel carries ``S_i``.  The wide channels, which set a per-tensor grid's step, are the ones that
shrink.  ONNX's ``Clip`` has scalar bounds only, hence the ``Min``.  The activation grid is still
``[0, hi]``.

The price is speed: ONNX Runtime has no integer ``Min``, so each bounded Clip leaves a
DequantizeLinear -> Min -> QuantizeLinear island in float between two integer kernels (the plan marks
the ``Min`` quantized so that it reads the Clip's dequantized output and the Conv before it stays a
QLinearConv).  So only the Clips next to a sensitive layer get bounds: a layer whose weight alone,
rounded as planned (the rest float), brings the output SQNR on ``SAMPLES`` calibration samples below
``SENSITIVE_DB``.  Layers whose weights are all per channel are not candidates (this is for per-tensor
weights).  The other Clip pairs and the ReLU/identity pairs are equalized as ``cle`` does (its
headroom rule from channel peaks, exact on inputs within the calibration peaks' headroom).
EfficientNet-Lite0, per-tensor static int8: benchmarks/results/bench_algorithms.md.

After the rewrite the graph is planned afresh (``planner.resolve``); entries of the incoming plan
for tensors that still exist are kept.  Needs real calibration samples (the sensitivities and the
peaks); without them, with per-channel weights, or with nothing sensitive, it is a note ("nothing
to do") and the model is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms.base import PassOutcome, StatRequest, Stats, register
from edgequant.algorithms.cle import PEAK_SAMPLES, Pair, channel_peaks, equalize, find_pairs
from edgequant.plan import QuantPlan
from edgequant.recipe.schema import Recipe
from edgequant.schemes.spec import Granularity

SENSITIVE_DB = 20.0  # a layer whose weight rounding alone leaves less output SQNR than this is sensitive
SAMPLES = 16  # calibration samples the sensitivities are measured on
MIN_REASON = (
    "cle_bounds' per-channel ReLU6 bound: runs in float between DQ and Q (ONNX Runtime has no integer Min); "
    "it reads the quantized Clip output, so the layer before stays an integer kernel."
)


def alone_sqnr(model: onnx.ModelProto, plan: QuantPlan, weights: list[str], stats: Stats) -> dict[str, float]:
    """Per weight name, the output SQNR (dB, first output, ``SAMPLES`` samples) of ``model`` with only
    that weight quantized as ``plan`` says (a weight the plan does not quantize: ``inf``)."""
    from edgequant.algorithms.judge import fixed_or_fresh
    from edgequant.schemes.qparams import dequantize, sqnr_db

    batches = list(Stats(stats.open, min(stats.samples, SAMPLES), stats.runtime, stats.recipe))
    out_name = model.graph.output[0].name

    def run(m: onnx.ModelProto) -> np.ndarray:
        sess = stats.runtime.session(m, "the float model with one weight rounded (cle_bounds)")
        try:
            return np.concatenate([np.asarray(sess.run(b, [out_name])[out_name]) for b in batches])
        finally:
            sess.close()

    ref = run(model)
    inits = {t.name: i for i, t in enumerate(model.graph.initializer)}
    res: dict[str, float] = {}
    for name in weights:
        entry = plan.tensors.get(name)
        if entry is None or entry.role != "weight" or name not in inits:
            res[name] = float("inf")
            continue
        m = onnx.ModelProto()
        m.CopyFrom(model)
        t = m.graph.initializer[inits[name]]
        w = numpy_helper.to_array(t).astype(np.float32)
        q, scale, zero = fixed_or_fresh(w, entry)
        t.CopyFrom(numpy_helper.from_array(dequantize(q, scale, zero, entry.spec).astype(w.dtype), name))
        res[name] = float(sqnr_db(ref, run(m)))
    return res


def _per_tensor(plan: QuantPlan, weight: str) -> bool:
    e = plan.tensors.get(weight)
    return e is not None and e.role == "weight" and e.spec.granularity is not Granularity.PER_CHANNEL


def _bound_shape(model: onnx.ModelProto, p: Pair, channels: int) -> list[int]:
    """``[1, C, 1, ...]`` for a Conv output of the weight's rank, ``[C]`` for Gemm/MatMul."""
    if p.first.op_type != "Conv":
        return [channels]
    rank = next(len(t.dims) for t in model.graph.initializer if t.name == p.first.input[1])
    return [1, channels] + [1] * (rank - 2)


@register("cle_bounds")
class ClipBoundEqualization:
    """Opt-in: CLE through the sensitive ReLU6s, each Clip followed by a Min(per-channel bound) (exact)."""

    name = "cle_bounds"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest:
        if any(p.bound for p in find_pairs(model, through_clip=True)[0]):
            return StatRequest(
                min(self.recipe.calib_samples, max(PEAK_SAMPLES, SAMPLES)),
                "per-layer output SQNR with one weight rounded, and per-channel peaks before each ReLU6",
            )
        return StatRequest(0, "no Clip(0, hi) between two layers: nothing to read")

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]:
        pairs, skipped = find_pairs(model, through_clip=True)
        clips = [p for p in pairs if p.bound]
        if not clips:
            return (
                model,
                plan,
                PassOutcome(skipped=skipped, nothing_to_do="no layer -> Clip(0, hi) -> layer pair"),
            )
        if stats.synthetic or stats.samples < 1:
            why = "the layers' sensitivities need real calibration samples (--calib-data)"
            return model, plan, PassOutcome(skipped=skipped, nothing_to_do=why)
        cands = [
            p for p in clips if _per_tensor(plan, p.first.input[1]) or _per_tensor(plan, p.second.input[1])
        ]
        names = list(dict.fromkeys(w for p in cands for w in (p.first.input[1], p.second.input[1])))
        alone = alone_sqnr(model, plan, names, stats) if names else {}
        chosen = [p for p in cands if min(alone[p.first.input[1]], alone[p.second.input[1]]) < SENSITIVE_DB]
        if not chosen:
            why = (
                f"no layer next to a ReLU6 brings the output below {SENSITIVE_DB:g} dB alone"
                if cands
                else "every layer next to a ReLU6 has per-channel weights"
            )
            return model, plan, PassOutcome(skipped=skipped, nothing_to_do=why)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        clip_of = {p.first.output[0]: p for p in chosen}
        by_name = {n.name: n for n in out.graph.node}
        pairs = [Pair(by_name[p.first.name], by_name[p.second.name], p.through, p.bound) for p in pairs]
        rest = [p for p in pairs if p.bound and p.first.output[0] not in clip_of]  # cle's headroom rule
        peaks = channel_peaks(out, rest, stats) if rest else {}
        scales: dict[str, np.ndarray] = {}
        spread = equalize(out, pairs, peaks, scales, shrink_only=frozenset(clip_of))
        nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in out.graph.node]
        del out.graph.node[:]
        changed: list[str] = []
        for n in nodes:
            out.graph.node.append(n)
            s = scales.get(n.input[0], np.ones(1)) if n.op_type == "Clip" else np.ones(1)
            if n.input[0] not in clip_of or not (s > 1).any():
                continue
            p = clip_of[n.input[0]]
            name, mid = n.output[0], n.output[0] + "/cle_bounds_clip"
            bound = (p.bound / s).astype(np.float32).reshape(_bound_shape(out, p, len(s)))
            out.graph.initializer.append(numpy_helper.from_array(bound, name + "/cle_bounds_bound"))
            out.graph.node[-1].output[0] = mid
            out.graph.node.append(
                helper.make_node(
                    "Min", [mid, name + "/cle_bounds_bound"], [name], name=n.name + "/cle_bounds_min"
                )
            )
            typed = [v for v in out.graph.value_info if v.name == name]
            if typed:  # the Clip output keeps its type and shape under its new name (calibration reads it)
                out.graph.value_info.append(onnx.ValueInfoProto.FromString(typed[0].SerializeToString()))
                out.graph.value_info[-1].name = mid
            changed.append(
                f"{n.name}: Clip(0, {p.bound:g}) + Min(per-channel bound {float(bound.min()):.3g}..{p.bound:g}, "
                f"{int((s > 1).sum())} of {len(s)} channels below {p.bound:g}); alone: {p.first.input[1]} "
                f"{alone[p.first.input[1]]:.1f} dB, {p.second.input[1]} {alone[p.second.input[1]]:.1f} dB"
            )
        changed += [
            f"{p.first.name} -> {p.second.name}: channel range spread {spread[k]:.3g} -> {spread[k + ' after']:.3g}"
            for p in pairs
            for k in [f"{p.first.name} -> {p.second.name}"]
        ]
        return (
            out,
            _replanned(out, plan, self.recipe),
            PassOutcome(
                changed=changed, skipped=skipped, details={"bounded_clips": len(chosen), "pairs": len(pairs)}
            ),
        )


def _replanned(model: onnx.ModelProto, plan: QuantPlan, recipe: Recipe) -> QuantPlan:
    """The plan of the rewritten graph; entries of ``plan`` for tensors that still exist are kept."""
    from edgequant import planner
    from edgequant.runtime import detect

    new = planner.resolve(model, recipe, detect())
    new.opset = plan.opset
    new.notes = list(plan.notes)
    for name, entry in plan.tensors.items():
        if name in new.tensors:
            new.tensors[name] = entry
    for n in model.graph.node:  # read the Relu's DQ output, so that ORT fuses Conv + Relu into its kernel
        if n.op_type == "Min" and n.name.endswith("/cle_bounds_min"):
            new.decide(n.name, "Min", True, MIN_REASON)
    return new
