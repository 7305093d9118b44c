"""``edgequant inspect`` counts the compute nodes ``quantize`` quantizes: a matmul-shaped Einsum with a
constant operand (which quantize rewrites as a MatMul) counts; an Einsum of two activations does not.

Expected values come from the file ``quantize`` writes, read back with onnx: the MatMuls whose weight
input is a DequantizeLinear of an integer initializer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

from edgequant.cli import app

runner = CliRunner()


def _model() -> onnx.ModelProto:
    """x[N,5,16] -> Einsum(btd,dh) with W[16,24] (dense) -> Relu -> Einsum(bth,bsh->bts) with itself
    (scores: two activations) -> y.  No node is named."""
    w = (np.random.default_rng(0).standard_normal((16, 24)) * 0.3).astype(np.float32)
    nodes = [
        h.make_node("Einsum", ["x", "W"], ["e"], equation="btd,dh->bth"),
        h.make_node("Relu", ["e"], ["r"]),
        h.make_node("Einsum", ["r", "r"], ["y"], equation="bth,bsh->bts"),
    ]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 5, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 5, 5])], [nh.from_array(w, "W")],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _integer_weight_matmuls(path: Path) -> list[str]:
    m = onnx.load(str(path))
    ints = {t.name for t in m.graph.initializer if t.data_type in (T.INT8, T.UINT8)}
    dq_of_int = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in ints}
    return [n.name for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in dq_of_int]


def test_inspect_counts_the_einsum_quantize_rewrites_and_quantizes(tmp_path: Path) -> None:
    src = tmp_path / "ein.onnx"
    onnx.save(_model(), str(src))
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((64, 5, 16)).astype(np.float32))
    res = runner.invoke(app, ["inspect", str(src), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["ops"] == {"Einsum": 2, "Relu": 1}  # the model as given
    res = runner.invoke(
        app, ["quantize", str(src), "--calib-data", str(tmp_path / "x.npy"), "-o", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    written = _integer_weight_matmuls(next(tmp_path.glob("ein_*.onnx")))
    assert len(written) == 1
    assert [(n["name"], n["op_type"]) for n in info["quantizable_nodes"]] == [(written[0], "MatMul")]
    text = runner.invoke(app, ["inspect", str(src)]).output
    assert "quantizable nodes (1, " in text and written[0] in text
