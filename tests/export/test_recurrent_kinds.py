"""GRU and RNN: what each method really quantizes, and what it says about the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.errors import UnsupportedError

IN, H, STEPS = 8, 16, 1  # one step per call: a fixed T > 1 time-major input is refused with data


def _recurrent(op: str, head: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    gates = {"RNN": 1, "GRU": 3}[op]

    def w(name: str, *shape: int, s: float = 0.3) -> onnx.TensorProto:
        return nh.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    nodes = [h.make_node(op, ["x", "W", "R", "B"], ["Y", "Yh"], name="rec", hidden_size=H)]
    inits = [w("W", 1, gates * H, IN), w("R", 1, gates * H, H), w("B", 1, 2 * gates * H, s=0.1)]
    if head:
        nodes += [
            h.make_node("Squeeze", ["Y", "ax"], ["ys"], name="sq"),
            h.make_node("MatMul", ["ys", "Wh"], ["y"], name="head"),
        ]
        inits += [w("Wh", H, 4), nh.from_array(np.array([1], np.int64), "ax")]
        out = h.make_tensor_value_info("y", T.FLOAT, [STEPS, 1, 4])
    else:
        nodes.append(h.make_node("Identity", ["Yh"], ["y"], name="out"))
        out = h.make_tensor_value_info("y", T.FLOAT, [1, 1, H])
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [STEPS, 1, IN])], [out], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _data() -> dict[str, np.ndarray]:
    """8 single-step samples."""
    return {"x": np.random.default_rng(1).standard_normal((8, 1, IN)).astype(np.float32)}


def test_dynamic_gru_with_a_small_head_says_most_weights_stay_float() -> None:
    r = edgequant.quantize(_recurrent("GRU", head=True), _data(), method="dynamic")
    rec = next(d for d in r.plan.nodes if d.node == "rec")
    assert not rec.quantized and "no dynamic-quantized GRU kernel" in rec.reason
    # 3*16*(8+16) = 1152 GRU weight values against 64 in the head: 95 % stay float
    msg = next(w for w in r.report["warnings"] if "stay float" in w)
    assert msg.startswith("95 %") and "'rec'" in msg and msg in r.plan.notes
    assert {"R", "W"} <= set(r.report["float_weights"])


def test_dynamic_gru_alone_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="GRU"):
        edgequant.quantize(_recurrent("GRU", head=False), _data(), method="dynamic")


@pytest.mark.parametrize("op", ["RNN", "GRU"])
def test_static_int8_keeps_recurrent_weights_float_with_one_note_per_kind(op: str) -> None:
    """ORT has no static integer RNN/GRU/LSTM kernel: int8 W/R would be dequantized on every call, so static
    int8 on the CPU target keeps them float initializers read directly by the op; the head stays int8."""
    r = edgequant.quantize(_recurrent(op, head=True), _data(), method="static")
    assert not {"W", "R", "B"} & set(r.plan.tensors)
    inits = {t.name: t.data_type for t in r.model.graph.initializer}
    assert inits.get("W") == inits.get("R") == inits.get("B") == T.FLOAT and "W_q" not in inits
    rec = next(n for n in r.model.graph.node if n.op_type == op)
    assert list(rec.input[1:4]) == ["W", "R", "B"] and inits.get("Wh_q") == T.INT8
    d = next(d for d in r.plan.nodes if d.node == "rec")
    assert not d.quantized and d.reason.startswith("weights W, R, B kept float")
    assert f"no static integer {op} kernel" in d.reason and "dequantized on every call" in d.reason
    assert "--method weight-only stores them int8" in d.reason
    assert ("--hoist-gru" in d.reason) == (op == "GRU")
    (note,) = [n for n in r.plan.notes if op in n]  # one line per kind
    assert note.startswith(f"1 {op} node(s) (rec): {d.reason} ") and "recurrent state" in note
    assert "Y" in r.plan.tensors  # the output sequence feeds the quantized head: its Q/DQ is planned
    assert r.report["integer_weights"] == r.report["planned_weights"] == 1  # the head's Wh only
    assert {"W", "R"} <= set(r.report["float_weights"])


@pytest.mark.parametrize("op", ["RNN", "GRU"])
def test_static_below_8_bits_stores_recurrent_weights_as_asked_and_the_note_says_what_runs_float(
    op: str,
) -> None:
    r = edgequant.quantize(_recurrent(op, head=True), _data(), method="static", weight_bits=4)
    assert r.plan.tensors["W"].role == "weight" and r.plan.tensors["R"].spec.bits == 4
    inits = {t.name: t.data_type for t in r.model.graph.initializer}
    assert inits.get("W_q") == T.INT4 and inits.get("R_q") == T.INT4 and "W" not in inits
    note = next(n for n in r.plan.notes if f"{op} 'rec'" in n)
    assert "ORT has no integer one" in note and "gates" in note
    assert f"every call: --exclude rec (or --exclude {op}) keeps its weights float" in note
    # following the note: the node's weights stay float initializers read directly, the head stays 4-bit
    kept = edgequant.quantize(
        _recurrent(op, head=True), _data(), method="static", weight_bits=4, exclude=["rec"]
    )
    inits = {t.name: t.data_type for t in kept.model.graph.initializer}
    assert inits.get("W") == T.FLOAT and inits.get("R") == T.FLOAT and "W_q" not in inits
    rec = next(n for n in kept.model.graph.node if n.op_type == op)
    assert rec.input[1:3] == ["W", "R"]
    assert inits.get("Wh_q") == T.INT4 and not any(f"{op} 'rec'" in n for n in kept.plan.notes)


def test_weight_only_gru_note_counts_the_node_once_and_claims_no_integer_kernel() -> None:
    """The GRU reads two dequantized weights (W, R): one node.  ORT has no integer GRU kernel (static or
    dynamic), so the note must not send the user to static int8 for it."""
    r = edgequant.quantize(_recurrent("GRU", head=True), _data(), method="weight-only")
    notes = [n for n in r.plan.notes if n.startswith("slower than float")]
    gru = next(n for n in notes if "GRU(s)" in n)
    assert "1 GRU(s) (rec)" in gru and "no integer GRU kernel" in gru and "Static int8" not in gru, gru
    assert not any("MatMul(s)" in n for n in notes), notes  # ORT fuses the head into MatMulNBits
    assert any(n.startswith("1 MatMul/Gemm(s) (head) are fused by ONNX Runtime") for n in r.plan.notes)


def _conv_lstm() -> onnx.ModelProto:
    """x[1, 1, 32] -> Conv1d(8, k 3) -> Relu -> [T, 1, 8] -> LSTM(16) -> last h -> MatMul head [1, 4]."""
    rng = np.random.default_rng(2)
    inits = [
        nh.from_array((rng.standard_normal((8, 1, 3)) * 0.5).astype(np.float32), "wc"),
        nh.from_array((rng.standard_normal((1, 4 * H, 8)) * 0.3).astype(np.float32), "W"),
        nh.from_array((rng.standard_normal((1, 4 * H, H)) * 0.3).astype(np.float32), "R"),
        nh.from_array((rng.standard_normal((1, 8 * H)) * 0.1).astype(np.float32), "B"),
        nh.from_array((rng.standard_normal((H, 4)) * 0.3).astype(np.float32), "Wh"),
        nh.from_array(np.array([0], np.int64), "ax"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "wc"], ["c"], name="conv"),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("Transpose", ["r"], ["seq"], name="to_seq", perm=[2, 0, 1]),
        h.make_node("LSTM", ["seq", "W", "R", "B"], ["Y", "Yh", "Yc"], name="lstm", hidden_size=H),
        h.make_node("Squeeze", ["Yh", "ax"], ["hs"], name="sq"),
        h.make_node("MatMul", ["hs", "Wh"], ["y"], name="head"),
    ]
    g = h.make_graph(
        nodes, "conv_lstm", [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 32])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _ort_optimized(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime runs (its extended optimisation, QDQ fusions included), as it writes it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / "ort.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp / "ort.onnx"))


def test_conv_lstm_static_runs_the_lstm_on_float_weights_and_weight_only_stores_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    calib = [{"x": rng.standard_normal((1, 1, 32)).astype(np.float32)} for _ in range(24)]
    r = edgequant.quantize(_conv_lstm(), calib)  # the default: static int8
    opt = _ort_optimized(r.model, tmp_path)
    producer = {o: n.op_type for n in opt.graph.node for o in n.output}
    inits = {t.name: t.data_type for t in opt.graph.initializer}
    lstm = next(n for n in opt.graph.node if n.op_type == "LSTM")
    for w in lstm.input[1:4]:  # W, R, B: float initializers, no DequantizeLinear on every call
        assert inits.get(w) == T.FLOAT and w not in producer, w
    assert "QLinearConv" in producer.values()  # the conv front end runs ORT's integer kernel
    note = next(n for n in r.plan.notes if n.startswith("1 LSTM node(s) (lstm): weights W, R, B kept float"))
    assert "no static integer LSTM kernel" in note and "DynamicQuantizeLSTM" in note
    # weight-only: W and R stored int8 (size), dequantized for ORT's float LSTM
    wo = edgequant.quantize(_conv_lstm(), calib, method="weight-only")
    stored = {t.name: t.data_type for t in wo.model.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in wo.model.graph.node if n.op_type == "DequantizeLinear"}
    lstm = next(n for n in wo.model.graph.node if n.op_type == "LSTM")
    assert [stored.get(dq.get(w, "")) for w in lstm.input[1:3]] == [T.INT8, T.INT8]
    assert wo.report["sizes"]["quantized_bytes"] < r.report["sizes"]["quantized_bytes"]
