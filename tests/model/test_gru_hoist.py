"""GRU input projection hoisted into a MatMul (``--hoist-gru``): exact in float, and an integer MatMul
under static and dynamic quantization while the recurrence stays float.  References are ORT sessions
of the original float model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.errors import RecipeError, UnsupportedError
from edgequant.model.gru_hoist import SELECTION_DOC, hoist_gru_inputs
from tests.tinymodels import ort_ran_ops

STEPS, IN, H = 12, 8, 16


def _gru(direction: str = "forward", lbr: int = 1, bias: bool = True, state: bool = False) -> onnx.ModelProto:
    """x [N, T, IN] -> Transpose -> GRU (layout 0) -> Y [T, D, N, H] -> Transpose -> y [N, T, D, H]."""
    rng = np.random.default_rng(0)
    d = 2 if direction == "bidirectional" else 1
    inits = [
        nh.from_array((rng.standard_normal((d, 3 * H, IN)) * 0.4).astype(np.float32), "W"),
        nh.from_array((rng.standard_normal((d, 3 * H, H)) * 0.3).astype(np.float32), "R"),
    ]
    gin = ["xt", "W", "R"]
    if bias or state:
        inits.append(nh.from_array((rng.standard_normal((d, 6 * H)) * 0.2).astype(np.float32), "B"))
        gin.append("B")
    ins = [h.make_tensor_value_info("x", T.FLOAT, ["N", STEPS, IN])]
    if state:
        gin += ["", "h0"]
        ins.append(h.make_tensor_value_info("h0", T.FLOAT, [d, "N", H]))
    nodes = [
        h.make_node("Transpose", ["x"], ["xt"], name="t_in", perm=[1, 0, 2]),
        h.make_node(
            "GRU", gin, ["Y", "Yh"], name="gru", hidden_size=H, linear_before_reset=lbr, direction=direction
        ),
        h.make_node("Transpose", ["Y"], ["y"], name="t_out", perm=[2, 0, 1, 3]),
    ]
    g = h.make_graph(nodes, "g", ins, [h.make_tensor_value_info("y", T.FLOAT, ["N", STEPS, d, H])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(["y"], feeds)[0])


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, STEPS, IN)).astype(np.float32)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(
        10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
    )


@pytest.mark.parametrize(
    ("direction", "lbr", "bias", "state"),
    [("forward", 1, True, False), ("forward", 0, False, False), ("bidirectional", 1, True, True),
     ("bidirectional", 0, True, False), ("reverse", 1, True, True)],
)  # fmt: skip
def test_hoisted_gru_is_the_same_function_in_float(direction: str, lbr: int, bias: bool, state: bool) -> None:
    m = _gru(direction, lbr, bias, state)
    hoisted, notes = hoist_gru_inputs(m)
    assert len(notes) == 1 and "hoisted into MatMul" in notes[0]
    ops = [n.op_type for n in hoisted.graph.node]
    assert ops == ["Transpose", "MatMul", "GRU", "Transpose"]
    d = 2 if direction == "bidirectional" else 1
    w = nh.to_array(next(t for t in m.graph.initializer if t.name == "W"))
    mm = next(n for n in hoisted.graph.node if n.op_type == "MatMul")
    wx = nh.to_array(next(t for t in hoisted.graph.initializer if t.name == mm.input[1]))
    np.testing.assert_array_equal(
        wx, w.reshape(d * 3 * H, IN).T
    )  # [in, D·3H]: W of each direction, transposed
    feeds = {"x": _x(3, 1)}
    if state:
        feeds["h0"] = np.random.default_rng(2).standard_normal((d, 3, H)).astype(np.float32) * 0.5
    ref, got = _run(m, feeds), _run(hoisted, feeds)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)


def test_dynamic_with_hoist_runs_the_projection_as_an_integer_matmul(tmp_path: Path) -> None:
    m = _gru()
    r = edgequant.quantize(m, {"x": _x(16, 3)}, method="dynamic", hoist_gru=True)
    ops = [n.op_type for n in r.model.graph.node]
    assert ops == ["Transpose", "DynamicQuantizeMatMul", "GRU", "Transpose"]
    dq, gru = r.model.graph.node[1], r.model.graph.node[2]
    assert gru.input[0] == dq.output[0]
    inits = {t.name: t for t in r.model.graph.initializer}
    assert inits[dq.input[1]].data_type == T.INT8
    assert inits[gru.input[1]].doc_string == SELECTION_DOC and inits[gru.input[1]].data_type == T.FLOAT
    assert inits[gru.input[2]].data_type == T.FLOAT  # R: the recurrence stays float
    assert any("hoisted into MatMul" in n for n in r.report["notes"])
    gru_decision = next(d for d in r.plan.nodes if d.node == "gru")
    assert not gru_decision.quantized and "no dynamic-quantized GRU kernel" in gru_decision.reason
    assert "DynamicQuantizeMatMul" in ort_ran_ops(r.model, tmp_path)
    x = _x(8, 4)
    assert _sqnr(_run(m, {"x": x}), _run(r.model, {"x": x})) > 37.5  # measured 39.9 dB


def test_static_with_hoist_runs_an_integer_matmul_with_float_output(tmp_path: Path) -> None:
    m = _gru()
    r = edgequant.quantize(m, {"x": _x(64, 5)}, "int8-static", hoist_gru=True)
    mm = next(n for n in r.model.graph.node if n.op_type == "MatMul")
    gru = next(n for n in r.model.graph.node if n.op_type == "GRU")
    assert mm.input[0].endswith("_dq") and mm.input[1].endswith("_dq")  # QDQ activation and int8 weight
    assert gru.input[0] == mm.output[0]  # X' is float: no 8-bit grid on the gates' input term
    inits = {t.name: t for t in r.model.graph.initializer}
    assert inits[gru.input[1]].doc_string == SELECTION_DOC and inits[gru.input[1]].data_type == T.FLOAT
    assert not any(n.endswith("_Wsel") for n in r.plan.tensors)
    ran = ort_ran_ops(r.model, tmp_path)
    assert ran["MatMulIntegerToFloat"] == 1 and ran["GRU"] == 1 and "MatMul" not in ran
    x = _x(8, 4)
    assert _sqnr(_run(m, {"x": x}), _run(r.model, {"x": x})) > 37.5  # measured 39.6 dB


def test_hoist_is_refused_where_it_cannot_apply() -> None:
    with pytest.raises(RecipeError, match="hoist_gru"):
        edgequant.quantize(_gru(), {"x": _x(4, 0)}, method="weight-only", hoist_gru=True)
    mlp = h.make_model(
        h.make_graph(
            [h.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
            [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])], [h.make_tensor_value_info("y", T.FLOAT, ["N", 2])],
            [nh.from_array(np.ones((4, 2), np.float32), "w")],
        ),
        opset_imports=[h.make_opsetid("", 17)],
    )  # fmt: skip
    mlp.ir_version = 8
    with pytest.raises(UnsupportedError, match="no GRU"):
        edgequant.quantize(mlp, {"x": np.ones((4, 4), np.float32)}, method="dynamic", hoist_gru=True)


def test_cli_flag_hoists_and_a_wrong_method_is_one_line_exit_2(tmp_path: Path) -> None:
    model, calib = tmp_path / "gru.onnx", tmp_path / "x.npy"
    onnx.save(_gru(), str(model))
    np.save(calib, _x(16, 6))
    args = ["quantize", str(model), "--calib-data", str(calib), "--hoist-gru"]
    res = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ok")], terminal_width=1000)
    assert res.exit_code == 0, res.output
    out = onnx.load(str(next((tmp_path / "ok").glob("*.onnx"))))
    mm = next(n for n in out.graph.node if n.op_type == "MatMul")
    assert next(n for n in out.graph.node if n.op_type == "GRU").input[0] == mm.output[0]
    assert "hoisted into MatMul" in " ".join(res.output.split())  # the note, printed (wrapped at 80)
    bad = ["quantize", str(model), "--method", "fp16", "--hoist-gru", "-o", str(tmp_path / "bad")]
    res = CliRunner().invoke(app, bad, terminal_width=1000)
    assert res.exit_code == 2 and "hoist_gru" in res.output and res.output.startswith("error: ")
    assert not (tmp_path / "bad").exists()
