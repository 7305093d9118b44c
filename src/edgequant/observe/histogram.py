"""A mergeable histogram on a global power-of-two grid, independent of how the data is batched.

The grid is symmetric around 0 with ``2 * bins`` bins of width ``w = 2**k``: bin ``j`` covers
``[(j - bins) * w, (j - bins + 1) * w)``, so 0 is always a bin edge.  ``k`` is the smallest integer
(not below ``K_MIN``) with ``max|x| < bins * 2**k`` over every value seen so far.

When a new value falls outside the grid, ``k`` grows by ``d`` and bin ``j`` moves to
``floor((j - bins) / 2**d) + bins``: each new bin is the exact union of ``2**d`` old ones, because
old and new edges are all multiples of the old width and 0 is an edge of both.  Binning is
``floor(x * 2**-k)``, which is exact since ``w`` is a power of two (float32 arithmetic while
``-126 <= k <= 0``, float64 otherwise, so that no value underflows).  Hence the final counts equal a one-shot
histogram of all the data at the final ``k``, whatever the batch sizes, the batch order or the
tensor shapes: histogram observers give the same range for batch size 1, 7 or everything at once.

Exact zeros (``+0.0`` and ``-0.0``) are also counted on their own in ``zeros`` (they stay in bin
``bins``, which covers ``[0, w)``): 0 is exactly representable after quantization, and ReLU outputs
put a large share of their values there, so the KL search treats them as an atom, not as part of a
bin whose mass may be spread (see :mod:`edgequant.observe.thresholds`).

Memory is ``2 * bins`` float64 counts (32 KiB for 2048 bins) plus a few scalars, whatever the number
of samples.  Counts are float64 holding integers, exact up to 2**53 values.
"""

from __future__ import annotations

import math

import numpy as np

K_MIN = -140  # 2**-140 * bins is below float32's smallest subnormal: every float32 range fits above it
_CHUNK = 1 << 18  # values per step: bounds the temporaries (float64 + int32: 3 MiB)


class PowerOfTwoHistogram:
    """Counts of finite values on the grid described in the module docstring."""

    def __init__(self, bins: int = 2048) -> None:
        self.bins = int(bins)
        self.counts = np.zeros(2 * self.bins, dtype=np.float64)
        self.k = K_MIN
        self.total: float = 0  # values counted (an int unless a subsample was weighted)
        self.zeros: float = 0  # exact zeros (+0.0 and -0.0), also counted in bin ``bins``
        self.lo = math.inf
        self.hi = -math.inf

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.k)

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes) + 64

    def edges(self) -> np.ndarray:
        """The ``2 * bins + 1`` bin edges of the signed grid."""
        return (np.arange(2 * self.bins + 1, dtype=np.float64) - self.bins) * self.width

    def required_k(self, amax: float) -> int:
        """Smallest ``k >= K_MIN`` with ``amax < bins * 2**k``."""
        if amax <= 0.0:
            return K_MIN
        _, k = math.frexp(amax / self.bins)  # amax/bins = m * 2**k with 0.5 <= m < 1
        k = max(K_MIN, k)
        while amax >= math.ldexp(float(self.bins), k):  # guard the division's rounding (exact compare)
            k += 1
        return k

    def grow(self, k: int) -> None:
        """Coarsen the grid to width ``2**k`` by merging ``2**(k - self.k)`` bins into one (exact)."""
        d = k - self.k
        if d <= 0:
            return
        if self.total:
            offsets = np.arange(2 * self.bins, dtype=np.int64) - self.bins
            target = np.floor_divide(offsets, 1 << min(d, 62)) + self.bins
            self.counts = np.bincount(target, weights=self.counts, minlength=2 * self.bins).astype(np.float64)
        self.k = k

    def update(
        self, values: np.ndarray, extremes: tuple[float, float] | None = None, weight: float = 1
    ) -> None:
        """Add finite values (callers drop non-finite and sentinel values first).

        ``extremes`` (min, max) widen the observed range and the grid beyond ``values``: a caller that
        bins a subsample passes the extremes of the whole array, so ``lo``/``hi`` stay exact.  Each
        value counts ``weight`` times (a subsample standing for ``weight`` times as many values).

        Chunks of ``_CHUNK`` values are binned one after the other; the grid grows between chunks
        when a chunk needs it, which is exact (module docstring), so the counts equal those of
        binning everything at the final ``k``.  Per chunk: min/max (unless ``extremes`` bound it), one
        scaling, then for a chunk without negative values a truncating cast to int32 (equal to floor
        there), else floor.
        """
        flat = values.reshape(-1)
        if extremes is not None:
            self.lo = min(self.lo, float(extremes[0]))
            self.hi = max(self.hi, float(extremes[1]))
            self.grow(self.required_k(max(abs(self.lo), abs(self.hi))))
        if flat.size == 0:
            return
        f64 = flat.dtype not in (np.float32, np.float16)
        for start in range(0, flat.size, _CHUNK):
            part = flat[start : start + _CHUNK]
            if extremes is None:
                lo, hi = float(part.min()), float(part.max())
                self.lo = min(self.lo, lo)
                self.hi = max(self.hi, hi)
                self.grow(self.required_k(max(abs(self.lo), abs(self.hi))))
            else:  # bounds of every chunk, already on the grid
                lo, hi = float(extremes[0]), float(extremes[1])
            # float32 is exact when -126 <= k <= 0: 2**-k is a float32, scaling by it keeps every bit
            # and |x * 2**-k| < bins.  For k > 0 a tiny negative x could underflow to -0.0 and land in
            # the wrong bin: use float64.
            if -126 <= self.k <= 0 and not f64:
                y = np.multiply(part, np.float32(math.ldexp(1.0, -self.k)), dtype=np.float32)
            else:
                y = np.multiply(part, math.ldexp(1.0, -self.k), dtype=np.float64)
            if lo >= 0.0:  # no negative value: truncation is floor, and the bins are the upper half
                counts = np.bincount(y.astype(np.int32), minlength=self.bins)
                self.counts[self.bins :] += counts if weight == 1 else weight * counts
            else:  # floor(y) + bins is an integer below 2 * bins <= 2**21: exact in float32 too
                np.floor(y, out=y)
                y += self.bins
                counts = np.bincount(y.astype(np.int32), minlength=2 * self.bins)
                self.counts += counts if weight == 1 else weight * counts
            self.total += weight * int(part.size)
            if lo <= 0.0 <= hi:  # +0.0 and -0.0
                self.zeros += weight * int(np.count_nonzero(part == 0))

    def update_split(
        self, bulk: np.ndarray, weight: float, tail: np.ndarray, extremes: tuple[float, float]
    ) -> None:
        """``update(bulk, extremes, weight)`` then ``update(tail, extremes)`` (the same counts, bit for
        bit) in one scaling and one ``np.bincount``: the tail's bins are offset past the bulk's.

        ``tail`` must hold no exact zero (its values have ``|x| >= t > 0``).  Falls back to the two
        calls when the parts differ in dtype or together exceed ``_CHUNK`` values.
        """
        flat, tl = bulk.reshape(-1), tail.reshape(-1)
        if flat.size + tl.size > _CHUNK or flat.dtype != tl.dtype or flat.size == 0:
            self.update(flat, extremes, weight)
            self.update(tl, extremes)
            return
        self.lo = min(self.lo, float(extremes[0]))
        self.hi = max(self.hi, float(extremes[1]))
        self.grow(self.required_k(max(abs(self.lo), abs(self.hi))))
        lo, hi = float(extremes[0]), float(extremes[1])
        both = np.concatenate([flat, tl])
        if -126 <= self.k <= 0 and flat.dtype in (np.float32, np.float16):
            y = np.multiply(both, np.float32(math.ldexp(1.0, -self.k)), dtype=np.float32)
        else:
            y = np.multiply(both, math.ldexp(1.0, -self.k), dtype=np.float64)
        span = self.bins if lo >= 0.0 else 2 * self.bins  # bins of one part's counts
        if lo >= 0.0:
            idx = y.astype(np.int32)  # truncation is floor on non-negative data
        else:
            np.floor(y, out=y)
            y += self.bins
            idx = y.astype(np.int32)
        idx[flat.size :] += span
        counts = np.bincount(idx, minlength=2 * span)
        part = self.counts[self.bins :] if lo >= 0.0 else self.counts
        part += counts[:span] if weight == 1 else weight * counts[:span]
        part += counts[span:]
        self.total += weight * int(flat.size)
        if lo <= 0.0 <= hi:  # +0.0 and -0.0 (only in the bulk)
            self.zeros += weight * int(np.count_nonzero(flat == 0))
        self.total += 1 * int(tl.size)

    def magnitude_counts(self) -> np.ndarray:
        """Counts of ``|x|`` on ``bins`` bins of width ``w`` over ``[0, bins * w]``.

        Positive bin ``bins + m`` holds ``[m w, (m+1) w)``; negative bin ``bins - 1 - m`` holds
        ``[-(m+1) w, -m w)``, i.e. ``|x|`` in ``(m w, (m+1) w]``; both fold into magnitude bin ``m``.
        """
        return self.counts[self.bins :] + self.counts[: self.bins][::-1]
