"""Element types through ops that ONNX shape inference does not know (``com.microsoft`` contrib ops).

ONNX shape inference has no schema for ORT's contrib ops (SkipLayerNormalization, FastGelu,
BiasGelu, Attention, ...), so their outputs get no type, and nor does anything computed from them:
a float16 conversion then cannot tell which tensors downstream are float.  ``infer_types`` runs
inference, gives each untyped output of a schema-less node the element type of the node's first
floating-point input (ORT's contrib ops compute in their input's type; their float statistics
outputs, such as SkipLayerNormalization's mean, are float32 too in a float32 model), and runs
inference again until nothing changes.  Every type assumed this way is listed for the plan notes.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from edgequant.export._graph import collect_elem_types, graphs

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


def _has_schema(node: onnx.NodeProto, opsets: dict[str, int]) -> bool:
    domain = node.domain if node.domain not in ("", "ai.onnx") else ""
    return onnx.defs.has(node.op_type, domain) if domain in opsets or not domain else False


def infer_types(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The model with inferred value_info, and the outputs whose type was assumed (name -> elem type).

    Raises whatever ``onnx.shape_inference.infer_shapes`` raises (the caller words the error).
    """
    opsets = {(i.domain or ""): int(i.version) for i in model.opset_import}
    assumed: dict[str, int] = {}
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    for _ in range(sum(1 for g in graphs(model.graph) for _n in g.node) + 1):
        types = collect_elem_types(inferred.graph)
        added: dict[str, int] = {}
        for g in graphs(inferred.graph):
            for n in g.node:
                if _has_schema(n, opsets):
                    continue
                source = next((types[i] for i in n.input if i and types.get(i) in _FLOATS), None)
                if source is None:
                    continue
                added |= {o: source for o in n.output if o and o not in types and o not in assumed}
        if not added:
            break
        assumed |= added
        for name, elem in added.items():  # main-graph value_info is enough: inference reads it by name
            inferred.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem, None))
        inferred = onnx.shape_inference.infer_shapes(inferred, strict_mode=False)
    return inferred, assumed
