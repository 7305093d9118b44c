"""Output files: distinct names per setting, `-o file.onnx`, no silent overwrite, unwritable refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.recipe import from_dict

runner = CliRunner()


def _q(files: dict[str, Path], out: Path, *extra: str) -> object:
    return runner.invoke(
        app, ["quantize", str(files["model"]), "-o", str(out), "--calib-data", str(files["calib"]), *extra]
    )


def test_settings_never_share_a_name() -> None:
    settings = [
        {}, {"per_channel": False}, {"power_of_two": True}, {"weight_bits": 4}, {"act_bits": 16},
        {"method": "dynamic"}, {"method": "dynamic", "per_channel": False}, {"method": "fp16"},
        {"method": "weight-only"}, {"method": "weight-only", "per_channel": False},
        {"method": "weight-only", "weight_bits": 4, "block_size": 32},
    ]  # fmt: skip
    tags = [from_dict(s).default_tag for s in settings]
    assert len(set(tags)) == len(tags), tags
    assert tags[:2] == ["int8", "int8_pt"]


def test_per_tensor_and_per_channel_write_two_files(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _q(files, out).exit_code == 0
    assert _q(files, out, "--per-tensor").exit_code == 0
    assert {p.name for p in out.glob("*.onnx")} == {"net_int8.onnx", "net_int8_pt.onnx"}


def test_existing_files_need_overwrite(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _q(files, out).exit_code == 0
    before = (out / "net_int8.onnx").read_bytes()
    (out / "net_int8.onnx").write_bytes(b"mine")
    res = _q(files, out)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "net_int8.onnx").read_bytes() == b"mine"
    res = _q(files, out, "--overwrite")
    assert res.exit_code == 0 and (out / "net_int8.onnx").read_bytes() == before


def test_o_path_ending_in_onnx_is_the_model_file(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "deploy" / "model_q.onnx"
    res = _q(files, target)
    assert res.exit_code == 0, res.output
    assert target.is_file() and not target.is_dir()
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "model_q.json",
        "model_q.onnx",
        "model_q.plan.json",
    ]
    report = json.loads((target.parent / "model_q.json").read_text())
    assert report["files"]["model"] == "model_q.onnx"
    onnx.checker.check_model(str(target))


def test_unwritable_output_is_refused_before_the_work(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgequant.pipeline

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("the quantization ran although the output cannot be written")

    monkeypatch.setattr(edgequant.pipeline, "quantize", no_work)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = _q(files, blocker / "sub", "--calib-method", "entropy")
    assert res.exit_code == 2 and "is a file, not a directory" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = _q(files, blocker)  # an existing file without .onnx: not a directory
    assert res.exit_code == 2 and "not a directory" in res.output and blocker.read_text() == "x"
