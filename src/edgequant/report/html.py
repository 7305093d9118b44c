"""A self-contained HTML report of a compare result: inline CSS, inline SVG charts, no scripts.

The page references nothing outside itself (no URLs, no ``src=``, no fonts, no CDN), so it opens
offline and can be attached to a ticket.  Every string from the data is HTML-escaped.
Charts: accuracy vs size, accuracy vs latency (one point per method that ran), and per-layer SQNR
of the analysed method (worst first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from edgequant.report import svg
from edgequant.report.render import (
    COMPLIANCE_COLUMNS,
    FINDING_COLUMNS,
    METHOD_COLUMNS,
    compare_rows,
    compliance_tables,
    fmt,
    method_cells,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
td:last-child{white-space:normal;text-align:left;min-width:12em}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.failed td{color:#a00}tr.best td{background:#eaffea}
.rec{padding:.8em 1em;border-left:4px solid #2ca02c;background:#f6fff6}
.none{border-left-color:#d62728;background:#fff6f6}
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #ddd;background:#fff}
code{background:#f4f4f4;padding:0 .3em}
"""


def _num(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return math.nan


def _table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], left: int = 1) -> str:
    """Rows are ``(css class, cells)``; the first ``left`` columns are left-aligned."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = []
    for cls, cells in rows:
        tds = "".join(f'<td class="{"l" if i < left else ""}">{escape(c)}</td>' for i, c in enumerate(cells))
        body.append(f'<tr class="{escape(cls)}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(data: Mapping[str, Any]) -> str:
    rec = data["recommendation"]
    primary = str(data.get("primary_metric", ""))
    rows = compare_rows(data)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>EdgeQuant comparison: {escape(str(data['model']))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>EdgeQuant comparison: <code>{escape(str(data['model']))}</code></h1>",
        f"<p>Task <b>{escape(str(data['task']))}</b>, {escape(str(data['samples']))} evaluation samples "
        f"({'labeled' if data['labeled'] else 'unlabeled: agreement with the float model'}); "
        f"primary metric <code>{escape(primary)}</code>.</p>",
        "<h2>Recommendation</h2>",
    ]
    limits = ", ".join(f"{k} = {fmt(v)}" for k, v in data["limits"].items())
    if rec["method"]:
        parts.append(
            f'<div class="rec"><b>{escape(rec["method"])}</b>: '
            f"{escape(str(rec['reason']).removeprefix(rec['method'] + ': '))}"
            f"<br>Limits: {escape(limits)}</div>"
        )
    else:
        parts.append(f'<div class="rec none">{escape(rec["reason"])}<br>Limits: {escape(limits)}</div>')
    if rec.get("rule"):
        parts.append(f"<p>Rule: {escape(str(rec['rule']))}.</p>")
    trs = []
    for r in rows:
        cls = "failed" if r["status"] != "ok" else ("best" if r["method"] == rec["method"] else "")
        trs.append((cls, method_cells(r)))
    parts += ["<h2>Methods</h2>", _table(METHOD_COLUMNS, trs, left=2)]
    if data.get("settings", {}).get("latency_prediction"):
        parts.append(
            f"<p>Predicted ms (a prediction, not a measurement): {escape(str(data['settings']['latency_prediction']))}</p>"
        )
    summary, chosen, findings = compliance_tables(data)
    if summary:
        parts += [
            "<h2>Target compliance</h2>",
            _table(COMPLIANCE_COLUMNS, [("", r) for r in summary], left=2),
        ]
        if findings:
            parts.append(f"<p>Findings of <b>{escape(chosen)}</b>:</p>")
            parts.append(_table(FINDING_COLUMNS, [("", r) for r in findings], left=7))
    ok = [r for r in rows if r["status"] == "ok"]
    y_label = f"{primary} (%)" if primary not in ("mse",) else primary
    hlines, size_lines, lat_lines = _limit_lines(data, ok)
    parts.append('<h2>Trade-offs</h2><div class="charts">')
    parts.append(
        svg.scatter(
            [(r["method"], _num(r["size_mb"]), _num(r["score"])) for r in ok],
            "Accuracy vs size",
            "file size (MB)",
            y_label,
            hlines=hlines,
            vlines=size_lines,
        )
    )
    parts.append(
        svg.scatter(
            [(r["method"], _num(r["median_ms"]), _num(r["score"])) for r in ok],
            "Accuracy vs latency",
            "median latency (ms)",
            y_label,
            hlines=hlines,
            vlines=lat_lines,
        )
    )
    parts.append("</div>")
    parts += _per_layer(data.get("per_layer"))
    settings = data.get("settings", {})
    parts.append("<h2>Settings</h2>")
    parts.append(_table(["setting", "value"], [("", [str(k), str(v)]) for k, v in settings.items()], left=2))
    versions = data.get("versions") or {}
    if versions:
        parts.append(
            _table(["library", "version"], [("", [str(k), str(v)]) for k, v in versions.items()], left=2)
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _limit_lines(
    data: Mapping[str, Any], ok: Sequence[Mapping[str, Any]]
) -> tuple[list[tuple[float, str]], list[tuple[float, str]], list[tuple[float, str]]]:
    """Dashed limit lines: the lowest score within ``max_drop`` (when higher scores are better and the
    drop is in points of the score), ``max_size_mb`` and ``max_latency_ms``."""
    limits = data.get("limits") or {}
    hlines: list[tuple[float, str]] = []
    base = next((r for r in ok if r["method"] == "float"), None)
    drop = _num(limits.get("max_drop"))
    if base is not None and math.isfinite(drop) and data.get("task") in ("classification", "embedding"):
        hlines.append((_num(base["score"]) - drop, f"float - max_drop ({drop:g} pp)"))
    size, lat = _num(limits.get("max_size_mb")), _num(limits.get("max_latency_ms"))
    return (
        hlines,
        [(size, f"max_size_mb {size:g}")] if math.isfinite(size) else [],
        [(lat, f"max_latency_ms {lat:g}")] if math.isfinite(lat) else [],
    )


def _per_layer(layer: Mapping[str, Any] | None) -> list[str]:
    if not layer:
        return [
            "<h2>Per-layer error</h2><p>No method with Q/DQ pairs ran, so there is no per-layer analysis.</p>"
        ]
    method = escape(str(layer.get("method")))
    out = [f"<h2>Per-layer error: {method}</h2>"]
    if layer.get("error"):
        out.append(f"<p>The per-layer analysis failed: {escape(str(layer['error']))}</p>")
    tensors = layer.get("tensors") or []
    out.append(
        f"<p>SQNR between each float tensor and its quantized (<code>_dq</code>) counterpart on "
        f"{escape(str(layer.get('samples', '?')))} samples, worst first.</p>"
    )
    out.append(
        svg.hbars(
            [(f"{t['tensor']} ({t['kind']})", _num(t["sqnr_db"])) for t in tensors],
            f"Per-layer SQNR, {layer.get('method')}",
            "SQNR (dB), higher is better",
        )
    )
    out.append(
        _table(
            ["tensor", "kind", "SQNR dB", "MSE", "consumers"],
            [
                (
                    "",
                    [
                        t["tensor"],
                        t["kind"],
                        fmt(t["sqnr_db"], 2),
                        f"{_num(t['mse']):.3g}",
                        ", ".join(t["consumers"]),
                    ],
                )
                for t in tensors[:30]
            ],
            left=2,
        )
    )
    if layer.get("isolated"):
        out.append("<p>Model output SQNR when only that node's inputs are quantized, worst first:</p>")
        out.append(
            _table(
                ["node", "op", "output SQNR dB", "input SQNR dB", "quantized inputs"],
                [
                    (
                        "",
                        [
                            n["node"],
                            n["op_type"],
                            fmt(n["output_sqnr_db"], 2),
                            fmt(n["input_sqnr_db"], 2),
                            ", ".join(n["quantized_inputs"]),
                        ],
                    )
                    for n in layer["isolated"]
                ],
                left=2,
            )
        )
    if layer.get("unmatched"):
        out.append(
            _table(
                ["tensor", "not analysed because"],
                [("", [u["tensor"], u["reason"]]) for u in layer["unmatched"]],
                left=2,
            )
        )
    return out
