"""Op-type tables and graph lookups the planner decides with.

Static QDQ follows the shape ONNX Runtime's QDQ fusions look for: compute ops (Conv, ConvTranspose,
MatMul, Gemm) and the ops ORT runs on integers or passes through (``PASS_OPS``) get Q/DQ on their
float data inputs/outputs.  Nothing here changes a graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from edgequant.plan import QuantPlan

COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# ops whose float data inputs/outputs get Q/DQ so ORT can fuse or pass them through in integers
PASS_OPS = {
    "Add", "Mul", "Concat", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Sigmoid",
    "LeakyRelu", "Resize", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Softmax", "Split",
    "Pad", "HardSwish", "ReduceMean", "Gather",
}  # fmt: skip
# which inputs carry data (the rest are shapes, indices, scales)
DATA_INPUTS = {"Resize": (0,), "Clip": (0,), "Pad": (0,), "Reshape": (0,), "Split": (0,), "Gather": (0,)}
FUSED_ACTIVATIONS = {"Relu", "Clip"}
# ops each of whose output values is one of their data input's values (Resize: mode "nearest" only):
# on the input's grid the output is exact, and ORT drops the DQ -> op -> Q pair only when both match
SAME_VALUE_OPS = {
    "MaxPool", "GlobalMaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split",
    "Gather", "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "Resize",
}  # fmt: skip
CONTROL_FLOW = {"If", "Loop", "Scan"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT}


@dataclass(frozen=True)
class GraphIndex:
    """Lookups over one graph: initializers, float tensors, producers and consumers."""

    graph: onnx.GraphProto

    @property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {t.name: t for t in self.graph.initializer}

    def float_tensors(self) -> set[str]:
        g = self.graph
        names = {v.name for v in list(g.value_info) + list(g.input) + list(g.output)
                 if v.type.tensor_type.elem_type in FLOAT_TYPES}  # fmt: skip
        names |= {t.name for t in g.initializer if t.data_type in FLOAT_TYPES}
        typed = {v.name for v in list(g.value_info) + list(g.input) + list(g.output)}
        # outputs whose type inference could not tell: assume float when produced by a float op
        for n in g.node:
            if n.op_type in COMPUTE_OPS | PASS_OPS:
                names |= {o for o in n.output if o and o not in typed}
        return names


def contrib_float_outputs(model: onnx.ModelProto) -> set[str]:
    """Float32 tensors whose type ONNX shape inference cannot tell because they are computed by (or
    downstream of) an op with no ONNX schema, such as ORT's ``com.microsoft`` FastGelu or
    SkipLayerNormalization: types carried through those ops as in ``export._contrib_types`` (a
    schema-less op computes in its first float input's type).  Without them a MatMul reading a FastGelu
    output would get int8 weights but a float input (weight-only, though planned W8A8).  Empty when every
    op has a schema or the model is too large for in-memory inference (> 2 GB)."""
    from edgequant.export._contrib_types import infer_types  # export imports planning: import late

    standard = ("", "ai.onnx")
    if all(n.domain in standard for n in model.graph.node) or model.ByteSize() > 2**31 - 1:
        return set()
    inferred, _assumed = infer_types(model)
    return GraphIndex(inferred.graph).float_tensors()


def is_table(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A Gather of rows (axis 0) from a constant float table of rank 2: an embedding."""
    t = inits.get(node.input[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return t is not None and t.data_type in FLOAT_TYPES and len(t.dims) == 2 and axis == 0


def pre_activation_outputs(graph: onnx.GraphProto) -> set[str]:
    """Outputs of compute ops whose only consumer is a Relu/Clip reading them as its data input.

    ORT fuses Conv+Relu, so only the Relu output is quantized (a Q/DQ in between would cost a
    requantization and split the fusion)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = set()
    for n in graph.node:
        if n.op_type not in COMPUTE_OPS or not n.output:
            continue
        users = consumers.get(n.output[0], [])
        if len(users) == 1 and users[0].op_type in FUSED_ACTIVATIONS and users[0].input[0] == n.output[0]:
            out.add(n.output[0])
    return out


def record_subgraphs(graph: onnx.GraphProto, plan: QuantPlan) -> None:
    """Decide every node inside a control-flow subgraph as float, naming its holder."""
    for node in graph.node:
        for attr in node.attribute:
            subs: Iterable[onnx.GraphProto] = (
                [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            )
            for sub in subs:
                for inner in sub.node:
                    plan.decide(
                        inner.name,
                        inner.op_type,
                        False,
                        f"inside the '{attr.name}' subgraph of {node.op_type} '{node.name}', whose condition "
                        "is computed at run time; EdgeQuant quantizes the main graph only.",
                        graph=f"{node.name}/{attr.name}",
                    )
