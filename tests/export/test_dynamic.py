"""Dynamic INT8: MatMul/Gemm/LSTM get int8 weights and run in ONNX Runtime close to float."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgequant.errors import ExportError, UnsupportedError
from edgequant.export.dynamic import quantize_dynamic
from edgequant.runtime import OrtRuntime, detect
from edgequant.schemes.qparams import sqnr_db

FP32 = TensorProto.FLOAT
RT = OrtRuntime()
CONV_REASON = (
    "Conv: ONNX Runtime has no fast dynamic-quantized Conv kernel (ConvInteger runs slower than float Conv "
    "on CPU); left float so the model is not slower than float"
)


def _vi(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, FP32, shape)


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.checker.check_model(m)
    return m


def _arr(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def mlp(gemm_c_input: bool = False) -> onnx.ModelProto:
    """MatMul + Add (bias) -> Relu -> MatMul with a Constant-node weight -> Gemm(transB=1, alpha, beta)."""
    rng = np.random.default_rng(0)
    w3 = numpy_helper.from_array(_arr(rng, (32, 24), 0.2), "w3_value")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="fc1_bias"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("Constant", [], ["w3"], name="w3_const", value=w3),
        helper.make_node("MatMul", ["r", "w3"], ["r3"], name="fc3"),
        helper.make_node("Gemm", ["r3", "w2", "c_in" if gemm_c_input else "c"], ["y"], name="fc2",
                         transB=1, alpha=0.5, beta=2.0),
    ]  # fmt: skip
    inits = [
        numpy_helper.from_array(_arr(rng, (16, 32), 0.3), "w1"),
        numpy_helper.from_array(_arr(rng, (32,), 0.1), "b1"),
        numpy_helper.from_array(_arr(rng, (10, 24), 0.3), "w2"),
        numpy_helper.from_array(_arr(rng, (10,), 0.1), "c"),
    ]
    inputs = [_vi("x", ["n", 16])] + ([_vi("c_in", ["n", 10])] if gemm_c_input else [])
    return (
        _model(nodes, inputs, [_vi("y", ["n", 10])], [] if gemm_c_input else inits)
        if False
        else _model(nodes, inputs, [_vi("y", ["n", 10])], inits[:3] + ([] if gemm_c_input else inits[3:]))
    )


def _int8_weights(m: onnx.ModelProto) -> int:
    """Weight inputs of the dynamic kernels that are int8 initializers (B of MatMul, W and R of LSTM)."""
    int8 = {t.name for t in m.graph.initializer if t.data_type == TensorProto.INT8}
    slots = {"DynamicQuantizeMatMul": (1,), "DynamicQuantizeLSTM": (1, 2)}
    return sum(n.input[i] in int8 for n in m.graph.node for i in slots.get(n.op_type, ()))


@pytest.mark.parametrize(
    ("per_channel", "reduce_range", "min_db"), [(True, False, 30.0), (False, False, 30.0), (True, True, 25.0)]
)
def test_mlp_quantizes_and_stays_close(per_channel: bool, reduce_range: bool, min_db: float) -> None:
    m = mlp()
    before = m.SerializeToString()
    q, plan = quantize_dynamic(m, per_channel=per_channel, reduce_range=reduce_range)
    assert m.SerializeToString() == before
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    ref, got = RT.run(m, {"x": x})["y"], RT.run(q, {"x": x})["y"]
    assert sqnr_db(ref, got) >= min_db
    assert [n.op_type for n in q.graph.node] == ["DynamicQuantizeMatMul", "Relu"] + [
        "DynamicQuantizeMatMul"
    ] * 2
    assert _int8_weights(q) == 3
    assert not {"w1", "w2", "b1", "c"} & {t.name for t in q.graph.initializer}  # float weights are gone
    by = {d.node: d for d in plan.nodes}
    assert set(by) == {n.name for n in m.graph.node}
    assert [by[k].quantized for k in ("fc1", "fc1_bias", "relu", "w3_const", "fc3", "fc2")] == [
        True, True, False, True, True, True,
    ]  # fmt: skip
    assert by["fc1_bias"].reason == "bias folded into the dynamic MatMul of 'fc1'"
    assert by["w3_const"].reason == "weight of 'fc3', stored as int8; Constant node removed"
    assert plan.method == "dynamic" and plan.opset == 17
    assert len(plan.weights()) == 3
    entry = plan.tensors[plan.weights()[0]]
    assert entry.role == "weight" and entry.scale and entry.zero_point == [0] * len(entry.scale)
    assert len(entry.scale) == (32 if per_channel else 1)
    qmax = 63 if reduce_range else 127
    w1q = numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == entry.name))
    assert int(np.abs(w1q).max()) == qmax
    assert any(f"codes in [-{qmax}, {qmax}]" in n for n in plan.notes)


def test_gemm_with_runtime_c_and_beta() -> None:
    m = mlp(gemm_c_input=True)
    q, plan = quantize_dynamic(m)
    assert [d.quantized for d in plan.nodes if d.node in ("fc2", "fc3")] == [True, True]
    rng = np.random.default_rng(2)
    feeds = {
        "x": rng.standard_normal((8, 16)).astype(np.float32),
        "c_in": rng.standard_normal((8, 10)).astype(np.float32),
    }
    assert sqnr_db(RT.run(m, feeds)["y"], RT.run(q, feeds)["y"]) >= 30.0
    ops = [n.op_type for n in q.graph.node]
    assert ops[-3:] == ["DynamicQuantizeMatMul", "Mul", "Add"]


def test_conv_net_gets_no_quantized_node() -> None:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "k1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "k2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap"),
    ]
    inits = [
        numpy_helper.from_array(_arr(rng, (8, 3, 3, 3), 0.3), "k1"),
        numpy_helper.from_array(_arr(rng, (4, 8, 3, 3), 0.3), "k2"),
    ]
    m = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 1, 1])], inits)
    q, plan = quantize_dynamic(m)
    assert plan.quantized_nodes == []
    assert [d.reason for d in plan.nodes if d.op_type == "Conv"] == [CONV_REASON, CONV_REASON]
    assert all(d.reason for d in plan.nodes)
    assert _int8_weights(q) == 0
    assert not any(o.domain == "com.microsoft" for o in q.opset_import)


def lstm_model(op: str = "LSTM") -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    hidden, inp, gates = 16, 8, 4 if op == "LSTM" else 3
    inits = [
        numpy_helper.from_array(_arr(rng, (1, gates * hidden, inp), 0.3), "W"),
        numpy_helper.from_array(_arr(rng, (1, gates * hidden, hidden), 0.3), "R"),
        numpy_helper.from_array(_arr(rng, (1, 2 * gates * hidden), 0.1), "B"),
    ]
    state = ["h0", "c0"] if op == "LSTM" else ["h0"]
    node = helper.make_node(
        op, ["X", "W", "R", "B", "", *state], ["Y", "Y_h", *(["Y_c"] if op == "LSTM" else [])], name="rnn",
        hidden_size=hidden,
    )  # fmt: skip
    inputs = [_vi("X", [5, 2, inp])] + [_vi(s, [1, 2, hidden]) for s in state]
    outputs = [_vi("Y", [5, 1, 2, hidden]), _vi("Y_h", [1, 2, hidden])] + (
        [_vi("Y_c", [1, 2, hidden])] if op == "LSTM" else []
    )
    return _model([node], inputs, outputs, inits)


@pytest.mark.parametrize("per_channel", [True, False])
def test_lstm_quantizes(per_channel: bool) -> None:
    m = lstm_model()
    # as the pipeline does: without VNNI, ORT's u8s8 kernels can saturate (measured here on AVX2-only
    # AMD EPYC, per-channel: 16-23 dB without reduce_range, 38-40 dB with it)
    q, plan = quantize_dynamic(m, per_channel=per_channel, reduce_range=detect().needs_reduce_range)
    assert [n.op_type for n in q.graph.node] == ["DynamicQuantizeLSTM"]
    assert _int8_weights(q) == 2
    rng = np.random.default_rng(5)
    feeds = {
        "X": rng.standard_normal((5, 2, 8)).astype(np.float32),
        "h0": (rng.standard_normal((1, 2, 16)) * 0.5).astype(np.float32),
        "c0": (rng.standard_normal((1, 2, 16)) * 0.5).astype(np.float32),
    }
    ref, got = RT.run(m, feeds), RT.run(q, feeds)
    for name in ("Y", "Y_h", "Y_c"):
        assert sqnr_db(ref[name], got[name]) >= 32.0, name  # measured 34.9-44 dB (VNNI or reduce_range)
    assert plan.quantized_nodes[0].node == "rnn"
    scales = [len(plan.tensors[w].scale or []) for w in plan.weights()]
    assert scales == ([64, 64] if per_channel else [1, 1])


def test_gru_stays_float_with_reason() -> None:
    q, plan = quantize_dynamic(lstm_model("GRU"))
    assert plan.quantized_nodes == []
    assert plan.nodes[0].reason.startswith("GRU: ONNX Runtime has no dynamic-quantized GRU kernel")
    assert _int8_weights(q) == 0


def test_runtime_b_and_exclusions_are_explained() -> None:
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("MatMul", ["s", "wv"], ["y"], name="proj"),
    ]
    m = _model(
        nodes,
        [_vi("q", [4, 8]), _vi("kt", [8, 4])],
        [_vi("y", [4, 6])],
        [numpy_helper.from_array(_arr(rng, (4, 6), 1.0), "wv")],
    )
    _, plan = quantize_dynamic(m, exclude_nodes=["proj"])
    by = {d.node: d for d in plan.nodes}
    assert by["scores"].reason == (
        "MatMul: input B 'kt' is not a constant (it is computed at run time, e.g. attention scores)"
    )
    assert by["proj"].reason == "excluded by user"
    _, plan2 = quantize_dynamic(m)
    assert [d.node for d in plan2.quantized_nodes] == ["proj"]
    with pytest.raises(
        ExportError, match=re.escape("exclude_nodes names 1 node(s) not in the main graph, e.g. 'x'")
    ):
        quantize_dynamic(m, exclude_nodes=["x"])


def test_four_bit_weights_are_refused() -> None:
    with pytest.raises(UnsupportedError) as err:
        quantize_dynamic(mlp(), weight_bits=4)
    assert str(err.value) == (
        "dynamic quantization with weight_bits=4 was requested; ONNX Runtime's dynamic kernels "
        "(DynamicQuantizeMatMul, DynamicQuantizeLSTM) take 8-bit weights only. Fix: use weight_bits=8 "
        "(reduce_range=True for a 7-bit range), or a weight-only 4-bit method."
    )
