"""Render report dicts (``CompareResult.to_dict()``, ``EvalResult.to_dict()``) as JSON, CSV, Markdown.

Formatting only: every number shown here was computed by ``edgequant.evaluate``.  JSON is strict
(RFC 8259 has no infinity): ``inf``/``-inf`` become the strings ``"inf"``/``"-inf"``, NaN becomes
null.  Files are written atomically (temporary file in the same directory, then ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgequant.model.io import write_text_atomic

MB = float(2**20)
CSV_COLUMNS = (
    "method",
    "status",
    "tag",
    "primary_metric",
    "score",
    "drop",
    "drop_unit",
    "median_ms",
    "p90_ms",
    "predicted_ms",
    "throughput",
    "peak_mem_mb",
    "file_bytes",
    "packed_bytes",
    "size_mb",
    "energy_mj_estimate",
    "energy_mj_measured",
    "provider",
    "threads",
    "meets_limits",
    "limit_failures",
    "error",
    "model_file",
    "calibration_data",
)


METHOD_COLUMNS = [
    "method", "status", "score", "drop", "median ms", "p90 ms", "predicted ms (target)", "samples/s", "peak MB", "size MB",
    "packed MB", "energy mJ (estimate)", "energy mJ (RAPL)", "within limits", "notes",
]  # fmt: skip


def method_cells(r: Mapping[str, Any]) -> list[str]:
    """One compare row as the cells of ``METHOD_COLUMNS`` (shared by the Markdown and HTML reports)."""
    packed = r["packed_bytes"] / MB if isinstance(r["packed_bytes"], int) else None
    return [
        r["method"],
        r["status"],
        fmt(r["score"], 2),
        f"{fmt(r['drop'], 2)} {r['drop_unit']}",
        fmt(r["median_ms"]),
        fmt(r["p90_ms"]),
        _sig(r.get("predicted_ms")) if r.get("predicted_ms") is not None else r.get("predicted_note") or "-",
        fmt(r["throughput"], 1),
        fmt(r["peak_mem_mb"], 1),
        fmt(r["size_mb"]),
        fmt(packed),
        _sig(r.get("energy_mj_estimate")),
        _sig(r.get("energy_mj_measured")),
        fmt(r["meets_limits"]),
        ("SYNTHETIC calibration data. " if r.get("calibration_data") == "synthetic" else "")
        + "; ".join(t for t in (r["error"] or r["limit_failures"], r.get("coverage", "")) if t),
    ]


def jsonable(obj: Any) -> Any:
    """A strict-JSON-ready copy: non-finite floats as strings/null, paths and numpy scalars plain."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def render_json(data: Mapping[str, Any]) -> str:
    return json.dumps(jsonable(data), indent=1, allow_nan=False) + "\n"


def fmt(v: Any, digits: int = 3) -> str:
    """A number for tables: fixed decimals, ``inf``, or ``-`` for missing."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


def method_row(m: Mapping[str, Any], primary: str) -> dict[str, Any]:
    """One flat CSV / table row of a compare method entry."""
    lat = m.get("latency") or {}
    mem = m.get("memory") or {}
    size = m.get("file_bytes")
    return {
        "method": m["method"],
        "status": m["status"],
        "tag": m.get("tag", ""),
        "primary_metric": primary,
        "score": m.get("score"),
        "drop": m.get("drop"),
        "drop_unit": m.get("drop_unit", ""),
        "median_ms": lat.get("median_ms"),
        "p90_ms": lat.get("p90_ms"),
        "predicted_ms": (m.get("predicted_latency") or {}).get("ms"),
        "predicted_note": "n/a"
        if (m.get("predicted_latency") or {}).get("note", "").startswith("no prediction: the model")
        else "-",
        "throughput": lat.get("throughput"),
        "peak_mem_mb": mem.get("peak_rss_delta_mb"),
        "file_bytes": size,
        "packed_bytes": m.get("packed_bytes"),
        "size_mb": size / MB if isinstance(size, int) else None,
        "energy_mj_estimate": (m.get("energy") or {}).get("total_mj"),
        "energy_mj_measured": (m.get("energy") or {}).get("measured_mj"),
        "provider": lat.get("provider"),
        "threads": lat.get("threads"),
        "meets_limits": m.get("meets_limits"),
        "limit_failures": "; ".join(m.get("limit_failures") or []),
        "error": m.get("error", ""),
        "model_file": m.get("model_file", ""),
        "calibration_data": m.get("calibration_data", "none"),
        "coverage": m.get("coverage", ""),  # what ran as what; for dynamic: the score depends on the batch
    }


def _sig(v: Any) -> str:
    """An energy in mJ with 3 significant digits (they span 1e-6 .. 1e3)."""
    return f"{v:.3g}" if isinstance(v, float) else fmt(v)


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: jsonable(v) if v is not None else "" for k, v in row.items()})
    return buf.getvalue()


def compare_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [method_row(m, data.get("primary_metric", "")) for m in data["methods"]]


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return out


COMPLIANCE_COLUMNS = ["method", "target", "compliant", "findings", "host CPU", "cannot deploy", "MACs on target %",
                      "params on target %"]  # fmt: skip
FINDING_COLUMNS = ["node", "op", "rule", "found", "required", "consequence", "fix"]


def compliance_tables(data: Mapping[str, Any]) -> tuple[list[list[str]], str, list[list[str]]]:
    """Rows of the per-method compliance summary, and the findings of one method (the recommended one,
    else the first with findings): ``(summary rows, that method, finding rows)``."""
    rows, findings, chosen = [], [], ""
    methods = [m for m in data.get("methods", []) if m.get("compliance")]
    for m in methods:
        c = m["compliance"]
        by = c["findings_by_consequence"]
        rows.append([
            m["method"], c["target"], "yes" if c["compliant"] else "no", str(len(c["findings"])),
            str(by.get("runs on host CPU", 0)), str(by.get("cannot deploy", 0)),
            f"{100 * c['mac_share_on_target']:.1f}", f"{100 * c['param_share_on_target']:.1f}",
        ])  # fmt: skip
    rec = (data.get("recommendation") or {}).get("method")
    pick = next((m for m in methods if m["method"] == rec and m["compliance"]["findings"]), None)
    pick = pick or next((m for m in methods if m["compliance"]["findings"]), None)
    if pick is not None:
        chosen = pick["method"]
        findings = [[str(f[k]) for k in FINDING_COLUMNS] for f in pick["compliance"]["findings"]]
    return rows, chosen, findings


def _md_compliance(data: Mapping[str, Any]) -> list[str]:
    rows, chosen, findings = compliance_tables(data)
    if not rows:
        return []
    lines = ["", "## Target compliance", "", *_md_table(COMPLIANCE_COLUMNS, rows)]
    if findings:
        lines += ["", f"Findings of {_md_escape(chosen)}:", "", *_md_table(FINDING_COLUMNS, findings)]
    return lines


def render_markdown(data: Mapping[str, Any]) -> str:
    """Markdown report of a compare result dict."""
    rec = data["recommendation"]
    lines = [
        f"# EdgeQuant comparison: {_md_escape(data['model'])}",
        "",
        f"Task: **{data['task']}**, {data['samples']} evaluation samples "
        f"({'labeled' if data['labeled'] else 'unlabeled: agreement with the float model'}); "
        f"primary metric: `{data['primary_metric']}`.",
        "",
        "## Recommendation",
        "",
        f"**{rec['method']}**: {_md_escape(str(rec['reason']).removeprefix(rec['method'] + ': '))}"
        if rec["method"]
        else _md_escape(rec["reason"]),
        "",
        "Limits: " + ", ".join(f"{k} = {fmt(v)}" for k, v in data["limits"].items()),
        "",
        f"Rule: {_md_escape(rec.get('rule') or '')}.",
        "",
        "## Methods",
        "",
    ]
    lines += _md_table(METHOD_COLUMNS, [method_cells(r) for r in compare_rows(data)])
    if data.get("settings", {}).get("latency_prediction"):
        lines += [
            "",
            f"Predicted ms (a prediction, not a measurement): {_md_escape(data['settings']['latency_prediction'])}",
        ]
    lines += _md_compliance(data)
    layer = data.get("per_layer")
    if layer:
        lines += ["", f"## Per-layer error ({_md_escape(layer.get('method'))})", ""]
        if layer.get("error"):
            lines.append(f"Per-layer analysis failed: {_md_escape(layer['error'])}")
        lines += ["Tensors, worst SQNR first:", ""]
        lines += _md_table(
            ["tensor", "kind", "SQNR dB", "MSE", "consumers"],
            [
                [t["tensor"], t["kind"], fmt(t["sqnr_db"], 2), f"{t['mse']:.3g}", ", ".join(t["consumers"])]
                for t in layer.get("tensors", [])[:20]
            ],
        )
        if layer.get("isolated"):
            lines += ["", "Only this node quantized (model output SQNR), worst first:", ""]
            lines += _md_table(
                ["node", "op", "output SQNR dB", "input SQNR dB"],
                [
                    [n["node"], n["op_type"], fmt(n["output_sqnr_db"], 2), fmt(n["input_sqnr_db"], 2)]
                    for n in layer["isolated"]
                ],
            )
    lines += ["", f"Settings: {_md_escape(json.dumps(jsonable(data.get('settings', {}))))}", ""]
    return "\n".join(lines)


def render_eval_markdown(data: Mapping[str, Any]) -> str:
    """Markdown of an ``EvalResult.to_dict()``."""
    p = data["primary"]
    lines = [
        f"# EdgeQuant evaluation ({data['task']}, {data['samples']} samples, output `{data['output']}`)",
        "",
    ]
    lines.append(
        f"Primary: {p['metric']} float {fmt(p['float'])}, quantized {fmt(p['quantized'])}, "
        f"drop {fmt(p['drop'], 2)} {p['unit']}"
    )
    lines.append("")
    rows = [
        [k, fmt(data["float"].get(k)), fmt(data["quantized"].get(k))]
        for k in sorted(set(data["float"]) | set(data["quantized"]))
    ]
    rows += [[f"agreement.{k}", "-", fmt(v)] for k, v in data["agreement"].items()]
    rows += [[f"custom.{k}", "-", fmt(v)] for k, v in data["custom"].items()]
    lines += _md_table(["metric", "float", "quantized"], rows)
    return "\n".join(lines) + "\n"


def write_text(path: str | Path, text: str) -> Path:
    """Atomic write (temporary file in the same directory, then rename)."""
    return write_text_atomic(path, text)


def write_compare_report(outdir: str | Path, data: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``report.json``, ``results.csv``, ``report.md`` and ``report.html`` into ``outdir``."""
    from edgequant.report.html import render_html

    out = Path(outdir)
    from edgequant.evaluate.compare_files import REPORT_FILES

    files = dict(REPORT_FILES)
    full = {**data, "files": files}
    return {
        "json": write_text(out / files["json"], render_json(full)),
        "csv": write_text(out / files["csv"], render_csv(compare_rows(full), CSV_COLUMNS)),
        "markdown": write_text(out / files["markdown"], render_markdown(full)),
        "html": write_text(out / files["html"], render_html(full)),
    }
