"""Blocks of a graph and a numpy forward/backward through one, for block reconstruction (``brecq``).

A *block* is a run of consecutive nodes (graph order) of the kinds below that reads one data tensor
from outside and whose results are read outside only through one tensor, and that holds at least two
layers to round: a residual or inverted-residual block (BRECQ, Li et al. 2021, sec. 3.2).  Blocks end
at such a single-tensor point after a layer without activation (a linear bottleneck's project conv) or
after an ``Add`` (and the activation that follows it), or at a node of another kind; at most
``MAX_LAYERS`` layers each.

``BlockNet`` runs a block in numpy on ``[N, C, H, W]`` float32 arrays: 2-D ``Conv`` (groups, pads,
strides; no dilation), ``Relu``, ``Clip`` and ``Add``, and back-propagates an output gradient to the
weights of the block's Conv layers (``grads``).  Cost per kernel tap: one batched ``[C_out/g, C_in/g]``
product (a multiply for depthwise convs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.algorithms.layer_matrix import int_attr, ints_attr, node_attr, str_attr

MAX_LAYERS = 4
_ACT = ("Relu", "Clip")
_OPS = ("Conv", "Add", *_ACT)


@dataclass
class Block:
    nodes: list[onnx.NodeProto]
    input: str  # the one data tensor read from outside
    output: str  # the one tensor read after the block
    layers: list[str] = field(default_factory=list)  # weight names of the layers to round, in order


def _supported(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    if node.op_type not in _OPS:
        return False
    if node.op_type == "Conv":
        return (
            node.input[1] in consts
            and consts[node.input[1]].ndim == 4
            and str_attr(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID")
            and all(d == 1 for d in ints_attr(node, "dilations", [1, 1]))
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in consts)
        )
    if node.op_type == "Clip":
        return all(not i or i in consts for i in node.input[1:])
    return True


def find_blocks(model: onnx.ModelProto, layers: set[str], consts: dict[str, np.ndarray]) -> list[Block]:
    """Blocks (module docstring) whose Conv weights include at least two of ``layers``."""
    nodes = list(model.graph.node)
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            readers.setdefault(t, []).append(i)
    outputs = {o.name for o in model.graph.output}
    blocks: list[Block] = []
    start = 0
    while start < len(nodes):
        if not _supported(nodes[start], consts):
            start += 1
            continue
        best, end = 0, start
        while (
            end < len(nodes)
            and _supported(nodes[end], consts)
            and _count(nodes[start : end + 1], layers) <= MAX_LAYERS
        ):
            end += 1
            io = _single_io(nodes, start, end, readers, outputs, consts)
            if io is None or _count(nodes[start:end], layers) < 1:
                continue
            last, nxt = nodes[end - 1], nodes[end] if end < len(nodes) else None
            after_layer_act = last.op_type in _ACT and _producer_kind(nodes, start, end - 1) == "Conv"
            closes = (
                nxt is None
                or not _supported(nxt, consts)
                or (nxt.op_type not in _ACT and not after_layer_act)
            )
            if closes:
                best = end
                if nxt is not None and nxt.op_type == "Conv":
                    break
        if best == 0:
            start += 1
            continue
        part = nodes[start:best]
        io = _single_io(nodes, start, best, readers, outputs, consts)
        assert io is not None
        names = [n.input[1] for n in part if n.op_type == "Conv" and n.input[1] in layers]
        if len(names) >= 2:
            blocks.append(Block(part, io[0], io[1], names))
        start = best
    return blocks


def _count(part: list[onnx.NodeProto], layers: set[str]) -> int:
    return sum(1 for n in part if n.op_type == "Conv" and n.input[1] in layers)


def _producer_kind(nodes: list[onnx.NodeProto], start: int, i: int) -> str:
    src = nodes[i].input[0]
    return next((n.op_type for n in nodes[start:i] if src in n.output), "")


def _single_io(
    nodes: list[onnx.NodeProto],
    start: int,
    end: int,
    readers: dict[str, list[int]],
    outputs: set[str],
    consts: dict[str, np.ndarray],
) -> tuple[str, str] | None:
    made = {o for n in nodes[start:end] for o in n.output}
    ins = {t for n in nodes[start:end] for t in n.input if t and t not in made and t not in consts}
    outs = {t for t in made if t in outputs or any(r >= end for r in readers.get(t, []))}
    if len(ins) != 1 or len(outs) != 1 or any(r >= end for t in ins for r in readers.get(t, [])):
        return None  # (the block's input read again after it, e.g. by a residual Add: not a cut)
    return next(iter(ins)), next(iter(outs))


class BlockNet:
    """A block's forward and backward in numpy; weights/biases from ``params`` (name -> array) first,
    then the model's constants."""

    def __init__(self, block: Block, consts: dict[str, np.ndarray]) -> None:
        self.block = block
        self.consts = consts

    def _get(self, name: str, params: dict[str, np.ndarray]) -> np.ndarray:
        return params[name] if name in params else self.consts[name]

    def forward(
        self, x: np.ndarray, params: dict[str, np.ndarray], keep: bool = False
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Block output for input ``x``; with ``keep`` also every tensor (for ``grads``)."""
        env = {self.block.input: x}
        for n in self.block.nodes:
            a = env[n.input[0]]
            if n.op_type == "Conv":
                bias = self._get(n.input[2], params) if len(n.input) > 2 and n.input[2] else None
                y = conv(a, self._get(n.input[1], params), bias, n)
            elif n.op_type == "Relu":
                y = np.maximum(a, 0)
            elif n.op_type == "Clip":
                lo, hi = _clip_bounds(n, self.consts)
                y = np.clip(a, lo, hi)
            else:
                y = a + (env[n.input[1]] if n.input[1] in env else self._get(n.input[1], params))
            env[n.output[0]] = y.astype(np.float32, copy=False)
        return env[self.block.output], (env if keep else {})

    def grads(
        self, env: dict[str, np.ndarray], g_out: np.ndarray, params: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Gradients of the block's layer weights (names in ``block.layers``) for output gradient ``g_out``."""
        g = {self.block.output: g_out}
        out: dict[str, np.ndarray] = {}
        for n in reversed(self.block.nodes):
            gy = g.pop(n.output[0], None)
            if gy is None:
                continue
            a = env[n.input[0]]
            if n.op_type == "Conv":
                need_x = n.input[0] != self.block.input
                gx, gw = conv_back(a, self._get(n.input[1], params), gy, n, need_x)
                if n.input[1] in self.block.layers:
                    out[n.input[1]] = gw
                    if len(n.input) > 2 and n.input[2]:
                        out[n.input[2]] = gy.sum(axis=(0, 2, 3))
                _acc(g, n.input[0], gx)
            elif n.op_type == "Relu":
                _acc(g, n.input[0], gy * (a > 0))
            elif n.op_type == "Clip":
                lo, hi = _clip_bounds(n, self.consts)
                _acc(g, n.input[0], gy * ((a > lo) & (a < hi)))
            else:
                for t in n.input[:2]:
                    if t in env:
                        _acc(g, t, gy)
        return out


def _acc(g: dict[str, np.ndarray], name: str, v: np.ndarray | None) -> None:
    if v is not None:
        g[name] = g[name] + v if name in g else v


def _clip_bounds(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[float, float]:
    lo, hi = -np.inf, np.inf
    if len(node.input) > 1 and node.input[1]:
        lo = float(consts[node.input[1]])
    if len(node.input) > 2 and node.input[2]:
        hi = float(consts[node.input[2]])
    a_lo, a_hi = node_attr(node, "min"), node_attr(node, "max")
    lo = float(a_lo.f) if a_lo is not None else lo
    hi = float(a_hi.f) if a_hi is not None else hi
    return lo, hi


def _geometry(
    x: np.ndarray, w: np.ndarray, node: onnx.NodeProto
) -> tuple[np.ndarray, list[int], list[int], int]:
    pads = ints_attr(node, "pads", [0, 0, 0, 0])
    strides = ints_attr(node, "strides", [1, 1])
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])]) if any(pads) else x
    oh = (xp.shape[2] - w.shape[2]) // strides[0] + 1
    ow = (xp.shape[3] - w.shape[3]) // strides[1] + 1
    return xp, strides, [oh, ow], int_attr(node, "group", 1)


def _tap(xp: np.ndarray, i: int, j: int, s: list[int], o: list[int]) -> tuple[slice, ...]:
    return (
        slice(None),
        slice(None),
        slice(i, i + s[0] * (o[0] - 1) + 1, s[0]),
        slice(j, j + s[1] * (o[1] - 1) + 1, s[1]),
    )


def conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, node: onnx.NodeProto) -> np.ndarray:
    """2-D Conv as ONNX defines it (NOTSET/VALID pads, no dilation): [N, C, H, W] -> [N, O, OH, OW]."""
    xp, s, o, g = _geometry(x, w, node)
    n = x.shape[0]
    cout, cig = w.shape[:2]
    cog = cout // g
    out = np.zeros((n, cout, o[0], o[1]), np.float32)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            xs = xp[_tap(xp, i, j, s, o)]
            if cig == 1 and cog == 1:
                out += w[None, :, 0, i, j, None, None] * xs
            else:
                wt = w[:, :, i, j].reshape(g, cog, cig)
                out += np.matmul(wt, xs.reshape(n, g, cig, -1)).reshape(out.shape)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def conv_back(
    x: np.ndarray, w: np.ndarray, gy: np.ndarray, node: onnx.NodeProto, need_x: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """(dL/dx or None, dL/dw) of ``conv`` for output gradient ``gy``."""
    xp, s, o, g = _geometry(x, w, node)
    n = x.shape[0]
    cout, cig = w.shape[:2]
    cog = cout // g
    gxp = np.zeros_like(xp) if need_x else None
    gw = np.zeros_like(w)
    gyg = gy.reshape(n, g, cog, -1)
    gy_t = np.ascontiguousarray(gyg.transpose(1, 2, 0, 3)).reshape(g, cog, -1)  # [G, Cog, N*P]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            tap = _tap(xp, i, j, s, o)
            xs = xp[tap]
            if cig == 1 and cog == 1:
                gw[:, 0, i, j] = np.einsum("nchw,nchw->c", gy, xs)
                if gxp is not None:
                    gxp[tap] += w[None, :, 0, i, j, None, None] * gy
                continue
            xs_t = np.ascontiguousarray(xs.reshape(n, g, cig, -1).transpose(1, 0, 3, 2)).reshape(g, -1, cig)
            gw[:, :, i, j] = np.matmul(gy_t, xs_t).reshape(cout, cig)
            if gxp is not None:
                wt = w[:, :, i, j].reshape(g, cog, cig)
                gxp[tap] += np.matmul(np.swapaxes(wt, 1, 2), gyg).reshape(xs.shape)
    if gxp is None:
        return None, gw
    pads = ints_attr(node, "pads", [0, 0, 0, 0])
    h, wd = x.shape[2], x.shape[3]
    return gxp[:, :, pads[0] : pads[0] + h, pads[1] : pads[1] + wd], gw


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers as float32 arrays (others as they are)."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
