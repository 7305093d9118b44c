"""The run check: the quantized model against the user's float model, on data calibration never saw.

After every run the produced model is loaded and run in ONNX Runtime (in a child process, so a
native crash is caught: ``runtime.isolated``) and its outputs are compared with the float model's
by SQNR (dB, ``10 log10(sum(ref^2) / sum((ref - q)^2))`` per batch, averaged per output).

Which samples (``kind`` in the report's ``check``):

- ``held_out``: real data calibration never read.  A calibrated run holds back ``check_samples``
  (32 by default) evenly spread samples of the data (at most half of it; ``data.select``), or reads
  the evaluation rows of a metadata CSV (calibration read its train rows); a run that calibrates
  nothing (fp16, dynamic, weight-only) checks on the first ``check_samples``.
- ``in_sample``: the data has a single sample, so the check reads what calibration read.
- ``synthetic``: no data was given; random inputs (disjoint from any synthetic calibration samples).

Collapse: when a static model's output SQNR is under ``COLLAPSE_DB`` (3 dB: the noise is about half
the signal; per-tensor weights on BN-folded depthwise or recurrent models land under 1 dB), the run
is not a quiet success: ``check["collapse"]`` names the worst tensors (``evaluate.layers``, measured
on the first check batch) and the pipeline prints a warning suggesting per-channel weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.data import input_specs, open_source
from edgequant.errors import ExportError, InferenceError, UnsupportedError
from edgequant.export.kernels import census
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe
from edgequant.runtime import OrtRuntime
from edgequant.runtime.isolated import run_isolated
from edgequant.schemes import sqnr_db

COLLAPSE_DB = 3.0


def run_check(
    runtime: OrtRuntime,
    float_model: onnx.ModelProto | Path,
    quantized: onnx.ModelProto,
    calibration: Any,
    recipe: Recipe,
    *,
    calibrated: bool,
    float_proto: onnx.ModelProto | None = None,
    plan: QuantPlan | None = None,
) -> dict[str, Any]:
    """The report's ``check``: output SQNR per output (dB), the data, its sample count and kind.

    ``calibrated``: calibration read ``calibration`` (its held-out part is used here).
    ``float_proto``: the float model the QDQ model was exported from, for the per-layer look at a
    collapse (module docstring); without it a collapse is reported without layers.
    ``plan``: the plan ``quantized`` was written from; with it, ``kernels`` holds the census of what ORT
    runs for each node the plan quantized (``export.kernels.census``, from ORT's optimised graph).
    Raises ExportError (UnsupportedError for 4-bit activations) when ORT cannot load or run the
    quantized model, or crashes on it.
    """
    batches, kind, note, description, samples = _check_data(float_model, calibration, recipe, calibrated)
    graphs: list[onnx.ModelProto] = []
    try:
        got = run_isolated(
            quantized, batches, what="the quantized model", providers=runtime.providers,
            intra_op_threads=runtime.intra_op_threads, optimize=runtime.optimize,
            allow_spinning=runtime.allow_spinning, optimized=graphs if plan is not None else None,
        )  # fmt: skip
    except InferenceError as exc:
        if recipe.method == "static" and recipe.act_bits == 4 and "crashed" not in exc.detail:
            raise UnsupportedError(
                f"4-bit activations cannot run on this graph in ONNX Runtime: {exc.detail}",
                "use --act-bits 8 (or 16).",
            ) from exc
        raise ExportError(
            f"the quantized model does not load or run in ONNX Runtime: {exc.detail}",
            "please report this with the model; try --method fp16 or --exclude the named node meanwhile.",
        ) from exc
    f_sess = runtime.session(float_model, "the float model")
    try:
        ref = [f_sess.run(b) for b in batches]
    finally:
        f_sess.close()
    per_output = mean_output_sqnr(ref, got)
    out: dict[str, Any] = {
        "loads_in_onnxruntime": True,
        "output_sqnr_db": {k: round(v, 2) for k, v in per_output.items()},
        "data": description,
        "samples": samples,
        "kind": kind,
    }
    if note:
        out["note"] = note
    if plan is not None and graphs:
        out["kernels"] = census(quantized, graphs[0], plan)
    worst = min(out["output_sqnr_db"].values(), default=float("inf"))
    if recipe.method == "static" and worst < COLLAPSE_DB:
        out["collapse"] = _collapse(float_proto, quantized, batches[:1], recipe, runtime, worst)
    return out


def mean_output_sqnr(refs: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per float output of ``refs``: ``10 log10(sum y^2 / sum (y - y_q)^2)`` over every value of every batch
    (dB; inf when identical), as ``docs/report.md`` defines it and ``evaluate`` computes it, so it does not
    depend on how the samples were batched.  Outputs missing from ``got`` are left out."""
    refs_of: dict[str, list[np.ndarray]] = {}
    got_of: dict[str, list[np.ndarray]] = {}
    for r, q in zip(refs, got, strict=True):
        for k, v in r.items():
            if k in q and np.issubdtype(v.dtype, np.floating):
                refs_of.setdefault(k, []).append(np.asarray(v).ravel())
                got_of.setdefault(k, []).append(np.asarray(q[k]).ravel())
    return {k: float(sqnr_db(np.concatenate(v), np.concatenate(got_of[k]))) for k, v in refs_of.items()}


def check_batches(
    float_model: onnx.ModelProto | Path, calibration: Any, recipe: Recipe, *, calibrated: bool
) -> tuple[list[dict[str, np.ndarray]], str, str, str]:
    """The check's samples, chosen as ``run_check`` chooses them: ``(batches, kind, note, description)``."""
    return _check_data(float_model, calibration, recipe, calibrated)[:4]


def _check_data(
    float_model: onnx.ModelProto | Path, calibration: Any, recipe: Recipe, calibrated: bool
) -> tuple[list[dict[str, np.ndarray]], str, str, str, int]:
    """``check_batches`` and the sample count, as evaluate counts it (``data.conform.feed_samples``: a
    whole feed dict is one sample, a time-major input counts its axis 1)."""
    from edgequant.data.conform import feed_samples
    from edgequant.model.patterns import time_major_inputs

    proto = (
        float_model
        if isinstance(float_model, onnx.ModelProto)
        else onnx.load(str(float_model), load_external_data=False)
    )
    specs = input_specs(proto)
    common: dict[str, Any] = {
        "batch_size": recipe.batch_size, "seed": recipe.seed, "preprocess": recipe.preprocess,
        "input_map": recipe.input_map or None, "options": recipe.data_options or None,
    }  # fmt: skip
    note = ""
    if calibration is None:
        kind = "synthetic"
        source = open_source(None, specs, max_samples=recipe.check_samples, split="eval", **common)
    elif calibrated and (recipe.data_options or {}).get("metadata_csv"):
        kind = "held_out"  # calibration read the CSV's train rows; the check reads its evaluation rows
        source = open_source(calibration, specs, max_samples=recipe.check_samples, split="eval", **common)
    elif calibrated:
        source = open_source(calibration, specs, held_out=recipe.check_samples, part="held", **common)
        kind = "held_out"
        available = source.stats.available
        if source.stats.held_out == 0:  # a single sample: nothing can be held back
            kind = "in_sample"
            source = open_source(calibration, specs, max_samples=recipe.check_samples, **common)
            note = f"the data has {available} sample(s), so the check reads what calibration read."
        elif source.stats.held_out < recipe.check_samples:
            note = (
                f"the data has {available} samples: {source.stats.held_out} held back for the check "
                f"({recipe.check_samples} asked; at most half the data), the rest for calibration."
            )
    else:
        kind = "held_out"  # nothing was calibrated: no sample of the data was seen
        source = open_source(calibration, specs, max_samples=recipe.check_samples, **common)
    batches = list(source)
    whole, timed = bool(getattr(source, "stacked", False)), set(time_major_inputs(proto))
    samples = sum(feed_samples(b, whole=whole, timed=timed) for b in batches)
    return batches, kind, note, source.stats.description, samples


def _collapse(
    float_model: onnx.ModelProto | None,
    quantized: onnx.ModelProto,
    batches: list[dict[str, np.ndarray]],
    recipe: Recipe,
    runtime: OrtRuntime,
    worst: float,
) -> dict[str, Any]:
    """The worst tensors of a collapsed static model and the warning to print."""
    from edgequant.errors import EdgeQuantError
    from edgequant.evaluate.layers import per_layer_error

    layers: list[dict[str, Any]] = []
    if float_model is not None:
        try:
            rep = per_layer_error(float_model, quantized, batches, top_k=0, runtime=runtime)
            layers = [
                {"tensor": t.tensor, "kind": t.kind, "sqnr_db": round(t.sqnr_db, 2)} for t in rep.tensors[:3]
            ]
        except EdgeQuantError:
            layers = []
    named = ", ".join(f"{x['tensor']} ({x['sqnr_db']:.1f} dB)" for x in layers) or "not measured"
    fix = (
        "use per-channel weights (--per-channel)"
        if not recipe.per_channel
        else "try --act-bits 16, --calib-method percentile, --target-sqnr, or --exclude the worst layers"
    )
    return {
        "output_sqnr_db": round(worst, 2),
        "worst_tensors": layers,
        "warning": f"the quantized model has collapsed: output SQNR {worst:.2f} dB (< {COLLAPSE_DB:g} dB) "
        f"against float; worst tensors: {named}; {fix}.",
    }


def describe(check: dict[str, Any]) -> str:
    """One line for the screen: ``32 held-out samples of x.npy``."""
    kind = {"held_out": "held-out", "in_sample": "in-sample (also used for calibration)"}.get(
        check.get("kind", ""), check.get("kind", "")
    )
    return f"{check.get('samples', '?')} {kind} samples of {check.get('data', '?')}"
