"""Binary (--weight-bits 1) and ternary (--weight-bits ternary) weights: the int8 initializers of the
written model hold the right value sets per channel, the scales are the least-squares ones (found
here by brute force, not by the code under test), ONNX Runtime runs the models, and a weight-only
model matches a numpy forward pass with those weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.errors import RecipeError
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import conv3, images

RT = OrtRuntime(allow_spinning=False)
X = images(80)
WEIGHTS = ("w1", "w2", "w3")


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: nh.to_array(t) for t in model.graph.initializer}


def _float_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {w: _inits(model)[w].astype(np.float64) for w in WEIGHTS}


def _brute_ternary(w: np.ndarray) -> float:
    """Least squared error of ``a * clip(round(w / a), -1, 1)`` over 4000 candidate ``a``."""
    best = np.inf
    for a in np.linspace(1e-3, np.abs(w).max(), 4000):
        e = float(((w - a * np.clip(np.round(w / a), -1, 1)) ** 2).sum())
        best = min(best, e)
    return best


def _conv(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """Direct NCHW convolution, stride 1 (numpy reference)."""
    x = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    n, _, hh, ww = x.shape
    co, _, kh, kw = w.shape
    out = np.zeros((n, co, hh - kh + 1, ww - kw + 1))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + out.shape[2], j : j + out.shape[3]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def _forward(model: onnx.ModelProto, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """conv3 in numpy: the pads and biases read from the float model, the weights given."""
    inits = _inits(model)
    h = x.astype(np.float64)
    for k, node in enumerate(n for n in model.graph.node if n.op_type == "Conv"):
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0, 0, 0, 0])
        h = _conv(h, weights[node.input[1]], pads[0])
        if len(node.input) > 2:
            h += inits[node.input[2]].reshape(1, -1, 1, 1)
        if k < 2:
            h = np.maximum(h, 0)
    return h


@pytest.mark.parametrize("centring", [False, True])
def test_binary_weights_are_signs_times_the_mean_magnitude(centring: bool) -> None:
    model = conv3()
    res = edgequant.quantize(
        model, X, method="weight-only", weight_bits=1, weight_centring=centring, calib_samples=64
    )
    inits, floats = _inits(res.model), _float_weights(model)
    mine = {}
    for name, w in floats.items():
        q, s = inits[f"{name}_q"], inits[f"{name}_scale"]
        assert q.dtype == np.int8
        flat = w.reshape(len(w), -1)
        c = flat.mean(axis=1, keepdims=True) if centring else 0.0
        for ch in range(len(w)):
            assert set(np.unique(q[ch]).tolist()) <= {-1, 1}  # two codes, no zero
        assert set(np.unique(q).tolist()) == {-1, 1}
        expect = np.where(flat - c >= 0, 1, -1)
        assert np.array_equal(q.reshape(len(w), -1), expect)
        alpha = np.abs(flat - c).mean(axis=1)  # XNOR-Net's least-squares scale for fixed signs
        assert np.allclose(s, alpha, rtol=1e-5)
        mine[name] = expect.reshape(w.shape) * alpha.reshape(-1, 1, 1, 1)
    got = RT.run(res.model, {"x": X[:8]})["y"]
    ref = _forward(model, mine, X[:8])
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))
    sizes = res.report["sizes"]
    assert sizes["packed_theoretical"] is True
    n_weights = sum(w.size for w in floats.values())
    assert sizes["packed_bytes"] < n_weights / 8 + 4 * 200  # 1 bit a weight + scales and biases


def test_ternary_weights_take_the_least_squares_threshold() -> None:
    model = conv3()
    res = edgequant.quantize(model, X, method="weight-only", weight_bits="ternary", calib_samples=64)
    inits, floats = _inits(res.model), _float_weights(model)
    mine = {}
    for name, w in floats.items():
        q, s = inits[f"{name}_q"], inits[f"{name}_scale"].astype(np.float64)
        assert q.dtype == np.int8 and set(np.unique(q).tolist()) == {-1, 0, 1}
        for ch in range(len(w)):
            assert set(np.unique(q[ch]).tolist()) <= {-1, 0, 1}
            # the error at the chosen scale is the least a brute-force scan of scales finds
            err = float(((w[ch] - s[ch] * np.clip(np.round(w[ch] / s[ch]), -1, 1)) ** 2).sum())
            assert err <= _brute_ternary(w[ch]) * (1 + 1e-6) + 1e-12
            assert np.array_equal(q[ch], np.clip(np.round(w[ch] / s[ch]), -1, 1))
        mine[name] = q.astype(np.float64) * s.reshape(-1, 1, 1, 1)
    got = RT.run(res.model, {"x": X[:8]})["y"]
    ref = _forward(model, mine, X[:8])
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))
    assert res.report["sizes"]["packed_theoretical"] is True


@pytest.mark.parametrize("bits", [1, "ternary"])
def test_static_low_bit_models_run_in_ort_with_the_value_sets(bits: int | str) -> None:
    model = conv3()
    res = edgequant.quantize(model, X, weight_bits=bits, calib_samples=64, per_channel=True)
    allowed = {-1, 1} if bits == 1 else {-1, 0, 1}
    inits = _inits(res.model)
    for name in WEIGHTS:
        q = inits[f"{name}_q"]
        assert q.dtype == np.int8 and set(np.unique(q).tolist()) <= allowed
    got = RT.run(res.model, {"x": X[64:]})["y"]
    ref = RT.run(model, {"x": X[64:]})["y"]
    sqnr = 10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((ref - got) ** 2).sum())
    # measured: binary 1.7 dB, ternary 3.3 dB (the 2-bit grid with the clipped-range scale: 2.8 dB)
    assert np.isfinite(got).all() and sqnr > (0.0 if bits == 1 else 1.3)
    assert res.tag == ("w1a8" if bits == 1 else "wta8") + "_ha8c010"  # the hash: calib_samples 64


@pytest.mark.parametrize("bits", [1, "ternary"])
def test_low_bit_adaround_keeps_the_value_sets_and_beats_rounding(bits: int | str) -> None:
    model = conv3()
    kw = {"weight_bits": bits, "calib_samples": 64}
    rtn = edgequant.quantize(model, X, **kw)
    ada = edgequant.quantize(model, X, algorithms=["adaround"], **kw)
    allowed = {-1, 1} if bits == 1 else {-1, 0, 1}
    for name in WEIGHTS:
        assert set(np.unique(_inits(ada.model)[f"{name}_q"]).tolist()) <= allowed
    ref = RT.run(model, {"x": X[64:]})["y"].astype(np.float64)

    def sqnr(m: onnx.ModelProto) -> float:
        got = RT.run(m, {"x": X[64:]})["y"]
        return float(10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()))

    # measured: binary 1.73 -> 3.15 dB, ternary 3.32 -> 5.35 dB
    assert sqnr(ada.model) > sqnr(rtn.model) + (0.7 if bits == 1 else 1.0)


def test_low_bit_refusals() -> None:
    model = conv3()
    with pytest.raises(RecipeError, match="ti-npu"):
        edgequant.quantize(model, X, weight_bits=1, target="ti-npu", calib_samples=16)
    with pytest.raises(RecipeError, match="symmetric by definition"):
        edgequant.quantize(model, X, weight_bits="ternary", weight_symmetric=False, calib_samples=16)
    with pytest.raises(RecipeError, match="binary weights only"):
        edgequant.quantize(model, X, weight_bits="ternary", weight_centring=True, calib_samples=16)
    with pytest.raises(RecipeError, match="method 'dynamic'"):
        edgequant.quantize(model, None, method="dynamic", weight_bits=1)
    with pytest.raises(RecipeError, match=r"neither an integer nor 'ternary'.*did you mean 'ternary'"):
        edgequant.quantize(model, X, weight_bits="trinary", calib_samples=16)


def test_cli_weight_bits_ternary_and_binary(tmp_path: Path) -> None:
    model, data = tmp_path / "m.onnx", tmp_path / "x.npy"
    onnx.save(conv3(), model)
    np.save(data, X)
    runner = CliRunner()
    for flag, tag in (("ternary", "wta8"), ("1", "w1ca8")):
        extra = ["--weight-centring"] if flag == "1" else []
        out = runner.invoke(
            app,
            [
                "quantize",
                str(model),
                "-o",
                str(tmp_path),
                "--calib-data",
                str(data),
                "--weight-bits",
                flag,
                *extra,
            ],
        )
        assert out.exit_code == 0, out.output
        report = json.loads((tmp_path / f"m_{tag}.json").read_text())
        assert report["sizes"]["packed_theoretical"] is True
    bad = runner.invoke(app, ["quantize", str(model), "-o", str(tmp_path / "b"), "--weight-bits", "3"])
    assert bad.exit_code == 2 and "ternary" in bad.output
