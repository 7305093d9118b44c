"""Issue #16 section 5 as the user sees it: the 'float speed or slower' / 'slower than float' notes name the
nodes ORT's optimized graph really runs in float (own ORT sessions are the reference), no others, on screen
once; and the automatic 16-bit note is printed once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images, mlp, ort_ran_ops
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app

# the transformer layer whose automatic 16-bit activations tests/algorithms/test_act16_auto.py measures
_spec = importlib.util.spec_from_file_location(
    "act16_layer", Path(__file__).parents[1] / "algorithms/test_act16_auto.py"
)
assert _spec is not None and _spec.loader is not None
_act16 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_act16)

FLOAT = "float speed or slower"


def _float_note(notes: list[str]) -> str:
    found = [n for n in notes if n.startswith(FLOAT)]
    assert len(found) <= 1, found
    return found[0] if found else ""


@pytest.mark.parametrize("bits", [1, "ternary"])
def test_binary_and_ternary_convs_are_not_called_float(tmp_path: Path, bits: int | str) -> None:
    """Before: '4 Conv/Gemm node(s) (conv1, dwconv, pwconv, ...) with 1-bit weights'.  The int8 containers fuse
    into QLinearConv, and the last Gemm, whose bias is int32 as with 8-bit weights, into QGemm (until session 11
    its bias stayed float and the Gemm, with a float output, ran float and was named): no note."""
    r = edgequant.quantize(conv_net(), {"x": images(24)}, method="static", calib_samples=12, weight_bits=bits)
    ran = ort_ran_ops(r.model, tmp_path)
    assert ran["QLinearConv"] == 3 and ran["Conv"] == 0 and ran["Gemm"] == 0 and ran["QGemm"] == 1, ran
    assert _float_note(r.report["notes"]) == ""


def test_weight_only_int8_names_only_the_matmul_ort_runs_in_float(tmp_path: Path) -> None:
    """Before: 'slower than float: 2 MatMul(s) (mm1, mm2)'.  ORT fuses mm2 (its output goes to a bias Add
    only) into MatMulNBits; mm1 (MatMul + Add + Relu) becomes a float FusedGemm on a dequantized weight."""
    x = np.random.default_rng(1).standard_normal((24, 32)).astype(np.float32)
    r = edgequant.quantize(mlp(), {"x": x}, method="weight-only", calib_samples=12)
    ran = ort_ran_ops(r.model, tmp_path, "ORT_ENABLE_EXTENDED")
    assert ran["MatMulNBits"] == 1 and ran["FusedGemm"] == 1 and ran["MatMul"] == 0, ran
    slow = [w for w in r.report["warnings"] if w.startswith("slower than float")]
    assert len(slow) == 1 and slow[0].startswith("slower than float: 1 MatMul(s) (mm1) "), slow
    assert any(
        n.startswith("1 MatMul/Gemm(s) (mm2) are fused by ONNX Runtime into MatMulNBits")
        for n in r.plan.notes
    )


def test_partial_16_bit_convs_are_named_on_screen_once(tmp_path: Path) -> None:
    """Before: no note at all.  At 45 dB the input and four more activations go to 16 bits; ORT runs the three
    Convs next to them in float (own session), and the note, on screen once, names exactly those three."""
    onnx.save_model(conv_net(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", images(48))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(tmp_path / "net.onnx"), "--calib-data", str(tmp_path / "x.npy"),
              "--act16-below-db", "45", "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (model,) = out.glob("*.onnx")
    ran = ort_ran_ops(onnx.load(model), tmp_path)
    assert ran["QGemm"] == 1 and ran["QLinearConv"] == 0, ran
    report = json.loads(model.with_suffix(".json").read_text())
    measured = {d["node"] for d in report["nodes"]["storage_only"] + report["nodes"]["planned_float"]}
    assert measured >= {"conv1", "dwconv", "pwconv"} and "fc" not in measured, measured
    note = _float_note(report["notes"])
    said = note.split(": ")[1]
    assert all(name in said for name in ("conv1", "dwconv", "pwconv")) and "fc" not in said, note
    assert "--act16-below-db off" in note, note
    screen = " ".join(res.output.split())
    assert screen.count(f"note: {FLOAT}: ") == 1 and screen.count("conv1") == 1, res.output


def test_the_automatic_16_bit_note_is_printed_once(tmp_path: Path) -> None:
    """Before: twice (the pipeline's screen note and the plan's note, both in report['notes'])."""
    onnx.save_model(_act16._layer(), tmp_path / "layer.onnx")
    np.save(tmp_path / "x.npy", _act16._data(48, 1))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["quantize", str(tmp_path / "layer.onnx"), "--calib-data", str(tmp_path / "x.npy"), "-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "layer_int8.json").read_text())
    auto = [n for n in report["notes"] if "applied automatically" in n]
    assert len(auto) == 1, report["notes"]
    assert " ".join(res.output.split()).count("applied automatically") == 1, res.output


def test_the_note_follows_nodes_a_pass_kept_float(tmp_path: Path) -> None:
    """Before: the planner's note was kept after --target-sqnr kept 'fc' float, so it still named 'fc' 'with 4-bit
    weights' (4 Conv/Gemm nodes).  Now it names the quantized nodes ORT runs in float, and only those."""
    r = edgequant.quantize(conv_net(), {"x": images(48)}, method="static", calib_samples=24, weight_bits=4,
                           target_sqnr_db=25)  # fmt: skip
    planned = {d.node for d in r.plan.quantized_nodes}
    assert "fc" not in planned and {"conv1", "dwconv", "pwconv"} <= planned, planned
    ran = ort_ran_ops(r.model, tmp_path)
    assert ran["Conv"] == 3 and ran["Gemm"] == 1 and ran["QLinearConv"] == 0, ran  # fc: float, not quantized
    assert (
        _float_note(r.report["notes"]).split(": ")[1]
        == "3 Conv node(s) (conv1, dwconv, pwconv) with 4-bit weights"
    )


def test_weight_only_slowness_is_printed_once(tmp_path: Path) -> None:
    """Before: 'note: slower than float: 1 MatMul(s) (mm1) ...' and then 'warning: slower than float: ...',
    the same text twice (the plan's note was also copied into the warnings)."""
    onnx.save_model(mlp(), tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((24, 32)).astype(np.float32))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(tmp_path / "mlp.onnx"), "--calib-data", str(tmp_path / "x.npy"),
              "--method", "weight-only", "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    screen = " ".join(res.output.split())
    assert screen.count("slower than float: 1 MatMul(s) (mm1)") == 1, res.output
    assert "warning: slower than float: 1 MatMul(s) (mm1)" in screen, res.output
