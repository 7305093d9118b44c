"""Plan + ranges -> a standard ONNX QDQ model that ONNX Runtime runs.

* weight ``W`` (float initializer) -> integer initializer ``W_q`` + ``W_scale``/``W_zp`` and
  ``DequantizeLinear(W_q) -> W_dq`` (``axis`` per channel, ``axis``+``block_size`` per block);
* activation ``X`` -> ``QuantizeLinear(X) -> X_q -> DequantizeLinear -> X_dq``; quantized consumers
  read ``X_dq``, everything else keeps reading ``X`` -- except after a quantized op that ORT fuses into
  an integer kernel (``_FUSED_OPS``), where every consumer reads ``X_dq`` so the Q is the op's only
  consumer;
* the bias of a quantized Conv/Gemm with an 8-bit input and an 8-bit, binary, ternary or 2-bit weight
  (int8 containers; per tensor or per channel) becomes int32 with scale ``s_x · s_w`` and zero point 0,
  the form ORT's QDQ fusion needs to run QLinearConv / QGemm (``planning.int_kernels.writes_int32_bias``:
  next to 4-bit weights, which ORT runs in float, it stays float); a bias that would overflow int32 stays
  float, with a note.

The ``_dq`` suffix is a contract: ``evaluate.per_layer`` pairs ``X_dq`` with the float ``X``.
1- and 2-bit (binary, ternary) weights are stored in int8 containers; the packed size
(``export.sizes``) counts 1 or 2 bits.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from edgequant.errors import ExportError
from edgequant.export.embedding import gather_rows, is_row_table
from edgequant.export.layout_tail import close_layout_tails
from edgequant.model.io import opset_of, weightless_copy
from edgequant.model.patterns import names_read
from edgequant.plan import QuantPlan, TensorEntry
from edgequant.planning.int_kernels import writes_int32_bias
from edgequant.schemes.qparams import qparams_from_range, quantize, quantize_fixed, quantize_weight
from edgequant.schemes.spec import Granularity, QuantSpec

_INT32 = np.iinfo(np.int32)
# ops ORT fuses with the DQ before and the Q after into one integer kernel (QLinearConv, QLinearAdd, ...)
_FUSED_OPS = {
    "Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "Sigmoid", "Softmax", "GlobalAveragePool",
    "AveragePool", "LeakyRelu",
}  # fmt: skip


def onnx_int_type(spec: QuantSpec) -> int:
    container = {1: 8, 2: 8, 4: 4, 8: 8, 16: 16}[spec.bits]
    table = {
        (4, True): TensorProto.INT4,
        (4, False): TensorProto.UINT4,
        (8, True): TensorProto.INT8,
        (8, False): TensorProto.UINT8,
        (16, True): TensorProto.INT16,
        (16, False): TensorProto.UINT16,
    }
    return table[(container, spec.signed)]


def _int_tensor(name: str, values: np.ndarray, spec: QuantSpec) -> onnx.TensorProto:
    dtype = onnx_int_type(spec)
    if dtype in (TensorProto.INT4, TensorProto.UINT4):
        return helper.make_tensor(name, dtype, values.shape, values.astype(np.int64).reshape(-1).tolist())
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    return numpy_helper.from_array(values.astype(np_type), name)


def _dq_attrs(spec: QuantSpec) -> dict[str, Any]:
    if spec.granularity is Granularity.PER_TENSOR:
        return {}
    assert spec.axis is not None
    attrs: dict[str, Any] = {"axis": spec.axis}
    if spec.granularity is Granularity.PER_BLOCK:
        assert spec.block_size is not None
        attrs["block_size"] = spec.block_size
    return attrs


class _Names:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
        self.used |= {i.name for i in graph.input} | {n.name for n in graph.node}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def export_qdq(
    model: onnx.ModelProto,
    plan: QuantPlan,
    float_readers: Collection[str] = (),
    weight_params: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Build the QDQ model; returns it and the plan with scales and zero points filled in.

    ``weight_params`` gives (scale, zero point) for weights and activations whose parameters were
    chosen elsewhere (learned by quantization-aware training); the others get ``quantize_weight``'s
    and ``qparams_from_range``'s.

    Nodes in ``float_readers`` read the float ``X`` even after an integer op (which then keeps its
    output in float as well as feeding the Q): nodes kept float for accuracy, whose error would
    otherwise come in through their inputs.
    """
    out = weightless_copy(
        model
    )  # big float weights are read from ``model``; those still used go back at the end
    plan = QuantPlan.from_dict(plan.to_dict())
    g = out.graph
    if opset_of(out) < plan.opset:
        raise ExportError(
            f"the plan needs opset {plan.opset} but the model is at opset {opset_of(out)}.",
            "this is a bug in the pipeline: the opset should have been raised before export.",
        )
    _fold_relus(out, plan)
    names = _Names(g)
    inits = {t.name: t for t in model.graph.initializer}
    quantized = {d.node for d in plan.quantized_nodes if d.graph == "main"}
    rename: dict[tuple[int, int], str] = {}  # (node index, input slot) -> new input name
    new_inits: list[onnx.TensorProto] = []
    head: list[onnx.NodeProto] = []
    after: dict[str, list[onnx.NodeProto]] = {}
    params: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    consumers: dict[str, list[tuple[int, int]]] = {}
    for ni, node in enumerate(g.node):
        for si, name in enumerate(node.input):
            consumers.setdefault(name, []).append((ni, si))

    def rewire(src: str, dst: str, every: bool = False) -> None:
        for ni, si in consumers.get(src, []):
            name = g.node[ni].name
            if name in quantized or (every and name not in float_readers):
                rename[(ni, si)] = dst

    for entry in plan.tensors.values():
        if entry.role not in ("weight", "constant"):
            continue
        if entry.name not in inits:
            raise ExportError(
                f"weight '{entry.name}' in the plan is not an initializer.", "re-run the planner."
            )
        w = numpy_helper.to_array(inits[entry.name]).astype(np.float32)
        if entry.role == "weight" and entry.scale is not None and entry.zero_point is not None:
            q, scale, zero = quantize_fixed(w, entry.spec, entry.scale, entry.zero_point)  # set by a pass
        elif weight_params and entry.name in weight_params:
            scale, zero = (np.asarray(a) for a in weight_params[entry.name])
            if entry.spec.granularity is Granularity.PER_TENSOR:
                scale, zero = scale.reshape(()), zero.reshape(())
            q = quantize(w, scale, zero, entry.spec)
        else:
            q, scale, zero = quantize_weight(w, entry.spec)
        params[entry.name] = (scale, zero)
        _fill(entry, scale, zero)
        q_name, s_name, z_name = (names.fresh(f"{entry.name}{s}") for s in ("_q", "_scale", "_zp"))
        dq_name = names.fresh(f"{entry.name}_dq")
        new_inits += [
            _int_tensor(q_name, q, entry.spec),
            numpy_helper.from_array(scale.astype(np.float32), s_name),
            _int_tensor(z_name, zero, entry.spec),
        ]
        readers = [(ni, si) for ni, si in consumers.get(entry.name, []) if g.node[ni].name in quantized]
        tables = [ni for ni, si in readers if is_row_table(entry, g.node[ni], si)]
        # a weight that unquantized nodes read too (weight-only: Gather(E) and Transpose(E) of a tied head)
        # is stored once: those readers get its DQ instead of a second, float copy
        others = [
            g.node[ni].name
            for ni, _ in consumers.get(entry.name, [])
            if g.node[ni].name not in quantized and g.node[ni].name not in float_readers
        ]
        shared = bool(others) and entry.role == "weight"
        if shared:
            plan.notes.append(
                f"weight '{entry.name}' is also read by {', '.join(others)}; it is quantized once and those "
                "nodes read its dequantized copy, so the file stores it once."
            )
        if len(tables) < len(readers) or not readers or shared:  # a tied head reads the same tensor's DQ
            head.append(
                helper.make_node(
                    "DequantizeLinear",
                    [q_name, s_name, z_name],
                    [dq_name],
                    name=dq_name,
                    **_dq_attrs(entry.spec),
                )
            )
            rewire(entry.name, dq_name, every=shared)
        for ni in tables:  # an embedding table: the integer rows are gathered, then dequantized
            rename.pop((ni, 0), None)
            node = g.node[ni]
            after.setdefault(node.name, []).extend(
                gather_rows(node, q_name, scale, zero, names.fresh, new_inits)
            )

    producers = {o: n.name for n in g.node for o in n.output}
    quantized_outputs = {
        o for n in g.node if n.name in quantized and n.op_type in _FUSED_OPS for o in n.output
    }
    for entry in list(plan.tensors.values()):
        if entry.role != "activation":
            continue
        # after a quantized op that ORT runs as an integer kernel every consumer reads X_dq, so that
        # op's only consumer is the Q that ORT fuses into it.  (A pair that nobody reads is still
        # written: dropping one beside a Loop made ORT 1.32 abort at load: test_tf_import LSTM+GRU.)
        every = entry.name in quantized_outputs
        if entry.lo is None or entry.hi is None:
            raise ExportError(
                f"activation '{entry.name}' has no calibrated range.", "calibrate before export."
            )
        if weight_params and entry.name in weight_params:
            scale, zero = (np.asarray(a).reshape(()) for a in weight_params[entry.name])
        else:
            scale, zero = qparams_from_range(entry.lo, entry.hi, entry.spec)
        params[entry.name] = (scale, zero)
        _fill(entry, scale, zero)
        s_name, z_name = names.fresh(f"{entry.name}_scale"), names.fresh(f"{entry.name}_zp")
        q_name, dq_name = names.fresh(f"{entry.name}_q"), names.fresh(f"{entry.name}_dq")
        new_inits += [
            numpy_helper.from_array(scale.reshape(()).astype(np.float32), s_name),
            _int_tensor(z_name, zero.reshape(()), entry.spec),
        ]
        pair = [
            helper.make_node("QuantizeLinear", [entry.name, s_name, z_name], [q_name], name=q_name),
            helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_name], name=dq_name),
        ]
        producer = producers.get(entry.name)
        if producer is None:
            head.extend(pair)
        else:
            after.setdefault(producer, []).extend(pair)
        rewire(entry.name, dq_name, every=every)

    plan.notes.extend(_quantize_biases(g, plan, params, inits, rename, new_inits, head, names, quantized))

    nodes: list[onnx.NodeProto] = list(head)
    for ni, node in enumerate(g.node):
        for si in range(len(node.input)):
            if (ni, si) in rename:
                node.input[si] = rename[(ni, si)]
        nodes.append(node)
        nodes.extend(after.get(node.name, []))
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    plan.notes.extend(close_layout_tails(g, opset_of(out), names.fresh))
    drop_unused_initializers(g)
    for t in g.initializer:  # the big float tensors that stay float
        if external_data_helper.uses_external_data(t) and t.name in inits:
            t.CopyFrom(inits[t.name])
    return out, plan


def _fold_relus(model: onnx.ModelProto, plan: QuantPlan) -> None:
    """Drop a Relu whose input and output are quantized on one grid that starts at 0.

    ``X -> Relu -> Y`` with Y's zero point at the grid minimum: quantizing X on Y's grid already
    clamps negatives to 0, so the Relu is a no-op.  The producer writes Y directly, X's entry goes,
    and ORT runs the producer as an integer op straight into its consumers (as ORT's own tool does).
    """
    g = model.graph
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    drop = []
    for node in g.node:
        if node.op_type != "Relu" or node.input[0] in outputs or consumers.get(node.input[0]) != 1:
            continue
        x, y = plan.tensors.get(node.input[0]), plan.tensors.get(node.output[0])
        if x is None or y is None or x.role != "activation" or y.role != "activation" or x.spec != y.spec:
            continue
        if y.lo is None or y.hi is None or node.input[0] not in producer:
            continue
        _scale, zero = qparams_from_range(y.lo, y.hi, y.spec)
        if int(zero.reshape(-1)[0]) != y.spec.qmin:
            continue
        src = producer[node.input[0]]
        src.output[list(src.output).index(node.input[0])] = node.output[0]
        del plan.tensors[node.input[0]]
        plan.decide(
            node.name, "Relu", True, "folded into the quantization of its input (zero point = grid minimum)."
        )
        drop.append(node)
    for node in drop:
        g.node.remove(node)


def _fill(entry: TensorEntry, scale: np.ndarray, zero: np.ndarray) -> None:
    entry.scale = [float(v) for v in np.asarray(scale).reshape(-1)]
    entry.zero_point = [int(v) for v in np.asarray(zero).reshape(-1)]


def _quantize_biases(
    g: onnx.GraphProto,
    plan: QuantPlan,
    params: dict[str, tuple[np.ndarray, np.ndarray]],
    inits: dict[str, onnx.TensorProto],
    rename: dict[tuple[int, int], str],
    new_inits: list[onnx.TensorProto],
    head: list[onnx.NodeProto],
    names: _Names,
    quantized: set[str],
) -> list[str]:
    notes: list[str] = []
    for ni, node in enumerate(g.node):
        if node.op_type not in ("Conv", "Gemm") or node.name not in quantized or len(node.input) < 3:
            continue
        x, w, b = node.input[0], node.input[1], node.input[2]
        if b not in inits or x not in params or w not in params:
            continue
        if not writes_int32_bias(node.op_type, plan.tensors[w].spec, plan.tensors[x].spec):
            continue  # 16-bit inputs, 4-bit or per-block weights, a ConvTranspose: the bias stays float
        bias = numpy_helper.to_array(inits[b]).astype(np.float64).reshape(-1)
        s_w = params[w][0].astype(np.float64).reshape(-1)
        s_x = float(params[x][0].reshape(-1)[0])
        per_channel = s_w.size == bias.size and s_w.size > 1
        scale = s_x * (s_w if per_channel else s_w[:1])  # one scale per channel, or one for all
        q = np.round(bias / scale)
        if np.any(np.abs(q) > _INT32.max):
            notes.append(f"bias '{b}' of '{node.name}' would overflow int32 at scale s_x·s_w; kept float.")
            plan.tensors.pop(b, None)  # an int32 entry from an earlier export (int_kernels reads it)
            continue
        shape: tuple[int, ...] = (bias.size,) if per_channel else ()
        q_name, s_name, z_name = names.fresh(f"{b}_q"), names.fresh(f"{b}_scale"), names.fresh(f"{b}_zp")
        dq_name = names.fresh(f"{b}_dq")
        new_inits += [
            numpy_helper.from_array(q.astype(np.int32), q_name),
            numpy_helper.from_array(scale.reshape(shape).astype(np.float32), s_name),
            numpy_helper.from_array(np.zeros(shape, np.int32), z_name),
        ]
        axis: dict[str, Any] = (
            {"axis": 0} if per_channel else {}
        )  # a scalar scale is valid at every opset; axis needs 13
        head.append(
            helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_name], name=dq_name, **axis)
        )
        rename[(ni, 2)] = dq_name
        plan.tensors[b] = TensorEntry(
            b,
            "bias",
            QuantSpec(bits=32, signed=True, symmetric=True),
            scale=[float(v) for v in scale],
            zero_point=[0] * scale.size,
            note="int32 bias, scale = s_x * s_w, zero point 0",
        )
    return notes


def drop_unused_initializers(g: onnx.GraphProto) -> None:
    """Remove the initializers (and initializer-backed inputs) that no node, subgraph or output reads."""
    used = names_read(g) | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)
    inputs = [i for i in g.input if i.name in used or i.name not in {t.name for t in keep}]
    del g.input[:]
    g.input.extend(inputs)


def fake_quant_reference(x: np.ndarray, entry: TensorEntry) -> np.ndarray:
    """What ``DQ(Q(x))`` computes for an activation entry (used by tests and per-layer analysis)."""
    assert entry.lo is not None and entry.hi is not None
    scale, zero = qparams_from_range(entry.lo, entry.hi, entry.spec)
    q = quantize(x, scale, zero, entry.spec)
    return ((q - zero.reshape(())) * scale.reshape(())).astype(np.float32)
