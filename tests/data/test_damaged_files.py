"""A file whose bytes are not what its extension says gets a "damaged" hint, never a how-to-save hint.

300 random bytes stand in for a truncated download or a mislabelled file; each reader must say the file
is damaged / not its format, suggest re-creating or re-downloading it, exit 2, and write nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net
from typer.testing import CliRunner

from edgequant.cli import app


def _junk(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(300))
    return path


@pytest.mark.parametrize("name", ["junk.npz", "junk.npy", "junk.h5", "junk.csv"])
def test_damaged_calibration_file_gets_a_damaged_hint(tmp_path: Path, name: str) -> None:
    model = tmp_path / "conv.onnx"
    onnx.save(conv_net(), model)
    res = CliRunner().invoke(
        app,
        ["quantize", str(model), "-o", str(tmp_path / "out"), "--calib-data", str(_junk(tmp_path / name))],
    )
    assert res.exit_code == 2, res.output
    assert "damaged or is not a" in res.output and "re-create or re-download" in res.output, res.output
    assert "np.save" not in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_damaged_image_folder_hint(tmp_path: Path) -> None:
    model = tmp_path / "conv.onnx"
    onnx.save(conv_net(), model)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _junk(imgs / "a.png")
    res = CliRunner().invoke(
        app, ["quantize", str(model), "-o", str(tmp_path / "out"), "--calib-data", str(imgs)]
    )
    assert res.exit_code == 2, res.output
    assert "re-create or re-download" in res.output, res.output


def test_damaged_onnx_file_gets_a_damaged_hint(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["quantize", str(_junk(tmp_path / "m.onnx")), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "damaged or is not ONNX" in res.output and "re-export or re-download" in res.output, res.output


def test_object_npz_keeps_the_save_numbers_hint(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    model = tmp_path / "conv.onnx"
    onnx.save(conv_net(), model)
    res = CliRunner().invoke(
        app, ["quantize", str(model), "-o", str(tmp_path / "out"), "--calib-data", str(path)]
    )
    assert res.exit_code == 2, res.output
    assert "np.savez" in res.output and "damaged" not in res.output, res.output
    assert os.path.exists(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage"])
@pytest.mark.parametrize("command", ["quantize", "evaluate"])
def test_damaged_npz_for_a_model_that_declares_normalisation(
    tmp_path: Path, content: bytes, command: str
) -> None:
    """The declared-normalisation range check reads the arrays first: it must give the data layer's
    "damaged" error too (an empty file was click's "Aborted!", a bad zip a BadZipFile traceback)."""
    proto = conv_net()
    onnx.helper.set_model_props(proto, {"normalization": "x = (pixel_0_255 - [127, 128, 128]) / 64"})
    model = tmp_path / "conv.onnx"
    onnx.save(proto, model)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    out = tmp_path / "out"
    if command == "quantize":
        args = ["quantize", str(model), "-o", str(out), "--calib-data", str(bad)]
    else:
        args = ["evaluate", str(model), str(model), "--data", str(bad), "-o", str(out / "r.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "damaged or is not a .npz" in res.output and "re-create or re-download" in res.output, res.output
    assert "Traceback" not in res.output and "Aborted" not in res.output, res.output
    assert not out.exists()
