"""The only-this-node analysis on the built-in example, checked against our own ORT measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import edgequant
from edgequant.evaluate import layers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {s.get_inputs()[0].name: x})[0], np.float64)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def test_isolated_sqnr_is_never_below_the_whole_model_and_nothing_isolated_is_float() -> None:
    model = onnx.load(str(EXAMPLES / "shapes_cnn.onnx"))
    calib = dict(np.load(EXAMPLES / "shapes_calib.npz"))
    ev = dict(np.load(EXAMPLES / "shapes_eval.npz"))
    name = model.graph.input[0].name
    calib = {name: calib[name]}
    x = ev[name][:16]
    r = edgequant.quantize(model, calib)
    fm, qm = r.float_model, r.model
    ref = _run(fm, x)
    whole = _sqnr(ref, _run(qm, x))
    pairs, _ = layers.qdq_pairs(fm, qm)
    # isolating no node is the float model: bit-identical outputs
    nothing = layers.isolate(qm, fm, pairs, None)
    assert nothing is not None and np.array_equal(_run(nothing, x), ref)
    rep = layers.per_layer_error(fm, qm, [{name: x}], top_k=len(qm.graph.node))
    assert len(rep.isolated) >= 5 and not [u for u in rep.unmatched if "node" in u["reason"]]
    for n in rep.isolated:  # one node's noise alone is at most the whole model's
        assert n.output_sqnr_db >= whole - 1.0, (n.node, n.output_sqnr_db, whole)
    # and the analysis's number for a node is what our own session says of its isolated copy
    worst = rep.isolated[0]
    idx = next(k for k, n in enumerate(qm.graph.node) if n.name == worst.node)
    iso = layers.isolate(qm, fm, pairs, idx)
    assert iso is not None
    assert abs(_sqnr(ref, _run(iso, x)) - worst.output_sqnr_db) < 0.01
