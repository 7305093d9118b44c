"""The inputs a model expects, as the data layer sees them (``InputSpec``).

Graph inputs that are also initializers (older exporters list weights as inputs) are not data
inputs.  A dimension is an int when the graph fixes it to a positive value, and None when it is
symbolic (``dim_param``), unknown, or 0 (ONNX exporters write 0 for "unknown" as often as for "empty").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgequant.data.base import InputSpec
from edgequant.errors import UnsupportedError


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Name, numpy dtype and shape (None = dynamic) of every graph input that is not an initializer."""
    weights = {init.name for init in model.graph.initializer}
    weights |= {init.values.name for init in model.graph.sparse_initializer}
    specs: list[InputSpec] = []
    for value in model.graph.input:
        if value.name in weights:
            continue
        if not value.type.HasField("tensor_type"):
            kind = value.type.WhichOneof("value") or "unknown"
            raise UnsupportedError(
                f"model input '{value.name}' is a {kind}, not a tensor; EdgeQuant feeds tensors only.",
                "re-export the model with tensor inputs.",
            )
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError) as exc:
            raise UnsupportedError(
                f"model input '{value.name}' has ONNX element type {tensor.elem_type}, "
                "which numpy cannot hold.",
                "re-export the model with float32, float16 or integer inputs.",
            ) from exc
        dims: list[int | None] = []
        if tensor.HasField("shape"):
            for d in tensor.shape.dim:
                dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
        else:
            raise UnsupportedError(
                f"model input '{value.name}' has no shape (not even a rank) in the graph.",
                "re-export the model with input shapes, or set them with onnx.tools.update_model_dims.",
            )
        specs.append(InputSpec(value.name, dtype, tuple(dims)))
    return specs
