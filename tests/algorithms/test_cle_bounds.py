"""``cle_bounds``: CLE through ReLU6 with per-channel bounds (Clip + Min), exact for every input.

Expected values from our own ORT sessions and numpy (the first conv's bias before/after gives each
channel's scale), not from the pass's own numbers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper as nh

import edgequant
from edgequant import planner
from edgequant.algorithms.base import Stats
from edgequant.algorithms.cle_bounds import ClipBoundEqualization
from edgequant.errors import RecipeError
from edgequant.recipe.schema import from_dict
from edgequant.runtime import OrtRuntime, detect
from tests.algorithms.passnets import images, relu6_net

RT = OrtRuntime(allow_spinning=False)
X = images(80)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(
        10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((ref - got).astype(np.float64) ** 2).sum())
    )


def _apply(per_channel: bool) -> tuple[onnx.ModelProto, onnx.ModelProto, list[str], str]:
    model = relu6_net()
    recipe = from_dict({"method": "static", "per_channel": per_channel})
    plan = planner.resolve(model, recipe, detect())
    stats = Stats(lambda: [{"x": X[i : i + 16]} for i in range(0, 64, 16)], 64, RT, recipe)
    out, _, outcome = ClipBoundEqualization(recipe).apply(model, plan, stats)
    return model, out, outcome.changed, outcome.nothing_to_do


def test_cle_bounds_keeps_the_float_output() -> None:
    model, out, changed, _ = _apply(per_channel=False)
    # conv1's weight alone costs 18.8 dB (< 20: its ReLU6 gets bounds), dw's 24.3 dB (cle's headroom rule)
    assert [n.op_type for n in out.graph.node] == ["Conv", "Clip", "Min", "Conv", "Clip", "Conv"]
    assert "relu6_1: Clip(0, 6) + Min(per-channel bound" in changed[0]
    ref, got = RT.run(model, {"x": X})["y"], RT.run(out, {"x": X})["y"]  # calibration and held-out
    assert np.abs(ref - got).max() <= 1e-5 * np.abs(ref).max()
    w = {t.name: nh.to_array(t) for t in model.graph.initializer}
    v = {t.name: nh.to_array(t) for t in out.graph.initializer}
    scale = w["b1"] / v["b1"]  # conv1's output channel i became y_i / S_i
    assert np.all(scale >= 1 - 1e-6) and np.any(scale > 2)  # shrunk only, some by a lot
    bound = v["r1/cle_bounds_bound"].reshape(-1)
    np.testing.assert_allclose(bound, 6.0 / scale, rtol=1e-5)
    # the bounded ReLU6 is exact for any input, here 20x the calibration inputs (every saturating
    # channel clips far beyond 6): its output is the original one divided by S per channel
    probe = [onnx.ModelProto.FromString(m.SerializeToString()) for m in (model, out)]
    for m in probe:
        m.graph.output.append(onnx.ValueInfoProto(name="r1"))
    r_ref, r_got = (RT.run(m, {"x": 20 * X})["r1"] for m in probe)
    assert (r_ref >= 6.0).mean() > 0.1  # the probe does saturate
    np.testing.assert_allclose(
        r_got * scale[None, :, None, None], r_ref, rtol=1e-4, atol=1e-4
    )  # fp32 rounding


def test_cle_bounds_recovers_per_tensor_int8_with_integer_convs() -> None:
    model = relu6_net()
    held = {"x": X[64:]}
    ref = RT.run(model, held)["y"]
    kw = {"per_channel": False, "calib_samples": 64}
    plain = edgequant.quantize(model, X, **kw)
    cle = edgequant.quantize(model, X, algorithms=["cle"], **kw)
    bounds = edgequant.quantize(model, X, algorithms=["cle_bounds"], **kw)
    row = bounds.report["algorithms"][0]
    assert row["pass"] == "cle_bounds" and not row.get("reverted")
    s_plain, s_cle, s_bounds = (_sqnr(ref, RT.run(r.model, held)["y"]) for r in (plain, cle, bounds))
    # measured 16.8 (plain), 23.2 (cle), 26.7 (cle_bounds) dB on the held-out samples
    assert s_bounds > s_cle + 1.5 and s_bounds > s_plain + 8.0
    with tempfile.TemporaryDirectory() as tmp:  # the convs stay integer kernels after ORT's fusions
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(bounds.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 2 and ops.count("Min") == 1  # the last conv writes the float output


def test_cle_bounds_has_nothing_to_do_on_per_channel_weights() -> None:
    model, out, changed, why = _apply(per_channel=True)
    assert out is model and changed == [] and "per-channel" in why


def test_cle_bounds_runs_before_the_rounding_passes() -> None:
    assert from_dict({"algorithms": ["cle_bounds", "adaround", "bias_correction"]}).algorithms == (
        "cle_bounds", "adaround", "bias_correction",
    )  # fmt: skip
    with pytest.raises(RecipeError, match="out of order"):
        from_dict({"algorithms": ["bias_correction", "cle_bounds"]})
