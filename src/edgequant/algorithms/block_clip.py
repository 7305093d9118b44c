"""Activation-aware clipping of blocked low-bit MatMul weights (``block_clip``).

Follows the clipping search of AWQ: Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han,
"AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration", MLSys 2024
(§3.2 and its ``auto_clip``): per quantization group, the clip range is shrunk by a ratio ``r`` from a
grid and the ratio that minimises the *output* error on calibration activations is kept, not the
weight error.  For a MatMul ``y = x W`` with ``W [K, N]`` in blocks of ``B`` along ``K`` (the
``MatMulNBits`` layout), block ``g`` of column ``n`` adds ``x_g · ΔW_g,n`` to ``y_n``, so its expected
squared output error is the quadratic form

    e(g, n, r) = ΔW_g,n(r)^T  H_g  ΔW_g,n(r),    H_g = E[x_g x_g^T]  ([B, B], calibration tokens)

with ``ΔW(r) = dequant(quant(W; r·range)) - W``.  Each (block, column) keeps the ratio of
``RATIOS`` (1.0 is round-to-nearest on the min-max range) or the default weight-MSE range of
``quantize_weight``, whichever gives the lower ``e``.  Rounding stays to nearest; only the range
changes, so symmetric and asymmetric grids and any block size work (a ``K`` that is not a multiple of
the block size is skipped with the reason).

The chosen scales and zero points go into the plan entry; the exporter quantizes on them
(``quantize_fixed``).  Only MatMuls with a 2-D constant weight planned per block along axis 0 at
4 bits or fewer are searched.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms import tokens
from edgequant.algorithms.base import PassOutcome, StatRequest, Stats, register
from edgequant.plan import QuantPlan
from edgequant.recipe.schema import Recipe
from edgequant.schemes.qparams import dequantize, qparams_from_range, quantize, quantize_weight, weight_ranges
from edgequant.schemes.spec import Granularity, QuantSpec

SAMPLES = 64  # calibration samples read for the block Gram matrices
RATIOS = tuple(float(r) for r in np.linspace(1.0, 0.5, 21))


def _targets(model: onnx.ModelProto, plan: QuantPlan) -> tuple[dict[str, list[str]], list[str]]:
    """{input tensor: [weight names]} of the MatMuls to search, and skipped lines."""
    quantized = {d.node for d in plan.quantized_nodes if d.graph == "main"}
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    out: dict[str, list[str]] = {}
    skipped: list[str] = []
    for n in model.graph.node:
        if n.op_type != "MatMul" or n.name not in quantized or len(n.input) < 2:
            continue
        e = plan.tensors.get(n.input[1])
        if (
            e is None
            or e.role != "weight"
            or e.spec.bits > 4
            or e.spec.granularity is not Granularity.PER_BLOCK
        ):
            continue
        shape = shapes.get(n.input[1], [])
        assert e.spec.block_size is not None
        if len(shape) != 2 or e.spec.axis not in (0, -2):
            skipped.append(f"{n.name}: weight is not 2-D blocked along K")
        elif shape[0] % e.spec.block_size:
            skipped.append(f"{n.name}: K={shape[0]} is not a multiple of block size {e.spec.block_size}")
        else:
            out.setdefault(n.input[0], []).append(n.input[1])
    return out, skipped


def block_grams(
    model: onnx.ModelProto, xs: list[str], block: dict[str, int], stats: Stats
) -> dict[str, np.ndarray]:
    """Per tensor ``x`` (last axis K): ``H [K/B, B, B]`` = mean over tokens of the block outer products
    (only the real tokens under ``recipe.token_mask``, see ``algorithms.tokens``)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in xs)
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {x: 0 for x in xs}
    mask = tokens.resolve(model, stats.recipe.token_mask)
    for batch in stats:
        values = stats.runtime.run(probe, batch, xs)
        for x in xs:
            flat = tokens.rows(values[x], batch.get(mask) if mask else None)
            v = flat.reshape(len(flat), -1, block[x])
            g = np.einsum("rgb,rgc->gbc", v, v)
            sums[x] = g if x not in sums else sums[x] + g
            rows[x] += len(v)
    return {x: sums[x] / max(rows[x], 1) for x in sums}


def output_error(
    w: np.ndarray, scale: np.ndarray, zero: np.ndarray, spec: QuantSpec, h: np.ndarray
) -> np.ndarray:
    """``e [K/B, N]``: the expected squared output error of each (block, column) on the grid given."""
    assert spec.block_size is not None
    d = dequantize(quantize(w, scale, zero, spec), scale, zero, spec) - w
    d = d.reshape(-1, spec.block_size, w.shape[1]).astype(np.float64)
    return np.einsum("gbn,gbc,gcn->gn", d, h, d)


def search(w: np.ndarray, spec: QuantSpec, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale, zero) [K/B, N] of least output error per (block, column), and that error."""
    _, scale, zero = quantize_weight(w, spec)  # the default (weight-MSE range) is a candidate too
    best = output_error(w, scale, zero, spec, h)
    lo, hi = weight_ranges(w, spec)
    for r in RATIOS:
        s, z = qparams_from_range(lo * r, hi * r, spec)
        e = output_error(w, s, z, spec, h)
        better = e < best
        scale, zero, best = np.where(better, s, scale), np.where(better, z, zero), np.where(better, e, best)
    return scale.astype(np.float32), zero, best


@register("block_clip")
class BlockClip:
    """Per-block clip ratio by output error (module docstring)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest:
        return StatRequest(
            min(SAMPLES, self.recipe.calib_samples), "per-block Gram matrices of MatMul inputs"
        )

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]:
        stats.require_real(
            "block_clip",
            "block_clip weighs each block's error by real calibration inputs, and none were given.",
        )
        targets, skipped = _targets(model, plan)
        outcome = PassOutcome(skipped=skipped)
        if not targets:
            outcome.nothing_to_do = "no MatMul weight is planned in blocks of 4 bits or fewer."
            return model, plan, outcome
        block = {x: int(plan.tensors[ws[0]].spec.block_size or 0) for x, ws in targets.items()}
        grams = block_grams(model, list(targets), block, stats)
        inits = {t.name: t for t in model.graph.initializer}
        for x, ws in targets.items():
            for wn in ws:
                e = plan.tensors[wn]
                w = numpy_helper.to_array(inits[wn]).astype(np.float32)
                _, s0, z0 = quantize_weight(w, e.spec)
                before = float(output_error(w, s0, z0, e.spec, grams[x]).sum())
                scale, zero, err = search(w, e.spec, grams[x])
                e.scale = [float(v) for v in scale.reshape(-1)]
                e.zero_point = [int(v) for v in np.asarray(zero).reshape(-1)]
                outcome.changed.append(
                    f"{wn}: output error {before:.3e} -> {float(err.sum()):.3e} (per-block clip ratio)"
                )
        return model, plan, outcome
