"""Graph-walking helpers shared by the exporters (fp16, dynamic): subgraphs, names, element types.

ONNX value names are unique across a model's scopes (the main graph and every control-flow body),
so these helpers treat them as one name space: :func:`graphs` walks the main graph and all nested
bodies depth-first, :func:`all_names` collects every value and node name in them, and
:func:`fresh_name` reserves a new one (``base``, ``base_1``, ``base_2``... whichever is unused).
:func:`free_names` is the set a (sub)graph reads from enclosing scopes: names used before any
input, initializer or earlier node of that graph defines them.  Element types are read and set
through tensor, sequence and optional types alike (0 for anything else, e.g. a map).
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx


def graphs(g: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``g`` and every control-flow body nested in it, depth-first."""
    yield g
    for n in g.node:
        for _, sub in named_subgraphs(n):
            yield from graphs(sub)


def named_subgraphs(n: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) for each control-flow body, e.g. ('then_branch', g)."""
    subs: list[tuple[str, onnx.GraphProto]] = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            subs.append((a.name, a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            subs.extend((f"{a.name}[{k}]", g) for k, g in enumerate(a.graphs))
    return subs


def all_names(g: onnx.GraphProto) -> set[str]:
    """Every value name and node name in ``g`` and its subgraphs."""
    names: set[str] = set()
    for sg in graphs(g):
        names.update(v.name for v in (*sg.input, *sg.output, *sg.value_info))
        names.update(t.name for t in sg.initializer)
        for n in sg.node:
            names.update((*n.input, *n.output, n.name))
    return names


def fresh_name(names: set[str], base: str) -> str:
    """``base``, or ``base_1``, ``base_2``... whichever is unused; the result is reserved in ``names``."""
    name, i = base, 0
    while name in names:
        i += 1
        name = f"{base}_{i}"
    names.add(name)
    return name


def name_nodes(g: onnx.GraphProto, names: set[str]) -> None:
    """Give unnamed nodes a unique name, so that every plan entry points at one node."""
    for sg in graphs(g):
        for n in sg.node:
            if not n.name:
                n.name = fresh_name(names, n.op_type)


def free_names(g: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from enclosing scopes."""
    defined = {v.name for v in g.input} | {t.name for t in g.initializer}
    used: set[str] = set()
    for n in g.node:
        used.update(i for i in n.input if i and i not in defined)
        for _, sub in named_subgraphs(n):
            used.update(x for x in free_names(sub) if x not in defined)
        defined.update(n.output)
    used.update(o.name for o in g.output if o.name not in defined)
    return used


def rename_value(g: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a value everywhere in ``g`` and its subgraphs (ONNX names are unique across scopes)."""
    for sg in graphs(g):
        for n in sg.node:
            n.input[:] = [new if i == old else i for i in n.input]
            n.output[:] = [new if o == old else o for o in n.output]
        for coll in (sg.input, sg.output, sg.value_info, sg.initializer):
            for v in coll:
                if v.name == old:
                    v.name = new


def elem_type(t: onnx.TypeProto) -> int:
    """The element type of a tensor, sequence or optional type; 0 when there is none."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return int(t.tensor_type.elem_type)
    if kind == "sequence_type":
        return elem_type(t.sequence_type.elem_type)
    if kind == "optional_type":
        return elem_type(t.optional_type.elem_type)
    return 0


def set_elem_type(t: onnx.TypeProto, elem: int) -> None:
    """Set the element type of a tensor, sequence or optional type (others are left alone)."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        t.tensor_type.elem_type = elem
    elif kind == "sequence_type":
        set_elem_type(t.sequence_type.elem_type, elem)
    elif kind == "optional_type":
        set_elem_type(t.optional_type.elem_type, elem)


def collect_elem_types(g: onnx.GraphProto) -> dict[str, int]:
    """Value name -> element type, from inputs, outputs, value_info and initializers of all scopes."""
    types: dict[str, int] = {}
    for sg in graphs(g):
        for v in (*sg.input, *sg.output, *sg.value_info):
            if elem_type(v.type):
                types[v.name] = elem_type(v.type)
        for t in sg.initializer:
            types[t.name] = t.data_type
    return types
