"""CLE's report row names the node where each conv's equalisation chain stops (#17 §1)."""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

import edgequant
from edgequant.algorithms.cle import find_pairs
from tests.algorithms.passnets import fan_in_weight, images


def _stops_net() -> onnx.ModelProto:
    """c1 -> Relu -> MaxPool -> c2 -> Sigmoid -> c3 -> HardSwish -> c4 -> Relu -> c5: one equalizable
    pair (c4 -> c5); c1, c2, c3 stopped by the MaxPool, the Sigmoid and the HardSwish."""
    w = partial(fan_in_weight, np.random.default_rng(0))
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["a1"], name="c1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        h.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Conv", ["p1", "w2"], ["a2"], name="c2", pads=[1, 1, 1, 1]),
        h.make_node("Sigmoid", ["a2"], ["s2"], name="sig"),
        h.make_node("Conv", ["s2", "w3"], ["a3"], name="c3", pads=[1, 1, 1, 1]),
        h.make_node("HardSwish", ["a3"], ["s3"], name="hswish"),
        h.make_node("Conv", ["s3", "w4"], ["a4"], name="c4"),
        h.make_node("Relu", ["a4"], ["r4"], name="relu4"),
        h.make_node("Conv", ["r4", "w5"], ["y"], name="c5"),
    ]
    shapes = {"w1": (8, 3, 3, 3), "w2": (8, 8, 3, 3), "w3": (8, 8, 3, 3), "w4": (8, 8, 1, 1),
              "w5": (4, 8, 1, 1)}  # fmt: skip
    g = h.make_graph(
        nodes,
        "stops",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 12, 12])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 4, 6, 6])],
        [w(name, *shape) for name, shape in shapes.items()],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_cle_skipped_names_pool_and_non_homogeneous_activations() -> None:
    model = _stops_net()
    pairs, skipped = find_pairs(model)
    assert [(p.first.name, p.second.name) for p in pairs] == [("c4", "c5")]
    assert skipped == [
        "c1: output goes through MaxPool 'pool1' (CLE stops there)",  # after relu1
        "c2: followed by Sigmoid 'sig' (not positive-homogeneous)",
        "c3: followed by HardSwish 'hswish' (not positive-homogeneous)",
        "c5: its output is read by 0 nodes or is a graph output",
    ]  # before the fix only c5's line
    res = edgequant.quantize(model, images(80), algorithms=["cle"], calib_samples=64)
    row = res.report["algorithms"][0]
    assert row["skipped"] == skipped
    assert len(row["changed"]) == 1 and row["changed"][0].startswith("c4 -> c5 (through Relu)")
