"""Mixed precision by measured sensitivity: keep float the few nodes that cost the most output SQNR.

``--target-sqnr T`` asks that the static QDQ model's output reach ``T`` dB of SQNR against the float
model (``SQNR = 10 log10(sum f^2 / sum (f - q)^2)`` over all elements of a few calibration batches;
with several float outputs, the lowest).  When plain static quantization falls short:

1. Rank.  Each quantized node's *isolated* output SQNR ``S_i`` -- the output SQNR when only that node
   reads quantized tensors (``evaluate.layers.per_layer_error``, the AIMET-QuantAnalyzer-style
   per-layer analysis) -- is measured for every quantized node.  If the nodes' quantization noises
   are roughly independent, their powers add: ``10^(-S/10) ~ sum_i 10^(-S_i/10)``, so the node with
   the lowest ``S_i`` holds the largest share of the output noise, and is tried first.
2. Keep float, greedily.  In that order, one candidate at a time is added to the float set: the
   graph is re-planned with the set excluded (``planner.resolve``), the calibrated ranges of the
   first plan are copied for the tensors that remain (the float tensors are the same, so nothing is
   recalibrated), Relu/Clip ranges are tied again, the QDQ model is exported and its output SQNR
   measured.  A candidate that raises the output SQNR by less than ``MIN_GAIN_DB`` is put back
   (quantized) -- e.g. an Add whose inputs are written quantized by integer Convs, which stays as
   noisy when it runs in float -- and the next is tried.
3. Stop when the target is met, or give up when the cap of float nodes is reached, ``2 * cap + 2``
   candidates have been tried, or no candidate is left: the best model reached is returned with
   ``section["met"] = False`` and ``section["failure"]`` naming the SQNR reached and the nodes kept
   float (the pipeline then raises ``TargetNotMetError`` carrying that result, and the CLI writes it
   and exits 1).  The last quantized compute node is never kept float: that result would be a float
   copy of the model with a few idle Q/DQ pairs.

The cap (``max_float_nodes``) defaults to 10 % of the quantized compute nodes (Conv, ConvTranspose,
MatMul, Gemm), at least ``MIN_DEFAULT_CAP`` (3: one node is too few on a small model) and at most
all but one of them.  Every node kept float gets its reason in the plan, and the run's numbers
(target, SQNR before and after, nodes with their isolated SQNR, seconds) form the report's
``sensitivity`` section.

It runs as the ``mixed_precision`` pass (``phase = "after_ranges"``: on the calibrated QDQ model);
``target_sqnr_db`` / ``--target-sqnr`` add it to ``recipe.algorithms``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from edgequant import planner
from edgequant.algorithms.base import PassOutcome, Quantized, StatRequest, Stats, register, sample_count
from edgequant.data.base import Batch
from edgequant.evaluate.layers import per_layer_error
from edgequant.evaluate.metrics import sqnr_db
from edgequant.export import export_qdq
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.recipe import Recipe
from edgequant.runtime import CpuFeatures, OrtRuntime

log = logging.getLogger(__name__)
MIN_GAIN_DB = 0.05  # a float node must raise the output SQNR by this much to stay float
DEFAULT_CAP_FRACTION = 0.10
MIN_DEFAULT_CAP = 3


@dataclass(frozen=True)
class Candidate:
    """A quantized node and its isolated output SQNR (dB): the output's SQNR when only it is quantized."""

    node: str
    op_type: str
    isolated_sqnr_db: float


def default_cap(plan: QuantPlan) -> int:
    """10 % of the quantized compute nodes of ``plan``, at least 3, at most all but one (at least 1)."""
    compute = sum(1 for d in plan.quantized_nodes if d.graph == "main" and d.op_type in planner.COMPUTE_OPS)
    return max(1, min(compute - 1, max(MIN_DEFAULT_CAP, int(compute * DEFAULT_CAP_FRACTION))))


def output_sqnr(
    float_outputs: dict[str, np.ndarray], model: onnx.ModelProto, samples: list[Batch], runtime: OrtRuntime
) -> dict[str, float]:
    """Per float output, the SQNR (dB) of ``model`` against the concatenated float outputs."""
    session = runtime.session(model, "a candidate mixed-precision model")
    try:
        got: dict[str, list[np.ndarray]] = {k: [] for k in float_outputs}
        for batch in samples:
            out = session.run(batch, list(float_outputs))
            for k in float_outputs:
                got[k].append(np.asarray(out[k], np.float64).reshape(-1))
    finally:
        session.close()
    return {k: sqnr_db(ref, np.concatenate(got[k])) for k, ref in float_outputs.items()}


def float_outputs(model: onnx.ModelProto, samples: list[Batch], runtime: OrtRuntime) -> dict[str, np.ndarray]:
    """The float model's floating-point outputs on ``samples``, each flattened and concatenated (float64)."""
    session = runtime.session(model, "the float model")
    try:
        parts: dict[str, list[np.ndarray]] = {}
        for batch in samples:
            for k, v in session.run(batch).items():
                if np.issubdtype(np.asarray(v).dtype, np.floating):
                    parts.setdefault(k, []).append(np.asarray(v, np.float64).reshape(-1))
    finally:
        session.close()
    return {k: np.concatenate(v) for k, v in parts.items()}


def rank(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    plan: QuantPlan,
    samples: list[Batch],
    output: str,
    runtime: OrtRuntime,
) -> list[Candidate]:
    """Every quantized node of ``plan`` with its isolated output SQNR on ``output``, worst first."""
    planned = {d.node: d.op_type for d in plan.quantized_nodes if d.graph == "main"}
    report = per_layer_error(
        float_model, quantized, samples, top_k=len(quantized.graph.node), output=output, runtime=runtime
    )
    out = [Candidate(n.node, n.op_type, n.output_sqnr_db) for n in report.isolated if n.node in planned]
    return sorted(out, key=lambda c: (c.isolated_sqnr_db, c.node))


def requantize(
    float_model: onnx.ModelProto,
    calibrated: QuantPlan,
    recipe: Recipe,
    cpu: CpuFeatures,
    keep_float: list[Candidate],
) -> tuple[onnx.ModelProto, QuantPlan]:
    """The QDQ model with ``keep_float`` excluded, on the ranges of ``calibrated`` (no recalibration).

    ``calibrated`` is the plan as calibration left it (before export).  A tensor the new plan wants
    but ``calibrated`` lacks was dropped from it for a reason recorded in its notes (e.g. a mask
    sentinel), so it is dropped here too; specs (and their notes) come from ``calibrated`` so a
    per-tensor fallback made there holds here as well.
    """
    exact = tuple("re:" + re.escape(c.node) for c in keep_float)
    plan = planner.resolve(float_model, recipe.replace(exclude=(*recipe.exclude, *exact)), cpu)
    plan.opset = calibrated.opset
    plan.notes = list(calibrated.notes)
    for name in list(plan.tensors):
        first = calibrated.tensors.get(name)
        if first is None:
            del plan.tensors[name]
            continue
        plan.tensors[name] = TensorEntry(name, first.role, first.spec, first.lo, first.hi, note=first.note)
    for c in keep_float:
        plan.decide(
            c.node,
            c.op_type,
            False,
            f"kept float by --target-sqnr: alone it limits the output SQNR to {c.isolated_sqnr_db:.1f} dB "
            "(the output's SQNR against float when only this node is quantized).",
        )
    plan = planner.tie_activation_ranges(float_model, plan)
    return export_qdq(float_model, plan, float_readers={c.node for c in keep_float})


def keep_sensitive_float(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    plan: QuantPlan,
    *,
    calibrated: QuantPlan,
    recipe: Recipe,
    samples: list[Batch],
    cpu: CpuFeatures,
    runtime: OrtRuntime,
    reference: onnx.ModelProto | None = None,
) -> tuple[onnx.ModelProto, QuantPlan, dict[str, Any]]:
    """Meet ``recipe.target_sqnr_db`` by keeping the most sensitive nodes float (module docstring).

    ``quantized``/``plan`` are the static QDQ model and its exported plan, ``calibrated`` the plan
    before export; ``samples`` a few calibration batches.  Returns the model, its plan, and the
    report's ``sensitivity`` section; when the target cannot be met, the best model reached, with
    ``section["met"]`` False and ``section["failure"]`` = ``{"detail", "hint"}``.
    ``reference`` is the float model SQNRs are measured against when ``float_model`` (the one that is
    re-exported) differs from it, e.g. after bias correction changed its biases.
    """
    if recipe.target_sqnr_db is None:
        raise ValueError("keep_sensitive_float needs recipe.target_sqnr_db")  # a caller bug, not user input
    t0 = time.perf_counter()
    target = recipe.target_sqnr_db
    cap = recipe.max_float_nodes or default_cap(plan)
    ref_model = float_model if reference is None else reference
    ref = float_outputs(ref_model, samples, runtime)
    before = output_sqnr(ref, quantized, samples, runtime)
    worst = min(before, key=lambda k: before[k])
    section: dict[str, Any] = {
        "target_sqnr_db": target,
        "output": worst,
        "samples": sample_count(samples),
        "max_float_nodes": cap,
        "sqnr_before_db": round(before[worst], 2),
        "sqnr_after_db": round(before[worst], 2),
        "kept_float": [],
        "tried_without_gain": [],
        "met": True,
    }
    if before[worst] >= target:
        section["seconds"] = round(time.perf_counter() - t0, 3)
        plan.notes.append(
            f"--target-sqnr {target:g} dB: met by static quantization alone ({before[worst]:.1f} dB); "
            "no node kept float."
        )
        return quantized, plan, section
    ranked = rank(ref_model, quantized, plan, samples, worst, runtime)
    section["ranked"] = [_row(c) for c in ranked[:20]]
    kept: list[Candidate] = []
    current = before[worst]
    trials = 0
    compute = {d.node for d in plan.quantized_nodes if d.op_type in planner.COMPUTE_OPS and d.graph == "main"}
    for cand in ranked:
        if len(kept) >= cap or trials >= 2 * cap + 2:
            break
        if compute <= {c.node for c in (*kept, cand)}:  # an all-float result would be a float copy
            section["not_tried"] = {**_row(cand), "reason": "it is the last quantized compute node"}
            continue
        trials += 1
        model, new_plan = requantize(float_model, calibrated, recipe, cpu, [*kept, cand])
        got = min(output_sqnr(ref, model, samples, runtime).values())
        log.info("keeping %s float: output SQNR %.2f -> %.2f dB", cand.node, current, got)
        if got < current + MIN_GAIN_DB:
            section["tried_without_gain"].append({**_row(cand), "sqnr_with_it_float_db": round(got, 2)})
            continue
        kept.append(cand)
        section["kept_float"].append({**_row(cand), "sqnr_after_db": round(got, 2)})
        quantized, plan, current = model, new_plan, got
        if current >= target:
            break
    section["sqnr_after_db"] = round(current, 2)
    section["seconds"] = round(time.perf_counter() - t0, 3)
    names = ", ".join(f"{c.node} ({c.isolated_sqnr_db:.2f} dB alone)" for c in kept) or "none"
    if current < target:
        why = (
            f"the cap of {cap} float node(s) (--max-float-nodes) is reached"
            if len(kept) >= cap
            else f"{trials} candidates were tried (at most 2 x cap + 2)"
            if trials >= 2 * cap + 2
            else f"no quantized node is left to try ({trials} tried)"
        )
        section["met"] = False
        section["failure"] = {
            "detail": f"--target-sqnr {target:g} dB was not reached: the output SQNR is {current:.2f} dB "
            f"(static alone: {before[worst]:.2f} dB) with {len(kept)} node(s) kept float: {names}; {why}.",
            "hint": "lower --target-sqnr, raise --max-float-nodes, or use --act-bits 16 (or --method fp16).",
        }
        return quantized, plan, section  # said once: the error (and the report's warning) carries it
    plan.notes.append(
        f"--target-sqnr {target:g} dB: output SQNR {before[worst]:.1f} -> {current:.1f} dB on "
        f"{section['samples']} calibration sample(s) by keeping {len(kept)} node(s) float: {names}."
    )
    return quantized, plan, section


def _row(c: Candidate) -> dict[str, Any]:
    return {"node": c.node, "op_type": c.op_type, "isolated_sqnr_db": round(c.isolated_sqnr_db, 2)}


@register("mixed_precision")
class MixedPrecision:
    """After ranges: keep the most sensitive nodes float until ``recipe.target_sqnr_db`` is met."""

    name = "mixed_precision"
    phase = "after_ranges"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def stat_requests(self, state: Quantized) -> StatRequest:
        return StatRequest(2 * self.recipe.batch_size, "calibration samples: output SQNR of each candidate")

    def apply_quantized(self, state: Quantized, stats: Stats) -> tuple[Quantized, PassOutcome]:
        from edgequant.runtime import detect

        quantized, plan, section = keep_sensitive_float(
            state.float_model, state.model, state.plan, calibrated=state.calibrated, recipe=self.recipe,
            samples=list(stats), cpu=detect(), runtime=stats.runtime,
            reference=state.reference,
        )  # fmt: skip
        changed = [
            f"{k['node']}: kept float (alone it limits the output to {k['isolated_sqnr_db']} dB); output "
            f"SQNR then {k['sqnr_after_db']} dB"
            for k in section["kept_float"]
        ]
        skipped = [
            f"{t['node']}: kept float it gave {t['sqnr_with_it_float_db']} dB, less than {MIN_GAIN_DB} dB gained"
            for t in section["tried_without_gain"]
        ]
        target = section["target_sqnr_db"]
        nothing = (
            f"the target {target:g} dB is met by static quantization alone ({section['sqnr_before_db']} dB)"
            if section["met"]
            else "no node kept float raised the output SQNR"
        )
        outcome = PassOutcome(
            changed=changed,
            skipped=skipped,
            nothing_to_do="" if changed else nothing,
            details={"target_sqnr_db": target, "met": section["met"]},
            report={"sensitivity": section},
        )
        return Quantized(state.float_model, state.calibrated, quantized, plan, state.reference), outcome
