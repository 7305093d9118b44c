"""16-bit activations on tensors with outliers: a tiny transformer block with injected activation
outliers reaches a stated SQNR, where plain per-tensor int8 activations do not."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant

D, F, L = 32, 64, 16


def _block() -> onnx.ModelProto:
    """x -> LayerNorm -> MatMul -> Relu -> MatMul (+b, outlier channel) -> + x (residual) -> LayerNorm
    -> MatMul -> y.  The data puts values ~150 in two channels of the first token (BERT's outliers sit in
    a few channels of a few tokens, [CLS]/[SEP] and punctuation), so the residual stream carries them."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((D, F)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((F, D)) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(D) * 0.1).astype(np.float32)
    w3 = (rng.standard_normal((D, D)) * 0.2).astype(np.float32)
    ones, zeros = np.ones(D, np.float32), np.zeros(D, np.float32)
    nodes = [
        h.make_node("LayerNormalization", ["x", "g", "z"], ["ln0"], name="ln0", axis=-1),
        h.make_node("MatMul", ["ln0", "w1"], ["m1"], name="ffn_up"),
        h.make_node("Relu", ["m1"], ["r1"], name="act"),
        h.make_node("MatMul", ["r1", "w2"], ["m2"], name="ffn_down"),
        h.make_node("Add", ["m2", "b2"], ["f"], name="ffn_bias"),
        h.make_node("Add", ["f", "x"], ["res"], name="residual"),
        h.make_node("LayerNormalization", ["res", "g", "z"], ["ln1"], name="ln1", axis=-1),
        h.make_node("MatMul", ["ln1", "w3"], ["y"], name="proj"),
    ]
    inits = [
        nh.from_array(a, n)
        for a, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (ones, "g"), (zeros, "z"))
    ]
    g = h.make_graph(
        nodes, "block", [h.make_tensor_value_info("x", T.FLOAT, ["N", L, D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", L, D])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _sqnr(m: onnx.ModelProto, q: onnx.ModelProto, x: np.ndarray) -> float:
    run = [ort.InferenceSession(a.SerializeToString(), providers=["CPUExecutionProvider"]) for a in (m, q)]
    ref, got = (np.asarray(s.run(None, {"x": x})[0], np.float64) for s in run)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def _outliers(x: np.ndarray) -> np.ndarray:
    x[:, 0, 3], x[:, 0, 17] = 150.0, -120.0
    return x


def test_outlier_tensors_get_16_bits_and_the_block_reaches_the_stated_sqnr() -> None:
    m = _block()
    rng = np.random.default_rng(1)
    calib = {"x": _outliers(rng.standard_normal((32, L, D)).astype(np.float32))}
    x = _outliers(rng.standard_normal((8, L, D)).astype(np.float32))  # held out
    plain = edgequant.quantize(m, calib, method="static", per_channel=False)
    mixed = edgequant.quantize(m, calib, method="static", per_channel=False, act16_below_db=25.0)
    db_plain, db_mixed = _sqnr(m, plain.model, x), _sqnr(m, mixed.model, x)
    assert db_plain < 12.0  # measured 9.9 dB
    assert db_mixed > 31.0  # measured 33.1 dB (all activations at 16 bits: 34.3 dB)
    promoted = {t["tensor"]: t for t in mixed.report["act16"]["tensors"]}
    assert {"x", "res"} <= set(promoted)  # the input and the residual sum: the outlier tensors
    assert len(promoted) <= 4  # a few tensors, not all
    for name, t in promoted.items():
        entry = mixed.plan.tensors[name]
        assert entry.spec.bits == 16 and "16-bit" in entry.note
        assert t["sqnr8_db"] < 25.0 < t["sqnr16_db"]
    assert all(
        e.spec.bits == 8
        for e in mixed.plan.tensors.values()
        if e.role == "activation" and e.name not in promoted
    )
