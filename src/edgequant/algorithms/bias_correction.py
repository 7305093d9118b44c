"""Bias correction (the ``bias_correction`` pass): remove the per-channel mean shift that quantization
adds to each layer.

Two variants (``recipe.bias_correction_variant``): ``sequential`` (the default,
``algorithms.bias_sequential``: layer by layer, each measured with the layers before it corrected,
against the float model's output of that layer) and ``empirical`` (below: every layer's local shift
at once).  The pass runs after activation ranges are calibrated (``phase = "after_ranges"``) on the
QDQ model; ``bias_correction: true`` / ``--bias-correction`` add it to ``recipe.algorithms``.

Rounding weights and activations is not zero-mean per output channel (Nagel et al. 2019, "Data-Free
Quantization Through Weight Equalization and Bias Correction", sec. 4.2; AIMET's empirical variant):
with ``y = W x + b`` and the quantized layer ``y~ = W~ x~ + b``, ``E[y~ - y]`` per output channel is
a systematic error -- large for depthwise convs and for low-bit weights, where few weights feed each
channel and their rounding errors do not average out.  Adding ``E[y - y~]`` to the bias removes it.

What the empirical variant measures (one pass, all layers at once).  For every quantized Conv, ConvTranspose and Gemm
(and MatMul whose only consumer is an ``Add`` of a constant ``[C]`` vector: the bias), the QDQ model
is augmented with a float twin of the node: the same op on the *float* tensors behind the node's
``_dq`` inputs (``X`` before its QuantizeLinear in the QDQ model -- through a Relu when export folded
that Relu into the quantization of ``X`` --, the float weight and bias of the float model).  Over the calibration data,

    shift_c = E[twin output_c] - E[node output_c]

is accumulated as running per-channel sums of each sample's channel mean and of its square (memory
does not grow with the samples; the channel is axis 1 for Conv outputs ``[N, C, ...]``, the last axis
for Gemm/MatMul).  A channel is corrected only when ``|shift_c| >= MIN_T`` (3) standard errors of
the mean over the samples: a shift that the calibration data cannot tell from zero is noise, and
adding it measurably lowered the output SQNR of PP-OCR cls at int8.  Both read the same input
``x`` as the quantized model sees it, so ``shift_c`` is the layer's own error ``E[(W - W~) x + W~
(x - x~)]``, not the error propagated from upstream layers: correcting every layer at once then does
not count an upstream shift twice, which the one-pass use of ``E[float model] - E[quantized model]``
would.  (Nagel's empirical variant corrects layer by layer, one quantized run per layer; that is not
cheap for a hundred-layer model.)  The shift is added to the node's *float* bias in a copy of the
float model (a zero bias is created when the node has none; a shared bias is copied first), and the
QDQ model is exported again from the calibrated plan, so the int32 bias ``round(b / (s_x s_w))`` is
recomputed; the activation ranges are not recalibrated.  The float model given is never changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms.base import PassOutcome, Quantized, StatRequest, Stats, register
from edgequant.data.base import Batch
from edgequant.errors import DataError
from edgequant.evaluate.layers import _with_outputs, qdq_pairs
from edgequant.export import export_qdq
from edgequant.plan import QuantPlan
from edgequant.recipe.schema import Recipe
from edgequant.runtime import OrtRuntime

log = logging.getLogger(__name__)
OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
TWIN = "_bc_float"
MIN_T = 3.0  # a channel's shift is applied when |mean| >= MIN_T standard errors of the mean


@dataclass
class Target:
    """A quantized node to correct: where its output's channel is, and the bias it writes to."""

    node: str
    op_type: str
    output: str  # the node's output in the QDQ model
    twin: str  # the float twin's output
    axis: int  # 1 for Conv outputs, -1 for Gemm/MatMul
    add: str | None = None  # MatMul: the Add node whose constant input is the bias


@dataclass
class _Sums:
    """Running per-channel sums of the per-sample channel means of ``twin - node`` (and their squares)."""

    s1: np.ndarray | None = None
    s2: np.ndarray | None = None
    count: int = 0

    def update(self, ref: np.ndarray, got: np.ndarray, axis: int) -> None:
        d = np.moveaxis(np.asarray(ref, np.float64) - np.asarray(got, np.float64), axis, -1)
        c = d.shape[-1]
        per = d.reshape(d.shape[0] if d.ndim > 1 else 1, -1, c).mean(axis=1)  # [samples, C]
        if self.s1 is not None and self.s1.size != c:
            raise DataError(
                f"the output's channel count changed between batches ({self.s1.size} then {c}).",
                "calibrate with batches of one model input shape.",
            )
        self.s1 = per.sum(0) if self.s1 is None else self.s1 + per.sum(0)
        self.s2 = (per**2).sum(0) if self.s2 is None else self.s2 + (per**2).sum(0)
        self.count += per.shape[0]

    def shift(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean shift per channel, and its t statistic (mean / standard error over the samples)."""
        assert self.s1 is not None and self.s2 is not None and self.count > 0
        mean = self.s1 / self.count
        var = np.maximum(self.s2 / self.count - mean**2, 0.0) * self.count / max(self.count - 1, 1)
        stderr = np.sqrt(var / self.count)
        t = np.where(stderr > 0, np.abs(mean) / np.maximum(stderr, 1e-300), np.inf)
        return mean, t


def targets(
    float_model: onnx.ModelProto, quantized: onnx.ModelProto, plan: QuantPlan
) -> tuple[list[Target], list[dict[str, str]]]:
    """The nodes to correct, and the quantized compute nodes skipped with their reason."""
    planned = {d.node: d.op_type for d in plan.quantized_nodes if d.graph == "main" and d.op_type in OPS}
    qnodes = {n.name: n for n in quantized.graph.node if n.name}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in float_model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name for t in float_model.graph.initializer}
    outputs = {o.name for o in float_model.graph.output}
    out: list[Target] = []
    skipped: list[dict[str, str]] = []
    for fnode in float_model.graph.node:
        if fnode.name not in planned:
            continue
        qnode = qnodes.get(fnode.name)
        if qnode is None or not qnode.output:
            skipped.append({"node": fnode.name, "reason": "it is not in the QDQ model under its name"})
            continue
        axis = 1 if fnode.op_type in ("Conv", "ConvTranspose") else -1
        add = None
        if fnode.op_type == "MatMul":
            readers = consumers.get(fnode.output[0], [])
            bias = [i for i in readers[0].input if i in inits] if len(readers) == 1 else []
            if fnode.output[0] in outputs or readers[0].op_type != "Add" or len(bias) != 1:
                skipped.append(
                    {"node": fnode.name, "reason": "a MatMul not followed by an Add of a constant"}
                )
                continue
            add = readers[0].name
        if len(fnode.input) > 2 and fnode.input[2] and fnode.input[2] not in inits:
            skipped.append({"node": fnode.name, "reason": f"its bias '{fnode.input[2]}' is not a constant"})
            continue
        out.append(Target(fnode.name, fnode.op_type, qnode.output[0], qnode.output[0] + TWIN, axis, add))
    return out, skipped


def with_twins(
    float_model: onnx.ModelProto, quantized: onnx.ModelProto, found: list[Target]
) -> onnx.ModelProto:
    """A copy of ``quantized`` with each target's float twin and both outputs as graph outputs."""
    pairs, _ = qdq_pairs(float_model, quantized)
    model = _with_outputs(quantized, [o for t in found for o in (t.output, t.twin)])
    g = model.graph
    have = {t.name for t in g.initializer}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    by_name = {n.name: n for n in g.node}
    # a Relu that export folded into its input's quantization: the QDQ model's tensor under the Relu's
    # output name holds the producer's unclamped output, so the twin reads it through a Relu of its own
    folded = {
        n.output[0]: n.name for n in float_model.graph.node if n.op_type == "Relu" and n.name not in by_name
    }
    relued: dict[str, str] = {}
    for t in found:
        node = by_name[t.node]
        inputs = [pairs.get(i, i) for i in node.input]
        for k, name in enumerate(inputs):
            if name in folded and pairs.get(node.input[k]) == name:
                if name not in relued:
                    relued[name] = name + TWIN
                    g.node.append(helper.make_node("Relu", [name], [relued[name]], name=folded[name] + TWIN))
                inputs[k] = relued[name]
        for name in inputs:
            if name not in have and name in float_inits:  # a float weight or bias the QDQ model dropped
                g.initializer.append(float_inits[name])
                have.add(name)
        twin = helper.make_node(node.op_type, inputs, [t.twin], name=t.node + TWIN, domain=node.domain)
        twin.attribute.extend(node.attribute)
        g.node.append(twin)
    return model


def measure(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    found: list[Target],
    source: Iterable[Batch],
    runtime: OrtRuntime,
) -> tuple[dict[str, np.ndarray], int]:
    """Per target, ``E[twin] - E[node]`` per channel over ``source`` (0 where it is below ``MIN_T``
    standard errors); and the number of batches read."""
    model = with_twins(float_model, quantized, found)
    fetch = [o for t in found for o in (t.output, t.twin)]
    sums = {t.node: _Sums() for t in found}
    batches = 0
    session = runtime.session(model, "the QDQ model with float twins for bias correction")
    try:
        for batch in source:
            got = session.run(batch, fetch)
            for t in found:
                try:
                    sums[t.node].update(got[t.twin], got[t.output], t.axis)
                except DataError as exc:
                    raise DataError(f"node '{t.node}': {exc.detail}", exc.hint) from exc
            del got
            batches += 1
    finally:
        session.close()
    if batches == 0:
        raise DataError(
            "the calibration data yielded no batches for bias correction.", "pass calibration data."
        )
    out: dict[str, np.ndarray] = {}
    for name, acc in sums.items():
        mean, tstat = acc.shift()
        out[name] = np.where(tstat >= MIN_T, mean, 0.0)
    return out, batches


def corrected_model(
    float_model: onnx.ModelProto, found: list[Target], shifts: dict[str, np.ndarray]
) -> onnx.ModelProto:
    """A copy of ``float_model`` whose target biases have the shifts added (``float_model`` unchanged)."""
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    g = model.graph
    nodes = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    taken = set(inits) | {o for n in g.node for o in n.output} | {i.name for i in g.input}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    for t in found:
        shift = shifts[t.node]
        if t.add is not None:
            node, slot = nodes[t.add], next(i for i, x in enumerate(nodes[t.add].input) if x in inits)
        else:
            node, slot = nodes[t.node], 2
        name = node.input[slot] if len(node.input) > slot else ""
        old = (
            numpy_helper.to_array(inits[name]).astype(np.float64)
            if name
            else np.zeros(shift.shape, np.float64)
        )
        new = _add_shift(old, shift)
        dtype = numpy_helper.to_array(inits[name]).dtype if name else np.float32
        if name and uses.get(name, 0) == 1 and name not in {i.name for i in g.input}:
            inits[name].CopyFrom(numpy_helper.from_array(new.astype(dtype), name))
            continue
        bias = fresh(f"{t.node}_bias" if not name else f"{name}_{t.node}")
        g.initializer.append(numpy_helper.from_array(new.astype(dtype), bias))
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = bias
    return model


def _add_shift(bias: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``bias + shift`` with the shift on the bias's last axis (a scalar or size-1 bias is broadcast)."""
    c = shift.size
    if bias.size == c and (bias.ndim <= 1 or bias.shape[-1] == c):
        return bias + shift.reshape(bias.shape)
    if bias.ndim == 0 or bias.shape[-1] == 1:
        lead = bias.shape[:-1] if bias.ndim else ()
        return np.broadcast_to(bias, (*lead, c)) + shift
    if bias.shape[-1] == c:
        return bias + shift
    raise DataError(
        f"a bias of shape {bias.shape} does not broadcast to {c} output channels.",
        "exclude the node from bias correction with --exclude.",
    )


def correct_biases(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    plan: QuantPlan,
    *,
    calibrated: QuantPlan,
    source: Iterable[Batch],
    runtime: OrtRuntime,
    variant: str = "sequential",
) -> tuple[onnx.ModelProto, QuantPlan, onnx.ModelProto, dict[str, Any]]:
    """Bias-correct the QDQ model ``quantized`` (module docstring).

    ``quantized``/``plan`` are the static QDQ model and its exported plan, ``calibrated`` the plan
    before export, ``source`` the calibration batches (re-iterable for ``variant`` "sequential").
    Returns the new QDQ model, its plan, the bias-corrected float model it was exported from (to
    re-export from later, e.g. by ``keep_sensitive_float``), and the report's ``bias_correction``
    section (its ``nodes`` lists every measured node, largest mean shift first).
    """
    from edgequant.algorithms import bias_sequential

    t0 = time.perf_counter()
    found, skipped = targets(float_model, quantized, plan)
    mode = {
        "sequential": "sequential: layer by layer, against the float layer's output, earlier layers corrected",
        "empirical": "empirical: one pass, per-layer (local) shift",
    }[variant]
    section: dict[str, Any] = {"variant": variant, "mode": mode, "skipped": skipped}
    if not found:
        section.update(
            nodes_corrected=0, batches=0, top_shifts=[], nodes=[], seconds=round(time.perf_counter() - t0, 3)
        )
        plan.notes.append("bias correction: no quantized Conv/Gemm/MatMul+Add node to correct.")
        return quantized, plan, float_model, section
    if variant == "sequential":
        shifts, section["runs"], section["rejected"] = bias_sequential.measure(
            float_model, quantized, calibrated, found, source, runtime
        )
    else:
        shifts, section["batches"] = measure(float_model, quantized, found, source, runtime)
    model = corrected_model(float_model, found, shifts)
    quantized, plan = export_qdq(model, calibrated)
    size = {t.node: float(np.mean(np.abs(shifts[t.node]))) for t in found}
    order = sorted(found, key=lambda t: (-size[t.node], t.node))
    rows: list[dict[str, Any]] = [
        {
            "node": t.node,
            "op_type": t.op_type,
            "channels": int(shifts[t.node].size),
            "channels_corrected": int(np.count_nonzero(shifts[t.node])),
            "mean_abs_shift": round(size[t.node], 6),
            "max_abs_shift": round(float(np.max(np.abs(shifts[t.node]))), 6),
        }
        for t in order
    ]
    section.update(
        nodes_measured=len(found),
        nodes_corrected=sum(1 for t in found if np.any(shifts[t.node])),
        top_shifts=rows[:5],
        nodes=rows,
        seconds=round(time.perf_counter() - t0, 3),
    )
    top = ", ".join(f"{r['node']} {r['mean_abs_shift']:.3g}" for r in rows[:3])
    plan.notes.append(
        f"bias correction ({variant}): {section['nodes_corrected']} of {len(found)} node(s) had the per-channel "
        f"mean shift of their quantized output (where >= {MIN_T:g} standard errors over the calibration "
        f"samples) added to their float bias; largest mean |shift|: {top}."
    )
    return quantized, plan, model, section


@register("bias_correction")
class BiasCorrection:
    """After ranges: each quantized layer's per-channel output mean error goes into its float bias."""

    name = "bias_correction"
    phase = "after_ranges"

    def __init__(self, recipe: Recipe) -> None:
        self.variant: str = recipe.bias_correction_variant
        self.samples: int = recipe.calib_samples

    def stat_requests(self, state: Quantized) -> StatRequest:
        return StatRequest(self.samples, f"{self.variant}: per-channel output means of the quantized layers")

    def apply_quantized(self, state: Quantized, stats: Stats) -> tuple[Quantized, PassOutcome]:
        quantized, plan, model, section = correct_biases(
            state.float_model, state.model, state.plan, calibrated=state.calibrated, source=stats,
            runtime=stats.runtime, variant=self.variant,
        )  # fmt: skip
        rejected = [
            f"{n}: its level's correction was undone (output SQNR on the even / odd calibration batches "
            f"{r['sqnr_without_db']} dB without it, {r['sqnr_with_db']} dB with it)"
            for r in section.get("rejected", [])
            for n in r["nodes"]
        ]
        changed = [
            f"{r['node']}: {r['channels_corrected']} of {r['channels']} channel biases moved, mean |shift| "
            f"{r['mean_abs_shift']:.3g}"
            for r in section["nodes"]
            if r["channels_corrected"]
        ]
        nothing = f"no channel's mean shift reached {MIN_T:g} standard errors over the calibration samples"
        outcome = PassOutcome(
            changed=changed,
            skipped=[f"{s['node']}: {s['reason']}" for s in section["skipped"]] + rejected,
            nothing_to_do=""
            if changed
            else nothing
            if section["nodes"]
            else "no quantized Conv/Gemm/MatMul+Add node",
            details={"variant": self.variant},
            report={"bias_correction": section},
        )
        return Quantized(model, state.calibrated, quantized, plan, state.reference), outcome
