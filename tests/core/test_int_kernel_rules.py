"""Issue #16 section 5: the rules of ``planning.int_kernels`` (which planned Conv/Gemm/MatMul nodes ONNX Runtime
runs in float) against ORT's own optimized graph, per op kind and form, on small graphs built here; and the
plan notes built from them name exactly those nodes, on screen once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import conv_net, images, mlp, ort_optimized_graph

import edgequant
from edgequant.planning import int_kernels

FLOAT_DOT = {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"}


def _ort_float_nodes(model: onnx.ModelProto, tmp_path: Path) -> set[str]:
    """Names (as written) of the nodes ORT's optimized graph runs as a float Conv/Gemm/MatMul kernel: ORT keeps
    a fused node's name, prefixes it ('fused mm') or suffixes it ('mm/MatMulAddFusion', 'conv_token_3')."""
    written = [n.name for n in model.graph.node]
    out = set()
    for n in ort_optimized_graph(model, tmp_path, "ORT_ENABLE_EXTENDED").node:
        if n.op_type in FLOAT_DOT:
            name = n.name.removeprefix("fused ")
            hits = [w for w in written if name == w or name.startswith((w + "_token", w + "/"))]
            out.add(max(hits, key=len) if hits else name)
    return out


def _ruled_float(r: Any) -> set[str]:
    """The nodes the rules say ORT runs in float, for result ``r``."""
    if r.recipe.method == "static":
        return {n.name for n, _ in int_kernels.static_float_nodes(r.float_model, r.plan)}
    graph = int_kernels.ModelGraph(r.model)
    return {
        node.name
        for e in r.plan.tensors.values()
        if e.role == "weight"
        for node in graph.consumers.get(f"{e.name}_dq", [])
        if node.op_type in int_kernels.DOT_OPS and not int_kernels.weight_only_matmul_nbits(node, e, graph)
    }


def _rng_w(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return nh.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def _attention() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [B, 8, 16] -> MatMul with a constant weight ('proj') -> MatMul with x transposed ('scores'); x carries
    one outlier of 40 in every other sample, so act16_below_db promotes some tensors and not others."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["q"], name="proj"),
        h.make_node("Transpose", ["x"], ["xt"], name="tr", perm=[0, 2, 1]),
        h.make_node("MatMul", ["q", "xt"], ["y"], name="scores"),
    ]
    g = h.make_graph(
        nodes, "att", [h.make_tensor_value_info("x", T.FLOAT, ["B", 8, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["B", 8, 8])], [_rng_w(rng, "W", 16, 16)],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    x = np.random.default_rng(1).standard_normal((24, 8, 16)).astype(np.float32)
    x[::2, 3, 4] = 40.0
    return m, {"x": x}


def _graph(kind: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Small graphs around one MatMul/Gemm: the contexts that decide ORT's fusions."""
    rng = np.random.default_rng(0)
    n = h.make_node
    x3 = kind == "rank3"
    body = {
        "matmul_add_relu": [n("MatMul", ["x", "W"], ["m"], name="mm"), n("Add", ["m", "b"], ["a"], name="add"),
                            n("Relu", ["a"], ["r"], name="relu"), n("Neg", ["r"], ["y"], name="neg")],
        "rank3": [n("MatMul", ["x", "W"], ["m"], name="mm"), n("Add", ["m", "b"], ["a"], name="add"),
                  n("Relu", ["a"], ["r"], name="relu"), n("Neg", ["r"], ["y"], name="neg")],
        "matmul_relu": [n("MatMul", ["x", "W"], ["m"], name="mm"), n("Relu", ["m"], ["r"], name="relu"),
                        n("Neg", ["r"], ["y"], name="neg")],
        "gemm": [n("Gemm", ["x", "W", "b"], ["a"], name="gemm"), n("Neg", ["a"], ["y"], name="neg")],
        "gemm_overflow": [n("Gemm", ["x", "W", "b"], ["y"], name="gemm")],
        "gemm_relu": [n("Gemm", ["x", "W", "b"], ["a"], name="gemm"), n("Relu", ["a"], ["r"], name="relu"),
                      n("Neg", ["r"], ["y"], name="neg")],
        "gemm_transb": [n("Gemm", ["x", "Wt", "b"], ["a"], name="gemm", transB=1), n("Neg", ["a"], ["y"], name="neg")],
        "shared": [n("MatMul", ["x", "W"], ["m1"], name="mm1"), n("MatMul", ["x", "W"], ["m2"], name="mm2"),
                   n("Sub", ["m1", "m2"], ["y"], name="sub")],
    }[kind]  # fmt: skip
    used = {i for node in body for i in node.input}
    inits = [
        t
        for t in (_rng_w(rng, "W", 32, 64), _rng_w(rng, "Wt", 64, 32), _rng_w(rng, "b", 64))
        if t.name in used
    ]
    if (
        kind == "gemm_overflow"
    ):  # round(b / (s_x * s_w)) beyond int32, binary too: the exporter keeps it float
        inits = [nh.from_array(nh.to_array(t) * 1e9, "b") if t.name == "b" else t for t in inits]
    shape: list[Any] = ["B", 5, 32] if x3 else ["B", 32]
    g = h.make_graph(
        body, kind, [h.make_tensor_value_info("x", T.FLOAT, shape)], [h.make_tensor_value_info("y", T.FLOAT, None)],
        inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    x = rng.standard_normal((24, 5, 32) if x3 else (24, 32)).astype(np.float32)
    return m, {"x": x}


def _conv_graph(kind: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> Relu -> (ConvTranspose -> Relu ->) a last Conv or ConvTranspose whose output leaves the graph float
    (bias or none, then a Relu or not): the contexts that decide ORT's Conv/ConvTranspose fusions."""
    rng = np.random.default_rng(0)
    n = h.make_node
    body = [
        n("Conv", ["x", "W1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
    ]
    last = {
        "conv_last": [n("Conv", ["r1", "W2", "b2"], ["y"], name="conv2")],
        "conv_last_nobias_relu": [n("Conv", ["r1", "W2"], ["c2"], name="conv2"), n("Relu", ["c2"], ["y"], name="relu2")],
        "convt_mid": [n("ConvTranspose", ["r1", "Wt", "bt"], ["t"], name="convt", strides=[2, 2]),
                      n("Relu", ["t"], ["rt"], name="relut"), n("Conv", ["rt", "W3"], ["y"], name="conv3")],
        "convt_last": [n("ConvTranspose", ["r1", "Wt", "bt"], ["y"], name="convt", strides=[2, 2])],
    }[kind]  # fmt: skip
    shapes = {"W1": (8, 3, 3, 3), "b1": (8,), "W2": (4, 8, 1, 1), "b2": (4,), "Wt": (8, 6, 2, 2), "bt": (6,),
              "W3": (4, 6, 1, 1)}  # fmt: skip
    used = {i for node in body + last for i in node.input}
    g = h.make_graph(
        body + last, kind, [h.make_tensor_value_info("x", T.FLOAT, ["B", 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, None)], [_rng_w(rng, k, *v) for k, v in shapes.items() if k in used],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m, {"x": rng.standard_normal((24, 3, 8, 8)).astype(np.float32)}


CONV_KINDS = ["conv_last", "conv_last_nobias_relu", "convt_mid", "convt_last"]
CONV = "conv_net"
STATIC = [{}, {"weight_bits": 1}, {"weight_bits": "ternary"}, {"weight_bits": 2}, {"weight_bits": 4},
          {"act_bits": 16}, {"weight_bits": 1, "act_bits": 16}, {"act16_below_db": 45}, {"act16_below_db": 60},
          {"weight_bits": 4, "weight_8bit": ["first"]}, {"weight_bits": 1, "weight_8bit": ["last"]}]  # fmt: skip
WEIGHT_ONLY = [{}, {"weight_bits": 4}, {"weight_bits": 4, "block_size": 16}, {"per_channel": False}]
LOW_BIAS = [{"weight_bits": "ternary"}, {"weight_bits": 2}, {"weight_bits": 1, "per_channel": False},
            {"weight_bits": 4, "per_channel": False}]  # fmt: skip
KINDS = ["matmul_add_relu", "rank3", "matmul_relu", "gemm", "gemm_relu", "gemm_transb", "shared"]
CASES = (
    [(CONV, "static", kw) for kw in STATIC]
    + [("mlp", "static", kw) for kw in STATIC[:7]]
    + [(k, "static", kw) for k in KINDS[:6] for kw in ({"weight_bits": 1}, {"act_bits": 16})]
    # int32 biases next to ternary / 2-bit / per-tensor binary and 4-bit weights: a last Gemm fuses to QGemm
    + [(k, "static", kw) for k in (CONV, "gemm", "gemm_transb") for kw in LOW_BIAS]
    # a last Conv with a float output, a ConvTranspose in the middle or last: float kernels on ORT's CPU provider
    + [(k, "static", kw) for k in [*CONV_KINDS, "gemm_overflow"] for kw in ({}, {"weight_bits": 1})]
    + [(k, "weight-only", kw) for k in [CONV, "mlp", *KINDS] for kw in WEIGHT_ONLY]
    # 16-bit inputs with 8-bit outputs and the reverse (float), 16-bit on both sides (MatMulNBits, 4-bit too)
    + [("mlp_outlier", "static", {"act16_below_db": db}) for db in (35, 40, 45)]
    + [("attention", "static", {"act16_below_db": 30, **kw}) for kw in ({}, {"weight_bits": 4})]
)


@pytest.mark.parametrize(("kind", "method", "kw"), CASES)
def test_the_rules_name_exactly_the_nodes_ort_runs_in_float(
    tmp_path: Path, kind: str, method: str, kw: dict[str, Any]
) -> None:
    if kind == CONV:
        model, data = conv_net(), {"x": images(24)}
    elif kind in ("mlp", "mlp_outlier"):
        model, data = mlp(), {"x": np.random.default_rng(1).standard_normal((24, 32)).astype(np.float32)}
        data["x"][::3, 5] = 30.0 if kind == "mlp_outlier" else data["x"][::3, 5]
    elif kind == "attention":
        model, data = _attention()
    elif kind in CONV_KINDS:
        model, data = _conv_graph(kind)
    else:
        model, data = _graph(kind)
    r = edgequant.quantize(model, data, method=method, calib_samples=12, **kw)
    assert _ruled_float(r) == _ort_float_nodes(r.model, tmp_path)
