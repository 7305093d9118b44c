"""FP16 conversion: weights and compute in IEEE half precision, float32 kept only where required.

Every float32 tensor of the graph (initializers, Constant values, node outputs, control-flow
subgraph values, value_info) becomes float16, except where float32 is required:

* a node input whose ONNX schema type is ``tensor(float)`` only (Resize ``scales``, Upsample
  ``scales``) gets a ``Cast(to=FLOAT)`` in front of it;
* a node whose schema type parameter bound to a float tensor does not allow ``tensor(float16)``
  (e.g. ``Range``), a node with no ONNX schema (a custom domain), and a node the user excludes run
  in float32 with Casts around them; the subgraphs of such a node stay float32;
* a Transpose that moves axis 0 next to the last axis (``perm = [1, .., r-2, 0, r-1]`` or
  ``[1, .., r-2, r-1, 0]``) into a MatMul runs in float32: ONNX Runtime 1.32 fuses it into a float16
  FusedMatMul with ``transBatch`` and crashes (SIGSEGV) creating the session when dims are dynamic;
* with ``keep_io_types`` the model inputs and outputs stay float32 with Casts at the boundary.

The decision is read from ``onnx.defs.get_schema`` type constraints at the model's opset, not a
hand-written list.  Attributes that name a float dtype (``Cast.to``, the ``value`` of Constant /
ConstantOfShape) are switched to float16.  Generators (RandomNormal/Uniform[Like], Bernoulli,
EyeLike) keep ``dtype=FLOAT``: ONNX Runtime's CPU kernels have no float16 form for them, so they
generate float32 and their consumers read a Cast.  A float32 constant
consumed only by float32 inputs stays float32 (no needless precision loss).  Values beyond the
float16 range are clipped to ±65504 (the count is reported in the plan notes, with the count of
non-zero values that underflow to zero).  Half precision has an 11-bit significand, so the
relative rounding error of a value is at most 2**-11 ≈ 4.9e-4 (≈ 66 dB SQNR for one rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.errors import ExportError, first_line
from edgequant.export._contrib_types import infer_types
from edgequant.export._graph import (
    all_names,
    collect_elem_types,
    free_names,
    fresh_name,
    graphs,
    name_nodes,
    named_subgraphs,
    rename_value,
    set_elem_type,
)
from edgequant.model.io import opset_of
from edgequant.plan import NodeDecision, QuantPlan

FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = 65504.0
_DTYPE_ATTRS = ("to", "dtype")
# Ops whose float output type comes from an attribute, not from a float input: ONNX Runtime's CPU
# kernels generate float32/float64 only, and its automatic fp16 fallback (Casts around a node with no
# fp16 kernel) cannot apply without a float input.  They generate float32; consumers read a Cast.
_GENERATORS = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "EyeLike",
)


@dataclass
class _Ctx:
    opsets: dict[str, int]
    exclude: set[str]
    keep_io_types: bool
    types: dict[str, int]  # value name -> element type (float32 detection), over all scopes
    plan: QuantPlan
    trans_batch: set[str] = field(default_factory=set)  # Transposes ORT would fold as transBatch
    native: dict[str, int] = field(default_factory=dict)  # float value name -> FP32 / FP16 after conversion
    names: set[str] = field(default_factory=set)
    clipped: int = 0
    underflow: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    casts: int = 0

    def fresh(self, base: str) -> str:
        return fresh_name(self.names, base)


def convert_fp16(
    model: onnx.ModelProto, *, keep_io_types: bool = True, exclude_nodes: Collection[str] = ()
) -> tuple[onnx.ModelProto, QuantPlan]:
    """A float16 copy of ``model`` and the plan saying, for every node, what was converted and why not."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    try:
        inferred, assumed = infer_types(out)  # types carried through com.microsoft ops too
    except Exception as exc:  # inference is only a source of types; a failure must not be silent
        raise ExportError(
            f"ONNX shape inference failed on the model, so float tensors cannot be identified: {exc}",
            "repair the model (edgequant inspect MODEL) or export it again with a current opset.",
        ) from exc
    plan = QuantPlan(method="fp16", opset=opset_of(out))
    ctx = _Ctx(
        opsets={(i.domain or ""): int(i.version) for i in out.opset_import},
        exclude=set(exclude_nodes),
        keep_io_types=keep_io_types,
        types=collect_elem_types(inferred.graph),
        plan=plan,
        names=all_names(out.graph),
    )
    name_nodes(out.graph, ctx.names)
    if assumed:
        plan.notes.append(
            f"{len(assumed)} output(s) of op(s) without an ONNX schema typed from their node's input: "
            + ", ".join(
                f"{k} ({TensorProto.DataType.Name(v).lower()})" for k, v in sorted(assumed.items())[:8]
            )
        )
    ctx.trans_batch = _trans_batch_transposes(out.graph)
    unknown = sorted(ctx.exclude - {n.name for g in graphs(out.graph) for n in g.node})
    if unknown:
        raise ExportError(
            f"exclude_nodes names {len(unknown)} node(s) not in the model, e.g. '{unknown[0]}'.",
            "use node names as printed by 'edgequant inspect MODEL'.",
        )
    _convert_graph(out.graph, ctx, "main", main=True)
    try:
        onnx.checker.check_model(out)
    except Exception as exc:
        raise ExportError(
            f"the float16 graph fails the ONNX checker: {first_line(exc, 300)}",
            "exclude the node named in the message (--exclude NAME, or exclude_nodes=[...] in Python) and "
            "report the model.",
        ) from exc
    ratio = ctx.bytes_after / ctx.bytes_before if ctx.bytes_before else 1.0
    plan.notes += [
        f"weights: {ctx.bytes_before} bytes of float32 constants -> {ctx.bytes_after} bytes ({ratio:.3f}x).",
        f"{ctx.clipped} value(s) beyond the float16 range were clipped to ±{FP16_MAX:g}; "
        f"{ctx.underflow} non-zero value(s) below 6e-8 became 0.",
        f"{ctx.casts} Cast node(s) inserted at float32/float16 boundaries.",
        "model inputs/outputs kept float32 (keep_io_types=True)."
        if keep_io_types
        else "model inputs/outputs changed to float16 (keep_io_types=False).",
    ]
    return out, plan


# -- per-node schema decisions ---------------------------------------------------------------------
@dataclass
class _NodeRule:
    keep32: bool
    reason: str
    in_fp32: list[bool]  # per input: this input must be float32
    out_fp32: list[bool]  # per output: this output is float32 by schema

    @classmethod
    def float32(cls, n: onnx.NodeProto, reason: str) -> _NodeRule:
        """The whole node runs in float32: every float input is read as float32."""
        return cls(True, reason, [True] * len(n.input), [True] * len(n.output))


def _formal(
    params: list[onnx.defs.OpSchema.FormalParameter], i: int
) -> onnx.defs.OpSchema.FormalParameter | None:
    if i < len(params):
        return params[i]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


def _rule(n: onnx.NodeProto, ctx: _Ctx) -> _NodeRule:
    ins, outs = [False] * len(n.input), [False] * len(n.output)
    if n.name and n.name in ctx.exclude:
        return _NodeRule.float32(n, "excluded by user")
    if n.name in ctx.trans_batch:
        why = (
            "Transpose of the batch axis into a MatMul: ONNX Runtime fuses it into a float16 FusedMatMul "
            "(transBatch) that crashes; kept float32 with a Cast after it"
        )
        return _NodeRule.float32(n, why)
    domain = n.domain if n.domain not in ("", "ai.onnx") else ""
    if not domain and n.op_type in _GENERATORS and any(ctx.types.get(o) == FP32 for o in n.output):
        why = (
            f"{n.op_type}: ONNX Runtime's CPU kernel generates float32/float64 only (no float16 dtype); it "
            "generates float32 and its consumers read a Cast to float16"
        )
        return _NodeRule.float32(n, why)
    try:
        schema = onnx.defs.get_schema(n.op_type, ctx.opsets.get(domain, 1), domain)
    except onnx.defs.SchemaError:
        why = (
            f"no ONNX schema for {n.op_type} in domain '{domain or 'ai.onnx'}', so its float16 support is "
            "unknown; kept float32 with Casts around it"
        )
        return _NodeRule.float32(n, why)
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    literal: list[str] = []
    for names, params, flags in ((n.input, schema.inputs, ins), (n.output, schema.outputs, outs)):
        for i, name in enumerate(names):
            p = _formal(list(params), i)
            if not name or p is None or ctx.types.get(name) != FP32:
                continue
            kinds = allowed.get(p.type_str, {p.type_str})
            if any("float16" in k and "bfloat16" not in k for k in kinds):
                continue
            if p.type_str in allowed:
                why = (
                    f"ONNX schema of {n.op_type}-{schema.since_version} allows only "
                    f"{', '.join(sorted(kinds))} for {p.type_str}; kept float32 with Casts around it"
                )
                return _NodeRule.float32(n, why)
            flags[i] = True
            literal.append(f"'{p.name}'")
    reason = f"{' and '.join(literal)} stays float32 (schema types it tensor(float) only)" if literal else ""
    return _NodeRule(False, reason, ins, outs)


def _trans_batch_transposes(g: onnx.GraphProto) -> set[str]:
    """Names of the Transposes (any scope) whose perm ORT folds into a MatMul as ``transBatch``."""
    out: set[str] = set()
    for sub in graphs(g):
        matmul_inputs = {i for n in sub.node if n.op_type == "MatMul" for i in n.input}
        for n in sub.node:
            perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), [])
            r = len(perm)
            if n.op_type != "Transpose" or r < 3 or n.output[0] not in matmul_inputs:
                continue
            if perm[:-2] == list(range(1, r - 1)) and sorted(perm[-2:]) == [0, r - 1]:
                out.add(n.name)
    return out


# -- conversion --------------------------------------------------------------------------------------
def _to_fp16(arr: np.ndarray, ctx: _Ctx) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    over = np.isfinite(a) & (np.abs(a) > FP16_MAX)
    ctx.clipped += int(over.sum())
    h = np.where(over, np.clip(a, -FP16_MAX, FP16_MAX), a).astype(np.float16)
    ctx.underflow += int(((a != 0) & (h == 0)).sum())
    ctx.bytes_before += a.size * 4
    ctx.bytes_after += a.size * 2
    return h


def _convert_tensor(t: onnx.TensorProto, ctx: _Ctx) -> onnx.TensorProto:
    return numpy_helper.from_array(_to_fp16(numpy_helper.to_array(t), ctx), t.name)


def _cast(
    name: str, to: int, cache: dict[tuple[str, int], str], new_nodes: list[onnx.NodeProto], ctx: _Ctx
) -> str:
    key = (name, to)
    if key not in cache:
        out = ctx.fresh(f"{name}_{'fp32' if to == FP32 else 'fp16'}")
        new_nodes.append(helper.make_node("Cast", [name], [out], name=ctx.fresh(f"{out}_Cast"), to=to))
        ctx.casts += 1
        cache[key] = out
    return cache[key]


def _convert_graph(g: onnx.GraphProto, ctx: _Ctx, path: str, main: bool) -> None:
    io32 = main and ctx.keep_io_types

    def is_float(name: str) -> bool:
        return bool(name) and ctx.types.get(name) == FP32

    for v in g.input:
        if is_float(v.name):
            ctx.native[v.name] = FP32 if io32 else FP16
    nodes = list(g.node)
    rules = [_rule(n, ctx) for n in nodes]
    for n, r in zip(nodes, rules, strict=True):
        untyped = [o for o in n.output if o and o not in ctx.types]
        if r.keep32 and untyped and any(is_float(i) for i in n.input):  # e.g. a custom-domain op
            ctx.types.update(dict.fromkeys(untyped, FP32))
            ctx.plan.notes.append(f"no type inferred for output(s) {untyped} of '{n.name}'; assumed float32.")
    # which precisions each value's consumers want
    wants: dict[str, set[int]] = {}
    for n, r in zip(nodes, rules, strict=True):
        for i, name in enumerate(n.input):
            if is_float(name):
                wants.setdefault(name, set()).add(FP32 if r.in_fp32[i] else FP16)
        for _, sub in named_subgraphs(n):
            for name in free_names(sub):
                if is_float(name):
                    wants.setdefault(name, set()).add(FP32 if r.keep32 else FP16)
    for o in g.output:
        if is_float(o.name):
            wants.setdefault(o.name, set()).add(FP32 if io32 else FP16)

    def only32(name: str) -> bool:
        return wants.get(name, {FP16}) == {FP32}

    graph_inputs = {v.name for v in g.input}

    inits = []
    for t in g.initializer:
        if t.name in graph_inputs:  # an overridable initializer follows its graph input's type
            convert = t.data_type == FP32 and ctx.native.get(t.name) == FP16
        else:
            convert = t.data_type == FP32 and not only32(t.name)
        if convert:
            inits.append(_convert_tensor(t, ctx))
            ctx.native[t.name] = FP16
        else:
            inits.append(t)
            if t.data_type == FP32:
                ctx.native[t.name] = FP32
    del g.initializer[:]
    g.initializer.extend(inits)

    new_nodes: list[onnx.NodeProto] = []
    cache: dict[tuple[str, int], str] = {}
    for n, r in zip(nodes, rules, strict=True):
        touches = any(is_float(x) for x in (*n.input, *n.output))
        stayed = not r.keep32 and _convert_attrs(n, ctx, only32)
        if stayed:
            r = _NodeRule.float32(n, "every consumer reads its output as float32; left float32")
        for i, name in enumerate(n.input):
            if is_float(name):
                want = FP32 if r.in_fp32[i] else FP16
                if ctx.native.get(name, FP32) != want:
                    n.input[i] = _cast(name, want, cache, new_nodes, ctx)
        for j, name in enumerate(n.output):
            if is_float(name):
                ctx.native[name] = FP32 if r.keep32 or r.out_fp32[j] else FP16
        for attr, sub in named_subgraphs(n):
            sub_path = f"{path}/{n.name}.{attr}"
            if r.keep32:
                for name in free_names(sub):
                    if is_float(name) and ctx.native.get(name) == FP16:
                        rename_value(sub, name, _cast(name, FP32, cache, new_nodes, ctx))
                for sg in graphs(sub):
                    for sn in sg.node:
                        why = f"inside a subgraph of float32 node '{n.name}'"
                        ctx.plan.nodes.append(NodeDecision(sn.name, sn.op_type, False, why, sub_path))
            else:
                _convert_graph(sub, ctx, sub_path, main=False)
        if r.keep32 or not touches:
            why = r.reason or "no floating-point inputs or outputs; nothing to convert"
            ctx.plan.nodes.append(NodeDecision(n.name, n.op_type, False, why, path))
        else:
            ctx.plan.nodes.append(NodeDecision(n.name, n.op_type, True, r.reason, path))
        new_nodes.append(n)
    del g.node[:]
    g.node.extend(new_nodes)

    for k, o in enumerate(g.output):
        if not is_float(o.name):
            continue
        want = FP32 if io32 else FP16
        if ctx.native.get(o.name, FP32) != want:
            if main:  # outputs keep their names: the internal value is renamed
                outer = o.name
                inner = ctx.fresh(f"{outer}_{'fp16' if want == FP32 else 'fp32'}")
                ctx.native[inner] = ctx.native[outer]
                ctx.types[inner] = FP32
                rename_value(g, outer, inner)
                g.output[k].name = outer
                g.node.append(
                    helper.make_node("Cast", [inner], [outer], name=ctx.fresh(f"{outer}_Cast"), to=want)
                )
                ctx.casts += 1
            else:
                casted: list[onnx.NodeProto] = []
                o.name = _cast(o.name, want, cache, casted, ctx)
                g.node.extend(casted)
        set_elem_type(o.type, want)
    for v in g.input:
        if is_float(v.name):
            set_elem_type(v.type, ctx.native[v.name])
    for v in g.value_info:
        if is_float(v.name) and v.name in ctx.native:
            set_elem_type(v.type, ctx.native[v.name])


def _convert_attrs(n: onnx.NodeProto, ctx: _Ctx, only32: Callable[[str], bool]) -> bool:
    """Switch float32 dtype/value attributes to float16; True when the node was left float32 instead."""
    if n.op_type in ("Cast", "Constant") and all(only32(o) for o in n.output if o):
        return True  # consumed only as float32: no round trip through float16
    if n.op_type == "ConstantOfShape" and not any(a.name == "value" for a in n.attribute):
        n.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
    for a in n.attribute:
        if a.name in _DTYPE_ATTRS and a.type == onnx.AttributeProto.INT and a.i == FP32:
            a.i = FP16
        elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FP32:
            a.t.CopyFrom(_convert_tensor(a.t, ctx))
        elif n.op_type == "Constant" and a.name in ("value_float", "value_floats"):
            vals = np.asarray(a.f if a.name == "value_float" else list(a.floats), dtype=np.float32)
            tensor = numpy_helper.from_array(_to_fp16(vals, ctx))
            a.Clear()
            a.CopyFrom(helper.make_attribute("value", tensor))
    return False
