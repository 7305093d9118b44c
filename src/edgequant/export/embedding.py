"""Embedding tables stored as integers, dequantized after the Gather.

A ``Gather(table[V, D], ids)`` whose table is a planned weight (per row: one scale per token,
``axis 0``) becomes

    q = Gather(table_q[V, D], ids)            # int8 rows, 4x less memory than float rows
    s = Unsqueeze(Gather(scale[V], ids), -1)  # the rows' scales, [..., 1]
    y = (Cast(q, float) - z) * s              # z: Gather of the zero points (omitted when all 0)

so the table is stored as integers and only the gathered rows are dequantized (a DequantizeLinear
in front of the Gather would dequantize the whole table on every run).  This is the QDQ rule
``x = (q - z) * s`` applied per row (ONNX DequantizeLinear), written with Cast/Mul because a
per-row scale gathered at run time is not a DequantizeLinear ``axis`` scale.  Any other consumer of
the same table (an output head tied to it, e.g. Gemm with ``transB=1``) reads the usual
``DequantizeLinear(table_q, scale, axis=0)`` of the same integer tensor: the table stays one tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.plan import TensorEntry
from edgequant.schemes.spec import Granularity


def is_row_table(entry: TensorEntry, node: onnx.NodeProto, slot: int) -> bool:
    """True when ``node`` reads the weight ``entry`` as a Gather table (axis 0) planned per row."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return (
        node.op_type == "Gather"
        and slot == 0
        and axis == 0
        and entry.spec.bits == 8  # ORT's Gather takes no int4 (a 4-bit table is dequantized before it)
        and entry.spec.granularity is Granularity.PER_CHANNEL
        and entry.spec.axis == 0
    )


def gather_rows(
    node: onnx.NodeProto,
    q_name: str,
    scale: np.ndarray,
    zero: np.ndarray,
    fresh: Callable[[str], str],
    new_inits: list[onnx.TensorProto],
) -> list[onnx.NodeProto]:
    """Rewrite ``node`` (a Gather of the float table) in place to gather ``q_name``; returns the nodes
    that follow it and write its original output."""
    out = node.output[0]
    ids = node.input[1]
    base = node.name or "gather"
    s_name = fresh(f"{q_name}_row_scale")
    new_inits.append(numpy_helper.from_array(scale.reshape(-1).astype(np.float32), s_name))
    axes = fresh(f"{base}_axes")
    new_inits.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
    rows_q, rows_f, s_rows, s_col = (fresh(f"{base}_{t}") for t in ("rows_q", "rows_f", "scale", "scale_col"))
    node.input[0] = q_name
    node.output[0] = rows_q
    nodes = [
        helper.make_node("Cast", [rows_q], [rows_f], name=fresh(f"{base}_cast"), to=TensorProto.FLOAT),
        helper.make_node("Gather", [s_name, ids], [s_rows], name=fresh(f"{base}_gather_scale")),
        helper.make_node("Unsqueeze", [s_rows, axes], [s_col], name=fresh(f"{base}_unsqueeze_scale")),
    ]
    centred = rows_f
    if np.any(zero != 0):
        z_name, z_rows, z_col = fresh(f"{q_name}_row_zp"), fresh(f"{base}_zp"), fresh(f"{base}_zp_col")
        new_inits.append(numpy_helper.from_array(zero.reshape(-1).astype(np.float32), z_name))
        centred = fresh(f"{base}_centred")
        nodes += [
            helper.make_node("Gather", [z_name, ids], [z_rows], name=fresh(f"{base}_gather_zp")),
            helper.make_node("Unsqueeze", [z_rows, axes], [z_col], name=fresh(f"{base}_unsqueeze_zp")),
            helper.make_node("Sub", [rows_f, z_col], [centred], name=fresh(f"{base}_sub_zp")),
        ]
    nodes.append(helper.make_node("Mul", [centred, s_col], [out], name=fresh(f"{base}_dequantize")))
    return nodes
