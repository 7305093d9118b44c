"""Biases that overflow the target's bias width: re-scaled where that is exact, reported otherwise.

A Conv/Gemm bias is stored on the accumulator grid ``b_q = round(b / (s_x * s_w[c]))`` (int32 in the
QDQ model, zero point 0).  A target adds it in a narrower register (``bias_width``: 24 bits next to
8-bit weights on a TI C2000 NPU, 16 bits next to 4/2-bit weights).  For each output channel ``c``
whose ``b_q`` does not fit, in this order:

1. **weight re-scale** (exact for the weights): when every integer weight of the channel is a
   multiple of ``2^k`` (the smallest ``k`` that makes ``b_q / 2^k`` fit), the channel's weight scale
   becomes ``s_w * 2^k`` (still a power of two when it was one), its weights ``w_q / 2^k`` (the same
   real values) and its bias ``round(b / (s_x * s_w * 2^k))``: rounded on a grid ``2^k`` times coarser,
   a change below ``2^-(width-1)`` of the bias itself;
2. **saturated clamp** (exact on the output codes): when the bias alone drives every output past the
   activation clip whatever the input (``|b_q| - max|acc| >= (q_max + 1/2) * s_y / (s_x * s_w)``, with
   ``max|acc| = max|x_q| * sum|w_q[c]|``; for a negative bias into a ReLU, ``b_q + max|acc| <= 0``), the
   bias is clamped to the widest value that still does so: every output code is unchanged;
3. otherwise the channel stays as it is and the compliance check reports it (rule ``bias width``).

Biases with their own power-of-two scale (``own_power_of_two``, e.g. a Vitis DPU) are rounded to the
target's grid, as its quantizer does (Vitis AI / MQBench's Vitis backend: a bias tensor of ``width`` bits
with its own fix position): one shift ``k`` per tensor, the smallest with ``|round(b_q / 2^k)| <= 2^(width-1)
- 1``, and ``b_q <- round(b_q / 2^k) * 2^k``.  Not exact (the error is at most ``2^(k-1)`` accumulator
steps per channel): the plan notes it per node, and the run's check measures its cost against float.
Float biases (next to 4/2-bit weights the QDQ model keeps the bias float) are left to the compliance check.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.plan import QuantPlan
from edgequant.targets import Profile


def _producers(g: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in g.node for o in n.output}


def fit_biases(
    model: onnx.ModelProto, plan: QuantPlan, profile: Profile
) -> tuple[onnx.ModelProto, list[str]]:
    """Re-scale or clamp overflowing biases of ``model`` in place where exact (module doc); the notes."""
    if profile.bias_scale == "own_power_of_two":
        return _round_own_power_of_two(model, profile)
    if profile.bias_scale != "accumulator":
        return model, []
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    prod = _producers(g)
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for t in n.input:
            users.setdefault(t, []).append(n)
    notes: list[str] = []
    for node in g.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        found = [prod.get(t) for t in node.input[:3]]
        dqs = [d for d in found if d is not None and d.op_type == "DequantizeLinear"]
        if len(dqs) != 3:
            continue
        dx, dw, db = dqs
        if dw.input[0] not in inits or db.input[0] not in inits or dx.input[1] not in inits:
            continue
        if inits[dw.input[0]].data_type != onnx.TensorProto.INT8:
            continue
        w_q = numpy_helper.to_array(inits[dw.input[0]]).astype(np.int64)
        bits = next((b for b in (2, 4, 8) if -(2 ** (b - 1)) <= w_q.min() and w_q.max() < 2 ** (b - 1)), 8)
        if bits not in profile.bias_bits:
            continue
        width = profile.bias_width(bits)
        b_q = numpy_helper.to_array(inits[db.input[0]]).astype(np.int64).reshape(-1)
        top = 2 ** (width - 1) - 1
        bad = np.flatnonzero(np.abs(b_q) > top)
        if not bad.size:
            continue
        axis = 0 if node.op_type == "Conv" or any(a.name == "transB" and a.i for a in node.attribute) else 1
        w_c = np.moveaxis(w_q, axis, 0).reshape(w_q.shape[axis], -1)
        s_w = numpy_helper.to_array(inits[dw.input[1]]).astype(np.float64).reshape(-1)
        s_x = float(numpy_helper.to_array(inits[dx.input[1]]).reshape(-1)[0])
        x_dt = numpy_helper.to_array(inits[dx.input[2]]).dtype if len(dx.input) > 2 else np.dtype(np.uint8)
        x_max = 128 if x_dt == np.int8 else 255
        tail = _output_clip(node, users, inits)
        per_channel = s_w.size == w_c.shape[0] and s_w.size > 1
        b_new, s_new, w_new = b_q.copy(), np.broadcast_to(s_w, (w_c.shape[0],)).copy(), w_c.copy()
        done: list[str] = []
        for c in bad:
            k = int(np.ceil(np.log2(abs(b_q[c]) / top)))
            while abs(round(b_q[c] / 2**k)) > top:
                k += 1
            if per_channel and not np.any(w_c[c] % (2**k)):
                w_new[c] = w_c[c] // 2**k
                s_new[c] = s_new[c] * 2**k
                b_new[c] = round(b_q[c] / 2**k)
                done.append(f"channel {c}: weight scale x2^{k} (weights exact)")
                continue
            acc = x_max * int(np.abs(w_c[c]).sum())
            if tail is not None:
                s_y, lo, hi, relu = tail
                r = s_x * s_new[c] / s_y
                if b_q[c] > 0 and (top - acc) * r >= hi + 0.5:
                    b_new[c] = top
                    done.append(f"channel {c}: clamped to {top} (the output saturates at every input)")
                    continue
                if b_q[c] < 0 and ((relu and acc - top <= 0) or (acc - top) * r <= lo - 0.5):
                    b_new[c] = -top
                    done.append(f"channel {c}: clamped to {-top} (the output saturates at every input)")
        if not done:
            continue
        _set(
            inits, dw.input[0], np.moveaxis(w_new.reshape(np.moveaxis(w_q, axis, 0).shape), 0, axis), np.int8
        )
        if per_channel:
            _set(
                inits, dw.input[1], s_new.reshape(numpy_helper.to_array(inits[dw.input[1]]).shape), np.float32
            )
            b_scale = (s_x * s_new).astype(np.float32)
            _set(
                inits,
                db.input[1],
                b_scale.reshape(numpy_helper.to_array(inits[db.input[1]]).shape),
                np.float32,
            )
        _set(inits, db.input[0], b_new.reshape(numpy_helper.to_array(inits[db.input[0]]).shape), np.int32)
        _update_plan(plan, dw.output[0], db.output[0], s_new, s_x * s_new, per_channel)
        notes.append(
            f"bias of '{node.name}': {len(done)} of {bad.size} channel(s) beyond {width} bits fitted exactly ("
            + "; ".join(done[:4]) + ("; ..." if len(done) > 4 else "") + ")"
            + (f"; {bad.size - len(done)} left (see the compliance report)" if len(done) < bad.size else "")
        )  # fmt: skip
    return model, notes


def _round_own_power_of_two(model: onnx.ModelProto, profile: Profile) -> tuple[onnx.ModelProto, list[str]]:
    """Round each Conv/Gemm int32 bias to ``width`` bits times one power of two per tensor (module doc)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    prod = _producers(g)
    notes: list[str] = []
    for node in g.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        db, dw = prod.get(node.input[2]), prod.get(node.input[1])
        if db is None or db.op_type != "DequantizeLinear" or db.input[0] not in inits:
            continue
        if inits[db.input[0]].data_type != onnx.TensorProto.INT32 or dw is None or dw.input[0] not in inits:
            continue
        w_q = numpy_helper.to_array(inits[dw.input[0]]).astype(np.int64)
        bits = next((b for b in (2, 4, 8) if -(2 ** (b - 1)) <= w_q.min() and w_q.max() < 2 ** (b - 1)), 8)
        if bits not in profile.bias_bits:
            continue
        top = 2 ** (profile.bias_width(bits) - 1) - 1
        b_q = numpy_helper.to_array(inits[db.input[0]]).astype(np.int64)
        peak = int(np.abs(b_q).max(initial=0))
        if peak <= top:
            continue
        k = max(0, int(np.ceil(np.log2(peak / top))))
        while int(np.abs(np.round(b_q / 2**k)).max()) > top:
            k += 1
        b_new = np.round(b_q / 2**k).astype(np.int64) * 2**k
        err = int(np.abs(b_new - b_q).max())
        _set(inits, db.input[0], b_new, np.int32)
        notes.append(
            f"bias of '{node.name}': rounded to the target's {profile.bias_width(bits)}-bit bias with its own "
            f"power-of-two scale (shift {k}; at most {err} accumulator step(s) from the exact bias, "
            f"peak |b_q| {peak})"
        )
    return model, notes


def _output_clip(
    node: onnx.NodeProto, users: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto]
) -> tuple[float, int, int, bool] | None:
    """(s_y, q_min, q_max, relu) of the QuantizeLinear after ``node`` (through one ReLU), or None."""
    out, relu = node.output[0], False
    nxt = users.get(out, [])
    if len(nxt) == 1 and nxt[0].op_type == "Relu":
        out, relu = nxt[0].output[0], True
        nxt = users.get(out, [])
    if len(nxt) != 1 or nxt[0].op_type != "QuantizeLinear" or nxt[0].input[1] not in inits:
        return None
    q = nxt[0]
    zp = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] in inits else None
    if zp is not None and np.any(zp != 0):
        return None
    lo, hi = (-128, 127) if zp is None or zp.dtype == np.int8 else (0, 255)
    return float(numpy_helper.to_array(inits[q.input[1]]).reshape(-1)[0]), lo, hi, relu


def _set(inits: dict[str, onnx.TensorProto], name: str, value: np.ndarray, dtype: Any) -> None:
    inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value).astype(dtype), name))


def _update_plan(
    plan: QuantPlan, w_dq: str, b_dq: str, s_w: np.ndarray, s_b: np.ndarray, per_channel: bool
) -> None:
    for key, scales in ((w_dq, s_w), (b_dq, s_b)):
        name = key.removesuffix("_dq")
        entry = plan.tensors.get(name)
        if entry is not None and per_channel:
            plan.tensors[name] = replace(entry, scale=[float(v) for v in scales])
