"""Integer kernel vs storage: the report's "quantized" nodes are the ones ONNX Runtime runs as integer
kernels, and ``integer_weights`` is counted in the written file, for every method.

Expected values come from outside the code under test: the model's construction (which weights exist,
which ops have integer kernels), the written file read back with onnx, and our own ONNX Runtime session
asked for its optimised graph (``SessionOptions.optimized_model_filepath``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgequant

T, N, IN, H = 5, 1, 8, 6


def _model(recurrent: bool = True) -> onnx.ModelProto:
    """x[1,4,8,8] -> Conv -> Relu -> GAP -> Flatten -> MatMul -> Add, and s[T,1,8] -> LSTM, GRU.

    Six weights of rank 2 or more: wc, wm, W, R (LSTM), Wg, Rg (GRU)."""
    rng = np.random.default_rng(0)
    arrays = {
        "wc": (8, 4, 3, 3), "bc": (8,), "wm": (8, 3), "bm": (3,), "W": (1, 4 * H, IN), "R": (1, 4 * H, H),
        "B": (1, 8 * H), "Wg": (1, 3 * H, IN), "Rg": (1, 3 * H, H), "Bg": (1, 6 * H),
    }  # fmt: skip
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "wm"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "bm"], ["y"], name="add"),
        helper.make_node("LSTM", ["s", "W", "R", "B"], ["ys", "yh"], name="lstm", hidden_size=H),
        helper.make_node("GRU", ["s", "Wg", "Rg", "Bg"], ["gs", "gh"], name="gru", hidden_size=H),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", 1, [1, 4, 8, 8]), helper.make_tensor_value_info("s", 1, [T, N, IN])],
        [helper.make_tensor_value_info(n, 1, s) for n, s in (("y", [1, 3]), ("yh", [1, N, H]), ("gh", [1, N, H]))],
        inits,
    )  # fmt: skip
    if not recurrent:
        for node in list(g.node)[-2:]:
            g.node.remove(node)
        del g.output[1:], g.input[1:]
        for t in [t for t in g.initializer if t.name in ("W", "R", "B", "Wg", "Rg", "Bg")]:
            g.initializer.remove(t)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {
            "x": rng.normal(size=(1, 4, 8, 8)).astype(np.float32),
            "s": rng.normal(size=(T, N, IN)).astype(np.float32),
        }
        for _ in range(48)
    ]


def _ort_graph(path: Path, tmp: Path) -> dict[str, str]:
    """Node name -> op type in ONNX Runtime's own level-2 optimisation of the written file."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / "ort_optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return {n.name: n.op_type for n in onnx.load(str(tmp / "ort_optimized.onnx")).graph.node}


def _stored_int_weights(path: Path) -> int:
    """Initializers stored as 8-bit (or 4-bit) integers in the file with the shape of one of the source's
    weights (dims in any order: a kernel may store it transposed; per-channel zero points do not match)."""
    kinds = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4}
    shapes = {tuple(sorted(t.dims)) for t in _model().graph.initializer if len(t.dims) >= 2}
    return sum(
        1
        for t in onnx.load(str(path)).graph.initializer
        if t.data_type in kinds and tuple(sorted(t.dims)) in shapes
    )


def _quantize(method: str, tmp: Path) -> tuple[dict, Path]:
    src = tmp / "net.onnx"
    onnx.save(_model(), str(src))
    r = edgequant.quantize(str(src), _feeds(), method=method)
    saved = r.save(tmp / "out")
    return r.report, saved.model


def test_static_counts_integer_kernels_and_lists_storage_only_recurrent_nodes(tmp_path: Path) -> None:
    report, path = _quantize("static", tmp_path)
    graph = _ort_graph(path, tmp_path)
    integer_in_ort = {n for n, op in graph.items() if op.startswith("QLinear")}
    assert integer_in_ort == {"conv", "gap", "mm"}  # ORT's own fusion, not ours
    nodes = report["nodes"]
    quantized = {d["node"] for d in nodes["quantized"]}
    # every "quantized" node is an ORT QLinear op; the Flatten between two of them only moves uint8 data,
    # listed apart (it computes nothing in integers)
    assert quantized == integer_in_ort and graph["flat"] == "Flatten"
    assert [(d["node"], d["kernel"]) for d in nodes["moves_integer"]] == [("flat", "Flatten")]
    # LSTM and GRU run ORT's float kernels on their float weights (static int8 keeps them float: int8 storage
    # would be dequantized on every call); they are skipped with that reason, not counted as stored integers
    assert graph["lstm"] == "LSTM" and graph["gru"] == "GRU"
    skipped = {d["node"]: d["reason"] for d in nodes["skipped"]}
    assert all(skipped[n].startswith("weights W, R, B kept float") for n in ("lstm", "gru"))
    assert {"lstm", "gru"}.isdisjoint({d["node"] for d in nodes["storage_only"]} | quantized)
    assert "relu" not in graph and [d["node"] for d in nodes["folded"]] == ["relu"]
    assert len(nodes["planned"]) == 6 > len(nodes["quantized"])  # the plan's count is not claimed
    assert report["integer_weights"] == _stored_int_weights(path) == 2 == report["planned_weights"]
    assert {"W", "R", "Wg", "Rg"} <= set(report["float_weights"])


def test_dynamic_counts_its_kernels_and_weights_from_the_file(tmp_path: Path) -> None:
    report, path = _quantize("dynamic", tmp_path)
    graph = _ort_graph(path, tmp_path)
    assert sorted(op for op in graph.values() if op.startswith("Dynamic")) == [
        "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
    ]  # fmt: skip
    assert {d["node"]: d["kernel"] for d in report["nodes"]["quantized"]} == {
        "mm": "DynamicQuantizeMatMul", "lstm": "DynamicQuantizeLSTM",
    }  # fmt: skip
    assert [d["node"] for d in report["nodes"]["folded"]] == ["add"]  # the bias folded into the kernel
    # wm, W, R are stored as int8; Conv and GRU keep float weights (no fast dynamic kernel)
    assert report["integer_weights"] == _stored_int_weights(path) == 3


def test_fp16_claims_no_integer_kernel_and_no_integer_weight(tmp_path: Path) -> None:
    report, path = _quantize("fp16", tmp_path)
    graph = _ort_graph(path, tmp_path)
    assert not any(op.startswith(("QLinear", "Dynamic", "MatMulInteger")) for op in graph.values())
    assert report["nodes"]["quantized"] == []
    assert report["integer_weights"] == _stored_int_weights(path) == 0
    halves = {t.name for t in onnx.load(str(path)).graph.initializer if t.data_type == TensorProto.FLOAT16}
    assert {"wc", "wm", "W", "R", "Wg", "Rg"} <= halves
    # ORT's CPU kernels: a node fed by a Cast ORT inserted reads float16 weights as float32
    inserted = [n for n in graph if n.startswith("InsertedPrecisionFreeCast")]
    measured = {d["node"] for d in report["nodes"]["float16"]}
    storage = {d["node"] for d in report["nodes"]["storage_only"]}
    assert measured.isdisjoint(storage) and (storage if inserted else measured) >= {"lstm", "gru"}


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_runs_float_convs_on_stored_integers(tmp_path: Path, bits: int) -> None:
    src = tmp_path / "net.onnx"
    onnx.save(_model(), str(src))
    r = edgequant.quantize(str(src), _feeds(), method="weight-only", weight_bits=bits)
    path = r.save(tmp_path / "out").model
    graph = _ort_graph(path, tmp_path)
    nodes = r.report["nodes"]
    integer = {n for n, op in graph.items() if op in ("MatMulNBits", "MatMulInteger")}
    assert {d["node"] for d in nodes["quantized"]} == {n.split("/")[0] for n in integer}
    # the conv and the recurrent nodes keep float kernels over dequantized weights
    assert {"conv", "lstm", "gru"} <= {d["node"] for d in nodes["storage_only"]}
    assert r.report["integer_weights"] == _stored_int_weights(path) == 6


def test_the_summary_prints_what_runs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgequant.cli import app

    src = tmp_path / "net.onnx"
    onnx.save(_model(recurrent=False), str(src))
    res = CliRunner().invoke(app, ["quantize", str(src), "--method", "dynamic", "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.replace("│", " ").split())
    for part in (
        "1 integer kernel (DynamicQuantizeMatMul);",
        "1 folded away (Add);",
        "4 kept float",
        "1 of 1 planned",
    ):
        assert part in out, out


def test_the_static_summary_counts_only_ops_computing_in_integer(tmp_path: Path) -> None:
    """The Flatten between the pooled map and the MatMul moves uint8 data: not an integer kernel."""
    from typer.testing import CliRunner

    from edgequant.cli import app

    src = tmp_path / "net.onnx"
    onnx.save(_model(recurrent=False), str(src))
    calib = tmp_path / "x.npy"
    np.save(calib, np.stack([f["x"][0] for f in _feeds()]))
    out_dir = tmp_path / "o"
    res = CliRunner().invoke(app, ["quantize", str(src), "--calib-data", str(calib), "-o", str(out_dir)])
    assert res.exit_code == 0, res.output
    graph = _ort_graph(next(out_dir.glob("net_*.onnx")), tmp_path)
    kernels = sorted({op for op in graph.values() if op.startswith("QLinear")})
    assert graph["flat"] == "Flatten"
    out = " ".join(res.output.replace("│", " ").split())
    want = f"{len(kernels)} integer kernels ({', '.join(kernels)}); 1 moving integer data (Flatten);"
    assert want in out, out


def test_a_node_ort_renames_under_a_torch_style_name_is_not_called_folded(tmp_path: Path) -> None:
    """Torch exports name nodes '/l0/MatMul'; ORT's MatMul + scale fusion names its float FusedMatMul
    '/l0/MatMul/MatMulScaleFusion/'.  Before, the census matched on the text before the first '/' (empty
    here) and filed the node 'folded' ('fused into a neighbouring kernel'); it runs in float.  Our own ORT
    session's optimised graph is the reference."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["q"], name="/l0/proj/MatMul"),
        helper.make_node("Transpose", ["x"], ["xt"], name="/l0/Transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "xt"], ["s"], name="/l0/MatMul"),
        helper.make_node("Mul", ["s", "c"], ["y"], name="/l0/Mul"),
    ]
    g = helper.make_graph(
        nodes, "att", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.2).astype(np.float32), "W"),
         numpy_helper.from_array(np.array(0.25, np.float32), "c")],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    x = rng.standard_normal((24, 8, 16)).astype(np.float32)
    r = edgequant.quantize(
        m, {"x": x}, method="static", act_bits=16, calib_samples=12, placement="matmul-inputs"
    )
    onnx.save(r.model, str(tmp_path / "q.onnx"))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(tmp_path / "q.onnx"), so, providers=["CPUExecutionProvider"])
    ran = {n.name: n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert ran.get("/l0/MatMul/MatMulScaleFusion/") == "FusedMatMul", ran
    nodes_ = r.report["nodes"]
    assert [(d["node"], d["kernel"]) for d in nodes_["planned_float"]] == [("/l0/MatMul", "FusedMatMul")], (
        nodes_
    )
    assert not nodes_["folded"], nodes_
