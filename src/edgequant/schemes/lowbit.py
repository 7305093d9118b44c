"""Binary and ternary weights: the scale (and threshold) with the least squared error, numpy only.

**Binary** (``QuantSpec.bits == 1``): each weight becomes ``α · sign(w - c)`` with codes {-1, +1}
(zero point 0), one ``α`` per unit (tensor or output channel).  For fixed signs the squared error
``Σ (|w - c| - α)²`` is least at ``α = mean |w - c|`` (Rastegari et al. 2016, "XNOR-Net", eq. 3).
``c`` is 0, or with ``centred`` the unit's mean: the signs then split each channel into two halves
around its mean (the balanced weights of Qin et al. 2020, "IR-Net", Libra-PB); the mean itself is
not stored (the codes stay ±1).  Post-training that never lowers a unit's squared error: for any
``α > 0`` each term ``(w - α b)²`` is least at ``b = sign(w)`` (``(|w| - α)² <= (|w| + α)²``), and then
at ``α = mean |w|``, which is the plain fit (``centring_cost`` measures it per model: the tiny conv net
of the tests 1.77 -> -1.27 dB output SQNR).  IR-Net balances signs while training (QAT), where the
network adapts to them.  A weight exactly at ``c`` takes the sign of ``w`` (``+1`` at 0).

**Ternary** (``QuantSpec.ternary``: 2 bits, symmetric, narrow range): codes {-1, 0, +1}.  For a
threshold ``Δ`` the best scale is the mean ``|w|`` above it (Li & Liu 2016, "Ternary Weight
Networks"), and for a scale the best threshold is ``α / 2`` (round to nearest), so the optimum
keeps the ``k`` largest magnitudes for some ``k``; its error is ``Σ w² - S_k² / k`` with ``S_k``
their sum.  Here ``k`` is searched exactly (every ``k`` per unit, after one sort), not
approximated (TWN's ``Δ ≈ 0.7 · E|w|``), and the weight is then rounded to nearest on ``α``: the
threshold chosen by error is ``α / 2``.

Both are stored in int8 containers; the packed size counts 1 (binary) or 2 (ternary) bits a weight.
"""

from __future__ import annotations

import numpy as np

from edgequant.schemes.spec import Granularity, QuantSpec

FLOOR = 2.0**-16  # a unit's scale is at least this share of the widest unit's (as quantize_weight)


def _units(w: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, tuple[int, ...]]:
    """``w`` as [units, n] (one row per scale), and the shape of the scale array."""
    if spec.granularity is Granularity.PER_TENSOR:
        return w.reshape(1, -1), ()
    if spec.granularity is not Granularity.PER_CHANNEL or spec.axis is None:
        raise ValueError(f"{spec.name}: binary and ternary weights are per tensor or per channel")
    axis = spec.axis % w.ndim
    moved = np.moveaxis(w, axis, 0)
    return moved.reshape(moved.shape[0], -1), (w.shape[axis],)


def _expand(p: np.ndarray, shape: tuple[int, ...], spec: QuantSpec) -> np.ndarray:
    if spec.granularity is Granularity.PER_TENSOR:
        return np.asarray(p).reshape(())
    assert spec.axis is not None
    view = [1] * len(shape)
    view[spec.axis % len(shape)] = -1
    return np.asarray(p).reshape(view)


def centre(w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """The value each weight's sign is taken against: 0, or its unit's mean with ``spec.centred``."""
    if not spec.centred:
        return np.zeros((), np.float64)
    rows, shape = _units(np.asarray(w, np.float64), spec)
    return _expand(rows.mean(axis=1).reshape(shape), w.shape, spec)


def binary_codes(w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Codes in {-1, +1} (int64): ``sign(w - c)``, ties to ``sign(w)``, then to +1."""
    w64 = np.asarray(w, np.float64)
    d = w64 - centre(w64, spec)
    return np.where(d > 0, 1, np.where(d < 0, -1, np.where(w64 < 0, -1, 1))).astype(np.int64)


def binary_scale(w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Per unit, ``α = mean |w - c|`` (float32; floored at ``FLOOR`` of the largest, never 0)."""
    w64 = np.asarray(w, np.float64)
    rows, shape = _units(np.abs(w64 - centre(w64, spec)), spec)
    return _floored(rows.mean(axis=1).reshape(shape))


def ternary_scale(w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Per unit, the ``α`` of the least-squares ternary fit (module docstring; float32)."""
    rows, shape = _units(np.abs(np.asarray(w, np.float64)), spec)
    mags = -np.sort(-rows, axis=1)  # descending
    sums = np.cumsum(mags, axis=1)
    k = np.arange(1, mags.shape[1] + 1, dtype=np.float64)
    best = np.argmax(sums**2 / k, axis=1)  # error = Σw² - S_k²/k
    alpha = sums[np.arange(len(best)), best] / (best + 1)
    return _floored(alpha.reshape(shape))


def _floored(alpha: np.ndarray) -> np.ndarray:
    top = float(np.max(alpha)) if alpha.size else 0.0
    floor = max(top * FLOOR, 1e-12)
    return np.maximum(alpha, floor).astype(np.float32)


def centring_cost(w: np.ndarray, spec: QuantSpec) -> tuple[float, float, float]:
    """Squared errors of binary ``w`` under ``spec`` with and without centring, and ``Σ w²``: the
    first is never below the second (module docstring)."""
    w64 = np.asarray(w, np.float64)
    plain = QuantSpec(**{**spec.to_dict(), "centred": False})
    errs = [
        float(np.sum((w64 - _expand(binary_scale(w64, sp), w64.shape, sp) * binary_codes(w64, sp)) ** 2))
        for sp in (QuantSpec(**{**spec.to_dict(), "centred": True}), plain)
    ]
    return errs[0], errs[1], float(np.sum(w64**2))


def is_lowbit(spec: QuantSpec) -> bool:
    """Binary or ternary: the scale comes from this module, not from a range."""
    return spec.bits == 1 or spec.ternary
