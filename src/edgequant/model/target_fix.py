"""Exact graph fixes for a target's channel alignment: zero-padded output channels (``--fix``).

A Conv whose output channels break the profile's ``multiple`` rule gets extra filters that are all
zero (bias zero too), so the extra channels are exactly 0.  Every reader of those channels must then
accept them without changing its result:

* channel-wise ops pass zeros through (Relu, Clip, LeakyRelu, MaxPool, AveragePool,
  GlobalAveragePool, Flatten after a global pool);
* the next Conv (group 1) or FC gets zero weights for the new input channels, so its output is
  unchanged (0 · anything = 0).

When any reader is something else (an Add, a Concat, a graph output, a depthwise conv, a Flatten of a
spatial map, ...) the padding is not applied and the reason is returned instead.  The result is
then checked against the float model by the pipeline, like every output.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.targets import Profile
from edgequant.targets.kinds import GraphView

PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten"}


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _readers(
    v: GraphView, tensor: str, graph_outputs: set[str]
) -> tuple[list[tuple[onnx.NodeProto, str]], str]:
    """The weight-carrying readers of ``tensor`` through pass-through ops, or '' + the reason it is not exact."""
    out: list[tuple[onnx.NodeProto, str]] = []
    pooled = False
    frontier = [(tensor, False)]
    while frontier:
        t, pooled = frontier.pop()
        if t in graph_outputs:
            return [], f"'{t}' is a graph output (its extra channels would be visible)"
        for c in v.consumers.get(t, []):
            if c.op_type in PASS_THROUGH and c.input[0] == t:
                if c.op_type == "Flatten" and not pooled:
                    return [], f"Flatten '{c.name}' of a spatial map (padding would interleave features)"
                frontier.append((c.output[0], pooled or c.op_type == "GlobalAveragePool"))
            elif c.op_type == "Conv" and c.input[0] == t and _attr(c, "group", 1) == 1:
                out.append((c, "conv"))
            elif c.op_type in ("Gemm", "MatMul") and c.input[0] == t and pooled:
                out.append((c, "fc"))
            else:
                return (
                    [],
                    f"{c.op_type} '{c.name}' reads it (only convs, FC and channel-wise ops can take zero channels)",
                )
    return out, ""


def pad_channels(model: onnx.ModelProto, profile: Profile) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with output channels zero-padded where the profile asks and it is exact.

    Returns the model and one line per change or per alignment left as it is (with the reason).
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    v = GraphView(m)
    inits = {t.name: t for t in m.graph.initializer}
    outputs = {o.name for o in m.graph.output}
    notes: list[str] = []
    for node in list(m.graph.node):
        if node.op_type != "Conv" or _attr(node, "group", 1) != 1 or node.input[1] not in inits:
            continue
        rule = profile.op(v.kind(node))
        limit = rule.limits.get("out_channels") if rule is not None else None
        w = numpy_helper.to_array(inits[node.input[1]])
        cout = int(w.shape[0])
        if limit is None or not limit.multiple or cout % limit.multiple == 0:
            continue
        to = -(-cout // limit.multiple) * limit.multiple
        readers, why = _readers(v, node.output[0], outputs)
        if why:
            notes.append(f"--fix: '{node.name}' keeps {cout} output channels: {why}.")
            continue
        if any(r.input[1] not in inits for r, _ in readers):
            notes.append(
                f"--fix: '{node.name}' keeps {cout} output channels: a reader's weight is not a constant."
            )
            continue
        extra = to - cout
        pad = [(0, extra)] + [(0, 0)] * (w.ndim - 1)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.pad(w, pad), node.input[1]))
        if len(node.input) > 2 and node.input[2] in inits:
            b = numpy_helper.to_array(inits[node.input[2]])
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(np.pad(b, (0, extra)), node.input[2]))
        for reader, kind in readers:
            rw = numpy_helper.to_array(inits[reader.input[1]])
            if kind == "conv":
                axis = 1
            elif reader.op_type == "Gemm":
                axis = 1 if _attr(reader, "transB", 0) else 0
            else:
                axis = 0
            widths = [(0, 0)] * rw.ndim
            widths[axis] = (0, extra)
            inits[reader.input[1]].CopyFrom(numpy_helper.from_array(np.pad(rw, widths), reader.input[1]))
        names = ", ".join(r.name for r, _ in readers)
        notes.append(
            f"--fix: '{node.name}' output channels {cout} -> {to} with zero filters; readers {names} get zero "
            "weights for them (exact)."
        )
    if any("zero filters" in n for n in notes):
        from edgequant.model.repair import refresh_shapes

        m, _ = refresh_shapes(m)
    return m, notes
