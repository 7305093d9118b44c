"""Fold exact zero ``Pad`` nodes into the ``Conv`` / ``AveragePool`` that reads them.

TensorFlow-style "same" padding is often exported as an explicit ``Pad`` (mode ``constant``, value 0)
before a Conv with no pads.  Quantized as it is, the Pad is a float island between two integer
kernels: ORT runs ``DQ -> Pad -> Q`` in float and cannot fuse the Conv's input Q/DQ into the kernel
before it.  Zero padding of the spatial axes is exactly what a Conv's own ``pads`` attribute does
(ONNX Conv pads with zeros), so

    Conv(Pad(x, [0, 0, b1, .., 0, 0, e1, ..], 0), pads=p)  ==  Conv(x, pads=p + [b1, .., e1, ..])

and likewise for ``AveragePool`` with ``count_include_pad=1`` (the padded zeros are counted either
way).  ``MaxPool`` pads with -inf, so a zero Pad before it is not folded, nor is a Pad with negative
pads (a crop), another mode, a non-zero value, padding of the batch or channel axis, an
``auto_pad`` SAME_* consumer, or a Pad whose output has another reader or is a graph output.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.model.io import opset_of

_FOLD_INTO = ("Conv", "AveragePool")


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def _pad_amounts(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], opset: int) -> list[int] | None:
    """The Pad's pads over all axes, or None when it is not a constant zero pad."""
    mode = _attr(node, "mode")
    if mode is not None and mode.s.decode() != "constant":
        return None
    if opset < 11:
        pads_attr, value = _attr(node, "pads"), _attr(node, "value")
        if pads_attr is None or (value is not None and value.f != 0.0):
            return None
        return list(pads_attr.ints)
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in inits or np.any(numpy_helper.to_array(inits[node.input[2]]) != 0):
            return None
    if len(node.input) > 3 and node.input[3]:  # axes (opset 18): only the full form is folded
        return None
    return [int(v) for v in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]


def fold_zero_pads(model: onnx.ModelProto) -> int:
    """Fold every foldable zero Pad of the main graph into its consumer; returns how many were folded."""
    g = model.graph
    opset = opset_of(model)
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dropped: list[onnx.NodeProto] = []
    for pad in g.node:
        if pad.op_type != "Pad" or pad.output[0] in outputs:
            continue
        users = consumers.get(pad.output[0], [])
        if len(users) != 1 or users[0].op_type not in _FOLD_INTO or users[0].input[0] != pad.output[0]:
            continue
        user = users[0]
        amounts = _pad_amounts(pad, inits, opset)
        if amounts is None or len(amounts) % 2 or any(v < 0 for v in amounts):
            continue
        rank = len(amounts) // 2
        begin, end = amounts[:rank], amounts[rank:]
        if rank < 3 or begin[:2] != [0, 0] or end[:2] != [0, 0]:
            continue
        auto = _attr(user, "auto_pad")
        if auto is not None and auto.s.decode() not in ("NOTSET", "VALID"):
            continue
        if user.op_type == "AveragePool":
            cip = _attr(user, "count_include_pad")
            if cip is None or cip.i != 1:
                continue
        old = _attr(user, "pads")
        nd = rank - 2
        base = (
            list(old.ints)
            if old is not None and (auto is None or auto.s.decode() == "NOTSET")
            else [0] * 2 * nd
        )
        new = [base[i] + begin[2 + i] for i in range(nd)] + [base[nd + i] + end[2 + i] for i in range(nd)]
        keep = [a for a in user.attribute if a.name not in ("pads", "auto_pad")]
        del user.attribute[:]
        user.attribute.extend(keep)
        user.attribute.append(helper.make_attribute("pads", new))
        user.input[0] = pad.input[0]
        dropped.append(pad)
    for pad in dropped:
        g.node.remove(pad)
    return len(dropped)
