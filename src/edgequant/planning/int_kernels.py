"""Which planned Conv/ConvTranspose/Gemm/MatMul nodes ONNX Runtime's CPU provider runs in float, by rule.

ONNX Runtime (checked on 1.32) turns a QDQ group into an integer kernel while it loads the model; what it
cannot fuse runs its float kernel after DequantizeLinear, at float speed or slower.  The rules below are
those of its QDQ selectors (``qdq_selectors.cc``: Conv, Gemm, MatMul, DQ -> MatMulNBits) and of its
``WeightBiasQuantization`` pass, as they apply to the QDQ graphs EdgeQuant writes; each one is validated
against ORT's optimized graph on small models built in ``tests/core/test_int_kernel_rules.py``.

Static (QDQ on activations and weights) -- a node runs an integer kernel (QLinearConv, QGemm, QLinearMatMul,
MatMulIntegerToFloat, MatMulNBits) unless:

- its weight is stored in 4 bits: ORT's integer Conv/Gemm/MatMul kernels take 8-bit weights (1-bit, ternary
  and 2-bit weights are stored in int8 containers and fuse like int8);
- its data input is 4-bit (``--act-bits 4``): no 4-bit integer kernel; a Gemm/MatMul runs in float (a Conv
  with an 8-bit weight and a 4-bit output would be fused into a QLinearConv ORT cannot load: refused by
  ``planning.ort_4bit``);
- its data input is 16-bit: no 16-bit integer kernel.  Except a MatMul (or a Gemm that is one) whose output
  is 16-bit or not quantized and whose unshared 2-D weight MatMulNBits takes (1/2/4/8 bits, per tensor, per
  column or in blocks along K): ORT drops the 16-bit QuantizeLinear/DequantizeLinear pairs and fuses
  MatMulNBits (activations quantized per block inside the kernel: faster than float).  A 16-bit input with
  an 8-bit output keeps the float MatMul;
- its output (after a Relu/Clip that the QuantizeLinear makes redundant) is quantized to 16 bits while its
  input is 8-bit: the selectors need the input and output types to match;
- it is a ConvTranspose: the CPU provider has no integer ConvTranspose kernel (``QLinearConvTranspose`` is
  the XNNPACK provider's), with or without a quantized output;
- it is a Conv whose output is not quantized (a model's last Conv): QLinearConv writes 8-bit outputs only;
- (Gemm) it has a float bias and its output is not quantized (a model's last Gemm; QGemm itself can write
  float): ORT's ``WeightBiasQuantization`` then leaves the bias float and the selector needs an int32 bias.
  With a quantized output ORT quantizes the bias itself and fuses.  EdgeQuant writes an int32 bias for a
  Conv/Gemm with an 8-bit input and an 8-bit, binary, ternary or 2-bit weight per tensor or per channel
  (``writes_int32_bias``), so this applies only to a bias that would overflow int32 (the exporter notes it;
  the rule sees it in an exported plan, which has no int32 entry for that bias).

Weight-only (DequantizeLinear on the weight, float activations) -- a MatMul, or a Gemm with ``transA = 0``,
``transB = 0`` and ``alpha = beta = 1``, runs ORT's MatMulNBits when its weight is 2-D, stored in 2/4/8 bits
per tensor, per column (axis 1) or in blocks of >= 16 along axis 0, and read by that node only -- unless
its output (or a bias Add's, which ORT fuses into a Gemm first) goes to a Relu/Clip alone: the selector then
treats the Relu/Clip as one a QuantizeLinear should make redundant, finds none and gives up, and ORT fuses
Gemm + Relu into a float FusedGemm.  Every other weight-only node (Conv, a Gemm with ``transB = 1``, LSTM,
GRU, RNN) runs float after dequantizing its weight on every run: slower than float.
"""

from __future__ import annotations

import onnx

from edgequant.plan import QuantPlan, TensorEntry
from edgequant.schemes.spec import Granularity, QuantSpec

DOT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_CLIPS = ("Relu", "Clip")


class ModelGraph:
    """Consumers, producers, graph outputs and initializers of a model's main graph (build once, ask often)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
            for o in n.output:
                self.producer[o] = n
        self.outputs = {o.name for o in g.output}
        self.inits = {t.name: t for t in g.initializer}
        self._model = model
        self._ranks: dict[str, int] | None = None

    def rank(self, tensor: str) -> int | None:
        """The rank of ``tensor`` from the model's declared or inferred shapes (None when unknown)."""
        if self._ranks is None:
            try:
                g = onnx.shape_inference.infer_shapes(self._model).graph
            except Exception:  # a contrib op or a model too large to infer: ranks unknown
                g = self._model.graph
            self._ranks = {
                v.name: len(v.type.tensor_type.shape.dim)
                for v in [*g.input, *g.value_info, *g.output]
                if v.type.tensor_type.HasField("shape")
            }
        return self._ranks.get(tensor)

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        """The one node that reads ``tensor`` (None when it is a graph output or read by 0 or 2+ nodes)."""
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def quantized_output(self, node: onnx.NodeProto, plan: QuantPlan) -> TensorEntry | None:
        """The planned activation that quantizes ``node``'s output, after Relu/Clip nodes that read it alone."""
        tensor = node.output[0]
        while True:
            entry = plan.tensors.get(tensor)
            if entry is not None and entry.role == "activation":
                return entry
            nxt = self.sole_consumer(tensor)
            if nxt is None or nxt.op_type not in _CLIPS:
                return None
            tensor = nxt.output[0]


def writes_int32_bias(op_type: str, weight: QuantSpec, act: QuantSpec) -> bool:
    """Whether the QDQ exporter stores the bias of a static ``op_type`` node with weight spec ``weight`` and
    input activation spec ``act`` as int32 (scale ``s_x * s_w``, zero point 0): a Conv or Gemm with an 8-bit
    input and a weight stored in 8 bits (8-bit, or binary / ternary / 2-bit in int8 containers) per tensor or
    per channel, the weights ORT's integer kernels take.  Otherwise the bias stays float: a ConvTranspose's;
    next to 4-bit weights, which ORT runs in float anyway (an int32 bias there would add a scale and a zero
    point per channel for no kernel); and a bias for which ``round(b / (s_x * s_w))`` would overflow int32."""
    return (
        op_type in ("Conv", "Gemm")
        and act.bits == 8
        and (weight.bits == 8 or weight.bits <= 2)
        and weight.granularity is not Granularity.PER_BLOCK
    )


def _stored_bits(e: TensorEntry) -> int:
    """Bits of a weight's storage type: 1-bit, ternary and 2-bit weights sit in int8 containers."""
    return 8 if e.spec.bits <= 2 else e.spec.bits


def static_float_reason(node: onnx.NodeProto, plan: QuantPlan, graph: ModelGraph) -> str:
    """Why ORT runs planned static ``node`` (a DOT_OPS node) in float, as a short phrase ('' when it runs an
    integer kernel): ``"N-bit weights"``, ``"16-bit inputs"``, ``"16-bit outputs"``, ``"no integer
    ConvTranspose kernel"``, ``"a float output"`` or ``"a float bias and no quantized output"`` (module
    docstring)."""
    ins = [plan.tensors.get(t) for t in node.input[:2]]
    weight = next((e for e in ins if e is not None and e.role == "weight"), None)
    acts = [e for e in ins if e is not None and e.role == "activation"]
    out = graph.quantized_output(node, plan)
    a16 = any(e.spec.bits == 16 for e in acts)
    if a16 and (out is None or out.spec.bits == 16) and weight is not None:
        init = graph.inits.get(weight.name)
        if (
            init is not None
            and graph.sole_consumer(weight.name) is node
            and _nbits_weight(node, weight, init)
        ):
            return ""  # ORT drops the 16-bit QDQ pairs and fuses MatMulNBits (activations quantized inside)
    if node.op_type == "ConvTranspose":  # first: no option fuses these
        return "no integer ConvTranspose kernel"  # QLinearConvTranspose is XNNPACK's, not the CPU provider's
    if node.op_type == "Conv" and out is None:
        return "a float output"  # QLinearConv writes 8-bit outputs only
    if weight is not None and _stored_bits(weight) < 8:
        return f"{weight.spec.bits}-bit weights"
    if any(e.spec.bits == 4 for e in acts):
        return "4-bit inputs"  # no 4-bit integer kernel (a 4-bit Conv that would fuse is refused: ort_4bit)
    if a16:
        return "16-bit inputs"
    if out is not None and out.spec.bits == 16:
        return "16-bit outputs"
    bias = node.input[2] if node.op_type != "MatMul" and len(node.input) > 2 else ""
    x, b = plan.tensors.get(node.input[0]), plan.tensors.get(bias)
    if weight is None or bias not in graph.inits:
        return ""
    exported = weight.scale is not None  # then its int32 biases have entries (not one overflowing int32)
    if exported and b is not None and b.role == "bias":
        return ""
    if not exported and x is not None and writes_int32_bias(node.op_type, weight.spec, x.spec):
        return ""  # the exporter will write an int32 bias (unless it overflows: the note is rebuilt after export)
    # ORT quantizes the float bias itself when a QuantizeLinear follows (a Gemm's only without a Relu/Clip between)
    direct = plan.tensors.get(node.output[0])
    if out is None or (node.op_type == "Gemm" and direct is None):
        return "a float bias and no quantized output"
    return ""


def static_float_nodes(model: onnx.ModelProto, plan: QuantPlan) -> list[tuple[onnx.NodeProto, str]]:
    """The planned Conv/ConvTranspose/Gemm/MatMul nodes of a static plan that ORT runs in float, with why
    (``static_float_reason``), in graph order."""
    graph = ModelGraph(model)
    planned = {d.node for d in plan.quantized_nodes}
    out = []
    for node in model.graph.node:
        if node.op_type in DOT_OPS and node.name in planned:
            why = static_float_reason(node, plan, graph)
            if why:
                out.append((node, why))
    return out


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else (a.f if a.type == onnx.AttributeProto.FLOAT else a.i)


def weight_only_matmul_nbits(node: onnx.NodeProto, weight: TensorEntry, graph: ModelGraph) -> bool:
    """Whether ORT fuses ``node`` of a written weight-only model (``graph``; ``node`` reads the
    DequantizeLinear of planned ``weight``) into MatMulNBits (module docstring); False: it runs its float
    kernel on a weight dequantized on every run."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return False
    dq = graph.producer.get(node.input[1])
    init = graph.inits.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    if (
        init is None
        or graph.sole_consumer(node.input[1]) is not node
        or not _nbits_weight(node, weight, init)
    ):
        return False  # its DequantizeLinear feeds other nodes too, or MatMulNBits cannot take the weight
    nxt = graph.sole_consumer(node.output[0])
    if (
        node.op_type == "MatMul" and nxt is not None and nxt.op_type == "Add" and graph.rank(node.input[0]) == 2
        and any(i in graph.inits and len(graph.inits[i].dims) == 1 for i in nxt.input)
    ):  # fmt: skip  # a 2-D MatMul + bias Add: ORT fuses them into a Gemm first
        nxt = graph.sole_consumer(nxt.output[0])
    return nxt is None or nxt.op_type not in _CLIPS or graph.sole_consumer(nxt.output[0]) is None


def _nbits_weight(node: onnx.NodeProto, weight: TensorEntry, init: onnx.TensorProto) -> bool:
    """Whether MatMulNBits can take ``weight`` (stored as ``init``) of ``node``: a MatMul or a Gemm that is one,
    a 2-D weight in 1/2/4/8 bits, per tensor, per column (axis 1) or in blocks of >= 16 along axis 0."""
    spec = weight.spec
    if not _gemm_as_matmul(node) or len(init.dims) != 2 or spec.bits not in (1, 2, 4, 8):
        return False
    if spec.granularity is Granularity.PER_BLOCK:
        return spec.axis == 0 and spec.block_size is not None and spec.block_size >= 16
    return spec.granularity is Granularity.PER_TENSOR or spec.axis == 1


def _gemm_as_matmul(node: onnx.NodeProto) -> bool:
    """A MatMul, or a Gemm that is one (``transA = transB = 0``, ``alpha = beta = 1``): MatMulNBits can take it."""
    if node.op_type == "MatMul":
        return True
    return node.op_type == "Gemm" and not (
        _attr(node, "transA", 0) or _attr(node, "transB", 0) or _attr(node, "alpha", 1.0) != 1.0
        or (len(node.input) > 2 and node.input[2] and _attr(node, "beta", 1.0) != 1.0)
    )  # fmt: skip
