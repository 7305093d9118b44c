"""The CLI: quantize and inspect work; each bad input gives one line, exit code 2, and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from typer.testing import CliRunner

from edgequant.cli import app

runner = CliRunner()


def test_quantize_writes_model_report_and_plan(files: dict[str, Path]) -> None:
    res = runner.invoke(
        app,
        [
            "quantize",
            str(files["model"]),
            "-o",
            str(files["out"]),
            "--calib-data",
            str(files["calib"]),
            "--calib-method",
            "percentile",
            "--calib-samples",
            "16",
            "--exclude",
            "gap",
        ],
    )
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in files["out"].iterdir())
    tag = "int8_percentile_hfc4e98"  # percentile; the hash: --calib-samples 16 and --exclude gap
    assert names == [f"net_{tag}.json", f"net_{tag}.onnx", f"net_{tag}.plan.json"]
    report = json.loads((files["out"] / f"net_{tag}.json").read_text())
    # 24 samples: 12 held back for the check (at most half the data), 12 left for calibration
    assert report["calibration"]["samples"] == 12 and report["calibration"]["method"] == "percentile"
    assert report["check"]["kind"] == "held_out" and report["check"]["samples"] == 12
    assert report["sizes"]["packed_bytes"] > 0 and report["versions"]["onnxruntime"]
    assert {
        "node": "gap",
        "op_type": "GlobalAveragePool",
        "reason": "excluded by the user ('gap').",
        "graph": "main",
    } in (report["nodes"]["skipped"])


def test_w4a8_tag_and_recipe_file(files: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"weight_bits: 4\ncalib_data: {files['calib']}\n")
    res = runner.invoke(
        app, ["quantize", str(files["model"]), "-o", str(files["out"]), "--recipe", str(recipe)]
    )
    assert res.exit_code == 0, res.output
    assert (files["out"] / "net_w4a8.onnx").is_file()


def test_inspect_lists_ops_and_quantizable_nodes(files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["inspect", str(files["model"]), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["ops"]["Conv"] == 3 and info["parameters"] == 8 * 27 + 8 + 8 * 9 + 8 + 64 + 8 + 160 + 10
    assert [n["name"] for n in info["quantizable_nodes"]] == ["conv1", "dwconv", "pwconv", "fc"]


def _bad(files: dict[str, Path], *args: str) -> str:
    res = runner.invoke(app, ["quantize", *args, "-o", str(files["out"])])
    assert res.exit_code == 2, res.output
    assert not files["out"].exists() or not any(files["out"].iterdir()), "nothing may be written"
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    return " ".join(lines)


def test_missing_model(files: dict[str, Path], tmp_path: Path) -> None:
    out = _bad(files, str(tmp_path / "nope.onnx"))
    assert out.startswith("error: model file") and "does not exist. Fix: check the path." in out


def test_not_onnx(files: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is a text file, not a protobuf\x00\xff")
    assert "is not an ONNX model" in _bad(files, str(junk))


def test_model_ort_cannot_load(files: dict[str, Path], tmp_path: Path) -> None:
    g = h.make_graph(
        [h.make_node("NoSuchOp", ["x"], ["y"], domain="acme")],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [1])],
        [h.make_tensor_value_info("y", T.FLOAT, [1])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("acme", 1)])
    p = tmp_path / "custom.onnx"
    onnx.save_model(m, p)
    out = _bad(files, str(p))
    assert "ONNX Runtime cannot load the input model" in out and "NoSuchOp" in out


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": np.zeros((4, 3, 8, 8), np.float32)},
            "input 'x' has shape 2x3x8x8, the model expects ?x3x16x16",
        ),
        ({"x": np.zeros((4, 3, 16, 16), np.int32)}, "input 'x' has dtype int32, the model expects float32"),
        (
            {"image": np.zeros((4, 3, 16, 16), np.float32), "depth": np.zeros((4, 1, 16, 16), np.float32)},
            "has no field 'x' for model input 'x'",
        ),
    ],
)
def test_wrong_calibration_arrays(
    files: dict[str, Path], tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)  # type: ignore[arg-type]
    assert message in _bad(files, str(files["model"]), "--calib-data", str(bad))


def test_unknown_method(files: dict[str, Path]) -> None:
    out = _bad(files, str(files["model"]), "--method", "int3")
    assert out == (
        "error: method = 'int3' is not allowed; allowed: static, dynamic, fp16, weight-only. "
        "Fix: use one of static, dynamic, fp16, weight-only"
    )


def test_impossible_bit_width(files: dict[str, Path]) -> None:
    out = _bad(files, str(files["model"]), "--weight-bits", "3")
    assert out == (
        "error: weight bits 3 is impossible; allowed: 8, 4, 2, 1 (binary), ternary. "
        "Fix: use --weight-bits 8, 4, 2, 1 or ternary."
    )


def test_console_script_exit_code(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "edgequant"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgequant.cli"]
    res = subprocess.run(
        [*cmd, "quantize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: model file")
    assert not (tmp_path / "o").exists()


def test_data_options_reach_the_source(tmp_path: Path) -> None:
    from tinymodels import mlp

    m = mlp(d_in=8)
    dims = m.graph.input[0].type.tensor_type.shape.dim  # [N, 8] -> [N, 4, 8]: 4-row CSV windows
    dims.insert(1, onnx.TensorShapeProto.Dimension(dim_value=4))
    m.graph.output[0].type.tensor_type.ClearField("shape")
    model = tmp_path / "win.onnx"
    onnx.save_model(m, model)
    csv = tmp_path / "series.csv"
    rows = np.random.default_rng(0).standard_normal((40, 8))
    csv.write_text("\n".join(",".join(f"{v:.4f}" for v in r) for r in rows) + "\n")
    out = tmp_path / "o"
    res = runner.invoke(
        app,
        [
            "quantize",
            str(model),
            "-o",
            str(out),
            "--calib-data",
            str(csv),
            "--data-option",
            "csv_window=4",
            "--data-option",
            "csv_stride=2",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "win_int8_h901777.json").read_text())
    assert report["calibration"]["samples"] == 10  # (40 - 4) // 2 + 1 = 19 windows, 9 held for the check
    res = runner.invoke(
        app,
        [
            "quantize",
            str(model),
            "-o",
            str(tmp_path / "o2"),
            "--calib-data",
            str(csv),
            "--data-option",
            "csv_windw=4",
        ],
    )
    assert res.exit_code == 2 and "csv_windw" in res.output and "csv_window" in res.output
    assert not (tmp_path / "o2").exists()


def test_a_corrupt_file_names_the_real_ways_in(tmp_path: Path) -> None:
    """The hint used to point at an 'edgequant quantize --torch' option that does not exist."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    res = CliRunner().invoke(app, ["quantize", str(bad), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    # named .onnx but not ONNX: the file is damaged, so the fix is about the file, not other formats
    assert "damaged or is not ONNX despite its name: re-export or re-download it" in res.output
    assert "--torch" not in res.output
    assert not (tmp_path / "out").exists()
