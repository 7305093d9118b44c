"""FP16 conversion: tiny models convert, load in ONNX Runtime and stay close to float32."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgequant.errors import ExportError
from edgequant.export import _graph
from edgequant.export.fp16 import convert_fp16
from edgequant.runtime import OrtRuntime
from edgequant.schemes.qparams import sqnr_db

FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16
RT = OrtRuntime()


def _vi(name: str, shape: list[int], elem: int = FP32) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(
    nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits: list, opset: int = 17
) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def conv_relu_gemm() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    g = (rng.standard_normal((10, 8 * 8 * 8)) * 0.05).astype(np.float32)
    c = (rng.standard_normal(10) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "g", "gc"], ["y"], name="gemm", transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (g, "g"), (c, "gc"))]
    m = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 10])], inits)
    m.graph.value_info.append(_vi("r", [1, 8, 8, 8]))
    return m


def if_model() -> onnx.ModelProto:
    """y = Relu(If(cond, then: x * k (k from the outer scope), else: x + Constant))."""
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["t"], name="then_mul")], "then", [], [_vi("t", [2, 3])]
    )
    const = numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "cv")
    else_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["e_c"], name="else_const", value=const),
            helper.make_node("Add", ["x", "e_c"], ["e"], name="else_add"),
        ],
        "else",
        [],
        [_vi("e", [2, 3])],
    )
    nodes = [
        helper.make_node("If", ["cond"], ["i"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["i"], ["y"], name="relu"),
    ]
    k = numpy_helper.from_array(np.array([[1.5, -2.0, 0.25]], np.float32), "k")
    return _model(nodes, [_vi("x", [2, 3]), _vi("cond", [], TensorProto.BOOL)], [_vi("y", [2, 3])], [k])


def cast_resize_model() -> onnx.ModelProto:
    """Cast(to=FLOAT) on an int input, Resize with float32-only scales, Range (no fp16 in its schema),
    ConstantOfShape without a value (float32 zeros by default)."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("Cast", ["xi"], ["xf"], name="cast", to=FP32),
        helper.make_node("Mul", ["xf", "x"], ["m"], name="mul"),
        helper.make_node("Resize", ["m", "", "scales"], ["r"], name="resize", mode="nearest"),
        helper.make_node("Constant", [], ["start"], name="c0", value_float=0.0),
        helper.make_node("Constant", [], ["limit"], name="c1", value_float=0.8),
        helper.make_node("Constant", [], ["delta"], name="c2", value_float=0.1),
        helper.make_node("Range", ["start", "limit", "delta"], ["rg"], name="range"),
        helper.make_node("Add", ["r", "rg"], ["a"], name="add"),
        helper.make_node("Shape", ["a"], ["shp"], name="shape"),
        helper.make_node("ConstantOfShape", ["shp"], ["z"], name="zeros"),
        helper.make_node("Add", ["a", "z"], ["y"], name="add_zeros"),
    ]
    inputs = [_vi("xi", [1, 1, 4, 4], TensorProto.INT32), _vi("x", [1, 1, 4, 4])]
    return _model(nodes, inputs, [_vi("y", [1, 1, 8, 8])], [scales])


def _init_bytes(m: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer)


def _check_close(ref: np.ndarray, got: np.ndarray) -> None:
    assert got.dtype == np.float32
    scale = float(np.abs(ref).max())
    assert float(np.abs(ref - got).max()) < 1e-2 * max(scale, 1.0)
    assert sqnr_db(ref, got) > 40.0


def test_conv_relu_gemm_runs_close_and_halves_size() -> None:
    m = conv_relu_gemm()
    before = m.SerializeToString()
    h, plan = convert_fp16(m)
    assert m.SerializeToString() == before  # the input model is not mutated
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    _check_close(RT.run(m, {"x": x})["y"], RT.run(h, {"x": x})["y"])
    assert _init_bytes(h) / _init_bytes(m) <= 0.55
    assert all(t.data_type == FP16 for t in h.graph.initializer)
    assert plan.method == "fp16" and plan.opset == 17
    assert {d.node for d in plan.nodes} == {"conv", "relu", "flat", "gemm"}
    assert all(d.quantized for d in plan.nodes)
    assert h.graph.input[0].type.tensor_type.elem_type == FP32
    assert h.graph.output[0].type.tensor_type.elem_type == FP32
    assert [n.op_type for n in h.graph.node].count("Cast") == 2  # one at the input, one at the output
    assert [(v.name, v.type.tensor_type.elem_type) for v in h.graph.value_info] == [("r", FP16)]


def test_keep_io_types_false_makes_io_float16() -> None:
    m = conv_relu_gemm()
    h, plan = convert_fp16(m, keep_io_types=False)
    assert h.graph.input[0].type.tensor_type.elem_type == FP16
    assert h.graph.output[0].type.tensor_type.elem_type == FP16
    assert not any(n.op_type == "Cast" for n in h.graph.node)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    y = RT.run(h, {"x": x.astype(np.float16)})["y"]
    assert y.dtype == np.float16
    assert sqnr_db(RT.run(m, {"x": x})["y"], y) > 40.0
    assert any("float16 (keep_io_types=False)" in n for n in plan.notes)


def test_if_subgraphs_are_converted() -> None:
    m = if_model()
    h, plan = convert_fp16(m)
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        _check_close(RT.run(m, feeds)["y"], RT.run(h, feeds)["y"])
    branches = {a.name: a.g for a in h.graph.node[[n.op_type for n in h.graph.node].index("If")].attribute}
    const = branches["else_branch"].node[0].attribute[0].t
    assert const.data_type == FP16
    assert all(o.type.tensor_type.elem_type == FP16 for b in branches.values() for o in b.output)
    graphs = {(d.node, d.graph) for d in plan.nodes if d.quantized}
    assert ("then_mul", "main/if.then_branch") in graphs and ("else_add", "main/if.else_branch") in graphs


def test_cast_resize_range_constantofshape() -> None:
    m = cast_resize_model()
    h, plan = convert_fp16(m)
    rng = np.random.default_rng(4)
    feeds = {
        "xi": rng.integers(-3, 4, (1, 1, 4, 4)).astype(np.int32),
        "x": rng.standard_normal((1, 1, 4, 4)).astype(np.float32),
    }
    _check_close(RT.run(m, feeds)["y"], RT.run(h, feeds)["y"])
    by = {d.node: d for d in plan.nodes}
    assert by["cast"].quantized
    cast = next(n for n in h.graph.node if n.name == "cast")
    assert cast.attribute[0].i == FP16
    assert (
        by["resize"].quantized
        and by["resize"].reason == "'scales' stays float32 (schema types it tensor(float) only)"
    )
    assert (
        next(t for t in h.graph.initializer if t.name == "scales").data_type == FP32
    )  # consumed as float32 only
    assert not by["range"].quantized
    assert by["range"].reason.startswith("ONNX schema of Range-11 allows only tensor(")
    assert by["shape"].quantized  # Shape reads a float16 tensor
    zeros = next(n for n in h.graph.node if n.name == "zeros")
    assert zeros.attribute[0].t.data_type == FP16
    assert len(plan.nodes) == len(m.graph.node)
    # Range's scalar inputs stay float32 Constants (no float16 round trip); Casts: x in, Range out, y out
    assert by["c1"].reason == "every consumer reads its output as float32; left float32"
    assert [n.op_type for n in h.graph.node].count("Cast") == 1 + 3


def test_exclude_nodes_keeps_them_float32() -> None:
    m = conv_relu_gemm()
    h, plan = convert_fp16(m, exclude_nodes=["gemm"])
    by = {d.node: d for d in plan.nodes}
    assert not by["gemm"].quantized and by["gemm"].reason == "excluded by user"
    inits = {t.name: t.data_type for t in h.graph.initializer}
    assert inits == {"w": FP16, "b": FP16, "g": FP32, "gc": FP32}
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    _check_close(RT.run(m, {"x": x})["y"], RT.run(h, {"x": x})["y"])
    with pytest.raises(
        ExportError, match=re.escape("exclude_nodes names 1 node(s) not in the model, e.g. 'nope'")
    ):
        convert_fp16(m, exclude_nodes=["nope"])


def test_overflow_is_clipped_and_reported() -> None:
    big = numpy_helper.from_array(np.array([1e5, -7e4, 1.0, 1e-9], np.float32), "big")
    m = _model(
        [helper.make_node("Add", ["x", "big"], ["y"], name="add")], [_vi("x", [4])], [_vi("y", [4])], [big]
    )
    h, plan = convert_fp16(m)
    y = RT.run(h, {"x": np.zeros(4, np.float32)})["y"]
    np.testing.assert_array_equal(y, np.array([65504.0, -65504.0, 1.0, 0.0], np.float32))
    assert any(n.startswith("2 value(s) beyond the float16 range were clipped") for n in plan.notes)
    assert any("1 non-zero value(s) below 6e-8 became 0" in n for n in plan.notes)


def test_loop_body_with_carried_float_state() -> None:
    """v <- v * k + 0.1, three times; k lives in the outer scope, 0.1 is a Constant in the body."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            helper.make_node("Mul", ["v_in", "k"], ["vk"], name="body_mul"),
            helper.make_node("Constant", [], ["tenth"], name="body_const", value_float=0.1),
            helper.make_node("Add", ["vk", "tenth"], ["v_out"], name="body_add"),
        ],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in", [3])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", [3])],
    )
    inits = [
        numpy_helper.from_array(np.array(3, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "go"),
        numpy_helper.from_array(np.array([0.5, -1.25, 2.0], np.float32), "k"),
    ]
    loop = helper.make_node("Loop", ["trips", "go", "x"], ["y"], name="loop", body=body)
    m = _model([loop], [_vi("x", [3])], [_vi("y", [3])], inits)
    h, plan = convert_fp16(m)
    x = np.array([1.0, 0.3, -0.7], np.float32)
    _check_close(RT.run(m, {"x": x})["y"], RT.run(h, {"x": x})["y"])
    by = {(d.node, d.graph): d for d in plan.nodes}
    assert by[("body_mul", "main/loop.body")].quantized
    assert not by[("keep_going", "main/loop.body")].quantized
    loop_h = next(n for n in h.graph.node if n.op_type == "Loop")
    assert loop_h.attribute[0].g.input[2].type.tensor_type.elem_type == FP16


def test_random_generators_run_in_float32() -> None:
    """scale=1e-30 / low=high make the generators deterministic (ORT aborts on scale=0)."""
    nodes = [
        helper.make_node("RandomNormal", [], ["r"], name="normal", shape=[4], mean=0.5, scale=1e-30),
        helper.make_node("RandomUniformLike", ["x"], ["u"], name="uniform", low=2.0, high=2.0, dtype=FP32),
        helper.make_node("Add", ["x", "r"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "u"], ["y"], name="mul"),
    ]
    m = _model(nodes, [_vi("x", [4])], [_vi("y", [4])], [])
    h, plan = convert_fp16(m)
    y = RT.run(h, {"x": np.arange(4, dtype=np.float32)})["y"]
    np.testing.assert_array_equal(y, np.array([1.0, 3.0, 5.0, 7.0], np.float32))
    by = {d.node: d for d in plan.nodes}
    assert not by["normal"].quantized and by["normal"].reason.startswith(
        "RandomNormal: ONNX Runtime's CPU kernel generates float32/float64 only"
    )
    assert by["add"].quantized and by["mul"].quantized


def test_custom_domain_op_stays_float32() -> None:
    """com.microsoft Gelu has no ONNX schema: it runs in float32 between Casts, its output type assumed."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"], name="mul"),
        helper.make_node("Gelu", ["m"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("Add", ["g", "k"], ["y"], name="add"),
    ]
    k = numpy_helper.from_array(np.array([0.5, -1.0, 2.0, 0.25], np.float32), "k")
    g = helper.make_graph(nodes, "g", [_vi("x", [4])], [_vi("y", [4])], [k])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    m = helper.make_model(g, opset_imports=opsets)
    h, plan = convert_fp16(m)
    x = np.array([0.3, -1.2, 2.5, 4.0], np.float32)
    _check_close(RT.run(m, {"x": x})["y"], RT.run(h, {"x": x})["y"])
    gelu = next(d for d in plan.nodes if d.node == "gelu")
    assert not gelu.quantized
    assert gelu.reason.startswith("no ONNX schema for Gelu in domain 'com.microsoft'")
    assert (
        "1 output(s) of op(s) without an ONNX schema typed from their node's input: g (float)" in plan.notes
    )


def test_graph_helpers_walk_subgraph_scopes() -> None:
    m = if_model()
    g = m.graph
    assert [sg.name for sg in _graph.graphs(g)] == ["g", "else", "then"]  # attribute order (sorted)
    subs = dict(_graph.named_subgraphs(g.node[0]))
    assert list(subs) == ["else_branch", "then_branch"]
    assert _graph.free_names(subs["then_branch"]) == {"x", "k"}  # the then-branch reads outer x, k
    assert _graph.free_names(g) == set()  # the main graph defines everything it reads (inputs, k)
    names = _graph.all_names(g)
    assert {"x", "k", "t", "e_c", "else_add", "if"} <= names
    assert _graph.fresh_name(names, "t") == "t_1" and _graph.fresh_name(names, "t") == "t_2"
    _graph.rename_value(g, "x", "x_in")
    assert list(subs["then_branch"].node[0].input) == ["x_in", "k"] and g.input[0].name == "x_in"
    assert _graph.collect_elem_types(g)["cond"] == TensorProto.BOOL
    _graph.set_elem_type(g.output[0].type, FP16)
    assert _graph.elem_type(g.output[0].type) == FP16
