"""The TI-NPU integer form checked against its QDQ model in ONNX Runtime (the report's ``ti_npu_int``).

Two comparisons on the same samples:

* **per layer**: each requantized tensor of the integer model computed from the QDQ model's own
  input codes (every code tensor is fed from the QDQ run), so a layer's difference is its own:
  the largest difference in LSB and the share of codes that differ (conv/FC ties: the NPU rounds
  half up, ONNX Runtime half to even; see :mod:`edgequant.export.ti_int`);
* **end to end**: the integer model run alone against the QDQ model, where a 1-LSB difference
  can grow through later layers: output SQNR (dB) and, for a ``[N, classes]`` output, top-1 agreement.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db

Batch = dict[str, np.ndarray]


def code_tensors(qdq: onnx.ModelProto) -> list[str]:
    """The QuantizeLinear outputs of activations (the integer codes both models share by name)."""
    inits = {t.name for t in qdq.graph.initializer}
    return [n.output[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    return m


def _fed(model: onnx.ModelProto, codes: list[str]) -> onnx.ModelProto:
    """``model`` with every read of a code tensor replaced by a graph input ``<name>__fed`` (float)."""
    m = _with_outputs(model, codes)
    wanted = set(codes)
    for node in m.graph.node:
        for i, t in enumerate(node.input):
            if t in wanted:
                node.input[i] = t + "__fed"
    m.graph.input.extend(helper.make_tensor_value_info(t + "__fed", TensorProto.FLOAT, None) for t in codes)
    return m


def compare(
    qdq: onnx.ModelProto, int_model: onnx.ModelProto, runtime: OrtRuntime, batches: list[Batch]
) -> dict[str, Any]:
    """Per-layer and end-to-end agreement of ``int_model`` with ``qdq`` on ``batches`` (see the module doc)."""
    codes = code_tensors(qdq)
    outs = [o.name for o in qdq.graph.output]
    per: dict[str, list[float]] = {c: [0.0, 0.0, 0.0] for c in codes}  # max diff, differing, total
    ref_out: list[np.ndarray] = []
    got_out: list[np.ndarray] = []
    q_sess = runtime.session(_with_outputs(qdq, codes), "the QDQ model")
    f_sess = runtime.session(_fed(int_model, codes), "the TI-NPU integer model")
    i_sess = runtime.session(int_model, "the TI-NPU integer model")
    try:
        for b in batches:
            ref = q_sess.run(b, outs + codes)
            fed = f_sess.run({**b, **{c + "__fed": ref[c].astype(np.float32) for c in codes}}, codes)
            for c in codes:
                d = np.abs(ref[c].astype(np.float64) - fed[c])
                per[c][0] = max(per[c][0], float(d.max(initial=0)))
                per[c][1] += float((d > 0).sum())
                per[c][2] += float(d.size)
            ref_out.append(ref[outs[0]])
            got_out.append(i_sess.run(b, outs[:1])[outs[0]])
    finally:
        for s in (q_sess, f_sess, i_sess):
            s.close()
    r, g = np.concatenate(ref_out).astype(np.float64), np.concatenate(got_out).astype(np.float64)
    section: dict[str, Any] = {
        "samples": int(r.shape[0]),
        "per_layer_max_lsb": max((v[0] for v in per.values()), default=0.0),
        "per_layer": [
            {"tensor": c, "max_lsb": v[0], "share_differing": round(v[1] / v[2], 6) if v[2] else 0.0}
            for c, v in per.items()
        ],
        "end_to_end_sqnr_db": round(float(sqnr_db(r, g)), 2),
        "end_to_end_max_abs_diff": float(np.abs(r - g).max(initial=0)),
        "reason": "conv/FC ties: the NPU's shift rounds half up (Floor after a 2^(n-1) offset), ONNX "
        "Runtime's QuantizeLinear rounds half to even; multiplier + shift scales (below 8-bit weights) add "
        "< 0.5 LSB",
    }
    if r.ndim == 2 and r.shape[1] > 1:
        section["end_to_end_top1_agreement"] = round(float(np.mean(r.argmax(1) == g.argmax(1))), 4)
    return section


def ti_npu_int_form(
    quantized: onnx.ModelProto, runtime: OrtRuntime, batches: Any
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """TI's integer-only form of the QDQ model ``quantized`` (``export.ti_int.to_ti_npu_int`` for the
    ``ti-npu`` target) and its report section: the file suffix, the per-layer rows, the notes, and
    ``compare``'s agreement with the QDQ model on ``batches`` (feeds dicts of float32 arrays)."""
    from edgequant.export.ti_int import to_ti_npu_int
    from edgequant.targets import get as get_target

    model, notes, layers = to_ti_npu_int(quantized, get_target("ti-npu"))
    section: dict[str, Any] = {"file_suffix": "_ti-npu-int.onnx", "layers": layers, "notes": notes}
    section.update(compare(quantized, model, runtime, list(batches)))
    return model, section
