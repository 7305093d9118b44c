"""Close a signed activation's grid after a layout op that nothing re-quantizes (ORT 1.32, opset 21+).

``Q(int8) -> DQ -> Reshape -> Y`` where ``Y`` has no QuantizeLinear after it (a graph output, or a
float consumer): at graph optimization level "extended" ONNX Runtime 1.32 propagates the DQ past the
layout op and inserts its own ``Y_q`` QuantizeLinear whose ``output_dtype`` (INT8) disagrees with
the zero point it gives it (UINT8), so the session refuses to load ("[TypeInferenceError]
output_dtype INT8 does not match y_zero_point type UINT8").  Seen with PP-OCRv4 rec quantized for
ti-npu at 4-bit weights (opset 21, int8 activations): the final Softmax output passes a Reshape to
the graph output.  Unsigned zero points and opsets below 21 load.

The fix writes that Q/DQ pair itself, on the same scale and zero point: a layout op only moves
values, so they are already on the grid and the pair is exact (ORT then has nothing to propagate).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import TensorProto, helper

# layout ops across which ORT's QDQ propagation moves a DQ (values pass through unchanged)
LAYOUT_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"}


def close_layout_tails(g: onnx.GraphProto, opset: int, fresh: Callable[[str], str]) -> list[str]:
    """Add an exact Q/DQ after every layout op that reads a per-tensor signed activation DQ and whose
    output is not quantized; edits ``g`` in place and returns one note per layout op (empty when
    ``opset < 21`` or nothing matched).  ``fresh(base)`` returns an unused tensor/node name."""
    if opset < 21:
        return []
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    quantized_reads = {n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    nodes: list[onnx.NodeProto] = []
    notes: list[str] = []
    for node in g.node:
        nodes.append(node)
        if node.op_type not in LAYOUT_OPS or not node.input or not node.output:
            continue
        dq = producer.get(node.input[0])
        out = node.output[0]
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or out in quantized_reads:
            continue
        src = producer.get(dq.input[0])
        zp = inits.get(dq.input[2])
        if src is None or src.op_type != "QuantizeLinear" or zp is None or zp.data_type != TensorProto.INT8:
            continue
        if len(zp.dims) != 0 or any(a.name == "axis" for a in dq.attribute):
            continue
        raw, q_name, dq_name = fresh(f"{out}_raw"), fresh(f"{out}_q"), fresh(f"{out}_dq")
        node.output[0] = raw
        new_dq = helper.make_node("DequantizeLinear", [q_name, dq.input[1], dq.input[2]], [out], name=dq_name)
        nodes.append(
            helper.make_node("QuantizeLinear", [raw, dq.input[1], dq.input[2]], [q_name], name=q_name)
        )
        nodes.append(new_dq)
        producer[out] = new_dq  # a layout op after this one sees the new DQ
        notes.append(
            f"'{node.name or out}' ({node.op_type}): its output is re-quantized on its input's int8 grid "
            "(exact); without it ONNX Runtime 1.32 propagates the DQ past it and cannot load the model."
        )
    del g.node[:]
    g.node.extend(nodes)
    return notes
