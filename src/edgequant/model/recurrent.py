"""Streaming / recurrent model patterns whose activations need a fixed rule, not a calibrated range.

Two kinds, both measured on Silero VAD (silero-vad 6.2.3: STFT conv front end + LSTM with carried
state; ``benchmarks/bench_recurrent.py``):

* **squared-magnitude tensors** (``squared_domain``): ``re**2 + im**2`` before a ``Sqrt`` (a magnitude
  spectrum) or a ``Log`` (a log power spectrum).  A squared quantity spans twice the dynamic range in
  dB of the value it squares; on a linear 8-bit grid sized for the loudest bin (Silero: 0..140) the
  quiet bins that tell speech from silence round to zero.  On the VAD these three tensors alone took the
  frame agreement of static per-channel int8 from 0.992 (weights only) to 0.962; kept float it is
  back at 0.992.  ORT runs Pow and Sqrt in float anyway, so keeping the Add between them float costs
  only a QLinearAdd and saves its Q/DQ pairs.
* **exact-range tensors** (``exact_ranges``): an LSTM/GRU/RNN hidden output with its default
  activations lies in (-1, 1) (``o * tanh(c)``; GRU's convex mix of tanh and the previous state;
  RNN's tanh), Sigmoid in (0, 1), Tanh in (-1, 1).  Their calibrated range depends on the state the
  calibration data carried (zero states give the VAD's LSTM output [-0.76, 0.76] where the stream
  reaches [-0.999, 0.99]) and on whether the calibration data reached the extremes; the fixed range is
  what the op can produce, so nothing the model emits at run time is clipped.  Layout ops carry the
  range on; a Relu halves it to [0, 1].
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from edgequant.model.patterns import RECURRENT_OPS

_LAYOUT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast", "Slice", "Gather"}
_SUMS = {"Add", "Sum", "ReduceSum", "ReduceMean", "Concat"}  # a sum of squares is still squared
_MAGNITUDE = {"Sqrt", "Log"}
SQUARED_REASON = (
    "part of a squared magnitude (re**2 + im**2 before Sqrt/Log): a squared quantity spans twice the "
    "dynamic range in dB, and on a linear 8-bit grid the quiet bins round to zero (Silero VAD: frame "
    "agreement 0.962 with these quantized, 0.992 float); kept float (ORT runs Pow/Sqrt in float anyway)."
)
MIN_SPAN_SHARE = 0.5
# default activation lists: the hidden output is tanh-bounded only with these
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _consts(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    out = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t
    return out


def _is_square(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> bool:
    if node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]:
        return True
    if node.op_type == "Pow" and len(node.input) == 2 and node.input[1] in consts:
        e = numpy_helper.to_array(consts[node.input[1]])
        return e.size == 1 and float(e.reshape(-1)[0]) == 2.0
    return False


def squared_domain(graph: onnx.GraphProto) -> dict[str, str]:
    """Nodes (name -> reason) and the tensors between them that hold a squared magnitude on its way
    to a Sqrt or Log: squares (``Pow(x, 2)``, ``Mul(x, x)``), sums of squares and layout ops between.
    Only chains that end in a Sqrt/Log count (a variance inside a normalization is another pattern).
    Returns ``{node name: reason}``; the tensor names are ``squared_tensors``."""
    return {n.name: SQUARED_REASON for n in _squared_nodes(graph)}


def squared_tensors(graph: onnx.GraphProto) -> set[str]:
    """The outputs of the ``squared_domain`` nodes: tensors that stay float."""
    return {o for n in _squared_nodes(graph) for o in n.output if o}


def _squared_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    consts = _consts(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    squared: dict[str, onnx.NodeProto] = {}  # tensor -> producing node, in the squared domain
    for n in graph.node:  # graph order: a node sees its producers' verdicts
        if not n.output:
            continue
        data = [i for i in n.input if i and i not in consts]
        if _is_square(n, consts) or (
            n.op_type in _SUMS | _LAYOUT
            and data
            and all(i in squared for i in data[: 1 if n.op_type in _LAYOUT else None])
        ):
            squared[n.output[0]] = n

    def reaches_magnitude(t: str, seen: set[str]) -> bool:
        if t in seen:
            return False
        seen.add(t)
        for c in consumers.get(t, []):
            if c.op_type in _MAGNITUDE or (
                c.output and c.output[0] in squared and reaches_magnitude(c.output[0], seen)
            ):
                return True
        return False

    keep = [t for t in squared if reaches_magnitude(t, set())]
    nodes = {squared[t].name: squared[t] for t in keep}
    return list(nodes.values())


def _acts(node: onnx.NodeProto) -> list[str] | None:
    for a in node.attribute:
        if a.name == "activations":
            return [s.decode() for s in a.strings]
    return None


def exact_ranges(graph: onnx.GraphProto) -> dict[str, tuple[float, float, str]]:
    """Tensors whose range is fixed by the op that makes them: ``{name: (lo, hi, reason)}``.

    Recurrent hidden outputs (Y, Y_h; not LSTM's cell state Y_c, which is unbounded) with the default
    activations -> (-1, 1); Sigmoid -> (0, 1); Tanh -> (-1, 1); layout ops and Cast carry the range on;
    Relu of a (-1, 1) tensor -> (0, 1).  An op with a ``clip`` attribute or custom activations is left out.
    """
    out: dict[str, tuple[float, float, str]] = {}
    for n in graph.node:  # graph order
        if not n.output:
            continue
        if n.op_type in RECURRENT_OPS:
            acts = _acts(n)
            clip = any(a.name == "clip" for a in n.attribute)
            directions = next((a.s.decode() for a in n.attribute if a.name == "direction"), "forward")
            default = _DEFAULT_ACTS[n.op_type] * (2 if directions == "bidirectional" else 1)
            if clip or (acts is not None and acts != default):
                continue
            why = (
                f"hidden output of {n.op_type} '{n.name}': (-1, 1) by construction (tanh-bounded), whatever "
                "state the calibration data carried"
            )
            for o in n.output[:2]:
                if o:
                    out[o] = (-1.0, 1.0, why)
        elif n.op_type == "Sigmoid":
            out[n.output[0]] = (0.0, 1.0, f"Sigmoid '{n.name}' output: (0, 1) by construction")
        elif n.op_type == "Tanh":
            out[n.output[0]] = (-1.0, 1.0, f"Tanh '{n.name}' output: (-1, 1) by construction")
        elif n.input and n.input[0] in out and (n.op_type in _LAYOUT or n.op_type == "Relu"):
            lo, hi, why = out[n.input[0]]
            if n.op_type == "Relu":
                lo = max(lo, 0.0)
            out[n.output[0]] = (lo, hi, why)
    return out


def apply_exact_ranges(graph: onnx.GraphProto, ranges: dict[str, tuple[float, float]]) -> dict[str, str]:
    """Set the calibrated ``ranges`` (name -> (lo, hi), changed in place) of ``exact_ranges`` tensors to
    their fixed range where calibration saw at least ``MIN_SPAN_SHARE`` of it (widening costs at most one
    bit of resolution; a tensor that stays far inside its bound keeps its finer calibrated grid).
    Returns ``{name: note}`` for each one changed (the note goes on its plan entry)."""
    notes: dict[str, str] = {}
    for name, (lo, hi, why) in exact_ranges(graph).items():
        if name not in ranges:
            continue
        seen = ranges[name]
        if seen[1] - seen[0] < MIN_SPAN_SHARE * (hi - lo):
            continue  # far inside the fixed range: the calibrated grid keeps more resolution
        ranges[name] = (lo, hi)
        notes[name] = f"fixed range [{lo:g}, {hi:g}] (calibration saw [{seen[0]:.4g}, {seen[1]:.4g}]): {why}."
    return notes


def state_pairs(graph: onnx.GraphProto) -> list[tuple[str, str]]:
    """(graph input, graph output) pairs of carried recurrent state: an input that reaches an
    LSTM/GRU/RNN's initial state through layout ops, and an output its final state reaches, paired in
    graph order among those of one shape.  Empty when the pairing is not one to one."""
    from edgequant.model.patterns import recurrent_state_tensors

    state = recurrent_state_tensors(graph)
    ins = [i for i in graph.input if i.name in state]
    outs = [o for o in graph.output if o.name in state]

    def shape(v: onnx.ValueInfoProto) -> tuple[object, ...]:
        return tuple(d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim)

    if len(ins) != len(outs) or [shape(i) for i in ins] != [shape(o) for o in outs]:
        return []
    return [(i.name, o.name) for i, o in zip(ins, outs, strict=True)]
