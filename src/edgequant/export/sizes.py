"""File size and packed size of a model.

``file_bytes`` is what the ONNX file takes (protobuf serialisation; int4 is already packed two per
byte).  ``packed_bytes`` is what the weights take at their real bit widths: a 2-bit weight stored in
an int8 container counts 2 bits, an int4 weight half a byte, everything else its dtype's size.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgequant.plan import QuantPlan

_SUB_BYTE: dict[int, int] = {TensorProto.INT4: 4, TensorProto.UINT4: 4}


def file_bytes(model: onnx.ModelProto) -> int:
    return int(model.ByteSize())


def _bits_of(t: onnx.TensorProto) -> int:
    if t.data_type in _SUB_BYTE:
        return _SUB_BYTE[t.data_type]
    return int(np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize * 8)


def packed_bytes(model: onnx.ModelProto, plan: QuantPlan | None = None) -> int:
    """Bytes of all initializers at their real bit widths, plus the non-weight part of the file."""
    bits_by_q: dict[str, int] = {}
    if plan is not None:
        for e in plan.tensors.values():
            if e.role == "weight" and e.spec.bits == 2:
                bits_by_q[f"{e.name}_q"] = 2
    total_bits = 0
    stored = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total_bits += n * bits_by_q.get(t.name, _bits_of(t))
        stored += t.ByteSize()
    overhead = max(file_bytes(model) - stored, 0)
    return overhead + (total_bits + 7) // 8


def integer_weight_count(model: onnx.ModelProto, plan: QuantPlan) -> int:
    """How many planned weights are stored as integers in ``model`` (the ``W_q`` initializers)."""
    names = {
        t.name for t in model.graph.initializer if t.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16)
    }
    return sum(1 for e in plan.tensors.values() if e.role == "weight" and f"{e.name}_q" in names)
