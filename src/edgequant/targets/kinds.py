"""What a node of a (float or QDQ) ONNX graph is, in the vocabulary target profiles use.

``GraphView`` looks through QuantizeLinear/DequantizeLinear: the weight of a Conv is the integer
initializer behind its DequantizeLinear, and the producer of its input is the node before the Q/DQ
pair.  ``kind(node)`` maps ONNX ops to profile op kinds:

* Conv: ``depthwise`` (group = input channels > 1), ``pointwise`` (1x1, group 1), ``first_conv``
  (reads a graph input), otherwise ``conv``; Gemm and MatMul with a constant 2-D weight: ``fc``;
* a written-out GELU (``x · 0.5 · (1 + erf(x / √2))``) is ``gelu`` in each of its nodes;
* ops no profile lists are ``other``.

MACs per node count one sample (batch 1): Conv ``out_elements · (C_in / group) · kH · kW``,
FC ``K · N``.  Shapes come from ONNX shape inference; an unknown dimension counts as 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
SKIP_OPS = QDQ_OPS | {"Constant", "Identity", "Shape", "Cast"}
SIMPLE = {
    "ConvTranspose": "conv_transpose", "AveragePool": "avgpool", "GlobalAveragePool": "global_avgpool",
    "MaxPool": "maxpool", "GlobalMaxPool": "maxpool", "BatchNormalization": "batchnorm", "Add": "add",
    "Sum": "add", "Mul": "mul", "Concat": "concat", "Relu": "relu", "Clip": "clip", "Sigmoid": "sigmoid",
    "HardSwish": "hardswish", "HardSigmoid": "hardswish", "LeakyRelu": "leaky_relu", "Softmax": "softmax",
    "Gelu": "gelu", "Erf": "gelu", "Reshape": "reshape", "Flatten": "reshape", "Squeeze": "reshape",
    "Unsqueeze": "reshape", "Transpose": "reshape", "Resize": "resize", "Upsample": "resize", "Pad": "pad",
    "ReduceMean": "reduce", "ReduceSum": "reduce", "ReduceMax": "reduce", "Gather": "gather",
}  # fmt: skip
COMPUTE_KINDS = {"first_conv", "conv", "depthwise", "pointwise", "conv_transpose", "fc", "matmul"}


@dataclass(frozen=True)
class Weight:
    """A constant weight as stored: integer values (or float for a float model) and its DQ params."""

    name: str
    values: np.ndarray
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    axis: int | None


class GraphView:
    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:
            pass
        self.model = model
        g = model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_inputs = {i.name for i in g.input if i.name not in self.inits}
        self.shapes: dict[str, list[int]] = {}
        for v in list(g.value_info) + list(g.input) + list(g.output):
            dims = v.type.tensor_type.shape.dim
            self.shapes[v.name] = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
        self.nodes = [n for n in g.node if n.op_type not in SKIP_OPS]

    # -- looking through Q/DQ ----------------------------------------------------------------
    def source(self, tensor: str) -> str:
        """The tensor behind any chain of DequantizeLinear <- QuantizeLinear."""
        seen = 0
        while tensor in self.producer and self.producer[tensor].op_type in QDQ_OPS and seen < 8:
            tensor = self.producer[tensor].input[0]
            seen += 1
        return tensor

    def users(self, tensor: str) -> list[onnx.NodeProto]:
        """The nodes reading ``tensor``, looking through QuantizeLinear -> DequantizeLinear pairs."""
        out: list[onnx.NodeProto] = []
        for c in self.consumers.get(tensor, []):
            if c.op_type in QDQ_OPS:
                out += [u for o in c.output for u in self.users(o)]
            else:
                out.append(c)
        return out

    def is_dequantized(self, tensor: str) -> bool:
        p = self.producer.get(tensor)
        return p is not None and p.op_type == "DequantizeLinear"

    def dq_params(self, tensor: str) -> tuple[np.ndarray, np.ndarray | None, int | None, int] | None:
        """(scale, zero point, axis, integer dtype) of the DequantizeLinear producing ``tensor``."""
        p = self.producer.get(tensor)
        if p is None or p.op_type != "DequantizeLinear":
            return None
        scale = self.const(p.input[1])
        zero = self.const(p.input[2]) if len(p.input) > 2 and p.input[2] else None
        axis = next((a.i for a in p.attribute if a.name == "axis"), None)
        q = p.input[0]
        dtype = self.inits[q].data_type if q in self.inits else self._q_dtype(q)
        if scale is None:
            return None
        return scale, zero, axis, dtype

    def _q_dtype(self, q: str) -> int:
        p = self.producer.get(q)
        if p is not None and p.op_type == "QuantizeLinear" and len(p.input) > 2 and p.input[2] in self.inits:
            return self.inits[p.input[2]].data_type
        return onnx.TensorProto.UINT8  # QuantizeLinear without a zero point is uint8

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            return numpy_helper.to_array(p.attribute[0].t)
        return None

    def weight(self, node: onnx.NodeProto, slot: int = 1) -> Weight | None:
        if slot >= len(node.input) or not node.input[slot]:
            return None
        name = node.input[slot]
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in self.inits:
            params = self.dq_params(name)
            assert params is not None
            return Weight(
                dq.input[0], numpy_helper.to_array(self.inits[dq.input[0]]), params[0], params[1], params[2]
            )
        values = self.const(name)
        return None if values is None else Weight(name, values, None, None, None)

    # -- kinds --------------------------------------------------------------------------------
    @functools.cached_property
    def gelu_nodes(self) -> set[str]:
        """The nodes of written-out GELUs: Div/Mul -> Erf -> Add -> Mul (-> Mul)."""
        out: set[str] = set()
        for n in self.model.graph.node:
            if n.op_type != "Erf":
                continue
            out.add(n.name)
            p = self.producer.get(self.source(n.input[0]))
            if p is not None and p.op_type in ("Div", "Mul"):
                out.add(p.name)
            frontier = [n]
            for _ in range(3):
                nxt = [c for f in frontier for o in f.output for c in self.users(o)]
                nxt = [c for c in nxt if c.op_type in ("Add", "Mul")]
                out |= {c.name for c in nxt}
                frontier = nxt
        return out

    def kind(self, node: onnx.NodeProto) -> str:
        op = node.op_type
        if node.name in self.gelu_nodes:
            return "gelu"
        if op == "Conv":
            w = self.weight(node)
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if w is not None and w.values.ndim >= 3:
                cin = int(w.values.shape[1]) * group
                if group > 1 and group == cin:
                    return "depthwise"
                if self.source(node.input[0]) in self.graph_inputs:
                    return "first_conv"
                if group == 1 and all(k == 1 for k in w.values.shape[2:]):
                    return "pointwise"
            return "conv"
        if op == "Gemm":
            return "fc"
        if op == "MatMul":
            w = self.weight(node)
            return "fc" if w is not None and w.values.ndim == 2 else "matmul"
        return SIMPLE.get(op, "other")

    # -- cost ---------------------------------------------------------------------------------
    def macs_params(self, node: onnx.NodeProto, kind: str) -> tuple[int, int]:
        """(multiply-accumulates for one sample, weight parameters) of a compute node; (0, 0) otherwise."""
        if kind not in COMPUTE_KINDS:
            return 0, 0
        w = self.weight(node)
        if w is None:
            out = self.shapes.get(node.output[0], [])
            a = self.shapes.get(node.input[0], [])
            k = a[-1] if a else 1
            return int(np.prod(out[1:] or [1])) * k, 0
        params = int(w.values.size)
        if node.op_type in ("Conv", "ConvTranspose"):
            out = self.shapes.get(node.output[0], [])
            spatial = int(np.prod(out[2:])) if len(out) > 2 else 1
            if node.op_type == "ConvTranspose":
                inp = self.shapes.get(self.source(node.input[0]), [])
                spatial = int(np.prod(inp[2:])) if len(inp) > 2 else 1
            return spatial * params, params
        return params, params  # FC: K · N per sample
