"""Cross-layer equalization (``cle``): equal per-channel weight ranges across consecutive layers.

Nagel, van Baalen, Blankevoort, Welling, "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019, sec. 4.1.  For two layers ``y = f(W1 x + b1)``, ``z = W2 y`` with ``f``
positively homogeneous (``f(x / s) = f(x) / s`` for ``s > 0``: ReLU, LeakyReLU, identity), scaling
output channel ``i`` of the first layer by ``1 / s_i`` and input channel ``i`` of the second by
``s_i`` leaves ``z`` unchanged.  With ``r1_i = max|W1[i, ...]|`` and ``r2_i = max|W2[:, i, ...]|``,

    s_i = sqrt(r1_i / r2_i)

gives both channels the range ``sqrt(r1_i r2_i)``: the per-tensor grid of each layer then wastes
fewer steps on a few wide channels (the failure of per-tensor int8 on BN-folded depthwise nets).
A depthwise conv (``group == channels``) is the second layer of one pair and the first of the next;
the pairs are equalized in turn, repeated until the scales stop moving (at most ``ROUNDS``), as the
paper does for chains.

Where it stops (each is a ``skipped`` line with the reason):

* ``Clip``/ReLU6 between the layers, when no calibration data is given: ``clip(y / s, 0, 6) !=
  clip(y, 0, 6) / s`` in general (the paper replaces ReLU6 by ReLU, which changes the model).  With
  calibration data the pass goes through a ``Clip(0, hi)`` channel by channel, from the per-channel
  peak ``m_i`` of ``y`` on the calibration samples: a channel whose peak times ``HEADROOM`` stays
  below ``hi`` never reaches the bound, so ``clip(y / S, 0, hi) == clip(y, 0, hi) / S`` for every
  ``S >= HEADROOM m_i / hi`` (its cumulative scale is kept there); a channel that may reach it keeps
  ``S = 1``.  The float output is then unchanged on inputs whose channels stay within ``HEADROOM``
  times their calibration peaks (and the pass is judged on held-out samples like every pass).  A
  ``Clip`` with a lower bound other than 0 stops the pass there;
* a residual ``Add`` or a ``Concat`` reading the output (after its activation): the join's other
  operand is not scaled (its line names the node);
* an intermediate tensor read by more than one node or that is a graph output: another reader
  would see the scaled values;
* a weight or bias shared with another node, or not a constant initializer;
* any other node after the layer (and its activation): a pool, a reshape, a normalization, a
  non-homogeneous activation (Sigmoid, HardSwish, ...), a MatMul's bias ``Add`` (not handled);
* a pair of different families (Conv into Gemm/MatMul): channels are not the same axis.

Weights are changed in a copy; BN folded by EdgeQuant's repair is already in the Conv weights, so it
is equalized with them.  High-bias absorption is not done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.algorithms.base import PassOutcome, StatRequest, Stats, register
from edgequant.plan import QuantPlan
from edgequant.recipe.schema import Recipe

ROUNDS = 20
PEAK_SAMPLES = 64  # calibration samples whose per-channel peaks limit the scales through a ReLU6
HEADROOM = 1.25  # a channel feeding Clip(0, hi) is scaled only while HEADROOM x its calibration peak < hi
_HOMOGENEOUS = {"Relu", "LeakyRelu", "Identity"}
_LAYERS = {"Conv", "Gemm", "MatMul"}
_ACTIVATIONS = {"Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Elu", "Selu", "Celu", "Softplus",
                "Softsign", "Mish", "PRelu", "ThresholdedRelu", "Swish"}  # fmt: skip
_EPS = 1e-12


@dataclass
class Pair:
    first: onnx.NodeProto
    second: onnx.NodeProto
    through: str  # op type of the activation between them, or "" when direct
    bound: float = 0.0  # the upper bound of a Clip(0, bound) between them (0: none)


def _attr_i(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _family(node: onnx.NodeProto) -> str:
    return "conv" if node.op_type == "Conv" else "fc"


class _Weights:
    """Initializer values by name, with the count of nodes that read each one."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.protos = {t.name: t for t in model.graph.initializer}
        self.values: dict[str, np.ndarray] = {}
        self.readers: dict[str, int] = {}
        for n in model.graph.node:
            for i in n.input:
                self.readers[i] = self.readers.get(i, 0) + 1

    def get(self, name: str) -> np.ndarray:
        if name not in self.values:
            self.values[name] = numpy_helper.to_array(self.protos[name]).astype(np.float64)
        return self.values[name]

    def write_back(self) -> None:
        for name, v in self.values.items():
            t = self.protos[name]
            t.CopyFrom(numpy_helper.from_array(v.astype(numpy_helper.to_array(t).dtype), name))


def _out_view(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """The weight as [out_channels, ...] (a view, so scaling it scales the weight)."""
    if node.op_type == "Conv" or (node.op_type == "Gemm" and _attr_i(node, "transB", 0)):
        return w
    return np.moveaxis(w, -1, 0)  # Gemm without transB, MatMul: [K, N]


def _in_scale(node: onnx.NodeProto, w: np.ndarray, s: np.ndarray) -> None:
    """Multiply input channel ``i`` of ``node``'s weight by ``s[i]`` in place."""
    if node.op_type == "Conv":
        groups = _attr_i(node, "group", 1)
        cout, cin_g = w.shape[0], w.shape[1]
        view = w.reshape(groups, cout // groups, cin_g, -1)
        view *= s.reshape(groups, 1, cin_g, 1)
    elif node.op_type == "Gemm" and _attr_i(node, "transB", 0):
        w *= s[None, :]
    else:
        w *= s[:, None]


def _in_ranges(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """Per input channel, ``max|W|`` over everything that reads that channel."""
    if node.op_type == "Conv":
        groups = _attr_i(node, "group", 1)
        cout, cin_g = w.shape[0], w.shape[1]
        return np.abs(w.reshape(groups, cout // groups, cin_g, -1)).max(axis=(1, 3)).reshape(-1)
    if node.op_type == "Gemm" and _attr_i(node, "transB", 0):
        return np.abs(w).max(axis=0)
    return np.abs(w).max(axis=1)


def _clip_bound(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> float:
    """``hi`` of a ``Clip(0, hi)`` whose bounds are scalar constants, else 0."""
    if len(node.input) < 3 or node.input[1] not in values or node.input[2] not in values:
        return 0.0
    lo, hi = values[node.input[1]], values[node.input[2]]
    ok = lo.size == 1 and hi.size == 1 and float(lo.reshape(-1)[0]) == 0.0 and float(hi.reshape(-1)[0]) > 0
    return float(hi.reshape(-1)[0]) if ok else 0.0


def find_pairs(model: onnx.ModelProto, through_clip: bool = False) -> tuple[list[Pair], list[str]]:
    """Equalizable pairs in graph order, and why each near miss was skipped.  ``through_clip``: a
    ``Clip(0, hi)`` between two layers makes a pair too (its ``bound``; the caller limits the scales
    from calibration peaks, module docstring)."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name.strip() and len(t.dims) <= 1}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1

    def layer_ok(n: onnx.NodeProto) -> str:
        if n.op_type not in _LAYERS or len(n.input) < 2 or n.input[1] not in inits:
            return "its weight is not a constant initializer"
        if readers.get(n.input[1], 0) > 1:
            return f"its weight '{n.input[1]}' is shared by {readers[n.input[1]]} nodes"
        if len(n.input) > 2 and n.input[2] and (n.input[2] not in inits or readers.get(n.input[2], 0) > 1):
            return "its bias is not a constant of its own"
        if n.op_type == "Gemm" and _attr_i(n, "transA", 0):
            return "Gemm with transA"
        if n.op_type == "MatMul" and len(_dims(g, n.input[1])) != 2:
            return "MatMul weight is not 2-D"
        return ""

    def single(t: str) -> onnx.NodeProto | None:
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and t not in outputs else None

    pairs: list[Pair] = []
    skipped: list[str] = []
    for first in g.node:
        if first.op_type not in _LAYERS:
            continue
        why = layer_ok(first)
        if why:
            skipped.append(f"{first.name}: {why}")
            continue
        if first.op_type == "MatMul" and _matmul_bias(first, consumers, inits):
            bias = consumers[first.output[0]][0].name
            skipped.append(f"{first.name}: MatMul followed by an Add bias '{bias}' (not handled)")
            continue
        feed = first.output[0]
        nxt = single(feed)
        through, bound = "", 0.0
        if nxt is not None and nxt.op_type in _HOMOGENEOUS:
            through, feed = nxt.op_type, nxt.output[0]
            nxt = single(feed)
        elif nxt is not None and nxt.op_type == "Clip":
            bound = _clip_bound(nxt, consts)
            if not (through_clip and bound):
                skipped.append(
                    f"{first.name} -> Clip: a Clip/ReLU6 bound does not commute with per-channel scaling "
                    "(clip(y/s, 0, 6) != clip(y, 0, 6)/s)"
                    + ("" if through_clip else "; with calibration data it is crossed channel by channel")
                    + (": its bounds are not Clip(0, hi) constants" if through_clip else "")
                )
                continue
            through, feed = "Clip", nxt.output[0]
            nxt = single(feed)
        join = next((n for n in consumers.get(feed, []) if _is_join(n, inits)), None)
        if join is not None:
            kind = ("residual Add", "residual") if join.op_type == "Add" else ("Concat", "Concat")
            skipped.append(
                f"{first.name}: output feeds {kind[0]} '{join.name}' (CLE stops at {kind[1]} joins)"
            )
            continue
        if nxt is None:
            c, after = consumers.get(feed, []), f" (after {through})" if through else ""
            skipped.append(f"{first.name}: its output{after} is read by {len(c)} nodes or is a graph output")
            continue
        if nxt.op_type in _ACTIVATIONS:
            skipped.append(f"{first.name}: followed by {nxt.op_type} '{nxt.name}' (not positive-homogeneous)")
            continue
        if nxt.op_type not in _LAYERS:
            skipped.append(f"{first.name}: output goes through {nxt.op_type} '{nxt.name}' (CLE stops there)")
            continue
        if nxt.input[0] != feed:
            skipped.append(f"{first.name}: output is not the data input of {nxt.op_type} '{nxt.name}'")
            continue
        why = layer_ok(nxt)
        if why:
            skipped.append(f"{first.name} -> {nxt.name}: {why}")
            continue
        if _family(first) != _family(nxt):
            skipped.append(
                f"{first.name} -> {nxt.name}: a Conv and a Gemm/MatMul do not share a channel axis"
            )
            continue
        pairs.append(Pair(first, nxt, through, bound))
    return pairs, skipped


def _dims(g: onnx.GraphProto, name: str) -> list[int]:
    for t in g.initializer:
        if t.name == name:
            return list(t.dims)
    return []


def _is_join(node: onnx.NodeProto, inits: set[str]) -> bool:
    """A residual ``Add`` (no constant operand, so not a bias) or a ``Concat``."""
    return node.op_type == "Concat" or (node.op_type == "Add" and not any(i in inits for i in node.input))


def _matmul_bias(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], inits: set[str]) -> bool:
    c = consumers.get(node.output[0], [])
    return len(c) == 1 and c[0].op_type == "Add" and any(i in inits for i in c[0].input)


def equalize(
    model: onnx.ModelProto,
    pairs: list[Pair],
    peaks: dict[str, np.ndarray] | None = None,
    scales: dict[str, np.ndarray] | None = None,
    shrink_only: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Equalize ``pairs`` in ``model`` in place; per pair, the range ratio max/min before -> after.
    ``peaks``: per first-layer output feeding a ``Clip(0, bound)``, its per-channel calibration peak,
    which limits that pair's cumulative scales (module docstring); a Clip pair without one keeps 1.
    ``scales``: filled with each pair's cumulative per-channel scale ``S`` by its first layer's output
    name (that output became ``y / S``). ``shrink_only``: first-layer outputs whose
    channels may only shrink (``S >= 1``; the caller bounds them per channel, ``cle_bounds``)."""
    ws = _Weights(model)
    before = {f"{p.first.name} -> {p.second.name}": _spread(ws, p) for p in pairs}
    limits = [
        (np.ones(1), np.full(1, np.inf))
        if p.first.output[0] in shrink_only
        else _limits(p, (peaks or {}).get(p.first.output[0]))
        for p in pairs
    ]
    total = [np.ones(1) for _ in pairs]  # each pair's cumulative scales so far
    cum = [np.ones(1) for _ in pairs]  # the same for every pair (``scales``)
    for _ in range(ROUNDS):
        moved = 0.0
        for k, p in enumerate(pairs):
            w1, w2 = ws.get(p.first.input[1]), ws.get(p.second.input[1])
            v1 = _out_view(p.first, w1)
            r1 = np.abs(v1.reshape(v1.shape[0], -1)).max(axis=1)
            r2 = _in_ranges(p.second, w2)
            if r1.shape != r2.shape:
                continue
            ok = (r1 > _EPS) & (r2 > _EPS)
            s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)
            if limits[k] is not None:
                lo, hi = limits[k]  # type: ignore[misc]
                if lo.size not in (1, s.size):
                    continue
                new = np.clip(total[k] * s, lo, hi)
                s, total[k] = new / total[k], new
            v1 /= s.reshape(-1, *([1] * (v1.ndim - 1)))
            if len(p.first.input) > 2 and p.first.input[2]:
                b = ws.get(p.first.input[2])
                if b.shape == s.shape:
                    b /= s
            _in_scale(p.second, w2, s)
            cum[k] = cum[k] * s
            moved = max(moved, float(np.abs(np.log(s)).max()) if s.size else 0.0)
        if moved < 1e-3:
            break
    ws.write_back()
    if scales is not None:
        scales.update({p.first.output[0]: c for p, c in zip(pairs, cum, strict=True)})  # [1]: unmoved
    return before | {f"{k} after": _spread(ws, p) for k, p in zip(before, pairs, strict=True)}


def _limits(p: Pair, peak: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounds of a Clip pair's cumulative scales (None: not a Clip pair): ``[HEADROOM m / bound, inf)``
    where the channel stays below the bound with headroom, exactly 1 where it may reach it."""
    if not p.bound:
        return None
    if peak is None:
        return np.ones(1), np.ones(1)
    free = peak * HEADROOM < p.bound
    lo = np.where(free, np.maximum(peak * HEADROOM / p.bound, 1e-6), 1.0)
    return lo, np.where(free, np.inf, 1.0)


def channel_peaks(model: onnx.ModelProto, pairs: list[Pair], stats: Stats) -> dict[str, np.ndarray]:
    """Per Clip pair's first-layer output, its per-channel maximum over the calibration samples."""
    from edgequant.evaluate.layers import _with_outputs

    names = list(dict.fromkeys(p.first.output[0] for p in pairs if p.bound))
    peaks: dict[str, np.ndarray] = {}
    sess = stats.runtime.session(_with_outputs(model, names), "the float model for CLE's channel peaks")
    try:
        for batch in stats:
            got = sess.run(batch, names)
            for n in names:
                y = np.moveaxis(np.asarray(got[n]), 1, 0).reshape(np.shape(got[n])[1], -1).max(axis=1)
                peaks[n] = y if n not in peaks else np.maximum(peaks[n], y)
    finally:
        sess.close()
    return peaks


def _spread(ws: _Weights, p: Pair) -> float:
    v1 = _out_view(p.first, ws.get(p.first.input[1]))
    r = np.abs(v1.reshape(v1.shape[0], -1)).max(axis=1)
    return float(r.max() / max(float(r.min()), _EPS))


@register("cle")
class CrossLayerEqualization:
    """Data-free: scales channels of consecutive layers so their weight ranges match (exact in float)."""

    name = "cle"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def stat_requests(self, model: onnx.ModelProto, plan: QuantPlan) -> StatRequest:
        if any(p.bound for p in find_pairs(model, through_clip=True)[0]):
            return StatRequest(
                min(self.recipe.calib_samples, PEAK_SAMPLES),
                "per-channel peaks of the outputs feeding a ReLU6",
            )
        return StatRequest(0, "data-free: reads only the weights")

    def apply(
        self, model: onnx.ModelProto, plan: QuantPlan, stats: Stats
    ) -> tuple[onnx.ModelProto, QuantPlan, PassOutcome]:
        pairs, skipped = find_pairs(model, through_clip=True)
        if any(p.bound for p in pairs) and (stats.synthetic or stats.samples < 1):
            skipped += [
                f"{p.first.name} -> Clip: a Clip/ReLU6 bound does not commute with per-channel scaling "
                "(clip(y/s, 0, 6) != clip(y, 0, 6)/s), and no real calibration data gives the channel peaks"
                for p in pairs
                if p.bound
            ]
            pairs = [p for p in pairs if not p.bound]
        if not pairs:
            return model, plan, PassOutcome(skipped=skipped, nothing_to_do="no equalizable pair of layers")
        out = onnx.ModelProto()
        out.CopyFrom(model)
        by_name = {n.name: n for n in out.graph.node}
        pairs = [Pair(by_name[p.first.name], by_name[p.second.name], p.through, p.bound) for p in pairs]
        peaks = channel_peaks(model, pairs, stats) if any(p.bound for p in pairs) else {}
        spread = equalize(out, pairs, peaks)
        changed = [
            f"{p.first.name} -> {p.second.name}"
            + (f" (through {p.through})" if p.through else "")
            + f": channel range spread {spread[k]:.3g} -> {spread[k + ' after']:.3g}"
            for p in pairs
            for k in [f"{p.first.name} -> {p.second.name}"]
        ]
        return out, plan, PassOutcome(changed=changed, skipped=skipped, details={"pairs": len(pairs)})
