"""AdaRound (``adaround``): learn, per layer, whether each weight rounds up or down.

Nagel, Amjad, van Baalen, Louizos, Blankevoort, "Up or Down? Adaptive Rounding for Post-Training
Quantization", ICML 2020.  For a layer with weight ``W`` on the plan's grid (scale ``s``, zero ``z``,
integers ``[qmin, qmax]``), the quantized weight is

    W~ = s * clip(floor(W / s) + h(V), qmin - z, qmax - z),   h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)

(``zeta = 1.1``, ``gamma = -0.1``, the rectified sigmoid), and ``V`` minimises

    E ||W x - W~ x~||^2 / C_out  +  lambda * sum (1 - |2 h(V) - 1|^beta)

over calibration inputs, where ``x`` is the layer's input in the float model and ``x~`` its input in
the model whose earlier layers already carry their AdaRound weights (the paper's asymmetric
reconstruction: errors of the layers before are compensated, not compounded), with float activations
(``adaround_acts`` can quantize them as the exported model does, AIMET/QDrop style: measured worse on
EfficientNet-Lite0 W4A8, off by default).  ``beta`` anneals from
20 to 2 after a warm-up of 20 % of the iterations without the regulariser; ``lambda = 0.01``; the
result rounds ``h(V) >= 0.5`` up.  Layers are processed in graph order.

Memory is bounded by the layer, not by the data: the loss is a quadratic form in ``W~``, so it needs
only ``A = E[x~ x~^T]`` and ``B = E[x~ x^T]`` (``K x K`` per group, ``K`` = input channels x kernel
size; im2col per batch for Conv), accumulated while the batches stream, and only until they hold
``ROWS_PER_INPUT`` rows (patches) per dimension ``K``: the paper caps its data too (1,024 images);
a conv layer early in the net gets thousands of patches per image, so one batch is plenty there,
while a late 1x1 or fully connected layer reads every calibration sample.  Each batch costs two runs
of the model (float and rounded-so-far weights), so this cap is what took PP-OCR cls at W4A8 from
more than 900 s to 164 s (benchmarks/results/bench_algorithms.md).  The gradient is
``2 (W~ A - W B) / C_out``.  Layers whose two matrices would exceed ``MAX_GRAM_BYTES`` are skipped
with the reason.  (The paper minimises the error after the activation function; the pre-activation
form used here is what keeps memory flat, and is the paper's "layer-wise" ablation.  ``adaround_post``
fits the error after a following Relu/Clip on a capped row sample instead, off by default: on
EfficientNet-Lite0 W4A8 it gave KL 0.147 against 0.129, benchmarks/results/bench_algorithms.md.)

The weights of the layers to round become graph inputs, so the float and the partially rounded model
are the same session fed different weights; each layer's session is that model cut at the layer's input
(``layer_inputs``: ORT runs the whole graph for any output asked for; on EfficientNet-Lite0 the cut
models take 0.42x the time of the whole one, summed over the 50 layers at one batch).  numpy only; the
per-iteration cost is one batched ``[C_out, K] x [K, K]`` matmul (``adaround_opt``), which BLAS runs as
fast as torch would on CPU, so torch is not used.

Grids and roundings chosen by output error (``SEARCH_GRID``, on by default, 2-4 bits; ``adaround_scales``):
besides AdaRound on the plan's grid, each output channel may take a grid whose range is chosen by the
layer's output error rather than the weight's, AdaRound on that grid, or round-to-nearest on either,
whichever has the least output error on the same statistics (exact per channel).

Mean correction (``CORRECT_MEAN``, on by default): after a layer is rounded, its own bias (a Conv/Gemm
bias initializer of ``C_out`` values) absorbs ``E[W x] - E[W~ x~]`` per output channel, from the same
streamed rows (means of the float and the rounded-so-far input patches): the mean error that the
rounding and the layers before leave, as empirical bias correction (Nagel et al. 2019, sec. 4.2) removes
it.  The biases are graph inputs too, so later layers see the corrected ones.
EfficientNet-Lite0 W4A8 + AdaRound: top-1 agreement with float 65.9 % / mean KL 0.224 without it,
73.8 % / 0.153 with it (benchmarks/results/bench_algorithms.md); neutral on the tiny test nets.

The scale and zero point AdaRound rounded on are written into the plan entry (the exporter then
keeps them), and the model's weight becomes the dequantized AdaRound weight, which the exporter
quantizes back to exactly those integers.  Any QuantSpec works: 2/4/8 bits, per tensor or per
channel, float or power-of-two scales.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms import adaround_acts, adaround_opt
from edgequant.algorithms import adaround_post as post_act
from edgequant.algorithms import adaround_scales as scales
from edgequant.algorithms.adaround_acts import ActQuant
from edgequant.algorithms.adaround_opt import iterations_for, round_on_grid
from edgequant.algorithms.base import PassOutcome, StatRequest, Stats, register
from edgequant.algorithms.layer_inputs import LayerInputs
from edgequant.algorithms.layer_matrix import int_attr, patches, str_attr, to_groups
from edgequant.errors import DataError
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.recipe.schema import Recipe
from edgequant.schemes.qparams import dequantize, quantize, quantize_weight

log = logging.getLogger(__name__)
MAX_GRAM_BYTES = 1 << 29  # 512 MiB for A and B together (float64)
ROWS_PER_INPUT = 64  # a layer's statistics stop streaming once they hold this many rows per Gram dimension
# (uncapped, every layer reading all 128 samples: EfficientNet-Lite0 W4A8 KL 0.146 against 0.129; session 12)
SEARCH_GRID = True  # 2-4 bits: grid per channel and rounding per channel by output error (adaround_scales)
_CANDIDATES = ("round-to-nearest", "AdaRound", "output-error grid", "AdaRound on it")
CORRECT_MEAN = True  # after rounding, add E[W x] - E[W~ x~] to the layer's own bias (docstring)
_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class Layer:
    node: onnx.NodeProto
    weight: str
    entry: TensorEntry
    bias: str = ""  # the layer's own bias initializer [C_out], which the mean shift corrects ("": none)
    act: tuple[float, float] | None = None  # bounds of the Relu/Clip that alone reads the output (None: none)


def layers_to_round(model: onnx.ModelProto, plan: QuantPlan) -> tuple[list[Layer], list[str]]:
    quantized = {d.node for d in plan.quantized_nodes if d.graph == "main"}
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    layers: list[Layer] = []
    skipped: list[str] = []
    for n in model.graph.node:
        if n.op_type not in _OPS or n.name not in quantized or len(n.input) < 2:
            continue
        entry = plan.tensors.get(n.input[1])
        if entry is None or entry.role != "weight":
            continue
        why = ""
        if readers.get(n.input[1], 0) > 1:
            why = "its weight is shared with another node"
        elif n.op_type == "Conv" and str_attr(n, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            why = "auto_pad SAME_* (explicit pads only)"
        elif n.op_type == "Gemm" and int_attr(n, "transA", 0):
            why = "Gemm with transA"
        elif n.op_type == "MatMul" and len(shapes[n.input[1]]) != 2:
            why = "MatMul weight is not 2-D"
        else:
            w = shapes[n.input[1]]
            groups = int_attr(n, "group", 1) if n.op_type == "Conv" else 1
            k = (
                int(np.prod(w[1:]))
                if n.op_type == "Conv"
                else (w[0] if n.op_type == "MatMul" or not int_attr(n, "transB", 0) else w[1])
            )
            need = 2 * groups * k * k * 8
            if need > MAX_GRAM_BYTES:
                why = f"its input statistics would need {need / 2**20:.0f} MiB (limit {MAX_GRAM_BYTES >> 20} MiB)"
        if why:
            skipped.append(f"{n.name}: {why}")
        else:
            bias = _own_bias(n, shapes, readers)
            act = post_act.activation_after(model, n) if bias or len(n.input) < 3 else None
            layers.append(Layer(n, n.input[1], entry, bias, act))
    return layers, skipped


def _own_bias(node: onnx.NodeProto, shapes: dict[str, list[int]], readers: dict[str, int]) -> str:
    """The Conv/Gemm bias initializer that only ``node`` reads and that holds one value per output."""
    if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in shapes:
        return ""
    w, b = shapes[node.input[1]], shapes[node.input[2]]
    c_out = w[0] if node.op_type == "Conv" or int_attr(node, "transB", 0) else w[1]
    return node.input[2] if readers.get(node.input[2], 0) == 1 and b == [c_out] else ""


def _weights_as_inputs(model: onnx.ModelProto, layers: list[Layer]) -> onnx.ModelProto:
    """A copy whose layer weights (and own biases) are graph inputs and whose layer inputs are graph
    outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {layer.weight for layer in layers} | {layer.bias for layer in layers if layer.bias}
    keep = [t for t in out.graph.initializer if t.name not in names]
    moved = [t for t in out.graph.initializer if t.name in names]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    for t in moved:
        out.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    have = {o.name for o in out.graph.output}
    for layer in layers:
        if layer.node.input[0] not in have:
            out.graph.output.append(onnx.ValueInfoProto(name=layer.node.input[0]))
            have.add(layer.node.input[0])
    return out


@register("adaround")
class AdaRound:
    """Learned rounding of Conv/Gemm/MatMul weights on the plan's grid, layer by layer."""

    name = "adaround"

    def __init__(self, recipe: Recipe, iterations: int | None = None) -> None:
        self.recipe = recipe
        self.iterations = iterations or adaround_opt.ITERATIONS

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest:
        return StatRequest(self.recipe.calib_samples, "each layer's float and rounded-so-far inputs")

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]:
        stats.require_real(
            "adaround",
            "AdaRound learns each weight's rounding from real calibration inputs, and none were given "
            "(synthetic random data would fit the rounding to noise).",
        )
        layers, skipped = layers_to_round(model, plan)
        if not layers:
            return (
                model,
                plan,
                PassOutcome(skipped=skipped, nothing_to_do="no quantized Conv/Gemm/MatMul weight"),
            )
        out = onnx.ModelProto()
        out.CopyFrom(model)
        plan = QuantPlan.from_dict(plan.to_dict())
        inits = {t.name: t for t in out.graph.initializer}
        names = [ly.weight for ly in layers] + [ly.bias for ly in layers if ly.bias]
        floats = {k: numpy_helper.to_array(inits[k]).astype(np.float32) for k in names}
        current = dict(floats)
        as_inputs = _weights_as_inputs(out, layers)
        changed: list[str] = []
        low = [ly.node.name for ly in layers if ly.entry.spec.bits <= adaround_acts.ACT_QUANT_MAX_BITS]
        acts = adaround_acts.build(as_inputs, out, plan, stats, low)  # x~ with activations quantized
        self._begin(out, layers)
        for layer in layers:
            gather = LayerInputs(stats.runtime, as_inputs, layer.node.input[0])
            quantized = None  # the layer's input in the activation-quantized model, and its mixer
            if acts is not None and layer.node.name in acts.input_of:
                quantized = (LayerInputs(stats.runtime, acts.model, acts.input_of[layer.node.name]), acts)
            try:
                changed.append(self._round(layer, gather, stats, floats, current, plan, quantized))
            finally:
                gather.close()
                if quantized is not None:
                    quantized[0].close()
            changed.extend(self._after(layer, as_inputs, stats, floats, current, plan))
        for name, w in current.items():
            inits[name].CopyFrom(numpy_helper.from_array(w.astype(np.float32), name))
        return (
            out,
            plan,
            PassOutcome(changed=changed, skipped=skipped, details={"iterations": self.iterations}),
        )

    def _begin(self, model: onnx.ModelProto, layers: list[Layer]) -> None:
        """Hook before the first layer (``brecq`` finds its blocks here)."""

    def _after(
        self,
        layer: Layer,
        model: onnx.ModelProto,
        stats: Stats,
        floats: dict[str, np.ndarray],
        current: dict[str, np.ndarray],
        plan: QuantPlan,
    ) -> list[str]:
        """Hook after ``layer`` is rounded (``brecq`` refines a block after its last layer); report lines."""
        return []

    def _round(
        self,
        layer: Layer,
        gather: LayerInputs,
        stats: Stats,
        floats: dict[str, np.ndarray],
        current: dict[str, np.ndarray],
        plan: QuantPlan,
        quantized_acts: tuple[LayerInputs, ActQuant] | None = None,
    ) -> str:
        """Round ``layer``; ``quantized_acts``: x~ from the activation-quantized model (``adaround_acts``)."""
        node, w = layer.node, floats[layer.weight]
        groups = to_groups(node, w).shape[0]
        a = b = None
        rows, const = 0, 0.0
        wg = to_groups(node, w).astype(np.float32)
        sum_f = np.zeros(wg.shape[::2])  # [G, K]: sums of the float and the rounded-so-far input rows
        sum_q = np.zeros(wg.shape[::2])
        kernel = list(w.shape[2:])
        enough = ROWS_PER_INPUT * wg.shape[-1]
        same = all(np.array_equal(current[k], floats[k]) for k in floats if k != layer.weight)
        batches = 0
        kept = None  # rows kept for the error after the activation (adaround_post)
        if post_act.POST_ACT and layer.act is not None and node.name.startswith(post_act.ONLY or ("",)):
            kept = post_act.PostRows(layer.act, wg.shape[0], wg.shape[2], wg.shape[1])
            kept = kept if kept.usable else None
        for batch in stats:
            xf = gather({**batch, **floats})
            pf = patches(node, xf, groups, kernel)
            pd = None  # the deployed input, for the mean correction (None: pq itself)
            if quantized_acts is not None:  # activations quantized as exported; QDrop: some elements float
                xq = quantized_acts[0]({**batch, **current})
                pq = patches(node, quantized_acts[1].mix(xq, xf), groups, kernel)
                pd = patches(node, xq, groups, kernel) if quantized_acts[1].drop > 0 else None
            elif same:  # no rounded layer before this one yet: its inputs are the float ones
                pq = pf
            else:
                xq = gather({**batch, **current})
                pq = patches(node, xq, groups, kernel)
            const += float(np.square(np.matmul(pf, np.swapaxes(wg, 1, 2)), dtype=np.float64).sum())
            aa = np.matmul(np.swapaxes(pq, 1, 2), pq).astype(np.float64)
            bb = np.matmul(np.swapaxes(pq, 1, 2), pf).astype(np.float64)
            a, b = (aa, bb) if a is None or b is None else (a + aa, b + bb)
            sum_f = sum_f + pf.sum(axis=1, dtype=np.float64)
            sum_q = sum_q + (pq if pd is None else pd).sum(axis=1, dtype=np.float64)
            rows += pq.shape[1]
            batches += 1
            if kept is not None:
                kept.add(pq, pf)
            if rows >= enough and (kept is None or batches >= post_act.BATCHES):  # see ROWS_PER_INPUT
                break
        if a is None or b is None or rows == 0:
            raise DataError(
                "AdaRound needs calibration samples and the calibration data yielded none.",
                "pass a non-empty --calib-data.",
            )
        a, b = (a / rows).astype(np.float32), (b / rows).astype(np.float32)
        spec = layer.entry.spec
        q0, scale, zero = quantize_weight(w, spec)
        rtn = dequantize(q0, scale, zero, spec)  # round-to-nearest on the default grid: the reference
        iterations = iterations_for(wg, self.iterations)
        loss = None
        if kept is not None:
            loss = kept.loss(wg, floats[layer.bias] if layer.bias else np.zeros(wg.shape[0] * wg.shape[1]))
            loss.set_batch(iterations, wg.size)
        errors = None if loss is None else loss.row_errors
        q = round_on_grid(node, w, wg, spec, scale, zero, a, b, iterations, post=loss)
        picked = ""
        if SEARCH_GRID and scales.searchable(spec):  # 2-4 bits: grids and roundings chosen by output error
            groups_of = lambda m: to_groups(node, m)  # noqa: E731
            s1, z1 = scales.grid_by_output_error(w, spec, groups_of, a, b, errors)
            cands = [(q0, scale, zero), (q, scale, zero), (quantize(w, s1, z1, spec), s1, z1)]
            moved = (np.asarray(s1) != scale) | (np.asarray(z1) != zero)  # channels whose grid changed
            if moved.any():
                only = moved.reshape(-1) if moved.size == wg.shape[0] * wg.shape[1] else None
                q1 = round_on_grid(node, w, wg, spec, s1, z1, a, b, iterations, only, q, loss)
                cands.append((q1, s1, z1))
            q, scale, zero, wins = scales.pick_rows(cands, w, spec, groups_of, a, b, errors)
            picked = "; channels from " + ", ".join(
                f"{k} {v}" for k, v in zip(_CANDIDATES, wins, strict=False) if v
            )
        current[layer.weight] = dequantize(q, scale, zero, spec)
        shift = ""
        fitted = None  # the bias shift fitted after the activation (adaround_post.FIT_BIAS)
        if loss is not None and layer.bias and post_act.FIT_BIAS:
            fitted = loss.fit_bias(to_groups(node, current[layer.weight]))
            current[layer.bias] = (floats[layer.bias] + fitted).astype(np.float32)
            shift = f"; bias fitted after the activation, shifted by up to {float(np.abs(fitted).max()):.3g}"
        elif layer.bias and CORRECT_MEAN:
            # E[W x] - E[W~ x~] per output channel: the mean error the rounding and the layers before leave
            mean = (wg * (sum_f / rows)[:, None, :]).sum(-1) - (
                to_groups(node, current[layer.weight]) * (sum_q / rows)[:, None, :]
            ).sum(-1)
            current[layer.bias] = (floats[layer.bias] + mean.reshape(-1)).astype(np.float32)
            shift = f"; bias shifted by up to {float(np.abs(mean).max()):.3g}"
        layer_entry = plan.tensors[layer.weight]
        layer_entry.scale = [float(v) for v in np.asarray(scale).reshape(-1)]
        layer_entry.zero_point = [int(v) for v in np.asarray(zero).reshape(-1)]
        flipped = int((current[layer.weight] != rtn).sum())
        err = _errors(
            to_groups(node, w),
            to_groups(node, rtn),
            to_groups(node, current[layer.weight]),
            a,
            b,
        )
        per_out = const / rows / (wg.shape[0] * wg.shape[1])  # E||W x||^2 per output channel
        err = (err[0] + per_out, err[1] + per_out)
        where = "mean squared"
        if loss is not None:
            after = loss.row_errors(to_groups(node, current[layer.weight]), _by_group(fitted, wg))
            err = (float(loss.row_errors(to_groups(node, rtn)).mean()), float(after.mean()))
            where = f"mean squared after the activation ({loss.rows} kept rows, {loss.batch} per iteration)"
        return (
            f"{node.name} ({spec.bits}-bit): {flipped}/{w.size} weights differ from round-to-nearest; layer "
            f"output error {err[0]:.3g} -> {err[1]:.3g} ({where}, calibration inputs: {rows} rows from {batches} "
            f"batch(es); {iterations} iterations{_inputs_said(quantized_acts)}){picked}{shift}"
        )


def _by_group(shift: np.ndarray | None, wg: np.ndarray) -> np.ndarray | None:
    """A per-channel bias shift ``[G * C]`` as ``[G, 1, C]`` (``PostLoss``'s layout), or None."""
    return None if shift is None else shift.reshape(wg.shape[0], 1, wg.shape[1]).astype(np.float32)


def _inputs_said(quantized_acts: tuple[LayerInputs, ActQuant] | None) -> str:
    if quantized_acts is None:
        return ""
    drop = quantized_acts[1].drop
    return "; inputs with activations quantized" + (f", {drop:.0%} of them float (QDrop)" if drop else "")


def _errors(
    w: np.ndarray, w_rtn: np.ndarray, w_ada: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[float, float]:
    """E||W x - W~ x~||^2 per output, up to the constant E||W x||^2 (relative: both share it)."""

    def part(wq: np.ndarray) -> float:  # matmul, not a 3-operand einsum (a naive loop: 188 s on [512, 4608])
        quad = np.sum(np.matmul(wq, a) * wq, dtype=np.float64)
        cross = np.sum(np.matmul(wq, b) * w, dtype=np.float64)
        return float(quad - 2 * cross) / (w.shape[0] * w.shape[1])

    return part(w_rtn), part(w_ada)
