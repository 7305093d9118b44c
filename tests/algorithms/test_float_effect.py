"""The report's ``float_effect`` section: each activation the plan keeps float (Softmax's scores, the
residual stream LayerNorm reads) is listed with the measured end-to-end cost of 8 bits there, and that
cost matches one measured independently here: our own Q/DQ pair on the tensor in the quantized model,
run in our own ORT sessions, output SQNR against float."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant

D, L = 16, 8


def _block() -> onnx.ModelProto:
    """x -> MatMul -> Softmax -> MatMul(·, x·Wv) -> + x -> LayerNorm -> MatMul -> y (one attention head)."""
    rng = np.random.default_rng(0)
    wq = (rng.standard_normal((D, L)) * 0.6).astype(np.float32)
    wv = (rng.standard_normal((D, D)) * 0.3).astype(np.float32)
    wo = (rng.standard_normal((D, D)) * 0.3).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "wq"], ["s"], name="scores"),
        h.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        h.make_node("MatMul", ["x", "wv"], ["v"], name="value"),
        h.make_node("MatMul", ["p", "v"], ["a"], name="attend"),
        h.make_node("Add", ["a", "x"], ["res"], name="residual"),
        h.make_node("LayerNormalization", ["res", "g", "z"], ["ln"], name="ln", axis=-1),
        h.make_node("MatMul", ["ln", "wo"], ["y"], name="proj"),
    ]
    ones, zeros = np.ones(D, np.float32), np.zeros(D, np.float32)
    inits = [nh.from_array(a, n) for a, n in ((wq, "wq"), (wv, "wv"), (wo, "wo"), (ones, "g"), (zeros, "z"))]
    g = h.make_graph(
        nodes, "attn", [h.make_tensor_value_info("x", T.FLOAT, ["N", L, D])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", L, D])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _data() -> np.ndarray:
    """Gaussian tokens with one outlier channel (~40) on the first token: the residual stream carries it."""
    x = np.random.default_rng(1).standard_normal((160, L, D)).astype(np.float32)
    x[:, 0, 5] = 40.0
    return x


def _run(m: onnx.ModelProto, x: np.ndarray, outs: list[str]) -> list[np.ndarray]:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v, np.float64) for v in s.run(outs, {"x": x})]


def _with_own_qdq(q: onnx.ModelProto, name: str, lo: float, hi: float) -> onnx.ModelProto:
    """``q`` with a uint8 asymmetric Q/DQ pair on ``name`` (min-max grid), every reader reading its DQ."""
    out = onnx.ModelProto()
    out.CopyFrom(q)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0)
    zero = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
    out.graph.initializer.extend(
        [nh.from_array(np.array(scale), "own_s"), nh.from_array(np.array(zero), "own_z")]
    )
    nodes = []
    for node in out.graph.node:
        nodes.append(node)
        if name in node.output:
            node.output[list(node.output).index(name)] = "own_raw"
            nodes += [
                h.make_node("QuantizeLinear", ["own_raw", "own_s", "own_z"], ["own_q"]),
                h.make_node("DequantizeLinear", ["own_q", "own_s", "own_z"], [name]),
            ]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def test_float_kept_tensors_are_listed_with_their_measured_8_bit_effect() -> None:
    m, x = _block(), _data()
    r = edgequant.quantize(m, {"x": x}, method="static", calib_samples=64)
    sec = r.report["float_effect"]
    assert sec["measured_on"].startswith("the first 16 of the 32 held-out samples")
    rows = {t["tensor"]: t for t in sec["tensors"]}
    assert rows["s"]["kind"] == "MatMul -> Softmax" and "Softmax" in rows["s"]["reason"]
    assert rows["res"]["kind"] == "Add -> LayerNormalization" and rows["res"]["precision"] == "float"
    assert r.plan.tensors["p"].spec.bits == 8 and not r.plan.tensors["p"].spec.signed  # uint8 asymmetric

    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.extend(h.make_tensor_value_info(n, T.FLOAT, None) for n in ("s", "res"))
    ref, s, res = _run(probe, x, ["y", "s", "res"])
    base = _sqnr(ref, _run(r.model, x, ["y"])[0])
    for name, values in (("s", s), ("res", res)):
        own = _sqnr(ref, _run(_with_own_qdq(r.model, name, values.min(), values.max()), x, ["y"])[0]) - base
        got = rows[name]["effect_db"]
        assert abs(got - own) < 2.0, (name, got, own)
        assert np.sign(got) == np.sign(own) == -1, (name, got, own)


def test_16_bit_tensors_are_listed_with_the_measured_effect_of_8_bits_instead() -> None:
    m, x = _block(), _data()
    r = edgequant.quantize(m, {"x": x}, method="static", calib_samples=64, act16_below_db=30.0)
    promoted = {t["tensor"] for t in r.report["act16"]["tensors"]}
    assert promoted == {"x", "v"}  # the input (outlier channel) and the value projection
    rows = {t["tensor"]: t for t in r.report["float_effect"]["tensors"]}
    assert rows["x"]["precision"] == rows["v"]["precision"] == "16-bit"
    assert rows["x"]["kind"] == "16-bit input" and rows["v"]["kind"] == "16-bit MatMul"

    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.append(h.make_tensor_value_info("v", T.FLOAT, None))
    ref, v = _run(probe, x, ["y", "v"])
    base = _sqnr(ref, _run(r.model, x, ["y"])[0])
    # 8 bits on v: our uint8 pair before its 16-bit one (16 bits on the same range add ~nothing)
    own_v = _sqnr(ref, _run(_with_own_qdq(r.model, "v", v.min(), v.max()), x, ["y"])[0]) - base
    # 8 bits on the input: the feed fake-quantized in numpy on its min-max uint8 grid
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0
    zero = np.round(-lo / scale)
    x8 = ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)
    own_x = _sqnr(ref, _run(r.model, x8, ["y"])[0]) - base
    for name, own in (("v", own_v), ("x", own_x)):
        got = rows[name]["effect_db"]
        assert abs(got - own) < 2.0, (name, got, own)
        assert got < -3.0 and own < -3.0, (name, got, own)  # 16 bits buy > 3 dB on each
