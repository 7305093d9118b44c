"""Rich tables of evaluation, comparison and per-layer results (for the CLI and the demo)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from edgequant.cli_support import print_table
from edgequant.report.render import MB, fmt

__all__ = ["format_layer_table", "format_table", "print_table"]  # print_table: from cli_support

if TYPE_CHECKING:
    from edgequant.evaluate.compare import CompareResult
    from edgequant.evaluate.core import EvalResult
    from edgequant.evaluate.layers import LayerReport


def format_table(result: CompareResult | EvalResult) -> Table:
    """A rich table of a ``CompareResult`` (one row per method) or an ``EvalResult`` (one per metric)."""
    from edgequant.evaluate.compare import CompareResult

    if isinstance(result, CompareResult):
        return _compare_table(result)
    return _eval_table(result)


def _eval_table(r: EvalResult) -> Table:
    t = Table(title=f"{r.task}: float vs quantized ({r.samples} samples, output '{r.output}')")
    for col in ("metric", "float", "quantized", "delta"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for row in r.rows():
        t.add_row(row["metric"], fmt(row["float"], 4), fmt(row["quantized"], 4), fmt(row["delta"], 4))
    t.caption = f"primary: {r.primary}, drop {fmt(r.drop, 2)} {r.drop_unit}"
    return t


def _compare_table(r: CompareResult) -> Table:
    t = Table(title=f"{r.model}: every method ({r.task}, {r.samples} samples)")
    t.caption_justify = "left"
    t.add_column("method", overflow="fold")  # wraps first in a narrow terminal; numbers never do
    unit = next((m.drop_unit for m in r.methods if m.ok), "pp")
    lat0: dict[str, Any] = next((m.latency for m in r.methods if m.latency), {})
    timing = (
        f"ms = median latency at batch {lat0.get('batch_size', '?')} on {lat0.get('threads', '?')} thread(s)"
        if lat0
        else "ms = median latency"
    )
    score, score_unit = {
        "top1": ("top-1 %", "top-1 % = top-1 accuracy in percent"),
        "top1_agreement": ("agree %", "agree % = top-1 agreement with float in percent"),
    }.get(r.primary or "score", (r.primary or "score", f"{r.primary or 'score'} = the primary metric"))
    target = r.settings.get("target", "")
    predicted = any((m.predicted_latency or {}).get("ms") is not None for m in r.methods)
    on = {(m.predicted_latency or {}).get("target", target) for m in r.methods if m.predicted_latency}
    where = f"on {target}" if on <= {target} else "on each row's target"
    pred_col = ("pred ms",) if predicted else ()
    # short headers (the units line under the table spells them out) so the table fits 80 columns;
    # numbers never wrap or shorten: print_table widens the console past 80 when it must
    for col in (score, f"drop {unit}", "ms", *pred_col, "MiB", "packed", "mJ"):
        t.add_column(col, justify="right", no_wrap=True)
    units = (
        f"units: {score_unit}; drop {unit} = {score.split()[0]} drop vs float in "
        + ("percentage points" if unit == "pp" else unit)
        + f"; {timing}"
        + (f"; pred ms = predicted latency {where}" if predicted else "")
        + "; MiB = file size (2^20 bytes); packed = MiB with sub-byte weights packed"
    )
    t.add_column("limits")
    notes: list[str] = []
    for m in r.methods:
        mark = (" *" if m.method == r.recommended else "") + (
            " (synthetic calib)" if m.calibration_data == "synthetic" else ""
        )
        if not m.ok:
            t.add_row(m.method, "[red]failed[/red]", "-", "-", *(["-"] if predicted else []), "-", "-", "-",
                      _short(m.error, 40))  # fmt: skip
            continue
        if m.coverage:  # what runs as what (export.kernels), when some nodes run no integer kernel
            notes.append(f"({len(notes) + 1}) {m.method}: {m.coverage}")
            mark += f" ({len(notes)})"
        lat: dict[str, Any] = m.latency or {}
        short = {
            "accuracy": "drop",
            "relative": "rel-drop",
            "latency": "lat",
            "size": "size",
            "energy": "energy",
        }
        fails = ",".join(short.get(f.split(" ")[0], f.split(" ")[0]) for f in m.limit_failures)
        t.add_row(
            m.method + mark,
            fmt(m.score, 2),
            fmt(m.drop, 2),
            fmt(lat.get("median_ms")),
            *([_predicted(m.predicted_latency)] if predicted else []),
            fmt((m.file_bytes or 0) / MB),
            fmt((m.packed_bytes or 0) / MB),
            _mj((m.energy or {}).get("total_mj")),
            "ok" if m.meets_limits else f"[yellow]over {fails}[/yellow]",
        )
    first: dict[str, Any] = next((m.latency for m in r.methods if m.latency), {})
    t.caption = (
        units
        + "\n"
        + ("* recommended: " if r.recommended else "")
        + r.reason
        + f"\nlatency measured here on {first.get('provider', '-')}, {r.settings.get('threads')} thread(s); "
        + "mJ = energy estimate per inference (counted ops and bytes, "
        + f"{r.settings.get('energy_profile', 'horowitz-45nm')} per-op energies)\n"
        + (
            f"predicted ms = a prediction, not a measurement: {r.settings.get('latency_prediction', '')}"
            if predicted
            else str(r.settings.get("latency_prediction", ""))
        )
        + "".join(f"\n{line}" for line in [f"rule: {r.rule}", *notes])
    )
    return t


def _predicted(p: dict[str, Any] | None) -> str:
    """A predicted latency, or 'n/a' when the target cannot run the method's precisions."""
    ms = (p or {}).get("ms")
    return "n/a" if ms is None else f"{ms:.3g}"


def _mj(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else "-"


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def format_layer_table(report: LayerReport, limit: int = 15) -> Table:
    t = Table(title=f"Per-layer SQNR, worst first ({report.samples} samples)")
    for col in ("tensor", "kind", "SQNR dB", "MSE"):
        t.add_column(col, justify="left" if col in ("tensor", "kind") else "right")
    for e in report.tensors[:limit]:
        t.add_row(e.tensor, e.kind, fmt(e.sqnr_db, 2), f"{e.mse:.3g}")
    if report.isolated:
        t.caption = "only-this-node output SQNR: " + ", ".join(
            f"{n.node} {fmt(n.output_sqnr_db, 1)} dB" for n in report.isolated[:5]
        )
    return t
