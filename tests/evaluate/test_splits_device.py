"""evaluate/compare read quantize's data options: a metadata CSV's train rows calibrate, its val/test
rows evaluate (--eval-split), leakage is refused; --device cuda without CUDA is refused (exit 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
import tinymodels
import typer
from typer.testing import CliRunner

from edgequant import pipeline
from edgequant.commands import compare as compare_cmd
from edgequant.commands import evaluate as evaluate_cmd
from edgequant.errors import DataError, RecipeError
from edgequant.evaluate import compare, leakage
from edgequant.runtime import OrtRuntime

SPLITS = ["train"] * 20 + ["val"] * 6 + ["test"] * 8


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("splits")
    m = tinymodels.conv_net(seed=2)
    onnx.save_model(m, str(d / "m.onnx"))
    x = tinymodels.images(len(SPLITS), seed=9)
    y = OrtRuntime().run(m, {"x": x})["y"].argmax(axis=1)
    y[20] = (y[20] + 1) % 10  # one wrong label among the 6 val rows: float top-1 = 5/6 there
    with h5py.File(d / "d.h5", "w") as f:
        f["x"], f["labels"] = x, y
    with open(d / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "split"])
        w.writerows([i, s] for i, s in enumerate(SPLITS))
    q = pipeline.quantize(
        d / "m.onnx", d / "d.h5", method="static", data_options={"metadata_csv": str(d / "meta.csv")}
    )
    saved = q.save(d / "q")
    return {"dir": d, "model": d / "m.onnx", "h5": d / "d.h5", "meta": d / "meta.csv", "quant": saved.model}


def _app() -> typer.Typer:
    app = typer.Typer()
    evaluate_cmd.register(app)
    compare_cmd.register(app)
    return app


@pytest.mark.parametrize(("split", "n", "top1"), [("val", 6, 5 / 6), ("test", 8, 1.0)])
def test_evaluate_reads_the_named_split(
    data: dict[str, Path], tmp_path: Path, split: str, n: int, top1: float
) -> None:
    out = tmp_path / "e.json"
    res = CliRunner().invoke(
        _app(),
        ["evaluate", str(data["model"]), str(data["quant"]), "--data", str(data["h5"]), "--data-option",
         f"metadata_csv={data['meta']}", "--eval-split", split, "-o", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["samples"] == n and d["float"]["top1"] == pytest.approx(top1)
    assert f"split = {split}" in d["data"]


def test_evaluate_unknown_split_lists_the_ones_present(data: dict[str, Path]) -> None:
    res = CliRunner().invoke(
        _app(),
        ["evaluate", str(data["model"]), str(data["quant"]), "--data", str(data["h5"]), "--data-option",
         f"metadata_csv={data['meta']}", "--eval-split", "holdout"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "no row with split = 'holdout' (values found: ['test', 'train', 'val'])" in res.stderr
    res = CliRunner().invoke(
        _app(),
        [
            "evaluate",
            str(data["model"]),
            str(data["quant"]),
            "--data",
            str(data["h5"]),
            "--eval-split",
            "val",
        ],
    )
    assert res.exit_code == 2 and "--eval-split val needs a metadata CSV" in res.stderr


def test_compare_calibrates_on_train_and_evaluates_on_test(data: dict[str, Path], tmp_path: Path) -> None:
    opts = {"metadata_csv": str(data["meta"])}
    res = compare(
        data["model"], data["h5"], data["h5"], methods="float,int8-static", outdir=tmp_path, data_options=opts,
        eval_split="test", latency_runs=2, warmup=0, measure_memory=False, top_k=0, report=False,
    )  # fmt: skip
    assert res.samples == 8 and res.method("float").score == pytest.approx(100.0)
    assert (
        res.settings["leakage_check"]
        == "no overlap between 8 evaluation and 20 calibration samples (content hashes)"
    )
    with pytest.raises(RecipeError, match="calib_type and eval_type are both 'train'"):
        compare(data["model"], data["h5"], data["h5"], methods="float", outdir=tmp_path / "x",
                data_options=opts, eval_split="train", report=False)  # fmt: skip


def test_compare_refuses_leakage(data: dict[str, Path], tmp_path: Path) -> None:
    # one file for both: split (seeded, 20 % evaluation = 7 of 34), never evaluated in-sample
    res = compare(data["model"], data["h5"], data["h5"], methods="float,dynamic-int8", outdir=tmp_path,
                  latency_runs=1, warmup=0, measure_memory=False, top_k=0, report=False)  # fmt: skip
    assert res.samples == 7
    assert res.settings["leakage_check"] == (
        "one dataset split in two (seed 0, 20 % evaluation): no overlap between 7 evaluation and 27 calibration "
        "samples (content hashes)"
    )
    assert "evaluation part of a seeded split" in res.settings["eval_data"]
    with pytest.raises(DataError, match=r"are the same file .* in-sample"):
        leakage.check_no_leakage(data["h5"], data["h5"], [], [], None, 8)
    x = tinymodels.images(12, seed=3)
    ev = {"x": np.concatenate([tinymodels.images(4, seed=4), x[5:7]])}  # two calibration samples reused
    with pytest.raises(DataError, match=r"2 of the 6 evaluation samples also appear among the 12 calibration samples "
                                        r"\(first: evaluation sample 4\)"):  # fmt: skip
        compare(data["model"], x, ev, methods="float,int8-static", outdir=tmp_path, report=False)


def test_device_cuda_without_cuda_is_refused(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgequant.runtime import device

    monkeypatch.setattr(device, "available_providers", lambda: ["CPUExecutionProvider"])
    for cmd in (
        [
            "compare",
            str(data["model"]),
            "--eval-data",
            str(data["h5"]),
            "--device",
            "cuda",
            "-o",
            str(tmp_path / "c"),
        ],
        ["evaluate", str(data["model"]), str(data["quant"]), "--data", str(data["h5"]), "--gpu-number", "1"],
    ):
        res = CliRunner().invoke(_app(), cmd)
        assert res.exit_code == 2, res.output
        assert "needs ONNX Runtime's CUDAExecutionProvider" in res.stderr
        assert "installed providers: CPUExecutionProvider" in res.stderr and "onnxruntime-gpu" in res.stderr
    assert not (tmp_path / "c").exists()


def test_quantize_device_refusal_and_provider_recorded(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgequant.cli import app
    from edgequant.runtime import device

    res = CliRunner().invoke(app, ["quantize", str(data["model"]), "-o", str(tmp_path / "q"), "--method", "dynamic",
                                   "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    reports = [
        json.loads(p.read_text()) for p in (tmp_path / "q").glob("*.json") if not p.name.endswith("plan.json")
    ]
    assert [r["providers"] for r in reports] == [["CPUExecutionProvider"]]
    monkeypatch.setattr(device, "available_providers", lambda: ["CPUExecutionProvider"])
    res = CliRunner().invoke(
        app, ["quantize", str(data["model"]), "-o", str(tmp_path / "g"), "--device", "cuda:0"]
    )
    assert res.exit_code == 2 and "installed providers: CPUExecutionProvider" in res.stderr
    assert not (tmp_path / "g").exists()


def test_evaluate_and_compare_take_a_recipe_s_data_options(data: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: fp16\ndata_options:\n  metadata_csv: {data['meta']}\n  eval_type: val\n")
    out = tmp_path / "e.json"
    args = [
        "evaluate",
        str(data["model"]),
        str(data["quant"]),
        "--data",
        str(data["h5"]),
        "--recipe",
        str(recipe),
    ]
    res = CliRunner().invoke(_app(), [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["samples"] == 6  # the recipe's metadata CSV, its val rows
    assert "evaluate applies only its data_options, preprocess; not method" in res.stderr
    # a --data-option flag wins over the recipe's key
    res = CliRunner().invoke(
        _app(), [*args, "--data-option", "eval_type=test", "-o", str(out), "--overwrite"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["samples"] == 8
    res = CliRunner().invoke(
        _app(),
        ["compare", str(data["model"]), "--calib-data", str(data["h5"]), "--eval-data", str(data["h5"]),
         "--recipe", str(recipe), "--eval-split", "test", "--methods", "float,int8-static", "--runs", "2",
         "--no-memory", "-o", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "compare applies only its data_options, target, allow_synthetic; not method" in res.stderr
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert report["samples"] == 8 and report["settings"]["data_options"]["metadata_csv"] == str(data["meta"])
    assert report["settings"]["leakage_check"].startswith(
        "no overlap between 8 evaluation and 20 calibration"
    )
