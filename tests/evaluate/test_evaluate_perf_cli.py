"""``evaluate --latency --memory`` prints its numbers, and peak memory is the model session's: the float
model's session holds its float32 weights, the int8 model's a quarter of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app

D = 1024


def test_latency_and_memory_are_printed_and_memory_is_the_sessions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ws = [nh.from_array((rng.standard_normal((D, D)) * 0.05).astype(np.float32), n) for n in ("w", "w2")]
    g = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["m"], name="mm"), h.make_node("Relu", ["m"], ["r"], name="relu"),
         h.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")],
        "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", D])], [h.make_tensor_value_info("y", T.FLOAT, ["N", D])], ws,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    fp = tmp_path / "big.onnx"
    onnx.save(m, fp)
    x = rng.standard_normal((64, D)).astype(np.float32)
    qp = edgequant.quantize(str(fp), x, calib_samples=64).save(tmp_path / "q").model
    data = tmp_path / "eval.npz"
    np.savez(data, x=x[:8])
    out = tmp_path / "ev.json"
    res = CliRunner().invoke(
        app,
        ["evaluate", str(fp), str(qp), "--data", str(data), "--task", "embedding", "--latency", "--memory",
         "--runs", "5", "-o", str(out)],
        terminal_width=200,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert re.search(r"median latency[\s│]+ms[\s│]+[\d.]+[\s│]+[\d.]+", res.output), res.output
    assert re.search(r"peak session memory[\s│]+MiB[\s│]+[\d.]+[\s│]+[\d.]+", res.output), res.output
    mem = json.loads(out.read_text())["memory"]
    weights_mib = 2 * D * D * 4 / 2**20  # 8 MiB of float32 weights; int8 stores 2 MiB of them
    f, q = mem["float"], mem["quantized"]
    assert f["peak_scope"] == q["peak_scope"] == "session"
    assert f["peak_rss_delta_mb"] >= weights_mib  # measured 25.0 MiB
    assert f["peak_rss_delta_mb"] - q["peak_rss_delta_mb"] >= 0.75 * weights_mib  # saved 6; measured 11.5
