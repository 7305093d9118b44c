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
   ``_dq`` tensor) - the ``top_k`` nodes with the worst input SQNR - a copy of the QDQ model is
   built in which only that node reads ``_dq`` tensors: every other consumer is rewired to the float
   ``X`` (weights: the original float initializer ``X`` from the float model).  The model output's
   SQNR against the float model's output is that node's isolated error.

The copies live in memory only; nothing is written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.data.base import Batch
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


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs is used (repeat until stable)."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output if o)]
        if not dead:
            return
        keep = [n for n in graph.node if n not in dead]
        del graph.node[:]
        graph.node.extend(keep)


def isolate(
    quant_model: onnx.ModelProto, float_model: onnx.ModelProto, pairs: dict[str, str], keep_node: int
) -> onnx.ModelProto:
    """Copy of ``quant_model`` where only node ``keep_node`` (index) reads ``_dq`` tensors."""
    copy = onnx.ModelProto()
    copy.CopyFrom(quant_model)
    g = copy.graph
    for idx, node in enumerate(g.node):
        if idx == keep_node:
            continue
        for j, name in enumerate(node.input):
            if name in pairs:
                node.input[j] = pairs[name]
    present = (
        {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    )
    float_inits = {i.name: i for i in float_model.graph.initializer}
    _prune(g)
    used = {i for n in g.node for i in n.input}
    for name in sorted(used - present):
        if name in float_inits:
            g.initializer.append(float_inits[name])
    return copy


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
    for input_sqnr, idx in candidates[: max(top_k, 0)]:
        node = quant_model.graph.node[idx]
        model = isolate(quant_model, float_model, pairs, idx)
        iso = _cat(_run_all(model, samples, [out_name], rt)[out_name])
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
