"""Issue #16 §3: static W4A8 / W8A16 nets are planned as asked, and the plan says (one note, on screen too)
which Conv/Gemm/MatMul nodes ONNX Runtime runs in float; ORT's optimized graph is the independent check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images, ort_ran_ops
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app

INTEGER = {"QLinearConv", "QGemm", "ConvInteger"}


@pytest.mark.parametrize(
    ("kw", "what"), [({"weight_bits": 4}, "4-bit weights"), ({"act_bits": 16}, "16-bit inputs")]
)
def test_static_forms_without_integer_kernels_are_stated(
    tmp_path: Path, kw: dict[str, int], what: str
) -> None:
    r = edgequant.quantize(conv_net(), {"x": images(24)}, method="static", calib_samples=12, **kw)
    ran = ort_ran_ops(r.model, tmp_path)
    assert not INTEGER & set(ran) and ran["Conv"] == 3 and ran["Gemm"] == 1, ran  # all four run in float
    notes = [n for n in r.report["notes"] if n.startswith("float speed or slower")]
    assert len(notes) == 1 and f"4 Conv/Gemm node(s) (conv1, dwconv, pwconv, ...) with {what}" in notes[0]
    assert "runs them in float after DequantizeLinear" in notes[0], notes


def test_static_int8_has_integer_kernels_and_no_such_note(tmp_path: Path) -> None:
    r = edgequant.quantize(conv_net(), {"x": images(24)}, method="static", calib_samples=12)
    ran = ort_ran_ops(r.model, tmp_path)
    assert ran["QLinearConv"] == 3 and ran["QGemm"] == 1, ran
    assert not [n for n in r.report["notes"] if n.startswith("float speed or slower")]


def test_the_note_is_on_screen_once(tmp_path: Path) -> None:
    onnx.save_model(conv_net(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", images(24))
    res = CliRunner().invoke(
        app, ["quantize", str(tmp_path / "net.onnx"), "--calib-data", str(tmp_path / "x.npy"), "--weight-bits", "4",
              "-o", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert " ".join(res.output.split()).count("note: float speed or slower: 4 Conv/Gemm node(s)") == 1, (
        res.output
    )


def _attention() -> onnx.ModelProto:
    """x [B, 8, 16] -> MatMul with a constant W ('proj') -> MatMul with x transposed ('scores', two
    activations): both kinds of MatMul of a transformer."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    w = nh.from_array((np.random.default_rng(0).standard_normal((16, 16)) * 0.3).astype(np.float32), "W")
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["q"], name="proj"),
        h.make_node("Transpose", ["x"], ["xt"], name="tr", perm=[0, 2, 1]),
        h.make_node("MatMul", ["q", "xt"], ["y"], name="scores"),
    ]
    g = h.make_graph(
        nodes, "att", [h.make_tensor_value_info("x", T.FLOAT, ["B", 8, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["B", 8, 8])], [w],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize(
    ("kw", "ran_float", "fused", "said"),
    [
        ({}, 0, {"QLinearMatMul": 1, "MatMulIntegerToFloat": 1}, ""),
        ({"weight_bits": 4}, 1, {"MatMulIntegerToFloat": 1}, "1 MatMul node(s) (proj) with 4-bit weights"),
        ({"act_bits": 16}, 1, {"MatMulNBits": 1}, "1 MatMul node(s) (scores) with 16-bit inputs"),
    ],
)
def test_matmuls_ort_runs_in_float_are_stated(
    tmp_path: Path, kw: dict[str, int], ran_float: int, fused: dict[str, int], said: str
) -> None:
    """Before: no note for MatMul.  ORT's optimized graph decides: W4A8 runs 'proj' (per-channel 4-bit weight)
    as a float MatMul; W8A16 fuses 'proj' (8-bit weight) into MatMulNBits and runs 'scores' (two 16-bit
    activations) as a float MatMul; int8 runs both on integers."""
    x = np.random.default_rng(1).standard_normal((24, 8, 16)).astype(np.float32)
    r = edgequant.quantize(_attention(), {"x": x}, method="static", calib_samples=12, **kw)
    ran = ort_ran_ops(r.model, tmp_path)
    assert ran["MatMul"] == ran_float and all(ran[k] == v for k, v in fused.items()), ran
    notes = [n for n in r.report["notes"] if n.startswith("float speed or slower")]
    assert (notes[0].split(": ")[1] if notes else "") == said, notes
