"""Activations that ONNX Runtime would quantize only to dequantize again: left float.

A static plan puts a Q/DQ pair on the data inputs and outputs of every op ONNX Runtime can fuse or pass
through in integers (``planning.graph.PASS_OPS``).  Where ORT finds no integer kernel for a group after
all (a ``ReduceMean`` reading a ``Pow``, a ``Clip`` with a float bound, a ``Reshape`` between two
different grids), its optimised graph keeps a standalone ``QuantizeLinear`` whose every reader is a
``DequantizeLinear``: the tensor is rounded to 8 bits and turned back into float between two float ops.
That round trip computes nothing on integers and saves no time; it only adds rounding error (and two
nodes).  On SSCD's ResNet-50 the generalized-mean pooling head (``Clip -> Pow(3) -> ReduceMean ->
Pow(1/3)``) carried two that mattered (``Reshape -> Clip``, ``Pow -> ReduceMean``; the cubed
activations span 0 to ~2,000, so an 8-bit grid zeroes most of them): the embedding's output SQNR was
13.0 dB with them against 16.4 dB without (``benchmarks/models/sscd.py``).

``drop_round_trips`` reads ORT's optimised graph of the exported model (level 2, the graph the CPU
provider runs; loaded in a child process like the check) and returns the plan without those activation
entries.  Node decisions are left as they are: a node that reads or writes such a tensor keeps its
quantized neighbours' Q/DQ (a Reshape after a conv still reads the conv's dequantized output, so ORT
still fuses the conv), and the report's census lists it as planned but run in float.  Left alone: a
pair nobody reads (the exporter writes one where every reader takes the float tensor; ``drop_unread``
removes it from the written model), the input of a Conv/Gemm/MatMul that
ORT runs in float (the plan's float-speed note names it), 16-bit pairs (asked for, or chosen by
``act16``; they cost next to nothing), a graph input's pair (the PyTorch export's wrappers quantize
the inputs as the plan says), a plan whose every activation is such a tensor, and every target but
``cpu`` (a hardware target's compiler may
need every tensor on a grid).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from edgequant.export.qdq import drop_unused_initializers, export_qdq
from edgequant.model.patterns import names_read
from edgequant.plan import QuantPlan
from edgequant.planning.int_kernels import DOT_OPS, ModelGraph
from edgequant.runtime.isolated import run_isolated

if TYPE_CHECKING:
    from edgequant.recipe import Recipe

# a Conv/Gemm/MatMul planned integer that ORT runs in float keeps its quantized input: the plan's float-speed
# note (planning/int_kernels.py) names it, and the cause (a float bias, a 16-bit input) is what to fix
# (likewise an LSTM/GRU/RNN, whose input the PyTorch export's recurrent wrappers quantize as the plan says)
DOT = {*DOT_OPS, "FusedConv", "FusedGemm", "FusedMatMul", "LSTM", "GRU", "RNN"}


def applies(recipe: Recipe) -> bool:
    """Whether the pipeline leaves round-trip activations float for ``recipe``: static, ``cpu`` target
    (module docstring); the range search and the pass judge score candidates the same way."""
    return recipe.method == "static" and recipe.target == "cpu"


def found(model: onnx.ModelProto, plan: QuantPlan, providers: list[str]) -> list[str]:
    """The activations of ``plan`` that ``drop_round_trips`` would leave float, read from the QDQ export of
    ``model`` + ``plan`` (one ORT load in a child process); for a caller that drops them from other plans
    of the same graph (``without``): which ops ORT fuses depends on the graph, not on the range values."""
    return drop_round_trips(plan, export_qdq(model, plan)[0], providers)[1]


def round_trip_tensors(optimized: onnx.ModelProto) -> set[str]:
    """Inputs of the standalone QuantizeLinear nodes of ORT's optimised graph whose every reader is a
    DequantizeLinear that some node (or a graph output) reads, none of them a Conv/Gemm/MatMul: tensors
    quantized only to be dequantized."""
    graph = ModelGraph(optimized)
    inputs = {i.name for i in optimized.graph.input}  # their pairs stay: the PyTorch export quantizes inputs
    out: set[str] = set()
    for n in optimized.graph.node:
        if n.op_type != "QuantizeLinear" or n.output[0] in graph.outputs or n.input[0] in inputs:
            continue
        users = graph.consumers.get(n.output[0], [])
        if not users or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        # a pair nobody reads (its readers take the float tensor) is left alone: dropping it changes nothing
        # computed, but can change how ORT fuses the producer (a binary MatMul lost MatMulIntegerToFloat)
        after = [r for u in users for r in graph.consumers.get(u.output[0], [])]
        read = after or any(u.output[0] in graph.outputs for u in users)
        if read and not any(r.op_type in DOT for r in after):
            out.add(n.input[0])
    return out


def drop_round_trips(
    plan: QuantPlan, quantized: onnx.ModelProto, providers: list[str]
) -> tuple[QuantPlan, list[str]]:
    """(``plan`` without the round-trip activations of ``quantized``, their names in plan order).

    ``quantized``: ``export_qdq(float_model, plan)``'s model; ``providers``: ORT's, as the check uses.
    The plan is not modified (a copy is returned when something is dropped).
    Raises InferenceError when ORT cannot load ``quantized`` (the check would fail on it too).
    """
    graphs: list[onnx.ModelProto] = []
    run_isolated(quantized, [], what="the quantized model", providers=providers, optimized=graphs)
    # 8-bit only: a 16-bit pair (asked for, or chosen by act16) costs next to nothing and is the user's choice
    trips = {
        t for t in round_trip_tensors(graphs[0]) & set(plan.activations()) if plan.tensors[t].spec.bits == 8
    }
    if not trips or trips >= set(plan.activations()):  # all of them: the plan's static model would be float
        return plan, []
    dropped = [name for name in plan.activations() if name in trips]
    return without(plan, dropped), dropped


def without(plan: QuantPlan, names: list[str]) -> QuantPlan:
    """A copy of ``plan`` without the activation entries ``names`` (``plan`` itself when there are none)."""
    if not names:
        return plan
    out = QuantPlan.from_dict(plan.to_dict())
    for name in names:
        out.tensors.pop(name, None)
    return out


def note(float_model: onnx.ModelProto, dropped: list[str]) -> str:
    """The plan note: how many activations were left float, and their kinds (producer -> readers)."""
    producer = {o: n.op_type for n in float_model.graph.node for o in n.output}
    readers: dict[str, set[str]] = {}
    for n in float_model.graph.node:
        for name in n.input:
            readers.setdefault(name, set()).add(n.op_type)
    kinds = sorted(
        {f"{producer.get(t, 'input')} -> {'/'.join(sorted(readers.get(t, ()))) or 'output'}" for t in dropped}
    )
    return (
        f"{len(dropped)} activation(s) left float where ONNX Runtime runs the ops on both sides in float "
        f"({', '.join(kinds[:6])}{', ...' if len(kinds) > 6 else ''}): an 8-bit round trip there would only add "
        "rounding error, at no gain in speed."
    )


def drop_unread(model: onnx.ModelProto) -> list[str]:
    """Remove from ``model`` (in place) each QuantizeLinear whose every reader is a DequantizeLinear that no
    node (in any subgraph) and no graph output reads, with those DequantizeLinears, and each unread
    DequantizeLinear of an initializer; repeated until none is left.  Returns the quantized tensors' names.

    ORT runs such a pair, computing nothing that is used (the exporter writes one where every reader of
    the activation takes the float tensor: a Clip or ReduceMean before a float Pow, a graph output), so
    the outputs stay bit for bit the same.  Kept: a pair on the output of a Conv/Gemm/MatMul (``DOT``)
    that reads a DequantizeLinear, or of a Relu/Clip after such a node (ORT folds those into the Q;
    ``test_int_kernel_rules``' matmul_relu and gemm_relu: without the Q the MatMul/Gemm runs in float).
    ORT's QDQ fusion looks at the consumers: a MatMul feeding an unread Q besides float readers runs in
    float; without the Q it becomes MatMulIntegerToFloat, another kernel that rounds differently; a Gemm
    becomes QGemm.  Also kept: a pair whose tensor no other node of the graph
    reads (only a subgraph, or nothing)."""
    g = model.graph
    outputs = {o.name for o in g.output}
    dequantized = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name for t in g.initializer}
    dropped: list[str] = []
    removed = 0
    while True:
        read = names_read(g) | outputs
        readers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for name in n.input:
                readers.setdefault(name, []).append(n)
        dead: list[onnx.NodeProto] = []
        for n in g.node:
            if n.domain not in ("", "ai.onnx") or n.output[0] in outputs:
                continue
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.output[0] not in read:
                dead.append(n)
            elif n.op_type == "QuantizeLinear":
                users = readers.get(n.output[0], [])
                made = producer.get(n.input[0])
                while made is not None and made.op_type in ("Relu", "Clip"):  # ORT folds them into the Q
                    made = producer.get(made.input[0])
                fused = made is not None and made.op_type in DOT and any(i in dequantized for i in made.input)
                unread = all(u.op_type == "DequantizeLinear" and u.output[0] not in read for u in users)
                # the tensor keeps a reader in this graph: a Loop body's outer-scope read alone is not one
                # (without the Q beside it, ORT 1.32 aborts at load: a Keras GRU's Loop, test_tf_import)
                kept = n.input[0] in outputs or any(r is not n for r in readers.get(n.input[0], []))
                if unread and kept and not fused:
                    dead += [n, *users]
                    dropped.append(n.input[0])
        if not dead:
            break
        for n in {id(n): n for n in dead}.values():
            g.node.remove(n)
            removed += 1
    if removed:
        drop_unused_initializers(g)
    return dropped


def unread_note(dropped: list[str]) -> list[str]:
    """The plan note for ``drop_unread``'s tensors (none when there are none)."""
    if not dropped:
        return []
    names = ", ".join(dropped[:6]) + (", ..." if len(dropped) > 6 else "")
    return [
        f"{len(dropped)} Q/DQ pair(s) that no node reads are not written ({names}): every reader of those "
        "tensors runs in float, and ORT would compute the pairs for nothing."
    ]
