"""Which nodes run an integer kernel, and which only store integers: read from the written model.

A plan that marks a node "quantized" says what EdgeQuant asked for; what runs is decided by ONNX
Runtime when it loads the written model.  Its level-2 ("extended") graph optimisation fuses a
``DequantizeLinear -> op -> QuantizeLinear`` group into one integer kernel (``QLinearConv``,
``QLinearMatMul``, ``QGemm``, ...), or leaves the op in float with a ``DequantizeLinear`` in front of
its weight, which then only *stores* integers (an LSTM/GRU with int8 weights runs in float).  The
census maps each node the plan quantized to the node ORT runs (by name: ORT's fusions keep the target
node's name, or prefix it, as in ``mm/MatMulAddFusion``) and sorts it into:

- ``integer``: an integer kernel (``INTEGER_KERNELS``: the op computes on integers); ``kernel`` names
  the op ORT runs;
- ``moves``: a data-movement op (``Flatten``, ``MaxPool``, ``Reshape`` ...) on an integer tensor: it
  passes integers between kernels and computes nothing, so it is not counted as an integer kernel;
- ``storage_only``: runs in float and reads a weight stored as integers (dequantized at run time);
- ``folded``: no node of its own remains: removed by the exporter (a Relu folded into its input's
  quantization, an Add folded into a kernel's bias, a Constant consumed as a weight) or fused by ORT
  into a neighbour's kernel;
- ``float``: planned, but ORT runs it in float on float data (no integer kernel fits the group);
- ``float16``: (``--method fp16``) runs a float16 kernel; when ORT has none on this CPU it casts
  the float16 weights to float32 at load (``InsertedPrecisionFreeCast``) and the node is storage-only.

``integer_weight_names`` counts the weights stored as integers in the written file, for every
method: integer initializers (or Constant values) that a ``DequantizeLinear`` or an integer kernel
reads as its weight, of rank >= 2 (biases and 1-D constants are not counted).
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto

from edgequant.plan import QuantPlan

# ONNX Runtime ops whose arithmetic reads integer weights directly (onnx + com.microsoft domains)
INTEGER_KERNELS = frozenset(
    {
        "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
        "QLinearGlobalAveragePool", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax",
        "QLinearWhere", "QLinearReduceMean", "QLinearConvTranspose", "QAttention", "QEmbedLayerNormalization",
        "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM",
        "MatMulNBits", "GatherBlockQuantized",
    }
)  # fmt: skip
# kernels whose output is an integer tensor (the others above return float)
_INTEGER_OUT = frozenset(k for k in INTEGER_KERNELS if k.startswith("QLinear") or k in ("QGemm",))
_MOVES = frozenset(
    {
        "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Slice", "Split", "Gather",
        "Resize", "Identity", "Concat", "DepthToSpace", "SpaceToDepth", "Pad", "Expand", "Tile",
    }
)  # fmt: skip
_STORED = {
    TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
    *(getattr(TensorProto, k) for k in ("INT4", "UINT4", "INT2", "UINT2") if hasattr(TensorProto, k)),
}  # fmt: skip
# op -> input slots that hold its weight
_WEIGHT_SLOTS = {
    "DequantizeLinear": (0,), "DynamicQuantizeMatMul": (1,), "MatMulIntegerToFloat": (1,),
    "DynamicQuantizeLSTM": (1, 2), "MatMulNBits": (1,), "GatherBlockQuantized": (0,), "MatMulInteger": (1,),
    "ConvInteger": (1,), "QLinearConv": (3,), "QLinearMatMul": (0, 3), "QGemm": (0, 3), "QAttention": (1,),
}  # fmt: skip


def _constants(model: onnx.ModelProto) -> dict[str, int]:
    """Constant tensors of rank >= 2 (weights, not biases or scalars) -> element type (initializers and
    Constant nodes of the main graph)."""
    out = {t.name: t.data_type for t in model.graph.initializer if len(t.dims) >= 2}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR and len(a.t.dims) >= 2:
                    out[n.output[0]] = a.t.data_type
    return out


def integer_weight_names(model: onnx.ModelProto) -> list[str]:
    """Weights stored as integers in ``model``: 8/16/4/2-bit initializers or Constant values of rank >= 2
    read as a ``DequantizeLinear`` input or an integer kernel's weight, in graph order (biases, scalars
    and quantized 1-D constants are not weights)."""
    consts = _constants(model)
    out: dict[str, None] = {}
    for n in model.graph.node:
        for slot in _WEIGHT_SLOTS.get(n.op_type, ()):
            if slot < len(n.input) and consts.get(n.input[slot]) in _STORED:
                out[n.input[slot]] = None
    return list(out)


def census(
    written: onnx.ModelProto, optimized: onnx.ModelProto, plan: QuantPlan
) -> dict[str, list[dict[str, Any]]]:
    """Each node ``plan`` quantized (main graph), sorted by what ONNX Runtime runs (module docstring).

    ``written``: the model EdgeQuant wrote; ``optimized``: ORT's level-2 optimisation of it (weights not
    needed).  Returns ``{"integer": [...], "moves": [...], "storage_only": [...], "folded": [...],
    "float": [...], "float16": [...]}``, each entry ``{"node", "op_type", "kernel", "reason"}``.
    """
    written_names = {n.name for n in written.graph.node}
    by_name: dict[str, onnx.NodeProto] = {}
    for n in optimized.graph.node:
        by_name.setdefault(n.name, n)
    fused: dict[
        str, onnx.NodeProto
    ] = {}  # 'mm/MatMulAddFusion', '/l0/MatMul/MatMulScaleFusion/': the shortest
    for n in optimized.graph.node:
        source = _written_name(n.name, written_names)
        if source is not None and (source not in fused or len(n.name) < len(fused[source].name)):
            fused[source] = n
    for source, n in fused.items():
        by_name.setdefault(source, n)
    producer = {o: n for n in optimized.graph.node for o in n.output}
    inits = {t.name for t in optimized.graph.initializer}
    integer = _integer_tensors(optimized)
    half = _half_tensors(optimized)
    out: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("integer", "moves", "storage_only", "folded", "float", "float16")
    }
    for d in plan.quantized_nodes:
        if d.graph != "main":
            continue
        entry: dict[str, Any] = {"node": d.node, "op_type": d.op_type}
        name = next((c for c in (d.node, f"{d.node}_dynamic") if c in written_names), None)
        node = by_name.get(name) if name is not None else None
        if node is None:
            why = d.reason if name is None else "fused by ONNX Runtime into a neighbouring kernel"
            out["folded"].append({**entry, "kernel": None, "reason": why or "removed by the export"})
            continue
        entry["kernel"] = node.op_type
        feeders = [producer.get(i) for i in node.input if i]
        if node.op_type in INTEGER_KERNELS:
            out["integer"].append({**entry, "reason": d.reason or "integer kernel"})  # e.g. weights int8 only
        elif node.op_type in _MOVES and node.input and node.input[0] in integer:
            out["moves"].append({**entry, "reason": "moves integer data"})
        elif any(f is not None and f.op_type == "DequantizeLinear" and f.input[0] in inits for f in feeders):
            out["storage_only"].append(
                {
                    **entry,
                    "reason": f"stored as integers, dequantized at run time; {node.op_type} runs in float",
                }
            )
        elif plan.method == "fp16" and node.input and node.input[0] in half:
            out["float16"].append({**entry, "reason": "float16 kernel"})
        elif plan.method == "fp16" and any(f is not None and f.op_type == "Cast" for f in feeders):
            out["storage_only"].append(
                {**entry, "reason": f"float16 weights in the file; ONNX Runtime has no float16 {node.op_type} "
                 "kernel on this CPU, so it casts them to float32 at load and runs in float32"}
            )  # fmt: skip
        elif plan.method == "fp16":
            out["float"].append(
                {**entry, "reason": f"ONNX Runtime runs {node.op_type} in float32 on this CPU (no float16 kernel "
                 "here, or the casts around float32 neighbours were removed)"}
            )  # fmt: skip
        else:
            out["float"].append(
                {**entry, "reason": f"no integer kernel: ONNX Runtime runs {node.op_type} in float"}
            )
    return out


def _written_name(name: str, written: set[str]) -> str | None:
    """The written node an ORT node named ``name`` came from: ORT keeps a fused node's name and appends
    '/<Fusion>' ('mm/MatMulAddFusion'; '/bert/.../MatMul/MatMulScaleFusion/' for a torch export, whose names
    themselves hold '/') or prefixes 'fused '; the longest written name that ``name`` extends is the one."""
    name = name.removeprefix("fused ").rstrip("/")
    while name and name not in written:
        if "/" not in name:
            return None
        name = name.rsplit("/", 1)[0]
    return name or None


def _integer_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors of ``model`` that hold integers at run time: QuantizeLinear outputs, integer-output kernels'
    outputs, and what data-movement ops make of them (graph order is topological)."""
    out: set[str] = set()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") or n.op_type in _INTEGER_OUT:
            out.add(n.output[0])
        elif n.op_type in _MOVES and n.input and n.input[0] in out:
            out.update(n.output)
    return out


def _half_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors of ``model`` that hold float16 at run time: float16 inputs and initializers, Cast-to-float16
    outputs, and the outputs of other ops whose first input is float16 (graph order is topological)."""
    fp16 = TensorProto.FLOAT16
    out = {v.name for v in model.graph.input if v.type.tensor_type.elem_type == fp16}
    out |= {t.name for t in model.graph.initializer if t.data_type == fp16}
    for n in model.graph.node:
        if n.op_type == "Cast":
            if any(a.name == "to" and a.i == fp16 for a in n.attribute):
                out.add(n.output[0])
        elif n.input and n.input[0] in out:
            out.update(n.output)
    return out
