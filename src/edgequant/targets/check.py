"""Check a QDQ ONNX model (EdgeQuant's or another tool's) against a target profile.

Every node gets its op kind (``targets.kinds``); each rule it breaks is a ``Finding`` naming the
node, the op, the rule, what was found, what is required, the consequence and a fix:

* op support: a kind the profile does not run -> the profile's ``unsupported`` consequence;
* shape limits (channels, features, kernel, stride) -> the same consequence (the accelerator
  cannot map that layer);
* quantization (weight/activation bits, signedness, symmetry, granularity, power-of-two scales,
  narrow range, bias width) -> ``cannot deploy`` as quantized: re-quantize for the target;
* a node the target runs whose inputs are float (no DequantizeLinear) -> runs on the host.

The summary counts MACs and weight parameters on the accelerator (nodes without findings) against
those that fall back or block deployment.  A model without any Q/DQ is refused: there is nothing
quantized to check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from edgequant.errors import ModelError
from edgequant.targets import Profile, get
from edgequant.targets.kinds import COMPUTE_KINDS, QDQ_OPS, GraphView

CONSEQUENCE = {"host": "runs on host CPU", "error": "cannot deploy"}
INT_BITS: dict[int, tuple[int, bool]] = {
    onnx.TensorProto.INT8: (8, True), onnx.TensorProto.UINT8: (8, False), onnx.TensorProto.INT4: (4, True),
    onnx.TensorProto.UINT4: (4, False), onnx.TensorProto.INT16: (16, True), onnx.TensorProto.UINT16: (16, False),
    onnx.TensorProto.INT32: (32, True),
}  # fmt: skip
OP_FIXES = {
    "gelu": "replace GELU with ReLU or HardSwish before export",
    "sigmoid": "keep it on the host, or replace it with a hard sigmoid the target runs",
    "softmax": "drop the final softmax from the deployed graph (argmax is unchanged) or run it on the host",
}


@dataclass(frozen=True)
class Finding:
    node: str
    op: str
    kind: str
    rule: str
    found: str
    required: str
    consequence: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _pow2(scale: np.ndarray) -> bool:
    s = np.asarray(scale, dtype=np.float64)
    return bool(np.all(s > 0) and np.all(np.log2(s) == np.round(np.log2(s))))


class _Checker:
    def __init__(self, model: onnx.ModelProto, p: Profile) -> None:
        self.v, self.p = GraphView(model), p
        self.findings: list[Finding] = []

    def add(
        self, node: onnx.NodeProto, kind: str, rule: str, found: str, required: str, cons: str, fix: str
    ) -> None:
        self.findings.append(Finding(node.name, node.op_type, kind, rule, found, required, cons, fix))

    def run(self) -> dict[str, Any]:
        v, p = self.v, self.p
        rows = []
        for node in v.nodes:
            kind = v.kind(node)
            before = len(self.findings)
            rule = p.op(kind)
            unsupported = CONSEQUENCE[p.unsupported]
            if rule is None or not rule.runs:
                runs_on = ", ".join(k for k, r in p.ops.items() if r.runs and k not in COMPUTE_KINDS)
                fix = OP_FIXES.get(
                    kind,
                    f"keep {node.op_type} on the host, or replace it with an op {p.name} runs ({runs_on})",
                )
                self.add(
                    node,
                    kind,
                    "op support",
                    f"{node.op_type} ({kind})",
                    f"an op {p.name} runs",
                    unsupported,
                    fix,
                )
            else:
                self._limits(node, kind, rule, unsupported)
                self._quantization(node, kind)
            macs, params = v.macs_params(node, kind)
            rows.append((node, kind, macs, params, len(self.findings) == before))
        return self._summary(rows)

    # -- shape limits ---------------------------------------------------------------------------
    def _limits(self, node: onnx.NodeProto, kind: str, rule: Any, unsupported: str) -> None:
        w = self.v.weight(node)
        dims: dict[str, int] = {}
        attrs = {a.name: a for a in node.attribute}
        bits = self._weight_bits(w) if w is not None else None
        if node.op_type in ("Conv", "ConvTranspose") and w is not None and w.values.ndim >= 3:
            group = attrs["group"].i if "group" in attrs else 1
            dims["out_channels"] = int(w.values.shape[0]) * (group if node.op_type == "ConvTranspose" else 1)
            dims["in_channels"] = int(w.values.shape[1]) * (group if node.op_type == "Conv" else 1)
            k = [*list(w.values.shape[2:]), 1]
            dims["kernel_h"], dims["kernel_w"] = int(k[0]), int(k[1])
        elif kind == "fc" and w is not None:
            trans_b = attrs["transB"].i if "transB" in attrs else 0
            dims["in_features"] = int(w.values.shape[1] if trans_b else w.values.shape[0])
        elif node.op_type in ("MaxPool", "AveragePool") and "kernel_shape" in attrs:
            k = [*list(attrs["kernel_shape"].ints), 1]
            dims["kernel_h"], dims["kernel_w"] = int(k[0]), int(k[1])
        for key, limit in rule.limits.items():
            if key not in dims:
                continue
            need = limit.violation(dims[key], bits)  # every requirement it breaks, in one finding
            if need:
                fix = self._fix(key, dims[key], limit, need, limit.smallest_compliant(dims[key], bits))
                self.add(node, kind, key, str(dims[key]), need, unsupported, fix)
        if rule.strides is not None and "strides" in attrs:
            s = tuple([*list(attrs["strides"].ints), 1])[:2]
            if s not in {tuple(x) for x in rule.strides}:
                allowed = " or ".join("x".join(map(str, x)) for x in rule.strides)
                self.add(
                    node,
                    kind,
                    "strides",
                    "x".join(map(str, s)),
                    allowed,
                    unsupported,
                    f"use stride {allowed}",
                )

    @staticmethod
    def _fix(key: str, value: int, limit: Any, need: str, to: int | None) -> str:
        if (
            to is not None
            and limit.multiple
            and value % limit.multiple
            and key in ("out_channels", "in_channels")
        ):
            side = (
                "output channels" if key == "out_channels" else "input channels (and the producer's outputs)"
            )
            return f"pad {side} {value} -> {to} with zero filters (exact; --fix)"
        if key == "kernel_h" and limit.max is not None:
            return (
                f"split the {value}-tall kernel into parts of at most {limit.max} rows, summed (exact; --fix)"
            )
        if key == "in_features":
            return (
                f"widen the layer before it so the FC gets {to if to is not None else need} inputs ({need})"
            )
        if key == "in_channels" and limit.exact is not None:
            return f"give this conv {limit.exact} input channel(s) (e.g. one conv per input channel), or run it on the host"
        return f"change {key.replace('_', ' ')} to {need}"

    # -- quantization -----------------------------------------------------------------------------
    @staticmethod
    def _weight_bits(w: Any) -> int:
        if w.scale is None:
            return 32
        vals = w.values.astype(np.int64)
        if vals.size and np.all(np.abs(vals) == 1):  # codes {-1, +1}: binary
            return 1
        for b in (2, 4, 8, 16):
            if vals.min() >= -(2 ** (b - 1)) and vals.max() <= 2 ** (b - 1) - 1:
                return b
        return 32

    def _quantization(self, node: onnx.NodeProto, kind: str) -> None:
        v, p = self.v, self.p
        requant = f"re-quantize with --target {p.name}"
        data_slots = [0] if kind in COMPUTE_KINDS and kind != "matmul" else range(len(node.input))
        float_inputs = [
            node.input[i] for i in data_slots
            if i < len(node.input) and node.input[i] and v.const(node.input[i]) is None
            and not v.is_dequantized(node.input[i]) and not self._fused(node.input[i])
        ]  # fmt: skip
        if float_inputs and p.float_ops == "runs":
            return
        if float_inputs and node.op_type not in QDQ_OPS:
            self.add(node, kind, "quantized", f"float input '{float_inputs[0]}'", "integer inputs (Q/DQ)",
                     CONSEQUENCE["host"], f"quantize this node ({requant}; check --exclude)")  # fmt: skip
            return
        for i in data_slots:
            if i < len(node.input) and node.input[i] and v.is_dequantized(node.input[i]):
                self._activation(node, kind, node.input[i], requant)
        if kind not in COMPUTE_KINDS or kind == "matmul":
            return
        w = v.weight(node)
        if w is None:
            return
        if w.scale is None:
            self.add(
                node,
                kind,
                "weights quantized",
                "float weights",
                "integer weights",
                CONSEQUENCE["error"],
                requant,
            )
            return
        r, bits = p.weights, self._weight_bits(w)
        cons = CONSEQUENCE["error"]
        if bits not in r.bits:
            self.add(
                node, kind, "weight bits", f"{bits}-bit", "/".join(map(str, r.bits)) + "-bit", cons, requant
            )
        zero = np.zeros(1) if w.zero_point is None else w.zero_point
        if True in r.symmetric and False not in r.symmetric and np.any(zero != 0):
            self.add(
                node, kind, "weight symmetry", "zero point != 0", "symmetric (zero point 0)", cons, requant
            )
        gran = "per_channel" if np.size(w.scale) > 1 else "per_tensor"
        if gran not in r.granularity:
            self.add(node, kind, "weight granularity", gran, " or ".join(r.granularity), cons, requant)
        if r.scale.get(bits) == "power_of_two" and not _pow2(w.scale):
            self.add(node, kind, "weight scale", "float scale", "power of two", cons, requant)
        if r.narrow_range and int(w.values.min()) == -(2 ** (bits - 1)):
            self.add(
                node,
                kind,
                "weight range",
                f"{w.values.min()} used",
                f"[-{2 ** (bits - 1) - 1}, {2 ** (bits - 1) - 1}]",
                cons,
                requant,
            )
        self._bias(node, kind, bits, requant)

    def _fused(self, tensor: str) -> bool:
        """A Relu/Clip input produced straight by a compute op: the activation is fused into it."""
        prod = self.v.producer.get(tensor)
        return prod is not None and self.v.kind(prod) in COMPUTE_KINDS

    def _activation(self, node: onnx.NodeProto, kind: str, tensor: str, requant: str) -> None:
        params = self.v.dq_params(tensor)
        if params is None:
            return
        scale, zero, _, dtype = params
        bits, signed = INT_BITS.get(dtype, (0, False))
        r, cons = self.p.activations, CONSEQUENCE["error"]
        where = f"input '{self.v.source(tensor)}'"
        if bits not in r.bits:
            self.add(
                node,
                kind,
                "activation bits",
                f"{bits}-bit {where}",
                "/".join(map(str, r.bits)) + "-bit",
                cons,
                requant,
            )
        if signed not in r.signed:
            self.add(node, kind, "activation sign", f"{'signed' if signed else 'unsigned'} {where}",
                     "signed" if r.signed[0] else "unsigned", cons, requant)  # fmt: skip
        if np.size(scale) > 1 and "per_channel" not in r.granularity:
            self.add(
                node, kind, "activation granularity", f"per-channel {where}", "per-tensor", cons, requant
            )
        if r.symmetric == (True,) and zero is not None and np.any(zero != 0):
            self.add(
                node,
                kind,
                "activation symmetry",
                f"zero point {int(np.ravel(zero)[0])} {where}",
                "0",
                cons,
                requant,
            )
        if r.scale.get(bits) == "power_of_two" and not _pow2(scale):
            self.add(
                node,
                kind,
                "activation scale",
                f"{float(np.ravel(scale)[0]):.6g} {where}",
                "power of two",
                cons,
                requant,
            )

    def _bias(self, node: onnx.NodeProto, kind: str, weight_bits: int, requant: str) -> None:
        slot = 2
        if node.op_type == "MatMul":
            return
        b = self.v.weight(node, slot)
        if b is None or weight_bits not in self.p.bias_bits:
            return
        width = self.p.bias_width(weight_bits)
        if b.scale is None:  # a float bias (next to 4/2-bit weights): its value on the accumulator grid
            w, x = self.v.weight(node), self.v.dq_params(node.input[0])
            if w is None or w.scale is None or x is None or self.p.bias_scale != "accumulator":
                return
            acc = float(np.ravel(x[0])[0]) * np.asarray(w.scale, np.float64).reshape(-1)
            vals = np.round(b.values.astype(np.float64).reshape(-1) / acc).astype(np.int64)
        else:
            vals = b.values.astype(np.int64).reshape(-1)
        if (
            self.p.bias_scale == "own_power_of_two"
        ):  # one shift k for the tensor: values = b·2^k, b on `width` bits
            k = min((int(x & -x).bit_length() - 1 for x in np.abs(vals) if x), default=0)
            vals = vals >> k
        lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
        bad = np.flatnonzero((vals < lo) | (vals > hi))
        if bad.size:
            chans = ", ".join(map(str, bad[:6])) + (", ..." if bad.size > 6 else "")
            self.add(node, kind, "bias width",
                     f"channel(s) {chans} beyond {width} bits (e.g. {int(vals[bad[0]])})", f"{width}-bit bias",
                     CONSEQUENCE["error"],
                     "no exact re-scale (the channel's weights are not multiples of 2^k and the bias does not "
                     "saturate the output): shrink the bias or widen the input scale (e.g. retrain with weight "
                     "decay on biases), or keep the layer on the host")  # fmt: skip

    def _summary(self, rows: list[tuple[onnx.NodeProto, str, int, int, bool]]) -> dict[str, Any]:
        macs = sum(r[2] for r in rows)
        params = sum(r[3] for r in rows)
        macs_ok = sum(r[2] for r in rows if r[4])
        params_ok = sum(r[3] for r in rows if r[4])
        by = {c: sum(f.consequence == c for f in self.findings) for c in CONSEQUENCE.values()}
        return {
            "target": self.p.name,
            "title": self.p.title,
            "compliant": not self.findings,
            "nodes": len(rows),
            "nodes_on_target": sum(r[4] for r in rows),
            "macs": macs,
            "macs_on_target": macs_ok,
            "mac_share_on_target": round(macs_ok / macs, 4) if macs else 1.0,
            "params": params,
            "params_on_target": params_ok,
            "param_share_on_target": round(params_ok / params, 4) if params else 1.0,
            "findings_by_consequence": by,
            "findings": [f.to_dict() for f in self.findings],
        }


def check_model(model: onnx.ModelProto, target: str | Profile) -> dict[str, Any]:
    """The compliance report of a QDQ ``model`` on ``target`` (a name or a Profile); see the module docstring.

    ModelError when the model holds no QuantizeLinear/DequantizeLinear (a float model).  Unnamed nodes
    are reported as ``<op type>_<index>`` (``model.repair.name_nodes``, on a copy).
    """
    profile = target if isinstance(target, Profile) else get(target)
    if not any(n.op_type in QDQ_OPS for n in model.graph.node):
        raise ModelError(
            "the model has no QuantizeLinear/DequantizeLinear nodes: it is a float model, so there is nothing "
            f"quantized to check against '{profile.name}'.",
            f"quantize it first: edgequant quantize MODEL -o OUT --target {profile.name}",
        )
    if any(not n.name for n in model.graph.node):  # findings name nodes: the names ``prepare`` gives
        from edgequant.model.repair import name_nodes

        named = onnx.ModelProto()
        named.CopyFrom(model)
        name_nodes(named.graph)
        model = named
    return _Checker(model, profile).run()
