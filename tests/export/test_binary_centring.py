"""--weight-centring (binary signs against each channel's mean, the mean not stored) never lowers a
binary weight's squared error after training, and the plan says what it costs on the model: the numbers
are recomputed here with numpy from the float weights."""

from __future__ import annotations

import re

import numpy as np
from onnx import numpy_helper as nh
from tinymodels import conv_net, images

import edgequant


def _err(w: np.ndarray, centred: bool) -> float:
    """Squared error of alpha * sign(w - c) per output channel (axis 0), alpha = mean |w - c|."""
    rows = w.reshape(len(w), -1).astype(np.float64)
    c = rows.mean(axis=1, keepdims=True) if centred else 0.0
    d = rows - c
    b = np.where(d > 0, 1.0, np.where(d < 0, -1.0, np.where(rows < 0, -1.0, 1.0)))
    return float(np.sum((rows - np.abs(d).mean(axis=1, keepdims=True) * b) ** 2))


def test_centring_never_lowers_the_error_even_with_lopsided_signs() -> None:
    """The case the old docstring said centring pays off in: small channel means, lopsided signs."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = rng.standard_normal((4, 64))
        w[:, : rng.integers(1, 16)] *= -8.0  # a few large negatives, most small positives: lopsided
        w -= w.mean(axis=1, keepdims=True) * rng.uniform(0.8, 1.0)
        assert _err(w, True) >= _err(w, False) - 1e-12


def test_the_plan_says_what_centring_costs_on_the_model() -> None:
    m = conv_net(seed=0)
    weights = [nh.to_array(t) for t in m.graph.initializer if t.name in ("w1", "wd", "wp", "wf")]
    energy = sum(float(np.sum(w.astype(np.float64) ** 2)) for w in weights)
    want = [10 * np.log10(energy / sum(_err(w, c) for w in weights)) for c in (True, False)]
    assert want[0] < want[1] - 0.3  # measured 4.37 vs 4.83 dB on this net
    r = edgequant.quantize(m, {"x": images(32)}, weight_bits=1, weight_centring=True, calib_samples=16)
    notes = [n for n in r.report["notes"] if n.startswith("weight_centring:")]
    assert len(notes) == 1, r.report["notes"]
    got = re.search(r"get (-?[\d.]+) dB SQNR centred against (-?[\d.]+) dB with plain signs", notes[0])
    assert got is not None, notes[0]
    assert abs(float(got[1]) - want[0]) < 0.01 and abs(float(got[2]) - want[1]) < 0.01, (notes[0], want)
    assert "4 binary weight tensor(s)" in notes[0] and "--no-weight-centring" in notes[0]
    plain = edgequant.quantize(m, {"x": images(32)}, weight_bits=1, calib_samples=16)
    assert not [n for n in plain.report["notes"] if n.startswith("weight_centring:")]
