"""A summary of a model for ``edgequant inspect``: inputs, outputs, ops, parameters, quantizable nodes.

The histogram and parameters describe the model as given; the quantizable nodes are the ones
``quantize`` quantizes with its default recipe: the model repaired as ``quantize`` repairs it
(``model.prepare``: a matmul-shaped Einsum with a constant operand becomes a MatMul, constants fold,
BatchNorm folds into its Conv, unnamed nodes get names), then planned (``planner.resolve``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx

from edgequant.model.io import opset_of

QUANTIZABLE_COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention", "Gather")


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return []
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in vi.type.tensor_type.shape.dim
    ]


def _dtype(vi: onnx.ValueInfoProto) -> str:
    if not vi.type.HasField("tensor_type"):
        return "non-tensor"
    return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name


def summarize(model: onnx.ModelProto) -> dict[str, Any]:
    g = model.graph
    init_names = {t.name for t in g.initializer}
    ops: Counter[str] = Counter()
    subgraph_nodes = 0

    def walk(graph: onnx.GraphProto, top: bool) -> None:
        nonlocal subgraph_nodes
        for node in graph.node:
            ops[node.op_type] += 1
            if not top:
                subgraph_nodes += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, False)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        walk(sub, False)

    walk(g, True)
    params = sum(int(np.prod(t.dims)) for t in g.initializer)
    return {
        "opset": opset_of(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [
            {"name": i.name, "dtype": _dtype(i), "shape": _dims(i)}
            for i in g.input
            if i.name not in init_names
        ],
        "outputs": [{"name": o.name, "dtype": _dtype(o), "shape": _dims(o)} for o in g.output],
        "ops": dict(ops.most_common()),
        "nodes": sum(ops.values()),
        "subgraph_nodes": subgraph_nodes,
        "parameters": params,
        "initializer_bytes": sum(len(t.raw_data) or t.ByteSize() for t in g.initializer),
        **quantizable(model),
    }


def quantizable(model: onnx.ModelProto) -> dict[str, Any]:
    """``{"quantizable_nodes": [{"name", "op_type"}], "quantizable_note": str}``: the compute nodes
    (``QUANTIZABLE_COMPUTE``) of the repaired model that ``quantize``'s default plan quantizes, by
    their names in the repaired model (an Einsum rewritten as ``<name>_matmul``); ``quantizable_note``
    is quantize's refusal when it would quantize nothing, else empty."""
    from edgequant import planner
    from edgequant.errors import UnsupportedError
    from edgequant.model.repair import prepare
    from edgequant.recipe import Recipe
    from edgequant.runtime.cpu import detect

    prepared, _ = prepare(model)
    try:
        plan = planner.resolve(prepared, Recipe(), detect())
    except UnsupportedError as exc:
        return {"quantizable_nodes": [], "quantizable_note": f"quantize would refuse: {exc.detail}"}
    chosen = {d.node for d in plan.quantized_nodes if d.graph == "main"}
    nodes = [
        {"name": n.name, "op_type": n.op_type}
        for n in prepared.graph.node
        if n.name in chosen and n.op_type in QUANTIZABLE_COMPUTE
    ]
    return {"quantizable_nodes": nodes, "quantizable_note": ""}
