"""Dynamic INT8 quantization: int8 weights stored, activations quantized at run time.

Only ops with a fast dynamic kernel in ONNX Runtime are rewritten, so the result is never slower
than float:

* ``MatMul`` / ``Gemm`` with a constant 2-D weight -> ``com.microsoft.DynamicQuantizeMatMul``.  At
  run time ORT quantizes the activation ``A`` to uint8 (asymmetric, one scale per tensor) and
  computes ``Y = s_A·s_W[n] · Σ_k (a_q[m,k] - z_A) · w_q[k,n] + bias[n]`` with integer products.
  (This one node measured as fast as, or faster than, DynamicQuantizeLinear + MatMulInteger + Mul,
  which ORT fuses into the same kernel, and it also works with graph optimisations off.)
  Gemm: ``transB`` is applied to the weight, ``alpha`` folded into it before quantization, a
  constant ``C`` broadcastable to ``[N]`` becomes ``beta·C`` in the kernel's bias, any other ``C``
  is added by an ``Add`` (after a ``Mul`` by ``beta`` when ``beta != 1``).  A MatMul whose only
  consumer is ``Add`` with a constant ``[N]`` vector folds that vector into the bias.
* ``LSTM`` with constant ``W``/``R`` -> ``com.microsoft.DynamicQuantizeLSTM`` (weights stored
  transposed as ``[D, in, 4H]``; per-channel scales have shape ``[D, 4H]``).

Weights are symmetric int8 on the narrow grid ``q = clip(round(w / s), -Q, Q)`` with
``s = max|w| / Q`` per output channel (per tensor with ``per_channel=False``), ``Q = 127``, or
``Q = 63`` (a 7-bit range) with ``reduce_range``, which x86 CPUs without VNNI need to avoid
saturating the u8×s8 int16 intermediate.  Conv stays float (ORT's ConvInteger is slower than float
Conv), GRU and RNN stay float (ORT has no dynamic kernel for them); every skip has its reason.
Weights held by ``Constant`` nodes are treated like initializers.  Only the main graph is rewritten.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.errors import ExportError, UnsupportedError
from edgequant.export._graph import all_names, free_names, fresh_name, graphs, name_nodes, named_subgraphs
from edgequant.model.io import opset_of
from edgequant.plan import NodeDecision, QuantPlan, TensorEntry
from edgequant.schemes.spec import Granularity, QuantSpec

MS_DOMAIN = "com.microsoft"
_FLOAT_REASONS = {
    "Conv": "Conv: ONNX Runtime has no fast dynamic-quantized Conv kernel (ConvInteger runs slower than "
    "float Conv on CPU); left float so the model is not slower than float",
    "ConvTranspose": "ConvTranspose: ONNX Runtime has no dynamic-quantized ConvTranspose kernel; left float",
    "GRU": "GRU: ONNX Runtime has no dynamic-quantized GRU kernel (only DynamicQuantizeLSTM exists); left float "
    "(--hoist-gru makes its input projection an int8 MatMul: slower than float in ORT, see README)",
    "RNN": "RNN: ONNX Runtime has no dynamic-quantized RNN kernel; left float",
    "Constant": "Constant: holds a value that no rewritten node reads as its weight; kept as is",
    "Attention": "Attention (com.microsoft): its dynamic form is QAttention, which this exporter does not "
    "emit; left float",
}


@dataclass
class _Ctx:
    qmax: int
    per_channel: bool
    reduce_range: bool
    names: set[str]
    consts: dict[str, np.ndarray]  # constant float tensors of the main graph: initializers + Constant outputs
    const_nodes: dict[str, onnx.NodeProto]  # Constant output -> node
    overridable: set[str]  # initializers that are also graph inputs
    uses: dict[str, int]  # value -> number of reads (nodes in all scopes, graph outputs)
    graph_outputs: set[str]
    plan: QuantPlan
    excluded: set[str]
    inits: list[onnx.TensorProto] = field(default_factory=list)
    consumed: dict[str, str] = field(default_factory=dict)  # float weight -> node that consumed it
    folded: dict[str, str] = field(default_factory=dict)  # float bias -> node whose kernel bias holds it
    removed: set[str] = field(default_factory=set)  # node names folded away

    def fresh(self, base: str) -> str:
        return fresh_name(self.names, base)


def quantize_dynamic(
    model: onnx.ModelProto,
    *,
    weight_bits: int = 8,
    per_channel: bool = True,
    reduce_range: bool = False,
    exclude_nodes: Collection[str] = (),
) -> tuple[onnx.ModelProto, QuantPlan]:
    """A copy of ``model`` with int8 weights for MatMul/Gemm/LSTM, and the plan with a reason per node."""
    if weight_bits != 8:
        raise UnsupportedError(
            f"dynamic quantization with weight_bits={weight_bits} was requested; ONNX Runtime's dynamic "
            "kernels (DynamicQuantizeMatMul, DynamicQuantizeLSTM) take 8-bit weights only.",
            "use weight_bits=8 (reduce_range=True for a 7-bit range), or a weight-only 4-bit method.",
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    names = all_names(g)
    name_nodes(g, names)
    unknown = sorted(set(exclude_nodes) - {n.name for n in g.node})
    if unknown:
        raise ExportError(
            f"exclude_nodes names {len(unknown)} node(s) not in the main graph, e.g. '{unknown[0]}'.",
            "use node names as printed by 'edgequant inspect MODEL'.",
        )
    plan = QuantPlan(method="dynamic", opset=opset_of(out))
    ctx = _Ctx(
        qmax=63 if reduce_range else 127,
        per_channel=per_channel,
        reduce_range=reduce_range,
        names=names,
        consts={},
        const_nodes={},
        overridable={v.name for v in g.input} & {t.name for t in g.initializer},
        uses={},
        graph_outputs={o.name for o in g.output},
        plan=plan,
        excluded=set(exclude_nodes),
    )
    _index(g, ctx)
    new_nodes: list[onnx.NodeProto] = []
    reasons: dict[str, tuple[bool, str]] = {}
    nodes = list(g.node)
    for i, n in enumerate(nodes):
        if n.name in ctx.removed:
            continue
        if n.name in ctx.excluded:
            reasons[n.name] = (False, "excluded by user")
            new_nodes.append(n)
            continue
        rewrite = {"MatMul": _matmul, "Gemm": _gemm, "LSTM": _lstm}.get(n.op_type)
        result = (
            rewrite(n, nodes[i + 1 :], ctx) if rewrite else _FLOAT_REASONS.get(n.op_type, _default_reason(n))
        )
        if isinstance(result, str):
            reasons[n.name] = (False, result)
            new_nodes.append(n)
        else:
            reasons[n.name] = (True, "")
            new_nodes.extend(result)
    _prune(g, ctx, new_nodes, reasons)
    for n in nodes:
        ok, why = reasons[n.name]
        plan.nodes.append(NodeDecision(n.name, n.op_type, ok, why))
        for attr, sub in named_subgraphs(n):
            for sg in graphs(sub):
                for sn in sg.node:
                    plan.nodes.append(
                        NodeDecision(
                            sn.name, sn.op_type, False,
                            "inside a control-flow subgraph; dynamic quantization rewrites the main graph only",
                            f"main/{n.name}.{attr}",
                        )
                    )  # fmt: skip
    if plan.quantized_nodes:
        if not any(o.domain == MS_DOMAIN for o in out.opset_import):
            out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    n_int8 = sum(1 for t in g.initializer if t.data_type == TensorProto.INT8 and t.name in plan.tensors)
    grid = f"[-{ctx.qmax}, {ctx.qmax}]" + (" (7-bit, reduce_range)" if reduce_range else "")
    plan.notes += [
        f"{n_int8} weight tensor(s) stored as int8, symmetric, codes in {grid}, "
        + ("per output channel." if per_channel else "per tensor (per direction for LSTM)."),
        "activations are quantized at run time by ONNX Runtime: uint8, asymmetric, one scale per tensor "
        "computed per call over the whole batch (DynamicQuantizeLinear), so a sample's output depends on the batch "
        "it runs in, and a score on the evaluation batch size.",
        "only MatMul/Gemm/LSTM with constant weights are rewritten (ONNX Runtime has fast dynamic kernels for "
        "them); every other node runs in float.",
    ]
    if not reduce_range:
        plan.notes.append(
            "full int8 weight range: on x86 CPUs without VNNI, reduce_range=True avoids u8×s8 saturation."
        )
    return out, plan


def _default_reason(n: onnx.NodeProto) -> str:
    return (
        f"{n.op_type}: has no constant weight that ONNX Runtime can use in a dynamic kernel (only MatMul, "
        "Gemm and LSTM are rewritten); runs in float"
    )


def _index(g: onnx.GraphProto, ctx: _Ctx) -> None:
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            ctx.consts[t.name] = numpy_helper.to_array(t)
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            if n.attribute[0].t.data_type == TensorProto.FLOAT:
                ctx.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
                ctx.const_nodes[n.output[0]] = n
        for name in n.input:
            ctx.uses[name] = ctx.uses.get(name, 0) + 1
        for _, sub in named_subgraphs(n):
            for name in free_names(sub):
                ctx.uses[name] = ctx.uses.get(name, 0) + 1
    for o in g.output:
        ctx.uses[o.name] = ctx.uses.get(o.name, 0) + 1


def _weight_problem(name: str, ctx: _Ctx, rank: int, what: str) -> str | None:
    if name in ctx.overridable:
        return f"{what} '{name}' is an initializer that is also a graph input, so it can change at run time"
    if name not in ctx.consts:
        return f"{what} '{name}' is not a constant (it is computed at run time, e.g. attention scores)"
    w = ctx.consts[name]
    if w.ndim != rank:
        return f"{what} '{name}' has rank {w.ndim}; the dynamic kernel takes a rank-{rank} weight"
    return None


def _quantize(w: np.ndarray, axes: tuple[int, ...], ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric narrow int8 with one scale per index of ``axes`` (reduced over the other axes)."""
    if not ctx.per_channel:
        axes = axes[:-1]  # LSTM keeps one scale per direction; MatMul one per tensor
    reduce = tuple(a for a in range(w.ndim) if a not in axes)
    amax = np.abs(w).max(axis=reduce, keepdims=True).astype(np.float64)
    scale = np.where(amax > 0, amax / ctx.qmax, 1.0)
    q = np.clip(np.round(w / scale), -ctx.qmax, ctx.qmax).astype(np.int8)
    keep = [w.shape[a] for a in axes]
    return q, scale.reshape(keep).astype(np.float32)


def _store(
    q: np.ndarray, scale: np.ndarray, axis: int | None, source: str, node: str, ctx: _Ctx
) -> tuple[str, str, str]:
    qn, sn, zn = (
        ctx.fresh(f"{source}_quantized"),
        ctx.fresh(f"{source}_scale"),
        ctx.fresh(f"{source}_zero_point"),
    )
    zero = np.zeros(scale.shape, np.int8)
    ctx.inits += [
        numpy_helper.from_array(q, qn),
        numpy_helper.from_array(scale, sn),
        numpy_helper.from_array(zero, zn),
    ]
    spec = (
        QuantSpec(bits=8, granularity=Granularity.PER_CHANNEL, axis=axis, narrow_range=True)
        if axis is not None and ctx.per_channel
        else QuantSpec(bits=8, narrow_range=True)
    )
    note = f"weight of '{node}' (from '{source}')"
    if ctx.reduce_range:
        note += f"; reduce_range: codes limited to [-{ctx.qmax}, {ctx.qmax}]"
    ctx.plan.tensors[qn] = TensorEntry(
        name=qn, role="weight", spec=spec, scale=[float(s) for s in scale.ravel()],
        zero_point=[0] * int(scale.size), note=note,
    )  # fmt: skip
    ctx.consumed[source] = node
    return qn, sn, zn


def _const_vector(name: str, n: int, ctx: _Ctx) -> np.ndarray | None:
    """A constant broadcastable to ``[n]`` along the last axis (shape [], [1], [n], [1, n]), else None."""
    if not name or name in ctx.overridable or name not in ctx.consts:
        return None
    c = ctx.consts[name]
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.size not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,)).astype(np.float32)


def _dqmm(
    a: str, w: np.ndarray, source: str, out: str, node: onnx.NodeProto, bias: np.ndarray | None, ctx: _Ctx
) -> onnx.NodeProto:
    q, scale = _quantize(w, (1,), ctx)
    qn, sn, zn = _store(q, scale, 1, source, node.name, ctx)
    inputs = [a, qn, sn, zn]
    if bias is not None:
        bn = ctx.fresh(f"{node.name}_bias")
        ctx.inits.append(numpy_helper.from_array(bias.astype(np.float32), bn))
        inputs.append(bn)
    return helper.make_node(
        "DynamicQuantizeMatMul", inputs, [out], name=ctx.fresh(f"{node.name}_dynamic"), domain=MS_DOMAIN
    )


def _matmul(n: onnx.NodeProto, later: list[onnx.NodeProto], ctx: _Ctx) -> list[onnx.NodeProto] | str:
    problem = _weight_problem(n.input[1], ctx, 2, "MatMul: input B")
    if problem:
        return problem
    w = ctx.consts[n.input[1]]
    out, bias = n.output[0], None
    if ctx.uses.get(out, 0) == 1 and out not in ctx.graph_outputs:
        add = next((m for m in later if out in m.input), None)
        if add is not None and add.op_type == "Add" and add.name not in ctx.excluded:
            other = add.input[1] if add.input[0] == out else add.input[0]
            vec = _const_vector(other, w.shape[1], ctx)
            if vec is not None and ctx.consts[other].ndim <= 1:  # [1, N] could raise a 1-D result's rank
                bias, out = vec, add.output[0]
                ctx.folded[other] = n.name
                ctx.removed.add(add.name)
                ctx.plan.nodes.append(
                    NodeDecision(add.name, "Add", True, f"bias folded into the dynamic MatMul of '{n.name}'")
                )
    return [_dqmm(n.input[0], w, n.input[1], out, n, bias, ctx)]


def _gemm(n: onnx.NodeProto, later: list[onnx.NodeProto], ctx: _Ctx) -> list[onnx.NodeProto] | str:
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if attrs.get("transA", 0):
        return "Gemm: transA=1 would need a Transpose of the run-time input; left float"
    problem = _weight_problem(n.input[1], ctx, 2, "Gemm: input B")
    if problem:
        return problem
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    w = ctx.consts[n.input[1]]
    w = (w.T if attrs.get("transB", 0) else w) * np.float32(alpha)
    c = n.input[2] if len(n.input) > 2 else ""
    vec = _const_vector(c, w.shape[1], ctx)
    if not c or vec is not None:
        bias = vec * np.float32(beta) if vec is not None else None
        if c:
            ctx.folded[c] = n.name
        return [_dqmm(n.input[0], w, n.input[1], n.output[0], n, bias, ctx)]
    tmp = ctx.fresh(f"{n.name}_matmul")
    nodes = [_dqmm(n.input[0], w, n.input[1], tmp, n, None, ctx)]
    if beta != 1.0:
        bn, scaled = ctx.fresh(f"{n.name}_beta"), ctx.fresh(f"{n.name}_c_scaled")
        ctx.inits.append(numpy_helper.from_array(np.array(beta, np.float32), bn))
        nodes.append(helper.make_node("Mul", [c, bn], [scaled], name=ctx.fresh(f"{n.name}_beta_mul")))
        c = scaled
    nodes.append(helper.make_node("Add", [tmp, c], [n.output[0]], name=ctx.fresh(f"{n.name}_add_c")))
    return nodes


def _lstm(n: onnx.NodeProto, later: list[onnx.NodeProto], ctx: _Ctx) -> list[onnx.NodeProto] | str:
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if attrs.get("layout", 0):
        return "LSTM: layout=1 (batch first) is not supported by DynamicQuantizeLSTM; left float"
    for i, what in ((1, "LSTM: input W"), (2, "LSTM: input R")):
        problem = _weight_problem(n.input[i], ctx, 3, what)
        if problem:
            return problem
    inputs = [n.input[0]]
    params: list[str] = []
    for i in (1, 2):
        w = ctx.consts[n.input[i]]  # [D, 4H, in] -> stored transposed [D, in, 4H]
        q, scale = _quantize(np.transpose(w, (0, 2, 1)), (0, 2), ctx)
        qn, sn, zn = _store(q, scale, 2, n.input[i], n.name, ctx)
        inputs.append(qn)
        params += [sn, zn]
    inputs += [n.input[k] if len(n.input) > k else "" for k in range(3, 8)] + params
    kept = {k: v for k, v in attrs.items() if k != "layout"}
    return [
        helper.make_node(
            "DynamicQuantizeLSTM",
            inputs,
            list(n.output),
            name=ctx.fresh(f"{n.name}_dynamic"),
            domain=MS_DOMAIN,
            **kept,
        )
    ]


def _prune(
    g: onnx.GraphProto, ctx: _Ctx, new_nodes: list[onnx.NodeProto], reasons: dict[str, tuple[bool, str]]
) -> None:
    """Install the new nodes and int8 initializers; drop float weights nobody reads any more."""
    used = {o.name for o in g.output}
    for n in new_nodes:
        used.update(n.input)
        for _, sub in named_subgraphs(n):
            used.update(free_names(sub))
    for d in ctx.plan.nodes:  # folded Adds recorded during the rewrite
        reasons[d.node] = (d.quantized, d.reason)
    ctx.plan.nodes.clear()
    kept_nodes = []
    for n in new_nodes:
        src = n.output[0] if n.op_type == "Constant" and n.output else ""
        if src in ctx.consumed and src not in used:
            reasons[n.name] = (
                True,
                f"weight of '{ctx.consumed[src]}', stored as int8; Constant node removed",
            )
            continue
        if src in ctx.folded and src not in used:
            why = f"bias of '{ctx.folded[src]}', folded into its dynamic kernel; Constant node removed"
            reasons[n.name] = (True, why)
            continue
        kept_nodes.append(n)
    del g.node[:]
    g.node.extend(kept_nodes)
    folded = ctx.consumed.keys() | ctx.folded.keys()
    keep = [t for t in g.initializer if t.name in used or t.name not in folded]
    del g.initializer[:]
    g.initializer.extend(keep + ctx.inits)
