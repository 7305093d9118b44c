"""Matmul-shaped Einsum with a constant operand -> MatMul (+ Transpose / Reshape), so it is quantized.

An ``Einsum`` with two operands, one of them a constant ``W``, is a matrix product when every
letter falls in one of four groups (``X`` is the activation operand, ``out`` the result):

* ``M``: in ``X`` and ``out`` only (rows: batch, sequence, ...);
* ``K``: in ``X`` and ``W``, not in ``out`` (the contracted axes);
* ``N``: in ``W`` and ``out`` only (the output features);
* ``B``: in all three (a per-head weight, ``W[h, d, e]``), at most one such letter.

Then ``out = transpose(reshape(X' @ W'))`` with ``W' = W`` transposed to ``[B, K, N]`` and reshaped
to ``[B?, prod K, prod N]`` (done once on the constant), and ``X'`` = ``X`` transposed to
``[M_outer..., B?, m_last, K...]`` with the ``K`` axes merged.  ``X'`` keeps its ``M`` axes as they
are (``Reshape`` with 0 = copy), so dynamic batch and sequence sizes still work, and ONNX
``MatMul`` broadcasting supplies the per-``B`` products.  The rewrite is exact up to float
summation order.

Everything else (both operands activations as in attention scores, a repeated letter as in a
trace or a diagonal, ellipsis, a letter summed in one operand only, two or more ``B`` letters,
three or more operands) is left as an ``Einsum`` and ``why_not`` gives the reason the planner
records.  ONNX Einsum spec: https://onnx.ai/onnx/operators/onnx__Einsum.html
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass(frozen=True)
class EinsumMatmul:
    """How one Einsum maps to a MatMul; ``const`` is the operand slot (0 or 1) of the constant."""

    const: int
    x_letters: str
    w_letters: str
    out_letters: str
    m: str
    k: str
    n: str
    b: str


def _parse(equation: str) -> tuple[list[str], str] | str:
    eq = equation.replace(" ", "")
    if "..." in eq:
        return "its equation uses an ellipsis ('...')"
    if "->" not in eq:
        return "its equation has no explicit output ('->')"
    lhs, out = eq.split("->")
    ops = lhs.split(",")
    if len(ops) != 2:
        return f"it has {len(ops)} operand(s); only two-operand products map to MatMul"
    return ops, out


def classify(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> EinsumMatmul | str:
    """The MatMul form of ``node``, or the reason it has none (a sentence fragment)."""
    equation = next((a.s.decode() for a in node.attribute if a.name == "equation"), "")
    parsed = _parse(equation)
    if isinstance(parsed, str):
        return parsed
    ops, out = parsed
    if len(node.input) != 2:
        return f"it has {len(node.input)} input(s)"
    is_const = [name in constants for name in node.input]
    if all(is_const):
        return "both operands are constants"
    if not any(is_const):
        return (
            "both operands are computed at run time (an attention-style product); ONNX Runtime has no "
            "integer kernel for it, so it runs in float"
        )
    c = is_const.index(True)
    w, x = ops[c], ops[1 - c]
    for letters in (w, x, out):
        if len(set(letters)) != len(letters):
            return f"'{letters}' repeats a letter (a trace or diagonal), which is not a matrix product"
    if len(constants[node.input[c]].dims) != len(w):
        return "the constant's rank does not match its letters"
    lonely = [ch for ch in w + x if (ch in w) != (ch in x) and ch not in out]
    if lonely:
        return f"letter '{lonely[0]}' is summed within one operand only"
    b = "".join(ch for ch in x if ch in w and ch in out)
    if len(b) > 1:
        return f"it has {len(b)} batch letters shared by both operands ('{b}'); one is supported"
    m = "".join(ch for ch in x if ch not in w)
    k = "".join(ch for ch in x if ch in w and ch not in out)
    n = "".join(ch for ch in w if ch not in x)
    if not k:
        return "no letter is contracted (an outer or element-wise product)"
    if b and not m:
        return "a batch letter with no row letter (a batched vector product)"
    return EinsumMatmul(c, x, w, out, m, k, n, b)


def why_not(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> str:
    """The planner's reason for an Einsum left in the graph (one that ``rewrite_einsums`` skipped)."""
    got = classify(node, constants)
    detail = got if isinstance(got, str) else "it was not rewritten"
    return f"Einsum is not a matrix product with a constant operand: {detail}; it stays float."


def _perm(src: str, dst: str) -> list[int]:
    return [src.index(ch) for ch in dst]


def _rewrite(
    g: onnx.GraphProto, node: onnx.NodeProto, e: EinsumMatmul, names: set[str]
) -> list[onnx.NodeProto]:
    def fresh(base: str) -> str:
        name, i = base, 1
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.add(name)
        return name

    inits = {t.name: t for t in g.initializer}
    w_name, x_name = node.input[e.const], node.input[1 - e.const]
    w = numpy_helper.to_array(inits[w_name])
    dims = dict(zip(e.w_letters, w.shape, strict=True))
    k_size = int(np.prod([dims[ch] for ch in e.k]))
    n_size = int(np.prod([dims[ch] for ch in e.n])) if e.n else 1
    w2 = np.ascontiguousarray(np.transpose(w, _perm(e.w_letters, e.b + e.k + e.n)))
    w2 = w2.reshape(([dims[e.b]] if e.b else []) + [k_size, n_size])
    w2_name = fresh(f"{w_name}_matmul")
    g.initializer.append(numpy_helper.from_array(w2.astype(w.dtype), w2_name))
    base = node.name or "einsum"
    nodes: list[onnx.NodeProto] = []

    def shape_const(values: list[int], tag: str) -> str:
        name = fresh(f"{base}_{tag}_shape")
        g.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    # X -> [M_outer..., B?, m_last?, K...] -> merge K
    m_outer, m_last = (e.m[:-1], e.m[-1:]) if e.b else (e.m, "")
    x_order = m_outer + e.b + m_last + e.k
    cur = x_name
    if x_order != e.x_letters:
        t = fresh(f"{base}_x_t")
        nodes.append(helper.make_node("Transpose", [cur], [t], name=t, perm=_perm(e.x_letters, x_order)))
        cur = t
    if len(e.k) > 1:
        r = fresh(f"{base}_x_r")
        keep = len(x_order) - len(e.k)
        nodes.append(helper.make_node("Reshape", [cur, shape_const([0] * keep + [k_size], "x")], [r], name=r))
        cur = r
    mm = fresh(f"{base}_matmul")
    nodes.append(helper.make_node("MatMul", [cur, w2_name], [mm], name=mm))
    cur = mm
    # result: [M_outer..., B?, m_last?, prod N] -> split N -> output order
    res_order = m_outer + e.b + m_last + e.n
    if len(e.n) != 1:
        r = fresh(f"{base}_y_r")
        keep = len(m_outer + e.b + m_last)
        nodes.append(
            helper.make_node(
                "Reshape", [cur, shape_const([0] * keep + [dims[ch] for ch in e.n], "y")], [r], name=r
            )
        )
        cur = r
    if res_order != e.out_letters:
        nodes.append(
            helper.make_node(
                "Transpose",
                [cur],
                [node.output[0]],
                name=fresh(f"{base}_y_t"),
                perm=_perm(res_order, e.out_letters),
            )
        )
    else:
        nodes[-1].output[0] = node.output[0]
    return nodes


def rewrite_einsums(model: onnx.ModelProto) -> list[str]:
    """Rewrite every matmul-shaped Einsum of the main graph in place; one note per rewritten node."""
    g = model.graph
    constants = {t.name: t for t in g.initializer}
    names = {n.name for n in g.node} | {o for n in g.node for o in n.output} | set(constants)
    names |= {i.name for i in g.input}
    notes: list[str] = []
    new: list[onnx.NodeProto] = []
    for node in g.node:
        got = (
            classify(node, constants) if node.op_type == "Einsum" and node.domain in ("", "ai.onnx") else None
        )
        if (
            not isinstance(got, EinsumMatmul)
            or constants[node.input[got.const]].data_type != onnx.TensorProto.FLOAT
        ):
            new.append(node)
            continue
        parts = _rewrite(g, node, got, names)
        new.extend(parts)
        eq = (
            f"{got.x_letters},{got.w_letters}->{got.out_letters}"
            if got.const == 1
            else (f"{got.w_letters},{got.x_letters}->{got.out_letters}")
        )
        notes.append(
            f"Einsum '{node.name}' ({eq}) rewritten as {' + '.join(p.op_type for p in parts)} so its constant "
            f"operand '{node.input[got.const]}' is quantized like any MatMul weight."
        )
    if notes:
        del g.node[:]
        g.node.extend(new)
        used = {i for n in g.node for i in n.input}
        used |= {o.name for o in g.output} | {i.name for i in g.input}
        keep = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
    return notes
