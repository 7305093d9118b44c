"""A signed activation grid carried to a graph output by a layout op loads in ORT (opset 21, ti-npu w4a8).

ORT 1.32 propagates ``DQ(int8) -> Reshape -> output`` and makes a QuantizeLinear whose output_dtype
(INT8) and zero point (UINT8) disagree: the load fails.  Seen on PP-OCRv4 rec (Softmax -> Reshape).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.export.layout_tail import close_layout_tails

SQNR_FLOOR_DB = 17.5  # measured 19.8 dB (ORT 1.32, CPU EP): about 2 dB under


def _session(m: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _attention_tail() -> onnx.ModelProto:
    """x [N, 16] -> MatMul -> Softmax -> MatMul -> Softmax -> Reshape -> y [N, 4, 4]."""
    rng = np.random.default_rng(0)
    w1 = nh.from_array((rng.standard_normal((16, 16)) * 0.4).astype(np.float32), "w1")
    w2 = nh.from_array((rng.standard_normal((16, 16)) * 2.0).astype(np.float32), "w2")
    shape = nh.from_array(np.array([-1, 4, 4], np.int64), "shape")
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
        h.make_node("Softmax", ["a"], ["p"], name="sm1", axis=-1),
        h.make_node("MatMul", ["p", "w2"], ["b"], name="mm2"),
        h.make_node("Softmax", ["b"], ["s"], name="sm2", axis=-1),
        h.make_node("Reshape", ["s", "shape"], ["y"], name="rs"),
    ]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 4])], [w1, w2, shape],
    )  # fmt: skip
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_ti_npu_w4a8_softmax_reshape_output_loads_with_one_activation_dtype() -> None:
    m = _attention_tail()
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((64, 16)).astype(np.float32)
    q = edgequant.quantize(m, {"x": calib}, target="ti-npu", weight_bits=4)
    qm = q.model
    assert max(o.version for o in qm.opset_import if o.domain in ("", "ai.onnx")) >= 21
    inits = {t.name: t for t in qm.graph.initializer}
    pairs = [n for n in qm.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    act_zps = {
        inits[n.input[2]].data_type for n in pairs if n.input[0] not in inits and not inits[n.input[2]].dims
    }
    assert act_zps == {T.INT8}  # every activation Q/DQ (incl. the Softmax outputs) on the signed grid
    inferred = onnx.shape_inference.infer_shapes(qm, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    for n in qm.graph.node:
        if n.op_type == "QuantizeLinear":
            assert types[n.output[0]] == inits[n.input[2]].data_type, n.name
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "y_raw" for n in qm.graph.node)

    x = rng.standard_normal((256, 16)).astype(np.float32)  # held out: another seed's draws
    ref = np.asarray(_session(m).run(None, {"x": x})[0], np.float64)
    got = np.asarray(_session(qm).run(None, {"x": x})[0], np.float64)
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))
    assert sqnr > SQNR_FLOOR_DB, sqnr


def test_the_pair_is_added_only_for_signed_grids_at_opset_21() -> None:
    """Q(int8) -> DQ -> Transpose -> y at opset 21 (ORT 1.32 cannot load it as written): closed, it
    loads and gives numpy's values; a uint8 grid or opset 17 is left alone (ORT loads those)."""

    def model(zp: np.ndarray, opset: int) -> onnx.ModelProto:
        inits = [nh.from_array(np.array(0.01, np.float32), "s"), nh.from_array(zp, "z")]
        nodes = [
            h.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
            h.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
            h.make_node("Transpose", ["xd"], ["y"], name="t"),
        ]
        g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [3, 5])],
                         [h.make_tensor_value_info("y", T.FLOAT, [5, 3])], inits)  # fmt: skip
        return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])

    x = np.random.default_rng(2).uniform(-1, 1, (3, 5)).astype(np.float32)
    expected = (np.clip(np.round(x / 0.01), -128, 127) * 0.01).T  # numpy's Q/DQ, then the transpose
    fixed = model(np.array(0, np.int8), 21)
    used: set[str] = {"x", "xq", "xd", "y", "s", "z", "q", "dq", "t"}

    def fresh(base: str) -> str:
        used.add(base)
        return base

    notes = close_layout_tails(fixed.graph, 21, fresh)
    assert len(notes) == 1 and [n.op_type for n in fixed.graph.node][-2:] == [
        "QuantizeLinear",
        "DequantizeLinear",
    ]
    np.testing.assert_allclose(_session(fixed).run(None, {"x": x})[0], expected, atol=1e-6)
    for zp, opset in ((np.array(0, np.int8), 17), (np.array(128, np.uint8), 21)):
        m = model(zp, opset)
        assert close_layout_tails(m.graph, opset, fresh) == [] and len(m.graph.node) == 3
        _session(m)
