"""GRU and RNN: what each method really quantizes, and what it says about the rest."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.errors import UnsupportedError

IN, H, STEPS = 8, 16, 5


def _recurrent(op: str, head: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    gates = {"RNN": 1, "GRU": 3}[op]

    def w(name: str, *shape: int, s: float = 0.3) -> onnx.TensorProto:
        return nh.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    nodes = [h.make_node(op, ["x", "W", "R", "B"], ["Y", "Yh"], name="rec", hidden_size=H)]
    inits = [w("W", 1, gates * H, IN), w("R", 1, gates * H, H), w("B", 1, 2 * gates * H, s=0.1)]
    if head:
        nodes += [
            h.make_node("Squeeze", ["Y", "ax"], ["ys"], name="sq"),
            h.make_node("MatMul", ["ys", "Wh"], ["y"], name="head"),
        ]
        inits += [w("Wh", H, 4), nh.from_array(np.array([1], np.int64), "ax")]
        out = h.make_tensor_value_info("y", T.FLOAT, [STEPS, 1, 4])
    else:
        nodes.append(h.make_node("Identity", ["Yh"], ["y"], name="out"))
        out = h.make_tensor_value_info("y", T.FLOAT, [1, 1, H])
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [STEPS, 1, IN])], [out], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _data() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((STEPS, 1, IN)).astype(np.float32)}


def test_dynamic_gru_with_a_small_head_says_most_weights_stay_float() -> None:
    r = edgequant.quantize(_recurrent("GRU", head=True), _data(), method="dynamic")
    rec = next(d for d in r.plan.nodes if d.node == "rec")
    assert not rec.quantized and "no dynamic-quantized GRU kernel" in rec.reason
    # 3*16*(8+16) = 1152 GRU weight values against 64 in the head: 95 % stay float
    msg = next(w for w in r.report["warnings"] if "stay float" in w)
    assert msg.startswith("95 %") and "'rec'" in msg and msg in r.plan.notes
    assert {"R", "W"} <= set(r.report["float_weights"])


def test_dynamic_gru_alone_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="GRU"):
        edgequant.quantize(_recurrent("GRU", head=False), _data(), method="dynamic")


@pytest.mark.parametrize("op", ["RNN", "GRU"])
def test_static_recurrent_weights_are_integer_and_the_note_says_what_runs_float(op: str) -> None:
    r = edgequant.quantize(_recurrent(op, head=True), _data(), method="static")
    assert r.plan.tensors["W"].role == "weight" and r.plan.tensors["R"].role == "weight"
    inits = {t.name: t.data_type for t in r.model.graph.initializer}
    assert inits.get("W_q") == T.INT8 and inits.get("R_q") == T.INT8 and "W" not in inits
    note = next(n for n in r.plan.notes if f"{op} 'rec'" in n)
    assert "ORT has no integer one" in note and "gates" in note
    assert "Y" in r.plan.tensors  # the output sequence feeds the quantized head: its Q/DQ is planned
    assert f"every call: --exclude rec (or --exclude {op}) keeps its weights float" in note
    # following the note: the node's weights stay float initializers read directly, the head stays int8
    kept = edgequant.quantize(_recurrent(op, head=True), _data(), method="static", exclude=["rec"])
    inits = {t.name: t.data_type for t in kept.model.graph.initializer}
    assert inits.get("W") == T.FLOAT and inits.get("R") == T.FLOAT and "W_q" not in inits
    rec = next(n for n in kept.model.graph.node if n.op_type == op)
    assert rec.input[1:3] == ["W", "R"]
    assert inits.get("Wh_q") == T.INT8 and not any(f"{op} 'rec'" in n for n in kept.plan.notes)


def test_weight_only_gru_note_counts_the_node_once_and_claims_no_integer_kernel() -> None:
    """The GRU reads two dequantized weights (W, R): one node.  ORT has no integer GRU kernel (static or
    dynamic), so the note must not send the user to static int8 for it."""
    r = edgequant.quantize(_recurrent("GRU", head=True), _data(), method="weight-only")
    notes = [n for n in r.plan.notes if n.startswith("slower than float")]
    gru = next(n for n in notes if "GRU(s)" in n)
    assert "1 GRU(s) (rec)" in gru and "no integer GRU kernel" in gru and "Static int8" not in gru, gru
    head = next(n for n in notes if "MatMul(s)" in n)
    assert "1 MatMul(s) (head)" in head and "Static int8 runs integer kernels" in head, head
