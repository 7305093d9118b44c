"""Post-activation reconstruction for AdaRound: fit the rounding to ``f(W x + b)``, not to ``W x``.

Nagel et al. 2020 (sec. 4-5, "asymmetric reconstruction" with the activation function) minimise

    E || f(W x + b) - f(W~ x~ + b) ||^2

where ``f`` is the activation that follows the layer.  ``algorithms.adaround`` minimises the error
before ``f`` through the Gram matrices ``A = E[x~ x~^T]``, ``B = E[x~ x^T]`` (flat memory), which counts
errors where ``f`` clips both outputs (a saturated ReLU6) although they cost nothing downstream.

Here, for a layer whose output is read only by a ``Relu`` or a ``Clip`` with constant bounds (ReLU6),
the pass keeps a seeded random subsample of the input rows its statistics stream (the Gram form's
batches, no more): the rounded-so-far patches ``x~`` (``[G, n, K]``) and the float targets
``t = f(x W^T + b)`` (``[G, n, C]``, float32), at most ``MAX_ROWS`` rows and ``MAX_BYTES`` for ``x~``,
the float patches ``x`` (kept until the targets are made) and ``t`` together.  The
optimiser (``adaround_opt``, same rectified sigmoid, regulariser, annealing, Adam) then takes its
gradient from a window of ``batch`` shuffled rows per iteration:

    dL/dW~ = 2 / (batch * C_out) * ((f(z~) - t) * 1[lo < z~ < hi])^T x~,   z~ = x~ W~^T + b

(zero where ``f`` clips), the same scale as the Gram form's ``2 (W~ A - W B) / C_out``.  The grids and
per-channel candidates of ``adaround_scales`` are judged by the same post-activation error, and the
layer's bias is then fitted per channel to that error (``fit_bias``, a few Gauss-Newton steps) in place of
the pre-activation mean correction.  A layer whose memory cap allows fewer than ``MIN_ROWS`` rows keeps
the Gram form; ``ONLY`` limits the option to node-name prefixes (a measurement aid).

``POST_ACT`` switches it, off by default: measured worse on EfficientNet-Lite0 W4A8 (the bench's draw, 416
evaluation crops): mean KL 0.129 -> 0.147, agreement 76.2 -> 72.6 %, output SQNR 9.31 -> 8.83 dB, CPU 380 ->
920 s, peak 935 -> 1,696 MiB; with the mean shift instead of ``fit_bias`` KL 0.164; the example 19.53 ->
19.41 dB (benchmarks/results/bench_algorithms.md).  Only on the stem and blocks 0-2 (``ONLY``): KL 0.141.
With ``BATCHES`` 16 (the kept rows from all 16 calibration batches, not only the one batch of 8 photos the
Gram form streams for an early layer): KL 0.123, agreement 74.5 %, 9.40 dB, CPU 1,221 s: within the draw
spread (~0.015 KL) of the default, so not kept.  numpy only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

POST_ACT = False  # True: layers read only by a Relu/Clip fit the error after it (measured worse, docstring)
ONLY: tuple[str, ...] = ()  # node-name prefixes the error after the activation is limited to (empty: all)
FIT_BIAS = True  # after rounding, fit the layer's bias to the post-activation error (else the mean shift)
MAX_ROWS = 65536  # rows (patches) kept per layer
MAX_BYTES = 1 << 28  # 256 MiB for the kept x~, x and target rows together (float32)
MIN_ROWS = 1024  # fewer rows under the cap: the layer keeps the Gram form
BATCH_MACS = 4e7  # multiply-adds per iteration aimed at (forward and gradient), within the bounds below
BATCH_ROWS = (1024, 8192)  # rows per iteration: at least, at most
SEED = 0
BATCHES = 1  # stream at least this many batches for such a layer, keeping MAX_ROWS / BATCHES rows of each


def activation_after(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[float, float] | None:
    """``(lo, hi)`` of the ``Relu`` or constant-bound ``Clip`` that alone reads ``node``'s output, or None
    (another reader, a graph output, another op, or bounds that are not constants)."""
    out = node.output[0]
    if out in {o.name for o in model.graph.output}:
        return None
    readers = [n for n in model.graph.node if out in n.input]
    if len(readers) != 1:
        return None
    act = readers[0]
    if act.op_type == "Relu":
        return 0.0, float("inf")
    if act.op_type != "Clip":
        return None
    names = {name for name in act.input[1:3] if name}
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] in names and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    bounds = [-np.inf, np.inf]
    for i, name in enumerate(act.input[1:3]):
        if not name:
            continue
        if name not in consts or consts[name].size != 1:
            return None
        bounds[i] = float(consts[name].reshape(-1)[0])
    for a in act.attribute:  # opset < 11: min/max attributes
        if a.name in ("min", "max"):
            bounds[0 if a.name == "min" else 1] = float(a.f)
    return float(bounds[0]), float(bounds[1])


class PostRows:
    """Seeded subsample of a layer's input rows while its statistics stream (``add``), then the loss."""

    def __init__(self, act: tuple[float, float], g: int, k: int, c: int) -> None:
        self.act = act
        self.cap = int(min(MAX_ROWS, MAX_BYTES // (4 * g * (2 * k + c))))
        self.rng = np.random.default_rng(SEED)
        self.xq: list[np.ndarray] = []
        self.xf: list[np.ndarray] = []
        self.rows = 0

    @property
    def usable(self) -> bool:
        return self.cap >= MIN_ROWS

    def add(self, pq: np.ndarray, pf: np.ndarray) -> None:
        """Rows ``[G, m, K]`` of one batch (rounded-so-far and float patches, the same positions)."""
        m = pq.shape[1]
        take = np.sort(self.rng.choice(m, min(m, -(-self.cap // max(BATCHES, 1))), replace=False))
        self.xq.append(pq[:, take])
        self.xf.append(pf[:, take] if pf is not pq else self.xq[-1])
        self.rows += len(take)
        if self.rows > 2 * self.cap:  # keep memory bounded while streaming
            self._trim()

    def _trim(self) -> None:
        xq, xf = np.concatenate(self.xq, axis=1), np.concatenate(self.xf, axis=1)
        keep = np.sort(self.rng.choice(xq.shape[1], min(xq.shape[1], self.cap), replace=False))
        self.xq, self.xf, self.rows = [xq[:, keep]], [xf[:, keep]], len(keep)

    def loss(self, wg: np.ndarray, bias: np.ndarray) -> PostLoss:
        """The loss for float weights ``wg`` ``[G, C, K]`` and the layer's bias ``[G * C]``."""
        self._trim()
        order = self.rng.permutation(self.rows)  # shuffled once: each iteration reads a window
        xq, xf = self.xq[0][:, order], self.xf[0][:, order]
        self.xq, self.xf = [], []
        b = bias.reshape(wg.shape[0], 1, wg.shape[1]).astype(np.float32)
        t = act(np.matmul(xf, np.swapaxes(wg, 1, 2)) + b, self.act)
        return PostLoss(np.ascontiguousarray(xq), t, b, self.act)


def act(z: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return np.clip(z, bounds[0], bounds[1])


class PostLoss:
    """``E || f(x~ W~^T + b) - t ||^2 / C_out`` on kept rows ``x~`` [G, n, K], targets ``t`` [G, n, C]."""

    def __init__(self, xq: np.ndarray, t: np.ndarray, bias: np.ndarray, bounds: tuple[float, float]) -> None:
        self.xq, self.t, self.bias, self.bounds = xq, t, bias, bounds
        self.batch = min(BATCH_ROWS[0], xq.shape[1])
        self.start = 0

    @property
    def rows(self) -> int:
        return int(self.xq.shape[1])

    def set_batch(self, iterations: int, weights: int) -> None:
        """Rows per iteration: ``BATCH_MACS`` over the layer's 2 x ``weights`` multiply-adds per row."""
        want = BATCH_MACS / max(2 * weights, 1)
        self.batch = int(min(self.rows, max(BATCH_ROWS[0], min(BATCH_ROWS[1], want))))

    def subset(self, sel: tuple[slice | np.ndarray, ...]) -> PostLoss:
        """The loss of the channels ``sel`` picks from ``[G, C, K]`` weights (``adaround_opt.round_on_grid``)."""
        if len(sel) == 2:  # one group: channels
            out = PostLoss(self.xq, self.t[:, :, sel[1]], self.bias[:, :, sel[1]], self.bounds)
        else:  # groups of one channel each
            out = PostLoss(self.xq[sel[0]], self.t[sel[0]], self.bias[sel[0]], self.bounds)
        out.batch = self.batch
        return out

    def grad(self, wq: np.ndarray, c_out: int) -> np.ndarray:
        """dL/dW~ ``[G, C, K]`` on the next window of rows."""
        n, nb = self.rows, self.batch
        if self.start + nb > n:
            self.start = 0
        rows = slice(self.start, self.start + nb)
        self.start += nb
        x = self.xq[:, rows]
        z = np.matmul(x, np.swapaxes(wq, 1, 2).astype(np.float32)) + self.bias
        lo, hi = self.bounds
        e = (np.clip(z, lo, hi) - self.t[:, rows]) * ((z > lo) & (z < hi))
        return np.matmul(np.swapaxes(e, 1, 2), x) * (2.0 / (nb * c_out))

    def row_errors(self, wq: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
        """Mean squared error after the activation per output channel, ``[G, C, K]`` -> ``[G * C]``."""
        z = np.matmul(self.xq, np.swapaxes(wq, 1, 2).astype(np.float32)) + self.bias
        if shift is not None:
            z += shift
        e = act(z, self.bounds) - self.t
        return np.mean(np.square(e, dtype=np.float64), axis=1).reshape(-1)

    def fit_bias(self, wq: np.ndarray, steps: int = 8) -> np.ndarray:
        """Per-channel bias shift ``[G * C]`` that lowers the post-activation error of ``wq`` (Gauss-Newton:
        the step is the masked mean error over the fraction of unclipped rows); never raises it."""
        z0 = np.matmul(self.xq, np.swapaxes(wq, 1, 2).astype(np.float32)) + self.bias
        lo, hi = self.bounds
        shift = np.zeros_like(self.bias)
        for _ in range(steps):
            z = z0 + shift
            inside = (z > lo) & (z < hi)
            e = (np.clip(z, lo, hi) - self.t) * inside
            shift = shift - e.sum(axis=1, keepdims=True) / np.maximum(inside.sum(axis=1, keepdims=True), 1)
        before, after = self.row_errors(wq), self.row_errors(wq, shift)
        keep = (after < before).reshape(shift.shape)
        return np.where(keep, shift, 0.0).reshape(-1)
