"""``compare --targets cpu,tvm,akida``: the toolchain artifacts become rows, scored on their own outputs.

The expected scores are recomputed here: the written ``.tvm.so`` and ``.fbz`` are run by scripts of this
test in the toolchains' interpreters, and the float reference by this test's own ORT session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from toolchain_helpers import RUN_FBZ, RUN_SO, need_toolchain, pixel_conv_net, run_artifact
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.runtime import OrtRuntime


def _run(python: Path, script: str, artifact: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    return run_artifact(python, script, artifact, x, tmp).reshape(len(x), -1)


def test_compare_adds_a_row_per_toolchain_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tvm_python, akida_python = need_toolchain("tvm"), need_toolchain("akida")
    rng = np.random.default_rng(7)
    model, calib, ev = tmp_path / "pixels.onnx", tmp_path / "calib.npz", tmp_path / "eval.npz"
    onnx.save(pixel_conv_net(), model)
    np.savez(calib, x=rng.integers(0, 256, (48, 3, 16, 16)).astype(np.float32))
    x = rng.integers(0, 256, (40, 3, 16, 16)).astype(np.float32)
    np.savez(ev, x=x)
    out = tmp_path / "cmp"
    monkeypatch.chdir(tmp_path)  # a relative -o: the toolchain drivers run in folders of their own
    res = CliRunner().invoke(
        app,
        ["compare", "pixels.onnx", "--calib-data", "calib.npz", "--eval-data", "eval.npz", "--methods",
         "float,int8-static", "--targets", "cpu,tvm,akida", "--runs", "5", "--no-memory", "-o", "cmp"],
    )  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    report = json.loads((out / "report.json").read_text())
    rows = {m["method"]: m for m in report["methods"]}
    assert list(rows) == ["float", "int8-static", "int8-static@tvm", "int8-static@akida"]
    tvm, akida = rows["int8-static@tvm"], rows["int8-static@akida"]
    assert tvm["status"] == "ok" and akida["status"] == "ok", (tvm["error"], akida["error"])
    assert tvm["model_file"].endswith(".tvm.so") and akida["model_file"].endswith(".fbz")
    assert tvm["file_bytes"] == (out / tvm["model_file"]).stat().st_size
    assert "float math" in tvm["coverage"] and akida["latency"] is None
    assert tvm["latency"]["median_ms"] > 0 and "TVM" in tvm["latency"]["runtime"]

    ref = OrtRuntime().run(onnx.load(str(model)), {"x": x})["y"]
    for row, python, script in ((tvm, tvm_python, RUN_SO), (akida, akida_python, RUN_FBZ)):
        got = _run(python, script, out / row["model_file"], x, tmp_path)
        agreement = 100.0 * float(np.mean(ref.argmax(1) == got.argmax(1)))
        assert row["score"] == agreement  # the row scores the artifact's own outputs
        assert agreement >= 95.0  # measured: 100 % for both (40 samples)


def test_an_unknown_target_in_targets_is_refused(tmp_path: Path) -> None:
    model, ev = tmp_path / "pixels.onnx", tmp_path / "eval.npz"
    onnx.save(pixel_conv_net(), model)
    np.savez(ev, x=np.zeros((4, 3, 16, 16), np.float32))
    res = CliRunner().invoke(
        app,
        ["compare", str(model), "--eval-data", str(ev), "--targets", "cpu,tvmm", "-o", str(tmp_path / "o")],
    )
    assert res.exit_code == 2 and "tvm" in res.output
    assert not (tmp_path / "o").exists()


def test_akida1_in_targets_is_refused_with_the_route_that_builds_it(tmp_path: Path) -> None:
    # compare takes ONNX/TorchScript models and plans target rows as int8-static; Akida 1.0 converts a
    # Keras .h5 model at 4/2 bits: one line naming the quantize command, exit 2, nothing written
    model, ev = tmp_path / "pixels.onnx", tmp_path / "eval.npz"
    onnx.save(pixel_conv_net(), model)
    np.savez(ev, x=np.zeros((4, 3, 16, 16), np.float32))
    out = tmp_path / "o"
    res = CliRunner().invoke(
        app, ["compare", str(model), "--eval-data", str(ev), "--targets", "cpu,akida1", "-o", str(out)]
    )
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "converts a Keras 2 .h5 model at 4/2 bits" in text
    assert "edgequant quantize model.h5 --target akida1 --weight-bits 4 --act-bits 4" in text
    assert not out.exists()
