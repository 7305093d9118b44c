"""PowerOfTwoHistogram.update bins chunk by chunk (growing the grid between chunks): the counts must
equal an independent one-shot float64 histogram at the final width, for every chunk size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgequant.observe import histogram
from edgequant.observe.histogram import K_MIN, PowerOfTwoHistogram


def _reference(x: np.ndarray, bins: int, k: int) -> np.ndarray:
    """Counts of floor(x / 2**k) + bins over 2 * bins bins, computed in float64 (exact for these data)."""
    idx = np.floor(np.asarray(x, np.float64).reshape(-1) * math.ldexp(1.0, -k)).astype(np.int64) + bins
    return np.bincount(idx, minlength=2 * bins).astype(np.float64)


def _data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "relu":  # non-negative, many exact zeros: the truncation path
        return np.maximum(rng.normal(size=(3, 5, 11, 13)), 0.0).astype(np.float32)
    if kind == "signed":
        return (rng.normal(size=(3, 5, 11, 13)) * 0.3).astype(np.float32)
    if kind == "growing":  # small values first, a wide value late: the grid grows between chunks
        x = (rng.normal(size=4000) * 1e-3).astype(np.float32)
        x[3500] = -37.0
        x[3900] = 2.5e4  # k > 0: float64 scaling
        return x
    if kind == "tiny":  # subnormal float32 values and signed zeros
        x = np.array([1e-45, -1e-45, 3e-42, -0.0, 0.0, -2e-40, 1e-38], np.float32)
        return np.tile(x, 50)
    if kind == "float16":
        return (rng.normal(size=(7, 300)) * 4).astype(np.float16)
    if kind == "float64":
        return rng.normal(size=2500) * 1e5
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["relu", "signed", "growing", "tiny", "float16", "float64"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 15])
def test_chunked_update_equals_a_one_shot_histogram(
    kind: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(histogram, "_CHUNK", chunk)
    x = _data(kind)
    h = PowerOfTwoHistogram(bins=64)
    for part in np.array_split(x.reshape(-1), 3):  # three updates of uneven length
        h.update(part)
    np.testing.assert_array_equal(h.counts, _reference(x, 64, h.k))
    assert h.total == x.size
    assert h.zeros == x.size - np.count_nonzero(x)
    assert (h.lo, h.hi) == (float(x.min()), float(x.max()))
    assert h.k == max(K_MIN, h.required_k(float(np.max(np.abs(x.astype(np.float64))))))


def test_values_just_below_a_bin_edge_stay_in_their_bin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Truncation (non-negative chunks) and floor (signed chunks) put x = edge - ulp in the lower bin."""
    monkeypatch.setattr(histogram, "_CHUNK", 4)
    h = PowerOfTwoHistogram(bins=16)
    h.update(np.array([15.0], np.float32))  # k = 0: unit bins
    below = np.nextafter(np.float32(3.0), np.float32(0.0))
    h.update(np.array([below, 3.0, 0.0, below], np.float32))  # non-negative chunk
    h.update(np.array([-below, -3.0, 1.0, -0.0], np.float32))  # signed chunk
    assert h.k == 0
    nonzero = {int(i) - 16: int(c) for i, c in enumerate(h.counts) if c}
    assert nonzero == {-3: 2, 0: 2, 1: 1, 2: 2, 3: 1, 15: 1}
    assert h.zeros == 2
