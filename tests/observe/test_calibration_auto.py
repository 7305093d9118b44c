"""The default activation calibration (``calib_method: auto``) and the subsampled histogram behind it.

``auto`` is entropy (KL with its percentile floor) at up to 11 activation bits and min-max above
(issue #17 §5: on the real models of benchmarks/bench_calibration_choice.py entropy is the best of
min-max, percentile and entropy).  Histograms bin every value of the tail (``|x| >= t``) and a
systematic subsample of the bulk below ``t`` when an update holds more than ``SAMPLE_MAX`` values.
Expected values come from numpy and our own ORT sessions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx

import edgequant
from edgequant.observe import observers
from edgequant.observe.observers import create_observer
from edgequant.recipe import Recipe
from edgequant.runtime import OrtRuntime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RT = OrtRuntime(allow_spinning=False)


def _ranges(res: edgequant.QuantResult) -> dict[str, tuple[float | None, float | None]]:
    return {n: (t.lo, t.hi) for n, t in res.plan.tensors.items() if t.role == "activation"}


def test_the_default_is_entropy_at_8_bits_and_minmax_at_16_bits() -> None:
    """On the example CNN: the default's ranges are entropy's at 8 bits and min-max's at 16 bits; its
    output SQNR on the 512 evaluation images, measured in our own session, is 26.98 dB (min-max 28.25,
    percentile 26.15: on this set entropy is 1.3 dB below min-max, on 4,096 new pictures from the example's
    generator 0.2 dB above it, benchmarks/results/bench_example_draws.md; 27.58 dB before the histograms' bulk subsample went from 16,384 to 4,096
    values an update)."""
    assert Recipe().calib_method == "auto"
    model, calib = str(EXAMPLES / "shapes_cnn.onnx"), str(EXAMPLES / "shapes_calib.npz")
    auto = edgequant.quantize(model, calib, runtime=RT)
    entropy = edgequant.quantize(model, calib, calib_method="entropy", runtime=RT)
    assert auto.report["calibration"]["method"] == "auto"
    assert auto.report["calibration"]["ranges"] == "entropy"
    assert _ranges(auto) == _ranges(entropy)
    minmax = edgequant.quantize(model, calib, calib_method="minmax", runtime=RT)
    assert _ranges(auto) != _ranges(minmax)  # entropy clips some tensors here

    wide = edgequant.quantize(model, calib, act_bits=16, runtime=RT)
    wide_minmax = edgequant.quantize(model, calib, act_bits=16, calib_method="minmax", runtime=RT)
    assert wide.report["calibration"]["ranges"] == "minmax"
    assert _ranges(wide) == _ranges(wide_minmax)

    data = np.load(EXAMPLES / "shapes_eval.npz")
    x = data["image"]
    ref = RT.run(onnx.load(model), {"image": x})["logits"].astype(np.float64)
    got = RT.run(auto.model, {"image": x})["logits"]
    sqnr = 10.0 * math.log10(float((ref**2).sum() / ((ref - got) ** 2).sum()))
    assert sqnr > 25.0, sqnr  # measured 26.98 dB
    assert float(np.mean(got.argmax(axis=1) == data["labels"])) > 0.96  # measured 97.46 %


def test_a_subsampled_histogram_keeps_every_tail_value_and_the_exact_extremes() -> None:
    """Four updates of 200,000 heavy-tailed values (Student-t, 3 degrees of freedom), i.e. more than
    ``SAMPLE_MAX`` each: the observed min and max are numpy's; every bin at or above the tail start
    ``t`` holds exactly numpy's count; the total is within 1 % of 800,000; and the 0.01st and
    99.99th percentiles of x are numpy's within two bin widths."""
    rng = np.random.default_rng(7)
    parts = [rng.standard_t(3, size=200_000).astype(np.float32) for _ in range(4)]
    assert parts[0].size > observers.SAMPLE_MAX
    obs = create_observer("percentile", percentile=99.99)
    assert isinstance(obs, observers.PercentileObserver)
    starts = []
    for part in parts:
        obs.update(part)
        starts.append(obs.tail_start)
    x = np.concatenate(parts).astype(np.float64)
    hist = obs.hist
    assert (hist.lo, hist.hi) == (float(x.min()), float(x.max()))
    assert abs(hist.total - x.size) < 0.01 * x.size
    t = max(starts)
    assert 0.0 < t < float(np.abs(x).max())
    w = hist.width
    idx = np.floor(x / w).astype(np.int64) + hist.bins
    exact = np.bincount(idx, minlength=2 * hist.bins).astype(np.float64)
    edges = hist.edges()
    tail_bins = (edges[:-1] >= t) | (edges[1:] <= -t)  # bins holding only values with |x| >= t
    assert tail_bins.sum() > 10
    np.testing.assert_array_equal(hist.counts[tail_bins], exact[tail_bins])
    lo, hi = obs.compute()  # asymmetric: the 0.01st and 99.99th percentiles of x
    q_lo, q_hi = np.percentile(x, [0.01, 99.99])
    assert min(-q_lo, q_hi) > t  # both in the exact tail
    assert abs(hi - q_hi) <= 2 * w, (hi, q_hi, w)
    assert abs(lo - q_lo) <= 2 * w, (lo, q_lo, w)


def test_the_default_is_minmax_under_the_transformer_placement() -> None:
    """On a transformer block (MatMul inputs quantized only) ``auto`` takes min-max ranges: on
    all-MiniLM-L6-v2 entropy ranges gave a mean embedding cosine of 0.9607 against min-max's 0.9929."""
    from tests.algorithms.test_smoothquant import _block, _data

    m, calib = _block(), _data(48, 1)
    auto = edgequant.quantize(m, calib, method="static", runtime=RT)
    minmax = edgequant.quantize(m, calib, method="static", calib_method="minmax", runtime=RT)
    assert any("transformer placement" in n for n in auto.plan.notes)
    assert auto.report["calibration"]["ranges"] == "minmax"
    assert _ranges(auto) == _ranges(minmax)
    conv = edgequant.quantize(m, calib, method="static", placement="all", runtime=RT)
    assert conv.report["calibration"]["ranges"] == "entropy"  # the placement, not the graph, decides
