"""Hoist a GRU's input projection out of the recurrence, so it can run as an int8 MatMul.

ONNX GRU (opset 14, gate order z, r, h; ``linear_before_reset`` either way) computes, per direction d,

    P_d = X · W_dᵀ + Wb_d            (the input projection: one [T·N, in] x [in, 3H] product)
    z, r, h~ from P_d and H_{t-1} · R_dᵀ + Rb_d, step by step (the recurrence)

The product ``X · W_dᵀ`` does not depend on the state, so it is one ``MatMul`` over the whole
sequence:  ``X' = X · [W_0; W_1]ᵀ``  ([..., D·3H]).  The GRU then reads ``X'`` with ``W'_d`` the 0/1
matrix that selects direction d's 3H columns (the identity for one direction); ``B`` (Wb, Rb) and every
other input and attribute are unchanged.  Exact in float: each gate's input term is the same sum,
plus exact zeros.

The MatMul is then quantized like any other (static QDQ -> ORT's QLinearMatMul, dynamic ->
DynamicQuantizeMatMul); the selection weight stays float (``SELECTION_DOC`` on the initializer: the
planner leaves it alone) and the recurrence stays float (ORT has no integer GRU kernel).
Cost: ORT's GRU still multiplies its input by ``W'`` once per sequence, now [T·N, D·3H] x [D·3H, 3H]
instead of [T·N, in] x [in, 3H], and the file holds W' (D·3H x D·3H floats per direction pair).
Whether that pays is measured (``benchmarks/bench_recurrent.py``); this is why it is opt-in.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.export._graph import fresh_name

SELECTION_DOC = "edgequant: 0/1 selection matrix of a hoisted GRU input projection; exact, kept float"


def _consts(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    overridable = {i.name for i in g.input}
    return {k: v for k, v in out.items() if k not in overridable}


def hoist_gru_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with each main-graph GRU's input product ``X · Wᵀ`` as a ``MatMul`` before it.

    Applies to GRUs with a constant float ``W``.  Returns the new model
    and one note per GRU (rewritten, or why not).  Shapes: X [T, N, in] (layout 0) or [N, T, in]
    (layout 1) -> X' [.., D·3H]; W [D, 3H, in] -> MatMul weight [in, D·3H]; W' [D, 3H, D·3H].
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts = _consts(g)
    names = (
        {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    )
    names |= {n.name for n in g.node}
    nodes: list[onnx.NodeProto] = []
    notes: list[str] = []
    for n in g.node:
        if n.op_type != "GRU":
            nodes.append(n)
            continue
        w = consts.get(n.input[1]) if len(n.input) > 1 else None
        if w is None or w.dtype != np.float32:
            notes.append(f"GRU '{n.name}': W is not a float constant; its input projection stays inside.")
            nodes.append(n)
            continue
        d, h3, width = w.shape
        w_cat = w.reshape(d * h3, width).T  # [in, D·3H]
        sel = np.zeros((d, h3, d * h3), np.float32)
        for k in range(d):
            sel[k, :, k * h3 : (k + 1) * h3] = np.eye(h3, dtype=np.float32)
        tag = n.name or "gru"
        wn, sn = fresh_name(names, f"{tag}_Wx"), fresh_name(names, f"{tag}_Wsel")
        mm, xp = fresh_name(names, f"{tag}_input_proj"), fresh_name(names, f"{tag}_X_proj")
        sel_t = numpy_helper.from_array(sel, sn)
        sel_t.doc_string = SELECTION_DOC
        g.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(w_cat, np.float32), wn),
                sel_t,
            ]
        )
        nodes.append(helper.make_node("MatMul", [n.input[0], wn], [xp], name=mm))
        new = onnx.NodeProto()
        new.CopyFrom(n)
        new.input[0], new.input[1] = xp, sn  # B (Wb, Rb) stays on the GRU: Wb is added to each gate as before
        nodes.append(new)
        notes.append(
            f"GRU '{n.name}': input projection X·Wᵀ over the whole sequence hoisted into MatMul '{mm}' "
            f"([.., {width}] x [{width}, {d * h3}]), quantized like any MatMul; the recurrence (R, gates, "
            "state) stays float: ORT has no integer GRU kernel. Measured cost: ORT's GRU still multiplies its "
            "input by the 0/1 selection W' ([T, 3H]·[3H, 3H]), 1.7-1.8x float GRU time at T=100, in 64, H 128 "
            "(benchmarks/results/bench_recurrent.md)."
        )
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used or t.name in {i.name for i in g.input}]
    del g.initializer[:]
    g.initializer.extend(keep)
    return out, notes


def is_selection(t: onnx.TensorProto) -> bool:
    """True for a hoisted GRU's 0/1 selection weight, which stays float."""
    return t.doc_string == SELECTION_DOC


def hoisted_inputs(graph: onnx.GraphProto) -> set[str]:
    """Inputs X' of hoisted GRUs (those whose W is a selection matrix).  They stay float under static
    QDQ: the MatMul making X' then runs as ORT's MatMulIntegerToFloat (int8 product, float output), and
    the GRU's gates see no 8-bit rounding of their input term (tiny GRU, T=12: 39.6 dB vs 34.8 dB with
    X' on an 8-bit grid, where ORT runs QLinearMatMul)."""
    sel = {t.name for t in graph.initializer if is_selection(t)}
    return {n.input[0] for n in graph.node if n.op_type == "GRU" and len(n.input) > 1 and n.input[1] in sel}
