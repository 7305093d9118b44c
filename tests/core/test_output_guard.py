"""The input model is never an output (not with --overwrite, not via a symlink or '..'), and a refused
-o creates nothing ('bo/../x' makes no 'bo')."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from tinymodels import conv_net, images
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.errors import ExportError

runner = CliRunner()


def _q(model: Path, out: str, calib: Path, *extra: str) -> tuple[int, str]:
    res = runner.invoke(app, ["quantize", str(model), "-o", out, "--calib-data", str(calib), *extra])
    return res.exit_code, res.output


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_output_onto_the_input_model_is_refused(files: dict[str, Path], overwrite: list[str]) -> None:
    model, tmp = files["model"], files["model"].parent
    before = model.read_bytes()
    (tmp / "sub").mkdir()
    os.symlink(model, tmp / "link.onnx")
    cases = [str(model), str(tmp / "sub" / ".." / "net.onnx")]  # the same file, and through '..'
    for out in cases:
        code, text = _q(model, out, files["calib"], *overwrite)
        assert code == 2 and "is the input model" in text and "choose another -o" in text, text
    code, text = _q(tmp / "link.onnx", str(model), files["calib"], *overwrite)  # input through a symlink
    assert code == 2 and "is the input model" in text, text
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp.iterdir()) == ["calib.npz", "link.onnx", "net.onnx", "sub"]


def test_api_save_refuses_the_input_model_path(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save_model(conv_net(), model)
    before = model.read_bytes()
    result = edgequant.quantize(str(model), {"x": images(24)}, calib_samples=8)
    with pytest.raises(ExportError, match="is the input model"):
        result.save(model, overwrite=True)
    assert model.read_bytes() == before
    assert result.save(tmp_path / "q.onnx").model.is_file()  # another path is fine


def test_dotdot_out_makes_no_folder_and_sees_existing_files(files: dict[str, Path]) -> None:
    tmp = files["model"].parent
    (tmp / "x").mkdir()
    mine = tmp / "x" / "net_int8.onnx"
    mine.write_bytes(b"mine")
    code, text = _q(files["model"], str(tmp / "bo" / ".." / "x"), files["calib"])
    assert code == 2 and "already exists" in text, text  # 'bo/../x' is 'x', whose file exists
    assert not (tmp / "bo").exists() and mine.read_bytes() == b"mine"
    code, text = _q(files["model"], str(tmp / "bo" / ".." / "y"), files["calib"])
    assert code == 0, text
    assert not (tmp / "bo").exists() and (tmp / "y" / "net_int8.onnx").is_file()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_symlink_at_an_output_path_is_refused(files: dict[str, Path], overwrite: list[str]) -> None:
    tmp = files["model"].parent / f"link{len(overwrite)}"
    (tmp / "out").mkdir(parents=True)
    target = tmp / "mine.onnx"
    target.write_bytes(b"the user's")
    (tmp / "out" / "net_int8.onnx").symlink_to(target)  # inside or outside the folder: never written through
    (tmp / "out" / "net_int8.json").symlink_to("net_int8.onnx")
    code, text = _q(files["model"], str(tmp / "out"), files["calib"], *overwrite)
    assert code == 2 and "is a symbolic link" in text and "choose another -o" in text, text
    assert len([ln for ln in text.splitlines() if ln.strip()]) == 1, text
    assert target.read_bytes() == b"the user's"
    assert sorted(p.name for p in (tmp / "out").iterdir()) == ["net_int8.json", "net_int8.onnx"]
