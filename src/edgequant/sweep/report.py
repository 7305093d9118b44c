"""The sweep report: ``sweep.json`` (everything), ``sweep.csv`` (one line per cell), ``sweep.html``.

The HTML page is self-contained like ``compare``'s (``report.html``: inline CSS and SVG, every
string escaped): per model, a table of its cells (Pareto-front cells highlighted) and two charts,
score vs latency and score vs size, with one point per cell that ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from edgequant.report import svg
from edgequant.report.html import CSS, _num, _table
from edgequant.report.render import fmt, render_csv, render_json, write_text

MB = float(2**20)
COLUMNS = [
    "model", "method", "target", "bits", "status", "tag", "score", "drop", "drop_unit", "median_ms",
    "file_mb", "packed_mb", "pareto", "cached", "error", "folder", "model_file",
]  # fmt: skip


def flat(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row of ``sweep.csv``: the nested latency and the sizes as plain numbers."""
    lat = (row.get("latency") or {}).get("median_ms")
    fb, pb = row.get("file_bytes"), row.get("packed_bytes")
    return {
        **{k: row.get(k) for k in COLUMNS},
        "median_ms": lat,
        "file_mb": fb / MB if isinstance(fb, int) else None,
        "packed_mb": pb / MB if isinstance(pb, int) else None,
    }


def _cells(r: Mapping[str, Any]) -> tuple[str, list[str]]:
    f = flat(r)
    cls = "failed" if r["status"] != "ok" else "best" if r.get("pareto") else ""
    return cls, [
        str(r["method"]), str(r["target"] or "-"), str(r["bits"] or "-"), str(r["status"]), fmt(f["score"], 2),
        fmt(f["drop"], 2), fmt(f["median_ms"], 3), fmt(f["file_mb"], 3), "yes" if r.get("pareto") else "",
        "cached" if r.get("cached") else "", str(r.get("error") or ""),
    ]  # fmt: skip


def render_sweep_html(data: Mapping[str, Any]) -> str:
    rows: Sequence[Mapping[str, Any]] = data["rows"]
    s = data["settings"]
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>EdgeQuant sweep</title>',
        f"<style>{CSS}</style></head><body><h1>Sweep: {len(rows)} cells</h1>",
        f"<p>executor: {escape(str(s.get('executor')))}; {data['ran']} ran, {data['cached']} from the cache, "
        f"{data['failed']} failed. Pareto front per model: {escape(data['pareto_rule'])} (highlighted). "
        "Latency is measured on the executor's machines: it varies from run to run.</p>",
    ]
    headers = ["method", "target", "bits", "status", "score", "drop", "median ms", "size MB", "Pareto",
               "cache", "error"]  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        parts.append(f"<h2>{escape(str(model))}</h2>")
        parts.append(_table(headers, [_cells(r) for r in mine]))
        ok = [r for r in mine if r["status"] == "ok"]
        label = [f"{r['method']} {r['target'] or ''} w{r['bits'] or '-'}" for r in ok]
        score = [_num(r.get("score")) for r in ok]
        lat = [_num((r.get("latency") or {}).get("median_ms")) for r in ok]
        size = [_num(r.get("file_bytes")) / MB for r in ok]
        parts.append('<div class="charts"><div class="chart">')
        parts.append(
            svg.scatter(list(zip(label, lat, score, strict=True)), "score vs latency", "median ms", "score")
        )
        parts.append('</div><div class="chart">')
        parts.append(
            svg.scatter(list(zip(label, size, score, strict=True)), "score vs size", "file MB", "score")
        )
        parts.append("</div></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_sweep_report(outdir: str | Path, data: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``sweep.json``, ``sweep.csv`` and ``sweep.html`` into ``outdir`` (atomically)."""
    out = Path(outdir)
    files = {"json": "sweep.json", "csv": "sweep.csv", "html": "sweep.html"}
    full = {**data, "files": files}
    return {
        "json": write_text(out / files["json"], render_json(full)),
        "csv": write_text(out / files["csv"], render_csv([flat(r) for r in full["rows"]], COLUMNS)),
        "html": write_text(out / files["html"], render_sweep_html(full)),
    }
