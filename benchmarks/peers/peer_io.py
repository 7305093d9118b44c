"""What every peer runner shares (stdlib + numpy only: it is imported inside each peer's own venv).

Protocol: ``python run_<tool>.py SPEC.json`` where SPEC holds
    model      float ONNX path
    calib      folder written by ``benchmarks/models/common.DataFiles.write``: ``names.json`` +
               ``<i>.npy`` (one array per model input, samples first)
    out        where the quantized ONNX goes
    batch      calibration batch size (ignored when the data is ``unbatched``: each sample is a feed)
    settings   tool-specific dict
The runner prints one JSON line last on stdout: quantize seconds (wall time of the tool's call,
model load and save included), peak RSS in MiB of its own process (VmHWM from /proc/self/status:
``ru_maxrss`` would carry the parent's resident set over fork+exec), versions, and anything it notes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]


def read_spec() -> dict[str, Any]:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {Path(sys.argv[0]).name} SPEC.json")
    spec: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    return spec


def samples(spec: dict[str, Any]) -> list[Feeds]:
    """The calibration feeds in file order: one per sample (unbatched) or per ``batch`` samples."""
    folder = Path(spec["calib"])
    meta = json.loads((folder / "names.json").read_text())
    arrays = {name: np.load(folder / f"{i}.npy") for i, name in enumerate(meta["names"])}
    n = len(next(iter(arrays.values())))
    if meta["unbatched"]:
        return [{k: v[i] for k, v in arrays.items()} for i in range(n)]
    b = int(spec.get("batch", 1))
    return [{k: v[i : i + b] for k, v in arrays.items()} for i in range(0, n, b)]


class Reader:
    """onnxruntime-style CalibrationDataReader over ``samples`` (get_next / rewind), re-iterable."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self.feeds = feeds
        self.it: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self.it, None)

    def rewind(self) -> None:
        self.it = iter(self.feeds)

    def reset(self) -> None:  # some tools call reset() instead of rewind()
        self.rewind()

    def __len__(self) -> int:
        return len(self.feeds)


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def finish(result: dict[str, Any]) -> None:
    result["peak_mib"] = round(peak_mib(), 1)
    print(json.dumps(result), flush=True)
