"""Per-layer error on a hand-built QDQ model (Conv -> Relu -> Flatten -> MatMul, "_dq" convention)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.evaluate import layers
from edgequant.evaluate.metrics import sqnr_db

RNG = np.random.default_rng(7)
W1 = (RNG.standard_normal((3, 2, 3, 3)) * 0.4).astype(np.float32)
W2 = (RNG.standard_normal((48, 5)) * 0.3).astype(np.float32)
X = RNG.standard_normal((6, 2, 4, 4)).astype(np.float32)


def _float_model() -> onnx.ModelProto:
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu"),
        h.make_node("Flatten", ["r1"], ["f"], name="flatten"),
        h.make_node("MatMul", ["f", "w2"], ["y"], name="matmul"),
    ]
    g = h.make_graph(
        nodes,
        "float",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 2, 4, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 5])],
        [nh.from_array(W1, "w1"), nh.from_array(W2, "w2")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _wq(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    s = np.float32(np.abs(w).max() / 127.0)
    return np.clip(np.round(w / s), -127, 127).astype(np.int8), s


def _qdq_model(r1_scale: float) -> onnx.ModelProto:
    """x, r1 quantized uint8 (r1 with the given scale), w1/w2 int8 per tensor; consumers read *_dq."""
    w1q, s1 = _wq(W1)
    w2q, s2 = _wq(W2)
    c = nh.from_array
    inits = [
        c(w1q, "w1_q"), c(np.array(s1, np.float32), "w1_s"), c(np.array(0, np.int8), "w1_z"),
        c(w2q, "w2_q"), c(np.array(s2, np.float32), "w2_s"), c(np.array(0, np.int8), "w2_z"),
        c(np.array(8.0 / 255, np.float32), "x_s"), c(np.array(128, np.uint8), "x_z"),
        c(np.array(r1_scale, np.float32), "r1_s"), c(np.array(0, np.uint8), "r1_z"),
    ]  # fmt: skip
    nodes = [
        h.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"], name="x_quant"),
        h.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"], name="x_dequant"),
        h.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_z"], ["w1_dq"], name="w1_dequant"),
        h.make_node("Conv", ["x_dq", "w1_dq"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu"),
        h.make_node("QuantizeLinear", ["r1", "r1_s", "r1_z"], ["r1_q"], name="r1_quant"),
        h.make_node("DequantizeLinear", ["r1_q", "r1_s", "r1_z"], ["r1_dq"], name="r1_dequant"),
        h.make_node("Flatten", ["r1_dq"], ["f"], name="flatten"),
        h.make_node("DequantizeLinear", ["w2_q", "w2_s", "w2_z"], ["w2_dq"], name="w2_dequant"),
        h.make_node("MatMul", ["f", "w2_dq"], ["y"], name="matmul"),
    ]
    g = h.make_graph(
        nodes,
        "qdq",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 2, 4, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 5])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_coarse_activation_ranks_worst_and_weight_sqnr_matches_numpy() -> None:
    fm, qm = _float_model(), _qdq_model(r1_scale=1.0)  # r1 spans ~0..3: only 4 levels
    samples = [{"x": X[:3]}, {"x": X[3:]}]
    rep = layers.per_layer_error(fm, qm, samples, top_k=10)
    names = [t.tensor for t in rep.tensors]
    assert sorted(names) == ["r1", "w1", "w2", "x"]
    assert rep.tensors[0].tensor == "r1" and rep.tensors[0].kind == "activation"
    assert rep.tensors[0].sqnr_db < 15.0  # measured 12.3 dB; the others are > 40 dB
    by = {t.tensor: t for t in rep.tensors}
    assert by["w1"].kind == "weight" and by["w1"].consumers == ["conv"]
    w1q, s1 = _wq(W1)
    want = sqnr_db(W1, w1q.astype(np.float32) * s1)
    assert by["w1"].sqnr_db == pytest.approx(want, abs=1e-4)
    assert by["w1"].sqnr_db > 35.0
    # isolated: Flatten reads the coarse r1_dq, Conv reads x_dq/w1_dq, MatMul reads w2_dq
    iso = {n.node: n for n in rep.isolated}
    assert set(iso) == {"conv", "flatten", "matmul"}
    assert rep.isolated[0].node == "flatten"
    assert iso["flatten"].output_sqnr_db < 15.0
    assert iso["matmul"].output_sqnr_db > 30.0
    assert iso["conv"].output_sqnr_db > 25.0
    assert iso["flatten"].quantized_inputs == ["r1_dq"]
    assert rep.samples == 6
    assert rep.to_dict()["tensors"][0]["tensor"] == "r1"


def test_fine_scale_fixes_the_layer_and_top_k_limits_isolation() -> None:
    fm, qm = _float_model(), _qdq_model(r1_scale=4.0 / 255)  # r1 now well resolved
    rep = layers.per_layer_error(fm, qm, [{"x": X}], top_k=1)
    assert {t.tensor: t for t in rep.tensors}["r1"].sqnr_db > 35.0  # measured 39.4 dB (was 12.3)
    assert len(rep.isolated) == 1  # top_k=1: only the node with the worst input SQNR
    assert rep.isolated[0].node == "flatten"
    assert rep.isolated[0].output_sqnr_db > 40.0  # measured 46.9 dB (was 10.2)


def test_isolated_copy_rewires_other_consumers_to_float() -> None:
    fm, qm = _float_model(), _qdq_model(r1_scale=1.0)
    pairs, misses = layers.qdq_pairs(fm, qm)
    assert pairs == {"x_dq": "x", "w1_dq": "w1", "r1_dq": "r1", "w2_dq": "w2"} and misses == []
    idx = [n.name for n in qm.graph.node].index("matmul")
    iso = layers.isolate(qm, fm, pairs, idx)
    ops = {n.name: list(n.input) for n in iso.graph.node}
    assert ops["conv"] == ["x", "w1"] and ops["flatten"] == ["r1"] and ops["matmul"] == ["f", "w2_dq"]
    assert "r1_quant" not in ops and "x_quant" not in ops  # dead Q/DQ pairs pruned
    assert {i.name for i in iso.graph.initializer} >= {"w1", "w2_q"}


def test_unmatched_dq_is_reported() -> None:
    fm, qm = _float_model(), _qdq_model(r1_scale=1.0)
    for n in qm.graph.node:
        if n.name == "w2_dequant":
            n.output[0] = "ghost_dq"
        if n.name == "matmul":
            n.input[1] = "ghost_dq"
    rep = layers.per_layer_error(fm, qm, [{"x": X}], top_k=0)
    assert rep.unmatched == [{"tensor": "ghost_dq", "reason": "the float model has no tensor named 'ghost'"}]
    assert "w2" not in [t.tensor for t in rep.tensors]
