"""4-bit activations on the cpu target: placements ONNX Runtime 1.32 cannot load (or computes wrongly) are
refused when the plan is made, in one line with the fix; the others run (planning/ort_4bit.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import conv_net, images, mlp
from typer.testing import CliRunner

import edgequant
from edgequant import pipeline
from edgequant.algorithms.weight_8bit import candidates
from edgequant.cli import app
from edgequant.model import prepare
from edgequant.planner import resolve
from edgequant.planning import ort_4bit
from edgequant.recipe import Recipe
from edgequant.runtime import detect


def clip_pool_net(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Clip(0, 6) -> MaxPool -> Conv -> Relu -> GAP -> Flatten -> Gemm (a MobileNet-like stem)."""
    rng = np.random.default_rng(seed)
    inits = [
        nh.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
        nh.from_array(np.array(0, np.float32), "lo"),
        nh.from_array(np.array(6, np.float32), "hi"),
        nh.from_array((rng.normal(size=(8, 8, 3, 3)) * 0.3).astype(np.float32), "w2"),
        nh.from_array((rng.normal(size=(10, 8)) * 0.3).astype(np.float32), "wf"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        h.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
        h.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        h.make_node("Conv", ["p", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flat"),
        h.make_node("Gemm", ["f", "wf"], ["y"], transB=1, name="fc"),
    ]
    g = h.make_graph(
        nodes, "clip_pool_net", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 16, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _sqnr(float_model: onnx.ModelProto, quantized: onnx.ModelProto, x: np.ndarray) -> float:
    """Output SQNR (dB) of ``quantized`` against ``float_model`` on ``x``, both in our own ORT sessions."""
    so = ort.SessionOptions()  # default optimisation level (ORT_ENABLE_ALL), as a user's session
    ref, out = (
        ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]
        for m in (float_model, quantized)
    )
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))


def _bypass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_4bit, "refuse", lambda *a, **k: None)


def test_api_refuses_8bit_convs_between_4bit_activations_before_calibration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("calibration ran before the refusal")

    monkeypatch.setattr(pipeline, "_calibrate", no_work)
    with pytest.raises(edgequant.UnsupportedError) as err:
        edgequant.quantize(conv_net(), images(16), act_bits=4)
    msg = str(err.value)
    assert "\n" not in msg
    assert "QLinearConv, which has no 4-bit kernel" in msg and "conv1, dwconv, pwconv" in msg
    assert "Fix: use act_bits=8 (or 16), or weight_bits=4" in msg and "exclude=['Conv']" in msg
    assert "--" not in msg  # keyword arguments, not CLI flags


def test_cli_refuses_in_one_line_exit_2_nothing_written(tmp_path: Path) -> None:
    onnx.save_model(conv_net(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", images(16))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(tmp_path / "net.onnx"), "-o", str(out), "--calib-data", str(tmp_path / "x.npy"),
              "--act-bits", "4"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "QLinearConv" in lines[0] and "--act-bits 8 (or 16)" in lines[0] and "--weight-bits 4" in lines[0]
    assert not out.exists()


def test_the_refused_conv_is_what_ort_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    _bypass(monkeypatch)  # the export the refusal prevents: ORT 1.32 refuses the session
    with pytest.raises(edgequant.InferenceError, match=r"tensor\(uint4\).*QLinearConv"):
        edgequant.quantize(conv_net(), images(16), act_bits=4)


def test_clip_and_maxpool_next_to_4bit_activations_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(edgequant.UnsupportedError) as err:
        edgequant.quantize(clip_pool_net(), images(16), act_bits=4, weight_bits=4)
    msg = str(err.value)
    assert "Clip(s) before a 4-bit QuantizeLinear" in msg and ": relu6" in msg
    assert "MaxPool(s) reading or writing 4-bit activations" in msg and ": pool" in msg
    assert "act_bits=8" in msg and "\n" not in msg
    _bypass(monkeypatch)  # and without the refusal, ORT fails at session creation
    with pytest.raises(edgequant.InferenceError, match="clip_quantizelinear"):
        edgequant.quantize(clip_pool_net(), images(16), act_bits=4, weight_bits=4)


def test_symmetric_4bit_relu_outputs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).normal(size=(16, 32)).astype(np.float32)
    with pytest.raises(edgequant.UnsupportedError) as err:
        edgequant.quantize(mlp(), x, act_bits=4, act_symmetric=True)
    assert "ORT removes the Relu" in str(err.value) and ": relu1" in str(err.value)
    assert "act_symmetric=False" in str(err.value)
    _bypass(monkeypatch)  # without the refusal ORT loads it and drops the Relu: the outputs collapse
    held = np.random.default_rng(7).normal(size=(64, 32)).astype(np.float32)
    sym = edgequant.quantize(mlp(), x, act_bits=4, act_symmetric=True)
    asym = edgequant.quantize(mlp(), x, act_bits=4)
    sym_db, asym_db = _sqnr(mlp(), sym.model, held), _sqnr(mlp(), asym.model, held)
    assert sym_db < 2.5 < 13.5 < asym_db, (sym_db, asym_db)  # measured 0.3 and 15.5 dB


def test_4bit_weights_and_activations_on_a_conv_net_still_run() -> None:
    """W4A4: the Convs are not fused (4-bit weights) and run in float between 4-bit Q/DQ in ORT."""
    r = edgequant.quantize(conv_net(), images(16), act_bits=4, weight_bits=4)
    types = {t.data_type for t in r.model.graph.initializer}
    assert T.UINT4 in types and T.INT4 in types  # 4-bit activation zero points, 4-bit weights
    db = _sqnr(conv_net(), r.model, images(64, seed=5))
    assert db > 16.5, db  # measured 18.6 dB


def test_4bit_activations_around_gemm_and_matmul_still_run() -> None:
    """W8A4 on an MLP: ORT runs the MatMuls in float between 4-bit Q/DQ (no 4-bit integer kernel), and says so."""
    x = np.random.default_rng(0).normal(size=(16, 32)).astype(np.float32)
    r = edgequant.quantize(mlp(), x, act_bits=4)
    assert any("MatMul node(s) (mm1, mm2) with 4-bit inputs" in n for n in r.plan.notes), r.plan.notes
    assert not any("u8 kernels are about 2x faster" in n for n in r.plan.notes), (
        r.plan.notes
    )  # none at 4 bits
    db = _sqnr(mlp(), r.model, np.random.default_rng(7).normal(size=(64, 32)).astype(np.float32))
    assert db > 13.5, db  # measured 15.5 dB


def test_weight_8bit_auto_does_not_offer_convs_between_4bit_activations() -> None:
    model, _ = prepare(conv_net())
    plan = resolve(model, Recipe(act_bits=4, weight_bits=4), detect())
    names = {n for ns in candidates(model, plan, static=True).values() for n in ns}
    assert names == {"fc"}, names  # 8-bit conv1/dwconv/pwconv would fuse into a 4-bit QLinearConv
