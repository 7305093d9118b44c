"""Low-bit weight grids chosen by the layer's output error, and the per-channel best rounding, for AdaRound.

At 4 bits and below, ``quantize_weight`` clips each channel's range to the ratio that minimises the
*weight's* squared error (``schemes.qparams.mse_weight_ranges``).  What matters is the *output's*
error ``E||W x - W~ x~||^2``, and with AdaRound's statistics ``A = E[x~ x~^T]``, ``B = E[x~ x^T]``
(``[G, K, K]``) that error is known exactly for any candidate weight, one output channel (row of
``to_groups(W)``) at a time:

    e_c(W~) = w~_c A w~_c^T - 2 w~_c B w_c^T  (+ w_c E[x x^T] w_c^T, the same for every candidate)

so each channel's range can be chosen by that error (AIMET and Quark also pick weight encodings by
error before AdaRound, by weight MSE), and each channel can keep whichever rounding of a few
candidates has the least output error — the grids' round-to-nearest and their AdaRound results.
Because the rows are independent given ``A`` and ``B``, choosing per channel is exact on the
calibration statistics: the result is never worse there than round-to-nearest on the default grid.
On EfficientNet-Lite0's first project conv at 4 bits (all else float, 104 photos): AdaRound on the
weight-MSE grid KL 0.39, round-to-nearest on the output-error grid 0.079.

``RATIOS`` is the candidate set: fractions of each channel's min-max range.  Per tensor, one ratio
for the whole tensor (the sum of the rows' errors); per block or binary/ternary specs are not searched.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgequant.schemes.qparams import (
    dequantize,
    fake_quant,
    floor_dead_channels,
    qparams_from_range,
    weight_ranges,
)
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule

RATIOS = tuple(round(1.0 - 0.05 * i, 2) for i in range(15))  # 1.0, 0.95, ..., 0.3 of the min-max range


def searchable(spec: QuantSpec) -> bool:
    """Whether the grid is chosen by output error: 2-4 bits, per tensor or per channel, not binary/ternary,
    float scales (the candidate ratios give float scales: a power-of-two spec keeps ``quantize_weight``'s)."""
    return (
        2 <= spec.bits <= 4
        and not spec.ternary
        and spec.granularity is not Granularity.PER_BLOCK
        and spec.scale_rule is not ScaleRule.POWER_OF_TWO
    )


def row_errors(wq: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Output error per output channel, up to a constant per channel: ``[G, C, K]`` weights -> ``[G * C]``.

    ``wq`` the candidate, ``w`` the float weight, ``a = E[x~ x~^T]``, ``b = E[x~ x^T]`` (float32/64).
    """
    quad = np.sum(np.matmul(wq, a) * wq, axis=-1, dtype=np.float64)
    cross = np.sum(np.matmul(wq, b) * w, axis=-1, dtype=np.float64)
    return (quad - 2.0 * cross).reshape(-1)


def _per_row(p: np.ndarray, rows: int) -> bool:
    return np.size(p) == rows and rows > 1


def grid_by_output_error(
    w: np.ndarray,
    spec: QuantSpec,
    groups: Callable[[np.ndarray], np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    errors: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) shaped like ``quantize_weight``'s: per channel the ratio of ``RATIOS`` whose
    round-to-nearest weight has the least output error (per tensor: the least total).

    ``groups`` maps a weight-shaped array to ``[G, C, K]`` (``layer_matrix.to_groups`` for the node).
    ``errors``: per-channel errors of a ``[G, C, K]`` weight in place of ``row_errors`` with ``a``, ``b``
    (the error after the activation: ``adaround_post.PostLoss.row_errors``).
    """
    lo, hi = weight_ranges(w, spec)
    wg = groups(w)
    n_rows = wg.shape[0] * wg.shape[1]
    best_s: np.ndarray | None = None
    best_z: np.ndarray | None = None
    best_e = np.full(n_rows if _per_row(lo, n_rows) else 1, np.inf)
    for r in RATIOS:
        scale, zero = qparams_from_range(*floor_dead_channels(lo * r, hi * r, spec), spec)
        wq = fake_quant(w, scale, zero, spec)  # round-to-nearest as exported (half to even, in float64)
        e = row_errors(groups(wq), wg, a, b) if errors is None else errors(groups(wq))
        if best_e.size == 1:
            e = np.asarray([e.sum()])
        if best_s is None or best_z is None:
            best_s, best_z, best_e = np.asarray(scale), np.asarray(zero), e
            continue
        better = e < best_e
        if best_e.size == 1:
            if better[0]:
                best_s, best_z, best_e = np.asarray(scale), np.asarray(zero), e
        else:
            shape = np.shape(best_s)
            best_s = np.where(better.reshape(shape), scale, best_s).astype(np.float32)
            best_z = np.where(better.reshape(shape), zero, best_z).astype(np.int64)
            best_e = np.where(better, e, best_e)
    assert best_s is not None and best_z is not None
    return best_s.astype(np.float32), best_z.astype(np.int64)


def pick_rows(
    candidates: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    w: np.ndarray,
    spec: QuantSpec,
    groups: Callable[[np.ndarray], np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    errors: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Of candidates ``(q, scale, zero)`` (integers, grid), per output channel the one with the least
    output error (per tensor: the least total); returns ``(q, scale, zero, how many channels each won)``.
    ``errors`` as in ``grid_by_output_error``.
    """
    wg = groups(w)
    n_rows = wg.shape[0] * wg.shape[1]
    err = errors or (lambda wq: row_errors(wq, wg, a, b))
    errs = np.stack([err(groups(dequantize(q, s, z, spec))) for q, s, z in candidates])
    per_row = all(_per_row(s, n_rows) for _, s, _ in candidates)
    if not per_row:
        k = int(np.argmin(errs.sum(axis=1)))
        wins = [0] * len(candidates)
        wins[k] = n_rows
        return (*candidates[k], wins)
    pick = np.argmin(errs, axis=0)  # [rows]
    axis = (spec.axis or 0) % w.ndim
    q = np.stack([c[0] for c in candidates])  # [n, *w.shape]
    q_out = _select(q, pick, axis)
    s_out = np.stack([np.asarray(c[1]).reshape(-1) for c in candidates])[pick, np.arange(n_rows)]
    z_out = np.stack([np.asarray(c[2]).reshape(-1) for c in candidates])[pick, np.arange(n_rows)]
    shape = np.shape(candidates[0][1])
    wins = [int((pick == i).sum()) for i in range(len(candidates))]
    return q_out, s_out.reshape(shape).astype(np.float32), z_out.reshape(shape).astype(np.int64), wins


def _select(q: np.ndarray, pick: np.ndarray, axis: int) -> np.ndarray:
    """``q[pick[c], ..., c (on axis), ...]`` for every channel ``c``: [n, *shape] -> shape."""
    moved = np.moveaxis(q, axis + 1, 1)  # [n, C, ...]
    out = moved[pick, np.arange(len(pick))]  # [C, ...]
    return np.moveaxis(out, 0, axis)
