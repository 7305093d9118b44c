"""AdaRound's low-bit grid and per-channel rounding chosen by output error (``adaround_scales``).

Expected values come from explicit samples: the layer's output error ``mean (x w_c - x~ w~_c)^2`` per
output channel, computed with numpy from the rows themselves, never from the Gram matrices the
module uses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from onnx import helper as h

from edgequant.algorithms import adaround_scales as scales
from edgequant.algorithms.layer_matrix import to_groups
from edgequant.schemes.spec import Granularity, QuantSpec, ScaleRule

SPEC = QuantSpec(bits=4, narrow_range=True, granularity=Granularity.PER_CHANNEL, axis=0)  # grid -7..7
NODE = h.make_node("Conv", ["x", "w"], ["y"], name="conv")  # group 1: rows of to_groups = output channels


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [6, 4, 3, 3] with one large weight per channel, float rows x [M, 36] and rounded-so-far rows x~."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w.reshape(6, -1)[np.arange(6), rng.integers(0, 36, 6)] *= 4.0  # outliers: weight-MSE clips them
    x = (rng.standard_normal((4000, 36)) * rng.uniform(0.2, 3.0, 36)).astype(np.float32)
    xq = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
    return w, x, xq


def _direct(w: np.ndarray, wq: np.ndarray, x: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Per output channel, mean over the rows of (x w_c - x~ w~_c)^2 minus mean (x w_c)^2."""
    wf, wr = w.reshape(len(w), -1), wq.reshape(len(wq), -1)
    y, yq = x.astype(np.float64) @ wf.T, xq.astype(np.float64) @ wr.T
    return np.mean((y - yq) ** 2, axis=0) - np.mean(y**2, axis=0)


def _grams(x: np.ndarray, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = len(x)
    return (xq.T @ xq / m)[None].astype(np.float32), (xq.T @ x / m)[None].astype(np.float32)


def _groups(m: np.ndarray) -> np.ndarray:
    return to_groups(NODE, m)


def test_row_errors_are_each_channels_output_error() -> None:
    w, x, xq = _data()
    wq = (w + 0.1 * np.random.default_rng(1).standard_normal(w.shape)).astype(np.float32)
    a, b = _grams(x, xq)
    got = scales.row_errors(_groups(wq), _groups(w), a, b)
    assert np.allclose(got, _direct(w, wq, x, xq), rtol=1e-4, atol=1e-4)


def test_grid_is_each_channels_least_output_error_ratio() -> None:
    """Brute force: every ratio of max|w_c|, round to nearest on -7..7, the output error from the rows."""
    w, x, xq = _data()
    a, b = _grams(x, xq)
    scale, zero = scales.grid_by_output_error(w, SPEC, _groups, a, b)
    amax = np.abs(w).reshape(6, -1).max(axis=1)
    errs = []
    for r in scales.RATIOS:
        s = (r * amax / 7.0).reshape(6, 1, 1, 1)
        errs.append(_direct(w, np.clip(np.rint(w / s), -7, 7) * s, x, xq))
    want = np.asarray(scales.RATIOS)[np.argmin(np.stack(errs), axis=0)] * amax / 7.0
    assert np.allclose(scale, want, rtol=1e-5) and not zero.any()
    # the search is not trivial here: some channels clip their outlier, some keep it
    assert (np.asarray(scales.RATIOS)[np.argmin(np.stack(errs), axis=0)] < 1.0).any()


def test_pick_rows_keeps_each_channels_least_error_candidate() -> None:
    w, x, xq = _data(3)
    a, b = _grams(x, xq)
    rng = np.random.default_rng(4)
    cands = []
    for r in (1.0, 0.7, 0.5):
        s = (r * np.abs(w).reshape(6, -1).max(axis=1) / 7.0).astype(np.float32)
        noise = rng.integers(-1, 2, w.shape)  # some roundings off by one step: worse in most channels
        q = np.clip(np.rint(w / s.reshape(6, 1, 1, 1)) + noise * (rng.random(w.shape) < 0.3), -7, 7)
        cands.append((q.astype(np.int64), s, np.zeros(6, np.int64)))
    q, s, z, wins = scales.pick_rows(cands, w, SPEC, _groups, a, b)
    per = np.stack([_direct(w, c[0] * c[1].reshape(6, 1, 1, 1), x, xq) for c in cands])  # [3, 6]
    best = np.argmin(per, axis=0)
    assert np.allclose(s, [cands[k][1][c] for c, k in enumerate(best)])
    assert all(np.array_equal(q[c], cands[k][0][c]) for c, k in enumerate(best))
    assert np.allclose(_direct(w, q * s.reshape(6, 1, 1, 1), x, xq), per.min(axis=0), rtol=1e-6)
    assert sum(wins) == 6 and not z.any()


def test_per_tensor_picks_one_grid_for_the_whole_tensor() -> None:
    w, x, xq = _data(5)
    a, b = _grams(x, xq)
    spec = QuantSpec(bits=4, narrow_range=True)
    scale, _ = scales.grid_by_output_error(w, spec, _groups, a, b)
    amax = float(np.abs(w).max())
    totals = [
        _direct(w, np.clip(np.rint(w / (r * amax / 7)), -7, 7) * (r * amax / 7), x, xq).sum()
        for r in scales.RATIOS
    ]
    assert np.shape(scale) == () and np.isclose(
        float(scale), scales.RATIOS[int(np.argmin(totals))] * amax / 7
    )


def test_rounding_only_some_channels_equals_rounding_all() -> None:
    """The second AdaRound runs only on the channels whose grid moved: on those it must give what the
    whole layer's optimisation gives (channels are independent; the loss keeps the layer's channel count)."""
    from edgequant.algorithms.adaround_opt import round_on_grid

    w, x, xq = _data(7)
    a, b = _grams(x, xq)
    scale = (np.abs(w).reshape(6, -1).max(axis=1) / 7.0).astype(np.float32)
    zero = np.zeros(6, np.int64)
    wg = _groups(w)
    full = round_on_grid(NODE, w, wg, SPEC, scale, zero, a, b, 300)
    rows = np.array([True, False, True, False, False, True])
    base = np.zeros_like(full)  # anything: the rows not optimised are taken from it
    part = round_on_grid(NODE, w, wg, SPEC, scale, zero, a, b, 300, rows, base)
    assert np.array_equal(part[rows], full[rows]) and not part[~rows].any()


def test_power_of_two_grids_are_not_searched() -> None:
    """The searched ratios give float scales (here: not powers of two), so a power-of-two spec (targets,
    --power-of-two) must keep quantize_weight's power-of-two grid."""
    w, x, xq = _data()
    a, b = _grams(x, xq)
    scale, _ = scales.grid_by_output_error(w, SPEC, _groups, a, b)
    assert not np.allclose(np.log2(scale), np.round(np.log2(scale)))
    assert scales.searchable(SPEC)
    assert not scales.searchable(replace(SPEC, scale_rule=ScaleRule.POWER_OF_TWO))
