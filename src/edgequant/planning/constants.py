"""Constant operands of Add/Mul on the activations' 8-bit grid, so ORT runs QLinearAdd / QLinearMul.

ORT's QLinearAdd and QLinearMul take both operands quantized; a constant offset or factor left float
makes ORT run DQ -> float op -> Q instead.  A constant goes on the grid only when 8 bits keep it
accurate: an Add offset needs an SQNR of at least ``CONSTANT_MIN_SQNR_DB`` over the whole tensor, a
Mul factor a relative error of at most ``CONSTANT_MAX_REL_ERROR`` on every element (a factor rounded
to 0 would kill a channel).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.plan import QuantPlan, TensorEntry
from edgequant.planning.graph import FLOAT_TYPES
from edgequant.schemes.qparams import dequantize, quantize_weight, sqnr_db
from edgequant.schemes.spec import QuantSpec

CONSTANT_OPERAND_OPS = {"Add", "Mul"}  # ORT's QLinearAdd / QLinearMul take both operands quantized
CONSTANT_MIN_SQNR_DB = 30.0  # Add: error of the offset as a whole
CONSTANT_MAX_REL_ERROR = 0.1  # Mul: error of each factor


def add_constant_operand(node: onnx.NodeProto, c: onnx.TensorProto, act: QuantSpec, plan: QuantPlan) -> bool:
    """Plan constant ``c`` of ``node`` on the activations' grid ``act``; True when it is planned.

    Kept float (False, with a note in ``plan.notes`` when accuracy is the reason) when the op is not
    Add/Mul, activations are not 8-bit, ``c`` is not float, empty or not finite."""
    if node.op_type not in CONSTANT_OPERAND_OPS or act.bits != 8 or c.data_type not in FLOAT_TYPES:
        return False
    if c.name in plan.tensors:
        return True
    value = numpy_helper.to_array(c)
    spec = QuantSpec(**{**act.to_dict(), "granularity": "per_tensor", "axis": None})
    if value.size == 0 or not np.all(np.isfinite(value)):
        return False
    q, scale, zero = quantize_weight(value, spec)
    approx = dequantize(q, scale, zero, spec).astype(np.float64)
    v = value.astype(np.float64)
    if node.op_type == "Mul":  # a factor: every element must keep its size (a 0 would kill a channel)
        worst = float(np.max(np.abs(approx - v) / np.maximum(np.abs(v), 1e-30)))
        problem = f"an element would move by {100 * worst:.0f} %" if worst > CONSTANT_MAX_REL_ERROR else ""
    else:  # an offset: the error counts against the whole
        db = sqnr_db(v, approx)
        problem = f"its SQNR would be {db:.1f} dB" if db < CONSTANT_MIN_SQNR_DB else ""
    if problem:
        plan.notes.append(
            f"constant '{c.name}' of {node.op_type} '{node.name}' stays float: on the 8-bit grid {problem}, "
            f"so ORT runs that {node.op_type} in float."
        )
        return False
    plan.tensors[c.name] = TensorEntry(
        c.name,
        "constant",
        spec,
        note=f"constant operand of {node.op_type}, on the activations' grid so ORT runs QLinear{node.op_type}.",
    )
    return True
