"""``--format ti-npu-int``: the integer-only ONNX form of a TI-NPU QDQ model (no DequantizeLinear inside).

TI's NPU flow (Tiny ML Tensorlab / tinyml-modeloptimization, the TINPU wrappers' ONNX export) runs
each conv / FC on integer codes held in float tensors and follows it by an *offset-scale-shift*
requantization (TI application note SDAA185; the TINPU ``OffsetScaleShift`` block)::

    acc  = Conv(x_q, w_q)                          # integer-valued, exact while |acc| < 2^24
    y_q  = Clip(Floor((acc + b') * M / 2^n), lo, hi)   # b' = b_q + round(2^(n-1) / M): rounding offset

* ``b_q``: the bias on the accumulator grid ``s_x * s_w`` (int, ``bias_width`` bits on the target);
* ``M / 2^n`` approximates ``r = s_x * s_w / s_y`` per output channel: with power-of-two scales (8-bit
  weights on ``ti-npu``) ``r`` is a power of two, so ``M`` is 1 (or ``1/r`` when ``r > 1``) and the form
  is exact; otherwise ``M`` is an unsigned ``multiplier_bits``-bit integer (128..255 at 8 bits) and
  ``n`` the shift, a relative error below 2^-8;
* ``Floor`` after adding ``2^(n-1)`` is the hardware's round-half-up right shift;
* ``Clip`` to the activation range, its low end 0 when a ReLU follows (ReLU fused into the clip).

The requant chain runs in float64 (``Cast``), so ``(acc + b') * M`` is exact (< 2^53); the Conv / Gemm
itself runs in float32 on integer-valued tensors (exact while every partial sum stays below 2^24; the
bound ``max|x_q| * sum|w_q|`` per layer is checked and a layer above it is named in the notes).
Ops between layers (ReLU, max/average pooling, Flatten/Reshape, Add, Concat) take their inputs'
codes times ``s_in / s_out`` (a power of two on ``ti-npu``) and ``Round`` (half to even, as the QDQ
model's QuantizeLinear and as the TINPU export's pooled sums), then clip: they match the QDQ codes.

Relation to the QDQ model (ONNX Runtime): the QDQ model rounds half to *even* (QuantizeLinear,
QLinearConv), the NPU's conv/FC requant rounds half *up*; at a tie (``(acc + b) * r`` exactly
``k + 1/2``) the codes differ by 1 LSB, and elsewhere they are equal for power-of-two scales.  With multiplier + shift scales
(4/2-bit weights) the 8-bit multiplier adds at most ``127 * 2^-8`` < 0.5 LSB, so a code may differ
by 1 LSB.  A difference entering the next layer can move that layer's codes too; the report and the
tests measure it.

Inputs are quantized at the graph boundary (QuantizeLinear, Cast to float); an output that the QDQ
model dequantizes becomes ``code * s`` (one Mul at the boundary), a final conv / FC without output
quantization becomes ``(acc + b_q) * s_x * s_w``.  Any other op in the quantized network (a GELU, a
Sigmoid, a float node) has no integer form here: UnsupportedError names it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.errors import UnsupportedError
from edgequant.targets import Profile

SCALED = {"Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Add", "Concat",
          "Transpose", "Squeeze", "Unsqueeze"}  # fmt: skip
EXACT_ACC = 2.0**24  # float32 holds every integer up to this


def requant_params(ratio: np.ndarray, multiplier_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer multiplier ``M`` and shift ``n`` per channel with ``M / 2^n`` ~ ``ratio`` (> 0).

    A power-of-two ratio gives ``M = 1`` (``ratio <= 1``) or ``M = ratio`` (``n = 0``): exact.  Otherwise
    ``M`` is the ``multiplier_bits``-bit unsigned integer in ``[2^(b-1), 2^b - 1]`` nearest ``ratio * 2^n``.
    """
    r = np.asarray(ratio, dtype=np.float64).reshape(-1)
    if np.any(r <= 0) or not np.all(np.isfinite(r)):
        raise UnsupportedError(
            f"requantization ratio {r.min():.3g} is not positive.", "re-quantize the model."
        )
    m, n = np.ones_like(r), np.zeros_like(r)
    for i, v in enumerate(r):
        e = math.log2(v)
        if e == round(e):
            m[i], n[i] = (2.0**e, 0.0) if e >= 0 else (1.0, -e)
            continue
        shift = multiplier_bits - 1 - math.floor(e)
        mult = round(v * 2.0**shift)
        if mult >= 2**multiplier_bits:
            mult, shift = mult // 2, shift - 1
        m[i], n[i] = float(mult), float(shift)
    return m, n


class _Converter:
    def __init__(self, qdq: onnx.ModelProto, profile: Profile) -> None:
        self.g, self.p = qdq.graph, profile
        self.opset = max((o.version for o in qdq.opset_import if o.domain in ("", "ai.onnx")), default=17)
        self.ir_version = qdq.ir_version
        self.inits = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.g.node:
            for t in node.input:
                self.consumers.setdefault(t, []).append(node)
        self.outputs = {o.name for o in self.g.output}
        self.code: dict[str, tuple[str, float]] = {}  # DQ output -> (code tensor, scale)
        self.const: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # DQ of an initializer -> (int, scale)
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[onnx.TensorProto] = []
        self.done: set[str] = set()  # Q/Relu nodes folded into a requant
        self.notes: list[str] = []
        self.layers: list[dict[str, Any]] = []
        self._n = 0

    # -- small builders ----------------------------------------------------------------------------
    def _name(self, base: str) -> str:
        self._n += 1
        return f"{base}__ti{self._n}"

    def _init(self, base: str, arr: np.ndarray) -> str:
        name = self._name(base)
        self.new_inits.append(numpy_helper.from_array(arr, name))
        return name

    def _keep(self, name: str) -> None:
        """Carry an initializer of the QDQ model over as it is."""
        if name in self.inits and not any(x.name == name for x in self.new_inits):
            self.new_inits.append(numpy_helper.from_array(self.inits[name], name))

    def _op(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self._name(inputs[0].split("__ti")[0] + "_" + op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self._name(out), **attrs))
        return out

    def _q_params(self, q: onnx.NodeProto) -> tuple[float, int, int, int]:
        """(scale, zero point, qmin, qmax) of a QuantizeLinear node's per-tensor output."""
        scale = float(np.ravel(self.inits[q.input[1]])[0])
        zp_arr = self.inits.get(q.input[2]) if len(q.input) > 2 else None
        zp = int(np.ravel(zp_arr)[0]) if zp_arr is not None else 0
        signed = zp_arr is None or zp_arr.dtype == np.int8 or zp_arr.dtype.kind == "i"
        bits = 8 if zp_arr is None or zp_arr.dtype.itemsize == 1 else 16
        if zp != 0:
            raise UnsupportedError(
                f"activation '{q.input[0]}' has zero point {zp}; the TI-NPU integer form takes symmetric "
                "activations (zero point 0).",
                "quantize with --target ti-npu (symmetric int8 activations).",
            )
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return scale, zp, lo, hi

    def _next_q(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type == "QuantizeLinear" and tensor not in self.outputs:
            return users[0]
        return None

    def _codes(self, node: onnx.NodeProto, tensor: str) -> tuple[str, float]:
        if tensor not in self.code:
            raise UnsupportedError(
                f"'{node.name}' ({node.op_type}) reads '{tensor}', which is not an integer activation of the "
                "quantized network (a float node or input); the TI-NPU integer form has no float path.",
                "quantize every node for --target ti-npu (no --exclude, no host-only ops), or use the QDQ output.",
            )
        return self.code[tensor]

    # -- the conversion --------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        for node in self.g.node:
            if node.op_type == "DequantizeLinear":
                self._dq(node)
        for node in self.g.node:
            if node.op_type == "DequantizeLinear" or node.name in self.done:
                continue
            if node.op_type == "QuantizeLinear":
                self._input_q(node)
            elif node.op_type in ("Conv", "Gemm", "MatMul") and node.input[1] in self.const:
                self._layer(node)
            elif node.op_type in SCALED:
                self._scaled(node)
            else:
                raise UnsupportedError(
                    f"'{node.name}' ({node.op_type}) has no integer form on the TI NPU (it runs on the host CPU "
                    "in the QDQ model).",
                    "replace the op before export (e.g. GELU -> ReLU), or use the default QDQ output.",
                )
        for out in self.g.output:  # a dequantized graph output: code * s at the boundary
            if out.name in self.code:
                code, scale = self.code[out.name]
                self._op(
                    "Mul", [code, self._init(out.name + "_scale", np.array(scale, np.float32))], out.name
                )
        return self._model()

    def _dq(self, node: onnx.NodeProto) -> None:
        src = node.input[0]
        scale = self.inits[node.input[1]]
        zp = self.inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None and np.any(zp != 0):
            raise UnsupportedError(
                f"'{node.name}' dequantizes with a non-zero zero point; the TI-NPU integer form is symmetric.",
                "quantize with --target ti-npu.",
            )
        if src in self.inits:
            self.const[node.output[0]] = (self.inits[src].astype(np.int64), scale.astype(np.float64))
        else:  # an activation: the code tensor is the Q output, kept as a float tensor of integers
            self.code[node.output[0]] = (src, float(np.ravel(scale)[0]))

    def _input_q(self, q: onnx.NodeProto) -> None:
        """A QuantizeLinear of a graph input (the boundary): quantize, then hold the codes as float."""
        if q.input[0] not in {i.name for i in self.g.input}:
            raise UnsupportedError(
                f"QuantizeLinear '{q.name}' quantizes '{q.input[0]}', the output of a node the integer form "
                "did not fold (a float node inside the network).",
                "quantize every node for --target ti-npu, or use the default QDQ output.",
            )
        self._q_params(q)
        for t in q.input[1:]:
            self._keep(t)
        raw = self._name(q.output[0] + "_int")
        self.nodes.append(helper.make_node("QuantizeLinear", list(q.input), [raw], name=self._name(q.name)))
        self._op("Cast", [raw], q.output[0], to=TensorProto.FLOAT)

    def _fused_tail(self, out: str) -> tuple[onnx.NodeProto | None, bool]:
        """The QuantizeLinear after ``out`` (through one ReLU, fused into the clip) and whether a ReLU was fused."""
        users = self.consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Relu" and out not in self.outputs:
            q = self._next_q(users[0].output[0])
            if q is not None:
                self.done.add(users[0].name)
                return q, True
        return self._next_q(out), False

    def _layer(self, node: onnx.NodeProto) -> None:
        x_code, s_x = self._codes(node, node.input[0])
        w_q, s_w = self.const[node.input[1]]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and (attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            raise UnsupportedError(f"Gemm '{node.name}' has alpha/beta != 1.", "fold them into the weights.")
        trans_b = node.op_type == "Gemm" and attrs.get("transB", 0) == 1
        out_axis = 0 if node.op_type == "Conv" or trans_b else 1
        cout = w_q.shape[out_axis]
        s_w = np.broadcast_to(s_w.reshape(-1), (cout,)).astype(np.float64)
        acc_scale = s_x * s_w
        bias = np.zeros(cout, np.int64)
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] in self.const:
                b_q, s_b = self.const[node.input[2]]
                bias = np.round(b_q.reshape(-1) * np.broadcast_to(s_b.reshape(-1), (cout,)) / acc_scale)
            elif node.input[2] in self.inits:
                bias = np.round(self.inits[node.input[2]].astype(np.float64).reshape(-1) / acc_scale)
            else:
                raise UnsupportedError(f"'{node.name}' has a computed bias.", "use a constant bias.")
            bias = bias.astype(np.int64)
        bound = 128.0 * np.abs(w_q).reshape(cout, -1).sum(axis=1) if out_axis == 0 else None
        if bound is None:
            bound = 128.0 * np.abs(w_q).sum(axis=0)
        if float(bound.max()) >= EXACT_ACC:
            self.notes.append(
                f"ti-npu-int: '{node.name}' accumulators can reach {float(bound.max()):.3g} >= 2^24, where "
                "float32 Conv/Gemm may round them."
            )
        w_name = self._init(node.input[1] + "_int", w_q.astype(np.int8))
        w_f = self._op("Cast", [w_name], to=TensorProto.FLOAT)
        keep = {k: v for k, v in attrs.items() if k not in ("alpha", "beta")}
        acc = self._op(node.op_type, [x_code, w_f], **keep)
        acc64 = self._op("Cast", [acc], to=TensorProto.DOUBLE)
        shape = [cout] + ([1] * (w_q.ndim - 2) if node.op_type == "Conv" else [])
        q, relu = self._fused_tail(node.output[0])
        if q is None:  # the last layer, left float by the QDQ model: (acc + b) * s_x * s_w at the boundary
            if node.output[0] not in self.outputs:
                raise UnsupportedError(
                    f"'{node.name}' output '{node.output[0]}' is neither quantized nor a graph output.",
                    "quantize the whole network for --target ti-npu, or use the QDQ output.",
                )
            summed = self._op("Add", [acc64, self._init("bias", bias.astype(np.float64).reshape(shape))])
            real = self._op("Mul", [summed, self._init("acc_scale", acc_scale.reshape(shape))])
            self._op("Cast", [real], node.output[0], to=TensorProto.FLOAT)
            self._record(node, cout, bias, None, None, _bits(w_q))
            return
        s_y, _, lo, hi = self._q_params(q)
        mult, shift = requant_params(acc_scale / s_y, self.p.multiplier_bits or 8)
        offset = bias + np.where(shift > 0, np.round(2.0 ** (shift - 1) / mult), 0).astype(np.int64)
        t = self._op("Add", [acc64, self._init("bias_offset", offset.astype(np.float64).reshape(shape))])
        t = self._op("Mul", [t, self._init("multiplier", mult.reshape(shape))])
        t = self._op("Div", [t, self._init("shift", (2.0**shift).reshape(shape))])
        t = self._op("Floor", [t])
        t = self._clip(t, 0 if relu else lo, hi)
        self._op("Cast", [t], q.output[0], to=TensorProto.FLOAT)
        self.done.add(q.name)
        self._record(node, cout, bias, mult, shift, _bits(w_q))

    def _clip(self, t: str, lo: int, hi: int) -> str:
        return self._op(
            "Clip",
            [t, self._init("lo", np.array(lo, np.float64)), self._init("hi", np.array(hi, np.float64))],
        )

    def _record(
        self, node: onnx.NodeProto, cout: int, bias: np.ndarray, mult: Any, shift: Any, w_bits: int = 8
    ) -> None:
        width = self.p.bias_bits.get(w_bits, 32)
        if int(np.abs(bias).max(initial=0)) > 2 ** (width - 1) - 1:
            self.notes.append(
                f"ti-npu-int: '{node.name}' bias needs more than the target's {width} bits on some channel "
                "(the compliance report names them)."
            )
        self.layers.append({
            "node": node.name, "channels": int(cout), "bias_max_abs": int(np.abs(bias).max(initial=0)),
            "bias_bits_needed": int(np.abs(bias).max(initial=0)).bit_length() + 1, "bias_width": width,
            "multipliers": sorted({int(m) for m in mult}) if mult is not None else None,
            "shifts": sorted({int(s) for s in shift}) if shift is not None else None,
        })  # fmt: skip

    def _scaled(self, node: onnx.NodeProto) -> None:
        """An op on codes: inputs times s_in / s_out, the op, then round (half to even) and clip."""
        q = self._next_q(node.output[0])
        if q is None:
            raise UnsupportedError(
                f"'{node.name}' ({node.op_type}) output is not quantized in the QDQ model.",
                "quantize the whole network for --target ti-npu, or use the QDQ output.",
            )
        s_y, _, lo, hi = self._q_params(q)
        inputs, exact = [], node.op_type not in ("Add", "AveragePool", "GlobalAveragePool")
        for i, t in enumerate(node.input):
            if i > 0 and (t in self.inits or not t):
                inputs.append(t)  # Reshape's shape, Squeeze axes
                self._keep(t)
                continue
            code, s_in = self._codes(node, t)
            ratio = s_in / s_y
            if ratio != 1.0:
                exact = False
                code = self._op("Mul", [code, self._init("ratio", np.array(ratio, np.float32))])
            inputs.append(code)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out = self._op(node.op_type, inputs, **attrs)
        if not exact:
            out = self._op("Round", [out])  # half to even, as the QDQ model's QuantizeLinear
        lo_hi = self._clip32(out, lo, hi)
        self._op("Identity", [lo_hi], q.output[0])
        self.done.add(q.name)

    def _clip32(self, t: str, lo: int, hi: int) -> str:
        return self._op(
            "Clip",
            [t, self._init("lo", np.array(lo, np.float32)), self._init("hi", np.array(hi, np.float32))],
        )

    def _model(self) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, self.g.name + "_ti_npu_int", list(self.g.input), list(self.g.output), self.new_inits
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", max(self.opset, 13))])
        m.ir_version = self.ir_version or 8
        return m


def _bits(w_q: np.ndarray) -> int:
    """The narrowest signed width (2, 4, 8) holding every integer weight."""
    return next((b for b in (2, 4, 8) if -(2 ** (b - 1)) <= w_q.min() and w_q.max() < 2 ** (b - 1)), 8)


def to_ti_npu_int(
    qdq: onnx.ModelProto, profile: Profile
) -> tuple[onnx.ModelProto, list[str], list[dict[str, Any]]]:
    """The integer-only TI-NPU form of a QDQ model quantized for ``profile`` (``ti-npu``).

    Args:
        qdq: EdgeQuant's QDQ model for ``--target ti-npu`` (symmetric int8 activations, per-channel
            symmetric weights; a float last layer allowed).
        profile: the ``ti-npu`` profile (``multiplier_bits``, bias widths).

    Returns:
        (model, notes, layers): a model with float32 inputs/outputs like ``qdq`` whose inside holds
        integer codes (no DequantizeLinear); notes on accumulators above 2^24; per conv/FC layer its
        bias magnitude, multipliers and shifts.

    Raises:
        UnsupportedError: a node without an integer form (host op, float node, asymmetric tensor).
    """
    conv = _Converter(qdq, profile)
    model = conv.run()
    onnx.checker.check_model(model)
    return model, conv.notes, conv.layers
