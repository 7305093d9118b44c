"""Issue 9 §8: -v/-vv visibly add the pipeline's steps on the built-in example, and -q does what its help
says (no notes, progress or third-party deprecation warnings; results and warnings still print)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from tinymodels import conv_net, images
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.runtime import OrtRuntime

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples"


def _example(tmp_path: Path, out: str, *flags: str) -> str:
    args = ["quantize", str(EXAMPLE / "shapes_cnn.onnx"), "-o", str(tmp_path / out)]
    res = runner.invoke(app, [*args, "--calib-data", str(EXAMPLE / "shapes_calib.npz"), *flags])
    assert res.exit_code == 0, res.output
    return res.output


def test_verbose_shows_each_stage_and_debug_each_node_on_the_example(tmp_path: Path) -> None:
    plain, info, debug = (
        _example(tmp_path, "a"),
        _example(tmp_path, "b", "-v"),
        _example(tmp_path, "c", "-vv"),
    )
    assert "INFO" not in plain and "DEBUG" not in plain
    stages = [ln for ln in info.splitlines() if ln.startswith("INFO edgequant.pipeline:")]
    for word in (
        "loaded 'shapes_cnn'",
        "calibration (auto)",
        "QDQ export",
        "static:",
        "check: output SQNR",
    ):
        assert any(word in ln for ln in stages), (word, info)
    assert all(re.search(r"in \d+\.\d{3} s", ln) for ln in stages), stages  # each stage with its time
    assert "DEBUG" not in info
    # -vv: one line per node of the plan, as many as the written plan lists
    plan = json.loads((tmp_path / "c" / "shapes_cnn_int8.plan.json").read_text())
    nodes = [ln for ln in debug.splitlines() if ln.startswith("DEBUG edgequant.pipeline: node ")]
    assert len(nodes) == len(plan["nodes"]) == 23


def test_quiet_keeps_results_and_warnings_and_its_help_says_so(tmp_path: Path) -> None:
    help_text = runner.invoke(app, ["--help"]).output
    assert "Errors only" not in help_text and "results, warnings and errors still" in " ".join(
        help_text.split()
    )
    quiet = _example(tmp_path, "q", "-q")
    assert "static ->" in quiet and "SQNR vs float" in quiet and "note:" not in quiet


def test_compare_quiet_prints_no_progress_lines(tmp_path: Path) -> None:
    m = conv_net(seed=1)
    onnx.save_model(m, tmp_path / "tiny.onnx")
    x = images(24, seed=5)
    np.savez(tmp_path / "eval.npz", x=x, labels=OrtRuntime().run(m, {"x": x})["y"].argmax(axis=1))
    np.savez(tmp_path / "calib.npz", x=images(16, seed=6))
    base = ["compare", str(tmp_path / "tiny.onnx"), "--calib-data", str(tmp_path / "calib.npz"), "--eval-data",
            str(tmp_path / "eval.npz"), "--methods", "float,fp16", "--no-memory", "--runs", "2"]  # fmt: skip
    loud = runner.invoke(app, [*base, "-o", str(tmp_path / "a")])
    quiet = runner.invoke(app, [*base, "-o", str(tmp_path / "b"), "-q"])
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output + quiet.output
    progress = re.compile(r"^\[\d+/\d+\] ", re.MULTILINE)
    assert len(progress.findall(loud.output)) >= 2
    assert not progress.findall(quiet.output) and "recommended: " in quiet.output


def test_quiet_hides_third_party_future_warnings_of_a_torch_model(tmp_path: Path) -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 5)
    )
    torch.jit.script(net.eval()).save(str(tmp_path / "net.pt"))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((40, 3, 16, 16)).astype(np.float32))
    cmd = [sys.executable, "-m", "edgequant", "quantize", str(tmp_path / "net.pt"), "-o", str(tmp_path / "o"),
           "--calib-data", str(tmp_path / "x.npy"), "-q"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    assert "FutureWarning" not in res.stderr and "DeprecationWarning" not in res.stderr, res.stderr
    assert (tmp_path / "o" / "net_int8.onnx").is_file()
