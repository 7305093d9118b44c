"""Observers: streaming range estimators with ``update(x)`` / ``compute() -> (lo, hi)``.

* ``minmax``: the running minimum and maximum.
* ``percentile``, ``entropy``, ``mse``: a :class:`PowerOfTwoHistogram` (exactly mergeable) read by
  the searches in :mod:`edgequant.observe.thresholds` (percentile; KL divergence after Migacz 2017;
  expected MSE after Banner et al. 2019).  Updates of at most ``SAMPLE_MAX`` values are binned whole,
  so with such batches the result does not depend on batch size, batch order or tensor shapes.  A
  larger update bins every value of its tail (``|x|`` at or above the ``TAIL_QUANTILE`` of the
  histogram so far) and a systematic subsample of the bulk below, weighted to the bulk's exact count
  (``HistogramObserver.update``): min, max, total and tail counts stay exact, the bulk's counts are
  estimates (ranges moved by up to 0.3 % between batch sizes 1 and 7 in tests/core/test_static.py).
  Binning costs about 2.5 ns a value (``np.bincount``), several min/max passes: binning everything
  took 2.0-2.6x min-max's calibration CPU time on the example and PP-OCR, and issue #17 §5 allows 2x;
  with ``SAMPLE_MAX`` 16,384 the example (tensors of 82-164 k values a batch) still took 2.0-2.4x,
  with 4,096 1.8-1.96x (interleaved runs on the loaded 2-core machine).

Mask sentinels are not data: values that are NaN, +-inf or have ``|x| >= 1e30`` (attention masks
use ``finfo(float32).min``) are dropped before any statistic and counted in ``sentinels``.

Memory per observer is constant: two floats for minmax, ``2 * bins`` float64 counts otherwise.
The returned range is the observed one, clipped by the method; it need not contain 0 (the scheme
layer widens it).  An observer that saw no finite value raises DataError from ``compute``.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from edgequant.errors import DataError, RecipeError
from edgequant.observe.histogram import PowerOfTwoHistogram
from edgequant.observe.thresholds import entropy_range, mse_range, percentile_range

SENTINEL_ABS = 1e30
SAMPLE_MAX = 1 << 12  # bulk values binned per update (module docstring)
TAIL_QUANTILE = 0.99  # values above this quantile of |x| are always binned, every one of them
METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")


@runtime_checkable
class Observer(Protocol):
    """Streaming range estimator; memory does not depend on how many values it has seen."""

    sentinels: int

    def update(self, x: np.ndarray) -> None: ...

    def compute(self) -> tuple[float, float]: ...

    @property
    def tracked_bytes(self) -> int: ...


def split_sentinels(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Flattened float data without mask sentinels, and how many sentinels were dropped."""
    values, dropped, _ = _finite(x)
    return values, dropped


def _finite(x: np.ndarray) -> tuple[np.ndarray, int, tuple[float, float] | None]:
    """``split_sentinels`` plus the (min, max) of what is kept (None when nothing is)."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise DataError(
            f"an observer received an array of dtype {arr.dtype}; only float tensors are observed.",
            "observe float activations only; integer tensors are not quantized from ranges.",
        )
    flat = arr.reshape(-1)
    if flat.size == 0:
        return flat, 0, None
    lo, hi = flat.min(), flat.max()  # NaN propagates into both
    if -SENTINEL_ABS < lo and hi < SENTINEL_ABS:
        return flat, 0, (float(lo), float(hi))
    keep = np.abs(flat) < SENTINEL_ABS  # False for NaN and +-inf too
    dropped = int(flat.size - np.count_nonzero(keep))
    kept = flat[keep]
    return kept, dropped, (float(kept.min()), float(kept.max())) if kept.size else None


def _outside(values: np.ndarray, t: float, extremes: tuple[float, float] | None) -> np.ndarray:
    """``|values| >= t`` as a mask (one comparison when no value is negative)."""
    if extremes is not None and extremes[0] >= 0.0:
        return values >= t
    return np.abs(values) >= t


def _no_data(method: str, sentinels: int) -> DataError:
    return DataError(
        f"the {method} observer saw no finite values (mask sentinels or non-finite values dropped: "
        f"{sentinels}), so it has no range to report.",
        "check that the calibration data reaches this tensor with real values.",
    )


class MinMaxObserver:
    """Running minimum and maximum."""

    method = "minmax"

    def __init__(self) -> None:
        self.lo = math.inf
        self.hi = -math.inf
        self.sentinels = 0

    @property
    def tracked_bytes(self) -> int:
        return 16

    def update(self, x: np.ndarray) -> None:
        values, dropped = split_sentinels(x)
        self.sentinels += dropped
        if values.size:
            self.lo = min(self.lo, float(values.min()))
            self.hi = max(self.hi, float(values.max()))

    def compute(self) -> tuple[float, float]:
        if self.lo > self.hi:
            raise _no_data(self.method, self.sentinels)
        return self.lo, self.hi


class HistogramObserver:
    """Base of the histogram observers: keeps the exact mergeable histogram."""

    method = "histogram"

    def __init__(self, bins: int, qbits: int, symmetric: bool) -> None:
        self.hist = PowerOfTwoHistogram(bins)
        self.qbits = qbits
        self.symmetric = symmetric
        self.sentinels = 0
        self.updates = 0  # subsampled updates so far
        self.tail_start = 0.0

    @property
    def tracked_bytes(self) -> int:
        return self.hist.nbytes

    def update(self, x: np.ndarray) -> None:
        """Bin ``x``: every value when it holds at most ``SAMPLE_MAX`` of them or the histogram is still
        empty; otherwise every value of the tail (``|x| >= t``, ``t`` the ``TAIL_QUANTILE`` of ``|x|``
        in the histogram, re-read at the 1st, 2nd, 4th, 8th ... subsampled update) and, of the bulk
        below ``t``, every ``s``-th value (``s = ceil(size / SAMPLE_MAX)``, the offset turning with each
        update), weighted so that they add up to the bulk's exact count.  The observed min and max, the
        total count and the counts at or above ``t`` stay those of every value."""
        values, dropped, extremes = _finite(x)
        self.sentinels += dropped
        stride = -(-values.size // SAMPLE_MAX)
        if stride > 1 and self.hist.total:
            self.updates += 1
            if self.updates & (self.updates - 1) == 0:  # a power of two
                self.tail_start = self._tail_start()
        if stride <= 1 or self.tail_start <= 0.0:
            self.hist.update(values, extremes)
            return
        t = self.tail_start
        tail = np.compress(_outside(values, t, extremes), values)  # = values[mask], faster
        bulk = values[self.updates % stride :: stride]
        bulk = np.compress(np.abs(bulk) < t, bulk)
        assert extremes is not None  # values is not empty here
        if bulk.size:  # the subsample stands for the bulk's exact count: totals and quantiles stay exact
            self.hist.update_split(bulk, (values.size - tail.size) / bulk.size, tail, extremes)
            return
        if values.size > tail.size:  # no subsampled value below t: bin the (small) bulk whole
            self.hist.update(values[np.abs(values) < t], extremes)
        self.hist.update(tail, extremes)

    def _tail_start(self) -> float:
        """``TAIL_QUANTILE`` of ``|x|`` in the histogram so far, the lower edge of its bin."""
        cdf = np.cumsum(self.hist.magnitude_counts())
        j = int(np.searchsorted(cdf, TAIL_QUANTILE * cdf[-1], side="left"))
        return float(j * self.hist.width)

    def compute(self) -> tuple[float, float]:
        if self.hist.total == 0:
            raise _no_data(self.method, self.sentinels)
        return self._range()

    def _range(self) -> tuple[float, float]:
        raise NotImplementedError


class PercentileObserver(HistogramObserver):
    method = "percentile"

    def __init__(self, percentile: float, bins: int, qbits: int, symmetric: bool) -> None:
        super().__init__(bins, qbits, symmetric)
        self.percentile = percentile

    def _range(self) -> tuple[float, float]:
        return percentile_range(self.hist, self.percentile, self.symmetric)


ENTROPY_FLOOR_PERCENTILE = 99.99


class EntropyObserver(HistogramObserver):
    """The KL threshold, never narrower than the 99.99th-percentile range.

    KL counts values, not their size: on activations whose channels differ in range (the rule in
    MobileNet-style nets) it clips the few wide channels to a fraction of their range, and those are
    the values that carry the signal (PP-OCRv4 rec: HardSwish outputs cut from 12.2 to 1.16, output
    SQNR -0.7 dB).  The percentile floor keeps KL's choice where it only trims outliers.
    """

    method = "entropy"

    def _range(self) -> tuple[float, float]:
        lo, hi = entropy_range(self.hist, self.qbits, self.symmetric)
        p_lo, p_hi = percentile_range(self.hist, ENTROPY_FLOOR_PERCENTILE, self.symmetric)
        return min(lo, p_lo), max(hi, p_hi)


class MseObserver(HistogramObserver):
    method = "mse"

    def _range(self) -> tuple[float, float]:
        return mse_range(self.hist, self.qbits, self.symmetric)


def create_observer(
    method: str,
    *,
    percentile: float = 99.99,
    bins: int = 2048,
    qbits: int = 8,
    symmetric: bool = False,
) -> Observer:
    """An observer for ``method`` (minmax | percentile | entropy | mse); RecipeError otherwise.

    ``bins`` is the resolution of ``|x|``: the signed histogram has ``2 * bins`` bins.
    """
    if method not in METHODS:
        raise RecipeError(
            f"unknown calibration method '{method}'; allowed: {', '.join(METHODS)}.",
            f"use one of {', '.join(METHODS)}.",
        )
    if isinstance(qbits, bool) or not isinstance(qbits, int) or not 2 <= qbits <= 16:
        raise RecipeError(f"qbits {qbits!r} is outside 2..16.", "use 8 (or 4, 16) activation bits.")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 16 <= bins <= 1 << 20:
        raise RecipeError(f"bins {bins!r} is outside 16..1048576.", "use the default 2048 bins.")
    if not 50.0 < float(percentile) <= 100.0:
        raise RecipeError(f"percentile {percentile} is outside (50, 100].", "use a value such as 99.99.")
    if method == "minmax":
        return MinMaxObserver()
    if method == "percentile":
        return PercentileObserver(float(percentile), bins, qbits, symmetric)
    if method == "entropy":
        if bins < 2**qbits:
            raise RecipeError(
                f"entropy calibration with {qbits}-bit activations needs bins >= {2**qbits}; got {bins}.",
                f"raise bins to {2**qbits} or more, or use percentile / mse for {qbits}-bit activations.",
            )
        return EntropyObserver(bins, qbits, symmetric)
    return MseObserver(bins, qbits, symmetric)
