"""--target tvm end to end: a real TVM library is written, and it runs.

The library is loaded back in the tvm toolchain's own interpreter by a script written here (not by the
code under test) and its outputs are compared with this test's own ONNX Runtime sessions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from toolchain_helpers import RUN_SO, assert_documented, need_toolchain, quantize_to, run_artifact

from edgequant.errors import RecipeError
from edgequant.recipe import Recipe
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db


def conv_matmul_net(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu -> Flatten -> MatMul+Add: the conv + MatMul net the TVM front end must import."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((8 * 6 * 6, 10)) * 0.05).astype(np.float32)
    fb = (rng.standard_normal(10) * 0.1).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("Flatten", ["r"], ["f"], name="flatten"),
        h.make_node("MatMul", ["f", "fc"], ["m"], name="fc"),
        h.make_node("Add", ["m", "fb"], ["y"], name="bias"),
    ]
    g = h.make_graph(
        nodes, "convmm", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 10])],
        [nh.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fb, "fb"))],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_target_tvm_writes_a_library_that_runs(tmp_path: Path) -> None:
    python = need_toolchain("tvm")
    rng = np.random.default_rng(3)
    out = quantize_to(
        "tvm", conv_matmul_net(), rng.standard_normal((64, 3, 8, 8)).astype(np.float32), tmp_path
    )
    model = tmp_path / "m.onnx"
    libs = list(out.glob("*.tvm.so"))
    assert len(libs) == 1 and libs[0].stat().st_size > 10_000
    qdq = next(p for p in out.glob("*.onnx"))
    report = json.loads(qdq.with_suffix(".json").read_text())
    assert report["toolchain"]["toolchain"] == "tvm"
    assert libs[0].name in report["files"]["toolchain_artifacts"]
    assert "float arithmetic" in report["toolchain"]["note"]
    assert report["toolchain"]["sqnr_db_vs_onnxruntime_unfused"] == {"y": None}  # identical: inf dB
    assert_documented(report["toolchain"])  # docs/report.md says null means identical

    # independent run of the written library, against this test's own ORT sessions
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    got = run_artifact(python, RUN_SO, libs[0], x, tmp_path)
    rt = OrtRuntime()
    ort_q = rt.run(onnx.load(str(qdq)), {"x": x})["y"]
    ort_f = rt.run(onnx.load(str(model)), {"x": x})["y"]
    assert got.shape == (4, 10)
    # TVM runs the Q/DQ graph as float math, as ORT does with graph optimisations off (no fused integer
    # kernels, whose requant may round a value the other way): against that, the same numbers
    ort_plain = OrtRuntime(optimize=False).run(onnx.load(str(qdq)), {"x": x})["y"]
    assert sqnr_db(ort_plain, got) >= 60.0
    assert sqnr_db(ort_q, got) >= 28.0  # vs ORT's fused int8 kernels: measured 31.4 dB
    assert sqnr_db(ort_f, got) >= 36.0  # int8 vs float; measured 37.9 dB


def test_tune_budget_is_honoured(tmp_path: Path) -> None:
    # structural, never timed: rounds of max(trials per task = max(8, 16 // 8), 16 / 4) = 8 trials share
    # one database; a 1 ms budget is spent before a round can start (the model's preparation for tuning
    # counts), a 1-hour one never stops the 16 trials
    need_toolchain("tvm")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    reports = []
    for budget in ("0.001", "3600"):
        out = quantize_to(
            "tvm", conv_matmul_net(), x, tmp_path / budget, ("--tune-trials", "16", "--tune-budget-s", budget)
        )
        reports.append(json.loads(next(out.glob("*.onnx")).with_suffix(".json").read_text())["toolchain"])
        assert any(p.name.endswith(".tvm.so") for p in out.iterdir())
    tiny, ample = reports
    assert tiny["tune"]["trials_asked"] == 16 and tiny["tune"]["budget_s"] == 0.001
    assert tiny["tune"]["stopped_by_budget"] is True
    assert tiny["tune"]["trials_started"] == 8 * tiny["tune"]["rounds"] < 16
    if tiny["tune"]["rounds"] == 0:
        assert "budget (0.001 s) was spent before a round" in tiny["note"] and tiny["tune_records"] == 0
    assert ample["tune"] == {**ample["tune"], "trials_asked": 16, "trials_started": 16, "rounds": 2,
                             "budget_s": 3600.0, "stopped_by_budget": False}  # fmt: skip
    assert ample["tune_records"] >= ample["tune_measured"]
    assert_documented(ample)  # docs/report.md's toolchain section names every key, the tune ones too
    assert_documented(ample["tune"])


def test_tune_budget_needs_tuning_trials() -> None:
    with pytest.raises(RecipeError, match=r"tune_budget_s=5\.0 with tune_trials=0"):
        Recipe(target="tvm", tune_budget_s=5.0)
    with pytest.raises(RecipeError, match="seconds > 0"):
        Recipe(target="tvm", tune_trials=8, tune_budget_s=0.0)
    assert Recipe(target="tvm", tune_trials=8, tune_budget_s=30.0).tune_budget_s == 30.0
