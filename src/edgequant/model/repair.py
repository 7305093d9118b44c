"""Repairs that make real exported graphs quantizable, each recorded as a note for the report.

* ``Constant`` nodes holding tensors become initializers (Paddle2ONNX and some TF converters store
  every weight this way; left alone, those weights would silently stay float).
* A top-level ``If`` whose condition is a constant is replaced by the branch it always takes, so a
  network wrapped in ``If`` is quantized rather than copied.
* Float fusions (``model.fuse``): BatchNormalization and per-channel affines folded into the Conv
  before them, written-out hard-swish fused into ``HardSwish`` (raising the opset to 14 for it).
* Stale shape information is dropped and re-inferred: intermediate ``value_info`` is removed, and a
  graph output whose stored shape contradicts inference gets the inferred shape (the ORT tool
  stops here with "Inferred shape and existing shape differ").
* The default-domain opset is raised when the quantized form needs it (per-axis Q/DQ need 13;
  int4/int16 and blocked Q/DQ need 21), with ``onnx.version_converter``.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper, shape_inference, version_converter

from edgequant.errors import ModelError, UnsupportedError, first_line
from edgequant.model.einsum import rewrite_einsums
from edgequant.model.io import PROTO_LIMIT, opset_of, serialized_size, weightless_copy

log = logging.getLogger(__name__)

_CONST_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name not in _CONST_ATTRS:
            continue
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.asarray(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, dtype=np.int64)
        return np.asarray(list(attr.ints), dtype=np.int64)
    return None  # sparse or string constants stay as they are


def constants_to_initializers(graph: onnx.GraphProto) -> int:
    """Move tensor ``Constant`` nodes of ``graph`` into initializers; returns how many moved."""
    keep, moved = [], 0
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = _constant_value(node)
            if value is not None:
                graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
                moved += 1
                continue
        keep.append(node)
    if moved:
        del graph.node[:]
        graph.node.extend(keep)
    return moved


# shape/layout ops that exporters put between a stored weight and its consumer (e.g. an LSTM's
# W = Unsqueeze(Slice(w))); folding them exposes the weight to quantization
_FOLDABLE = {"Unsqueeze", "Squeeze", "Reshape", "Transpose", "Concat", "Slice", "Gather", "Cast", "Identity",
             "Split", "Flatten", "Expand", "Mul", "Add", "Sub", "Div", "Neg", "Tile", "ConstantOfShape"}  # fmt: skip
# ConstantOfShape makes a tensor from a shape alone: folded only when the result is small (the legacy
# torch exporter writes a constant Pad's pads as ConstantOfShape -> Concat -> Reshape -> Slice ->
# Transpose -> Cast; a ConstantOfShape of a large shape stays a node rather than a stored block of zeros).
# Expand and Tile fold at any size, as before: they can build a weight that is to be quantized.
GROWN_MAX_BYTES = 65536


TIED_MIN_BYTES = 4096  # below this, a second copy of a folded constant costs less than the node


def _read_as_is(graph: onnx.GraphProto, initializers: set[str]) -> set[str]:
    """Initializers that some node which will not be folded reads directly (or that are graph outputs).

    A node is folded when its type is ``_FOLDABLE`` and every input is computable from initializers
    alone; nodes are in topological order, so one pass finds them.
    """
    constant = set(initializers)
    out = {o.name for o in graph.output} & initializers
    for node in graph.node:
        inputs = [i for i in node.input if i]
        foldable = (
            node.op_type in _FOLDABLE
            and node.domain in ("", "ai.onnx")
            and inputs
            and all(i in constant for i in inputs)
        )
        if foldable:
            constant.update(node.output)
        else:
            out.update(i for i in inputs if i in initializers)
    return out


def fold_constants(model: onnx.ModelProto) -> int:
    """Replace nodes of ``_FOLDABLE`` types whose inputs are all initializers by their value."""
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    values = {t.name: t for t in g.initializer}
    opsets = list(model.opset_import)
    kept_whole = _read_as_is(g, set(values))
    keep: list[onnx.NodeProto] = []
    folded = 0
    for node in g.node:
        inputs = [i for i in node.input if i]
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx") or not inputs:
            keep.append(node)
            continue
        if not all(i in values for i in inputs):
            keep.append(node)
            continue
        if any(i in kept_whole and values[i].ByteSize() > TIED_MIN_BYTES for i in inputs):
            # a weight that another node also reads as it is (a tied embedding: Gather(E) and
            # MatMul(h, Transpose(E))): folding would store it twice, so the layout op stays
            keep.append(node)
            continue
        try:
            single = helper.make_model(
                helper.make_graph(
                    [node],
                    "fold",
                    [],
                    [helper.make_tensor_value_info(o, 0, None) for o in node.output],
                    [values[i] for i in set(inputs)],
                ),
                opset_imports=opsets,
            )
            outs = ReferenceEvaluator(single).run(None, {})
        except Exception:  # not foldable here: leave the node as it is
            keep.append(node)
            continue
        if node.op_type == "ConstantOfShape" and sum(np.asarray(a).nbytes for a in outs) > GROWN_MAX_BYTES:
            keep.append(node)
            continue
        for name, arr in zip(node.output, outs, strict=True):
            t = numpy_helper.from_array(np.asarray(arr), name)
            g.initializer.append(t)
            values[name] = t
        folded += 1
    if folded:
        del g.node[:]
        g.node.extend(keep)
    return folded


def _initializer(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def inline_constant_ifs(graph: onnx.GraphProto) -> list[str]:
    """Replace each top-level If with a constant condition by the branch it takes."""
    notes: list[str] = []
    used = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    used |= {i.name for i in graph.input}
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        cond = _initializer(graph, node.input[0]) if node.op_type == "If" else None
        if cond is None:
            new_nodes.append(node)
            continue
        taken = bool(np.asarray(cond).reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken else "else_branch"))
        rename = {}
        for name in [o for n in branch.node for o in n.output] + [t.name for t in branch.initializer]:
            if name in used:
                rename[name] = f"{name}__{node.name or 'if'}_{'then' if taken else 'else'}"
        for t in branch.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(t)
            copy.name = rename.get(t.name, t.name)
            graph.initializer.append(copy)
        for inner in branch.node:
            copy_n = onnx.NodeProto()
            copy_n.CopyFrom(inner)
            copy_n.input[:] = [rename.get(i, i) for i in inner.input]
            copy_n.output[:] = [rename.get(o, o) for o in inner.output]
            new_nodes.append(copy_n)
        for b_out, if_out in zip(branch.output, node.output, strict=True):
            new_nodes.append(
                helper.make_node(
                    "Identity", [rename.get(b_out.name, b_out.name)], [if_out], name=f"{if_out}_id"
                )
            )
        used |= set(rename.values())
        notes.append(
            f"If node '{node.name}' has a constant condition ({taken}); its "
            f"{'then' if taken else 'else'} branch ({len(branch.node)} nodes) was inlined so it is quantized."
        )
    if notes:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return notes


def refresh_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Drop stale intermediate shapes, re-infer, and fix graph outputs that contradict inference
    (in place: ``model`` is changed and returned)."""
    notes: list[str] = []
    out = model  # prepare() hands over its own copy; no second copy of the weights
    if len(out.graph.value_info):
        notes.append(f"dropped {len(out.graph.value_info)} stored intermediate shapes and re-inferred them.")
        del out.graph.value_info[:]
    probe = weightless_copy(out)  # inference needs shapes, not weight values (and works above 2 GB)
    for o in probe.graph.output:
        o.type.tensor_type.ClearField("shape")
    try:
        inferred = shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is help, not a requirement: quantization needs no shapes
        notes.append(f"shape inference failed ({first_line(exc, 160)}); continuing without it.")
        return out, notes
    shapes = {v.name: v for v in inferred.graph.value_info}
    shapes.update({v.name: v for v in inferred.graph.output})
    for o in out.graph.output:
        got = shapes.get(o.name)
        if (
            got is None
            or not got.type.tensor_type.HasField("shape")
            or not o.type.tensor_type.HasField("shape")
        ):
            continue
        stored = [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
        new = [d.dim_value if d.HasField("dim_value") else None for d in got.type.tensor_type.shape.dim]
        conflict = len(stored) != len(new) or any(
            a is not None and b is not None and a != b for a, b in zip(stored, new, strict=False)
        )
        if conflict:
            o.type.tensor_type.shape.CopyFrom(got.type.tensor_type.shape)
            notes.append(f"graph output '{o.name}' stored shape {stored} contradicts the graph; now {new}.")
    out.graph.value_info.extend(
        v
        for v in inferred.graph.value_info
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type
    )
    return out, notes


def ensure_opset(model: onnx.ModelProto, minimum: int, why: str) -> tuple[onnx.ModelProto, str | None]:
    """Raise the default-domain opset to ``minimum`` (no-op when already there)."""
    current = opset_of(model)
    if current >= minimum:
        return model, None
    large = serialized_size(model) > PROTO_LIMIT  # the converter and checker serialise: 2 GB at most
    try:
        if large:  # convert the graph without its big weights, then put the weights back by name
            converted = version_converter.convert_version(weightless_copy(model), minimum)
            weights = {t.name: t for t in model.graph.initializer}
            for t in converted.graph.initializer:
                if external_data_helper.uses_external_data(t) and t.name in weights:
                    t.CopyFrom(weights[t.name])
        else:
            converted = version_converter.convert_version(model, minimum)
            onnx.checker.check_model(converted)  # above 2 GB, ORT's load of the result checks it
    except Exception as exc:
        raise UnsupportedError(
            f"{why} needs opset >= {minimum}, and converting this opset-{current} model failed: "
            f"{first_line(exc, 200)}.",
            f"re-export the model at opset {minimum} or newer, or choose per-tensor 8-bit quantization.",
        ) from exc
    if converted.ir_version < 7:
        converted.ir_version = 7
    name_nodes(converted.graph)  # the converter expands some ops into unnamed nodes
    return converted, f"opset raised from {current} to {minimum}: {why}."


def name_nodes(graph: onnx.GraphProto) -> int:
    """Give every unnamed (or duplicate-named) node a unique name; plans and reports refer to nodes by name."""
    taken = {n.name for n in graph.node if n.name}
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.name or node.op_type}_{i}"
        name, k = base, 1
        while name in taken or name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)
        renamed += 1
    return renamed


def _fuse(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    from edgequant.model import fuse

    convs = fuse.fold_into_convs(model)
    if convs:
        notes.append(
            f"{convs} BatchNormalization/per-channel Mul/Add node(s) folded into the Conv before them, so "
            "each Conv runs as one integer kernel."
        )
    if fuse.count_hardswish(model) and opset_of(model) < 14:
        try:
            model, note = ensure_opset(model, 14, "fusing the written-out hard-swish into HardSwish")
        except UnsupportedError as exc:
            notes.append(f"hard-swish patterns stay as written: {exc.detail}")
        else:
            notes.append(note or "")
            constants_to_initializers(model.graph)  # the converter writes Clip's bounds as Constant nodes
    swish = fuse.fuse_hardswish(model)
    if swish:
        notes.append(
            f"{swish} written-out hard-swish pattern(s) (x * relu6(x + 3) / 6) fused into HardSwish nodes: "
            "one float op between Q/DQ instead of four quantized steps."
        )
    return model


def prepare(model: onnx.ModelProto, *, copy: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """Apply the repairs above to a copy of ``model`` (to ``model`` itself with ``copy=False``, for a
    model the caller loaded and no longer needs); returns it with notes for the report."""
    if not model.graph.node:
        raise ModelError("the model graph has no nodes.", "export a model with at least one operator.")
    out = model
    if copy:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    notes: list[str] = []
    before = [n.name for n in out.graph.node]
    name_nodes(out.graph)  # first: the notes below quote the names the plan and the report use
    given = {n.name for n, old in zip(out.graph.node, before, strict=True) if n.name != old}
    moved = constants_to_initializers(out.graph)
    if moved:
        notes.append(f"{moved} Constant node(s) converted to initializers so their weights are quantized.")
    notes += inline_constant_ifs(out.graph)
    if moved or notes:
        constants_to_initializers(out.graph)  # constants that came in with an inlined branch
    folded = fold_constants(out)
    if folded:
        notes.append(f"{folded} node(s) computing only from constants were folded into initializers.")
    out = _fuse(out, notes)
    notes += rewrite_einsums(out)
    from edgequant.model.fold_pad import fold_zero_pads

    pads = fold_zero_pads(out)
    if pads:
        notes.append(
            f"{pads} zero Pad node(s) folded into the pads of the Conv/AveragePool after them, so no float "
            "Pad sits between two integer kernels."
        )
    named = name_nodes(out.graph) + sum(1 for n in out.graph.node if n.name in given)  # nodes still there
    if named:
        notes.append(f"{named} unnamed or duplicate-named node(s) were given unique names.")
    out, shape_notes = refresh_shapes(out)
    notes += shape_notes
    for n in notes:
        log.info(n)
    return out, notes
