"""Clipping ranges from a histogram: percentile, KL divergence (entropy) and MSE searches.

All three read a :class:`~edgequant.observe.histogram.PowerOfTwoHistogram` (signed counts on bins of
width ``w``) and return a range inside the observed ``[lo, hi]``.

**Percentile.**  Symmetric: the ``p``-th percentile ``t`` of ``|x|``, read from the cumulative
magnitude histogram with linear interpolation inside the bin, giving ``[max(lo, -t), min(hi, t)]``.
Asymmetric: the ``(100 - p)``-th and ``p``-th percentiles of ``x``.  (Clipping at a percentile is
the standard baseline in e.g. Wu et al., "Integer Quantization for Deep Learning Inference:
Principles and Empirical Evaluation", arXiv:2004.09602, 2020.)

**Entropy (KL divergence).**  Migacz, "8-bit Inference with TensorRT", GTC 2017.  With magnitude
counts ``h[0..n)`` (``n`` = last non-empty bin + 1) and ``L`` quantization levels, for every
candidate ``i`` in ``L..n``:

* reference ``P = h[0..i)`` with the outliers ``R = sum(h[i..n))`` added to ``P[i-1]``;
* candidate ``Q``: ``h[0..i)`` merged into ``L`` groups (bin ``b`` goes to group ``floor(b L / i)``),
  each group's count spread evenly over the bins of the group where ``P`` is non-zero;
* ``KL(P || Q)`` with both normalised; the threshold is ``i * w`` for the ``i`` with the least KL.

Exact zeros (``z`` of them, counted by the histogram) are an atom of their own, outside the bins:
0 is exactly representable whatever the threshold (the zero point is an integer), so the atom is
the same in ``P`` and ``Q`` and enters only the normalisations (``P`` by ``T = sum(h)``, ``Q`` by the
in-range mass ``c_i``, both including ``z``).  Writing ``S_i`` for the unnormalised KL sum over the
bins, ``KL_i = S_i / T + log(c_i / T)``, which to first order in the clipped mass ``T - c_i`` has
the same minimiser as the zero-free data.  Without the atom, ReLU outputs (often 30-60 % exact
zeros) break the search: the zeros sit in bin 0, which as soon as ``i > L`` shares a group with bin
1, and spreading the spike evenly over both costs about ``(z / T) log 2`` (0.2-0.35 nats), far more
than any clipping, so every ReLU tensor got the first candidate ``L * w``, a power of two in
``(amax / 8, amax / 4]`` for ``L = 256`` (``n`` is always in ``[bins / 2, bins]``).

``L = 2**(bits-1)`` for symmetric or signed data (one half of the grid covers ``[0, t]``) and
``L = 2**bits`` for asymmetric non-negative data (e.g. after ReLU).  Because ``Q`` is constant on
the non-zero bins of a group, ``sum P log Q`` needs only the group sums, so with prefix sums of
``h``, ``h log h`` and ``[h > 0]`` each candidate costs ``O(L)`` instead of ``O(i)``: the whole
search is ``O(n L)`` numpy work (about 10 ms for 2048 bins and 128 levels).  A candidate whose last
group is empty while outliers are clipped into it has ``KL = inf`` (Q gives them no mass).  (ONNX
Runtime's calibrator quantizes 128 bins into 128 levels by default, which makes Q == P: its entropy
threshold is then the maximum.  Ours uses the full histogram.)

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

_CELLS = 1 << 22  # candidates x levels per step of the vectorised KL search


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


def kl_divergences(magnitude: np.ndarray, levels: int, zeros: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ends ``i`` (in bins) and ``KL(P_i || Q_i)`` for each, per the module docstring.

    ``zeros`` of the counts of bin 0 are exact zeros: an atom kept out of the binned search (its own
    singleton group, equal in ``P`` and ``Q``); it only enters the normalisations.
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
    atom_plogp = float(_xlogx(np.array(zeros)))
    cand = np.arange(levels, n + 1, dtype=np.int64)
    out = np.empty(cand.size)
    step = max(1, _CELLS // (levels + 1))
    g = np.arange(levels + 1, dtype=np.int64)
    for s0 in range(0, cand.size, step):
        i = cand[s0 : s0 + step]
        outliers = c[n] - c[i]
        p_last = h[i - 1] + outliers
        sum_plogp = (hl[i - 1] + _xlogx(p_last) + atom_plogp) / total - np.log(total)
        bounds = (g[None, :] * i[:, None] + levels - 1) // levels  # group g is bins [bounds_g, bounds_g+1)
        group = c[bounds[:, 1:]] - c[bounds[:, :-1]]
        count = nz[bounds[:, 1:]] - nz[bounds[:, :-1]]
        count[:, -1] += (h[i - 1] == 0) & (outliers > 0)
        p_group = group.copy()
        p_group[:, -1] += outliers
        ok = group > 0
        log_norm = np.log(np.maximum(c[i] + zeros, 1.0))  # Q holds the in-range mass and the zero atom
        log_q = np.log(np.where(ok, group, 1.0)) - np.log(np.maximum(count, 1.0)) - log_norm[:, None]
        sum_plogq = np.where(ok, p_group * log_q, 0.0).sum(axis=1)
        if zeros > 0:
            sum_plogq += zeros * (np.log(zeros) - log_norm)
        kl = sum_plogp - sum_plogq / total
        kl[((p_group > 0) & ~ok).any(axis=1)] = np.inf
        out[s0 : s0 + step] = kl
    return cand, out


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def entropy_range(hist: PowerOfTwoHistogram, qbits: int, symmetric: bool) -> tuple[float, float]:
    lo, hi = hist.lo, hist.hi
    levels = entropy_levels(qbits, symmetric, lo)
    cand, kl = kl_divergences(hist.magnitude_counts(), levels, float(hist.zeros))
    if cand.size == 0:
        return lo, hi
    t = float(cand[int(np.argmin(kl))]) * hist.width
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
