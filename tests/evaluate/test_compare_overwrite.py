"""compare into a folder that holds an earlier run: refused without --overwrite (exit 2, before any work,
nothing written); with it, the earlier run's files are removed and nothing else is."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tinymodels
import typer
from typer.testing import CliRunner

from edgequant.commands import compare as compare_cmd
from edgequant.errors import ExportError
from edgequant.evaluate import compare
from edgequant.runtime import OrtRuntime

compare_mod = importlib.import_module("edgequant.evaluate.compare")
FAST = ["--runs", "2", "--no-memory", "--layer-samples", "2", "--top-k", "1", "--max-drop", "50"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ow")
    m = tinymodels.conv_net(seed=2)
    path = d / "tiny.onnx"
    onnx.save_model(m, str(path))
    x = tinymodels.images(16, seed=7)
    np.savez(d / "eval.npz", x=x, labels=OrtRuntime().run(m, {"x": x})["y"].argmax(axis=1))
    np.savez(d / "calib.npz", x=tinymodels.images(16, seed=8))
    return {"model": path, "eval": d / "eval.npz", "calib": d / "calib.npz"}


def _run(files: dict[str, Path], out: Path, methods: str, *more: str) -> tuple[int, str]:
    app = typer.Typer()
    compare_cmd.register(app)
    app.command("noop")(lambda: None)  # two commands: typer keeps the command name
    res = CliRunner().invoke(
        app,
        ["compare", str(files["model"]), "--calib-data", str(files["calib"]), "--eval-data", str(files["eval"]),
         "-o", str(out), "--methods", methods, *FAST, *more],
    )  # fmt: skip
    return res.exit_code, res.output


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


def test_second_compare_refused_without_overwrite_before_any_work(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    code, text = _run(files, out, "float,int8-static")
    assert code == 0, text
    before = _snapshot(out)
    assert {
        "tiny_float.onnx",
        "tiny_int8.onnx",
        "tiny_int8.json",
        "tiny_int8.plan.json",
        "report.json",
    } <= set(before)

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("compare started work on a refused folder")

    monkeypatch.setattr(compare_mod, "prepare_job", no_work)
    code, text = _run(files, out, "float")
    assert code == 2, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith(f"error: '{out / 'tiny_float.onnx'}' already exists (and 4 more"), text
    assert "--overwrite" in lines[0], text
    assert _snapshot(out) == before  # nothing written


def test_overwrite_removes_the_earlier_runs_files_only(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    code, text = _run(files, out, "float,int8-static,fp16")
    assert code == 0, text
    first = json.loads((out / "report.json").read_text())
    listed = {f for row in first["methods"] for f in row["files"]}
    assert listed == {"tiny_float.onnx", "tiny_fp16.onnx", "tiny_fp16.json", "tiny_fp16.plan.json",
                      "tiny_int8.onnx", "tiny_int8.json", "tiny_int8.plan.json"}  # fmt: skip
    (out / "mine.txt").write_text("the user's")  # not EdgeQuant's: stays
    outside = tmp_path / "outside.json"
    outside.write_text("outside")
    (out / "tiny_fp16.plan.json").unlink()
    (out / "tiny_fp16.plan.json").symlink_to(outside)  # a listed name that is a link now: not followed

    code, text = _run(files, out, "float", "--overwrite")
    assert code == 0, text
    second = json.loads((out / "report.json").read_text())
    assert [r["method"] for r in second["methods"]] == ["float"]
    left = {p.name for p in out.iterdir()}
    assert left == {"tiny_float.onnx", "report.json", "results.csv", "report.md", "report.html", "mine.txt",
                    "tiny_fp16.plan.json"}, left  # fmt: skip
    assert (out / "tiny_fp16.plan.json").is_symlink() and outside.read_text() == "outside"
    assert (out / "mine.txt").read_text() == "the user's"


def test_api_refuses_without_overwrite_and_keeps_files_outside(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    kw: dict[str, Any] = dict(
        methods="float,dynamic-int8", latency_runs=2, warmup=1, measure_memory=False, layer_samples=2
    )
    compare(files["model"], str(files["calib"]), str(files["eval"]), outdir=out, **kw)
    before = _snapshot(out)
    with pytest.raises(ExportError, match=r"tiny_float\.onnx' already exists.*overwrite=True"):
        compare(files["model"], str(files["calib"]), str(files["eval"]), outdir=out, overwrite=False, **kw)
    assert _snapshot(out) == before
    victim = tmp_path / "victim.onnx"
    victim.write_text("keep")
    report = json.loads((out / "report.json").read_text())
    report["methods"][1]["files"].append("../victim.onnx")  # a hand-edited report: confined to the folder
    report["methods"][1]["files"].append(str(victim))
    (out / "report.json").write_text(json.dumps(report))
    res = compare(
        files["model"], str(files["calib"]), str(files["eval"]), outdir=out, **kw | {"methods": "float"}
    )
    assert [m.method for m in res.methods] == ["float"]
    assert victim.read_text() == "keep"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["tiny_float.onnx", "report.json", "results.csv", "report.md", "report.html"]
    )


def test_every_method_failing_still_renders_the_table(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No method ran: no primary metric is known, and the table once died on it (IndexError)."""
    from edgequant import pipeline
    from edgequant.errors import UnsupportedError

    def off(*a: object, **k: object) -> None:
        raise UnsupportedError("fp16 is switched off in this test.", "use another method.")

    monkeypatch.setattr(pipeline, "quantize", off)
    out = tmp_path / "cmp"
    code, text = _run(files, out, "fp16")
    assert code == 1, text  # no method meets the limits: exit 1 with the table (it was an IndexError)
    assert "switched off" in text and "no method ran" in text and "score = the primary metric" in text, text
    report = json.loads((out / "report.json").read_text())
    assert [(m["method"], m["status"]) for m in report["methods"]] == [("fp16", "failed")]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_symlink_at_an_output_path_is_refused_before_any_work(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: list[str]
) -> None:
    """A link where compare would write is never written through (its target is the user's file)."""
    out = tmp_path / "cmp"
    out.mkdir()
    target = tmp_path / "mine.onnx"
    target.write_bytes(b"the user's")
    (out / "tiny_fp16.onnx").symlink_to(target)

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("compare started work with a symlink at an output path")

    monkeypatch.setattr(compare_mod, "prepare_job", no_work)
    code, text = _run(files, out, "fp16", *overwrite)
    assert code == 2, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is a symbolic link" in lines[0] and "choose another -o" in lines[0], text
    assert target.read_bytes() == b"the user's" and [p.name for p in out.iterdir()] == ["tiny_fp16.onnx"]
