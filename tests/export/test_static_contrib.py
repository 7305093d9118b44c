"""Static int8 on a graph holding ORT contrib ops: a MatMul reading a FastGelu (com.microsoft) output
gets its activation quantized (types carried through the schema-less op), and where a data input has
no range the plan says the node is weight-only instead of reporting it W8A8."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant import planner as planner_mod
from edgequant.schemes.qparams import sqnr_db

D = 32


def _block() -> onnx.ModelProto:
    """x -> MatMul_1 -> SkipLayerNormalization(skip=x) -> FastGelu -> MatMul_3 -> y  ([1, 8, 32])."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return nh.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [
        h.make_node("MatMul", ["x", "W1"], ["m1"], name="MatMul_1"),
        h.make_node(
            "SkipLayerNormalization", ["m1", "x", "g", "b"], ["s"], name="SLN", domain="com.microsoft"
        ),
        h.make_node("FastGelu", ["s", "fb"], ["f"], name="FG", domain="com.microsoft"),
        h.make_node("MatMul", ["f", "W2"], ["y"], name="MatMul_3"),
    ]
    g = h.make_graph(
        nodes, "c", [h.make_tensor_value_info("x", T.FLOAT, [1, 8, D])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 8, D])], [w("W1", D, D), w("W2", D, D), w("g", D), w("b", D), w("fb", D)],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 8, D)).astype(np.float32)


def _run(m: onnx.ModelProto, xs: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([s.run(None, {"x": x})[0] for x in xs])


def _input_is_qdq(m: onnx.ModelProto, node: str) -> bool:
    prod = {o: n for n in m.graph.node for o in n.output}
    n = next(n for n in m.graph.node if n.name == node)
    dq = prod.get(n.input[0])
    return (
        dq is not None and dq.op_type == "DequantizeLinear" and prod[dq.input[0]].op_type == "QuantizeLinear"
    )


def test_matmul_after_fastgelu_is_w8a8_and_the_plan_matches_the_file() -> None:
    m = _block()
    r = edgequant.quantize(m, {"x": _x(32, 1)[:, 0]}, "int8-static")
    assert "f" in r.plan.activations()
    for d in r.plan.quantized_nodes:
        if d.op_type == "MatMul":  # planned W8A8: its data input has Q/DQ in the written model
            assert _input_is_qdq(r.model, d.node) and d.reason == "", d
    xs = _x(16, 2)
    db = sqnr_db(_run(m, xs), _run(r.model, xs))
    assert db > 36.0, db  # measured 38.5 dB


def test_a_matmul_whose_input_has_no_range_is_reported_weight_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planner_mod, "contrib_float_outputs", lambda model: set())  # the old, untyped path
    m = _block()
    r = edgequant.quantize(m, {"x": _x(32, 1)[:, 0]}, "int8-static")
    d = next(d for d in r.plan.nodes if d.node == "MatMul_3")
    assert not _input_is_qdq(r.model, "MatMul_3")
    assert "weights int8 only" in d.reason and "FastGelu (com.microsoft)" in d.reason, d
    assert any("MatMul_3" in n and "weight-only" in n for n in r.plan.notes)
    row = next(e for e in r.report["nodes"]["quantized"] if e["node"] == "MatMul_3")
    assert row["reason"] == d.reason, row  # the report says weight-only too, not just "integer kernel"
