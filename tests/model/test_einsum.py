"""Einsum: a matmul-shaped Einsum with a constant operand becomes a quantized MatMul; others stay float
with their reason, and their weights are still counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.model import prepare
from tests.tinymodels import ort_ran_ops


def _einsum_model(
    equation: str, x_shape: list[int], w: np.ndarray, y_rank: int, w_first: bool = False
) -> onnx.ModelProto:
    ins = ["W", "x"] if w_first else ["x", "W"]
    nodes = [
        h.make_node("Einsum", ins, ["e"], name="dense", equation=equation),
        h.make_node("Relu", ["e"], ["y"], name="relu"),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", *x_shape[1:]])],
        [h.make_tensor_value_info("y", T.FLOAT, [None] * y_rank)],
        [nh.from_array(w, "W")],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


CASES = [  # equation, x shape, w shape, constant first
    ("btd,dh->bth", [2, 5, 16], (16, 24), False),
    ("dh,btd->bht", [2, 5, 16], (16, 24), True),
    ("btcd,cdh->bth", [2, 5, 4, 8], (4, 8, 24), False),  # two contracted letters
    ("btd,dgh->btgh", [2, 5, 16], (16, 4, 6), False),  # two output letters
    ("nhtd,hde->nhte", [2, 4, 5, 8], (4, 8, 6), False),  # a per-head (rank-3) weight
    ("nthd,hde->nhte", [2, 5, 4, 8], (4, 8, 6), False),  # the same, heads after time
]


@pytest.mark.parametrize(("equation", "x_shape", "w_shape", "w_first"), CASES)
def test_matmul_shaped_einsum_becomes_matmul_with_the_same_result(
    equation: str, x_shape: list[int], w_shape: tuple[int, ...], w_first: bool
) -> None:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    out_rank = len(equation.split("->")[1])
    m = _einsum_model(equation, x_shape, w, out_rank, w_first)
    prepared, notes = prepare(m)
    ops = [n.op_type for n in prepared.graph.node]
    assert "Einsum" not in ops and "MatMul" in ops
    assert any("Einsum 'dense'" in n for n in notes)
    ops_ = equation.split("->")[0].split(",")
    expected = np.maximum(np.einsum(equation, *([w, x] if w_first else [x, w])), 0)
    assert ops_  # the equation has two operands
    np.testing.assert_allclose(_run(prepared, x), expected, rtol=1e-5, atol=1e-5)
    # the batch size is not baked in
    x3 = rng.standard_normal([3, *x_shape[1:]]).astype(np.float32)
    exp3 = np.maximum(np.einsum(equation, *([w, x3] if w_first else [x3, w])), 0)
    np.testing.assert_allclose(_run(prepared, x3), exp3, rtol=1e-5, atol=1e-5)


def test_dense_einsum_is_quantized_and_w4_differs_from_w8(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((16, 24)) * 0.3).astype(np.float32)
    m = _einsum_model("btd,dh->bth", [1, 5, 16], w, 3)
    data = {"x": rng.standard_normal((32, 5, 16)).astype(np.float32)}
    r8 = edgequant.quantize(m, data, method="static")
    assert r8.report["integer_weights"] == 1 and r8.report["planned_weights"] == 1
    assert "dense_matmul" in {d.node for d in r8.plan.quantized_nodes}
    assert ort_ran_ops(r8.model, tmp_path)["Einsum"] == 0
    r4 = edgequant.quantize(m, data, method="static", weight_bits=4)
    assert r4.model.SerializeToString() != r8.model.SerializeToString()
    q4 = next(e for e in r4.plan.tensors.values() if e.role == "weight")
    assert q4.spec.bits == 4


def test_batched_weight_is_per_tensor_so_ort_runs_integer_matmul(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((4, 8, 6)) * 0.3).astype(np.float32)
    m = _einsum_model("nhtd,hde->nhte", [1, 4, 5, 8], w, 4)
    data = {"x": rng.standard_normal((16, 4, 5, 8)).astype(np.float32)}
    r = edgequant.quantize(m, data, method="static")
    weight = next(e for e in r.plan.tensors.values() if e.role == "weight")
    assert weight.spec.granularity.value == "per_tensor"
    assert "rank-3" in weight.note and any("rank-3" in n for n in r.plan.notes)
    ran = ort_ran_ops(r.model, tmp_path)
    assert ran["MatMul"] == 0 and ran["MatMulIntegerToFloat"] + ran["QLinearMatMul"] == 1


def test_per_channel_batched_weight_would_run_float(tmp_path: Path) -> None:
    """The reason behind the planner's choice: with per-channel scales on a rank-3 weight ORT keeps a
    float MatMul (its DQ is not fused), while per-tensor gets an integer kernel (above)."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((4, 8, 6)) * 0.3).astype(np.float32)
    scale = (np.abs(w).max(axis=(0, 1)) / 127).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    xs, xz = np.float32(0.02), np.uint8(128)
    nodes = [
        h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=2),
        h.make_node("MatMul", ["xd", "wd"], ["mm"]),
        h.make_node("QuantizeLinear", ["mm", "xs", "xz"], ["yq"]),
        h.make_node("DequantizeLinear", ["yq", "xs", "xz"], ["y"]),
    ]
    inits = [
        nh.from_array(np.array(xs), "xs"), nh.from_array(np.array(xz), "xz"), nh.from_array(q, "wq"),
        nh.from_array(scale, "ws"), nh.from_array(np.zeros(6, np.int8), "wz"),
    ]  # fmt: skip
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 5, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 5, 6])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    ran = ort_ran_ops(m, tmp_path)
    assert ran["MatMul"] == 1 and ran["MatMulIntegerToFloat"] + ran["QLinearMatMul"] == 0


@pytest.mark.parametrize(
    ("equation", "x_shape", "w_shape", "why"),
    [
        ("btd,dhk->bth", [1, 5, 16], (16, 8, 3), "summed within one operand"),
        ("bdd,dh->bh", [1, 6, 6], (6, 5), "repeats a letter"),
        ("btd,dh->btdh", [1, 5, 6], (6, 5), "no letter is contracted"),
    ],
)
def test_other_einsum_stays_float_with_reason_and_its_weight_is_counted(
    equation: str, x_shape: list[int], w_shape: tuple[int, ...], why: str
) -> None:
    rng = np.random.default_rng(4)
    w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    out_rank = len(equation.split("->")[1])
    m = _einsum_model(equation, x_shape, w, out_rank)
    data = {"x": rng.standard_normal((8, *x_shape[1:])).astype(np.float32)}
    r = edgequant.quantize(m, data, method="static")
    dense = next(d for d in r.plan.nodes if d.node == "dense")
    assert not dense.quantized and why in dense.reason and "stays float" in dense.reason
    assert "W" in r.report["float_weights"]


def test_attention_style_einsum_is_reported_float() -> None:
    nodes = [h.make_node("Einsum", ["q", "k"], ["s"], name="scores", equation="bhqd,bhkd->bhqk")]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info(n, T.FLOAT, [1, 2, 4, 8]) for n in ("q", "k")],
        [h.make_tensor_value_info("s", T.FLOAT, [1, 2, 4, 4])],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    from edgequant import planner
    from edgequant.recipe import from_dict
    from edgequant.runtime.cpu import CpuFeatures

    plan = planner.Planner(m, from_dict({}), CpuFeatures(arch="x86_64", vnni=True, avx2=True))
    assert "computed at run time" in plan._skip_reason(m.graph.node[0], {}, {})
