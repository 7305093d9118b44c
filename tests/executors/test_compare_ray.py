"""compare and the per-layer analysis on Ray give the local results; without Ray, one line naming the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import ray_helpers
import tinymodels
from typer.testing import CliRunner

from edgequant import pipeline
from edgequant.cli import app
from edgequant.errors import DependencyError, RecipeError
from edgequant.evaluate import compare, per_layer_error
from edgequant.executors import LocalExecutor, create, using
from edgequant.executors.ray import RayExecutor, require_ray

METHODS = "float,int8-static,weight-only-int4"


def test_compare_on_ray_equals_local(tmp_path: Path, ray_executor: RayExecutor) -> None:
    model, calib, ev = ray_helpers.write_inputs(tmp_path / "in")
    kw = {
        "methods": METHODS,
        "latency_runs": 2,
        "warmup": 1,
        "measure_memory": False,
        "top_k": 3,
        "prefer": "size",
    }  # latency, a measured figure, would decide the recommendation and so the analysed method
    here = compare(model, str(calib), str(ev), outdir=tmp_path / "local", executor=LocalExecutor(), **kw)
    there = compare(model, str(calib), str(ev), outdir=tmp_path / "ray", executor=ray_executor, **kw)
    assert [ray_helpers.untimed(m.to_dict()) for m in there.methods] == [
        ray_helpers.untimed(m.to_dict()) for m in here.methods
    ]
    assert all(m.ok for m in there.methods), [m.error for m in there.methods]
    assert there.recommended == here.recommended and there.per_layer_method == here.per_layer_method
    assert there.per_layer == here.per_layer and there.per_layer is not None and there.per_layer["isolated"]
    for m in there.methods:  # the files came back from the workers, byte for byte
        assert (tmp_path / "ray" / m.model_file).read_bytes() == (
            tmp_path / "local" / m.model_file
        ).read_bytes()
    data = np.load(ev)
    q = there.method("int8-static")
    assert q.score == pytest.approx(
        ray_helpers.top1(tmp_path / "ray" / q.model_file, data["x"], data["labels"])
    )


def test_isolated_node_runs_on_ray_equal_local(ray_executor: RayExecutor) -> None:
    m = tinymodels.conv_net(seed=1)
    x = tinymodels.images(8, seed=5)
    q = pipeline.quantize(m, x, "int8-static").model
    samples = [{"x": x[:4]}, {"x": x[4:]}]
    local = per_layer_error(m, q, samples, top_k=10)
    with using(ray_executor):
        remote = per_layer_error(m, q, samples, top_k=10)
    assert len(local.isolated) >= 3
    assert remote.to_dict() == local.to_dict()


def test_target_sqnr_search_on_ray_equals_local(ray_executor: RayExecutor) -> None:
    m = tinymodels.conv_net(seed=2)
    x = tinymodels.images(16, seed=6)
    here = pipeline.quantize(m, x, "int8-static", target_sqnr_db=45.0, max_float_nodes=3)
    with using(ray_executor):
        there = pipeline.quantize(m, x, "int8-static", target_sqnr_db=45.0, max_float_nodes=3)
    assert there.plan.to_dict() == here.plan.to_dict()
    assert there.model.SerializeToString() == here.model.SerializeToString()
    timed = ("seconds",)
    sens = {k: v for k, v in there.report["sensitivity"].items() if k not in timed}
    assert sens == {k: v for k, v in here.report["sensitivity"].items() if k not in timed}
    assert sens["met"] and sens["sqnr_after_db"] > sens["sqnr_before_db"]


def test_without_ray_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ModuleNotFoundError
    with pytest.raises(DependencyError, match=r"pip install 'edgequant\[ray\]'"):
        require_ray()
    model, calib, ev = ray_helpers.write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "sweep",
            str(model),
            "--eval-data",
            str(ev),
            "--calib-data",
            str(calib),
            "-o",
            str(out),
            "--executor",
            "ray",
        ],
    )
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'edgequant[ray]'" in lines[0], res.output
    assert not out.exists()


def test_executor_options_are_refused_where_they_would_be_ignored() -> None:
    with pytest.raises(RecipeError, match="--ray-address"):
        create("local", address="ray://head:10001")
    with pytest.raises(RecipeError, match="--ray-cpus"):
        create("local", num_cpus=4)
    with pytest.raises(RecipeError, match="unknown executor"):
        create("dask")


def test_sweep_cli_resume_says_so(tmp_path: Path) -> None:
    model, calib, ev = ray_helpers.write_inputs(tmp_path / "in")
    args = ["sweep", str(model), "--eval-data", str(ev), "--calib-data", str(calib), "-o", str(tmp_path / "o"),
            "--methods", "float,int8-static", "--bits", "8", "--runs", "2"]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 cells: 2 ran, 0 skipped" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "2 cells: 0 ran, 2 skipped (finished in an earlier run" in again.output
    assert onnx.load(str(tmp_path / "o" / "tiny" / "int8-static_cpu_w8" / "tiny_int8.onnx")).graph.node
