"""--target akida end to end: a real Akida program (.fbz) is written, and it runs.

The program is loaded back in the akida toolchain's interpreter by a script written here and run on
Akida's software backend; its outputs are compared with this test's own ONNX Runtime float session.
No Akida figure goes into the README (BrainChip's EULA); the thresholds stay in this test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from toolchain_helpers import RUN_FBZ, assert_documented, need_toolchain, pixel_conv_net
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import UnsupportedError
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db
from edgequant.toolchains.akida import _require_whole


def test_target_akida_writes_a_program_that_runs(tmp_path: Path) -> None:
    python = need_toolchain("akida")
    rng = np.random.default_rng(4)
    model, calib = tmp_path / "pixels.onnx", tmp_path / "calib.npz"
    onnx.save(pixel_conv_net(), model)
    np.savez(calib, x=rng.integers(0, 256, (64, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(model), "--calib-data", str(calib), "--target", "akida", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    programs = list(out.glob("*.fbz"))
    assert len(programs) == 1
    report = json.loads(next(out.glob("*_int8_akida.json")).read_text())
    assert report["toolchain"]["input_dtype"] == "uint8"
    assert [t for _, t in report["toolchain"]["layers"]][1:4] == ["InputConv2D", "Conv2D", "Dense1D"]
    assert_documented(report["toolchain"])

    x = rng.integers(0, 256, (16, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run_fbz.py"
    script.write_text(RUN_FBZ)
    subprocess.run(
        [str(python), str(script), str(programs[0]), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
    )
    got = np.load(tmp_path / "y.npy").reshape(16, 10)
    ref = OrtRuntime().run(onnx.load(str(model)), {"x": x})["y"]
    assert sqnr_db(ref, got) >= 30.0  # 8-bit Akida 2.0 vs float
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.9


def test_normalised_float_inputs_are_refused(tmp_path: Path) -> None:
    need_toolchain("akida")
    model, calib = tmp_path / "pixels.onnx", tmp_path / "calib.npz"
    onnx.save(pixel_conv_net(), model)
    np.savez(calib, x=np.random.default_rng(1).random((32, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(model), "--calib-data", str(calib), "--target", "akida", "-o", str(out)]
    )
    assert res.exit_code == 2 and "takes 8-bit integers" in res.output
    assert not out.exists() or not any(out.iterdir())


def test_a_conversion_that_stopped_early_is_refused() -> None:
    m = pixel_conv_net()
    whole = {"layers": [["quantize", "Quantizer"], ["c1", "InputConv2D"], ["c2", "Conv2D"], ["y", "Dense1D"]]}
    _require_whole(m, whole, "y")
    stopped = {"layers": [["quantize", "Quantizer"], ["c1", "InputConv2D"]]}
    with pytest.raises(UnsupportedError, match=r"node 'relu1' \(Relu\) and the nodes after it"):
        _require_whole(m, stopped, "y")


def test_the_built_in_example_runs_on_akida(tmp_path: Path) -> None:
    """The example declares x = (pixel - [127, 128, 128]) / 64: the program takes raw pixels."""
    python = need_toolchain("akida")
    examples = Path(__file__).resolve().parents[2] / "examples"
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["quantize", str(examples / "shapes_cnn.onnx"), "--calib-data", str(examples / "shapes_calib.npz"),
         "--target", "akida", "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "shapes_cnn_int8_akida.json").read_text())
    assert "declared normalisation" in report["toolchain"]["input"]
    data = np.load(examples / "shapes_eval.npz")
    x, labels = data["image"][:64].astype(np.float32), data["labels"][:64]
    pixels = np.round(x * 64 + np.array([127, 128, 128], np.float32).reshape(1, 3, 1, 1))
    assert np.abs((pixels - np.array([127, 128, 128]).reshape(1, 3, 1, 1)) / 64 - x).max() < 1e-4
    np.save(tmp_path / "x.npy", pixels)
    script = tmp_path / "run_fbz.py"
    script.write_text(RUN_FBZ)
    subprocess.run(
        [
            str(python),
            str(script),
            str(out / "shapes_cnn_int8_akida.fbz"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        check=True,
    )
    got = np.load(tmp_path / "y.npy").reshape(64, 10)
    ref = OrtRuntime().run(onnx.load(str(examples / "shapes_cnn.onnx")), {"image": x})["logits"]
    assert sqnr_db(ref, got) >= 18.0  # on 64 held-out evaluation images; measured 20.3 dB
    assert np.mean(got.argmax(1) == labels) >= np.mean(ref.argmax(1) == labels) - 0.05


def test_bit_widths_quantizeml_cannot_build_are_refused_before_any_work(tmp_path: Path) -> None:
    """QuantizeML's ONNX route raises 'Only default bitwidth qparams is allowed' for 4-bit weights: an
    Akida program named w4a8 would be 8-bit.  The refusal comes first, and nothing is written."""
    need_toolchain("akida")
    model, calib = tmp_path / "pixels.onnx", tmp_path / "calib.npz"
    onnx.save(pixel_conv_net(), model)
    np.savez(calib, x=np.random.default_rng(2).integers(0, 256, (16, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["quantize", str(model), "--calib-data", str(calib), "--target", "akida", "--weight-bits", "4",
         "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 2 and "8 bits only" in res.output and "--weight-bits" in res.output
    assert not out.exists()
