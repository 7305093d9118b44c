"""Prepare a QDQ model for TVM's Relax ONNX front end: shape-computing subgraphs folded to constants.

TVM 0.27's ``from_onnx`` requires a ``Reshape``'s new-shape input to be a shape it knows at import
("Reshape requires the input new shape to be Shape. However, the given one is relax.TensorType").
Exporters such as Paddle2ONNX compute it at run time instead, e.g. a flatten written as
``Reshape(x, Concat(Cast(Slice(Cast(Shape(x)), 0, 1)), Cast(-1)))``.  :func:`fold_reshape_shapes`
evaluates such subgraphs symbolically: each element of a shape tensor is an integer or "dimension
``i`` of tensor ``t``".  An element that is dimension ``i`` of the Reshape's own data input at the same
position ``i`` becomes ``0`` (ONNX Reshape's "copy this dimension", exact when ``allowzero`` is 0), so
the batch stays dynamic; a dimension that ONNX shape inference knows statically becomes its value.
The folded shape is written as an int64 initializer and the nodes left unused are removed.  A shape
this cannot fold exactly is left as it was (TVM then names the op in its message).

Ops understood in a shape subgraph: Shape (with ``start``/``end``), Constant, initializers, Identity,
Cast (to an integer type), Slice (constant starts/ends/axes/steps), Gather (constant indices, axis 0),
Concat (axis 0), Unsqueeze and Squeeze (of 0-d/1-d tensors).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

Elem = int | tuple[str, int]  # an integer, or (tensor name, axis): that tensor's dimension
Sym = tuple[list[Elem], bool]  # elements, and whether the tensor is 0-d
_INT_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8}


def fold_reshape_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """A copy of ``model`` whose Reshape shapes computed at run time are constants where that is exact.

    Args:
        model: an ONNX model (float or QDQ), opset >= 13.

    Returns:
        The prepared copy, and one record per folded Reshape: ``{"node", "shape_from": [op types of the
        removed subgraph], "shape": [ints; 0 = copy the input's dimension]}``.  An empty list: nothing
        needed folding (the copy equals the input).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    static = _static_dims(out)
    walker = _Walker({o: n for n in g.node for o in n.output}, consts, static)
    folded: list[dict[str, Any]] = []
    for n in g.node:
        if n.op_type != "Reshape" or len(n.input) < 2 or n.input[1] in consts:
            continue
        sym = walker.sym(n.input[1])
        if sym is None or sym[1]:
            continue
        allowzero = next((a.i for a in n.attribute if a.name == "allowzero"), 0)
        shape: list[int] = []
        for pos, e in enumerate(sym[0]):
            if isinstance(e, int):
                shape.append(e)
            elif e == (n.input[0], pos) and not allowzero:
                shape.append(0)
            elif e[0] in static and static[e[0]][e[1]] > 0:
                shape.append(static[e[0]][e[1]])
            else:
                break
        else:
            name = f"{n.name or n.output[0]}__folded_shape"
            g.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), name))
            folded.append(
                {"node": n.name or n.output[0], "shape_from": walker.ops(n.input[1]), "shape": shape}
            )
            n.input[1] = name
    if folded and not any(a.type in (a.GRAPH, a.GRAPHS) for n in g.node for a in n.attribute):
        _drop_unused(out)  # (a model with subgraphs keeps its dead nodes: they may read outer names)
    return out, folded


class _Walker:
    """Symbolic values of integer shape tensors, memoised by tensor name."""

    def __init__(self, producer: dict[str, onnx.NodeProto], consts: dict[str, np.ndarray],
                 static: dict[str, list[int]]) -> None:  # fmt: skip
        self.producer, self.consts, self.static = producer, consts, static
        self.memo: dict[str, Sym | None] = {}

    def sym(self, name: str) -> Sym | None:
        if name not in self.memo:
            self.memo[name] = None  # a valid graph has no cycles; this guards the recursion all the same
            if name in self.consts:
                a = self.consts[name]
                ok = a.dtype.kind in "iu" and a.ndim <= 1
                self.memo[name] = ([int(v) for v in a.reshape(-1)], a.ndim == 0) if ok else None
            elif name in self.producer:
                self.memo[name] = self._node(self.producer[name])
        return self.memo[name]

    def _node(self, n: onnx.NodeProto) -> Sym | None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        op = n.op_type
        if op == "Shape":
            rank = len(self.static.get(n.input[0], []))
            if not rank:
                return None
            dims: list[Elem] = [(n.input[0], i) for i in range(rank)]
            return dims[slice(attrs.get("start", 0), attrs.get("end", rank))], False
        args = [self.sym(i) if i else None for i in n.input]
        if not args or args[0] is None:
            return None
        elems, scalar = args[0]
        if op == "Identity" or (op == "Cast" and attrs.get("to") in _INT_TYPES):
            return elems, scalar
        if op == "Concat" and attrs.get("axis") in (0, -1) and all(a is not None and not a[1] for a in args):
            return [e for a in args if a is not None for e in a[0]], False
        if op in ("Unsqueeze", "Squeeze"):
            return elems, op == "Squeeze" and len(elems) == 1
        if scalar or any(a is None for a in args[1:]):
            return None
        ints = [[e for e in a[0] if isinstance(e, int)] for a in args[1:] if a is not None]
        if op == "Gather" and attrs.get("axis", 0) == 0 and args[1] is not None:
            if len(ints[0]) != len(args[1][0]) or any(not -len(elems) <= i < len(elems) for i in ints[0]):
                return None
            return [elems[i] for i in ints[0]], args[1][1]
        if op == "Slice" and len(args) >= 3 and all(len(i) == 1 for i in ints):
            axis, step = (ints[2] if len(ints) > 2 else [0])[0], (ints[3] if len(ints) > 3 else [1])[0]
            if axis not in (0, -1) or step == 0:
                return None
            return elems[slice(ints[0][0], ints[1][0], step)], False
        return None

    def ops(self, name: str) -> list[str]:
        """The op types of the subgraph computing ``name``, output first."""
        seen, stack, ops = set(), [name], []
        while stack:
            t = stack.pop()
            if t in self.producer and t not in seen:
                seen.add(t)
                ops.append(self.producer[t].op_type)
                if self.producer[t].op_type != "Shape":  # the tensor it reads is not part of it
                    stack.extend(self.producer[t].input)
        return ops


def name_unknown_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Give every unknown dimension of the graph inputs a name of its own, in place.

    Paddle2ONNX writes an unknown batch as ``dim_value: -1`` and unknown sizes as ``dim_param: "?"``.
    TVM's front end takes -1 as a static size (a Flatten then asks Reshape for ``(-1, -1)``) and makes
    one variable per dimension name (every ``"?"`` would be the same size).  Each such dimension gets
    the name ``<input>_<axis>``; named dimensions other than ``"?"`` keep their names (equal names
    state equal sizes, as ONNX means them).

    Returns:
        ``{input name: [dims after the renaming]}`` for the inputs that changed (empty: none did).
    """
    changed: dict[str, list[int | str]] = {}
    for vi in model.graph.input:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        hit = False
        for axis, d in enumerate(t.shape.dim):
            unknown = d.dim_param in ("", "?") if d.HasField("dim_param") else d.dim_value < 0
            if unknown or not (d.HasField("dim_param") or d.HasField("dim_value")):
                d.dim_param, hit = f"{vi.name}_{axis}", True
        if hit:
            changed[vi.name] = [d.dim_param or d.dim_value for d in t.shape.dim]
    return changed


def _static_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    dims: dict[str, list[int]] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return dims


def _drop_unused(model: onnx.ModelProto) -> None:
    g = model.graph
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(keep))
    inputs = {i.name for i in g.input}  # (IR < 4 lists initializers as inputs: those stay)
    inits = [i for i in g.initializer if i.name in needed or i.name in inputs]
    del g.initializer[:]
    g.initializer.extend(inits)
