"""GPTQ for blocked low-bit MatMul weights (``gptq``): rounding with error feedback.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", ICLR 2023 (Algorithm 1, with groups).  For ``y = x W``, ``W [K, N]``,
the layer error ``E||x W - x Q||^2 = tr(ΔW^T H ΔW)``, ``H = E[x^T x]`` ``[K, K]`` (calibration tokens,
only the real ones under ``recipe.token_mask``, see ``algorithms.tokens``; damped by 1 % of its mean
diagonal).  Rows of ``W`` (input channels) are quantized one at a time; the error of row ``k`` is
pushed onto the rows not yet quantized through the upper Cholesky factor ``U`` of ``H^-1``:
``W[k+1:] -= U[k, k+1:]^T (W[k] - Q[k]) / U[k, k]``.

Order (``recipe.gptq_act_order``):

* on (the default): "act-order" — rows in decreasing ``H[k, k]`` (the input channels with the most
  activation energy first, while the most rows are left to absorb their error), with *static groups*:
  each block's scale and zero point are chosen before any update, on the original rows, by
  ``block_clip.search`` (output error with the block's own ``H`` sub-matrix), since the blocks stay
  contiguous along ``K`` (the ``MatMulNBits`` layout) while the rows are visited out of order
  (the static-groups variant of the GPTQ reference code and AutoGPTQ's ``desc_act`` + ``static_groups``);
* off: rows in order, each block's grid chosen by the same search on its rows as updated so far.

all-MiniLM-L6-v2, asymmetric blocks of 32 (weights fake-quantized, float activations, Gram matrices of
64 calibration sentences, mean cosine on 64 others): round-to-nearest (symmetric) 0.9670, in order 0.9895,
act-order 0.9902, real tokens only 0.9918, both 0.9925; in order with damping 0.1 % / 10 % (not 1 %): 0.9884 /
0.9886; blocks of 16 (in order) 0.9919.

The model's weight becomes the dequantized result, which the exporter quantizes back to exactly those
integers on the scales written into the plan (``quantize_fixed``), as ``adaround`` does.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms import tokens
from edgequant.algorithms.base import PassOutcome, StatRequest, Stats, register
from edgequant.algorithms.block_clip import SAMPLES, _targets, search
from edgequant.plan import QuantPlan
from edgequant.recipe.schema import Recipe
from edgequant.schemes.qparams import dequantize, quantize, quantize_weight
from edgequant.schemes.spec import QuantSpec

DAMP = 0.01


def grams(model: onnx.ModelProto, xs: list[str], stats: Stats) -> dict[str, np.ndarray]:
    """``H [K, K]`` = mean over calibration tokens (the real ones, ``algorithms.tokens``) of ``x^T x``,
    per tensor ``x`` (last axis K)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in xs)
    sums: dict[str, np.ndarray] = {}
    rows = dict.fromkeys(xs, 0)
    mask = tokens.resolve(model, stats.recipe.token_mask)
    for batch in stats:
        values = stats.runtime.run(probe, batch, xs)
        for x in xs:
            v = tokens.rows(values[x], batch.get(mask) if mask else None)
            sums[x] = v.T @ v if x not in sums else sums[x] + v.T @ v
            rows[x] += len(v)
    return {x: sums[x] / max(rows[x], 1) for x in sums}


def gptq(
    w: np.ndarray, spec: QuantSpec, h: np.ndarray, act_order: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dequantized weight [K, N], scale, zero [K/B, N]) for ``w [K, N]`` blocked along K (axis 0),
    ``h [K, K]`` the input Gram matrix; ``act_order``: rows by decreasing ``H[k, k]``, static groups."""
    assert spec.block_size is not None
    b = spec.block_size
    k, n = w.shape
    h = h + DAMP * float(np.mean(np.diag(h))) * np.eye(k)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    scales, zeros = np.zeros((k // b, n), np.float32), np.zeros((k // b, n), np.int64)
    if act_order:  # static groups: every block's grid from the original rows
        for g in range(k // b):
            rows = slice(g * b, (g + 1) * b)
            s, z, _ = search(w[rows].astype(np.float32), spec, h[rows, rows][None])
            scales[g], zeros[g] = s[0], z[0]
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)
    hp = h[np.ix_(perm, perm)]
    u = np.linalg.cholesky(np.linalg.inv(hp)).T  # upper factor of H^-1 in visiting order
    work = w[perm].astype(np.float64)
    out = np.zeros_like(work)
    for i, r in enumerate(perm):
        g = r // b
        if not act_order and r % b == 0:  # dynamic groups: the block's grid on its rows as updated
            s, z, _ = search(work[i : i + b].astype(np.float32), spec, hp[i : i + b, i : i + b][None])
            scales[g], zeros[g] = s[0], z[0]
        s_g, z_g = scales[g : g + 1], zeros[g : g + 1]
        q = dequantize(quantize(work[i : i + 1], s_g, z_g, spec), s_g, z_g, spec)[0].astype(np.float64)
        out[i] = q
        err = (work[i] - q) / u[i, i]
        work[i + 1 :] -= np.outer(u[i, i + 1 :], err)
    result = np.zeros_like(out)
    result[perm] = out
    return result.astype(np.float32), scales, zeros


@register("gptq")
class Gptq:
    """GPTQ with per-block scales (module docstring)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest:
        return StatRequest(min(SAMPLES, self.recipe.calib_samples), "Gram matrices x^T x of MatMul inputs")

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]:
        stats.require_real(
            "gptq", "gptq fits each weight's rounding to real calibration inputs, and none were given."
        )
        targets, skipped = _targets(model, plan)
        outcome = PassOutcome(skipped=skipped)
        if not targets:
            outcome.nothing_to_do = "no MatMul weight is planned in blocks of 4 bits or fewer."
            return model, plan, outcome
        hs = grams(model, list(targets), stats)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        inits = {t.name: t for t in out.graph.initializer}
        for x, ws in targets.items():
            for wn in ws:
                e = plan.tensors[wn]
                assert e.spec.block_size is not None
                w = numpy_helper.to_array(inits[wn]).astype(np.float32)
                _, s0, z0 = quantize_weight(w, e.spec)
                wq0 = dequantize(quantize(w, s0, z0, e.spec), s0, z0, e.spec)
                wq, scale, zero = gptq(w, e.spec, hs[x], self.recipe.gptq_act_order)
                before = float(np.einsum("kn,kl,ln->", wq0 - w, hs[x], wq0 - w))
                after = float(np.einsum("kn,kl,ln->", wq - w, hs[x], wq - w))
                inits[wn].CopyFrom(numpy_helper.from_array(wq, wn))
                e.scale = [float(v) for v in scale.reshape(-1)]
                e.zero_point = [int(v) for v in zero.reshape(-1)]
                outcome.changed.append(f"{wn}: output error {before:.3e} -> {after:.3e}")
        return out, plan, outcome
