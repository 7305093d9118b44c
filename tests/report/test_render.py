"""Report rendering: strict JSON, CSV rows, Markdown, self-contained escaped HTML with inline SVG."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from edgequant.report import render_csv, render_html, render_json, render_markdown, write_compare_report
from edgequant.report.svg import hbars, nice_ticks, scatter


def _method(name: str, status: str = "ok", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "method": name, "status": status, "tag": name, "error": "", "error_type": "", "model_file": f"m_{name}.onnx",
        "plan_file": "", "evaluation": {}, "score": 90.0, "drop": 1.5, "drop_unit": "pp",
        "latency": {"median_ms": 2.0, "p90_ms": 2.5, "throughput": 500.0}, "memory": {"peak_rss_delta_mb": 3.0},
        "file_bytes": 2 * 2**20, "packed_bytes": 2**20, "quantize_seconds": 0.1, "limit_failures": [],
        "meets_limits": True,
    }  # fmt: skip
    base.update(kw)
    return base


def _data() -> dict[str, Any]:
    return {
        "kind": "compare", "model": "<evil & model>.onnx", "task": "classification", "outdir": "x",
        "samples": 10, "labeled": True, "primary_metric": "top1",
        "limits": {"max_drop": 1.0, "max_latency_ms": None, "max_size_mb": None},
        "settings": {"threads": 1}, "recommendation": {"method": "int8", "reason": "int8: smallest <b>"},
        "methods": [
            _method("float", drop=0.0, score=91.5),
            _method("int8", drop=0.5, file_bytes=2**20),
            _method("w4a8", status="failed", error="UnsupportedError: no <int4> here", latency=None,
                    memory=None, file_bytes=None, packed_bytes=None, score=None, drop=None, meets_limits=False),
        ],
        "per_layer": {
            "method": "int8", "samples": 4, "output": "y",
            "tensors": [{"tensor": "conv<1>", "quantized": "conv<1>_dq", "kind": "activation", "consumers": ["c"],
                         "sqnr_db": 12.5, "mse": 0.01},
                        {"tensor": "w", "quantized": "w_dq", "kind": "weight", "consumers": ["c"],
                         "sqnr_db": math.inf, "mse": 0.0}],
            "isolated": [{"node": "c", "op_type": "Conv", "quantized_inputs": ["w_dq"], "input_sqnr_db": 12.5,
                          "output_sqnr_db": 20.0, "output_mse": 0.1}],
            "unmatched": [],
        },
        "versions": {"onnx": "1.0"},
    }  # fmt: skip


def test_json_is_strict_and_maps_infinity() -> None:
    text = render_json(_data())
    d = json.loads(text)  # strict parser: would fail on Infinity/NaN tokens
    assert "Infinity" not in text
    assert d["per_layer"]["tensors"][1]["sqnr_db"] == "inf"
    assert json.loads(render_json({"a": math.nan}))["a"] is None


def test_csv_rows() -> None:
    from edgequant.report import CSV_COLUMNS, compare_rows

    rows = list(csv.DictReader(io.StringIO(render_csv(compare_rows(_data()), CSV_COLUMNS))))
    assert [r["method"] for r in rows] == ["float", "int8", "w4a8"]
    assert rows[1]["size_mb"] == "1.0" and rows[1]["drop"] == "0.5"
    assert rows[2]["status"] == "failed" and rows[2]["error"].startswith("UnsupportedError")
    assert rows[2]["median_ms"] == ""


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    html = render_html(_data())
    for bad in ("http://", "https://", "src=", "<script", "@import", "url("):
        assert bad not in html, bad
    assert "&lt;evil &amp; model&gt;.onnx" in html and "<evil" not in html
    assert "conv&lt;1&gt;" in html and "no &lt;int4&gt; here" in html
    assert html.count("<svg") == 3  # accuracy vs size, accuracy vs latency, per-layer SQNR
    assert "Accuracy vs size" in html and "Accuracy vs latency" in html and "Per-layer SQNR" in html
    files = write_compare_report(tmp_path, _data())
    assert sorted(p.name for p in files.values()) == [
        "report.html",
        "report.json",
        "report.md",
        "results.csv",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_markdown_lists_recommendation_and_failures() -> None:
    md = render_markdown(_data())
    assert "**int8**: smallest <b>" in md
    assert "| w4a8 | failed |" in md and "UnsupportedError: no <int4> here" in md
    assert "| conv<1> | activation | 12.50 |" in md


def test_svg_helpers() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(3.0, 97.0)[0] <= 3.0 and nice_ticks(3.0, 97.0)[-1] >= 97.0
    s = scatter([("a", 1.0, 2.0), ("b", math.nan, 1.0)], "T", "x", "y")
    assert s.count("<circle") == 1 and "not shown: b" in s
    b = hbars([("t1", 10.0), ("t2", math.inf)], "B", "dB")
    assert b.count("<rect") == 2 and ">inf<" in b
