"""Reports: render result dicts as JSON, CSV, Markdown and self-contained HTML; formatting only.

The numbers come from ``edgequant.evaluate``; this package lays them out and writes files
atomically.  HTML pages carry their charts as inline SVG and reference nothing external.
"""

from edgequant.report.html import render_html
from edgequant.report.render import (
    CSV_COLUMNS,
    compare_rows,
    jsonable,
    render_csv,
    render_eval_markdown,
    render_json,
    render_markdown,
    write_compare_report,
    write_text,
)

__all__ = [
    "CSV_COLUMNS",
    "compare_rows",
    "jsonable",
    "render_csv",
    "render_eval_markdown",
    "render_html",
    "render_json",
    "render_markdown",
    "write_compare_report",
    "write_text",
]
