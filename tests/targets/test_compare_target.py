"""``compare --target``: the compliance section reaches report.md and report.html (not only the JSON)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tinymodels import conv_net, images

import edgequant


def test_compare_target_writes_the_compliance_table(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 10, 24)
    res = edgequant.compare(
        conv_net(channels=6), {"x": images(24)}, {"x": images(24, seed=5)}, labels=labels,
        methods="int8-static", target="ti-npu", outdir=tmp_path, latency_runs=3, warmup=1, measure_memory=False,
    )  # fmt: skip
    assert res is not None
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    # conv_net(channels=6): 6 output channels on the first conv -> the ti-npu alignment rule, with its fix
    fix = "pad output channels 6 -&gt; 8 with zero filters (exact; --fix)"
    assert "## Target compliance" in md and fix.replace("-&gt;", "->") in md
    assert "<h2>Target compliance</h2>" in html and fix in html


def test_target_on_the_cli_compare_and_in_a_recipe_file(tmp_path: Path) -> None:
    import json

    import onnx
    from typer.testing import CliRunner

    from edgequant.cli import app

    model, calib, ev = tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "e.npz"
    onnx.save(conv_net(channels=6), model)
    np.savez(calib, x=images(24))
    np.savez(ev, x=images(24, seed=5), labels=np.random.default_rng(0).integers(0, 10, 24))
    res = CliRunner().invoke(app, [
        "compare", str(model), "--calib-data", str(calib), "--eval-data", str(ev), "--methods", "int8-static",
        "--target", "vitis-dpu", "-o", str(tmp_path / "cmp"),
    ])  # fmt: skip
    assert res.exit_code in (0, 1), res.output  # 1: no method within the default limits is still a report
    data = json.loads((tmp_path / "cmp" / "report.json").read_text())
    comp = next(m["compliance"] for m in data["methods"] if m["method"] == "int8-static")
    assert comp["target"] == "vitis-dpu"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("target: cmsis-nn\n")
    res = CliRunner().invoke(app, ["quantize", str(model), "--calib-data", str(calib), "--recipe", str(recipe),
                                   "-o", str(tmp_path / "q")])  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "q" / "m_int8_cmsis-nn.json").read_text())
    assert rep["compliance"]["target"] == "cmsis-nn" and rep["recipe"]["target"] == "cmsis-nn"
