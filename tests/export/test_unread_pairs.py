"""Which unread Q/DQ pairs ``round_trips.drop_unread`` removes and which it keeps, on a graph the test builds.

Three pairs nobody reads: after a Transpose whose float reader is a Sigmoid (removed); after a MatMul that reads
a DequantizeLinear (kept: without the Q, ORT would fuse MatMulIntegerToFloat, another kernel); after a Tanh
read only inside an If branch (kept: ORT 1.32 aborted at load on the like of it beside a Keras GRU's Loop).
The outputs in our own ORT session are bit for bit the same before and after.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import ort_optimized_graph

from edgequant.export.round_trips import drop_unread


def _pair(x: str) -> list[onnx.NodeProto]:
    return [
        h.make_node("QuantizeLinear", [x, "s", "z"], [f"{x}_q"], name=f"{x}_q"),
        h.make_node("DequantizeLinear", [f"{x}_q", "s", "z"], [f"{x}_dq"], name=f"{x}_dq"),
    ]


def _net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(np.array(0.05, np.float32), "s"),
        nh.from_array(np.array(128, np.uint8), "z"),
        nh.from_array(rng.integers(-127, 128, (8, 8)).astype(np.int8), "w_q"),
        nh.from_array(np.array(0.01, np.float32), "w_s"),
        nh.from_array(np.array(0, np.int8), "w_z"),
    ]
    branch = h.make_graph(
        [h.make_node("Neg", ["u"], ["v"])], "then", [], [h.make_tensor_value_info("v", T.FLOAT, [8, 4])]
    )
    other = h.make_graph(
        [h.make_node("Abs", ["u"], ["v2"])], "else", [], [h.make_tensor_value_info("v2", T.FLOAT, [8, 4])]
    )
    nodes = [
        *_pair("x"),
        h.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"]),
        h.make_node("MatMul", ["x_dq", "w_dq"], ["m"], name="matmul"),
        h.make_node("Relu", ["m"], ["y1"]),
        *_pair("m"),
        h.make_node("Transpose", ["x_dq"], ["t"], perm=[1, 0]),
        h.make_node("Sigmoid", ["t"], ["y2"]),
        *_pair("t"),
        h.make_node("Tanh", ["t"], ["u"]),
        *_pair("u"),
        h.make_node("If", ["yes"], ["y3"], then_branch=branch, else_branch=other),
    ]
    outs = [h.make_tensor_value_info(n, T.FLOAT, None) for n in ("y1", "y2", "y3")]
    graph = h.make_graph(
        nodes,
        "unread",
        [h.make_tensor_value_info("x", T.FLOAT, [4, 8]), h.make_tensor_value_info("yes", T.BOOL, [])],
        outs,
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_drop_unread_keeps_what_changes_ort_kernels_or_load(tmp_path: Path) -> None:
    before = _net()
    after = copy.deepcopy(before)
    assert drop_unread(after) == ["t"]
    assert len(before.graph.node) - len(after.graph.node) == 2
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    outs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x, "yes": np.array(True)}
        )
        for m in (before, after)
    ]
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1], strict=True))
    ran = [
        Counter(n.op_type for n in ort_optimized_graph(m, tmp_path, "ORT_ENABLE_EXTENDED").node)
        for m in (before, after)
    ]
    assert ran[0]["MatMul"] == ran[1]["MatMul"] == 1 and ran[1]["MatMulIntegerToFloat"] == 0, ran
    assert (ran[0]["QuantizeLinear"], ran[1]["QuantizeLinear"]) == (4, 3), ran
    removed = copy.deepcopy(
        before
    )  # what the kept rule avoids: the MatMul's pair gone, ORT fuses another kernel
    removed.graph.node.remove(next(n for n in removed.graph.node if n.name == "m_q"))
    removed.graph.node.remove(next(n for n in removed.graph.node if n.name == "m_dq"))
    fused = Counter(n.op_type for n in ort_optimized_graph(removed, tmp_path, "ORT_ENABLE_EXTENDED").node)
    assert fused["MatMulIntegerToFloat"] == 1 and fused["MatMul"] == 0, fused
