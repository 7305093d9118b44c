"""What the plan's float and 16-bit activations are worth: each kind's measured end-to-end effect.

The planner keeps some activations float by placement (LayerNorm, residual Adds, Softmax, GELU parts,
the attention-mask path: ORT fuses or runs them in float) and ``act16`` gives a few tensors 16 bits.
Each has a reason in the plan; this module measures what each choice is worth, cheaply, by kind:

- the float activations (float32 outputs of the main graph's nodes that the plan leaves unquantized)
  are grouped by kind: producer op type -> reader op types (``MatMul -> Softmax``, ``Add ->
  LayerNormalization``, ``MatMul -> graph output``); for each group, the calibrated QDQ model with that
  whole group additionally quantized at 8 bits (one Q/DQ pair after each tensor, every reader and a
  graph output reading its DQ; min-max range over ``judge.JUDGE_CALIB`` calibration samples) is run
  on the first ``SAMPLES`` held-out samples the passes are judged on (never the check's), and its output SQNR
  (``base.quantized_sqnr``: first output, padded positions left out; a model with carried state streamed
  over runs of consecutive frames, ``judge.set_reference``) is compared with the plan's own
  QDQ model: ``effect_db = SQNR(group at 8 bits) - SQNR(plan)``, negative when 8 bits would cost;
- the 16-bit activations, grouped the same way, are exported at 8 bits instead (same range).

A tensor whose range is unknown (mask sentinels ``-inf`` / ``finfo.min``, no finite value) is listed
"not measured" with the reason and left out of its group.  Cost: one min-max stream over
``JUDGE_CALIB`` samples, one run over the held-out samples for the plan's own QDQ model (the
pipeline's export, passed in, not exported again), then one per kind (a 16-bit kind exported once
more at 8 bits; at most ``MAX_KINDS`` kinds, the rest listed "not measured").  Without held-out
samples (fewer than ``base.HELD_OUT // 2`` beyond the calibration ones) nothing is measured and the
section says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms import base
from edgequant.algorithms.judge import JUDGE_CALIB, describe_carry, set_reference
from edgequant.data.base import Batch
from edgequant.export._graph import collect_elem_types
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe
from edgequant.schemes.qparams import qparams_from_range
from edgequant.schemes.spec import QuantSpec

MAX_KINDS = 24  # groups measured per run; one trial model + one held-out run each
SAMPLES = 16  # of the passes' held-out samples, measured on (all-MiniLM-L6-v2: 17 kinds, ~70 s at 32)


def measure(
    model: onnx.ModelProto,
    plan: QuantPlan,
    ctx: base.Context,
    open_source: Callable[[Recipe], Iterable[Batch]],
    baseline_model: onnx.ModelProto,
) -> dict[str, Any] | None:
    """The ``float_effect`` report section for the calibrated ``plan`` on ``model`` (float ONNX, the
    one the plan exports from); None when the plan quantizes no activation or keeps none float/16-bit.
    ``baseline_model`` is ``export_qdq(model, plan)``'s model (the pipeline's own export, not
    modified here: each kind's trial is a copy).

    Returns ``{"measured_on", "baseline_sqnr_db", "kinds": [{kind, tensors, effect_db | not_measured}],
    "tensors": [{tensor, kind, precision, reason, effect_db | not_measured}], "seconds"}``; dB are
    output-SQNR differences (module docstring)."""
    from edgequant.export import export_qdq
    from edgequant.observe import collect

    t0 = time.perf_counter()
    acts = {n: plan.tensors[n] for n in plan.activations()}
    if not acts:
        return None
    wide = [e for e in acts.values() if e.spec.bits > 8]
    rows = _float_tensors(model, plan, set(acts))
    if not rows and not wide:
        return None
    spec8 = next((e.spec for e in acts.values() if e.spec.bits == 8), QuantSpec(bits=8, signed=False))
    for e in wide:
        rows.append(
            {"tensor": e.name, "kind": f"16-bit {_producer_op(model, e.name)}", "precision": f"{e.spec.bits}-bit",
             "reason": e.note or "16-bit in the plan"}
        )  # fmt: skip
    local = _held_context(ctx, model, open_source)
    section: dict[str, Any] = {"measured_on": local.held_out_on, "baseline_sqnr_db": None}
    if not local.held_out:
        for r in rows:
            r["not_measured"] = local.held_out_on
        return {**section, "kinds": [], "tensors": rows, "seconds": round(time.perf_counter() - t0, 3)}
    floats = [r["tensor"] for r in rows if r["precision"] == "float"]
    ranges: dict[str, tuple[float, float]] = {}
    if floats:
        samples = min(JUDGE_CALIB, ctx.recipe.calib_samples)
        res = collect(
            model, base.Stats(local.data, samples, ctx.runtime, ctx.recipe), floats, method="minmax",
            runtime=ctx.runtime, max_samples=samples,
        )  # fmt: skip
        for r in rows:
            name = r["tensor"]
            if r["precision"] != "float":
                continue
            lo_hi = res.ranges.get(name)
            if res.sentinels.get(name):
                r["not_measured"] = (
                    f"range unknown: {res.sentinels[name]} mask sentinel value(s) (-inf / finfo.min)"
                )
            elif lo_hi is None or not all(np.isfinite(lo_hi)):
                r["not_measured"] = "range unknown: no finite value observed"
            else:
                ranges[name] = (float(lo_hi[0]), float(lo_hi[1]))
    baseline = base.quantized_sqnr(baseline_model, local)
    exported = {o for n in baseline_model.graph.node for o in n.output}
    for r in rows:
        if r["precision"] == "float" and "not_measured" not in r and r["tensor"] not in exported:
            r["not_measured"] = "not in the exported QDQ model (its node was folded away)"
    section["baseline_sqnr_db"] = baseline
    kinds: list[dict[str, Any]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if "not_measured" not in r:
            groups.setdefault(r["kind"], []).append(r)
    for i, (kind, members) in enumerate(sorted(groups.items())):  # then listed by effect, worst first
        names = [m["tensor"] for m in members]
        if i >= MAX_KINDS:
            why = f"not measured: over the {MAX_KINDS} kinds measured per run"
            for m in members:
                m["not_measured"] = why
            kinds.append({"kind": kind, "tensors": len(names), "not_measured": why})
            continue
        if kind.startswith("16-bit"):
            narrowed = QuantPlan.from_dict(plan.to_dict())
            for n in names:
                narrowed.tensors[n].spec = QuantSpec(
                    **{**narrowed.tensors[n].spec.to_dict(), **_eight(spec8)}
                )
            trial = export_qdq(model, narrowed)[0]
        else:
            trial = _with_qdq(baseline_model, {n: ranges[n] for n in names}, spec8)
        got = base.quantized_sqnr(trial, local)
        effect = None if got is None or baseline is None else round(got - baseline, 2)
        kinds.append({"kind": kind, "tensors": len(names), "sqnr_db": got, "effect_db": effect})
        for m in members:
            m["effect_db"] = effect
    kinds.sort(key=lambda k: (k.get("effect_db") is None, k.get("effect_db") or 0.0))
    section.update(kinds=kinds, tensors=rows, seconds=round(time.perf_counter() - t0, 3))
    return section


def _eight(spec: QuantSpec) -> dict[str, Any]:
    return {"bits": 8, "signed": spec.signed}


def _producer_op(model: onnx.ModelProto, name: str) -> str:
    return next((n.op_type for n in model.graph.node if name in n.output), "input")


def _float_tensors(model: onnx.ModelProto, plan: QuantPlan, planned: set[str]) -> list[dict[str, Any]]:
    """float32 outputs of main-graph nodes that the plan does not quantize, with kind and reason."""
    # over 2 GB shape inference refuses a proto: the types the model declares (``prepare`` infers them)
    typed = model if model.ByteSize() > 2**31 - 1 else onnx.shape_inference.infer_shapes(model)
    types = collect_elem_types(typed.graph)
    decisions = {d.node: d for d in plan.nodes if d.graph == "main"}
    inits = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    rows: list[dict[str, Any]] = []
    for node in model.graph.node:
        d = decisions.get(node.name)
        for out in node.output:
            if not out or out in planned or out in inits or types.get(out) != onnx.TensorProto.FLOAT:
                continue
            users = readers.get(out, [])
            into = sorted({u.op_type for u in users} | ({"graph output"} if out in outputs else set()))
            if d is not None and not d.quantized:
                reason = d.reason or "kept float"
            else:  # a quantized (or unplanned) producer: its output stays float for its readers' sake
                kept = [
                    decisions[u.name]
                    for u in users
                    if u.name in decisions and not decisions[u.name].quantized
                ]
                reason = (
                    f"read by {kept[0].op_type} '{kept[0].node}', kept float: {kept[0].reason}" if kept
                    else "a graph output (left float)" if out in outputs
                    else f"output of {node.op_type} '{node.name}', not quantized by placement"
                )  # fmt: skip
            kind = f"{node.op_type} -> {'/'.join(into) or 'nothing'}"
            rows.append({"tensor": out, "kind": kind, "precision": "float", "reason": reason})
    return rows


def _held_context(
    ctx: base.Context, model: onnx.ModelProto, open_source: Callable[[Recipe], Iterable[Batch]]
) -> base.Context:
    """The passes' held-out samples and reference, or the same ones drawn here when no pass ran;
    ``held_out`` empty (and ``held_out_on`` the reason) when there are too few."""
    recipe = ctx.recipe
    held, on = ctx.held_out, ctx.held_out_on
    for said in ("; streamed as", "; one step per frame"):  # said of all the passes' frames: said afresh
        on = on.split(said)[0]
    if not held:
        extra = recipe.replace(calib_samples=recipe.calib_samples + base.HELD_OUT)
        held = base.held_out(open_source(extra), recipe.calib_samples)
        count = base.sample_count(held)
        on = f"{count} held-out samples (after the calibration ones; not the check's)"
        if count < base.HELD_OUT // 2:
            held, on = (
                [],
                (
                    f"not measured: {count} sample(s) beyond the calibration ones and those the check holds "
                    f"back, fewer than {base.HELD_OUT // 2}"
                ),
            )
    held = base.first_samples(held, SAMPLES)
    if held:
        first = base.sample_count(held)
        on = f"the first {first} of the {on}"
    local = base.Context(recipe, ctx.runtime, lambda: open_source(recipe), held)
    local.held_out_on = on
    if held and ctx.held_out:  # the passes' frames: their streams, found on the float model as given
        local.pairs, local.carry = ctx.pairs, ctx.carry[: len(held)]
        if local.pairs:
            describe_carry(local, [i for i, _ in local.pairs])
        local.reference = base._outputs(model, local)  # the float model the plan exports from
    elif held:  # a model with carried state streamed (judge.py)
        set_reference(model, local)
    return local


def _with_qdq(
    qdq: onnx.ModelProto, ranges: dict[str, tuple[float, float]], spec: QuantSpec
) -> onnx.ModelProto:
    """A copy of ``qdq`` with a Q/DQ pair (``spec``, each tensor's range) on each named float tensor:
    its producer writes ``<name>_eqf``, and the DQ writes ``<name>``, so every reader (and a graph
    output) reads the quantized value."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    g = out.graph
    nodes: list[onnx.NodeProto] = []
    dtype = np.int8 if spec.signed else np.uint8
    for node in g.node:
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name not in ranges:
                continue
            raw, q = f"{name}_eqf", f"{name}_eqq"
            node.output[i] = raw
            scale, zero = qparams_from_range(*ranges[name], spec)
            g.initializer.extend(
                [
                    numpy_helper.from_array(np.asarray(scale, np.float32).reshape(()), f"{name}_eqs"),
                    numpy_helper.from_array(np.asarray(zero).astype(dtype).reshape(()), f"{name}_eqz"),
                ]
            )
            args = [f"{name}_eqs", f"{name}_eqz"]
            nodes.append(helper.make_node("QuantizeLinear", [raw, *args], [q], name=q))
            nodes.append(helper.make_node("DequantizeLinear", [q, *args], [name], name=f"{name}_eqd"))
    del g.node[:]
    g.node.extend(nodes)
    return out
