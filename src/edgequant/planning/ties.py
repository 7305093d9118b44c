"""Activation ranges shared across ops that ORT fuses or runs on integers only when the grids match.

Applied after calibration (and by every caller that sets ranges: the range search, the judge, the
sensitivity pass, the torch wrapper).  Nothing here changes a graph.
"""

from __future__ import annotations

import onnx

from edgequant.plan import QuantPlan
from edgequant.planning.graph import FUSED_ACTIVATIONS, SAME_VALUE_OPS


def tie_activation_ranges(model: onnx.ModelProto, plan: QuantPlan) -> QuantPlan:
    """Give the input of a Relu/Clip the range of its output, and the outputs of an op that only moves
    or selects values (``SAME_VALUE_OPS``: MaxPool, Reshape, Transpose, ...) its input's range, when both
    are quantized alike.

    ``Add -> X -> Relu -> Y``: with X and Y on one grid, ORT drops the Relu (its zero point is the
    grid's minimum) and the DQ->Q pair between them, and runs QLinearAdd straight into the next
    integer op.  Values of X below Y's range are the ones the Relu removes anyway.  ``X -> MaxPool -> Y``:
    every value of Y is a value of X, so on X's grid Y is exact (no second rounding) and ORT drops the
    DQ/Q pair and runs the op on integers (on ResNet-18, entropy gave the MaxPool output a 26 % wider
    range than its input: ORT ran that MaxPool in float, with layout reorders around it).  Ties follow
    graph order, so a chain of such ops shares one grid; an output already tied to a Relu/Clip keeps it.
    """
    tied: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in FUSED_ACTIVATIONS or not node.input or not node.output:
            continue
        x, y = plan.tensors.get(node.input[0]), plan.tensors.get(node.output[0])
        if x is None or y is None or x.role != "activation" or y.role != "activation" or x.spec != y.spec:
            continue
        if y.lo is None or y.hi is None:
            continue
        x.lo, x.hi = y.lo, y.hi
        x.note = f"shares the range of '{y.name}' (after {node.op_type}) so ORT fuses the activation."
        tied.add(x.name)
    for node in model.graph.node:
        if node.op_type not in SAME_VALUE_OPS or not node.input or not _selects(node):
            continue
        x = plan.tensors.get(node.input[0])
        if x is None or x.role != "activation" or x.lo is None or x.hi is None:
            continue
        for out in node.output:
            y = plan.tensors.get(out)
            if y is None or y.role != "activation" or y.spec != x.spec or out in tied:
                continue
            y.lo, y.hi = x.lo, x.hi
            if not y.note:  # a fixed range's note (tanh/sigmoid/recurrent outputs) stays
                y.note = f"shares the range of '{x.name}' ({node.op_type} only moves its values): exact, runs on integers."
    return plan


def _selects(node: onnx.NodeProto) -> bool:
    """False for a Resize that interpolates (its outputs are not input values)."""
    if node.op_type != "Resize":
        return True
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"nearest")
    return mode == b"nearest"
