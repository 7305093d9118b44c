"""PowerOfTwoHistogram.update_split equals update(bulk, weight) then update(tail), bit for bit."""

from __future__ import annotations

import numpy as np

from edgequant.observe.histogram import PowerOfTwoHistogram


def _state(h: PowerOfTwoHistogram) -> tuple[object, ...]:
    return (h.k, h.total, h.zeros, h.lo, h.hi, h.counts.tobytes())


def test_update_split_equals_two_updates() -> None:
    rng = np.random.default_rng(3)
    for j in range(40):
        dtype = np.float32 if j % 4 else np.float64
        split = PowerOfTwoHistogram(int(rng.choice([64, 2048])))
        twice = PowerOfTwoHistogram(split.bins)
        for _ in range(4):
            x = (rng.standard_t(3.0, size=int(rng.integers(50, 20_000))) * rng.uniform(1e-3, 1e3)).astype(
                dtype
            )
            if j % 2:
                x = np.maximum(x, 0)  # non-negative, with exact zeros
            x[rng.random(x.size) < 0.1] = 0
            t = float(np.quantile(np.abs(x), 0.99))
            if t <= 0:
                continue
            tail, bulk = x[np.abs(x) >= t], x[np.abs(x) < t][:: int(rng.integers(1, 9))]
            ext = (float(x.min()), float(x.max()))
            weight = float(rng.choice([1.0, rng.uniform(1.0, 9.0)]))
            split.update_split(bulk, weight, tail, ext)
            twice.update(bulk, ext, weight)
            twice.update(tail, ext)
            assert _state(split) == _state(twice)
        assert split.total > 0 and split.zeros > 0
