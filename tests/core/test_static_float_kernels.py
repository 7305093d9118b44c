"""Issue #16 §3: static W4A8 / W8A16 conv nets are planned as asked, and the plan says (one note, on screen
too) that ONNX Runtime runs those Conv/Gemm nodes in float; ORT's optimized graph is the independent check."""

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
