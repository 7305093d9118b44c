"""The ``accurate`` preset is never below the default on the samples that judge it (issue #17 §7).

Its range search (``algorithms.calib_search``) holds the default's ranges as a candidate and keeps them
unless another candidate's held-out output SQNR is higher by more than ``SWITCH_DB`` with 95 %
confidence (bootstrap) without a lower top-1 agreement; its passes are undone when they lower the same samples' SQNR (the pass guard).  The
tiny classifier is built here, seeded; the expected values come from our own ORT sessions on the
samples the search and the passes are judged on (the 32 after the 128 calibration samples, the check's
32 samples left out), and numpy.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.algorithms.calib_search import SWITCH_DB, TIE_DB, _better, sqnr_gain_bounds
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import fan_in_weight

RT = OrtRuntime(allow_spinning=False)
N = 256


def _classifier(seed: int = 0) -> onnx.ModelProto:
    """Conv(3->8) -> Relu -> Conv(8->8) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->5)."""
    rng = np.random.default_rng(seed)

    w = partial(fan_in_weight, rng)

    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        h.make_node("Flatten", ["p"], ["f"], name="flat"),
        h.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    b1 = nh.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b1")
    bf = nh.from_array(np.zeros(5, np.float32), "bf")
    g = h.make_graph(
        nodes,
        "tiny_classifier",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 12, 12])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 5])],
        [w("w1", 8, 3, 3, 3), b1, w("w2", 8, 8, 3, 3), w("wf", 5, 8), bf],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _data() -> np.ndarray:
    """Heavy-tailed inputs (Student-t, 3 degrees of freedom), so clipping choices matter."""
    return np.random.default_rng(5).standard_t(3, size=(N, 3, 12, 12)).astype(np.float32)


def _judge_samples(x: np.ndarray) -> np.ndarray:
    """The 32 samples after the first 128 of those the check does not hold back (every 8th from 4)."""
    rest = np.setdiff1d(np.arange(N), np.arange(4, N, 8))
    return x[rest[128:160]]


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(10.0 * np.log10((ref**2).sum() / ((ref - got.astype(np.float64)) ** 2).sum()))


def test_accurate_is_never_below_the_default_on_its_judging_samples() -> None:
    """Measured: default 41.68 dB, accurate 42.05 dB (CLE 36.77 -> 36.98 on the judge's min-max
    ranges, the search keeps the default's entropy ranges: minmax 38.26, percentile 39.56, entropy
    42.05, mse 37.46 dB; bias correction changes nothing); top-1 agreement 100 % for both."""
    model, x = _classifier(), _data()
    part = _judge_samples(x)
    ref = RT.run(model, {"x": part})["y"]
    default = edgequant.quantize(model, x, runtime=RT)
    accurate = edgequant.quantize(model, x, "accurate", runtime=RT)
    search = accurate.report["calibration"]["search"]
    assert search["default"] == "entropy" and search["measured_on"] == "32 held-out samples"
    scores, agree = search["output_sqnr_db"], search["top1_agreement"]
    assert set(scores) == set(agree) == {"minmax", "percentile", "entropy", "mse"}
    got = {n: RT.run(r.model, {"x": part})["y"] for n, r in (("default", default), ("accurate", accurate))}
    s = {n: _sqnr(ref, g) for n, g in got.items()}
    a = {n: float(np.mean(g.argmax(1) == ref.argmax(1))) for n, g in got.items()}
    assert abs(s["accurate"] - scores[search["chosen"]]) < 0.01 or accurate.report["algorithms"]
    assert s["accurate"] >= s["default"] - TIE_DB, (s, search)
    if abs(s["accurate"] - s["default"]) <= TIE_DB:
        assert a["accurate"] >= a["default"]


def test_a_candidate_must_beat_the_default_significantly_without_losing_agreement() -> None:
    """Per-row squared errors of 32 rows: ``small`` is 0.8x ``base`` on every row (a gain of exactly
    0.969 dB on any resampling: above ``SWITCH_DB``), ``slight`` 0.9x (0.458 dB: certain but below
    it), ``noisy`` 0.9x on 16 rows and 1.1x on 16 others of very different sizes (the gain swings
    both ways across resamplings: a tie)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(1.0, 2.0, 32)
    sizes = np.where(np.arange(32) % 2 == 0, 0.9, 1.1) * np.where(np.arange(32) < 16, 10.0, 1.0)
    noise = {"default": base, "small": 0.8 * base, "slight": 0.9 * base, "noisy": base * sizes / sizes.mean()}
    lo, hi = sqnr_gain_bounds(noise["small"], noise["default"])
    assert abs(lo - 10 * np.log10(1 / 0.8)) < 1e-9 and abs(hi - lo) < 1e-9 and lo > SWITCH_DB
    lo, hi = sqnr_gain_bounds(noise["noisy"], noise["default"])
    assert lo < -TIE_DB and hi > TIE_DB
    same = {"default": 0.97, "small": 0.97, "slight": 0.97, "noisy": 0.97}
    assert _better("small", "default", noise, same)  # significant, same agreement
    assert not _better("slight", "default", noise, same)  # certain, but below SWITCH_DB
    assert _better("slight", "default", noise, {**same, "slight": 1.0})  # ... with a higher agreement
    # ... a higher agreement with the rows known: it decides only when McNemar's exact test says so
    # (SSCD ResNet-50's percentile ranges won 0.46-0.76 dB on 32 judging crops and 2 more argmax
    # matches, and lost 1.1-2.6 dB on other photos): 2 rows won, none lost: p = 0.25; 8 won: p = 0.0039
    hit = np.ones(32, bool)
    two = {"default": hit & (np.arange(32) >= 2), "slight": hit}
    eight = {"default": hit & (np.arange(32) >= 8), "slight": hit}
    agree2 = {"default": 30 / 32, "slight": 1.0}
    assert not _better("slight", "default", noise, agree2, two)
    assert _better("slight", "default", noise, {"default": 24 / 32, "slight": 1.0}, eight)
    assert not _better("noisy", "default", noise, {"default": 30 / 32, "noisy": 1.0}, {**two, "noisy": hit})
    assert not _better("small", "default", noise, {**same, "small": 0.94})  # significant, lower agreement
    assert not _better("noisy", "default", noise, same)  # a tie, same agreement: the default stays
    assert _better("noisy", "default", noise, {**same, "noisy": 1.0})  # a tie, higher agreement
    assert _better("small", "default", noise, {})  # no agreement (one value per row): SQNR decides
    assert not _better("default", "small", noise, {})


def test_agreement_over_time_steps_counts_rows_not_steps() -> None:
    """``[B, T, C]`` outputs: the steps of one row are not independent, so a higher agreement counts per
    row.  4 rows of 10 steps: ``a`` agrees with float at 10 more steps, all in one row: one row of 1 won,
    p = 0.5, not significant (counted per step, McNemar's p = 0.001 would have switched); 8 steps won,
    one in each of 8 rows of 8: p = 0.0039, significant."""
    from edgequant.algorithms.calib_search import agrees_more

    one_row = {"b": [np.zeros(10, bool)] + [np.ones(10, bool)] * 3, "a": [np.ones(10, bool)] * 4}
    assert not agrees_more("a", "b", {"a": 1.0, "b": 0.75}, one_row)
    step = np.arange(8) == 0
    spread = {"b": [np.ones(8, bool) & ~step] * 8, "a": [np.ones(8, bool)] * 8}
    assert agrees_more("a", "b", {"a": 1.0, "b": 0.875}, spread)
