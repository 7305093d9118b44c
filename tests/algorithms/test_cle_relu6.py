"""CLE through ReLU6 (``Clip(0, 6)``), limited by calibration peaks: float output kept, per-tensor gains.

Expected values from our own ORT sessions and numpy (peaks, per-tensor fake quantization), not from
the pass's own numbers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper as nh

import edgequant
from edgequant.algorithms.cle import HEADROOM, equalize, find_pairs
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import images, per_tensor_weights, relu6_net

RT = OrtRuntime(allow_spinning=False)
X = images(80)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(
        10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((ref - got).astype(np.float64) ** 2).sum())
    )


def _peaks(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    got = RT.run(probe, {"x": X[:64]})
    return {n: got[n].max(axis=(0, 2, 3)) for n in names}


def test_cle_through_relu6_keeps_float_output_and_saturating_channels() -> None:
    model = relu6_net()
    plain, skipped = find_pairs(model)
    assert plain == [] and sum("Clip" in s for s in skipped) == 2  # data-free: ReLU6 stops it
    pairs, _ = find_pairs(model, through_clip=True)
    assert [(p.first.name, p.second.name, p.bound) for p in pairs] == [
        ("conv1", "dw", 6.0),
        ("dw", "pw", 6.0),
    ]
    peaks = _peaks(model, ["c1", "cd"])
    eq = onnx.ModelProto()
    eq.CopyFrom(model)
    equalize(eq, pairs, peaks)
    ref, got = RT.run(model, {"x": X})["y"], RT.run(eq, {"x": X})["y"]  # calibration and held-out samples
    assert np.abs(ref - got).max() <= 1e-5 * np.abs(ref).max()
    w = {t.name: nh.to_array(t) for t in model.graph.initializer}
    v = {t.name: nh.to_array(t) for t in eq.graph.initializer}
    sat = peaks["c1"] * HEADROOM >= 6.0
    assert 0 < sat.sum() < len(sat)  # the net has both kinds of channel
    np.testing.assert_allclose(v["w1"][sat], w["w1"][sat], rtol=1e-6)  # a channel that may clip keeps scale 1
    assert not np.allclose(v["w1"][~sat], w["w1"][~sat])
    # the equalized channels' scaled peaks still stay below the bound with headroom
    scale = np.abs(w["w1"]).max(axis=(1, 2, 3)) / np.abs(v["w1"]).max(axis=(1, 2, 3))
    assert np.all((peaks["c1"] / scale * HEADROOM)[~sat] <= 6.0 + 1e-4)
    # per-tensor 8-bit weights in numpy (activations float): measured 16.9 -> 23.5 dB
    before = _sqnr(ref[64:], RT.run(per_tensor_weights(model, 8), {"x": X[64:]})["y"])
    after = _sqnr(ref[64:], RT.run(per_tensor_weights(eq, 8), {"x": X[64:]})["y"])
    assert after > before + 4.6


def test_cle_through_relu6_recovers_per_tensor_int8() -> None:
    model = relu6_net()
    held = {"x": X[64:]}
    ref = RT.run(model, held)["y"]
    plain = edgequant.quantize(model, X, per_channel=False, calib_samples=64)
    cle = edgequant.quantize(model, X, per_channel=False, calib_samples=64, algorithms=["cle"])
    row = cle.report["algorithms"][0]
    assert row["samples"] == 64 and len(row["changed"]) == 2 and "through Clip" in row["changed"][0]
    # measured 16.8 -> 23.2 dB on the held-out samples
    assert _sqnr(ref, RT.run(cle.model, held)["y"]) > _sqnr(ref, RT.run(plain.model, held)["y"]) + 4.4


def test_cle_through_relu6_needs_real_data() -> None:
    res = edgequant.quantize(relu6_net(), None, algorithms=["cle"], allow_synthetic=True)
    row = res.report["algorithms"][0]
    assert row["changed"] == [] and any("no real calibration data" in s for s in row["skipped"])
