"""Graph patterns the planner treats specially, found by walking producers and consumers.

* recurrent state paths: what reaches an LSTM/GRU/RNN's initial-state inputs from the graph, and what
  carries its final state to a graph output, through layout ops only;
* bounded outputs: tensors produced by ops with a fixed output range (Softmax, Sigmoid, ...).
"""

from __future__ import annotations

import onnx

RECURRENT_OPS = {"LSTM", "GRU", "RNN"}


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` reads, including nodes inside its subgraphs (outer-scope
    names a branch or loop body uses)."""
    names: set[str] = set()
    for n in graph.node:
        names.update(n.input)
        for a in n.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                names |= names_read(sub)
    return names


# layout ops a recurrent state passes through between the graph's state input/output and the op
STATE_PATH_OPS = {
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Identity",
}


def _upstream(seeds: list[str], producer: dict[str, onnx.NodeProto]) -> set[str]:
    """``seeds`` and every tensor they come from through layout ops (all inputs of a Concat)."""
    out: set[str] = set()
    while seeds:
        t = seeds.pop()
        if t in out:
            continue
        out.add(t)
        p = producer.get(t)
        if p is not None and p.op_type in STATE_PATH_OPS:
            seeds += [i for i in (p.input if p.op_type == "Concat" else p.input[:1]) if i]
    return out


def _downstream(seeds: list[str], consumers: dict[str, list[onnx.NodeProto]]) -> set[str]:
    """``seeds`` and every tensor made from them through layout ops."""
    out: set[str] = set()
    while seeds:
        t = seeds.pop()
        if t in out:
            continue
        out.add(t)
        seeds += [o for c in consumers.get(t, []) if c.op_type in STATE_PATH_OPS for o in c.output if o]
    return out


def recurrent_state_tensors(g: onnx.GraphProto) -> set[str]:
    """Tensors on a recurrent state path: what reaches an LSTM/GRU/RNN's initial state inputs and
    what leaves its final-state outputs, through layout ops only.  They stay float, like the
    state inside the op: a Q/DQ there costs time and compounds error across calls."""
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    state = _upstream([i for n in g.node if n.op_type in RECURRENT_OPS for i in n.input[5:7] if i], producer)
    ahead = _downstream(
        [o for n in g.node if n.op_type in RECURRENT_OPS for o in n.output[1:] if o], consumers
    )
    # of what leaves the op, only what reaches a graph output through layout ops is carried state;
    # a branch into a compute op (a head reading the final hidden state) is quantized as usual
    return state | (ahead & _upstream([o.name for o in g.output], producer))


BOUNDED_OPS = {"Softmax", "Sigmoid", "HardSigmoid", "Tanh"}
_LAYOUT_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"}  # values pass through unchanged


def bounded_outputs(model: onnx.ModelProto) -> set[str]:
    """Outputs of ops with a fixed output range (Softmax, Sigmoid, HardSigmoid, Tanh), and of the
    layout ops (Reshape, Transpose, ...) that carry them on.

    Their decisive values are the few large ones (the attention weight that wins, the open gate);
    percentile, entropy and MSE would clip those to give the many small ones resolution they do not
    need, so these tensors keep their observed min and max whatever the calibration method.
    """
    out: set[str] = set()
    for n in model.graph.node:  # in graph order, so a layout op sees its producer's verdict
        if not n.output:
            continue
        if n.op_type in BOUNDED_OPS or (n.op_type in _LAYOUT_OPS and n.input and n.input[0] in out):
            out.add(n.output[0])
    return out


def time_major_inputs(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Graph inputs read directly as the sequence ``X`` of an LSTM/GRU/RNN in time-major layout
    (``layout`` 0, ONNX's default: ``[T, B, I]``, the batch on axis 1) -> that node; main graph only."""
    inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    out: dict[str, onnx.NodeProto] = {}
    for n in model.graph.node:
        layout = next((a.i for a in n.attribute if a.name == "layout"), 0)
        if n.op_type in RECURRENT_OPS and n.input and n.input[0] in inputs and layout == 0:
            out.setdefault(n.input[0], n)
    return out
