"""Exact graph fixes for a target's rules (``--fix``): zero-padded channels, split tall kernels.

``apply_fixes`` runs both; each returns one plan note per change or per case left as it is.

**Channel alignment.**
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

**Kernel height.**  A Conv (group 1, dilation 1, explicit pads) whose kernel is taller than the
profile's ``kernel_h`` limit becomes ``n = ceil(K / max)`` partial convs over consecutive kernel rows
``[a_i, b_i)``, summed.  With the input padded once by the conv's own top/bottom rows (a Pad node),
part ``i`` reads rows ``[a_i, Hp - (K - b_i))`` (a Slice) with no height padding, so its output row
``o`` is ``sum_r W[a_i + r] x[o*s + a_i + r - pt]``: the sum over the parts is the original conv,
exactly in real arithmetic (float32 adds in another order: a few ulp).  The bias goes to the first
part.  The Pad, Slice and Add nodes are not convs: a target that does not list them runs them on its
host (the compliance report says so).  In the quantized model each partial sum gets its own 8-bit
activation grid before the Add, so the integer result is not bit-identical: the pipeline's check
against float measures it.  Not split (with the reason in the notes): grouped or dilated convs,
``auto_pad``, and kernels whose height the profile does not limit.
"""

from __future__ import annotations

import itertools

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


def apply_fixes(model: onnx.ModelProto, profile: Profile) -> tuple[onnx.ModelProto, list[str]]:
    """Every exact fix ``--fix`` applies (channel padding, then kernel splitting) and their notes."""
    model, notes = pad_channels(model, profile)
    model, more = split_tall_kernels(model, profile)
    return model, notes + more


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


def _parts(k: int, most: int) -> list[tuple[int, int]]:
    """Consecutive row ranges covering ``[0, k)``, as even as possible, none taller than ``most``."""
    n = -(-k // most)
    cuts = [round(i * k / n) for i in range(n + 1)]
    return list(itertools.pairwise(cuts))


def split_tall_kernels(model: onnx.ModelProto, profile: Profile) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose convs taller than the profile's ``kernel_h`` limit are split (module doc)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    v = GraphView(m)
    inits = {t.name: t for t in m.graph.initializer}
    notes: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    changed = False
    for node in m.graph.node:
        rule = profile.op(v.kind(node)) if node.op_type == "Conv" else None
        limit = rule.limits.get("kernel_h") if rule is not None else None
        w = (
            numpy_helper.to_array(inits[node.input[1]])
            if limit is not None and node.input[1] in inits
            else None
        )
        if limit is None or limit.max is None or w is None or w.ndim < 3 or w.shape[2] <= limit.max:
            new_nodes.append(node)
            continue
        k, rank = int(w.shape[2]), w.ndim - 2
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        auto = attrs.get("auto_pad", b"NOTSET")
        why = (
            "it is grouped" if attrs.get("group", 1) != 1
            else "it is dilated" if any(d != 1 for d in attrs.get("dilations", [1] * rank))
            else f"auto_pad {auto.decode() if isinstance(auto, bytes) else auto} (explicit pads needed)"
            if auto not in (b"NOTSET", "NOTSET") else ""
        )  # fmt: skip
        if why:
            notes.append(f"--fix: '{node.name}' keeps its {k}-tall kernel: {why}.")
            new_nodes.append(node)
            continue
        pads = list(attrs.get("pads", [0] * 2 * rank))
        top, bottom = int(pads[0]), int(pads[rank])
        x = node.input[0]
        if top or bottom:
            widths = [0, 0, top] + [0] * (rank - 1) + [0, 0, bottom] + [0] * (rank - 1)
            pad_w = _const(inits, m, f"{node.name}_split_pads", np.array(widths, np.int64))
            x = f"{node.name}_split_padded"
            new_nodes.append(
                onnx.helper.make_node("Pad", [node.input[0], pad_w], [x], name=x, mode="constant")
            )
        part_pads = [0, *pads[1:rank], 0, *pads[rank + 1 :]]
        outs = []
        for i, (a, b) in enumerate(_parts(k, limit.max)):
            tag = f"{node.name}_rows{a}_{b}"
            starts = _const(inits, m, f"{tag}_starts", np.array([a], np.int64))
            ends = _const(inits, m, f"{tag}_ends", np.array([b - k if b < k else 2**62], np.int64))
            axes = _const(inits, m, f"{tag}_axes", np.array([2], np.int64))
            new_nodes.append(
                onnx.helper.make_node("Slice", [x, starts, ends, axes], [f"{tag}_in"], name=f"{tag}_slice")
            )
            wi = _const(inits, m, f"{tag}_w", np.ascontiguousarray(w[:, :, a:b]))
            ins = [f"{tag}_in", wi] + (
                [node.input[2]] if i == 0 and len(node.input) > 2 and node.input[2] else []
            )
            conv_attrs = {n: val for n, val in attrs.items() if n not in ("pads", "auto_pad")}
            new_nodes.append(
                onnx.helper.make_node("Conv", ins, [f"{tag}_out"], name=tag, pads=part_pads, **conv_attrs)
            )
            outs.append(f"{tag}_out")
        acc = outs[0]
        for j, o in enumerate(outs[1:], 1):
            dst = node.output[0] if j == len(outs) - 1 else f"{node.name}_split_sum{j}"
            new_nodes.append(onnx.helper.make_node("Add", [acc, o], [dst], name=f"{node.name}_split_add{j}"))
            acc = dst
        changed = True
        rows = ", ".join(f"{a}-{b - 1}" for a, b in _parts(k, limit.max))
        notes.append(
            f"--fix: '{node.name}' {k}-tall kernel split into {len(outs)} convs over rows {rows} (at most "
            f"{limit.max}), summed (exact; the Pad/Slice/Add between them run where the target runs them)."
        )
    if changed:
        del m.graph.node[:]
        m.graph.node.extend(new_nodes)
        from edgequant.model.repair import refresh_shapes

        m, _ = refresh_shapes(m)
    return m, notes


def _const(inits: dict[str, onnx.TensorProto], m: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    t = numpy_helper.from_array(value, name)
    m.graph.initializer.append(t)
    inits[name] = t
    return name
