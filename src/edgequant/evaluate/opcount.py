"""Operations and bytes of one inference, counted from the graph and the tensors' real shapes.

Shapes and dtypes come from one run of the model on one sample (every node output fetched), so
they are exact for that input; ``tensor_shapes`` does that run, ``count`` is pure.

* **MACs** (multiply-accumulates) of Conv / ConvTranspose / MatMul / Gemm / LSTM / GRU / RNN and
  their integer forms (ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul, ORT's
  DynamicQuantizeMatMul / DynamicQuantizeLSTM / MatMulIntegerToFloat / MatMulNBits):
  Conv ``N·M·prod(out spatial)·(C/g)·prod(k)``; ConvTranspose ``N·C·prod(in spatial)·(M/g)·prod(k)``;
  MatMul/Gemm ``prod(output)·K``; LSTM ``D·T·N·4H·(I+H)``, GRU ``3H``, RNN ``H``.
  The precision of a MAC is that of its two operands: ``int8`` when both are integers of <= 8 bits
  (directly, or each read through a DequantizeLinear of such a tensor, which ORT fuses into an
  integer kernel), ``int16`` for <= 16-bit integers, ``fp16`` when an operand is float16 and none is
  float32, else ``fp32`` (a weight-only model dequantizes its weights and multiplies in float).
  A QDQ LSTM/GRU/RNN counts in float: ORT has no integer kernel for it (only the dynamic
  ``DynamicQuantizeLSTM`` runs int8).
* **Element ops**: one per output element of every other node, at the precision of its output
  (``fp32``/``fp16``/``int8``); shape-only nodes (Reshape, Flatten, Squeeze, Unsqueeze, Identity,
  Shape, Constant) count none.  A node whose activation inputs all come through DequantizeLinear
  of 8-bit tensors and whose outputs all go to QuantizeLinear runs as an integer kernel in ORT
  (QLinearAdd, QLinearConcat, int8 pooling ...): its ops count as ``int8``.  A Relu/Clip between an
  integer MAC and its QuantizeLinear is fused into the MAC and counts none.  A DequantizeLinear
  feeding only integer kernels and a QuantizeLinear after one are *folded* and count none; every other
  Q/DQ counts one ``fp32`` op per element, a weight's DQ included (ORT keeps DQ nodes out of constant
  folding, so a weight-only or QDQ-LSTM model dequantizes its weights at every call).
* **Bytes**: activation traffic = every non-folded, non-shape-only node reads its non-constant
  inputs and writes its outputs once, each at the width of the tensor actually stored (the integer
  tensor behind a folded DQ, the integer output of a folded Q); weight traffic is given by the
  caller (the packed size of the constants, read once per inference).

Nodes inside subgraphs (Loop/If/Scan bodies) are not counted and are listed in ``uncounted``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgequant.data.base import Batch
from edgequant.runtime import OrtRuntime

SHAPE_ONLY = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant", "Size"}
INTEGER_MAC = {
    "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM", "MatMulIntegerToFloat", "QGemm",
}  # fmt: skip
FLOAT_MAC = {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "MatMulNBits"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}
ACTIVATIONS = {"Relu", "Clip", "LeakyRelu"}
RECURRENT = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}
Shapes = dict[str, tuple[tuple[int, ...], np.dtype[Any]]]


@dataclass
class OpCounts:
    """Per precision (``int8``, ``int16``, ``fp16``, ``fp32``): MACs and element ops; activation bytes."""

    macs: dict[str, int] = field(default_factory=dict)
    elem_ops: dict[str, int] = field(default_factory=dict)
    activation_bytes: int = 0
    folded_qdq: int = 0
    uncounted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def tensor_shapes(model: onnx.ModelProto, sample: Batch, runtime: OrtRuntime | None = None) -> Shapes:
    """Shape and dtype of every tensor of the main graph on ``sample`` (one ORT run, all outputs fetched)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for n in copy.graph.node:
        for o in n.output:
            if o and o not in have:
                copy.graph.output.append(onnx.ValueInfoProto(name=o))
                have.add(o)
    out = (runtime or OrtRuntime()).run(copy, dict(sample))
    shapes: Shapes = {k: (tuple(int(d) for d in np.shape(v)), np.asarray(v).dtype) for k, v in out.items()}
    for k, v in sample.items():
        a = np.asarray(v)
        shapes[k] = (tuple(a.shape), a.dtype)
    return shapes


def _bits(dtype: np.dtype[Any]) -> int:
    return 4 if dtype.name in ("int4", "uint4") else dtype.itemsize * 8


def _elem_precision(dtype: np.dtype[Any]) -> str:
    if dtype == np.float16:
        return "fp16"
    if dtype.kind == "f":
        return "fp32"
    return "int8" if dtype.itemsize <= 1 else ("int16" if dtype.itemsize <= 2 else "int32")


def count(model: onnx.ModelProto, shapes: Shapes) -> OpCounts:
    """Count MACs, element ops and activation bytes (module docstring) from ``tensor_shapes``."""
    g = model.graph
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), onnx.TensorProto())
            consts.update({o: value for o in n.output})
    shapes = dict(shapes)
    for name, t in consts.items():
        if name not in shapes and t.data_type:
            shapes[name] = (
                tuple(int(d) for d in t.dims),
                np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)),
            )
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    res = OpCounts()
    macs: dict[str, int] = defaultdict(int)
    elems: dict[str, int] = defaultdict(int)

    def stored(name: str) -> tuple[tuple[int, ...], np.dtype[Any]] | None:
        p = producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in shapes:
            return shapes[p.input[0]]
        return shapes.get(name)

    def const_precision(name: str) -> str:
        dt = consts[name].data_type
        return _elem_precision(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dt))) if dt else "fp32"

    def operand(name: str) -> str:
        if name in consts:
            return const_precision(name)
        p = producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear":
            if p.input[0] in consts:
                return const_precision(p.input[0])
            if p.input[0] in shapes:
                return _elem_precision(shapes[p.input[0]][1])
        return _elem_precision(shapes[name][1]) if name in shapes else "fp32"

    def mac_precision(n: onnx.NodeProto, a: str, b: str) -> str:
        if n.op_type in INTEGER_MAC:
            return "int8"
        if n.op_type == "MatMulNBits":
            return "fp32"
        if n.op_type in ("LSTM", "GRU", "RNN"):  # ORT has no integer kernel for a QDQ recurrent op
            got = shapes.get(a)
            return "fp16" if got is not None and got[1] == np.float16 else "fp32"
        pa, pb = operand(a), operand(b)
        if pa.startswith("int") and pb.startswith("int"):
            return "int8" if pa == pb == "int8" else "int16"
        if "fp32" in (pa, pb):
            return "fp32"
        return "fp16" if "fp16" in (pa, pb) else "fp32"

    int_nodes: set[int] = set()  # ids of nodes ORT runs as integer kernels
    for n in g.node:
        if n.op_type not in INTEGER_MAC | FLOAT_MAC:
            continue
        got = _macs(n, shapes)
        if got is None:
            res.uncounted.append(f"{n.name or n.op_type} ({n.op_type}: shapes unknown)")
            continue
        w = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
        prec = mac_precision(n, n.input[0], w)
        macs[prec] += got
        if prec in ("int8", "int16"):
            int_nodes.add(id(n))

    def only_to_q(name: str) -> bool:
        cs = consumers.get(name, [])
        return bool(cs) and all(c.op_type == "QuantizeLinear" for c in cs)

    def int_input(name: str) -> bool:
        p = producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear" and operand(name) == "int8"

    fused: set[int] = set()  # Relu/Clip between an integer MAC and its Q (ORT fuses all three)
    for n in g.node:
        if n.op_type in QDQ | SHAPE_ONLY or id(n) in int_nodes or not n.output:
            continue
        acts = [i for i in n.input if i and i not in consts and not _is_param(i, producer, consts)]
        p = producer.get(n.input[0]) if n.input else None
        if n.op_type in ACTIVATIONS and p is not None and id(p) in int_nodes and only_to_q(n.output[0]):
            fused.add(id(n))
        elif acts and all(int_input(i) for i in acts) and all(only_to_q(o) for o in n.output if o):
            int_nodes.add(id(n))  # DQ -> op -> Q: a QLinear* / integer kernel in ORT

    def folded(n: onnx.NodeProto) -> bool:
        if n.op_type == "DequantizeLinear":
            cs = consumers.get(n.output[0], [])
            return bool(cs) and all(id(c) in int_nodes for c in cs)
        if n.op_type == "QuantizeLinear":
            p = producer.get(n.input[0])
            return p is not None and (id(p) in int_nodes or id(p) in fused)
        return id(n) in fused

    def written(name: str) -> str:
        """The tensor actually stored for ``name``: through a fused activation and a folded Q."""
        cs = consumers.get(name, [])
        if len(cs) == 1 and id(cs[0]) in fused:
            name, cs = cs[0].output[0], consumers.get(cs[0].output[0], [])
        if len(cs) == 1 and cs[0].op_type == "QuantizeLinear" and folded(cs[0]):
            return cs[0].output[0]
        return name

    for n in g.node:
        if n.op_type in SHAPE_ONLY:
            continue
        if folded(n):
            res.folded_qdq += n.op_type in QDQ
            continue
        if n.op_type in QDQ:
            elems["fp32"] += sum(int(np.prod(shapes[o][0])) for o in n.output if o in shapes)
        elif n.op_type not in INTEGER_MAC | FLOAT_MAC:
            for o in n.output:
                if o in shapes:
                    prec = "int8" if id(n) in int_nodes else _elem_precision(shapes[o][1])
                    elems[prec] += int(np.prod(shapes[o][0]))
                elif o:
                    res.uncounted.append(f"{n.name or n.op_type} ({n.op_type}: output '{o}' not produced)")
        for i in n.input:
            if i and i not in consts and (got_s := stored(i)) is not None:
                res.activation_bytes += int(np.prod(got_s[0])) * _bits(got_s[1]) // 8
        for o in n.output:
            if o and (got_s := shapes.get(written(o))) is not None:
                res.activation_bytes += int(np.prod(got_s[0])) * _bits(got_s[1]) // 8
    res.macs, res.elem_ops = dict(macs), dict(elems)
    kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    sub = sum(1 for n in g.node if any(a.type in kinds for a in n.attribute))
    if sub:
        res.uncounted.append(f"{sub} node(s) with subgraphs: their bodies are not counted")
    return res


def _is_param(name: str, producer: dict[str, onnx.NodeProto], consts: dict[str, onnx.TensorProto]) -> bool:
    """A constant read through a DequantizeLinear (a quantized weight or bias)."""
    p = producer.get(name)
    return p is not None and p.op_type == "DequantizeLinear" and p.input[0] in consts


def _macs(n: onnx.NodeProto, shapes: Shapes) -> int | None:
    def shp(i: int) -> tuple[int, ...] | None:
        return shapes[n.input[i]][0] if len(n.input) > i and n.input[i] in shapes else None

    out = shapes.get(n.output[0], (None, None))[0] if n.output else None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    op = n.op_type
    if op in RECURRENT:
        x, h = shp(0), attrs.get("hidden_size")
        if x is None or not h or len(x) != 3:
            return None
        t, b = (x[1], x[0]) if attrs.get("layout", 0) == 1 else (x[0], x[1])
        dirs = 2 if attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
        return dirs * t * b * RECURRENT[op] * int(h) * (x[2] + int(h))
    if out is None:
        return None
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shp(3 if op == "QLinearConv" else 1)
        if w is None:
            return None
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if op == "ConvTranspose":
        x, w = shp(0), shp(1)
        if x is None or w is None:
            return None
        return int(np.prod(x)) * int(np.prod(w[1:]))
    a = shp(0)
    if a is None:
        return None
    k = a[0] if op in ("Gemm", "QGemm") and attrs.get("transA", 0) else a[-1]
    return int(np.prod(out)) * int(k)
