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
from onnx import numpy_helper

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
        """Agreement per clip, the worst clip, and the SQNR of p (dB) over all four clips."""
        got = [vad.stream(run, x)[0] for x in (audio or self.audio)]
        agree = [float(((r > 0.5) == (g > 0.5)).mean()) for r, g in zip(self.ref, got, strict=True)]
        ref, err = np.concatenate(self.ref), np.concatenate(self.ref) - np.concatenate(got)
        sqnr = float(10 * np.log10(np.sum(ref**2) / max(float(np.sum(err**2)), 1e-30)))
        return {"clips": agree, "worst": min(agree), "sqnr_db": sqnr}


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
    return " / ".join(f"{a:.4f}" for a in r["clips"]) + f" | {r['worst']:.4f} | {r['sqnr_db']:.1f}"


def markdown(v: dict[str, Any], seeds: Sequence[int]) -> list[str]:
    """The analysis tables of the VAD section (``per_tensor``, ``floor``, calibration seeds)."""
    lines: list[str] = []
    head = f"agreement per clip (777 / {' / '.join(map(str, seeds))}) | worst | SQNR of p (dB)"
    if v.get("per_tensor"):
        lines += ["", "Where the loss is: the default plan with ONE tensor quantized, the rest float (ORT graph "
                  "optimizations off, see vad_analysis.py):", "",
                  f"| quantized tensor | kind | calibrated range | {head} |", "|---|---|---|---|---:|---:|"]  # fmt: skip
        for r in v["per_tensor"]:
            rng = "-" if r["range"] is None else f"[{r['range'][0]:.4g}, {r['range'][1]:.4g}]"
            lines.append(f"| {r['tensor']} | {r['role']} | {rng} | {_agree(r)} |")
    if v.get("floor"):
        lines += ["", "How many bits the two largest losses need (the FLOAT model with only this change):", "",
                  f"| perturbation | {head} |", "|---|---|---:|---:|"]  # fmt: skip
        lines += [f"| {r['perturbation']} | {_agree(r)} |" for r in v["floor"]]
    if v.get("calib_seeds"):
        lines += ["", "The default recipe calibrated on other audio (160 frames of seed s; the table above: seed 0):",
                  "", f"| calibration seed | {head} |", "|---|---|---:|---:|"]  # fmt: skip
        lines += [f"| {r['seed']} | {_agree(r)} |" for r in v["calib_seeds"]]
    return lines
