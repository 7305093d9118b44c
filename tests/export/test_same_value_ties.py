"""A MaxPool's output shares its input's grid, so ORT runs it on integers (planning/ties.py).

Calibrated on its own, a MaxPool output gets a range of its own (entropy on ResNet-18: 26 % wider than
its input's), and ORT then runs DQ -> MaxPool -> Q in float with layout reorders around it.  Every
MaxPool output value is an input value, so the input's grid holds it exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant


def _pool_net() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = lambda name, *s: nh.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), name)  # noqa: E731
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["p1", "w2", "b2"], ["y"], name="conv2"),
    ]  # fmt: skip
    g = h.make_graph(
        nodes, "pool", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 16, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 8, 8, 8])],
        [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 1, 1), w("b2", 8)],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _qparams(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[float, int]:
    inits = {i.name: nh.to_array(i) for i in model.graph.initializer}
    return float(inits[node.input[1]]), int(inits[node.input[2]])


def test_maxpool_output_on_its_input_grid_runs_on_integers(tmp_path: Path) -> None:
    model = _pool_net()
    x = np.random.default_rng(0).standard_normal((96, 3, 16, 16)).astype(np.float32)
    res = edgequant.quantize(model, {"x": x}, calib_samples=64)
    q = res.model
    # the pool's output quantizer uses its input's scale and zero point (read from the written file)
    pool_in = next(n for n in q.graph.node if n.op_type == "MaxPool").input[0]
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == pool_in)
    qo = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "p1")
    assert _qparams(q, qo) == _qparams(q, dq)
    # ORT's optimised graph: the pool runs on uint8 (NhwcMaxPool), no float MaxPool left
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    qp = tmp_path / "q.onnx"
    onnx.save(q, str(qp))
    sess = ort.InferenceSession(str(qp), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "MaxPool" not in ops and ops.count("NhwcMaxPool") == 1, ops
    # and the output stays close to float on fresh inputs (own sessions; measured 40.6 dB)
    xe = np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": xe}
    )[0]
    got = sess.run(None, {"x": xe})[0]
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
    assert sqnr > 38.5, sqnr
