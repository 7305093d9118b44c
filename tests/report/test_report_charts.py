"""Chart layout: point labels never overlap, a legend names every point, limit lines are drawn."""

from __future__ import annotations

import re
from typing import Any

from edgequant.report import render_html
from edgequant.report.svg import CHAR_W, PALETTE, place_labels, scatter

AREA = (64.0, 30.0, 500.0, 292.0)


def _box(lab: str, spot: tuple[float, float, str]) -> tuple[float, float, float, float]:
    x, y, anchor = spot
    w = len(lab) * CHAR_W
    x0 = x - (w if anchor == "end" else w / 2 if anchor == "middle" else 0.0)
    return (x0, y - 10, x0 + w, y + 2)


def test_labels_of_a_cluster_do_not_overlap_each_other_or_points() -> None:
    # the example's real cluster: five methods within 3 px of each other, plus two apart
    anchors = [
        ("float", 300.0, 60.0), ("dynamic-int8", 300.0, 62.0), ("int8-static-per-tensor", 150.0, 60.0),
        ("int8-static", 152.0, 70.0), ("weight-only-int8", 140.0, 66.0), ("w8a16", 151.0, 58.0),
        ("fp16", 170.0, 66.0), ("w4a8", 80.0, 280.0),
    ]  # fmt: skip
    spots = place_labels(anchors, AREA)
    placed = [(lab, _box(lab, s)) for (lab, _, _), s in zip(anchors, spots, strict=True) if s is not None]
    assert len(placed) >= 6  # most labels fit; the rest go to the legend only
    for i, (a, ba) in enumerate(placed):
        assert AREA[0] <= ba[0] and ba[2] <= AREA[2] and AREA[1] <= ba[1] and ba[3] <= AREA[3], a
        for b, bb in placed[i + 1 :]:
            disjoint = ba[2] <= bb[0] or bb[2] <= ba[0] or ba[3] <= bb[1] or bb[3] <= ba[1]
            assert disjoint, (a, b)
        for _, px, py in anchors:  # no label covers a point (radius 5)
            assert ba[2] <= px - 5 or px + 5 <= ba[0] or ba[3] <= py - 5 or py + 5 <= ba[1], a


def test_label_without_room_is_left_out_not_drawn_over() -> None:
    # ten long labels on one point: at most the 14 candidate spots can be used, later ones get None
    spots = place_labels([(f"method-number-{i}", 280.0, 160.0) for i in range(10)], AREA)
    assert spots[0] == (288.0, 164.0, "start")  # first choice: right of the point
    assert None in spots


def test_scatter_legend_names_every_point_with_values_and_keeps_colours() -> None:
    pts = [("a", 1.0, 90.0), ("b", float("nan"), 80.0), ("c", 2.0, 95.5)]
    s = scatter(pts, "T", "size", "acc")
    assert "a: 1, 90</text>" in s and "c: 2, 95.5</text>" in s
    assert "not shown: b (no value)" in s
    # colour follows the position in the list: c keeps PALETTE[2] although b is not drawn
    assert re.search(rf'<circle [^>]*fill="{PALETTE[2]}"', s) and f'fill="{PALETTE[1]}"' not in s
    assert s.count("<circle") == 2


def test_limit_lines_are_drawn_and_inside_the_axes() -> None:
    s = scatter(
        [("a", 1.0, 90.0), ("b", 2.0, 95.0)], "T", "x", "y", hlines=[(80.0, "min")], vlines=[(3.0, "max")]
    )
    assert s.count('stroke-dasharray="5 4"') == 2 and ">min</text>" in s and ">max</text>" in s
    ticks = [float(t) for t in re.findall(r'text-anchor="end" font-size="11">([0-9.]+)</text>', s)]
    assert min(ticks) <= 80.0  # the y axis reaches down to the limit line


def _data(limits: dict[str, Any], task: str = "classification") -> dict[str, Any]:
    def m(name: str, score: float, mb: float) -> dict[str, Any]:
        return {
            "method": name, "status": "ok", "tag": name, "error": "", "error_type": "", "model_file": "f",
            "plan_file": "", "evaluation": {}, "score": score, "drop": 97.0 - score, "drop_unit": "pp",
            "latency": {"median_ms": 1.0, "p90_ms": 1.2, "throughput": 1000.0}, "memory": None,
            "file_bytes": int(mb * 2**20), "packed_bytes": int(mb * 2**20), "quantize_seconds": 0.1,
            "limit_failures": [], "meets_limits": True,
        }  # fmt: skip

    return {
        "kind": "compare", "model": "m.onnx", "task": task, "outdir": "x", "samples": 8, "labeled": True,
        "primary_metric": "top1", "limits": limits, "settings": {},
        "recommendation": {"method": "int8", "reason": "int8: smallest"},
        "methods": [m("float", 97.0, 1.0), m("int8", 96.5, 0.25)], "per_layer": None, "versions": {},
    }  # fmt: skip


def test_html_draws_the_limits_it_was_given() -> None:
    html = render_html(_data({"max_drop": 1.0, "max_latency_ms": None, "max_size_mb": 0.5}))
    assert html.count("float - max_drop (1 pp)") == 2  # both charts
    assert html.count("max_size_mb 0.5") == 1 and html.count("stroke-dasharray") == 3  # 2 drop, 1 size
    none = render_html(_data({"max_drop": None, "max_latency_ms": None, "max_size_mb": None}))
    assert "stroke-dasharray" not in none
    regression = render_html(
        _data({"max_drop": 1.0, "max_latency_ms": None, "max_size_mb": None}, "regression")
    )
    assert "float - max_drop" not in regression  # a relative-MSE drop is not in points of the score
    for bad in ("http://", "https://", "src=", "<script", "url("):
        assert bad not in html, bad
