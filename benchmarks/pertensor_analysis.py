"""Where per-tensor int8 loses on EfficientNet-Lite0, and what CLE through ReLU6 can reach (issue 17 §2).

Every figure is measured on the float model (``models/effnet.py``, repaired by EdgeQuant so its 17
zero Pads are folded into the convs) with ONLY the weights rounded (numpy, symmetric int8 max-abs as
EdgeQuant does, per tensor or per output channel) and float activations, on a subset of the
evaluation crops (``--eval-every``): output SQNR of the logits, mean KL(float || rounded) of the
softmax and top-1 agreement.

- ``weights``: all convs per channel vs all per tensor; then one conv at a time per tensor (the rest
  float): which weight tensors cost most, with their channel-range spread (max/min of per-channel
  max|W|).
- ``relu6``: per Clip(0, 6) after a conv, on the calibration crops: the share of channels whose peak
  reaches 6 and the share of values above 6 (where shrinking a channel before the Clip changes the
  function).
- ``relu_for_relu6``: the FLOAT model with ReLU6 replaced by ReLU (what AIMET's CLE does first), all
  of them or only block 0's depthwise one, against the float model: how much that changes the model.

    .venv/bin/python benchmarks/pertensor_analysis.py --calib /tmp/calib.npy --eval /tmp/eval.npy
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

RunFn = Callable[[np.ndarray], np.ndarray]


def runner(
    model: onnx.ModelProto, outputs: list[str] | None = None
) -> Callable[[np.ndarray], list[np.ndarray]]:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.log_severity_level = 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if outputs:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        known = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs if n not in known)
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    outs = outputs or [s.get_outputs()[0].name]

    def run(x: np.ndarray) -> list[np.ndarray]:
        got = [s.run(outs, {name: x[i : i + 16]}) for i in range(0, len(x), 16)]
        return [np.concatenate([g[k] for g in got]) for k in range(len(outs))]

    return run


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def score(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    lp, lq = log_softmax(ref), log_softmax(got)
    err = float(((ref - got) ** 2).sum())
    return {
        "sqnr_db": round(10 * float(np.log10(float((ref**2).sum()) / max(err, 1e-30))), 2),
        "kl_mean": round(float((np.exp(lp) * (lp - lq)).sum(axis=1).mean()), 4),
        "top1_agree": round(float((ref.argmax(1) == got.argmax(1)).mean()), 3),
    }


def round_weight(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """Symmetric int8 (grid -128..127, scale max|W| / 127.5 as EdgeQuant's qparams), rounded back."""
    amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1) if per_channel else np.abs(w).max()[None]
    scale = np.maximum(amax, 1e-12) / 127.5
    s = scale.reshape(-1, *([1] * (w.ndim - 1))) if per_channel else scale[0]
    return (np.clip(np.rint(w / s), -128, 127) * s).astype(w.dtype)


def with_weights(model: onnx.ModelProto, new: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto.FromString(model.SerializeToString())
    for t in out.graph.initializer:
        if t.name in new:
            t.CopyFrom(numpy_helper.from_array(new[t.name], t.name))
    return out


def conv_weights(model: onnx.ModelProto) -> list[tuple[str, str, np.ndarray, int]]:
    inits = {t.name: t for t in model.graph.initializer}
    rows = []
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and n.input[1] in inits:
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            rows.append((n.name, n.input[1], numpy_helper.to_array(inits[n.input[1]]), int(group)))
    return rows


def spread(w: np.ndarray) -> float:
    r = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    return float(r.max() / max(float(r.min()), 1e-12))


def weights(model: onnx.ModelProto, x: np.ndarray, top: int) -> dict[str, Any]:
    ref = runner(model)(x)[0]
    convs = conv_weights(model)
    res: dict[str, Any] = {}
    for label, pc in (("all per channel", True), ("all per tensor", False)):
        new = {wn: round_weight(w, pc) for _, wn, w, _ in convs}
        res[label] = score(ref, runner(with_weights(model, new))(x)[0])
        print(label, res[label], flush=True)
    layers = []
    for name, wn, w, group in convs:
        got = runner(with_weights(model, {wn: round_weight(w, False)}))(x)[0]
        row = {"conv": name, "depthwise": group > 1, "spread": round(spread(w), 1), **score(ref, got)}
        layers.append(row)
        print(row, flush=True)
    layers.sort(key=lambda r: -r["kl_mean"])
    res["one at a time per tensor (worst first)"] = layers
    worst = [r["conv"] for r in layers[:top]]
    new = {
        wn: round_weight(w, False) if name not in worst else round_weight(w, True) for name, wn, w, _ in convs
    }
    res[f"all per tensor except the worst {top} per channel"] = score(
        ref, runner(with_weights(model, new))(x)[0]
    )
    dw = {wn: round_weight(w, g == 1) for _, wn, w, g in convs}
    res["depthwise per tensor, others per channel"] = score(ref, runner(with_weights(model, dw))(x)[0])
    ndw = {wn: round_weight(w, g > 1) for _, wn, w, g in convs}
    res["depthwise per channel, others per tensor"] = score(ref, runner(with_weights(model, ndw))(x)[0])
    for k in list(res)[-3:]:
        print(k, res[k], flush=True)
    return res


def relu6(model: onnx.ModelProto, x: np.ndarray) -> list[dict[str, Any]]:
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    feeds = [n.input[0] for n in clips]
    got = runner(model, feeds)(x)
    rows = []
    for n, y in zip(clips, got, strict=True):
        peak = np.moveaxis(y, 1, 0).reshape(y.shape[1], -1).max(axis=1)
        rows.append(
            {
                "clip": n.name,
                "channels_reaching_6": round(float((peak >= 6).mean()), 3),
                "channels_above_4.8": round(float((peak * 1.25 >= 6).mean()), 3),
                "values_above_6": round(float((y > 6).mean()), 5),
            }
        )
    return rows


def relu_for_relu6(model: onnx.ModelProto, x: np.ndarray) -> dict[str, Any]:
    ref = runner(model)(x)[0]
    res = {}
    for label, pick in (("all 33", ""), ("block 0 depthwise only", "/_blocks.0/_swish/Clip")):
        m = onnx.ModelProto.FromString(model.SerializeToString())
        for n in m.graph.node:
            if n.op_type == "Clip" and (not pick or n.name == pick):
                n.op_type = "Relu"
                del n.input[1:]
        res[label] = score(ref, runner(m)(x)[0])
        print("ReLU for ReLU6,", label, res[label], flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--model", default="")
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pertensor_analysis.json"))
    args = ap.parse_args()
    from edgequant.model import prepare

    if args.model:
        src = onnx.load(args.model)
    else:
        from models import effnet

        src = onnx.load(str(effnet.onnx_path()))
    model, _ = prepare(src)
    x = np.load(args.eval)[:: args.eval_every]
    calib = np.load(args.calib)[:64]
    res = {"eval_images": len(x), "relu_for_relu6": relu_for_relu6(model, x), "relu6": relu6(model, calib)}
    res["weights"] = weights(model, x, args.top)
    Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
