"""Per-layer error of a QDQ model: where does the quantization noise come from?

Naming convention of EdgeQuant's QDQ export: a float tensor ``X`` (activation or weight) is
quantized as ``... -> DequantizeLinear -> "X_dq"`` and consumers read ``X_dq``.  So every
``DequantizeLinear`` whose output ends in ``_dq`` has the float counterpart ``X`` = the name
without ``_dq`` (a float-model initializer for weights, a node output or graph input otherwise).

1. Tensor error.  Augmented in-memory copies of both models also output every ``X`` (float) and
   ``X_dq`` (quantized); on a few samples, ``SQNR = 10 log10(sum X^2 / sum (X - X_dq)^2)`` dB and
   the MSE are computed per tensor and ranked worst (lowest SQNR) first.  An activation's error
   includes the error accumulated upstream; a weight's error is its rounding error alone.
2. Isolated error ("only this layer quantized", as AIMET's QuantAnalyzer per-layer analysis and
   ORT's ``qdq_loss_debug`` answer in part).  For each quantized node (a node reading at least one
   ``_dq`` tensor) - the ``top_k`` nodes with the worst input SQNR - a copy of the FLOAT model is
   built in which only the node of that name reads quantized inputs: the Q/DQ chains that feed it
   in the QDQ model (``X -> QuantizeLinear -> DequantizeLinear -> X_dq``, or a weight's
   ``DequantizeLinear``) are copied in, reading the float model's ``X``.  The model output's SQNR
   against the float model's output is that node's isolated error.  Starting from the float model
   (not from the QDQ model with the other nodes rewired) matters where the export changed the
   graph: a Relu folded into the unsigned quantization of its producer exists only in the float
   model, so a rewired QDQ copy would feed the unclamped values on.  Isolating no node gives the
   float model itself (infinite SQNR).

The copies live in memory only; nothing is written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.data.base import Batch
from edgequant.evaluate.layer_runs import isolated_outputs
from edgequant.evaluate.metrics import mse, sqnr_db
from edgequant.runtime import OrtRuntime

DQ_DOMAINS = ("", "ai.onnx", "com.microsoft")
SUFFIX = "_dq"


@dataclass
class TensorError:
    tensor: str
    quantized: str
    kind: Literal["activation", "weight"]
    consumers: list[str]
    sqnr_db: float
    mse: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class NodeError:
    node: str
    op_type: str
    quantized_inputs: list[str]
    input_sqnr_db: float
    output_sqnr_db: float
    output_mse: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LayerReport:
    samples: int
    output: str
    tensors: list[TensorError] = field(default_factory=list)
    isolated: list[NodeError] = field(default_factory=list)
    unmatched: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "output": self.output,
            "tensors": [t.to_dict() for t in self.tensors],
            "isolated": [n.to_dict() for n in self.isolated],
            "unmatched": list(self.unmatched),
        }


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def qdq_pairs(
    float_model: onnx.ModelProto, quant_model: onnx.ModelProto
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """``{X_dq: X}`` for every ``_dq`` DequantizeLinear output with a float counterpart, and the misses."""
    produced = {o for n in float_model.graph.node for o in n.output} | {
        i.name for i in float_model.graph.input
    }
    produced |= {i.name for i in float_model.graph.initializer}
    pairs: dict[str, str] = {}
    misses: list[dict[str, str]] = []
    for node in quant_model.graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in DQ_DOMAINS:
            continue
        out = node.output[0]
        if not out.endswith(SUFFIX) or len(out) == len(SUFFIX):
            continue
        base = out[: -len(SUFFIX)]
        if base in produced:
            pairs[out] = base
        else:
            misses.append({"tensor": out, "reason": f"the float model has no tensor named '{base}'"})
    return pairs, misses


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name in names:
        if name not in have:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return copy


def isolate(
    quant_model: onnx.ModelProto, float_model: onnx.ModelProto, pairs: dict[str, str], keep_node: int | None
) -> onnx.ModelProto | None:
    """Copy of ``float_model`` where only the node ``keep_node`` (an index into ``quant_model``) reads
    its quantized inputs (module docstring); None when the float model has no node of that name.

    ``float_model`` must be at ``quant_model``'s opset (``per_layer_error`` converts it).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(float_model)
    if keep_node is None:
        return copy
    qnode = quant_model.graph.node[keep_node]
    fnode = next((n for n in copy.graph.node if qnode.name and n.name == qnode.name), None)
    if fnode is None or fnode.op_type != qnode.op_type:
        return None
    producer = {o: n for n in quant_model.graph.node for o in n.output}
    q_inits = {i.name: i for i in quant_model.graph.initializer}
    chain: list[onnx.NodeProto] = []
    for j, name in enumerate(qnode.input):
        if name not in pairs or j >= len(fnode.input) or fnode.input[j] != pairs[name]:
            continue
        dq = producer[name]
        q = producer.get(dq.input[0])
        chain += [q, dq] if q is not None and q.op_type == "QuantizeLinear" else [dq]
        fnode.input[j] = name
    g = copy.graph
    have = {i.name for i in g.initializer}
    for n in dict.fromkeys(id(n) for n in chain):
        node = next(c for c in chain if id(c) == n)
        for inp in node.input:
            if inp in q_inits and inp not in have:
                g.initializer.append(q_inits[inp])
                have.add(inp)
    at = list(g.node).index(fnode)
    unique = list({id(n): n for n in chain}.values())
    nodes = [*g.node[:at], *unique, *g.node[at:]]
    del g.node[:]
    g.node.extend(nodes)
    return copy


def _same_opset(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> onnx.ModelProto:
    """``float_model`` at the QDQ model's default-domain opset (the export may have raised it)."""
    from edgequant.model import ensure_opset
    from edgequant.model.io import opset_of

    converted, _ = ensure_opset(float_model, opset_of(quant_model), "the per-layer analysis")
    return converted


def _run_all(
    model: onnx.ModelProto, samples: list[Batch], fetch: list[str], rt: OrtRuntime
) -> dict[str, list[np.ndarray]]:
    """Per fetched name, its value for every batch (float64)."""
    session = rt.session(model, what="an augmented copy of the model for per-layer analysis")
    try:
        parts: dict[str, list[np.ndarray]] = {n: [] for n in fetch}
        for batch in samples:
            got = session.run(batch, fetch)
            for n in fetch:
                parts[n].append(np.asarray(got[n], np.float64))
    finally:
        session.close()
    return parts


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([p.reshape(-1) for p in parts])


def per_layer_error(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    samples: list[Batch],
    *,
    top_k: int = 10,
    output: str | None = None,
    runtime: OrtRuntime | None = None,
) -> LayerReport:
    """Tensor errors (worst first) and isolated errors of the ``top_k`` worst quantized nodes."""
    rt = runtime or OrtRuntime()
    out_name = output or float_model.graph.output[0].name
    pairs, misses = qdq_pairs(float_model, quant_model)
    float_inits = {i.name for i in float_model.graph.initializer}
    report = LayerReport(
        samples=sum(len(next(iter(b.values()))) for b in samples), output=out_name, unmatched=misses
    )
    if not pairs:
        return report
    consumers: dict[str, list[str]] = {q: [] for q in pairs}
    for idx, node in enumerate(quant_model.graph.node):
        for name in node.input:
            if name in consumers:
                consumers[name].append(_node_label(node, idx))
    activations = [b for b in pairs.values() if b not in float_inits]
    ref = _run_all(
        _with_outputs(float_model, [out_name, *activations]), samples, [out_name, *activations], rt
    )
    got = _run_all(_with_outputs(quant_model, list(pairs)), samples, list(pairs), rt)
    inits = {i.name: i for i in float_model.graph.initializer}
    for q, base in pairs.items():
        kind: Literal["activation", "weight"]
        if base in float_inits:  # a constant: one batch's value is the value
            ref_v = numpy_helper.to_array(inits[base]).astype(np.float64).reshape(-1)
            test_v, kind = got[q][0].reshape(-1), "weight"
        else:
            ref_v, test_v, kind = _cat(ref[base]), _cat(got[q]), "activation"
        if ref_v.size != test_v.size:
            report.unmatched.append(
                {
                    "tensor": q,
                    "reason": f"shape differs from the float '{base}' ({test_v.size} vs {ref_v.size} values)",
                }
            )
            continue
        report.tensors.append(
            TensorError(base, q, kind, consumers[q], sqnr_db(ref_v, test_v), mse(ref_v, test_v))
        )
    report.tensors.sort(key=lambda t: (t.sqnr_db, t.tensor))
    by_tensor = {t.quantized: t for t in report.tensors}
    candidates: list[tuple[float, int]] = []
    for idx, node in enumerate(quant_model.graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        errs = [by_tensor[i].sqnr_db for i in node.input if i in by_tensor]
        if errs:
            candidates.append((min(errs), idx))
    candidates.sort()
    float_out = _cat(ref[out_name])
    at_opset = _same_opset(float_model, quant_model) if candidates[:top_k] else float_model
    chosen = candidates[: max(top_k, 0)]
    runs = isolated_outputs(
        lambda i: isolate(quant_model, at_opset, pairs, i), [i for _, i in chosen], samples, out_name, rt
    )
    for (input_sqnr, idx), (_, outs) in zip(chosen, runs, strict=True):
        node = quant_model.graph.node[idx]
        if outs is None:
            report.unmatched.append(
                {"tensor": _node_label(node, idx), "reason": "the float model has no node of this name"}
            )
            continue
        iso = _cat(outs)
        report.isolated.append(
            NodeError(
                _node_label(node, idx),
                node.op_type,
                [i for i in node.input if i in by_tensor],
                input_sqnr,
                sqnr_db(float_out, iso),
                mse(float_out, iso),
            )
        )
    report.isolated.sort(key=lambda n: (n.output_sqnr_db, n.node))
    return report
