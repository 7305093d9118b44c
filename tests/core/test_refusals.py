"""No ignored option, no silent downgrade: each is refused (exit 2, one line naming it) or stated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app


@pytest.fixture
def model(tmp_path: Path) -> Path:
    p = tmp_path / "net.onnx"
    onnx.save_model(conv_net(), p)
    np.save(tmp_path / "x.npy", images(16))
    return p


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--method", "fp16", "--weight-bits", "4"], "weight_bits 4"),
        (["--method", "weight-only", "--act-bits", "16"], "act_bits 16"),
        (["--method", "static", "--block-size", "32", "--calib-data", "X"], "block_size 32"),
        (["--method", "dynamic", "--calib-data", "X"], "calib_data is set"),
        (["--input-shape", "1x3x16x16"], "--input-shape 1x3x16x16"),
        (["--factory", "pkg.mod:make"], "--factory pkg.mod:make"),
        (["--method", "static"], "--allow-synthetic"),
    ],
)
def test_ignored_options_are_refused_with_one_line(model: Path, args: list[str], named: str) -> None:
    args = [a.replace("X", str(model.parent / "x.npy")) for a in args]
    target = model if "--factory" not in args else model.parent / "missing.pt"
    out = model.parent / "out"
    res = CliRunner().invoke(app, ["quantize", str(target), "-o", str(out), *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], res.output
    assert not out.exists()


def test_failed_opset_conversion_is_refused_not_downgraded(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgequant.export import opset as opset_module

    def fail(model: onnx.ModelProto, opset: int, why: str) -> None:
        raise edgequant.UnsupportedError("the version converter failed on node 'x'.", "")

    monkeypatch.setattr(opset_module, "ensure_opset", fail)
    with pytest.raises(edgequant.UnsupportedError, match=r"needs opset 13.*per_channel=False"):
        edgequant.quantize(conv_net(opset=11), {"x": images(8)})


def test_block_size_says_which_weights_are_not_blocked() -> None:
    r = edgequant.quantize(conv_net(), method="weight-only", weight_bits=4, block_size=16)
    notes = {e.name: e.note for e in r.plan.tensors.values()}
    # the three Conv weights are per channel, each with its reason; the Gemm weight (16 inputs) is blocked
    for w in ("w1", "wd", "wp"):
        assert notes[w].startswith("not in blocks of 16: per_channel, because Conv weights have no blocked")
    assert r.plan.tensors["wf"].spec.block_size == 16 and notes["wf"] == ""
    assert any("--block-size 16: 3 weight(s) are not blocked (w1, wd, wp)" in w for w in r.report["warnings"])


def test_a_packing_the_file_lacks_is_labelled_theoretical() -> None:
    r = edgequant.quantize(conv_net(), method="weight-only", weight_bits=2)
    stored = {t.name: t.data_type for t in r.model.graph.initializer}
    assert onnx.TensorProto.INT8 in stored.values()  # 2-bit values in int8 containers
    assert r.report["sizes"]["packed_theoretical"] is True
    r8 = edgequant.quantize(conv_net(), method="weight-only", weight_bits=8)
    assert r8.report["sizes"]["packed_theoretical"] is False
