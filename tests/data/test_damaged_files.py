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
