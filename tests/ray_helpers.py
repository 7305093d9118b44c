"""Shared test data for the executor tests: a tiny CNN, its data files, and row comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tinymodels

from edgequant.evaluate.method_run import TIMED
from edgequant.runtime import OrtRuntime


def write_inputs(folder: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """tiny.onnx, calib.npz (32 images) and eval.npz (24 images with labels) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    m = tinymodels.conv_net(seed=seed)
    model = folder / "tiny.onnx"
    onnx.save_model(m, str(model))
    ev = tinymodels.images(24, seed=3)
    labels = OrtRuntime().run(m, {"x": ev})["y"].argmax(axis=1)
    labels[:4] = (labels[:4] + 1) % 10  # float top-1 = 20/24
    np.savez(folder / "calib.npz", x=tinymodels.images(32, seed=4))
    np.savez(folder / "eval.npz", x=ev, labels=labels)
    return model, folder / "calib.npz", folder / "eval.npz"


def untimed(row: dict[str, Any]) -> dict[str, Any]:
    """A row without what is measured (latency, memory, seconds, the RAPL energy) or run-specific."""
    out = {k: v for k, v in row.items() if k not in (*TIMED, "cached", "pareto")}
    if isinstance(out.get("energy"), dict):
        out["energy"] = {k: v for k, v in out["energy"].items() if not k.startswith("measured")}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def top1(model: Path, x: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 % of ``model`` on ``x`` in a fresh ORT session (independent of the code under test)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0]
    return float((y.argmax(axis=1) == labels).mean() * 100)
