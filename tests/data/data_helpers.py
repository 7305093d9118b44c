"""Tiny models and specs for the data tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

from edgequant.data import InputSpec


def spec(name: str, *shape: int | None, dtype: type = np.float32) -> InputSpec:
    return InputSpec(name, np.dtype(dtype), tuple(shape))


def identity_model(inputs: list[tuple[str, int, list[int | str | None]]]) -> onnx.ModelProto:
    """One Identity per input; ``inputs`` = (name, onnx elem type, dims with str = symbolic)."""
    vis = [h.make_tensor_value_info(n, t, dims) for n, t, dims in inputs]
    outs = [h.make_tensor_value_info(f"{n}_out", t, None) for n, t, _ in inputs]
    nodes = [h.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in inputs]
    g = h.make_graph(nodes, "ids", vis, outs)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


__all__ = ["T", "identity_model", "spec"]
