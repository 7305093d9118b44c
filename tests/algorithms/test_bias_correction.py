"""Empirical bias correction: the per-channel mean shift of quantized layers goes into their biases.

The model: x (positive) -> depthwise 3x3 Conv (bias) -> Relu -> pointwise 1x1 Conv (no bias) -> y.
Each depthwise filter has one large tap and eight small ones of one sign, so with 4-bit per-channel
weights the small taps round the same way and the channel's output mean moves by ``sum(dW) E[x]``;
the pointwise conv has no bias, so correction must create one.  The MLP checks Gemm (no C) and a
MatMul whose bias is the following Add.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.evaluate.metrics import sqnr_db
from edgequant.recipe import from_dict
from edgequant.runtime import OrtRuntime

C = 8


def depthwise_net(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    dw = (rng.uniform(0.02, 0.07, (C, 1, 3, 3)) * rng.choice([-1.0, 1.0], (C, 1, 1, 1))).astype(np.float32)
    dw[:, 0, 1, 1] = rng.uniform(0.8, 1.2, C)  # the large tap sets each channel's scale
    bias = (rng.standard_normal(C) * 0.1).astype(np.float32)
    pw = (rng.standard_normal((C, C, 1, 1)) * 0.4).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "dw", "b"], ["d"], name="dw", group=C, pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["d"], ["r"], name="relu"),
        h.make_node("Conv", ["r", "pw"], ["y"], name="pw"),
    ]
    g = h.make_graph(
        nodes,
        "depthwise",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", C, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", C, 8, 8])],
        [nh.from_array(dw, "dw"), nh.from_array(bias, "b"), nh.from_array(pw, "pw")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 2.0, (n, C, 8, 8)).astype(np.float32)


MODEL = depthwise_net()
CALIB = inputs(64, 1)
EVAL = inputs(32, 2)


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return np.asarray(OrtRuntime().session(model).run({"x": x})["y"], np.float64)


def channel_mean_error(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over channels of |E[ref_c] - E[got_c]| (axis 1 is the channel)."""
    return float(np.mean(np.abs((ref - got).mean(axis=(0, 2, 3)))))


def mlp_net(seed: int = 0) -> onnx.ModelProto:
    """x -> Gemm (no C) -> Relu -> MatMul -> Add(bias) -> y, with 4-bit-unfriendly weights."""
    rng = np.random.default_rng(seed)
    w1 = (rng.uniform(0.02, 0.06, (16, 12)) * rng.choice([-1.0, 1.0], (1, 12))).astype(np.float32)
    w1[0] = 1.0  # one large row: the other weights of each column round on a coarse grid
    w2 = (rng.uniform(0.02, 0.06, (12, 6)) * rng.choice([-1.0, 1.0], (1, 6))).astype(np.float32)
    w2[0] = 1.0
    nodes = [
        h.make_node("Gemm", ["x", "w1"], ["g"], name="gemm"),
        h.make_node("Relu", ["g"], ["r"], name="relu"),
        h.make_node("MatMul", ["r", "w2"], ["m"], name="matmul"),
        h.make_node("Add", ["m", "b2"], ["y"], name="add"),
    ]
    g = h.make_graph(
        nodes,
        "mlp",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 6])],
        [nh.from_array(w1, "w1"), nh.from_array(w2, "w2"), nh.from_array(np.zeros(6, np.float32), "b2")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


# (weight bits, output SQNR without -> with correction measured on EVAL, channel-mean error factor)
#  4-bit: 10.5 -> 21.0 dB, mean error 0.36 -> 0.012 (30x); 8-bit: 44.7 -> 47.4 dB, 0.0045 -> 0.0001 (45x)
@pytest.mark.parametrize(("bits", "min_gain_db", "min_factor"), [(4, 9.0, 20.0), (8, 2.0, 20.0)])
def test_correction_removes_channel_mean_error(bits: int, min_gain_db: float, min_factor: float) -> None:
    before = MODEL.SerializeToString()
    ref = outputs(MODEL, EVAL)
    plain = edgequant.quantize(MODEL, CALIB, weight_bits=bits)
    fixed = edgequant.quantize(MODEL, CALIB, weight_bits=bits, bias_correction=True)
    a, b = outputs(plain.model, EVAL), outputs(fixed.model, EVAL)
    assert sqnr_db(ref, b) >= sqnr_db(ref, a) + min_gain_db
    assert channel_mean_error(ref, b) * min_factor <= channel_mean_error(ref, a)
    assert MODEL.SerializeToString() == before  # the float model is untouched
    section = fixed.report["bias_correction"]
    assert (section["nodes_measured"], section["nodes_corrected"], section["skipped"]) == (2, 2, [])
    assert {r["node"] for r in section["top_shifts"]} == {"dw", "pw"} and section["seconds"] >= 0
    assert "bias_correction" not in plain.report
    assert any(n.startswith("bias correction (sequential): 2 of 2 node(s)") for n in fixed.plan.notes)
    # the pointwise conv had no bias: it got one, quantized as int32 at 8 bits
    pw = next(n for n in fixed.model.graph.node if n.name == "pw")
    assert len(pw.input) == 3 and pw.input[2]
    if bits == 8:
        assert fixed.plan.tensors["pw_bias"].spec.bits == 32


def test_shift_is_the_measured_channel_mean() -> None:
    """The dw bias moves by the float-minus-quantized mean of dw's output on the calibration data."""
    from edgequant.algorithms import bias_correction as bc

    fixed = edgequant.quantize(MODEL, CALIB, weight_bits=4, bias_correction=True)
    plain = edgequant.quantize(MODEL, CALIB, weight_bits=4)
    found, _ = bc.targets(MODEL, plain.model, plain.plan)
    shifts, batches = bc.measure(MODEL, plain.model, found, [{"x": CALIB}], OrtRuntime())
    assert batches == 1
    # reference: dw alone, float vs 4-bit weights, on the graph input (quantized on its own grid)
    twin = bc.with_twins(MODEL, plain.model, found)
    got = OrtRuntime().session(twin).run({"x": CALIB}, ["d", "d" + bc.TWIN])
    expect = (got["d" + bc.TWIN] - got["d"]).astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(shifts["dw"], expect, rtol=1e-5, atol=1e-7)
    assert np.abs(expect).mean() > 0.2  # 4-bit depthwise: a visible shift
    section = fixed.report["bias_correction"]
    assert section["top_shifts"][0]["node"] == "dw" and section["top_shifts"][0]["channels"] == C


def test_gemm_and_matmul_add() -> None:
    model = mlp_net()
    before = model.SerializeToString()
    rng = np.random.default_rng(3)
    calib, x = (
        rng.uniform(0, 1, (256, 16)).astype(np.float32),
        rng.uniform(0, 1, (128, 16)).astype(np.float32),
    )
    rt = OrtRuntime()
    ref = rt.session(model).run({"x": x})["y"]
    plain = edgequant.quantize(model, calib, weight_bits=4)
    fixed = edgequant.quantize(model, calib, weight_bits=4, bias_correction=True)
    a, b = rt.session(plain.model).run({"x": x})["y"], rt.session(fixed.model).run({"x": x})["y"]
    print(sqnr_db(ref, a), sqnr_db(ref, b))
    assert sqnr_db(ref, b) >= sqnr_db(ref, a) + 3.0
    section = fixed.report["bias_correction"]
    assert {r["node"] for r in section["top_shifts"]} == {"gemm", "matmul"}
    assert model.SerializeToString() == before


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"method": "dynamic", "bias_correction": True},
            "bias_correction is set but method is 'dynamic'; it corrects the biases of a static int model "
            "against its calibration data, so it applies to method 'static' only.",
        ),
        ({"bias_correction": "yes"}, "bias_correction must be true or false, got 'yes'."),
    ],
)
def test_recipe_key_is_validated(data: dict[str, object], message: str) -> None:
    with pytest.raises(edgequant.RecipeError) as info:
        from_dict(data)
    assert info.value.detail == message
    assert from_dict({"bias-correction": True}).bias_correction is True
    assert from_dict({}).bias_correction is False


def test_cli_flag(tmp_path: Path) -> None:
    model, calib, out = tmp_path / "dw.onnx", tmp_path / "calib.npy", tmp_path / "out"
    onnx.save_model(MODEL, model)
    np.save(calib, CALIB)
    args = ["quantize", str(model), "-o", str(out), "--calib-data", str(calib), "--weight-bits", "4"]
    res = CliRunner().invoke(app, [*args, "--bias-correction"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "dw_w4a8_bc.json").read_text())
    assert report["recipe"]["bias_correction"] is True
    assert report["bias_correction"]["nodes_corrected"] == 2
    bad = CliRunner().invoke(app, [*args, "--method", "dynamic", "--bias-correction"])
    assert bad.exit_code == 2
    assert "error: bias_correction is set but method is 'dynamic'" in bad.output
