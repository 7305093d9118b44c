"""CLE's report row names the residual Add or Concat where a conv's equalisation chain stops (#17 §1)."""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

import edgequant
from edgequant.algorithms.cle import find_pairs
from tests.algorithms.passnets import fan_in_weight, images


def _joins_net() -> onnx.ModelProto:
    """conv1 -> relu1 -> {conv2, add}; conv2 -> add (residual) -> relu2 -> {conv3, conv4} -> concat ->
    conv5 -> relu5 -> conv6: one equalizable pair (conv5 -> conv6), four convs stopped by a join."""
    w = partial(fan_in_weight, np.random.default_rng(0))
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Add", ["c2", "r1"], ["a"], name="res_add"),
        h.make_node("Relu", ["a"], ["r2"], name="relu2"),
        h.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
        h.make_node("Conv", ["r2", "w4"], ["c4"], name="conv4"),
        h.make_node("Concat", ["c3", "c4"], ["cat"], name="cat", axis=1),
        h.make_node("Conv", ["cat", "w5"], ["c5"], name="conv5"),
        h.make_node("Relu", ["c5"], ["r5"], name="relu5"),
        h.make_node("Conv", ["r5", "w6"], ["y"], name="conv6"),
    ]
    shapes = {"w1": (8, 3, 3, 3), "w2": (8, 8, 3, 3), "w3": (4, 8, 1, 1), "w4": (4, 8, 1, 1),
              "w5": (8, 8, 1, 1), "w6": (4, 8, 1, 1)}  # fmt: skip
    g = h.make_graph(
        nodes,
        "joins",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 12, 12])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 4, 12, 12])],
        [w(name, *shape) for name, shape in shapes.items()],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_cle_skipped_names_residual_add_and_concat() -> None:
    model = _joins_net()
    pairs, skipped = find_pairs(model)
    assert [(p.first.name, p.second.name) for p in pairs] == [("conv5", "conv6")]
    assert skipped == [
        "conv1: output feeds residual Add 'res_add' (CLE stops at residual joins)",  # through relu1
        "conv2: output feeds residual Add 'res_add' (CLE stops at residual joins)",
        "conv3: output feeds Concat 'cat' (CLE stops at Concat joins)",
        "conv4: output feeds Concat 'cat' (CLE stops at Concat joins)",
        "conv6: its output is read by 0 nodes or is a graph output",
    ]  # before the fix only conv6's line
    x = images(80)
    res = edgequant.quantize(model, x, algorithms=["cle"], calib_samples=64)
    row = res.report["algorithms"][0]
    assert row["skipped"] == skipped
    assert len(row["changed"]) == 1 and row["changed"][0].startswith("conv5 -> conv6 (through Relu)")
