"""What the hardware-target benchmarks share (bench_targets.py, bench_ti_int.py, bench_tvm.py): the
model by name, with the hand-built ResNet-18 at 128x128, and the text and files of their tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models import load
from models.common import BenchModel

RESULTS = Path(__file__).resolve().parents[1] / "results"
RESNET_SIZE = 128


def bench_model(name: str) -> BenchModel:
    """``load(name)``, or for ``resnet18`` the random-init ResNet-18 at ``RESNET_SIZE`` (models/resnet.py)."""
    if name == "resnet18":
        from models.resnet import make

        return make("resnet18", size=RESNET_SIZE)
    return load(name)


def metric_text(m: dict[str, float]) -> str:
    """``{"accuracy": 0.975, "cer": 0.0357}`` -> ``"accuracy 97.5 %, cer 3.57 %"`` (float-model keys left out)."""
    return ", ".join(
        f"{k} {100 * v:.1f} %" if k != "cer" else f"{k} {100 * v:.2f} %"
        for k, v in m.items()
        if "float" not in k
    )


def source_lines(results: list[dict[str, Any]]) -> list[str]:
    """One ``- name: title (source)`` line per model."""
    return [f"- {res['model']}: {res['title']} ({res['source']})" for res in results]


def write(stem: str, results: list[dict[str, Any]], text: str) -> None:
    """``results/<stem>.json`` (the rows) and ``results/<stem>.md`` (the table)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / f"{stem}.md").write_text(text)
