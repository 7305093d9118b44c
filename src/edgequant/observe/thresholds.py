"""Clipping ranges from a histogram: percentile, KL divergence (entropy) and MSE searches.

All three read a :class:`~edgequant.observe.histogram.PowerOfTwoHistogram` (signed counts on bins of
width ``w``) and return a range inside the observed ``[lo, hi]``.

**Percentile.**  Symmetric: the ``p``-th percentile ``t`` of ``|x|``, read from the cumulative
magnitude histogram with linear interpolation inside the bin, giving ``[max(lo, -t), min(hi, t)]``.
Asymmetric: the ``(100 - p)``-th and ``p``-th percentiles of ``x``.  (Clipping at a percentile is
the standard baseline in e.g. Wu et al., "Integer Quantization for Deep Learning Inference:
Principles and Empirical Evaluation", arXiv:2004.09602, 2020.)

**Entropy (KL divergence).**  Migacz, "8-bit Inference with TensorRT", GTC 2017.  With magnitude
counts ``h[0..n)`` (``n`` = last non-empty bin + 1) and ``L`` quantization levels, for candidates
``i`` in ``L..n``:

* reference ``P = h[0..i)`` with the outliers ``R = sum(h[i..n))`` added to ``P[i-1]``;
* candidate ``Q``: ``h[0..i)`` merged into ``L`` groups (bin ``b`` goes to group ``floor(b L / i)``),
  each group's count spread evenly over the bins of the group where ``P`` is non-zero;
* the divergence ``D(P || Q)`` with both divided by the total ``T``; the threshold is ``i * w`` for
  the ``i`` with the least ``D``.

``Q`` is *not* renormalised: it holds only the in-range mass ``c_i`` (the clipped values are what
the grid does not represent), so ``D`` is the generalised KL of unnormalised measures
(Csiszar's I-divergence) ``sum p log(p / q) - sum p + sum q = S_i / T - 1 + c_i / T``, with ``S_i``
the sum of ``P log(P / Q)`` over the bins in raw counts.  TensorRT's recipe renormalises ``Q``,
which gives ``S_i / T + log(c_i / T)``: the same to second order in the clipped fraction, but as
``c_i -> 0`` it rewards clipping everything, because ``P`` becomes one spike in its last bin that
the renormalised last group of ``Q`` matches (``KL ~ 0``).  Data away from 0 collapsed to one value
that way: hardsigmoid gates in ``[0.10, 0.32]`` got ``[0.10, 0.10]`` and an all-negative conv
output ``[-1.74, -0.76]`` got ``[-0.76, -0.76]`` (tensor SQNR 4-8 dB instead of 55), which took
PP-OCR cls to an output SQNR of 3 dB.  ``D`` is never below 0 and grows like ``-log(c_i / T)``.

Exact zeros (``z`` of them, counted by the histogram) are an atom of their own, outside the bins:
0 is exactly representable whatever the threshold (the zero point is an integer), so the atom is
the same in ``P`` and ``Q`` and enters only ``T`` and the in-range mass ``c_i + z``.  Without the
atom, ReLU outputs (often 30-60 % exact zeros) break the search: the zeros sit in bin 0, which as
soon as ``i > L`` shares a group with bin 1, and spreading the spike evenly over both costs about
``(z / T) log 2`` (0.2-0.35 nats), far more than any clipping.

``L = 2**(bits-1)`` for symmetric or signed data (one half of the grid covers ``[0, t]``) and
``L = 2**bits`` for asymmetric non-negative data (e.g. after ReLU).  Because ``Q`` is constant on
the non-zero bins of a group, ``sum P log Q`` needs only the group sums, so with prefix sums of
``h``, ``h log h`` and ``[h > 0]`` each candidate costs ``O(L)`` instead of ``O(i)``.  The search
is coarse then fine: ``_COARSE`` candidates evenly spaced over ``L..n`` (stride ``s``), then every
bin within ``s`` of the best one (about 1 ms per tensor for 2048 bins, instead of all ``n - L``
candidates).  A candidate whose last group is empty while outliers are clipped into it has
``D = inf`` (Q gives them no mass).  (ONNX Runtime's calibrator quantizes 128 bins into 128 levels
by default, which makes Q == P: its entropy threshold is then the maximum.  Ours uses the full
histogram.)

Limits.  ``D`` weighs bins by how many values they hold, not by their size: on a long, heavy tail
(hardswish of a Student-t input, max 58) it clips at about the 99.9th percentile (6.8), far below
what minimises the squared error; use ``mse`` or ``percentile`` for such tensors.

**MSE.**  Banner, Nahshan, Soudry, "Post training 4-bit quantization of convolutional networks for
rapid-deployment" (ACIQ), NeurIPS 2019: the expected error of clipping to ``[a, b]`` with step
``D = (b - a) / (2**bits - 1)`` is ``N_in * D**2 / 12`` (uniform rounding noise inside) plus
``sum over clipped x of (x - clip(x))**2``.  We evaluate it exactly on the histogram (bin centres)
for ``[a, b] = alpha * [lo0, hi0]``, ``alpha = j / bins`` for ``j = 1..bins``, where ``[lo0, hi0]``
is ``[-m, m]`` with ``m = max|x|`` (symmetric) or the observed range widened to contain 0, using
prefix sums of ``c``, ``c x`` and ``c x**2`` (``O(bins log bins)``) and take the minimum.
"""

from __future__ import annotations

import numpy as np

from edgequant.errors import DataError
from edgequant.observe.histogram import PowerOfTwoHistogram

_CELLS = 1 << 20  # candidates x levels per step of the vectorised KL search
_COARSE = 128  # candidates of the coarse KL pass (then refined bin by bin around its minimum)


def percentile_range(hist: PowerOfTwoHistogram, percentile: float, symmetric: bool) -> tuple[float, float]:
    lo, hi = hist.lo, hist.hi
    w = hist.width
    if symmetric:
        t = _quantile(hist.magnitude_counts(), 0.0, w, percentile / 100.0)
        return max(lo, -t), min(hi, t)
    start = -hist.bins * w
    q_hi = _quantile(hist.counts, start, w, percentile / 100.0)
    q_lo = _quantile(hist.counts, start, w, 1.0 - percentile / 100.0)
    return max(lo, q_lo), min(hi, q_hi)


def _quantile(counts: np.ndarray, start: float, w: float, q: float) -> float:
    """Value below which a fraction ``q`` of the counts lies, interpolated linearly in the bin."""
    cdf = np.cumsum(counts)
    target = q * cdf[-1]
    j = int(np.searchsorted(cdf, target, side="left"))
    j = min(j, counts.size - 1)
    before = cdf[j - 1] if j > 0 else 0.0
    frac = (target - before) / counts[j] if counts[j] > 0 else 0.0
    return float(start + (j + min(max(frac, 0.0), 1.0)) * w)


def entropy_levels(qbits: int, symmetric: bool, lo: float) -> int:
    """Quantization levels over ``[0, t]``: all ``2**bits`` only for asymmetric non-negative data."""
    return 2**qbits if (not symmetric and lo >= 0.0) else 2 ** (qbits - 1)


def kl_divergences(
    magnitude: np.ndarray, levels: int, zeros: float = 0.0, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ends ``i`` (in bins) and the divergence ``D(P_i || Q_i)`` of each (module docstring).

    ``candidates`` (bin counts) defaults to every ``i`` in ``levels..n``; those outside are dropped.
    ``zeros`` of the counts of bin 0 are exact zeros: an atom kept out of the binned search (its own
    singleton group, equal in ``P`` and ``Q``).
    """
    h = np.array(magnitude, dtype=np.float64)
    if not 0.0 <= zeros <= (h[0] if h.size else 0.0):
        raise DataError(
            f"kl_divergences got zeros={zeros} exact zeros but bin 0 holds {h[0] if h.size else 0.0} "
            "values; the exact zeros are part of bin 0.",
            "pass the histogram's own 'zeros' count with its magnitude_counts().",
        )
    nonzero = np.flatnonzero(h)
    if nonzero.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    n = int(nonzero[-1]) + 1
    h = h[:n]
    h[0] -= zeros
    if n <= levels:  # the histogram is no finer than the quantization grid: nothing to clip
        return np.array([n], dtype=np.int64), np.zeros(1)
    zero = np.zeros(1)
    c = np.concatenate([zero, np.cumsum(h)])
    safe = np.where(h > 0, h, 1.0)
    hl = np.concatenate([zero, np.cumsum(h * np.log(safe))])
    nz = np.concatenate([zero, np.cumsum(h > 0)])
    total = c[n] + zeros
    cand = (
        np.arange(levels, n + 1, dtype=np.int64) if candidates is None else np.asarray(candidates, np.int64)
    )
    cand = cand[(cand >= levels) & (cand <= n)]
    out = np.empty(cand.size)
    step = max(1, _CELLS // (levels + 1))
    g = np.arange(levels + 1, dtype=np.int64)
    shift = int(levels).bit_length() - 1 if int(levels) & (int(levels) - 1) == 0 else -1
    for s0 in range(0, cand.size, step):
        i = cand[s0 : s0 + step]
        outliers = c[n] - c[i]
        bounds = g[None, :] * i[:, None] + (levels - 1)
        if shift >= 0:  # levels is a power of two (always, from entropy_levels): a shift divides
            np.right_shift(bounds, shift, out=bounds)
        else:
            bounds //= levels  # group g is bins [bounds_g, bounds_g+1)
        group = np.diff(c[bounds], axis=1)
        count = np.diff(nz[bounds], axis=1)
        count[:, -1] += (h[i - 1] == 0) & (outliers > 0)
        ok = group > 0
        log_q = np.log(np.where(ok, group / np.maximum(count, 1.0), 1.0))  # 0 where the group is empty
        # sum over the bins of P log(P / Q), both as raw counts (the zero atom cancels); P equals the
        # group sums except in the last group, which also holds the outliers
        p_log_q = (group * log_q).sum(axis=1) + outliers * log_q[:, -1]
        s = hl[i - 1] + _xlogx(h[i - 1] + outliers) - p_log_q
        kept = (c[i] + zeros) / total  # the mass Q holds
        div = s / total - 1.0 + kept
        div[~ok[:, -1] & (outliers > 0)] = np.inf  # outliers clipped into a last group Q leaves empty
        out[s0 : s0 + step] = div
    return cand, out


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def entropy_range(hist: PowerOfTwoHistogram, qbits: int, symmetric: bool) -> tuple[float, float]:
    lo, hi = hist.lo, hist.hi
    levels = entropy_levels(qbits, symmetric, lo)
    magnitude = hist.magnitude_counts()
    nonzero = np.flatnonzero(magnitude)
    if nonzero.size == 0:
        return lo, hi
    n = int(nonzero[-1]) + 1
    stride = max(1, -(-(n - levels) // _COARSE))
    coarse = np.arange(levels, n + 1, stride)
    if coarse.size == 0 or coarse[-1] != n:  # the unclipped end is always a candidate
        coarse = np.append(coarse, n)
    cand, div = kl_divergences(magnitude, levels, float(hist.zeros), coarse)
    if stride > 1 and cand.size > 1:  # refine around the coarse minimum, bin by bin
        best = int(cand[int(np.argmin(div))])
        fine = np.arange(best - stride + 1, best + stride)
        cand, div = kl_divergences(magnitude, levels, float(hist.zeros), fine)
    t = float(cand[int(np.argmin(div))]) * hist.width
    return max(lo, -t), min(hi, t)


def mse_range(hist: PowerOfTwoHistogram, qbits: int, symmetric: bool) -> tuple[float, float]:
    lo, hi = hist.lo, hist.hi
    if symmetric:
        m = max(abs(lo), abs(hi))
        lo0, hi0 = -m, m
    else:
        lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    if hi0 - lo0 <= 0.0:
        return lo, hi
    alpha, err = mse_errors(hist, lo0, hi0, qbits)
    a = float(alpha[int(np.argmin(err))])
    return max(lo, a * lo0), min(hi, a * hi0)


def mse_errors(
    hist: PowerOfTwoHistogram, lo0: float, hi0: float, qbits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scale factors ``alpha`` and the expected squared error of clipping to ``alpha * [lo0, hi0]``."""
    counts = hist.counts
    centres = hist.edges()[:-1] + hist.width / 2.0
    zero = np.zeros(1)
    n0 = np.concatenate([zero, np.cumsum(counts)])
    n1 = np.concatenate([zero, np.cumsum(counts * centres)])
    n2 = np.concatenate([zero, np.cumsum(counts * centres * centres)])
    alpha = np.arange(1, hist.bins + 1, dtype=np.float64) / hist.bins
    a, b = alpha * lo0, alpha * hi0
    ja = np.searchsorted(centres, a, side="left")  # bins [0, ja) are clipped up to a
    jb = np.searchsorted(centres, b, side="right")  # bins [jb, end) are clipped down to b
    below = n2[ja] - 2.0 * a * n1[ja] + a * a * n0[ja]
    above = (n2[-1] - n2[jb]) - 2.0 * b * (n1[-1] - n1[jb]) + b * b * (n0[-1] - n0[jb])
    inside = n0[jb] - n0[ja]
    step = (b - a) / float(2**qbits - 1)
    err = inside * step * step / 12.0 + np.maximum(below, 0.0) + np.maximum(above, 0.0)
    return alpha, err
