"""Where Silero VAD's static int8 loss is, and how large a loss its frame agreement can see at all.

Used by ``bench_recurrent.py`` (the VAD section).  Every figure is measured on four clips (vad.py's
evaluation clip and ``MORE_SEEDS``), each model streaming its own state: frame agreement per clip (same
p > 0.5 decision as float) and the SQNR of p over all frames of the four clips.

- ``per_tensor``: the default plan with ONE tensor quantized (one weight, or one activation), the rest
  float.  These models run in ORT with graph optimizations off: from the basic level on, ORT's
  WeightBiasQuantization rewrite gives a Conv/Gemm whose input comes from a per-tensor
  DequantizeLinear and whose weight is a float initializer a symmetric per-tensor int8 weight (and an
  int32 bias), so a plan with only the Conv's input activation quantized would measure that weight's
  per-tensor rounding as well.  (EdgeQuant's own float nodes read the float tensor, not a DQ output, so
  its exports are not affected; the full default model gives the same figures with optimizations on
  and off.)
- ``groups``: the default plan with a group of tensors kept float (the audio-to-magnitude front end; all
  weights; all activations; the layers before the recurrence), same sessions as ``per_tensor``: whether
  the one-at-a-time losses add up.
- ``precision``: the default model with every quantized tensor (or those before the recurrence) on more
  bits, emulated in float on the exported graph: each activation's QuantizeLinear/DequantizeLinear pair
  becomes ``clip(round(x / s') + z', lo', hi') - z') * s'`` with ``s' = s / 2^(b-8)`` (the same range on
  ``2^b`` levels), each weight ``round(W / s'') * s''`` on its own per-channel scale with ``s'' = s * 127
  / (2^(b-1) - 1)``.  At 8 and 8 bits this is the default model exactly (checked in the table).
- ``calib_seeds``: the default recipe calibrated on other audio, as exported and on 10 and 10 bits.
- ``floor``: the FLOAT model with only the audio input rounded to 8-12 bits over its calibrated range,
  or only the weight tensor that costs most rounded per channel to 8-10 bits, or that weight perturbed
  by seeded uniform noise of +-1/2 step of its own int8 grid (round-to-nearest's error size, random
  signs): how many bits each needs, and how widely an error of int8's size varies with the draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from models import vad
from onnx import helper, numpy_helper

import edgequant
from edgequant.export import export_qdq
from edgequant.plan import QuantPlan

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def runner(path: Path | bytes, optimize: bool = True) -> RunFn:
    """One-thread ORT session as a ``feeds -> {output name: array}`` function."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.log_severity_level = 1, 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in s.get_outputs()]
    return lambda f: dict(zip(names, s.run(None, f), strict=True))


class Clips:
    """The four clips' audio and the float model's p on each."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.audio = [vad._eval_audio()[0], *(vad.audio(s, 16)[0] for s in seeds)]
        float_run = runner(vad.model_path())
        self.ref = [vad.stream(float_run, x)[0] for x in self.audio]

    def score(self, run: RunFn, audio: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
        """Agreement per clip, the worst clip, pooled over the four clips' frames, and the SQNR of p (dB)."""
        got = [vad.stream(run, x)[0] for x in (audio or self.audio)]
        agree = [float(((r > 0.5) == (g > 0.5)).mean()) for r, g in zip(self.ref, got, strict=True)]
        ref, err = np.concatenate(self.ref), np.concatenate(self.ref) - np.concatenate(got)
        sqnr = float(10 * np.log10(np.sum(ref**2) / max(float(np.sum(err**2)), 1e-30)))
        pooled = float(sum(a * len(r) for a, r in zip(agree, self.ref, strict=True)) / len(ref))
        return {"clips": agree, "worst": min(agree), "pooled": pooled, "sqnr_db": sqnr}


def per_tensor(
    float_model: onnx.ModelProto, plan: QuantPlan, clips: Clips, tmp: Path
) -> list[dict[str, Any]]:
    """One tensor of ``plan`` quantized at a time (weights, then activations), the rest float."""
    rows = []
    for name, entry in plan.tensors.items():
        if entry.role not in ("weight", "activation"):
            continue
        p = QuantPlan.from_dict(plan.to_dict())
        for other in list(p.tensors):
            if other != name:
                del p.tensors[other]
        q, _ = export_qdq(float_model, p)
        path = tmp / "vad_one.onnx"
        onnx.save(q, str(path))
        m = clips.score(runner(path, optimize=False))
        rng = None if entry.role == "weight" else [entry.lo, entry.hi]
        rows.append({"tensor": name.split("__")[-1], "role": entry.role, "range": rng, **m})
    return rows


def _keep_float(
    float_model: onnx.ModelProto, plan: QuantPlan, drop: Callable[[str, str], bool], clips: Clips
) -> dict[str, Any]:
    """The default plan without the tensors ``drop(name, role)`` selects (kept float), scored."""
    p = QuantPlan.from_dict(plan.to_dict())
    for name in [n for n, e in p.tensors.items() if e.role in ("weight", "activation") and drop(n, e.role)]:
        del p.tensors[name]
    q, _ = export_qdq(float_model, p)
    return clips.score(runner(q.SerializeToString(), optimize=False))


def before_recurrence(model: onnx.ModelProto) -> set[str]:
    """Tensors the first LSTM/GRU/RNN's sequence input is computed from (all, if the model has none)."""
    made = {o: n for n in model.graph.node for o in n.output}
    rec = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    if not rec:
        return set(made) | {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    seen, todo = set(), [rec[0].input[0]]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in made:
            todo += [i for i in made[t].input if i]
    return seen


def groups(float_model: onnx.ModelProto, plan: QuantPlan, clips: Clips) -> list[dict[str, Any]]:
    """The default plan with whole groups kept float (see the module docstring)."""
    names = list(plan.tensors)
    sqrt = next(i for i, n in enumerate(names) if n.endswith("Sqrt_output_0"))  # the magnitude
    front = {n for n in names[: sqrt + 1] if plan.tensors[n].role == "activation"}
    early = before_recurrence(float_model)
    cases: list[tuple[str, Callable[[str, str], bool]]] = [
        ("none (the default plan)", lambda n, r: False),
        ("audio input, STFT conv output and magnitude", lambda n, r: n in front),
        ("every weight", lambda n, r: r == "weight"),
        ("every activation", lambda n, r: r == "activation"),
        ("every tensor before the LSTM", lambda n, r: n in early),
    ]
    return [{"float": label, **_keep_float(float_model, plan, fn, clips)} for label, fn in cases]


def _arr(m: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    m.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def emulate(model: onnx.ModelProto, float_model: onnx.ModelProto, act_bits: int, weight_bits: int,
            only: set[str] | None = None) -> bytes:  # fmt: skip
    """``model`` (an exported QDQ model) with its activations on ``act_bits`` and its weights on
    ``weight_bits``, emulated in float (module docstring); ``only``: the tensors to change (others 8)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    fw = {i.name: numpy_helper.to_array(i) for i in float_model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for n in list(m.graph.node):
        src = n.input[0]
        if n.op_type == "QuantizeLinear" and src not in init and (only is None or src in only):
            k, s, z = 2 ** (act_bits - 8), init[n.input[1]], init[n.input[2]].astype(np.float32)
            lo, hi = (0, 255) if init[n.input[2]].dtype == np.uint8 else (-128, 127)
            p = n.output[0] + "_emu"
            c = [_arr(m, p + t, np.asarray(v, np.float32)) for t, v in
                 (("s", s / k), ("z", z * k), ("lo", lo * k), ("hi", hi * k + k - 1))]  # fmt: skip
            nodes += [helper.make_node("Div", [src, c[0]], [p + "1"]), helper.make_node("Round", [p + "1"], [p + "2"]),
                      helper.make_node("Add", [p + "2", c[1]], [p + "3"]),
                      helper.make_node("Clip", [p + "3", c[2], c[3]], [p + "4"]),
                      helper.make_node("Sub", [p + "4", c[1]], [p + "5"])]  # fmt: skip
            for d in m.graph.node:
                if d.op_type == "DequantizeLinear" and d.input[0] == n.output[0]:
                    d.op_type = "Mul"
                    del d.input[:], d.attribute[:]
                    d.input.extend([p + "5", c[0]])
            continue
        w = src[:-2] if src.endswith("_q") else ""
        if n.op_type == "DequantizeLinear" and w in fw and fw[w].ndim >= 2 and (only is None or w in only):
            top, s = 2 ** (weight_bits - 1) - 1, init[n.input[1]]
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * fw[w].ndim
            shape[axis] = -1
            step = (s * 127 / top).reshape(shape if s.ndim else [1] * fw[w].ndim)
            q = np.clip(np.round(fw[w] / step), -top, top) * step
            nodes.append(
                helper.make_node("Identity", [_arr(m, w + "_emu", q.astype(np.float32))], list(n.output))
            )
            continue
        nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m.SerializeToString()


PRECISION = ((8, 8), (9, 9), (10, 8), (8, 10), (10, 10), (12, 12))


def precision(model: onnx.ModelProto, float_model: onnx.ModelProto, clips: Clips) -> list[dict[str, Any]]:
    """The default model on more bits (``PRECISION``: activation, weight bits), everywhere and, at 10 and
    10, only before the recurrence (see the module docstring)."""
    rows = [{"bits": f"activations {a}, weights {w}", "where": "every quantized tensor",
             **clips.score(runner(emulate(model, float_model, a, w), optimize=False))} for a, w in PRECISION]  # fmt: skip
    early = before_recurrence(float_model)
    rows.append({"bits": "activations 10, weights 10", "where": "tensors before the LSTM (the rest 8)",
                 **clips.score(runner(emulate(model, float_model, 10, 10, early), optimize=False))})  # fmt: skip
    return rows


def calib_seeds(src: Path, seeds: Sequence[int], clips: Clips) -> list[dict[str, Any]]:
    """The default recipe calibrated on 160 frames of other audio (each seed), as exported and with its
    activations and weights on 10 bits (``emulate``)."""
    rows = []
    for seed in seeds:
        c = vad._calib(160, seed)
        res = edgequant.quantize(
            str(src), [{"input": c["input"][i], "state": c["state"][i]} for i in range(160)], "int8-static"
        )
        rows.append({"seed": str(seed), **clips.score(runner(res.model.SerializeToString()))})
        ten = emulate(res.model, res.float_model, 10, 10)
        rows.append({"seed": f"{seed}, the same on 10 bits", **clips.score(runner(ten, optimize=False))})
    return rows


def _with_weight(model: onnx.ModelProto, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(init)).astype(np.float32), name))
    return m.SerializeToString()


def _rtn(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-output-channel round-to-nearest on ``bits`` bits (max-abs scale), dequantized."""
    flat, top = w.reshape(w.shape[0], -1), 2 ** (bits - 1) - 1
    step = np.maximum(np.abs(flat).max(axis=1, keepdims=True), 1e-30) / top
    return (np.clip(np.round(flat / step), -top, top) * step).reshape(w.shape)


def floor(
    float_model: onnx.ModelProto, weight: str, input_range: tuple[float, float], clips: Clips, draws: int = 6
) -> list[dict[str, Any]]:
    """How many bits the two largest losses need, on the FLOAT model (see the module docstring)."""
    rows = []
    base = runner(vad.model_path())
    lo, hi = input_range
    for bits in (8, 9, 10, 11, 12):  # the audio on a uniform grid over the calibrated input range
        step = (hi - lo) / (2**bits - 1)
        audio = [(np.round(x / step) * step).astype(np.float32) for x in clips.audio]
        rows.append({"perturbation": f"audio input rounded to {bits} bits over [{lo:.4g}, {hi:.4g}]",
                     **clips.score(base, audio)})  # fmt: skip
    short = weight.split("__")[-1]
    for bits in (8, 9, 10):
        run = runner(_with_weight(float_model, weight, lambda w, b=bits: _rtn(w, b)))
        rows.append(
            {"perturbation": f"{short} per-channel round-to-nearest, {bits} bits", **clips.score(run)}
        )
    for seed in range(draws):
        r = np.random.default_rng(seed)

        def jitter(w: np.ndarray, r: np.random.Generator = r) -> np.ndarray:
            flat = w.reshape(w.shape[0], -1)
            step = np.abs(flat).max(axis=1, keepdims=True) / 127
            return (flat + r.uniform(-0.5, 0.5, flat.shape) * step).reshape(w.shape)

        run = runner(_with_weight(float_model, weight, jitter))
        rows.append({"perturbation": f"{short} + uniform +-1/2 int8 step (random signs), draw {seed}",
                     **clips.score(run)})  # fmt: skip
    return rows


def _agree(r: dict[str, Any]) -> str:
    return (
        " / ".join(f"{a:.4f}" for a in r["clips"])
        + f" | {r['worst']:.4f} | {r['pooled']:.4f} | {r['sqnr_db']:.1f}"
    )


def markdown(v: dict[str, Any], seeds: Sequence[int]) -> list[str]:
    """The analysis tables of the VAD section (``per_tensor``, ``floor``, calibration seeds)."""
    lines: list[str] = []
    head = f"agreement per clip (777 / {' / '.join(map(str, seeds))}) | worst | pooled | SQNR of p (dB)"
    if v.get("per_tensor"):
        lines += ["", "Where the loss is: the default plan with ONE tensor quantized, the rest float (ORT graph "
                  "optimizations off, see vad_analysis.py):", "",
                  f"| quantized tensor | kind | calibrated range | {head} |", "|---|---|---|---|---:|---:|---:|"]  # fmt: skip
        for r in v["per_tensor"]:
            rng = "-" if r["range"] is None else f"[{r['range'][0]:.4g}, {r['range'][1]:.4g}]"
            lines.append(f"| {r['tensor']} | {r['role']} | {rng} | {_agree(r)} |")
    if v.get("groups"):
        lines += ["", "Do the one-at-a-time losses add up? The default plan with a whole group kept float (same sessions):",
                  "", f"| kept float | {head} |", "|---|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['float']} | {_agree(r)} |" for r in v["groups"]]
    if v.get("precision"):
        lines += ["", "How many bits the whole model needs (the default model with more bits, emulated in float, see "
                  "vad_analysis.py):", "", f"| bits | where | {head} |", "|---|---|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['bits']} | {r['where']} | {_agree(r)} |" for r in v["precision"]]
    if v.get("floor"):
        lines += ["", "How many bits the two largest losses need (the FLOAT model with only this change):", "",
                  f"| perturbation | {head} |", "|---|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['perturbation']} | {_agree(r)} |" for r in v["floor"]]
    if v.get("calib_seeds"):
        lines += ["", "The default recipe calibrated on other audio (160 frames of seed s; the tables above: seed 0), and "
                  "that model on 10-bit activations and weights (emulated as above):",
                  "", f"| calibration seed | {head} |", "|---|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['seed']} | {_agree(r)} |" for r in v["calib_seeds"]]
    return lines
