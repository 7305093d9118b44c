"""Power-of-two scales chosen to minimise the quantization error, not just rounded up.

A float scale ``s`` lies between ``2**floor(log2 s)`` and ``2**ceil(log2 s)``.  Rounding up never
clips but can double the step (4x the rounding noise); rounding down halves the step but clips the
values above ``qmax · 2**k``.  Which costs less depends on the values:

* weights (known): per unit (tensor or channel) the exact squared error of each candidate
  ``2**k`` for ``k`` in ``ceil(log2 s) - 2 .. ceil(log2 s)`` is measured and the least kept;
* activations (only a calibrated range ``[lo, hi]`` is known): values are modelled as uniform over
  the range, whose expected squared error at step ``s`` with clip point ``C = qmax·s`` is
  ``(C/A)·s²/12 + (A - C)³ / (3A)`` for ``C < A`` and ``s²/12`` otherwise (``A`` the range's
  magnitude); the lesser of the two neighbouring powers is kept.

The same choice is what fixed-point toolchains do by search ("fix position" calibration, e.g. AMD
Vitis AI's pof2s strategy); numpy only.
"""

from __future__ import annotations

import numpy as np

from edgequant.schemes.spec import Granularity, QuantSpec

CANDIDATES = 3  # 2**ceil, 2**(ceil-1), 2**(ceil-2)


def pow2_ceil(scale: np.ndarray) -> np.ndarray:
    return np.exp2(np.ceil(np.log2(np.asarray(scale, dtype=np.float64))))


def pow2_for_range(scale: np.ndarray, amax: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Power-of-two scales for ranges of magnitude ``amax`` (uniform model; see the module docstring)."""
    s_up = pow2_ceil(scale)
    s_down = s_up / 2.0
    a = np.maximum(np.asarray(amax, dtype=np.float64), 1e-30)
    qmax = float(spec.qmax - spec.qmin) / 2.0 if spec.symmetric else float(spec.qmax - spec.qmin)

    def expected(s: np.ndarray) -> np.ndarray:
        c = np.minimum(qmax * s, a)
        return (c / a) * s * s / 12.0 + (a - c) ** 3 / (3.0 * a)

    return np.where(expected(s_down) < expected(s_up), s_down, s_up)


def pow2_for_weight(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Per unit of ``spec``, the power-of-two scale with the least squared error on ``w`` (symmetric)."""
    from edgequant.schemes.qparams import expand_params

    w64 = np.asarray(w, dtype=np.float64)
    base = pow2_ceil(scale)
    best = base.copy()
    best_err = np.full(np.shape(base), np.inf)
    if spec.granularity is Granularity.PER_TENSOR:
        reduce: tuple[int, ...] | None = None
    else:
        assert spec.axis is not None
        axis = spec.axis % w64.ndim
        reduce = tuple(i for i in range(w64.ndim) if i != axis)
    z = expand_params(zero, w64.shape, spec)
    if spec.bits == 1:  # binary: the sign codes do not depend on the scale
        from edgequant.schemes.lowbit import binary_codes

        signs = binary_codes(w64, spec)
    for k in range(CANDIDATES):
        s = base / 2.0**k
        se = expand_params(s, w64.shape, spec)
        q = signs if spec.bits == 1 else np.clip(np.rint(w64 / se) + z, spec.qmin, spec.qmax)
        e = ((q - z) * se - w64) ** 2
        err = e.sum() if reduce is None else e.sum(axis=reduce)
        better = err < best_err
        best = np.where(better, s, best)
        best_err = np.where(better, err, best_err)
    return best
