"""SmoothQuant: move per-channel activation outliers into the weights of the MatMuls that read them.

Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models", ICML 2023 (arXiv:2211.10438).  A transformer's LayerNorm outputs and FFN hidden state carry a
few channels whose values are tens of times larger than the rest; one per-tensor 8-bit grid sized for
them leaves the other channels a few steps.  For ``Y = X·W`` (X [tokens, C], W [C, N]) and a positive
vector ``s`` [C], ``Y = (X/s)·(s·W)`` exactly; with

    s_j = max|X_j|^α / max|W_j|^(1-α)        (max over calibration tokens / over W's row j)

the activation's channels are flattened and the weight's rows (quantized per output column) take the
difference.  ``1/s`` is folded where it costs nothing:

* the MatMul input is a ``LayerNormalization`` output: its gamma and beta are divided by ``s``
  (exact); the LayerNorm's other readers (the residual Add) get the original values back through a
  ``Mul(s)`` on their edge;
* the input is a ``Mul`` by a constant (the ``·0.5`` that ends an exported GELU): that constant
  becomes ``c/s`` (exact, free); the Mul's other readers get ``Mul(s)`` likewise.

Other producers are left alone (an explicit ``Mul(1/s)`` would run in float on every call).  All
MatMuls reading the same X share one ``s`` (Q/K/V).  α is chosen per group by measured error: for
each α in ``ALPHAS`` (0 = unchanged) the group's outputs are computed on calibration tokens with X/s
on the per-tensor activation grid of the plan and s·W on its weight grid, and the α with the least
relative error ``Σ‖XW − Q(X/s)·Q(sW)‖² / Σ‖XW‖²`` wins; a group where α = 0 wins is left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms.base import PassOutcome, StatRequest, Stats, register
from edgequant.plan import QuantPlan
from edgequant.recipe.schema import Recipe
from edgequant.schemes.qparams import dequantize, fake_quant, qparams_from_range, quantize_weight
from edgequant.schemes.spec import QuantSpec

ALPHAS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SAMPLES = 32  # calibration samples read (their tokens give the channel maxima and the error)
TOKENS = 2048  # token rows kept for the α search (evenly spaced over the samples)
_FLOOR = 1e-5


@dataclass
class Group:
    """MatMuls reading one activation ``x`` [.., C] with constant 2-D weights [C, N]."""

    x: str
    matmuls: list[tuple[onnx.NodeProto, str]] = field(default_factory=list)  # (node, weight name)
    producer: onnx.NodeProto | None = None
    fold: str = ""  # "layernorm" | "mul"
    others: list[onnx.NodeProto] = field(default_factory=list)  # other readers of x


def find_groups(model: onnx.ModelProto, plan: QuantPlan) -> tuple[list[Group], list[str]]:
    """The smoothable groups, and one line per MatMul input left alone with the reason."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    weight_readers = {w: len(readers.get(w, [])) for w in inits}
    groups: dict[str, Group] = {}
    skipped: list[str] = []
    for n in g.node:
        if n.op_type != "MatMul" or n.input[1] not in inits or n.input[0] in inits:
            continue
        w = inits[n.input[1]]
        entry = plan.tensors.get(w.name)
        if len(w.dims) != 2 or entry is None or entry.role != "weight" or n.input[0] not in plan.tensors:
            continue
        if weight_readers.get(w.name, 0) != 1:
            skipped.append(
                f"{n.name}: its weight '{w.name}' is shared, so it cannot take one input's scales."
            )
            continue
        groups.setdefault(n.input[0], Group(n.input[0])).matmuls.append((n, w.name))
    out: list[Group] = []
    for x, grp in groups.items():
        p = producer.get(x)
        mm = {tuple(m.output) for m, _ in grp.matmuls}  # protobuf hands out new wrappers: compare outputs
        grp.others = [r for r in readers.get(x, []) if tuple(r.output) not in mm]
        grp.producer = p
        channels = {inits[wn].dims[0] for _, wn in grp.matmuls}
        if p is not None and p.op_type == "LayerNormalization" and _ln_foldable(p, inits, channels):
            grp.fold = "layernorm"
        elif p is not None and p.op_type == "Mul" and _mul_constant(p, inits, producer, channels) is not None:
            grp.fold = "mul"
        else:
            what = f"{p.op_type} '{p.name}'" if p is not None else "a graph input"
            skipped.append(
                f"{', '.join(m.name for m, _ in grp.matmuls)}: input from {what}, where 1/s cannot be folded "
                "(an explicit Mul would run in float on every call)."
            )
            continue
        out.append(grp)
    return out, skipped


def _ln_foldable(p: onnx.NodeProto, inits: dict[str, onnx.TensorProto], channels: set[int]) -> bool:
    axis = next((a.i for a in p.attribute if a.name == "axis"), -1)
    gamma = inits.get(p.input[1]) if len(p.input) > 1 else None
    return axis == -1 and len(channels) == 1 and gamma is not None and list(gamma.dims) == [*channels]


def _mul_constant(
    p: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    producer: dict[str, onnx.NodeProto],
    channels: set[int],
) -> tuple[int, np.ndarray] | None:
    """(input slot, value) of a Mul's constant operand that a per-channel vector can replace."""
    if len(channels) != 1:
        return None
    for slot, name in enumerate(p.input):
        value: np.ndarray | None = None
        if name in inits:
            value = numpy_helper.to_array(inits[name])
        elif name in producer and producer[name].op_type == "Constant":
            attr = next((a for a in producer[name].attribute if a.name == "value"), None)
            value = numpy_helper.to_array(attr.t) if attr is not None else None
        if value is not None and value.dtype == np.float32 and value.size in (1, *channels):
            if value.ndim <= 1:
                return slot, value
    return None


@register("smoothquant")
class SmoothQuant:
    """Per-channel smoothing of MatMul inputs into their weights (module docstring)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest:
        return StatRequest(
            min(SAMPLES, self.recipe.calib_samples),
            "per-channel maxima of MatMul inputs, and tokens to choose α by the MatMul output error",
        )

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        groups, skipped = find_groups(out, plan)  # nodes of the copy: the folds edit them
        outcome = PassOutcome(skipped=skipped)
        if not groups:
            outcome.nothing_to_do = "no MatMul with a constant weight reads a LayerNorm or a constant Mul."
            return model, plan, outcome
        amax, tokens = _collect(model, [gr.x for gr in groups], stats)
        inits = {t.name: t for t in out.graph.initializer}
        alphas: dict[str, float] = {}
        for gr in groups:
            ws = {wn: numpy_helper.to_array(inits[wn]).astype(np.float32) for _, wn in gr.matmuls}
            act = plan.tensors[gr.x].spec
            errs = {a: _error(tokens[gr.x], ws, _scales(amax[gr.x], ws, a), act, plan) for a in ALPHAS}
            best = min(errs, key=lambda a: errs[a])
            names = ", ".join(m.name for m, _ in gr.matmuls)
            if best == 0.0:
                outcome.skipped.append(f"{names}: smoothing does not lower the output error (α=0 best).")
                continue
            s = _scales(amax[gr.x], ws, best)
            for wn, w in ws.items():
                inits[wn].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), wn))
            _fold(out, gr, s, inits)
            alphas[gr.x] = best
            outcome.changed.append(
                f"{names}: α={best:g} (relative output error {errs[0.0]:.2e} -> {errs[best]:.2e}), "
                f"1/s folded into {gr.fold} '{gr.producer.name if gr.producer else ''}'"
                + (f", Mul(s) on {len(gr.others)} other reader(s)" if gr.others else "")
            )
        outcome.details = {"alphas": alphas}
        if not outcome.changed:
            outcome.nothing_to_do = "no group's output error improved with smoothing."
        return out, plan, outcome


def _collect(
    model: onnx.ModelProto, xs: list[str], stats: Stats
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-channel max|x| over all calibration tokens, and up to ``TOKENS`` token rows, per tensor."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in xs)
    amax: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {x: [] for x in xs}
    for batch in stats:
        values = stats.runtime.run(probe, batch, xs)
        for x in xs:
            v = values[x].reshape(-1, values[x].shape[-1])
            m = np.abs(v).max(axis=0)
            amax[x] = m if x not in amax else np.maximum(amax[x], m)
            rows[x].append(v[::4])
    tokens = {}
    for x in xs:
        allrows = np.concatenate(rows[x])
        step = max(1, len(allrows) // TOKENS)
        tokens[x] = allrows[::step][:TOKENS]
    return amax, tokens


def _scales(amax: np.ndarray, ws: dict[str, np.ndarray], alpha: float) -> np.ndarray:
    """s_j = max|X_j|^α / max|W_j|^(1-α) over the rows j of every weight in the group."""
    if alpha == 0.0:
        return np.ones_like(amax, dtype=np.float32)
    wmax = np.max([np.abs(w).max(axis=1) for w in ws.values()], axis=0)
    s = np.maximum(amax, _FLOOR) ** alpha / np.maximum(wmax, _FLOOR) ** (1.0 - alpha)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


def _error(x: np.ndarray, ws: dict[str, np.ndarray], s: np.ndarray, act: QuantSpec, plan: QuantPlan) -> float:
    """Σ‖XW − Q(X/s)·Q(sW)‖² / Σ‖XW‖² over the group's weights, grids as the plan says."""
    xs = x / s
    scale, zero = qparams_from_range(float(xs.min()), float(xs.max()), act)
    xq = fake_quant(xs, scale, zero, act)
    num = den = 0.0
    for wn, w in ws.items():
        spec = plan.tensors[wn].spec
        q, sc, z = quantize_weight(w * s[:, None], spec)
        ref = x @ w
        got = xq @ dequantize(q, sc, z, spec)
        num += float(np.sum((ref - got).astype(np.float64) ** 2))
        den += float(np.sum(ref.astype(np.float64) ** 2))
    return num / max(den, 1e-30)


def _fold(model: onnx.ModelProto, gr: Group, s: np.ndarray, inits: dict[str, onnx.TensorProto]) -> None:
    """Divide the producer by ``s`` (LayerNorm gamma/beta, or the Mul's constant); the other readers
    of x get ``Mul(s)`` so they see the values they saw before."""
    p = gr.producer
    assert p is not None
    g = model.graph
    if gr.fold == "layernorm":
        for slot in (1, 2):
            if slot < len(p.input) and p.input[slot] in inits:
                t = inits[p.input[slot]]
                new = f"{p.input[slot]}_smoothed_{gr.x.replace('/', '_')}"
                g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(t) / s, new))
                p.input[slot] = new
    else:
        producer = {o: n for n in g.node for o in n.output}
        found = _mul_constant(p, inits, producer, {len(s)})
        assert found is not None
        slot, value = found
        new = f"{gr.x.replace('/', '_')}_smooth_factor"
        g.initializer.append(numpy_helper.from_array((value / s).astype(np.float32), new))
        p.input[slot] = new
    if gr.others:
        back = f"{gr.x}_unsmoothed"
        factor = f"{gr.x.replace('/', '_')}_smooth_s"
        g.initializer.append(numpy_helper.from_array(s.astype(np.float32), factor))
        for r in gr.others:
            for i, name in enumerate(r.input):
                if name == gr.x:
                    r.input[i] = back
        at = next(i for i, n in enumerate(g.node) if list(n.output) == list(p.output))
        g.node.insert(at + 1, helper.make_node("Mul", [gr.x, factor], [back], name=f"{p.name}_unsmooth"))


def describe(details: dict[str, Any]) -> str:
    """One line: how many inputs were smoothed and their α."""
    a = details.get("alphas", {})
    return f"{len(a)} MatMul input(s) smoothed, α " + ", ".join(f"{v:g}" for v in a.values())
