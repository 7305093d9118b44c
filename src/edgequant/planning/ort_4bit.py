"""Static plans with 4-bit activations whose QDQ model ONNX Runtime's CPU provider cannot load, or loads
and computes wrongly: refused on the ``cpu`` target when the plan is made, before calibration or export.

ONNX Runtime (checked on 1.32, opset 21, ``uint4`` and ``int4`` activations, 8-bit and 4-bit weights)
rewrites a QDQ graph while it creates the session, at ``ORT_ENABLE_EXTENDED`` and above (the default is
``ORT_ENABLE_ALL``).  Its QDQ propagation first moves a DequantizeLinear down through MaxPool, Reshape,
Transpose, Squeeze, Unsqueeze and Slice nodes (whatever else reads it), and a QuantizeLinear up through them
(when the tensor before has no other reader); Flatten, Gather, Resize and DepthToSpace stop it.  Measured on
one- and two-op QDQ graphs (``Q -> DQ -> op -> Q -> DQ``; the rules below are checked against ORT in
tests/core/test_ort_4bit_rules.py), a 4-bit activation fails in these places only:

- a Conv whose weight is stored in 8 bits (8-bit, or binary / ternary / 2-bit in int8 containers), whose
  input is a 4-bit activation and whose output is quantized to 4 bits (each side directly or through the
  propagating nodes; the output also past a Relu/Clip that reads it alone): the QDQ selector fuses them into
  a QLinearConv, which has no 4-bit kernel
  (``Type 'tensor(uint4)' of input parameter ... of operator (QLinearConv) ... is invalid``).  With a
  4-bit weight, a float output, or an 8/16-bit output the Conv is not fused and runs in float: it loads;
- a Clip whose output reaches a 4-bit QuantizeLinear (directly or through propagating nodes):
  ``ClipQuantFusion`` throws (``Unexpected data type for QuantizeLinear input y_zero_point``)
  -- unless its min and max are given and its input, past a Relu before it, is a graph input, which loaded;
- a MaxPool that reads or writes a 4-bit activation (directly or through propagating nodes): ORT moves the
  DequantizeLinear after it (or the QuantizeLinear before it) and MaxPool has no 4-bit kernel;
- (loads, computes wrongly) a Relu whose output reaches, as above, a 4-bit QuantizeLinear with a zero point
  above the type's minimum -- symmetric activations (``uint4`` zero point 8, ``int4`` zero point 0):
  ``ReluQuantFusion`` removes the Relu as if the QuantizeLinear clipped at 0, so negative values pass
  (the MLP of tests/core/test_ort_4bit_acts.py: output SQNR 0.3 dB against float on 64 held-out inputs,
  15.5 dB with asymmetric ranges; the tests' conv net W4A4 -2.6 dB on the check's samples, 18.6
  asymmetric).  Asymmetric ranges of a Relu output start at 0: their zero point is the minimum, the
  removal exact.

Excluding a Conv (``--exclude``) leaves its weight float, so it is not fused: that fixes the first case.
Excluding a Clip, Relu or MaxPool does not: the tensors around it stay quantized for their other readers.
Everything else loaded and ran on the CPU provider with outputs equal to those of the unoptimized session
(within one quantization step): Gemm, MatMul (8-bit and 4-bit weights), a Conv with 4-bit weights, Add,
Mul, Sub, Div, Concat, AveragePool, GlobalAveragePool, GlobalMaxPool, Relu with an asymmetric range,
Sigmoid, Tanh, Softmax, LeakyRelu, HardSwish, HardSigmoid, Gelu, Reshape, Transpose, Flatten, Squeeze,
Unsqueeze, Slice, Split, Gather, Pad, Resize (nearest, linear), DepthToSpace, ReduceMean, ConvTranspose,
LSTM and GRU.  With graph optimizations disabled (``ORT_DISABLE_ALL`` or ``ORT_ENABLE_BASIC``) every
failing case above loads and runs (no fusion), but the users' ORT sessions do not run that way by default,
so it is not a fix.  2-bit activations are refused earlier (``specs.activation_spec``): ORT 1.32 has no
2-bit QuantizeLinear at any optimization level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from edgequant.errors import EdgeQuantError, UnsupportedError
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.planning.int_kernels import ModelGraph

if TYPE_CHECKING:
    from edgequant.recipe import Recipe

REFUSAL = "4-bit activations on target 'cpu': ONNX Runtime 1.32 cannot run the model this plan exports"

# ops ORT 1.32's QDQ propagation moves a DequantizeLinear down and a QuantizeLinear up through (docstring)
_PROPAGATES = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice")


def _activation(plan: QuantPlan, tensor: str) -> TensorEntry | None:
    e = plan.tensors.get(tensor)
    return e if e is not None and e.role == "activation" else None


def _input_4bit(tensor: str, plan: QuantPlan, graph: ModelGraph) -> bool:
    """Whether ``tensor`` is a 4-bit activation, or comes from one through propagating nodes (ORT moves its
    DequantizeLinear down to the reader)."""
    while (e := _activation(plan, tensor)) is None:
        producer = graph.producer.get(tensor)
        if producer is None or producer.op_type not in _PROPAGATES:
            return False
        tensor = producer.input[0]
    return e.spec.bits == 4


def _output_4bit(
    node: onnx.NodeProto, plan: QuantPlan, graph: ModelGraph, past: tuple[str, ...]
) -> TensorEntry | None:
    """The 4-bit activation that quantizes ``node``'s output, directly or past ``past`` nodes that each read
    the tensor before them alone (ORT moves the QuantizeLinear up to ``node``); None when there is none."""
    tensor = node.output[0]
    while (e := _activation(plan, tensor)) is None:
        nxt = graph.sole_consumer(tensor)
        if nxt is None or nxt.op_type not in past:
            return None
        tensor = nxt.output[0]
    return e if e.spec.bits == 4 else None


def qlinearconv_4bit(node: onnx.NodeProto, plan: QuantPlan, graph: ModelGraph, weight_bits: int) -> bool:
    """Whether Conv ``node`` with a weight of ``weight_bits`` would be fused by ORT into a QLinearConv with
    4-bit activations (which it cannot load): 4-bit input and 4-bit quantized output (past Relu/Clip and
    propagating nodes), 8-bit weight storage (1-bit, ternary and 2-bit weights sit in int8 containers)."""
    if node.op_type != "Conv" or weight_bits in (4, 16) or not _input_4bit(node.input[0], plan, graph):
        return False
    return _output_4bit(node, plan, graph, ("Relu", "Clip", *_PROPAGATES)) is not None


def _clip_loads(node: onnx.NodeProto, graph: ModelGraph) -> bool:
    """A Clip before a 4-bit QuantizeLinear that ORT loads: min and max given, input (past Relus) a graph input."""
    if len(node.input) < 3 or not node.input[1] or not node.input[2]:
        return False
    src = node.input[0]
    while src in graph.producer and graph.producer[src].op_type == "Relu":
        src = graph.producer[src].input[0]
    return src not in graph.producer and src not in graph.inits


def problems(model: onnx.ModelProto, plan: QuantPlan) -> dict[str, list[str]]:
    """Problem phrase -> node names, for the 4-bit activation placements of a static ``plan`` that ORT
    1.32's CPU provider cannot load or computes wrongly (module docstring); empty when there are none."""
    out: dict[str, list[str]] = {}
    if not any(e.role == "activation" and e.spec.bits == 4 for e in plan.tensors.values()):
        return out
    graph = ModelGraph(model)
    for node in model.graph.node:
        op = node.op_type
        why = ""
        if op == "Conv" and len(node.input) > 1:
            w = plan.tensors.get(node.input[1])
            if w is not None and w.role == "weight" and qlinearconv_4bit(node, plan, graph, w.spec.bits):
                why = (
                    "Conv(s) with 8-bit-stored weights and 4-bit inputs and outputs (ORT fuses QLinearConv, "
                    "which has no 4-bit kernel)"
                )
        elif op == "MaxPool" and (
            _input_4bit(node.input[0], plan, graph)
            or _output_4bit(node, plan, graph, _PROPAGATES) is not None
        ):
            why = (
                "MaxPool(s) reading or writing 4-bit activations (ORT moves the Q/DQ across; MaxPool has no "
                "4-bit kernel)"
            )
        elif op == "Clip" and _output_4bit(node, plan, graph, _PROPAGATES) and not _clip_loads(node, graph):
            why = "Clip(s) before a 4-bit QuantizeLinear (ORT's Clip/QuantizeLinear fusion throws on 4-bit zero points)"
        elif op == "Relu":
            e = _output_4bit(node, plan, graph, _PROPAGATES)
            if e is not None and e.spec.symmetric:
                why = (
                    "Relu(s) before a symmetric 4-bit QuantizeLinear (ORT removes the Relu although the zero point "
                    "is above the type's minimum: wrong outputs)"
                )
        if why:
            out.setdefault(why, []).append(node.name)
    return out


def refuse(model: onnx.ModelProto, plan: QuantPlan, target: str) -> None:
    """Raise UnsupportedError (one line: the nodes, why, the fix) when ``target`` is ``cpu`` and ``plan``
    puts 4-bit activations where ORT 1.32 cannot load the model or computes it wrongly (``problems``)."""
    if target != "cpu":
        return
    found = problems(model, plan)
    if not found:
        return
    parts = []
    for why, names in found.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        parts.append(f"{why}: {shown}")
    fixes = ["--act-bits 8 (or 16)"]
    convs = next((ns for w, ns in found.items() if w.startswith("Conv")), [])
    if convs:
        fixes.append("--weight-bits 4 (ORT then runs those Convs in float)")
        fixes.append(f"--exclude {convs[0]}" if len(convs) == 1 else "--exclude Conv (or each named Conv)")
    if any(w.startswith("Relu") for w in found):
        fixes.append("--asymmetric")
    fixes.append("a target whose toolchain runs 4-bit activations (--target akida1, Keras .h5 models)")
    raise UnsupportedError(
        f"{REFUSAL}: " + "; ".join(parts) + ".",
        "use " + ", or ".join(fixes) + ".",
    )


def refuse_file(path: Path, recipe: Recipe) -> None:
    """``refuse`` for the ONNX model at ``path`` repaired and planned as ``quantize`` plans it, for a caller
    that checks before queueing a job (the REST service).  Only for static ``act_bits`` 4 on ``cpu`` without
    ``re:`` excludes (matched in the job under a time budget); any other planning error is left to the job."""
    r = recipe
    if (
        r.act_bits != 4
        or r.method != "static"
        or r.target != "cpu"
        or any(e.startswith("re:") for e in r.exclude)
    ):
        return
    from edgequant import planner
    from edgequant.model import load_model, prepare
    from edgequant.runtime import detect

    try:
        float_model, _ = prepare(load_model(path))
        planner.resolve(float_model, r, detect())
    except EdgeQuantError as exc:
        if exc.detail.startswith(REFUSAL):
            raise
