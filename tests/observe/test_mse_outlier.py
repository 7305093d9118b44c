"""The MSE observer clips a tensor's lone outlier, and the clipped range really has the smaller error.

The error is measured here with numpy, independently of the observer: uint8 asymmetric quantization
(scale ``(hi - lo) / 255``, integer zero point, round to nearest, saturate) of every value, then the
mean squared difference to the float values.
"""

from __future__ import annotations

import numpy as np

from edgequant.observe import create_observer


def _uint8_mse(x: np.ndarray, lo: float, hi: float) -> float:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x.astype(np.float64) / scale) + zero, 0, 255)
    return float(np.mean(((q - zero) * scale - x) ** 2))


def test_a_tensor_with_an_outlier_gets_a_clipped_range_with_less_error_than_minmax() -> None:
    """1,000,000 N(0, 1) values and one at 30: min-max spends its 256 levels on [-4.68, 30].

    Measured: min-max MSE 1.54e-3; the observer's range [-3.23, 20.7] has MSE 9.2e-4 (the outlier's
    clipping error included).  (The search scales both ends of the observed range by one factor, so
    it also trims the negative side, below the 0.01th percentile -3.71; see mse_range.)
    """
    x = np.random.default_rng(0).normal(0.0, 1.0, size=1_000_000).astype(np.float32)
    x[123_456] = 30.0
    obs = create_observer("mse", qbits=8)
    for part in np.array_split(x, 7):  # streamed in uneven batches
        obs.update(part)
    lo, hi = obs.compute()
    minmax = _uint8_mse(x, float(x.min()), float(x.max()))
    clipped = _uint8_mse(x, lo, hi)
    assert hi < 0.8 * float(x.max())  # the outlier is clipped
    assert hi >= float(np.percentile(x, 99.99))  # the positive bulk is kept
    assert clipped < 0.7 * minmax, (lo, hi, clipped, minmax)
