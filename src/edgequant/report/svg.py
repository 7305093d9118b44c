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


def _frame(title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{H - 8}" text-anchor="middle" font-size="12">'
        f"{escape(x_label)}</text>",
        f'<text x="14" y="{TOP + (H - TOP - BOTTOM) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {TOP + (H - TOP - BOTTOM) / 2})">{escape(y_label)}</text>',
    ]


def scatter(points: Sequence[tuple[str, float, float]], title: str, x_label: str, y_label: str) -> str:
    """Labelled points ``(label, x, y)``; non-finite points are left out and listed under the chart."""
    good = [(lab, x, y) for lab, x, y in points if math.isfinite(x) and math.isfinite(y)]
    dropped = [lab for lab, x, y in points if not (math.isfinite(x) and math.isfinite(y))]
    parts = _frame(title, x_label, y_label)
    if not good:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>')
        return "\n".join(parts)
    xt = nice_ticks(min(p[1] for p in good), max(p[1] for p in good))
    yt = nice_ticks(min(p[2] for p in good), max(p[2] for p in good))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (v - xt[0]) / ((xt[-1] - xt[0]) or 1.0) * pw

    def sy(v: float) -> float:
        return TOP + ph - (v - yt[0]) / ((yt[-1] - yt[0]) or 1.0) * ph

    parts += _axes(xt, yt, sx, sy)
    for i, (lab, x, y) in enumerate(good):
        colour = PALETTE[i % len(PALETTE)]
        px, py = sx(x), sy(y)
        dy = -8 if i % 2 == 0 else 14
        parts.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{colour}"><title>{escape(lab)}: '
            f"{_fmt(x)}, {_fmt(y)}</title></circle>"
        )
        parts.append(
            f'<text x="{px + 7:.1f}" y="{py + dy:.1f}" font-size="11" fill="{colour}">{escape(lab)}</text>'
        )
    if dropped:
        parts.append(
            f'<text x="{LEFT}" y="{H - 24}" font-size="10">not shown: {escape(", ".join(dropped))}</text>'
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
            f'<text x="{x:.1f}" y="{fy(yt[0]) + 16:.1f}" text-anchor="middle" font-size="10">{_fmt(v)}</text>'
        )
    for v in yt:
        y = fy(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_fmt(v)}</text>')
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
    parts.append("</svg>")
    return "\n".join(parts)
