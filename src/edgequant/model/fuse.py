"""Float-graph fusions applied before calibration, so that what gets quantized is what ORT runs fast.

Exported graphs often spell one operation as several nodes.  Quantizing them as they are costs a
Q/DQ pair at every boundary, splits ORT's QDQ fusions (a Conv whose output feeds a float
BatchNormalization never becomes a QLinearConv), and puts separate 8-bit grids on values that are
only intermediate.  Each fusion here is exact up to float32 rounding:

* ``Conv -> BatchNormalization``: with s = scale / sqrt(var + eps), W' = W * s[:, None, ...] and
  b' = (b - mean) * s + B.
* ``Conv -> Mul/Div/Add/Sub`` by a constant that varies only along the output channels (a BN that
  the exporter already wrote as an affine, or a bias written as a separate ``Add``): the factor
  goes into W and b, the offset into b.
* hard-swish written out, ``x * Clip(x + 3, 0, 6) / 6`` (any operand order, ``/ 6`` or ``* 1/6``)
  or ``x * HardSigmoid(x)`` with alpha 1/6 and beta 1/2, becomes one ``HardSwish`` node (opset 14).

A fusion applies only when the intermediate tensors have a single consumer and are not graph
outputs, so no other node sees a changed value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.model.io import opset_of
from edgequant.model.patterns import names_read

_RTOL = 1e-6


@dataclass
class _Graph:
    """Mutable view of a graph for the rewrites: consumers and initializer values by name."""

    graph: onnx.GraphProto
    inits: dict[str, onnx.TensorProto] = field(init=False)
    consumers: dict[str, list[onnx.NodeProto]] = field(init=False)
    outputs: set[str] = field(init=False)
    removed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.inits = {t.name: t for t in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}
        self.consumers = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def sole_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name`` when nothing else (no node, no graph output) sees it."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs or id(users[0]) in self.removed:
            return None
        return users[0]

    def add_init(self, value: np.ndarray, name: str) -> str:
        taken = set(self.inits)
        out, k = name, 1
        while out in taken:
            out, k = f"{name}_{k}", k + 1
        t = numpy_helper.from_array(np.ascontiguousarray(value), out)
        self.graph.initializer.append(t)
        self.inits[out] = t
        return out

    def finish(self) -> None:
        """Drop removed nodes and initializers nothing reads any more."""
        keep = [n for n in self.graph.node if id(n) not in self.removed]
        del self.graph.node[:]
        self.graph.node.extend(keep)
        used = names_read(self.graph) | self.outputs
        dead = [t for t in self.graph.initializer if t.name not in used]
        for t in dead:
            self.graph.initializer.remove(t)


def _attr(node: onnx.NodeProto, name: str, default: float | int) -> float | int:
    for a in node.attribute:
        if a.name == name:
            return a.f if a.type == onnx.AttributeProto.FLOAT else a.i
    return default


def _conv_wb(g: _Graph, conv: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """The float weight and bias of a Conv with constant ones (zeros when it has no bias)."""
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.input) < 2:
        return None
    w = g.const(conv.input[1])
    if w is None or w.dtype != np.float32 or w.ndim < 3:
        return None
    b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0], np.float32)
    if b is None or b.shape != (w.shape[0],):
        return None
    return w, b


def _channel_vector(c: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``c`` as a per-output-channel vector when it broadcasts against [N, C, ...] along C only."""
    if c.dtype != np.float32 or c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)


def _set_conv(g: _Graph, conv: onnx.NodeProto, w: np.ndarray, b: np.ndarray, output: str) -> None:
    conv.input[1] = g.add_init(w.astype(np.float32), f"{conv.name}_W_fused")
    bias = g.add_init(b.astype(np.float32), f"{conv.name}_B_fused")
    if len(conv.input) > 2:
        conv.input[2] = bias
    else:
        conv.input.append(bias)
    conv.output[0] = output


def _fold_into_conv(g: _Graph, conv: onnx.NodeProto) -> bool:
    """Fold the single consumer of ``conv`` into it when it is a BN or a per-channel affine."""
    wb = _conv_wb(g, conv)
    if wb is None:
        return False
    w, b = wb
    nxt = g.sole_consumer(conv.output[0])
    if nxt is None or nxt.domain not in ("", "ai.onnx"):
        return False
    scale_shape = (-1,) + (1,) * (w.ndim - 1)
    if nxt.op_type == "BatchNormalization":
        if (
            _attr(nxt, "training_mode", 0)
            or len([o for o in nxt.output if o]) != 1
            or nxt.input[0] != conv.output[0]
        ):
            return False
        params = [g.const(i) for i in nxt.input[1:5]]
        if any(p is None or p.shape != (w.shape[0],) for p in params):
            return False
        gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
        s = gamma / np.sqrt(var + float(_attr(nxt, "epsilon", 1e-5)))
        _set_conv(g, conv, w * s.reshape(scale_shape), (b - mean) * s + beta, nxt.output[0])
    elif nxt.op_type in ("Mul", "Div", "Add", "Sub") and len(nxt.input) == 2:
        pos = list(nxt.input).index(conv.output[0])
        other = g.const(nxt.input[1 - pos])
        if other is None or (pos == 1 and nxt.op_type in ("Div", "Sub")):
            return False
        v = _channel_vector(other, w.ndim, w.shape[0])
        if v is None:
            return False
        v64 = v.astype(np.float64)
        if nxt.op_type in ("Mul", "Div"):
            if nxt.op_type == "Div" and np.any(v64 == 0):
                return False
            f = v64 if nxt.op_type == "Mul" else 1.0 / v64
            _set_conv(g, conv, w * f.reshape(scale_shape), b * f, nxt.output[0])
        else:
            _set_conv(g, conv, w, b + (v64 if nxt.op_type == "Add" else -v64), nxt.output[0])
    else:
        return False
    g.removed.add(id(nxt))
    return True


def fold_into_convs(model: onnx.ModelProto) -> int:
    """Fold BatchNormalization and per-channel Mul/Div/Add/Sub that follow a Conv; returns how many."""
    total = 0
    while True:
        g = _Graph(model.graph)
        n = sum(_fold_into_conv(g, conv) for conv in list(model.graph.node) if conv.op_type == "Conv")
        g.finish()
        total += n
        if not n:
            return total


def _scalar(g: _Graph, name: str, expect: float) -> bool:
    v = g.const(name)
    return v is not None and v.size == 1 and abs(float(v.reshape(-1)[0]) - expect) <= _RTOL * max(1.0, expect)


def _other(node: onnx.NodeProto, name: str) -> str | None:
    ins = list(node.input)
    if len(ins) != 2 or name not in ins:
        return None
    return ins[1 - ins.index(name)]


def _clip_is_relu6(g: _Graph, clip: onnx.NodeProto) -> bool:
    if clip.op_type != "Clip":
        return False
    if len(clip.input) >= 3 and clip.input[1] and clip.input[2]:
        return _scalar(g, clip.input[1], 0.0) and _scalar(g, clip.input[2], 6.0)
    lo, hi = _attr(clip, "min", float("-inf")), _attr(clip, "max", float("inf"))
    return len(clip.input) == 1 and lo == 0.0 and hi == 6.0


def _match_hardswish(g: _Graph, first: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]] | None:
    """``first`` starts a hard-swish: returns (x, nodes to replace; the last one's output is y)."""
    if first.op_type == "Add":  # x + 3 -> Clip(0, 6) -> * x -> / 6
        x = next(
            (i for i in first.input if i not in g.inits and _scalar(g, _other(first, i) or "", 3.0)), None
        )
        if x is None:
            return None
        clip = g.sole_consumer(first.output[0])
        if clip is None or not _clip_is_relu6(g, clip):
            return None
        step = g.sole_consumer(clip.output[0])
        if step is None:
            return None
        if step.op_type == "Mul" and _other(step, clip.output[0]) == x:  # (x * clip) / 6
            last = g.sole_consumer(step.output[0])
            if last is None or not _is_div6(g, last, step.output[0]):
                return None
            return x, [first, clip, step, last]
        if _is_div6(g, step, clip.output[0]):  # x * (clip / 6)
            last = g.sole_consumer(step.output[0])
            if last is None or last.op_type != "Mul" or _other(last, step.output[0]) != x:
                return None
            return x, [first, clip, step, last]
        return None
    if first.op_type == "HardSigmoid" and len(first.input) == 1:
        alpha, beta = float(_attr(first, "alpha", 0.2)), float(_attr(first, "beta", 0.5))
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
            return None
        x = first.input[0]
        last = g.sole_consumer(first.output[0])
        if last is None or last.op_type != "Mul" or _other(last, first.output[0]) != x:
            return None
        return x, [first, last]
    return None


def _is_div6(g: _Graph, node: onnx.NodeProto, data: str) -> bool:
    if len(node.input) != 2:
        return False
    if node.op_type == "Div":
        return node.input[0] == data and _scalar(g, node.input[1], 6.0)
    if node.op_type == "Mul":
        other = _other(node, data)
        return other is not None and _scalar(g, other, 1.0 / 6.0)
    return False


def fuse_hardswish(model: onnx.ModelProto) -> int:
    """Replace written-out hard-swish patterns by ``HardSwish`` (needs opset 14); returns how many."""
    if opset_of(model) < 14:
        return 0
    g = _Graph(model.graph)
    fused = 0
    new_nodes: dict[int, onnx.NodeProto] = {}
    for node in list(model.graph.node):
        if id(node) in g.removed or node.domain not in ("", "ai.onnx"):
            continue
        hit = _match_hardswish(g, node)
        if hit is None or any(id(n) in g.removed for n in hit[1]):
            continue
        x, nodes = hit
        out = nodes[-1].output[0]
        new_nodes[id(nodes[-1])] = helper.make_node(
            "HardSwish", [x], [out], name=f"{nodes[0].name}_hardswish"
        )
        g.removed |= {id(n) for n in nodes}
        fused += 1
    if fused:
        rebuilt = [
            new_nodes.get(id(n), n) for n in model.graph.node if id(n) not in g.removed or id(n) in new_nodes
        ]
        g.removed.clear()
        del model.graph.node[:]
        model.graph.node.extend(rebuilt)
        g.finish()
    return fused


def count_hardswish(model: onnx.ModelProto) -> int:
    """How many hard-swish patterns the graph holds (whatever its opset)."""
    g = _Graph(model.graph)
    return sum(_match_hardswish(g, n) is not None for n in model.graph.node)


def _layernorm_at(g: _Graph, mean: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """``mean`` = ReduceMean(x) starting y = (x - mean) / sqrt(mean((x - mean)^2) + eps) [* gamma + beta]."""
    x = mean.input[0]
    sub = g.sole_consumer(mean.output[0])
    if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, mean.output[0]]:
        return None
    users = g.consumers.get(sub.output[0], [])
    sq = next(
        (
            u
            for u in users
            if u.op_type == "Pow" or (u.op_type == "Mul" and list(u.input) == [sub.output[0]] * 2)
        ),
        None,
    )
    div = next((u for u in users if u.op_type == "Div" and u.input[0] == sub.output[0]), None)
    if sq is None or div is None or len(users) != 2:
        return None
    if sq.op_type == "Pow" and not _scalar(g, sq.input[1], 2.0):
        return None
    var = g.sole_consumer(sq.output[0])
    eps = var and g.sole_consumer(var.output[0])
    root = eps and g.sole_consumer(eps.output[0])
    if var is None or var.op_type != "ReduceMean" or eps is None or eps.op_type != "Add" or root is None:
        return None
    if root.op_type != "Sqrt" or g.sole_consumer(root.output[0]) is not div or div.input[1] != root.output[0]:
        return None
    nodes = [mean, sub, sq, var, eps, root, div]
    for op in ("Mul", "Add"):  # the affine, when its operands are constants
        nxt = g.sole_consumer(nodes[-1].output[0])
        if nxt is None or nxt.op_type != op or (_other(nxt, nodes[-1].output[0]) or "") not in g.inits:
            break
        nodes.append(nxt)
    return nodes


def layernorm_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that spell out layer normalizations (ReduceMean, Sub, Pow, ..., the affine).

    ORT fuses such a chain into one float LayerNormalization kernel when no Q/DQ sits inside it, and
    8-bit grids on the mean or the variance cost more accuracy than anything else in the block.
    """
    g = _Graph(model.graph)
    out: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "ReduceMean" and node.domain in ("", "ai.onnx"):
            hit = _layernorm_at(g, node)
            if hit:
                out |= {n.name for n in hit}
    return out
