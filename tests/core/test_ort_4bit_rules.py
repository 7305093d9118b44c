"""The rules of ``planning.ort_4bit`` against ONNX Runtime itself: one- or two-op graphs built here, planned by
hand with 4-bit activations, exported by EdgeQuant's QDQ exporter and loaded in our own ORT sessions at the
default optimisation level.  A case the rules flag fails at session creation, or (a Relu before a symmetric
4-bit QuantizeLinear) runs with outputs that differ from the unoptimised session by more than one output
step; a case they pass loads and matches."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.export.qdq import export_qdq
from edgequant.model import ensure_opset
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.planning import ort_4bit
from edgequant.schemes.spec import Granularity, QuantSpec

SHAPE = [1, 4, 8, 8]
A4 = QuantSpec(bits=4, signed=False, symmetric=False)
A4_SYM = QuantSpec(bits=4, signed=False, symmetric=True)

# case -> (nodes as (op, inputs, output, attributes), activations planned 4-bit, weight bits or None, symmetric)
CASES: dict[str, tuple[list[tuple[str, list[str], str, dict[str, object]]], list[str], int | None, bool]] = {
    "conv_w8": ([("Conv", ["x", "w"], "y", {})], ["x", "y"], 8, False),
    "conv_w4": ([("Conv", ["x", "w"], "y", {})], ["x", "y"], 4, False),
    "conv_w8_float_output": ([("Conv", ["x", "w"], "y", {})], ["x"], 8, False),
    "conv_w8_relu": ([("Conv", ["x", "w"], "c", {}), ("Relu", ["c"], "y", {})], ["x", "y"], 8, False),
    "conv_w8_reshape": (
        [("Conv", ["x", "w"], "c", {}), ("Reshape", ["c", "shape"], "y", {})],
        ["x", "y"],
        8,
        False,
    ),
    "conv_w8_flatten": ([("Conv", ["x", "w"], "c", {}), ("Flatten", ["c"], "y", {})], ["x", "y"], 8, False),
    "transpose_conv_w8": (
        [("Transpose", ["x"], "t", {"perm": [0, 1, 3, 2]}), ("Conv", ["t", "w"], "y", {})],
        ["x", "y"],
        8,
        False,
    ),
    "conv_w4_clip": (
        [("Conv", ["x", "w"], "c", {}), ("Clip", ["c", "lo", "hi"], "y", {})],
        ["x", "y"],
        4,
        False,
    ),
    "clip_of_graph_input": ([("Clip", ["x", "lo", "hi"], "y", {})], ["y"], None, False),
    "maxpool_in": ([("MaxPool", ["x"], "y", {"kernel_shape": [2, 2]})], ["x"], None, False),
    "conv_w4_maxpool_out": (
        [("Conv", ["x", "w"], "c", {}), ("MaxPool", ["c"], "y", {"kernel_shape": [2, 2]})],
        ["x", "y"],
        4,
        False,
    ),
    "avgpool": ([("AveragePool", ["x"], "y", {"kernel_shape": [2, 2]})], ["x", "y"], None, False),
    "conv_w4_relu_symmetric": (
        [("Conv", ["x", "w"], "c", {}), ("Relu", ["c"], "y", {})],
        ["x", "y"],
        4,
        True,
    ),
    "conv_w4_relu_asymmetric": (
        [("Conv", ["x", "w"], "c", {}), ("Relu", ["c"], "y", {})],
        ["x", "y"],
        4,
        False,
    ),
    "relu_reshape_symmetric": (
        [("Conv", ["x", "w"], "c", {}), ("Relu", ["c"], "r", {}), ("Reshape", ["r", "shape"], "y", {})],
        ["x", "y"],
        4,
        True,
    ),
    "gemm_w8": ([("Gemm", ["x", "w"], "y", {"transB": 1})], ["x", "y"], 8, False),
}


def _case(name: str) -> tuple[onnx.ModelProto, QuantPlan, dict[str, np.ndarray]]:
    ops, acts, wbits, symmetric = CASES[name]
    rng = np.random.default_rng(0)
    gemm = ops[0][0] == "Gemm"
    x = rng.normal(size=[4, 16] if gemm else SHAPE).astype(np.float32)
    inits = [
        nh.from_array((rng.normal(size=(8, 16) if gemm else (4, 4, 1, 1)) * 0.3).astype(np.float32), "w"),
        nh.from_array(np.array(0, np.float32), "lo"),
        nh.from_array(np.array(0.6, np.float32), "hi"),
        nh.from_array(np.array([1, -1], np.int64), "shape"),
    ]
    nodes = [
        h.make_node(op, ins, [out], name=f"n{i}_{op}", **attrs) for i, (op, ins, out, attrs) in enumerate(ops)
    ]
    nodes.append(
        h.make_node("Identity", ["y"], ["out"], name="reader")
    )  # y's Q/DQ feeds a node, as in a model
    g = h.make_graph(
        nodes, name, [h.make_tensor_value_info("x", T.FLOAT, list(x.shape))],
        [h.make_tensor_value_info("out", T.FLOAT, None)], inits,
    )  # fmt: skip
    model, _ = ensure_opset(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), 21, "int4")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}), strict=True))
    plan = QuantPlan(method="static", opset=21)
    spec = A4_SYM if symmetric else A4
    for t in acts:  # ranges from the float run: the graph output's from its values, x's from the input
        v = x if t == "x" else values["out"] if t == "y" else None
        assert v is not None
        plan.tensors[t] = TensorEntry(t, "activation", spec, lo=min(0.0, float(v.min())), hi=float(v.max()))
    if wbits is not None:
        plan.tensors["w"] = TensorEntry(
            "w",
            "weight",
            QuantSpec(bits=wbits, signed=True, symmetric=True, granularity=Granularity.PER_TENSOR),
        )
    for n in model.graph.node:
        plan.decide(n.name, n.op_type, True, "")
    return model, plan, {"x": x}


def _ort_verdict(q: onnx.ModelProto, plan: QuantPlan, feeds: dict[str, np.ndarray]) -> str:
    """'fails' (no session at the default level), 'wrong' (outputs off the unoptimised session's by more than
    1.5 output steps) or 'runs'."""
    off = ort.SessionOptions()
    off.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(q.SerializeToString(), off, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]
    try:
        sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # ORT's own load errors (INVALID_GRAPH, FAIL)
        return "fails"
    step = plan.tensors["y"].scale[0] if "y" in plan.tensors and plan.tensors["y"].scale else 0.0
    return "wrong" if np.abs(sess.run(None, feeds)[0] - ref).max() > 1.5 * step + 1e-6 else "runs"


EXPECTED = {
    "conv_w8": "fails", "conv_w4": "runs", "conv_w8_float_output": "runs", "conv_w8_relu": "fails",
    "conv_w8_reshape": "fails", "conv_w8_flatten": "runs", "transpose_conv_w8": "fails", "conv_w4_clip": "fails",
    "clip_of_graph_input": "runs", "maxpool_in": "fails", "conv_w4_maxpool_out": "fails", "avgpool": "runs",
    "conv_w4_relu_symmetric": "wrong", "conv_w4_relu_asymmetric": "runs", "relu_reshape_symmetric": "wrong",
    "gemm_w8": "runs",
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_rules_match_what_ort_does(name: str) -> None:
    model, plan, feeds = _case(name)
    flagged = ort_4bit.problems(model, plan)
    q, exported = export_qdq(model, plan)
    verdict = _ort_verdict(q, exported, feeds)
    assert verdict == EXPECTED[name], (name, verdict)  # ORT 1.32's behaviour, as measured
    assert bool(flagged) == (verdict != "runs"), (name, verdict, flagged)
