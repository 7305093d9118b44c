"""File size and packed size of a model.

``file_bytes`` is what the ONNX file takes (protobuf serialisation; int4 is already packed two per
byte); above protobuf's 2 GB limit it is the sum of the ``.onnx`` header and the external data
(``serialized_size`` adds up the parts, since protobuf refuses to size such a model).
``packed_bytes`` is what the tensors (initializers and Constant values) take at their real bit
widths: an integer weight counts the bits its plan entry says (a 2-bit weight in an int8
container counts 2 bits), int4 half a byte, everything else its dtype's size.  Graph structure
(names, attributes) is not counted: it is the payload a device has to store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from edgequant.errors import ModelError
from edgequant.model.io import serialized_size
from edgequant.plan import QuantPlan

_BITS_BY_NAME = {
    "FLOAT": 32,
    "UINT8": 8,
    "INT8": 8,
    "UINT16": 16,
    "INT16": 16,
    "INT32": 32,
    "INT64": 64,
    "BOOL": 8,
    "FLOAT16": 16,
    "BFLOAT16": 16,
    "DOUBLE": 64,
    "UINT32": 32,
    "UINT64": 64,
    "COMPLEX64": 64,
    "COMPLEX128": 128,
    "FLOAT8E4M3FN": 8,
    "FLOAT8E4M3FNUZ": 8,
    "FLOAT8E5M2": 8,
    "FLOAT8E5M2FNUZ": 8,
    "FLOAT8E8M0": 8,
    "UINT4": 4,
    "INT4": 4,
    "FLOAT4E2M1": 4,
    "UINT2": 2,
    "INT2": 2,
}
DTYPE_BITS: dict[int, int] = {
    getattr(TensorProto, k): v for k, v in _BITS_BY_NAME.items() if hasattr(TensorProto, k)
}
INTEGER_TYPES = {
    getattr(TensorProto, k)
    for k in ("UINT8", "INT8", "UINT16", "INT16", "INT32", "UINT4", "INT4", "UINT2", "INT2")
    if hasattr(TensorProto, k)
}


def file_bytes(model: onnx.ModelProto) -> int:
    return serialized_size(model)


def disk_bytes(path: str | Path) -> int:
    """Bytes an ONNX model takes on disk: the ``.onnx`` file plus the external data files it names."""
    p = Path(path)
    proto = onnx.load(str(p), load_external_data=False)
    locations = {e.value for t in all_tensors(proto) for e in t.external_data if e.key == "location"}
    return p.stat().st_size + sum(
        (p.parent / loc).stat().st_size for loc in locations if (p.parent / loc).is_file()
    )


def all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    out = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            out.extend(
                a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR
            )
    return out


def packed_size(model: onnx.ModelProto, plan: QuantPlan | None = None) -> tuple[int, dict[int, int]]:
    """Packed bytes (rounded up) and the parameter count per bit width."""
    by_bits: dict[int, int] = {}
    total_bits = 0
    for t in all_tensors(model):
        numel = int(np.prod(t.dims)) if len(t.dims) else 1
        bits = DTYPE_BITS.get(t.data_type)
        if bits is None:
            raise ModelError(
                f"tensor '{t.name}' has ONNX element type {t.data_type}, whose size is unknown.",
                "report this model; EdgeQuant cannot size it.",
            )
        if plan is not None and t.data_type in INTEGER_TYPES:
            name = t.name[:-2] if t.name.endswith("_q") and t.name not in plan.tensors else t.name
            entry = plan.tensors.get(name)
            if entry is not None and entry.role == "weight":
                bits = entry.spec.bits
        by_bits[bits] = by_bits.get(bits, 0) + numel
        total_bits += numel * bits
    return (total_bits + 7) // 8, dict(sorted(by_bits.items()))


def unpacked_weights(model: onnx.ModelProto, plan: QuantPlan) -> list[str]:
    """Integer weights of ``model`` whose container holds more bits than the plan's (a 2-bit weight in
    an int8 tensor): ``packed_size`` counts them at the plan's bits, a packing the file does not have."""
    out = []
    for t in all_tensors(model):
        if t.data_type not in INTEGER_TYPES:
            continue
        name = t.name[:-2] if t.name.endswith("_q") and t.name not in plan.tensors else t.name
        entry = plan.tensors.get(name)
        if entry is not None and entry.role == "weight" and entry.spec.bits < DTYPE_BITS[t.data_type]:
            out.append(t.name)
    return out


def packed_bytes(model: onnx.ModelProto, plan: QuantPlan | None = None) -> int:
    """Bytes of all weights and constants at their real bit widths (see ``packed_size``)."""
    return packed_size(model, plan)[0]


def float_weight_names(model: onnx.ModelProto) -> list[str]:
    """Float initializers of rank >= 2 in ``model``: the weights that stay float (kept float by the plan,
    or read by an op with no integer form, such as an Einsum that is not a matrix product)."""
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    return [t.name for t in model.graph.initializer if t.data_type in floats and len(t.dims) >= 2]


def float_weight_share(before: onnx.ModelProto, after: onnx.ModelProto) -> tuple[float, list[str]]:
    """The fraction of ``before``'s weight values (rank >= 2 float initializers) still float in ``after``,
    and the names of the float ones, largest first."""
    sizes = {
        t.name: int(np.prod(t.dims)) for t in before.graph.initializer if t.name in float_weight_names(before)
    }
    left = [n for n in float_weight_names(after) if n in sizes]
    total = sum(sizes.values())
    share = sum(sizes[n] for n in left) / total if total else 0.0
    return share, sorted(left, key=lambda n: -sizes[n])
