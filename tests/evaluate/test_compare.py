"""compare() end to end on a tiny CNN, the recommendation rule, and evaluate() on real models."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tinymodels

from edgequant import pipeline
from edgequant.errors import RecipeError, UnsupportedError
from edgequant.evaluate import compare, evaluate, format_table, resolve_methods
from edgequant.runtime import OrtRuntime

EVAL = tinymodels.images(48, seed=3)
CALIB = tinymodels.images(32, seed=4)


@pytest.fixture(scope="module")
def model_and_labels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    m = tinymodels.conv_net(seed=0)
    path = tmp_path_factory.mktemp("m") / "tiny.onnx"
    onnx.save_model(m, str(path))
    labels = OrtRuntime().run(m, {"x": EVAL})["y"].argmax(axis=1)
    labels[:6] = (labels[:6] + 1) % 10  # float top-1 is then exactly 42/48 = 87.5 %
    return path, labels


def _fail_fp16(real: Any) -> Any:
    def quantize(model: Any, calibration: Any = None, recipe: Any = None, **kw: Any) -> Any:
        if recipe.method == "fp16":
            raise UnsupportedError("fp16 is switched off in this test.", "use another method.")
        return real(model, calibration, recipe, **kw)

    return quantize


def test_compare_all_methods_writes_report_and_shows_failure(
    model_and_labels: tuple[Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, labels = model_and_labels
    monkeypatch.setattr(pipeline, "quantize", _fail_fp16(pipeline.quantize))
    res = compare(
        path, CALIB, {"x": EVAL, "labels": labels}, outdir=tmp_path, max_drop=5.0,
        latency_runs=3, warmup=1, measure_memory=False, layer_samples=4, top_k=2,
    )  # fmt: skip
    names = ["float", "dynamic-int8", "fp16", "int8-static-per-tensor", "int8-static", "weight-only-int8",
             "weight-only-int4", "w4a8", "w8a16", "accurate"]  # fmt: skip
    assert [m.method for m in res.methods] == names
    fp16 = res.method("fp16")
    assert fp16.status == "failed" and fp16.error_type == "UnsupportedError"
    assert fp16.error == "fp16 is switched off in this test. Fix: use another method."
    ok = [m for m in res.methods if m.ok]
    assert len(ok) == 9, [(m.method, m.error) for m in res.methods if not m.ok]
    assert res.method("float").score == pytest.approx(87.5) and res.method("float").drop == 0.0
    for m in ok:
        assert (tmp_path / m.model_file).is_file()
        assert m.latency is not None and m.latency["median_ms"] > 0 and m.file_bytes and m.packed_bytes
    int8 = res.method("int8-static")
    assert int8.plan_file and (tmp_path / int8.plan_file).is_file()
    # 546 float32 parameters = 2184 bytes; int8 weights plus per-channel scales: measured 1140 bytes
    assert int8.packed_bytes < 0.6 * res.method("float").packed_bytes
    assert (res.method("weight-only-int4").packed_bytes or 0) < (
        res.method("weight-only-int8").packed_bytes or 0
    )
    # the rule (default prefer=latency): the fastest method within the limits, FP32 included
    within = [m for m in ok if m.meets_limits]
    assert res.recommended is not None and res.method("float").meets_limits
    fastest = min((m.latency or {})["median_ms"] for m in within)
    assert (res.method(res.recommended).latency or {})["median_ms"] <= fastest * 1.02
    assert res.reason.startswith(f"{res.recommended}: lowest latency")
    assert res.rule.startswith("filter by every limit given (FP32 is a candidate)")
    # report files
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) >= {"model", "task", "limits", "methods", "recommendation", "per_layer", "versions"}
    assert report["recommendation"]["method"] == res.recommended
    assert report["recommendation"]["rule"] == res.rule and report["limits"]["prefer"] == "latency"
    assert f"Rule: {res.rule}." in (tmp_path / "report.md").read_text()
    assert report["per_layer"]["method"] == res.per_layer_method and report["per_layer"]["tensors"]
    assert len(report["per_layer"]["isolated"]) == 2
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["method"] for r in rows] == names and rows[2]["status"] == "failed"
    html = (tmp_path / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "src=" not in html
    assert (tmp_path / "report.md").read_text().count("| fp16 | failed |") == 1
    table = format_table(res)
    assert table.row_count == 10


def test_compare_none_meets_the_limits(model_and_labels: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path = model_and_labels[0]
    res = compare(
        path, CALIB, {"x": EVAL}, outdir=tmp_path, methods="float,int8-static,fp16", max_size_mb=0.001,
        latency_runs=2, warmup=0, measure_memory=False, top_k=0, report=False,
    )  # fmt: skip
    assert res.recommended is None and not res.labeled
    smallest = min((m for m in res.methods if m.ok), key=lambda m: m.file_bytes or 0).method
    assert res.reason.startswith(f"no method meets the limits (max_size_mb 0.001); closest: {smallest}")
    int8 = res.method("int8-static")
    size = (int8.file_bytes or 0) / 2**20
    assert int8.limit_failures == [f"size {size:.4g} MB > 0.001 MB (by {size - 0.001:.4g} MB)"]
    assert f"int8-static: size {size:.4g} MB" in res.reason and "fp16: size" in res.reason
    assert res.closest == smallest  # the smallest file misses the size limit by the least
    assert res.primary == "top1_agreement" and res.method("float").score == 100.0
    assert not (tmp_path / "report.json").exists()


def test_resolve_methods() -> None:
    assert resolve_methods("fp16, float") == ["float", "fp16"]
    assert len(resolve_methods("all")) == 10
    with pytest.raises(RecipeError, match=r"unknown method\(s\) \['int8'\].*did you mean 'int8-static'"):
        resolve_methods("int8")


def test_evaluate_api_on_a_real_quantized_model(model_and_labels: tuple[Path, np.ndarray]) -> None:
    path, labels = model_and_labels
    q = pipeline.quantize(path, CALIB, method="static")
    res = evaluate(path, q.model, {"x": EVAL}, task="classification", labels=labels)
    assert res.labeled and res.float_metrics["top1"] == pytest.approx(42 / 48)
    assert res.agreement["sqnr_db"] > 37.0  # int8 per-channel on a tiny CNN: measured 39.0 dB
    assert res.agreement["top1_agreement"] >= 47 / 48  # measured 48 / 48
    assert res.drop == pytest.approx(100 * (res.float_metrics["top1"] - res.quant_metrics["top1"]))
    same = evaluate(path, path, {"x": EVAL}, task="embedding")
    assert same.agreement["cosine"] == pytest.approx(1.0) and same.drop == 0.0


def test_evaluate_sequence_model_with_tnc_output() -> None:
    from onnx import TensorProto as T
    from onnx import helper as h

    def model(noise: float) -> onnx.ModelProto:
        nodes = [h.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2])]  # [N,T,C] -> [T,N,C]
        inits = [onnx.numpy_helper.from_array(np.array(noise, np.float32), "k")]
        nodes.append(h.make_node("Add", ["t", "k"], ["y"]))
        g = h.make_graph(
            nodes, "seq", [h.make_tensor_value_info("x", T.FLOAT, ["n", 6, 4])],
            [h.make_tensor_value_info("y", T.FLOAT, [6, "n", 4])], inits,
        )  # fmt: skip
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
        m.ir_version = 8
        return m

    frames = np.eye(4, dtype=np.float32)[[[1, 1, 0, 2, 2, 3], [3, 0, 3, 0, 0, 1]]]  # decodes [1,2,3], [3,3,1]
    labels = np.array([[1, 2, 3], [3, 1, -1]])  # second reference [3, 1]: one insertion in the decoding
    res = evaluate(
        model(0.0), model(0.5), {"x": frames}, task="sequence", labels=labels, layout="tnc", batch_size=1
    )
    assert res.float_metrics["cer"] == pytest.approx(1 / 5)
    assert res.quant_metrics["cer"] == pytest.approx(1 / 5)  # a constant shift leaves the argmax alone
    assert res.agreement["cer_vs_float"] == 0.0 and res.drop == pytest.approx(0.0)
    assert res.agreement["sqnr_db"] < 10.0
