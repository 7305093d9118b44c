"""The evaluate and compare commands through typer, with real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tinymodels
import typer
from typer.testing import CliRunner

from edgequant import pipeline
from edgequant.commands import compare as compare_cmd
from edgequant.commands import evaluate as evaluate_cmd
from edgequant.runtime import OrtRuntime


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    m = tinymodels.conv_net(seed=1)
    fpath = d / "tiny.onnx"
    onnx.save_model(m, str(fpath))
    x = tinymodels.images(24, seed=5)
    labels = OrtRuntime().run(m, {"x": x})["y"].argmax(axis=1)
    np.savez(d / "eval.npz", x=x, labels=labels)
    np.savez(d / "calib.npz", x=tinymodels.images(16, seed=6))
    saved = pipeline.quantize(fpath, d / "calib.npz", method="static").save(d / "q")
    return {"float": fpath, "quant": saved.model, "eval": d / "eval.npz", "calib": d / "calib.npz", "dir": d}


def _app() -> typer.Typer:
    app = typer.Typer()
    evaluate_cmd.register(app)
    compare_cmd.register(app)
    return app


def test_evaluate_writes_json_and_csv(files: dict[str, Path], tmp_path: Path) -> None:
    out_json, out_csv = tmp_path / "r" / "eval.json", tmp_path / "eval.csv"
    res = CliRunner().invoke(
        _app(),
        ["evaluate", str(files["float"]), str(files["quant"]), "--data", str(files["eval"]), "-o", str(out_json),
         "--output-csv", str(out_csv), "--per-layer", "--top-k", "1", "--latency", "--runs", "3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(out_json.read_text())
    assert d["labeled"] and d["float"]["top1"] == 1.0 and d["primary"]["metric"] == "top1"
    assert d["sizes"]["quantized"]["plan_used"] is True  # <stem>.plan.json beside the model was read
    assert d["per_layer"]["tensors"] and len(d["per_layer"]["isolated"]) == 1
    assert d["latency"]["quantized"]["runs"] == 3
    rows = {r["metric"]: r for r in csv.DictReader(out_csv.open())}
    assert rows["top1"]["float"] == "1.0" and "top5" in rows and "agreement.sqnr_db" in rows
    assert "latency.median_ms" in rows and "size.packed_bytes" in rows


def test_evaluate_errors_are_one_line_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _app(), ["evaluate", str(tmp_path / "nope.onnx"), str(files["quant"]), "--data", str(files["eval"])]
    )
    assert res.exit_code == 2
    assert (
        res.stderr.strip()
        == f"error: model file '{tmp_path / 'nope.onnx'}' does not exist. Fix: check the path."
    )
    res = CliRunner().invoke(
        _app(),
        ["evaluate", str(files["float"]), str(files["quant"]), "--data", str(files["eval"]), "--task", "nlp"],
    )
    assert res.exit_code == 2 and res.stderr.startswith("error: unknown task 'nlp'")


def test_compare_command(files: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _app(),
        ["compare", str(files["float"]), "--calib-data", str(files["calib"]), "--eval-data", str(files["eval"]),
         "--methods", "float,int8-static,weight-only-int8", "--no-memory", "--runs", "2", "-o", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "recommended: " in res.stdout  # FP32 is a candidate: the default max_drop 1 is always met
    assert res.stdout.count("rule: filter by every limit given") == 1  # once, under the table
    assert {"report.json", "results.csv", "report.md", "report.html", "tiny_int8.onnx"} <= {
        p.name for p in tmp_path.iterdir()
    }
    res = CliRunner().invoke(
        _app(), ["compare", str(files["float"]), "--eval-data", str(files["eval"]), "--methods", "bogus",
                 "-o", str(tmp_path / "x")],
    )  # fmt: skip
    assert res.exit_code == 2 and res.stderr.startswith("error: unknown method(s) ['bogus']")


def test_compare_limits_nothing_meets_exit_1_with_table_and_closest(
    files: dict[str, Path], tmp_path: Path
) -> None:
    res = CliRunner().invoke(
        _app(),
        ["compare", str(files["float"]), "--calib-data", str(files["calib"]), "--eval-data", str(files["eval"]),
         "--methods", "float,int8-static", "--no-memory", "--runs", "2", "--max-size-mb", "0.0001",
         "--prefer", "size", "-o", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    flat = " ".join(res.stdout.split())
    rep = json.loads((tmp_path / "report.json").read_text())
    smallest = min(rep["methods"], key=lambda m: m["file_bytes"])[
        "method"
    ]  # least excess over the size limit
    assert f"no method meets the limits (max_drop 1, max_size_mb 0.0001); closest: {smallest}" in flat
    assert rep["recommendation"]["closest"] == smallest
    assert all(m["limit_failures"][0].startswith("size ") for m in rep["methods"])
    res = CliRunner().invoke(
        _app(), ["compare", str(files["float"]), "--eval-data", str(files["eval"]), "--prefer", "speed",
                 "-o", str(tmp_path / "y")],
    )  # fmt: skip
    assert res.exit_code == 2 and "prefer 'speed' is not one of" in res.stderr
    assert not (tmp_path / "y").exists()


def test_every_limit_flag_reaches_the_rule(files: dict[str, Path], tmp_path: Path) -> None:
    # every limit generous except the energy one, which no method can meet: each miss names energy only
    res = CliRunner().invoke(
        _app(),
        ["compare", str(files["float"]), "--calib-data", str(files["calib"]), "--eval-data", str(files["eval"]),
         "--methods", "float,fp16", "--no-memory", "--runs", "2", "--max-drop", "50", "--max-drop-rel", "0.9",
         "--max-latency-ms", "100000", "--max-size-mb", "1000", "--max-energy-mj", "1e-12", "--prefer", "energy",
         "-o", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["limits"] == {"max_drop": 50.0, "max_drop_rel": 0.9, "max_latency_ms": 100000.0,
                             "max_size_mb": 1000.0, "max_energy_mj": 1e-12, "prefer": "energy"}  # fmt: skip
    for m in rep["methods"]:
        assert [f.split(" ")[0] for f in m["limit_failures"]] == ["energy"], m["limit_failures"]
    # fp16 halves the bytes and prices MACs lower (Horowitz): the closest to an energy limit
    assert rep["recommendation"]["closest"] == "fp16"


def _evaluate(files: dict[str, Path], *more: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        _app(), ["evaluate", str(files["float"]), str(files["quant"]), "--data", str(files["eval"]), *more]
    )
    return res.exit_code, res.output


@pytest.mark.parametrize("flag,path", [("-o", "/proc/x.json"), ("--output-csv", "/sys/x.csv")])
def test_evaluate_refuses_an_unwritable_output_before_the_work(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, flag: str, path: str
) -> None:
    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("evaluate ran with an output it cannot write")

    monkeypatch.setattr(evaluate_cmd, "run_evaluate", no_work)
    code, text = _evaluate(files, flag, path)
    assert code == 2, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "virtual file system" in lines[0] and "Traceback" not in text, text


def test_evaluate_refuses_an_existing_output_without_overwrite(
    files: dict[str, Path], tmp_path: Path
) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text("the user's")
    code, text = _evaluate(files, "-o", str(mine))
    assert code == 2 and "already exists" in text and "--overwrite" in text, text
    assert mine.read_text() == "the user's"
    code, text = _evaluate(files, "-o", str(mine), "--overwrite")
    assert code == 0, text
    assert json.loads(mine.read_text())["float"]["top1"] == 1.0  # labels are the float model's own argmax


@pytest.mark.parametrize("case", ["exists", "proc", "directory", "input", "link", "under_a_file"])
def test_output_csv_refusals_name_output_csv(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Each refusal of a bad --output-csv names --output-csv in its fix; before, five said '-o' ('choose an
    -o path ..., e.g. -o out/', 'give a file path (e.g. -o result.json)', ...) and one 'output file'."""

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("evaluate ran with an output it cannot write")

    monkeypatch.setattr(evaluate_cmd, "run_evaluate", no_work)
    mine = tmp_path / "mine.csv"
    mine.write_text("the user's")
    (tmp_path / "link.csv").symlink_to(mine)
    path = {
        "exists": mine, "proc": Path("/proc/x.csv"), "directory": tmp_path, "input": files["quant"],
        "link": tmp_path / "link.csv", "under_a_file": mine / "x.csv",
    }[case]  # fmt: skip
    code, text = _evaluate(files, "--output-csv", str(path))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, text
    fix = " ".join(text.split()).split("Fix: ", 1)[1]
    assert "--output-csv" in fix and "-o " not in fix and ".onnx" not in fix, text
    assert mine.read_text() == "the user's"
