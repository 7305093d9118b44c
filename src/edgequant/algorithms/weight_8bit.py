"""Which MatMuls of a blocked 4-bit weight-only model stay 8-bit (``recipe.weight_8bit: auto``).

Mixed 4/8 (``export.nbits``: ``MatMulNBits`` ``bits=8`` in the same blocks) buys accuracy at a
small size and speed cost; which MatMuls to keep 8-bit is chosen here by measured end-to-end
sensitivity, one MatMul at a time (no combinatorial search):

1. the baseline: every planned weight quantized as planned (after the passes: GPTQ's rounding and
   scales where it ran), float activations — the weight-only model exactly;
2. for each MatMul ``i`` with a 4-bit blocked weight, its *gain*: the output SQNR (dB, first output,
   padded positions left out: ``judge.real_positions``) with ``W_i`` alone replaced by the 8-bit
   quantization of its original float values (same blocks, round to nearest) minus the baseline's;
3. promotion in decreasing gain per weight value (the greedy order for a budget of 8-bit values),
   re-measuring the output SQNR with all promoted so far, until it reaches ``TARGET_DB``; a MatMul
   whose promotion would raise the 8-bit share of the MatMul weight values above ``MAX_SHARE``, or
   whose gain is below ``MIN_GAIN_DB`` (measurement noise on a few samples), is skipped.
   all-MiniLM-L6-v2, GPTQ asymmetric blocks of 128 (mean embedding cosine on 64 held-out sentences,
   all-4-bit 0.9871): in gain order, 4 FFN-1 MatMuls, 0.9902; per value, 3 FFN-1 and 4 attention
   value/output MatMuls (22.2 % of the values), 0.9935; with a 15 % cap 0.9884 / 0.9916.

Static low-bit weights (W4A8 and below, ``planning.mixed``): every Conv/ConvTranspose/Gemm/MatMul with a
low-bit weight is a candidate, chosen *before* the passes (AdaRound then rounds each layer on its chosen
grid), measured with float activations and round-to-nearest weights.  A layer's score is its *cost*: the
output SQNR with every candidate 8-bit minus that with this one alone 4-bit.  (Its one-at-a-time gain from
the all-4-bit model, as above, failed on EfficientNet-Lite0 W4A8: from -1.78 dB single layers gained
0.1-0.7 dB, and the 5 chosen left KL 0.149 after AdaRound against 0.129 with none.)  Layers are promoted in
decreasing cost, at most ``STATIC_MAX_LAYERS`` of them (k = max(1, ceil(0.2 x candidates))); the share of
weight values is reported, not capped.  A chosen weight gets the spec static int8 gives it
(``planning.mixed.eight_bit_spec``).

Samples: the first ``JUDGE_SAMPLES`` of the passes' held-out samples (``algorithms.context``: after
the calibration ones, never those the pipeline's check holds back, so the check's SQNR stays an
unbiased measure of this choice).  Cost: one ORT session (the candidate weights are fed as inputs),
``1 + M + promoted`` runs over those samples for ``M`` candidates.

A chosen weight returns to its original float values with bits 8 and no fixed scale (the exporter
quantizes it by round to nearest, as measured); its plan entry's note gives its gain.  The report
section (``weight_8bit``) lists every candidate: node, weight, values, gain (dB), 8-bit or not,
and the SQNRs before and after, the rule, the samples and the seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms.base import first_samples, sample_count
from edgequant.algorithms.judge import real_positions, weight_quantized
from edgequant.errors import DataError
from edgequant.plan import QuantPlan
from edgequant.schemes.qparams import dequantize, quantize_weight, sqnr_db
from edgequant.schemes.spec import Granularity, QuantSpec

if TYPE_CHECKING:
    from edgequant.algorithms.base import Context

AUTO = "auto"
TARGET_DB = 25.0  # output SQNR (dB, judge samples) at which promotion stops
MAX_SHARE = 0.25  # at most this share of the MatMul weight values 8-bit
STATIC_MAX_LAYERS = 0.2  # static low-bit weights: at most this share of the candidate layers (at least 1)
MIN_GAIN_DB = 0.1  # a smaller one-at-a-time gain is not promoted
JUDGE_SAMPLES = 8  # one batch: 41 runs took 94 s with 16 on all-MiniLM-L6-v2 (load 11 on 2 cores)


def is_auto(entries: tuple[str, ...]) -> bool:
    """``weight_8bit`` asks for the automatic choice (``["auto"]``)."""
    return tuple(entries) == (AUTO,)


def candidates(model: onnx.ModelProto, plan: QuantPlan, static: bool = False) -> dict[str, list[str]]:
    """Weight name -> the nodes reading it: every 4-bit weight planned in blocks (MatMul), or with ``static``
    every weight below 8 bits of a Conv/ConvTranspose/Gemm/MatMul -- but a Conv between 4-bit activations,
    which ORT would fuse into a QLinearConv it cannot load at 8 bits (``planning.ort_4bit``)."""
    from edgequant.planning.int_kernels import ModelGraph
    from edgequant.planning.ort_4bit import qlinearconv_4bit

    ops = ("Conv", "ConvTranspose", "Gemm", "MatMul") if static else ("MatMul",)
    out: dict[str, list[str]] = {}
    graph = ModelGraph(model)
    for n in model.graph.node:
        if n.op_type not in ops or len(n.input) < 2 or n.input[1] not in plan.tensors:
            continue
        if static and qlinearconv_4bit(n, plan, graph, 8):
            continue
        e = plan.tensors[n.input[1]]
        if e.role != "weight":
            continue
        if (static and e.spec.bits < 8) or (e.spec.bits == 4 and e.spec.granularity is Granularity.PER_BLOCK):
            out.setdefault(n.input[1], []).append(n.name)
    return out


def _as_inputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with the initializers ``names`` turned into graph inputs (one session,
    the weights fed per run)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = set(names)
    moved = [t for t in out.graph.initializer if t.name in keep]
    kept = [t for t in out.graph.initializer if t.name not in keep]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    out.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved)
    return out


def choose(
    float_model: onnx.ModelProto,
    model: onnx.ModelProto,
    plan: QuantPlan,
    ctx: Context,
    eight: Callable[[QuantSpec], QuantSpec] | None = None,
) -> tuple[onnx.ModelProto, QuantPlan, dict[str, Any]]:
    """(model, plan, report section): the layers whose weights go 8-bit (module docstring).

    ``float_model`` holds the original weights (before any pass), ``model``/``plan`` the state after
    the passes (static: before them).  ``eight`` maps a static low-bit weight's spec to its 8-bit one
    (``None``: weight-only blocked MatMuls, the same blocks at 8 bits).  Raises DataError when there are
    no held-out samples to measure on.
    """
    t0 = time.perf_counter()
    static = eight is not None
    cands = candidates(model, plan, static)
    cap, count_cap = (1.0, max(1, math.ceil(STATIC_MAX_LAYERS * len(cands)))) if static else (MAX_SHARE, None)
    if not cands:
        none = (
            "no Conv/Gemm/MatMul has a weight below 8 bits"
            if static
            else "no MatMul has a blocked 4-bit weight (MatMulNBits)"
        ) + ", so there is nothing to keep 8-bit"
        plan.notes.append(f"weight_8bit auto: {none}.")
        section: dict[str, Any] = {
            "target_db": TARGET_DB, "samples": 0, "stopped": none, "share_8bit": 0.0, "matmuls": [],
            "seconds": round(time.perf_counter() - t0, 3),
        }  # fmt: skip
        return model, plan, section
    if ctx.synthetic:
        raise DataError(
            "weight_8bit auto measures each MatMul's effect on the output over real samples, and no data "
            "was given.",
            "pass --calib-data PATH, or name the MatMuls to keep 8-bit in weight_8bit.",
        )
    batches = first_samples(ctx.held_out, JUDGE_SAMPLES)
    if not batches:
        raise DataError(
            "weight_8bit auto measures each MatMul's effect on held-out samples, and the data has none "
            "beyond the calibration ones.",
            "give more samples than calib_samples + check_samples, or name the MatMuls in weight_8bit.",
        )
    floats = {t.name: t for t in float_model.graph.initializer if t.name in cands}
    quant = weight_quantized(model, plan)
    inits = {t.name: t for t in quant.graph.initializer}
    four = {w: numpy_helper.to_array(inits[w]).astype(np.float32) for w in cands}
    w8: dict[str, np.ndarray] = {}
    specs8 = {
        w: (eight(plan.tensors[w].spec) if eight else replace(plan.tensors[w].spec, bits=8)) for w in cands
    }
    for w in cands:
        spec = specs8[w]
        x = numpy_helper.to_array(floats[w]).astype(np.float32)
        q, s, z = quantize_weight(x, spec)
        w8[w] = dequantize(q, s, z, spec).astype(np.float32)
    sess = ctx.runtime.session(_as_inputs(quant, list(cands)), "the weight-only model (weight_8bit auto)")
    ref_sess = ctx.runtime.session(float_model, "the float model (weight_8bit auto)")
    out = float_model.graph.output[0].name
    try:
        refs = [ref_sess.run(b, [out])[out] for b in batches]

        def measure(promoted: set[str]) -> float:
            weights = {w: (w8[w] if w in promoted else four[w]) for w in cands}
            pairs = [
                real_positions(b, r, sess.run({**b, **weights}, [out])[out])
                for b, r in zip(batches, refs, strict=True)
            ]
            return float(
                sqnr_db(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))
            )

        base = measure(set())
        top = measure(set(cands)) if static else base  # static: every candidate 8-bit
        gains, took = {}, {}
        for w in cands:
            t1 = time.perf_counter()
            # static: the cost of w alone at 4 bits among 8-bit layers (from a collapsed all-4-bit model one
            # layer's promotion is hardly measurable); weight-only: the gain of w alone at 8 bits
            gains[w] = top - measure(set(cands) - {w}) if static else measure({w}) - base
            took[w] = time.perf_counter() - t1
        sizes = {w: int(np.prod(floats[w].dims)) for w in cands}
        word = "cost" if static else "gain"  # static scores a layer by its cost (module docstring)
        chosen, sqnr, why, stopped = _promote(
            gains, sizes, base, TARGET_DB, measure, cap, count_cap, per_value=not static, word=word
        )
    finally:
        sess.close()
        ref_sess.close()
    count = sample_count(batches)
    new = onnx.ModelProto()
    new.CopyFrom(model)
    for t in new.graph.initializer:
        if t.name in chosen:
            t.CopyFrom(floats[t.name])

    def score(w: str) -> str:
        if static:
            return f"cost {gains[w]:.2f} dB (output SQNR lower by that with it alone 4-bit, the others 8-bit)"
        return f"+{gains[w]:.2f} dB output SQNR alone"

    for w in cands:
        e = plan.tensors[w]
        if w in chosen:
            e.spec, e.scale, e.zero_point = specs8[w], None, None
            form = "per channel, as static int8" if static else "MatMulNBits bits=8 in the same blocks"
            e.note = (
                f"kept 8-bit (weight_8bit auto): {score(w)}, measured on {count} held-out samples; {form} "
                "(mixed 4/8)."
            )
    share = sum(sizes[w] for w in chosen) / max(sum(sizes.values()), 1)
    if chosen:
        plan.notes.append(
            f"mixed 4/8 (weight_8bit auto): {len(chosen)} of {len(cands)} "
            f"{'low-bit' if static else 'blocked MatMul'} weights 8-bit ({share:.2%} of their values), output "
            f"SQNR {base:.2f} -> {sqnr:.2f} dB on the judge samples (weights only, activations float): "
            + ", ".join(cands[w][0] for w in chosen[:8])
            + (", ..." if len(chosen) > 8 else "")
            + "."
        )
    section = {
        "rule": (
            (
                "promote layers in decreasing cost (output-SQNR loss when the layer alone is 4-bit, every other "
                "layer 8-bit)"
                if static
                else "promote MatMuls in decreasing one-at-a-time output-SQNR gain per weight value"
            )
            + f" until the output SQNR reaches {TARGET_DB} dB; skip one whose {word} is below {MIN_GAIN_DB} dB"
            + (
                f"; at most {count_cap} of the {len(cands)} layers"
                if count_cap
                else f" or that would put more than {cap:.0%} of the candidate weight values at 8 bits"
            )
        ),
        "target_db": TARGET_DB,
        "samples": count,
        "measured_on": f"the first {count} of {ctx.held_out_on}",
        "sqnr_all_4bit_db": round(base, 2),
        "sqnr_db": round(sqnr, 2),
        "stopped": stopped,
        "share_8bit": round(share, 4),
        "seconds": round(time.perf_counter() - t0, 3),
        "matmuls": [
            {
                "nodes": cands[w],
                "weight": w,
                "values": sizes[w],
                f"{word}_db": round(gains[w], 3),
                "bits": 8 if w in chosen else 4,
                "why": why[w],
                "seconds": round(took[w], 3),
            }
            for w in sorted(cands, key=lambda v: -gains[v])
        ],
    }
    return new, plan, section


def _promote(
    gains: dict[str, float],
    sizes: dict[str, int],
    base: float,
    target: float,
    measure: Callable[[set[str]], float],
    cap: float = MAX_SHARE,
    count_cap: int | None = None,
    per_value: bool = True,
    word: str = "gain",
) -> tuple[list[str], float, dict[str, str], str]:
    """(chosen, output SQNR with them 8-bit, why per candidate, why promotion stopped): candidates in
    decreasing gain per weight value (the greedy order for a budget of 8-bit values), each re-measured
    together with those before it; one under ``MIN_GAIN_DB`` or over the ``MAX_SHARE`` cap is skipped."""
    total = max(sum(sizes.values()), 1)
    chosen: list[str] = []
    why: dict[str, str] = {}
    sqnr = base
    for w in sorted(gains, key=lambda v: -gains[v] / (max(sizes[v], 1) if per_value else 1)):
        if sqnr >= target:
            why[w] = f"not needed: the output SQNR reached {target} dB"
        elif count_cap is not None and len(chosen) >= count_cap:
            why[w] = f"over the cap: {count_cap} layer(s) already 8-bit"
        elif gains[w] < MIN_GAIN_DB:
            why[w] = f"{word} below {MIN_GAIN_DB} dB"
        elif (sum(sizes[c] for c in chosen) + sizes[w]) / total > cap:
            why[w] = f"over the cap: more than {cap:.0%} of the candidate weight values would be 8-bit"
        else:
            chosen.append(w)
            sqnr = measure(set(chosen))
            why[w] = f"8-bit: output SQNR {sqnr:.2f} dB with the {len(chosen)} chosen so far"
    if sqnr >= target:
        stopped = f"target {target} dB met" + ("" if chosen else " by 4 bits alone")
    else:
        stopped = (
            f"target {target} dB not met: every other candidate is over the cap or its {word} is under "
            f"{MIN_GAIN_DB} dB"
        )
    return chosen, sqnr, why, stopped


__all__ = ["AUTO", "STATIC_MAX_LAYERS", "candidates", "choose", "is_auto"]
