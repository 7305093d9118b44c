"""Tiny ONNX models for tests, built with onnx.helper, seeded weights.

Each builder returns a ModelProto (opset 17 unless said) with float32 input "x" and output "y".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    opset: int = 17,
    name: str = "tiny",
) -> onnx.ModelProto:
    g = h.make_graph(nodes, name, inputs, outputs, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _w(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def conv_net(seed: int = 0, channels: int = 8, opset: int = 17) -> onnx.ModelProto:
    """Conv-Relu -> depthwise Conv-Relu -> residual Add -> Concat -> GAP -> Flatten -> Gemm (10 classes)."""
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        _w(rng, "w1", c, 3, 3, 3),
        _w(rng, "b1", c, scale=0.1),
        _w(rng, "wd", c, 1, 3, 3),
        _w(rng, "bd", c, scale=0.1),
        _w(rng, "wp", c, c, 1, 1),
        _w(rng, "bp", c, scale=0.1),
        _w(rng, "wf", 10, 2 * c, scale=0.2),
        _w(rng, "bf", 10, scale=0.1),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "wd", "bd"], ["cd"], name="dwconv", pads=[1, 1, 1, 1], group=c),
        h.make_node("Relu", ["cd"], ["rd"], name="relu_dw"),
        h.make_node("Conv", ["rd", "wp", "bp"], ["cp"], name="pwconv"),
        h.make_node("Add", ["cp", "r1"], ["res"], name="residual"),
        h.make_node("Concat", ["res", "r1"], ["cat"], name="concat", axis=1),
        h.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        h.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        h.make_node("Gemm", ["flat", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 16, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 10])],
        inits,
        opset=opset,
        name="conv_net",
    )


def mlp(seed: int = 0, d_in: int = 32, hidden: int = 64, d_out: int = 8) -> onnx.ModelProto:
    """MatMul+Add -> Relu -> MatMul+Add."""
    rng = np.random.default_rng(seed)
    inits = [
        _w(rng, "w1", d_in, hidden, scale=0.2),
        _w(rng, "b1", hidden, scale=0.1),
        _w(rng, "w2", hidden, d_out, scale=0.2),
        _w(rng, "b2", d_out, scale=0.1),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        h.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
        h.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        h.make_node("MatMul", ["r1", "w2"], ["m2"], name="mm2"),
        h.make_node("Add", ["m2", "b2"], ["y"], name="add2"),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, ["N", d_in])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", d_out])],
        inits,
        name="mlp",
    )


def lstm_with_state(seed: int = 0, d_in: int = 8, hidden: int = 16) -> onnx.ModelProto:
    """LSTM over [T, N, d_in] with initial_h/initial_c as inputs and Y_h/Y_c as outputs; Gemm head."""
    rng = np.random.default_rng(seed)
    inits = [
        _w(rng, "W", 1, 4 * hidden, d_in),
        _w(rng, "R", 1, 4 * hidden, hidden),
        _w(rng, "B", 1, 8 * hidden, scale=0.1),
        _w(rng, "wo", hidden, 4),
        _w(rng, "bo", 4, scale=0.1),
    ]
    nodes = [
        h.make_node(
            "LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["Y", "h1", "c1"], name="lstm", hidden_size=hidden
        ),
        h.make_node("Squeeze", ["h1", "ax0"], ["hs"], name="squeeze"),
        h.make_node("MatMul", ["hs", "wo"], ["mo"], name="head"),
        h.make_node("Add", ["mo", "bo"], ["y"], name="head_bias"),
    ]
    inits.append(nh.from_array(np.array([0], np.int64), "ax0"))
    return _model(
        nodes,
        [
            h.make_tensor_value_info("x", T.FLOAT, ["T", "N", d_in]),
            h.make_tensor_value_info("h0", T.FLOAT, [1, "N", hidden]),
            h.make_tensor_value_info("c0", T.FLOAT, [1, "N", hidden]),
        ],
        [
            h.make_tensor_value_info("y", T.FLOAT, ["N", 4]),
            h.make_tensor_value_info("h1", T.FLOAT, [1, "N", hidden]),
            h.make_tensor_value_info("c1", T.FLOAT, [1, "N", hidden]),
        ],
        inits,
        name="lstm_state",
    )


def images(n: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def ort_optimized_graph(
    model: onnx.ModelProto, tmp_path: Path, level: str = "ORT_ENABLE_ALL"
) -> onnx.GraphProto:
    """The graph ONNX Runtime actually runs for ``model`` at optimisation ``level`` (its optimized model file)."""
    import onnxruntime as ort

    path, opt = tmp_path / "q.onnx", tmp_path / "opt.onnx"
    onnx.save(model, str(path))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(opt)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return onnx.load(str(opt)).graph


def ort_ran_ops(model: onnx.ModelProto, tmp_path: Path, level: str = "ORT_ENABLE_ALL") -> Counter[str]:
    """Op types of the graph ONNX Runtime actually runs for ``model`` (its optimized model file)."""
    return Counter(n.op_type for n in ort_optimized_graph(model, tmp_path, level).node)


def optional(module: str) -> Any:
    """Import an optional extra's module for a test: skipped where it is not installed, except in CI
    (CI=true installs ``[test]``, which holds every extra), where a missing module fails the test."""
    import importlib
    import os

    import pytest

    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)
