"""Small inline SVG charts (scatter with labels, horizontal bars), written by hand.

No external references: the SVG carries no ``xmlns`` URL (inline SVG in HTML5 needs none), no
fonts, no scripts.  Every text is escaped.  Axis ticks are "nice" numbers (1, 2, 2.5, 5 x 10^k).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

W, H = 520, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 30, 48
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 12))
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _frame(title: str, x_label: str, y_label: str, height: int = H) -> list[str]:
    return [
        f'<svg class="chart" width="{W}" height="{height}" viewBox="0 0 {W} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{H - 14}" text-anchor="middle" font-size="12">'
        f"{escape(x_label)}</text>",
        f'<text x="14" y="{TOP + (H - TOP - BOTTOM) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {TOP + (H - TOP - BOTTOM) / 2})">{escape(y_label)}</text>',
    ]


Box = tuple[float, float, float, float]  # x0, y0, x1, y1
CHAR_W = 6.4  # estimated advance of one character at font-size 11 (sans-serif)
LEGEND_ROW = 16


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    anchors: Sequence[tuple[str, float, float]], area: Box, radius: float = 5.0, reserved: Sequence[Box] = ()
) -> list[tuple[float, float, str] | None]:
    """A position ``(x, y, text-anchor)`` for each label next to its point, or None where none is free.

    Greedy, in order: the first candidate spot (right, left, above, below, the four corners, then
    further out) whose text box stays inside ``area`` and overlaps neither an earlier label nor any
    point or a ``reserved`` box.  A label without a spot is left to the legend, never drawn over another.
    """
    dots = [*reserved, *((x - radius, y - radius, x + radius, y + radius) for _, x, y in anchors)]
    taken: list[Box] = []
    out: list[tuple[float, float, str] | None] = []
    for lab, px, py in anchors:
        w, best = len(lab) * CHAR_W, None
        for dx, dy, anchor in (
            (8, 4, "start"), (-8, 4, "end"), (0, -9, "middle"), (0, 17, "middle"), (6, -8, "start"),
            (6, 16, "start"), (-6, -8, "end"), (-6, 16, "end"), (8, -20, "start"), (8, 28, "start"),
            (-8, -20, "end"), (-8, 28, "end"), (0, -22, "middle"), (0, 30, "middle"),
        ):  # fmt: skip
            x0 = px + dx - (w if anchor == "end" else w / 2 if anchor == "middle" else 0.0)
            box = (x0, py + dy - 10, x0 + w, py + dy + 2)
            inside = box[0] >= area[0] and box[2] <= area[2] and box[1] >= area[1] and box[3] <= area[3]
            if inside and not any(_overlaps(box, b) for b in (*taken, *dots)):
                best = (px + dx, py + dy, anchor)
                taken.append(box)
                break
        out.append(best)
    return out


def scatter(
    points: Sequence[tuple[str, float, float]],
    title: str,
    x_label: str,
    y_label: str,
    *,
    hlines: Sequence[tuple[float, str]] = (),
    vlines: Sequence[tuple[float, str]] = (),
) -> str:
    """Labelled points ``(label, x, y)`` with a legend of their values; dashed reference lines.

    Colours follow the position in ``points`` (so two charts of the same list match).  Point labels
    are drawn only where they do not overlap (``place_labels``); the legend under the plot names
    every point with its coordinates.  Non-finite points are left out and listed under the chart.
    ``hlines`` / ``vlines`` are ``(value, label)`` limits drawn dashed; the axes include them.
    """
    good = [(i, lab, x, y) for i, (lab, x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    dropped = [lab for lab, x, y in points if not (math.isfinite(x) and math.isfinite(y))]
    hl = [(v, lab) for v, lab in hlines if math.isfinite(v)]
    vl = [(v, lab) for v, lab in vlines if math.isfinite(v)]
    rows = (len(good) + 1) // 2 + (1 if dropped else 0)
    height = H + rows * LEGEND_ROW
    parts = _frame(title, x_label, y_label, height)
    if not good:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>')
        return "\n".join(parts)
    xs = [p[2] for p in good] + [v for v, _ in vl]
    ys = [p[3] for p in good] + [v for v, _ in hl]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (v - xt[0]) / ((xt[-1] - xt[0]) or 1.0) * pw

    def sy(v: float) -> float:
        return TOP + ph - (v - yt[0]) / ((yt[-1] - yt[0]) or 1.0) * ph

    parts += _axes(xt, yt, sx, sy)
    reserved: list[Box] = []
    for v, lab in hl:
        reserved.append((W - RIGHT - 4 - len(lab) * 5.8, sy(v) - 13, W - RIGHT, sy(v)))
        parts.append(
            f'<line x1="{LEFT}" y1="{sy(v):.1f}" x2="{W - RIGHT}" y2="{sy(v):.1f}" stroke="#d62728" '
            f'stroke-dasharray="5 4"/><text x="{W - RIGHT - 4}" y="{sy(v) - 4:.1f}" text-anchor="end" '
            f'font-size="10" fill="#d62728">{escape(lab)}</text>'
        )
    for v, lab in vl:
        reserved.append((sx(v) - 4 - len(lab) * 5.8, TOP + 2, sx(v), TOP + 14))
        parts.append(
            f'<line x1="{sx(v):.1f}" y1="{TOP}" x2="{sx(v):.1f}" y2="{TOP + ph}" stroke="#d62728" '
            f'stroke-dasharray="5 4"/><text x="{sx(v) - 4:.1f}" y="{TOP + 12}" text-anchor="end" '
            f'font-size="10" fill="#d62728">{escape(lab)}</text>'
        )
    spots = place_labels(
        [(lab, sx(x), sy(y)) for _, lab, x, y in good], (LEFT, TOP, W - RIGHT, TOP + ph), reserved=reserved
    )
    for (i, lab, x, y), spot in zip(good, spots, strict=True):
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{colour}" stroke="#fff">'
            f"<title>{escape(lab)}: {_fmt(x)}, {_fmt(y)}</title></circle>"
        )
        if spot is not None:
            parts.append(
                f'<text x="{spot[0]:.1f}" y="{spot[1]:.1f}" text-anchor="{spot[2]}" font-size="11" '
                f'fill="{colour}">{escape(lab)}</text>'
            )
    for k, (i, lab, x, y) in enumerate(good):  # the legend: two columns under the x-axis label
        lx, ly = 16 + (k % 2) * (W // 2), H + (k // 2) * LEGEND_ROW
        parts.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{lx + 14}" y="{ly}" font-size="11">{escape(lab)}: {_fmt(x)}, {_fmt(y)}</text>'
        )
    if dropped:
        parts.append(
            f'<text x="16" y="{height - 6}" font-size="11">not shown: {escape(", ".join(dropped))} (no value)</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _axes(
    xt: list[float], yt: list[float], fx: Callable[[float], float], fy: Callable[[float], float]
) -> list[str]:
    out = [
        f'<line x1="{LEFT}" y1="{fy(yt[0]):.1f}" x2="{W - RIGHT}" y2="{fy(yt[0]):.1f}" stroke="#333"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{fy(yt[0]):.1f}" stroke="#333"/>',
    ]
    for v in xt:
        x = fx(v)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{fy(yt[0]):.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{fy(yt[0]) + 16:.1f}" text-anchor="middle" font-size="11">{_fmt(v)}</text>'
        )
    for v in yt:
        y = fy(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(v)}</text>')
    return out


def hbars(items: Sequence[tuple[str, float]], title: str, x_label: str, max_items: int = 20) -> str:
    """Horizontal bars ``(label, value)`` in the given order; infinite values are drawn as "inf"."""
    shown = list(items)[:max_items]
    row = 18
    height = TOP + BOTTOM + row * max(len(shown), 1)
    label_w = 210
    finite = [v for _, v in shown if math.isfinite(v)]
    ticks = nice_ticks(min([0.0, *finite]), max([1.0, *finite]))
    pw = W + 120 - label_w - RIGHT
    width = W + 120

    def sx(v: float) -> float:
        return label_w + (v - ticks[0]) / ((ticks[-1] - ticks[0]) or 1.0) * pw

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{label_w + pw / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{escape(x_label)}</text>',
    ]
    base = TOP + row * len(shown)
    for v in ticks:
        parts.append(f'<line x1="{sx(v):.1f}" y1="{TOP}" x2="{sx(v):.1f}" y2="{base}" stroke="#eee"/>')
        parts.append(
            f'<text x="{sx(v):.1f}" y="{base + 14}" text-anchor="middle" font-size="10">{_fmt(v)}</text>'
        )
    for i, (lab, v) in enumerate(shown):
        y = TOP + i * row
        short = lab if len(lab) <= 32 else lab[:14] + "…" + lab[-16:]
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="11">{escape(short)}'
            f"<title>{escape(lab)}</title></text>"
        )
        end = sx(v) if math.isfinite(v) else sx(ticks[-1])
        start = sx(max(ticks[0], 0.0))
        x0, x1 = min(start, end), max(start, end)
        colour = "#d62728" if i < 3 else "#1f77b4"
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1):.1f}" height="{row - 6}" fill="{colour}"/>'
        )
        text = _fmt(v) if math.isfinite(v) else "inf"
        parts.append(f'<text x="{x1 + 4:.1f}" y="{y + 13}" font-size="10">{text}</text>')
    if len(shown) > 3:
        parts.append(f'<text x="8" y="{height - 8}" font-size="10" fill="#d62728">red: the 3 worst</text>')
    parts.append("</svg>")
    return "\n".join(parts)
