"""Quantization parameters from ranges, and the quantize / dequantize arithmetic (numpy only).

For a range ``[lo, hi]`` (always widened to contain 0 so that zero is exact, as padding needs):

* asymmetric: ``s = (hi - lo) / (qmax - qmin)``, ``z = round(qmin - lo / s)`` clipped to the grid;
* symmetric:  ``s = max(|lo|, |hi|) / ((qmax - qmin) / 2)``, ``z = 0`` (signed) or the grid centre
  (unsigned, e.g. 128 for uint8).

``power_of_two`` takes the neighbouring ``2**k`` with the lesser error (``schemes.pow2``).
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, give the affine scheme; Krishnamoorthi, arXiv:1806.08342, the per-channel one.
"""

from __future__ import annotations

import numpy as np

from edgequant.schemes.pow2 import pow2_for_range, pow2_for_weight
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule

_TINY = np.float32(1e-12)


def qparams_from_range(
    lo: np.ndarray | float, hi: np.ndarray | float, spec: QuantSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int64) for element-wise ranges ``lo``/``hi``."""
    lo_a = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi_a = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        amax = np.maximum(np.abs(lo_a), np.abs(hi_a))
        scale = amax / ((qmax - qmin) / 2.0)
        centre = 0 if spec.signed else (qmax + qmin + 1) // 2
        zero = np.full(scale.shape, centre, dtype=np.int64)
    else:
        scale = (hi_a - lo_a) / float(qmax - qmin)
        zero = np.zeros(scale.shape, dtype=np.int64)
    scale = np.where(scale <= 0, 1.0, scale)
    scale = np.maximum(scale, float(_TINY))
    if spec.scale_rule is ScaleRule.POWER_OF_TWO:  # the neighbouring power with less expected error
        amax = np.maximum(np.abs(lo_a), np.abs(hi_a)) if spec.symmetric else hi_a - lo_a
        scale = pow2_for_range(scale, amax, spec)
    if not spec.symmetric:
        zero = np.clip(np.round(qmin - lo_a / scale), qmin, qmax).astype(np.int64)
    return scale.astype(np.float32), zero


def weight_ranges(w: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of a weight per tensor, per channel (``spec.axis``) or per block.

    Per block, the result has the weight's shape with ``axis`` divided (rounded up) by block size,
    which is the layout ONNX's blocked DequantizeLinear (opset 21) expects for its scale.
    """
    if spec.granularity is Granularity.PER_TENSOR:
        return np.asarray(w.min()), np.asarray(w.max())
    assert spec.axis is not None
    axis = spec.axis % w.ndim
    if spec.granularity is Granularity.PER_CHANNEL:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        return w.min(axis=reduce), w.max(axis=reduce)
    assert spec.block_size is not None
    blocks = _to_blocks(w, axis, spec.block_size)
    return blocks.min(axis=axis + 1), blocks.max(axis=axis + 1)


def _to_blocks(w: np.ndarray, axis: int, block: int) -> np.ndarray:
    """Reshape so that ``axis`` becomes (n_blocks, block); the tail is padded with zeros."""
    n = w.shape[axis]
    n_blocks = -(-n // block)
    pad = n_blocks * block - n
    if pad:
        widths = [(0, 0)] * w.ndim
        widths[axis] = (0, pad)
        w = np.pad(w, widths)
    shape = (*w.shape[:axis], n_blocks, block, *w.shape[axis + 1 :])
    return w.reshape(shape)


def expand_params(p: np.ndarray, shape: tuple[int, ...], spec: QuantSpec) -> np.ndarray:
    """Broadcast per-tensor / per-channel / per-block params to a tensor of ``shape``."""
    if spec.granularity is Granularity.PER_TENSOR:
        return np.asarray(p).reshape(())
    assert spec.axis is not None
    axis = spec.axis % len(shape)
    if spec.granularity is Granularity.PER_CHANNEL:
        view = [1] * len(shape)
        view[axis] = -1
        return np.asarray(p).reshape(view)
    assert spec.block_size is not None
    return np.repeat(p, spec.block_size, axis=axis).take(range(shape[axis]), axis=axis)


def quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Integers (int64) on the spec's grid; round half to even, as ONNX QuantizeLinear does.
    Binary specs (1 bit) give the sign codes {-1, +1} of ``schemes.lowbit``, whatever the scale."""
    if spec.bits == 1:
        from edgequant.schemes.lowbit import binary_codes

        return binary_codes(x, spec)
    s = expand_params(scale, x.shape, spec).astype(np.float64)
    z = expand_params(zero, x.shape, spec)
    q = np.round(x.astype(np.float64) / s) + z
    return np.clip(q, spec.qmin, spec.qmax).astype(np.int64)


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, spec: QuantSpec) -> np.ndarray:
    s = expand_params(scale, q.shape, spec).astype(np.float32)
    z = expand_params(zero, q.shape, spec)
    return ((q - z) * s).astype(np.float32)


def fake_quant(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, spec: QuantSpec) -> np.ndarray:
    return dequantize(quantize(x, scale, zero, spec), scale, zero, spec)


def _unit_sums(e2: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Sum of ``e2`` over each unit that has its own scale (the tensor, a channel or a block)."""
    if spec.granularity is Granularity.PER_TENSOR:
        return np.asarray(e2.sum())
    assert spec.axis is not None
    axis = spec.axis % e2.ndim
    if spec.granularity is Granularity.PER_CHANNEL:
        return e2.sum(axis=tuple(i for i in range(e2.ndim) if i != axis))
    assert spec.block_size is not None
    return _to_blocks(e2, axis, spec.block_size).sum(axis=axis + 1)


CLIP_RATIOS = tuple(1.0 - 0.05 * i for i in range(11))  # 1.0, 0.95, ..., 0.5


def mse_weight_ranges(w: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the range ``ratio · [min, max]`` (ratio in ``CLIP_RATIOS``) with the least squared error.

    With 16 levels or fewer, the min-max grid wastes most of its steps on a few large weights;
    clipping them costs less than the rounding error it saves everywhere else.
    """
    lo, hi = weight_ranges(w, spec)
    w32 = np.asarray(w, dtype=np.float32)
    best = np.ones(np.shape(lo))
    best_err = np.full(np.shape(lo), np.inf)
    blocked = spec.granularity is Granularity.PER_BLOCK
    if blocked:  # work on the [.., n_blocks, block, ..] view: scales broadcast, no repeat
        assert spec.axis is not None and spec.block_size is not None
        axis = spec.axis % w32.ndim
        w32 = _to_blocks(w32, axis, spec.block_size)
    for r in CLIP_RATIOS:  # float32 in place: one temporary the size of w per ratio
        scale, zero = qparams_from_range(lo * r, hi * r, spec)
        if blocked:
            s = np.expand_dims(scale, axis + 1).astype(np.float32)
            z = np.expand_dims(zero, axis + 1).astype(np.float32)
        else:
            s = expand_params(scale, w32.shape, spec).astype(np.float32)
            z = expand_params(zero, w32.shape, spec).astype(np.float32)
        e = np.rint(w32 / s)  # round half to even, as quantize() does
        e += z
        np.clip(e, spec.qmin, spec.qmax, out=e)
        e -= z
        e *= s
        e -= w32
        e *= e
        err = e.sum(axis=axis + 1) if blocked else _unit_sums(e, spec)
        better = err < best_err
        best = np.where(better, r, best)
        best_err = np.where(better, err, best_err)
    return lo * best, hi * best


def floor_dead_channels(lo: np.ndarray, hi: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, ranges below 2^-16 of the widest channel's become ±(widest · 2^-16)
    (``quantize_weight``'s docstring says why); other granularities unchanged."""
    if spec.granularity is not Granularity.PER_CHANNEL:
        return lo, hi
    amax = np.maximum(np.abs(lo), np.abs(hi))
    floor = float(amax.max()) * 2.0**-16
    dead = amax < floor
    return np.where(dead, -floor, lo), np.where(dead, floor, hi)


def quantize_weight(w: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero) for a constant weight under ``spec``.

    8 bits and more use the min-max range; 4 bits and fewer the clipped range of
    ``mse_weight_ranges``; binary and ternary specs the least-squares scale of ``schemes.lowbit``.
    Per channel, a channel whose range is below 2^-16 of the widest
    channel's (a dead channel, or a BatchNorm folded with a near-zero gamma) gets the range
    ±(widest · 2^-16): its values round to about zero either way, and a scale near zero would push
    that channel's int32 bias (scale s_x·s_w) out of range, which keeps the whole Conv from running as
    an integer kernel.
    """
    from edgequant.schemes import lowbit

    if lowbit.is_lowbit(spec):  # binary / ternary: the least-squares scale (schemes.lowbit)
        scale = lowbit.binary_scale(w, spec) if spec.bits == 1 else lowbit.ternary_scale(w, spec)
        zero = np.zeros(np.shape(scale), np.int64)
        if spec.scale_rule is ScaleRule.POWER_OF_TWO:
            scale = pow2_for_weight(w, scale, zero, spec).astype(np.float32)
        return quantize(w, scale, zero, spec), scale, zero
    lo, hi = mse_weight_ranges(w, spec) if spec.bits <= 4 else weight_ranges(w, spec)
    scale, zero = qparams_from_range(*floor_dead_channels(lo, hi, spec), spec)
    if spec.scale_rule is ScaleRule.POWER_OF_TWO and spec.granularity is not Granularity.PER_BLOCK:
        scale = pow2_for_weight(w, scale, zero, spec).astype(np.float32)  # least squared error on w
    return quantize(w, scale, zero, spec), scale, zero


def quantize_fixed(
    w: np.ndarray, spec: QuantSpec, scale: list[float], zero: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero) for a weight whose scale and zero point were fixed earlier (flattened, as a
    plan entry holds them): an algorithm such as AdaRound chose the integers on that grid, and
    quantizing its dequantized weight again on the same grid gives back exactly those integers."""
    shape = np.shape(weight_ranges(w, spec)[0])
    s = np.asarray(scale, dtype=np.float32).reshape(shape)
    z = np.asarray(zero, dtype=np.int64).reshape(shape)
    return quantize(w, s, z, spec), s, z


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10·log10(Σx² / Σ(x - x̂)²); inf when exact."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(approx, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))
