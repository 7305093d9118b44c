"""What a conv with more than 8 bits costs in ONNX Runtime: Silero VAD's convs, one layer at a time.

Used by ``bench_recurrent.py`` (the VAD section).  ``vad_analysis.precision`` measures that the conv stack
needs about 10 bits on both its weights and its activations for frame agreement >= 0.99; ORT (CPU) runs a
conv in float or as QLinearConv (8-bit input, weight and output), and has no 16-bit conv kernel.  The
integer forms that carry more than 8 bits split a tensor into two 8-bit parts, ``x = x_hi + x_lo`` with
``x_hi = DQ(Q8(x))`` and ``x_lo = Q8(x - x_hi)`` on a 256 times finer grid (the same for the weight,
``W = W_hi + W_lo``, per output channel), and sum the three products that matter,
``W_hi x_hi + W_lo x_hi + W_hi x_lo``, with int32 accumulation (no 8-bit output):

- ``split ConvInteger``: ``ConvInteger(x_hi, [W_hi; W_lo])`` and ``ConvInteger(x_lo, W_hi)``, each cast to
  float and scaled per output channel, summed with the bias;
- ``split MatMulIntegerToFloat``: the conv as an im2col ``Gather`` (one constant index) and one
  ``com.microsoft.MatMulIntegerToFloat`` of ``[x_hi; x_lo]`` rows by ``[W_hi | W_lo]`` columns (MLAS's int8
  GEMM, float output), the four blocks scaled and summed, then back to ``[1, C, T]``.

Each layer's own input is the float model's tensor on one speech frame (vad.py's evaluation clip), its
8-bit grid the default plan's calibrated range.  Reported per layer: SQNR of the layer's output against
the float conv (dB) and latency (1 thread, spinning off, interleaved rounds, median).  Only 1-D convs
with ``group == 1`` (all of this model's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from models import harness, vad
from onnx import TensorProto, helper, numpy_helper

from edgequant.plan import QuantPlan

FORMS = ("float Conv", "QLinearConv (8-bit)", "split ConvInteger", "split MatMulIntegerToFloat")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    return {"strides": list(a.get("strides", [1])), "pads": list(a.get("pads", [0, 0])),
            "dilations": list(a.get("dilations", [1]))}  # fmt: skip


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], shape: list[int]) -> bytes:
    g = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )  # fmt: skip
    ops = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(g, opset_imports=ops).SerializeToString()


def _sym8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 (max-abs scale) of ``w`` [Co, ...]: (int8 values, scale [Co])."""
    s = np.maximum(np.abs(w.reshape(w.shape[0], -1)).max(1), 1e-30) / 127
    q = np.clip(np.round(w / s.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, s.astype(np.float32)


def _grid(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = max(hi - lo, 1e-12) / 255
    return np.float32(s), np.uint8(np.clip(round(-lo / s), 0, 255))


def forms(w: np.ndarray, b: np.ndarray, attrs: dict[str, Any], shape: list[int],
          x_range: tuple[float, float], y_range: tuple[float, float]) -> dict[str, bytes]:  # fmt: skip
    """The four forms of ``Conv(x, w, b)`` (w [Co, Ci, K]) as one-layer ONNX models (input ``x``)."""
    co, ci, k = w.shape
    sx, zx = _grid(*x_range)
    sy, zy = _grid(*y_range)
    wq, sw = _sym8(w)
    wl, swl = _sym8(w - wq * sw[:, None, None])
    conv = {"kernel_shape": [k], **attrs}
    out: dict[str, bytes] = {}
    out[FORMS[0]] = _model(
        [helper.make_node("Conv", ["x", "W", "b"], ["y"], **conv)], {"W": w, "b": b}, shape
    )
    qdq = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
           helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
           helper.make_node("DequantizeLinear", ["Wq", "sw", "zw"], ["Wd"], axis=0),
           helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"], axis=0),
           helper.make_node("Conv", ["xd", "Wd", "bd"], ["c"], **conv),
           helper.make_node("QuantizeLinear", ["c", "sy", "zy"], ["cq"]),
           helper.make_node("DequantizeLinear", ["cq", "sy", "zy"], ["y"])]  # fmt: skip
    sb = (sx * sw).astype(np.float32)
    out[FORMS[1]] = _model(qdq, {"sx": sx, "zx": zx, "Wq": wq, "sw": sw, "zw": np.zeros(co, np.int8),
                                 "bq": np.round(b / sb).astype(np.int32), "sb": sb, "zb": np.zeros(co, np.int32),
                                 "sy": sy, "zy": zy}, shape)  # fmt: skip
    slo, zlo = np.float32(sx / 256), np.uint8(128)
    split = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("Sub", ["x", "xd"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "slo", "zlo"], ["rq"])]  # fmt: skip
    ci_out = [helper.make_node("ConvInteger", ["xq", "W2", "zx"], ["a"], **conv),
              helper.make_node("ConvInteger", ["rq", "Wq", "zlo"], ["c"], **conv),
              helper.make_node("Cast", ["a"], ["af"], to=TensorProto.FLOAT),
              helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["af", "s2"], ["am"]), helper.make_node("Mul", ["cf", "s3"], ["cm"]),
              helper.make_node("Split", ["am"], ["a1", "a2"], axis=1),
              helper.make_node("Sum", ["a1", "a2", "cm", "b3"], ["y"])]  # fmt: skip
    out[FORMS[2]] = _model(split + ci_out, {
        "sx": sx, "zx": zx, "slo": slo, "zlo": zlo, "W2": np.concatenate([wq, wl]), "Wq": wq,
        "s2": (sx * np.concatenate([sw, swl])).reshape(1, 2 * co, 1).astype(np.float32),
        "s3": (slo * sw).reshape(1, co, 1).astype(np.float32), "b3": b.reshape(1, co, 1)}, shape)  # fmt: skip
    (stride,), (dil,), (p0, p1) = attrs["strides"], attrs["dilations"], attrs["pads"]
    length = shape[2] + p0 + p1
    t_out = (length - dil * (k - 1) - 1) // stride + 1
    idx = np.array([[c * length + t * stride + j * dil for c in range(ci) for j in range(k)]
                    for t in range(t_out)], np.int64)  # fmt: skip
    mm = [helper.make_node("Pad", ["x", "pads"], ["xp"]), helper.make_node("Reshape", ["xp", "flat"], ["xf"]),
          helper.make_node("Gather", ["xf", "idx"], ["A"]),
          helper.make_node("QuantizeLinear", ["A", "sm", "zlo"], ["xq"]),  # both parts on zero point 128
          helper.make_node("DequantizeLinear", ["xq", "sm", "zlo"], ["xd"]),
          helper.make_node("Sub", ["A", "xd"], ["r"]),
          helper.make_node("QuantizeLinear", ["r", "smlo", "zlo"], ["rq"]),
          helper.make_node("Concat", ["xq", "rq"], ["A2"], axis=0),
          helper.make_node("MatMulIntegerToFloat", ["A2", "B", "one", "sB", "zlo"], ["P"], domain="com.microsoft"),
          helper.make_node("Reshape", ["P", "shp"], ["P4"]), helper.make_node("Mul", ["P4", "f4"], ["Q4"]),
          helper.make_node("ReduceSum", ["Q4", "ax"], ["S"], keepdims=0), helper.make_node("Add", ["S", "b"], ["St"]),
          helper.make_node("Transpose", ["St"], ["Sc"], perm=[1, 0]),
          helper.make_node("Unsqueeze", ["Sc", "ax0"], ["y"])]  # fmt: skip
    sm = np.float32(max(-x_range[0], x_range[1], 1e-12) / 127)  # zero point 128: one grid for both parts
    f4 = np.ones((2, 1, 2, 1), np.float32)
    f4[1] = 1 / 256
    f4[1, 0, 1] = 0.0  # W_lo x_lo: below the grid of the other three
    out[FORMS[3]] = _model(mm, {
        "pads": np.array([0, 0, p0, 0, 0, p1], np.int64), "flat": np.array([-1], np.int64), "idx": idx,
        "sm": sm, "zlo": zlo, "smlo": np.float32(sm / 256), "one": sm,
        "B": np.concatenate([wq.reshape(co, -1).T, wl.reshape(co, -1).T], 1),
        "sB": np.concatenate([sw, swl]).astype(np.float32), "shp": np.array([2, t_out, 2, co], np.int64),
        "f4": f4, "ax": np.array([0, 2], np.int64), "b": b, "ax0": np.array([0], np.int64)}, shape)  # fmt: skip
    return out


def _conv_inputs(float_model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every Conv's input tensor on ``feeds`` (the float model with them as extra outputs)."""
    m = onnx.ModelProto()
    m.CopyFrom(float_model)
    names = {n.input[0] for n in m.graph.node if n.op_type == "Conv"}
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in names - have)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [o.name for o in s.get_outputs()]
    return {k: v for k, v in zip(outs, s.run(None, feeds), strict=True) if k in names}


def _conv(w: np.ndarray, b: np.ndarray, node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    """The float conv's output on ``x`` (own ORT session)."""
    m = _model([helper.make_node("Conv", ["x", "W", "b"], ["y"], kernel_shape=[w.shape[2]], **_attrs(node))],
               {"W": w, "b": b}, list(x.shape))  # fmt: skip
    return np.asarray(ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0])


def layers(float_model: onnx.ModelProto, plan: QuantPlan, runs: int) -> list[dict[str, Any]]:
    """Per Conv of the model (1-D, group 1, in graph order): each form's SQNR against float and its ms."""
    x, _ = vad._eval_audio()
    fr = vad.frames(x)
    peak = np.abs(fr).max(1)
    frame = fr[int(np.argsort(peak)[int(0.9 * len(peak))])]  # a loud frame (90th percentile of peaks): speech
    feeds = {"input": frame[None], "state": np.zeros((2, 1, 128), np.float32)}
    acts = _conv_inputs(float_model, feeds)
    inits = {i.name: numpy_helper.to_array(i) for i in float_model.graph.initializer}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for node in float_model.graph.node:
            if node.op_type != "Conv" or node.input[1] not in inits or inits[node.input[1]].ndim != 3:
                continue
            w = inits[node.input[1]].astype(np.float32)
            if (
                any(a.name == "group" and a.i != 1 for a in node.attribute)
                or node.input[0] not in plan.tensors
            ):
                continue
            b = (
                inits[node.input[2]]
                if len(node.input) > 2 and node.input[2]
                else np.zeros(w.shape[0], np.float32)
            )
            e = plan.tensors[node.input[0]]
            assert e.lo is not None and e.hi is not None
            xin = np.clip(
                acts[node.input[0]], e.lo, e.hi
            )  # inside the calibrated range: the grid, not clipping
            ref = _conv(w, b, node, xin)
            y_range = (float(ref.min()), float(ref.max()))
            built = forms(w, b.astype(np.float32), _attrs(node), list(xin.shape), (e.lo, e.hi), y_range)
            paths = {}
            row: dict[str, Any] = {"conv": node.name.split("__")[-1], "weight": list(w.shape),
                                   "input": list(xin.shape), "sqnr_db": {}, "ms": {}}  # fmt: skip
            for i, (k, mb) in enumerate(built.items()):
                paths[k] = Path(d) / f"f{i}.onnx"
                paths[k].write_bytes(mb)
                got = harness.runner(paths[k], threads=1, spinning=False)({"x": xin})["y"]
                err = float(np.sum((ref.astype(np.float64) - got.reshape(ref.shape)) ** 2))
                row["sqnr_db"][k] = float(
                    10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / max(err, 1e-30))
                )
            row["ms"] = harness.latency_ms(paths, {"x": xin}, threads=1, runs=runs, rounds=20, spinning=False)
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The per-layer table of ``layers``."""
    if not rows:
        return []
    lines = ["", "What more than 8 bits costs per conv in ORT (vad_split.py: one layer at a time on its own float "
             "input from a speech frame, inside its calibrated range; SQNR of the layer's output vs the float conv | µs, 1 thread, interleaved):", "",
             "| conv | weight | " + " | ".join(FORMS) + " |", "|---|---|" + "---:|" * len(FORMS)]  # fmt: skip
    for r in rows:
        cells = [f"{'inf' if r['sqnr_db'][f] > 200 else format(r['sqnr_db'][f], '.1f')} dB, "
                 f"{r['ms'][f] * 1e3:.1f} µs" for f in FORMS]  # fmt: skip
        lines.append(f"| {r['conv']} | {'x'.join(map(str, r['weight']))} | " + " | ".join(cells) + " |")
    tot = {f: sum(r["ms"][f] for r in rows) * 1e3 for f in FORMS}
    lines.append(
        "| all convs | | "
        + " | ".join(f"{tot[f]:.1f} µs ({tot[f] / tot[FORMS[0]]:.2f}x float)" for f in FORMS)
        + " |"
    )
    return lines
