"""AdaRound's optimiser (Nagel et al. 2020): the rectified-sigmoid relaxation with its annealed regulariser,
minimising the layer's output error as a quadratic form in the rounded weight (``algorithms.adaround``).

``ITERATIONS`` 1,000 per layer, capped by ``MAC_BUDGET`` (each iteration costs one ``[C, K] x [K, K]``
product per group) and at least ``MIN_ITERATIONS``, far fewer than the paper's 10,000; at 4 bits and below
Adam's step is ``LR_LOWBIT`` 0.03 so that the relaxed weights travel far enough in that budget (8 bits
keep ``LR`` 0.01, measured there: EfficientNet-Lite0 at 8 bits KL 0.0040).  Measured one layer at a time on
EfficientNet-Lite0 at 4 bits (output error on calibration inputs): the first depthwise conv 1.54 at
LR 0.01 x 1,000 iterations, 0.90 at 0.01 x 4,000, 0.16 at 0.01 x 10,000, 0.16 at 0.03 x 1,000, 0.91
at 0.1 x 1,000; blocks.11's project conv 0.181 at 0.01 x 1,000, 0.120 at 0.03, 0.129 at 0.1.  Whole
model, W4A8: mean KL 0.148 at 0.01, 0.129 at 0.03 (benchmarks/results/bench_algorithms.md).  Neither more
nor less optimisation helped there: ``MAC_BUDGET`` and ``ITERATIONS`` x4 (8e10, 4,000) at 0.03 gave KL 0.177
for 2.2x the CPU time and half of both gave 0.182 (session 11, same draw); 10,000 iterations at 0.01
gave 0.143 (session 8).
"""

from __future__ import annotations

import numpy as np
import onnx
from threadpoolctl import threadpool_limits

from edgequant.algorithms.adaround_post import PostLoss
from edgequant.algorithms.layer_matrix import from_groups, to_groups
from edgequant.schemes.qparams import expand_params
from edgequant.schemes.spec import QuantSpec

ZETA, GAMMA = 1.1, -0.1
LAMBDA = 0.01
ITERATIONS = 1000  # per layer, as many as MAC_BUDGET allows, and at least MIN_ITERATIONS
MIN_ITERATIONS = 100
MAC_BUDGET = 2e10  # multiply-adds of the optimisation per layer (about 3-10 s on one 2-core CPU)
WARMUP = 0.2
BETA = (20.0, 2.0)
LR = 0.01  # Adam's step on V at 8 bits
LR_LOWBIT = 0.03  # and at 4 bits and below (module docstring)


def iterations_for(w: np.ndarray, wanted: int) -> int:
    """``wanted`` iterations, fewer for big layers (each costs ``w.size * K`` multiply-adds)."""
    per = float(w.size) * w.shape[-1]
    return int(min(wanted, max(MIN_ITERATIONS, MAC_BUDGET // max(per, 1.0))))


def rect_sigmoid(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h(V) and dh/dV (0 where h is clipped)."""
    sig = 1.0 / (1.0 + np.exp(-v))
    raw = sig * (ZETA - GAMMA) + GAMMA
    grad = np.where((raw > 0) & (raw < 1), sig * (1 - sig) * (ZETA - GAMMA), 0.0)
    return np.clip(raw, 0.0, 1.0), grad


def optimize_rounding(
    w: np.ndarray,
    s: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    iterations: int,
    offset: np.ndarray | float = 0.0,
    lr: float = LR,
    c_out: int = 0,
    post: PostLoss | None = None,
) -> np.ndarray:
    """Integers (minus zero point) for ``w`` [G, C, K] on scale ``s`` (broadcastable), bounds lo/hi.

    The weight is ``q · s + offset`` (``offset`` 0 except for binary weights, whose codes ±1 are
    the 0/1 grid on ``2s`` shifted by ``-s``).
    ``a`` = E[x~ x~^T], ``b`` = E[x~ x^T], both [G, K, K]; returns the rounded ``w / s`` [G, C, K].
    ``post``: the error after the layer's activation instead (``adaround_post``; ``a``, ``b`` unused).
    Small layers run BLAS on one thread: its threads cost more than they give on a [C, K] x [K, K]
    product below ~16 M multiply-adds (0.1 ms against 10 ms per product on a busy 2-core machine).
    """
    threads = 1 if w.size * a.shape[-1] < 1 << 24 else None
    with threadpool_limits(limits=threads, user_api="blas"):
        return _optimize(w, s, lo, hi, a, b, iterations, offset, lr, c_out, post)


def _optimize(
    w: np.ndarray,
    s: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    iterations: int,
    offset: np.ndarray | float = 0.0,
    lr: float = LR,
    c_out: int = 0,
    post: PostLoss | None = None,
) -> np.ndarray:
    ws = (w - offset) / s
    base = np.floor(ws)
    rest = np.clip(ws - base, 1e-4, 1 - 1e-4)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)  # h(v) == rest
    target = np.matmul(w, np.swapaxes(b, 1, 2)) if post is None else w  # W B^T: [G, C, K] (B^T = E[x x~^T])
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    c_out = c_out or w.shape[0] * w.shape[1]  # the loss is the mean over the layer's output channels
    warm = int(WARMUP * iterations)
    for it in range(iterations):
        h, dh = rect_sigmoid(v)
        qv = base + h
        inside = (qv >= lo) & (qv <= hi)
        wq = np.clip(qv, lo, hi) * s + offset
        if post is None:
            grad_w = 2.0 * (np.matmul(wq, a) - target) / c_out
        else:
            grad_w = post.grad(wq, c_out)
        grad = grad_w * s * inside * dh
        if it >= warm:
            beta = BETA[0] + (BETA[1] - BETA[0]) * (it - warm) / max(iterations - warm - 1, 1)
            d = 2 * h - 1
            grad += LAMBDA * (-beta * np.abs(d) ** (beta - 1) * np.sign(d) * 2.0) * dh
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad * grad
        v -= lr * (m1 / (1 - b1 ** (it + 1))) / (np.sqrt(m2 / (1 - b2 ** (it + 1))) + eps)
    h, _ = rect_sigmoid(v)
    return np.clip(base + (h >= 0.5), lo, hi)


def round_on_grid(
    node: onnx.NodeProto,
    w: np.ndarray,
    wg: np.ndarray,
    spec: QuantSpec,
    scale: np.ndarray,
    zero: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    iterations: int,
    rows: np.ndarray | None = None,
    base: np.ndarray | None = None,
    post: PostLoss | None = None,
) -> np.ndarray:
    """AdaRound's integers (with zero point, the weight's shape) on the grid ``scale``/``zero``.

    ``rows`` (bool per output channel) with ``base`` (integers on a grid that equals this one outside
    ``rows``): optimise only those channels and take ``base`` elsewhere.  The same result as optimising
    all (tests/algorithms/test_adaround_scales.py), because channels do not interact: the loss is a sum
    over rows of ``W~`` (shared ``A``, ``B``), still divided by the layer's channel count, and Adam is
    elementwise.  ``post``: fit the error after the activation (``adaround_post``) instead of ``a``, ``b``.
    """
    s_full = expand_params(scale, w.shape, spec).astype(np.float32) * np.ones_like(w)
    z_full = (expand_params(zero, w.shape, spec) * np.ones(w.shape)).astype(np.float32)
    s_g = to_groups(node, s_full)
    lo = to_groups(node, spec.qmin - z_full)
    hi = to_groups(node, spec.qmax - z_full)
    lr = LR_LOWBIT if spec.bits <= 4 else LR
    if spec.bits == 1:  # binary: codes 2u - 1 with u in {0, 1}, i.e. the grid 2s shifted by -s
        u = optimize_rounding(wg, 2 * s_g, 0 * lo, 0 * lo + 1, a, b, iterations, -s_g, lr, post=post)
        return (from_groups(node, 2 * u - 1, w.shape) + z_full).astype(np.int64)
    g, c = wg.shape[:2]
    if rows is not None and base is not None and (g == 1 or c == 1):
        pick = rows.reshape(g, c)
        sel: tuple[slice | np.ndarray, ...] = (slice(None), pick[0]) if g == 1 else (pick[:, 0],)
        a_s, b_s = (a, b) if g == 1 else (a[pick[:, 0]], b[pick[:, 0]])
        out = to_groups(node, base.astype(np.float32) - z_full).copy()
        out[sel] = optimize_rounding(
            wg[sel], s_g[sel], lo[sel], hi[sel], a_s, b_s, iterations, 0.0, lr, g * c,
            None if post is None else post.subset(sel),
        )  # fmt: skip
        return (from_groups(node, out, w.shape) + z_full).astype(np.int64)
    rounded = optimize_rounding(wg, s_g, lo, hi, a, b, iterations, 0.0, lr, post=post)
    return (from_groups(node, rounded, w.shape) + z_full).astype(np.int64)
