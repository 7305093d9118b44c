"""``compare --target``: the compliance section reaches report.md and report.html (not only the JSON)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tinymodels import conv_net, images

import edgequant


def test_compare_target_writes_the_compliance_table(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 10, 24)
    res = edgequant.compare(
        conv_net(channels=6), {"x": images(24)}, {"x": images(24, seed=5)}, labels=labels,
        methods="int8-static", target="ti-npu", outdir=tmp_path, latency_runs=3, warmup=1, measure_memory=False,
    )  # fmt: skip
    assert res is not None
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    # conv_net(channels=6): 6 output channels on the first conv -> the ti-npu alignment rule, with its fix
    fix = "pad output channels 6 -&gt; 8 with zero filters (exact; --fix)"
    assert "## Target compliance" in md and fix.replace("-&gt;", "->") in md
    assert "<h2>Target compliance</h2>" in html and fix in html
