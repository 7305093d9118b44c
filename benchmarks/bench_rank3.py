"""Rank-3 MatMul weights (issue #16 §5): why EdgeQuant plans them per-tensor.

One MatMul ``x[1, 12, 128, 64] · W[12, 64, 64]`` (a batched per-head projection, seeded weights) is
quantized static int8 by EdgeQuant (its plan: per-tensor weight for a rank-3 weight), and the same QDQ
file is rewritten with per-channel weight scales (axis 2, the output columns: one scale per column
for all 12 heads, and axis 0: one per head) to show what the per-channel form does in ONNX Runtime.
Each file is timed against float, interleaved, ORT thread spinning off (``models.harness.latency_ms``),
batch 1, 2 intra-op threads, and scored by output SQNR against float on 8 held-out inputs.  A form that
ORT refuses to load or run is recorded with its error.

    .venv/bin/python benchmarks/bench_rank3.py    # -> results/bench_rank3.{md,json}, ~1 min
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from models import harness

import edgequant
from edgequant.schemes.qparams import sqnr_db

RESULTS = Path(__file__).parent / "results"
SHAPE_X, SHAPE_W = (1, 12, 128, 64), (12, 64, 64)


def model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(SHAPE_W) / 8.0).astype(np.float32)
    w *= rng.uniform(0.2, 2.0, (1, 1, SHAPE_W[2])).astype(np.float32)  # columns of different ranges
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")],
        "rank3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE_X))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def per_channel(q: onnx.ModelProto, axis: int) -> onnx.ModelProto:
    """``q`` with the weight's DequantizeLinear re-expressed per channel along ``axis`` (int8, symmetric,
    scale = max|W| / 127 per slice), rounded from the float weight."""
    out = onnx.ModelProto()
    out.CopyFrom(q)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    dq = next(
        n
        for n in g.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) == 3
    )
    codes = inits[dq.input[0]]
    scale = float(numpy_helper.to_array(inits[dq.input[1]]))
    w = numpy_helper.to_array(codes).astype(np.float32) * scale
    red = tuple(a for a in range(3) if a != axis)
    s = np.maximum(np.abs(w).max(axis=red), 1e-12) / 127.0
    shape = [1, 1, 1]
    shape[axis] = -1
    c = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
    for t, arr in ((codes, c), (inits[dq.input[1]], s.astype(np.float32))):
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    if len(dq.input) > 2:
        inits[dq.input[2]].CopyFrom(numpy_helper.from_array(np.zeros(len(s), np.int8), dq.input[2]))
    del dq.attribute[:]
    dq.attribute.append(helper.make_attribute("axis", axis))
    return out


def main() -> None:
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((32, *SHAPE_X[1:])).astype(np.float32)
    held = rng.standard_normal((8, 1, *SHAPE_X[1:])).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="bench_rank3_"))
    paths = {"float": tmp / "float.onnx"}
    onnx.save(model(), paths["float"])
    r = edgequant.quantize(str(paths["float"]), calib, "int8-static")
    r.save(tmp / "eq.onnx")
    q = onnx.load(tmp / "eq.onnx")
    note = r.plan.tensors["W"].note if "W" in r.plan.tensors else ""
    paths["EdgeQuant static (per-tensor weight)"] = tmp / "eq.onnx"
    for axis, what in ((2, "per-channel, axis 2 (output columns)"), (0, "per-channel, axis 0 (heads)")):
        p = tmp / f"pc{axis}.onnx"
        onnx.save(per_channel(q, axis), p)
        paths[what] = p
    rows: dict[str, dict[str, Any]] = {}
    ref = [harness.runner(paths["float"], 2)({"x": h})["y"] for h in held]
    ok: dict[str, Path] = {}
    for name, p in paths.items():
        try:
            run = harness.runner(p, 2)
            got = [run({"x": h})["y"] for h in held]
            rows[name] = {
                "sqnr_db": round(float(np.mean([sqnr_db(a, b) for a, b in zip(ref, got, strict=True)])), 1)
            }
            ok[name] = p
        except Exception as e:  # ORT's refusal is the measurement
            msg = str(e).splitlines()[0]
            rows[name] = {
                "error": f"{msg[: msg.find(' Status')]}: ...{msg[-60:]}" if " Status" in msg else msg[:200]
            }
    ms = harness.latency_ms(ok, {"x": held[0]}, 2, runs=100, rounds=10, spinning=False)
    for name, v in ms.items():
        rows[name]["ms"] = round(v, 3)
        rows[name]["x_float"] = round(ms["float"] / v, 2)
    load = os.getloadavg()
    head = (
        f"`benchmarks/bench_rank3.py`: one MatMul x{list(SHAPE_X)} · W{list(SHAPE_W)}, batch 1, 2 intra-op "
        f"threads, spinning off, median of 10 interleaved rounds x 10 runs; {platform.machine()}, load average "
        f"{load[0]:.1f} at the end (shared 2-core machine: noisy). EdgeQuant's plan note: {note}"
    )
    lines = [head, "", "| form | SQNR vs float (dB) | ms | x float |", "|---|---:|---:|---:|"]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | ORT fails: {row['error']} | - | - |")
        else:
            sq = "inf" if name == "float" else row["sqnr_db"]
            lines.append(f"| {name} | {sq} | {row['ms']} | {row['x_float']}x |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_rank3.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "bench_rank3.json").write_text(
        json.dumps({"rows": rows, "load": load, "note": note}, indent=1)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
