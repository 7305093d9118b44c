"""The model handed to TVM: run-time Reshape shapes folded to constants, unknown input dims named.

The model is built the way Paddle2ONNX writes PP-OCR's classifier head: a batch of ``dim_value: -1``,
spatial sizes ``"?"`` and a flatten computed from ``Shape``.  Expected values come from this test's own
ONNX Runtime sessions on the original model; the TVM case runs the written library in TVM's own
interpreter by a script of this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from toolchain_helpers import RUN_SO, need_toolchain, quantize_to, run_artifact

from edgequant.schemes import sqnr_db
from edgequant.toolchains.tvm_prepare import fold_reshape_shapes, name_unknown_dims


def paddle_head(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu -> GAP -> Reshape(x, Concat(Cast(Slice(Cast(Shape(x)), 0, 1)), Cast(6))) -> MatMul."""
    rng = np.random.default_rng(seed)
    inits = {
        "w": (rng.standard_normal((6, 3, 3, 3)) * 0.3).astype(np.float32),
        "b": (rng.standard_normal(6) * 0.1).astype(np.float32),
        "fc": (rng.standard_normal((6, 4)) * 0.3).astype(np.float32),
        "starts": np.array([0], np.int64), "ends": np.array([1], np.int64), "axes": np.array([0], np.int64),
    }  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        h.make_node("Shape", ["g"], ["s"], name="shape"),
        h.make_node("Cast", ["s"], ["s32"], name="cast1", to=T.INT32),
        h.make_node("Slice", ["s32", "starts", "ends", "axes"], ["n"], name="slice"),
        h.make_node("Cast", ["n"], ["n64"], name="cast2", to=T.INT64),
        h.make_node("Constant", [], ["six"], name="six", value=nh.from_array(np.array([6], np.int32))),
        h.make_node("Cast", ["six"], ["six64"], name="cast3", to=T.INT64),
        h.make_node("Concat", ["n64", "six64"], ["shp"], name="concat", axis=0),
        h.make_node("Reshape", ["g", "shp"], ["f"], name="flatten"),
        h.make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    x = h.make_tensor_value_info("x", T.FLOAT, [-1, 3, "?", "?"])
    g = h.make_graph(
        nodes, "paddle", [x], [h.make_tensor_value_info("y", T.FLOAT, [-1, 4])],
        [nh.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


def test_fold_keeps_the_batch_dynamic_and_the_outputs_exact() -> None:
    model = paddle_head()
    prepared, folded = fold_reshape_shapes(model)
    assert folded == [
        {"node": "flatten", "shape_from": ["Concat", "Cast", "Constant", "Cast", "Slice", "Cast", "Shape"],
         "shape": [0, 6]}
    ]  # fmt: skip
    reshape = next(n for n in prepared.graph.node if n.op_type == "Reshape")
    shape = next(i for i in prepared.graph.initializer if i.name == reshape.input[1])
    assert nh.to_array(shape).tolist() == [0, 6]
    ops = [n.op_type for n in prepared.graph.node]
    assert ops == ["Conv", "Relu", "GlobalAveragePool", "Reshape", "MatMul"]  # the shape subgraph is gone
    assert {i.name for i in prepared.graph.initializer} == {"w", "b", "fc", shape.name}
    rng = np.random.default_rng(1)
    for n, hw in ((1, (8, 8)), (5, (6, 10))):  # batch and spatial sizes other than any fixed one
        x = rng.standard_normal((n, 3, *hw)).astype(np.float32)
        np.testing.assert_array_equal(_run(prepared, x), _run(model, x))
    assert fold_reshape_shapes(prepared)[1] == []  # nothing left to fold


def test_a_shape_it_cannot_fold_exactly_is_left_alone() -> None:
    model = paddle_head()
    for n in model.graph.node:  # dimension 0 of another tensor, unknown statically: no exact constant
        if n.op_type == "Shape":
            n.input[0] = "x"
    prepared, folded = fold_reshape_shapes(model)
    assert folded == [] and [n.op_type for n in prepared.graph.node] == [n.op_type for n in model.graph.node]


def test_unknown_input_dims_get_names_of_their_own() -> None:
    model = paddle_head()
    assert name_unknown_dims(model) == {"x": ["x_0", 3, "x_2", "x_3"]}
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert name_unknown_dims(model) == {}  # a real name is kept


def test_target_tvm_imports_a_run_time_reshape_shape(tmp_path: Path) -> None:
    python = need_toolchain("tvm")
    rng = np.random.default_rng(3)
    out = quantize_to("tvm", paddle_head(), rng.standard_normal((32, 3, 8, 8)).astype(np.float32), tmp_path)
    lib, qdq = next(out.glob("*.tvm.so")), next(out.glob("*.onnx"))
    report = json.loads(qdq.with_suffix(".json").read_text())
    prepared = report["toolchain"]["prepared"]
    assert prepared["named_input_dims"] == {"x": ["x_0", 3, "x_2", "x_3"]}
    assert [f["shape"] for f in prepared["folded_reshape_shapes"]] == [[0, 6]]
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)  # a batch size the check did not use
    got = run_artifact(python, RUN_SO, lib, x, tmp_path)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ as float, as TVM
    sess = ort.InferenceSession(str(qdq), plain, providers=["CPUExecutionProvider"])
    assert got.shape == (3, 4)
    assert sqnr_db(sess.run(None, {"x": x})[0], got) >= 60.0
