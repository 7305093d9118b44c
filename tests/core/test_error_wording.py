"""Refusals in the words of the front end used: one line naming the problem (the file, the key, the path)
and the fix, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import ModelError
from edgequant.evaluate import evaluate

runner = CliRunner()


def _one_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save_model(conv_net(seed=0), str(path))
    return path


def test_recipe_calib_data_is_read_from_the_cwd_and_its_error_names_key_and_file(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "calib.npz", x=images(16, seed=1))
    (tmp_path / "sub" / "r.yaml").write_text("method: static\ncalib_samples: 16\ncalib_data: calib.npz\n")
    res = runner.invoke(app, ["quantize", str(model), "-o", "out", "--recipe", "sub/r.yaml"])
    assert res.exit_code == 2, res.output
    line = _one_line(res.output)
    assert line.startswith(
        f"error: calib_data 'calib.npz' in recipe file 'sub/r.yaml' does not exist (relative to the current "
        f"directory {tmp_path}, not to the recipe's)."
    ), line
    assert line.endswith("Fix: correct calib_data in 'sub/r.yaml' (the file beside the recipe is "
                         "'sub/calib.npz': write that path)."), line  # fmt: skip
    assert "--calib-data" not in line and not (tmp_path / "out").exists()
    # the documented behaviour stays: relative to the directory edgequant runs in (examples/recipe.yaml)
    (tmp_path / "sub" / "r.yaml").write_text("method: static\ncalib_samples: 16\ncalib_data: sub/calib.npz\n")
    res = runner.invoke(app, ["quantize", str(model), "-o", "out", "--recipe", "sub/r.yaml"])
    assert res.exit_code == 0, res.output
    (report,) = [p for p in (tmp_path / "out").glob("*.json") if not p.name.endswith(".plan.json")]
    assert "sub/calib.npz" in json.dumps(json.loads(report.read_text())["calibration"])


def test_weight_8bit_at_8_bits_names_cli_flags(model: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["quantize", str(model), "-o", str(tmp_path / "o"), "--weight-8bit", "first", "--allow-synthetic"],
    )
    assert res.exit_code == 2, res.output
    line = _one_line(res.output)
    assert line.startswith(
        "error: --weight-8bit first keeps layers 8-bit among lower-bit weights, but this run has --method "
        "static --weight-bits 8:"
    ), line
    assert "weight_8bit" not in line and "weight_bits" not in line, line
    assert "drop --weight-8bit" in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("out", "folder", "parent", "fs"), [
    ("/proc/x/", "/proc/x", "/proc", "proc"),
    ("/proc/x/m.onnx", "/proc/x", "/proc", "proc"),
    ("/sys/x/", "/sys/x", "/sys", "sysfs"),
])  # fmt: skip
def test_unwritable_output_names_the_path_and_why(
    model: Path, out: str, folder: str, parent: str, fs: str
) -> None:
    res = runner.invoke(app, ["quantize", str(model), "-o", out, "--allow-synthetic"])
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == (
        f"error: cannot create the output folder '{folder}': '{parent}' is on {fs}, a virtual file system of "
        "the kernel that holds no user files. Fix: choose an -o path in a folder you can write, e.g. -o out/."
    )


def test_evaluate_missing_output_names_the_file(model: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "ev.npz", x=images(8, seed=2))
    other = tmp_path / "other.onnx"
    m = conv_net(seed=1)
    m.graph.output[0].name = "logits"
    m.graph.node[-1].output[0] = "logits"
    onnx.save_model(m, str(other))
    res = runner.invoke(app, ["evaluate", str(other), str(model), "--data", str(tmp_path / "ev.npz")])
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == (
        f"error: the quantized model '{model}' has no output 'logits'; its outputs: y. Fix: pass --output-name "
        "with an output both models have, or check that the files belong together."
    )
    res = runner.invoke(
        app,
        ["evaluate", str(model), str(model), "--data", str(tmp_path / "ev.npz"), "--output-name", "logits"],
    )
    assert res.exit_code == 2 and f"error: the float model '{model}' has no output 'logits'" in res.output
    with pytest.raises(
        ModelError, match=r"^the quantized model '.*tiny\.onnx' has no output 'logits'.*pass output="
    ):
        evaluate(other, model, {"x": images(8, seed=2)})
