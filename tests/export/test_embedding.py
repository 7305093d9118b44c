"""Embedding tables: stored int8 per row, dequantized after the Gather; a tied output head reads the same
integer tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from tests.tinymodels import ort_ran_ops

V, D, L = 300, 32, 6


def _table(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    norms = rng.uniform(0.05, 3.0, size=(V, 1))  # rows of very different size: per row matters
    return (rng.standard_normal((V, D)) * norms).astype(np.float32)


def _model(table: np.ndarray, tied: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w1 = (rng.standard_normal((D, D)) * 0.2).astype(np.float32)
    pos = (rng.standard_normal((L, D)) * 0.1).astype(np.float32)
    nodes = [
        h.make_node("Gather", ["table", "ids"], ["tok"], name="word_emb"),
        h.make_node("Add", ["tok", "pos"], ["emb"], name="add_pos"),
        h.make_node("MatMul", ["emb", "w1"], ["m1"], name="mm1"),
        h.make_node("Relu", ["m1"], ["r1"], name="relu"),
    ]
    if tied:
        nodes += [
            h.make_node("Reshape", ["r1", "flat"], ["r2"], name="flatten"),
            h.make_node("Gemm", ["r2", "table"], ["y"], name="head", transB=1),
        ]
        out = h.make_tensor_value_info("y", T.FLOAT, [None, V])
    else:
        nodes.append(h.make_node("MatMul", ["r1", "w1"], ["y"], name="mm2"))
        out = h.make_tensor_value_info("y", T.FLOAT, ["N", L, D])
    inits = [nh.from_array(table, "table"), nh.from_array(w1, "w1"), nh.from_array(pos, "pos"),
             nh.from_array(np.array([-1, D], np.int64), "flat")]  # fmt: skip
    g = h.make_graph(nodes, "emb", [h.make_tensor_value_info("ids", T.INT64, ["N", L])], [out], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _ids(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, size=(n, L)).astype(np.int64)


def test_table_is_int8_per_row_and_dequantized_after_the_gather(tmp_path: Path) -> None:
    table = _table()
    m = _model(table, tied=False)
    r = edgequant.quantize(m, {"ids": _ids(32, 2)}, method="static")
    inits = {t.name: t for t in r.model.graph.initializer}
    assert "table" not in inits  # no float copy left
    q = next(t for t in r.model.graph.initializer if t.name.startswith("table") and t.data_type == T.INT8)
    assert list(q.dims) == [V, D]
    gather = next(n for n in r.model.graph.node if n.name == "word_emb")
    assert gather.input[0] == q.name  # the integer rows are gathered
    ran = ort_ran_ops(r.model, tmp_path)
    assert ran["QLinearMatMul"] + ran["MatMulIntegerToFloat"] >= 1 and ran["MatMul"] == 0, ran
    assert not r.plan.tensors["table"].spec.reduce_range  # no u8 x s8 product: the full 8-bit grid
    # the gathered rows equal an independent per-row symmetric int8 round trip of the table
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    expected_rows = np.clip(np.round(table / scale), -127, 127) * scale
    probe = onnx.ModelProto()
    probe.CopyFrom(r.model)
    probe.graph.output.append(h.make_tensor_value_info("tok", T.FLOAT, None))
    ids = _ids(4, 3)
    s = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    tok = s.run(["tok"], {"ids": ids})[0]
    np.testing.assert_allclose(tok, expected_rows[ids], rtol=1e-6, atol=1e-7)
    # per row, not per column: the small rows keep their resolution (per-column would lose them)
    small = np.argsort(np.abs(table).max(axis=1))[:10]
    rel = np.abs(expected_rows[small] - table[small]).max() / np.abs(table[small]).max()
    assert rel < 0.01
    assert r.report["sizes"]["packed_bytes"] < 0.3 * table.nbytes + 3 * D * D * 4


def test_tied_head_reads_the_same_integer_table() -> None:
    table = _table(5)
    m = _model(table, tied=True)
    r = edgequant.quantize(m, {"ids": _ids(32, 6)}, method="static")
    int_tables = [t for t in r.model.graph.initializer if list(t.dims) == [V, D]]
    assert len(int_tables) == 1 and int_tables[0].data_type == T.INT8  # one tensor, stored int8
    readers = [n for n in r.model.graph.node if int_tables[0].name in n.input]
    assert {n.op_type for n in readers} == {"Gather", "DequantizeLinear"}
    dq = next(n for n in readers if n.op_type == "DequantizeLinear")
    head = next(n for n in r.model.graph.node if n.name == "head")
    assert dq.output[0] in head.input
    assert r.plan.tensors["table"].spec.axis == 0
    assert min(r.report["check"]["output_sqnr_db"].values()) > 25.0
