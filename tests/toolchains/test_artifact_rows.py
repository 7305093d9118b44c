"""Every entry point that builds a toolchain artifact scores the artifact itself, from any working
directory: ``sweep --targets tvm,akida``, ``compare --target tvm`` (singular), and their rows' exit codes.

Expected scores are recomputed here: the written ``.tvm.so`` / ``.fbz`` are run by this test's own scripts
in the toolchains' interpreters, and the float reference by this test's own ORT session.
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
from edgequant.errors import ExportError
from edgequant.runtime import OrtRuntime


def _data(tmp: Path) -> tuple[Path, Path, Path, np.ndarray]:
    rng = np.random.default_rng(11)
    model, calib, ev = tmp / "pixels.onnx", tmp / "calib.npz", tmp / "eval.npz"
    onnx.save(pixel_conv_net(), model)
    np.savez(calib, x=rng.integers(0, 256, (48, 3, 16, 16)).astype(np.float32))
    x = rng.integers(0, 256, (32, 3, 16, 16)).astype(np.float32)
    np.savez(ev, x=x)
    return model, calib, ev, x


def _agreement(python: Path, script: str, artifact: Path, model: Path, x: np.ndarray, tmp: Path) -> float:
    got = run_artifact(python, script, artifact, x, tmp).reshape(len(x), -1)
    ref = OrtRuntime().run(onnx.load(str(model)), {"x": x})["y"]
    return 100.0 * float(np.mean(ref.argmax(1) == got.argmax(1)))


def test_sweep_scores_the_toolchain_artifacts_from_a_relative_outdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tvm_python, akida_python = need_toolchain("tvm"), need_toolchain("akida")
    model, _, _, x = _data(tmp_path)
    monkeypatch.chdir(tmp_path)  # -o relative: the drivers run in folders of their own
    res = CliRunner().invoke(
        app,
        ["sweep", "pixels.onnx", "--calib-data", "calib.npz", "--eval-data", "eval.npz", "--methods",
         "int8-static", "--targets", "tvm,akida", "--runs", "3", "-o", "swt"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = {r["target"]: r for r in json.loads((tmp_path / "swt" / "sweep.json").read_text())["rows"]}
    assert set(rows) == {"tvm", "akida"}
    for target, python, script, suffix in (
        ("tvm", tvm_python, RUN_SO, ".tvm.so"), ("akida", akida_python, RUN_FBZ, ".fbz")
    ):  # fmt: skip
        row = rows[target]
        assert row["status"] == "ok", row.get("error")
        assert row["model_file"].endswith(suffix)
        artifact = tmp_path / "swt" / row["folder"] / row["model_file"]
        assert row["file_bytes"] == artifact.stat().st_size
        assert row["score"] == _agreement(python, script, artifact, model, x, tmp_path)
    assert "TVM" in rows["tvm"]["latency"]["runtime"] and rows["akida"]["latency"] is None


def test_compare_target_tvm_rows_are_the_library_run_by_tvm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tvm_python = need_toolchain("tvm")
    model, _, _, x = _data(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        app,
        ["compare", "pixels.onnx", "--calib-data", "calib.npz", "--eval-data", "eval.npz", "--methods",
         "float,int8-static", "--target", "tvm", "--runs", "3", "--no-memory", "-o", "ctg"],
    )  # fmt: skip
    assert res.exit_code in (0, 1), res.output  # 1: the default 1-point limit may not be met
    rows = {m["method"]: m for m in json.loads((tmp_path / "ctg" / "report.json").read_text())["methods"]}
    row = rows["int8-static"]
    assert row["status"] == "ok", row["error"]
    assert row["model_file"].endswith(".tvm.so") and "TVM" in row["latency"]["runtime"]
    assert row["score"] == _agreement(
        tvm_python, RUN_SO, tmp_path / "ctg" / row["model_file"], model, x, tmp_path
    )
    assert rows["float"]["model_file"].endswith("_float.onnx")


def test_a_failed_target_row_makes_compare_exit_1_with_its_reason(tmp_path: Path) -> None:
    need_toolchain("akida")
    model, ev = tmp_path / "pixels.onnx", tmp_path / "eval.npz"
    onnx.save(pixel_conv_net(), model)
    rng = np.random.default_rng(2)
    np.savez(ev, x=rng.standard_normal((16, 3, 16, 16)).astype(np.float32))  # not 0-255 pixels: Akida refuses
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "o"
    res = CliRunner().invoke(
        app,
        ["compare", str(model), "--calib-data", str(tmp_path / "calib.npz"), "--eval-data", str(ev), "--methods",
         "float", "--targets", "cpu,akida", "--runs", "3", "--no-memory", "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    row = {m["method"]: m for m in json.loads((out / "report.json").read_text())["methods"]}[
        "int8-static@akida"
    ]
    assert row["status"] == "failed"
    assert f"error: int8-static@akida failed: {row['error']}" in " ".join(res.output.split())


def test_a_library_that_cannot_be_loaded_gets_a_load_hint(tmp_path: Path) -> None:
    need_toolchain("tvm")
    from edgequant.toolchains.tvm import run_tvm

    with pytest.raises(ExportError) as info:
        run_tvm(tmp_path / "missing.tvm.so", pixel_conv_net(), [{"x": np.zeros((1, 3, 16, 16), np.float32)}])
    assert "tvm failed at load" in str(info.value)
    assert "artifact file" in info.value.hint and "ops" not in info.value.hint
