"""Weight-only 4-bit MatMul runs as ORT's MatMulNBits, with the same codes as the QDQ form."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.export import export_qdq
from edgequant.export.nbits import pack_weight
from edgequant.schemes.qparams import sqnr_db

K, N = 96, 64  # K = 3 blocks of 32, 1.5 blocks of 64 (padded)


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((K, N)) * 0.1).astype(np.float32)
    w1[:, 3] *= 20  # a column of large weights: per-block scales matter
    w2 = (rng.standard_normal((N, 8)) * 0.1).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        h.make_node("Relu", ["m1"], ["r"], name="relu"),
        h.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, K])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 8])], [nh.from_array(w1, "w1"), nh.from_array(w2, "w2")],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def _run(m: onnx.ModelProto, x: np.ndarray, level: str = "ORT_ENABLE_ALL") -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


def test_pack_weight_matches_the_nibble_layout() -> None:
    rng = np.random.default_rng(1)
    q = rng.integers(-8, 8, size=(K, N)).astype(np.int16)
    zero = rng.integers(-8, 8, size=(2, N)).astype(np.int16)  # blocks of 64: K=96 pads to 128
    packed, zp = pack_weight(q, zero, 64)
    assert packed.shape == (N, 2, 32) and packed.dtype == np.uint8
    low, high = packed & 0x0F, packed >> 4
    u = np.stack([low, high], axis=-1).reshape(N, 128)  # even element in the low nibble
    np.testing.assert_array_equal(u[:, :K].T.astype(np.int16) - 8, q)
    np.testing.assert_array_equal(u[:, K:].astype(np.int16) - 8, np.repeat(zero[1:], 128 - K, axis=0).T)
    assert zp is not None and zp.shape == (N,)
    np.testing.assert_array_equal((zp & 0x0F).astype(np.int16) - 8, zero[0])
    np.testing.assert_array_equal((zp >> 4).astype(np.int16) - 8, zero[1])


@pytest.mark.parametrize(("block", "symmetric"), [(32, True), (64, True), (32, False)])
def test_weight_only_int4_uses_matmul_nbits(block: int, symmetric: bool) -> None:
    m = _mlp()
    x = np.random.default_rng(2).standard_normal((2, 4, K)).astype(np.float32)
    r = edgequant.quantize(m, {"x": x}, method="weight-only", weight_bits=4, block_size=block,
                           weight_symmetric=symmetric)  # fmt: skip
    ops = [n.op_type for n in r.model.graph.node]
    assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops and "DequantizeLinear" not in ops
    nb = next(n for n in r.model.graph.node if n.name == "mm1")
    attrs = {a.name: a.i for a in nb.attribute}
    assert attrs["block_size"] == block and attrs["K"] == K and attrs["N"] == N and attrs["bits"] == 4
    assert (len(nb.input) == 4) == (not symmetric)  # zero points only for an asymmetric grid
    # the same codes in the standard QDQ form, run without fusions, are the reference
    plan = edgequant.planner.resolve(m, r.recipe, edgequant.runtime.detect())
    qdq, _ = export_qdq(m, plan)
    ref = _run(qdq, x, "ORT_DISABLE_ALL")
    got = _run(r.model, x)
    assert sqnr_db(ref, got) > 30.0  # the same codes (an int8-activation accuracy_level would cost some)
    assert sqnr_db(_run(m, x), got) > 15.0
    assert not any(n.startswith("slower than float") for n in r.plan.notes)


def test_weight_only_without_blocks_says_it_is_slower_than_float() -> None:
    """Per-column 4-bit weights: ORT fuses mm2 into MatMulNBits itself; mm1, read by a Relu alone, stays a
    float MatMul on a dequantized weight (tests/core/test_int_kernel_rules.py checks the rule against ORT)."""
    r = edgequant.quantize(
        _mlp(), {"x": np.zeros((1, 4, K), np.float32)}, method="weight-only", weight_bits=4
    )
    note = next(n for n in r.report["warnings"] if n.startswith("slower than float"))
    assert "1 MatMul(s) (mm1)" in note and "--block-size" in note


def _decode8(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """W [K, N] from a bits=8 MatMulNBits' own initializers, read per the ORT contrib-op spec."""
    inits = {t.name: nh.to_array(t) for t in model.graph.initializer}
    a = {x.name: x.i for x in node.attribute}
    k, n, b = a["K"], a["N"], a["block_size"]
    blocks = -(-k // b)
    u = inits[node.input[1]].astype(np.float32).reshape(n, blocks * b)
    scale = inits[node.input[2]].reshape(n, blocks)
    zp = (
        inits[node.input[3]].reshape(n, blocks).astype(np.float32)
        if len(node.input) > 3
        else np.full((n, blocks), 128.0)
    )
    w = (u - np.repeat(zp, b, axis=1)) * np.repeat(scale, b, axis=1)
    return w[:, :k].T


@pytest.mark.parametrize("symmetric", [True, False])
def test_weight_8bit_runs_named_matmuls_as_8bit_matmul_nbits(symmetric: bool) -> None:
    m = _mlp()
    x = np.random.default_rng(2).standard_normal((2, 4, K)).astype(np.float32)
    kw = {"method": "weight-only", "weight_bits": 4, "block_size": 32, "weight_symmetric": symmetric,
          "nbits_accuracy_level": 0}  # fmt: skip
    mixed = edgequant.quantize(m, {"x": x}, weight_8bit=["mm1"], **kw)
    bits = {
        n.name: {a.name: a.i for a in n.attribute}["bits"]
        for n in mixed.model.graph.node
        if n.op_type == "MatMulNBits"
    }
    assert bits == {"mm1": 8, "mm2": 4}
    mm1 = next(n for n in mixed.model.graph.node if n.name == "mm1")
    assert (len(mm1.input) == 4) == (not symmetric)
    w1 = nh.to_array(next(t for t in m.graph.initializer if t.name == "w1"))
    w1q = _decode8(mixed.model, mm1)
    assert sqnr_db(w1, w1q) > 42.7  # 8-bit blocks (measured 44.8 sym / 45.7 asym dB)

    # the kernel computes x @ W as decoded (level 0: float compute); numpy reference
    def first_layer(r: edgequant.QuantResult) -> np.ndarray:
        probe = onnx.ModelProto()
        probe.CopyFrom(r.model)
        del probe.graph.output[:]
        probe.graph.output.append(h.make_tensor_value_info("m1", T.FLOAT, None))
        return _run(probe, x)

    np.testing.assert_allclose(first_layer(mixed), x @ w1q, rtol=1e-4, atol=1e-4)
    four = edgequant.quantize(m, {"x": x}, **kw)
    ref = x @ w1
    assert (
        sqnr_db(ref, first_layer(mixed)) > sqnr_db(ref, first_layer(four)) + 23.0
    )  # measured +26.9 sym / +25.0 asym dB
    assert any("mixed 4/8: 1 of 2" in note for note in mixed.plan.notes)


def test_weight_8bit_that_names_no_blocked_matmul_is_refused() -> None:
    x = np.random.default_rng(2).standard_normal((2, 4, K)).astype(np.float32)
    with pytest.raises(edgequant.errors.RecipeError, match="weight_8bit entry 'relu' names no MatMul"):
        edgequant.quantize(
            _mlp(), {"x": x}, method="weight-only", weight_bits=4, block_size=32, weight_8bit=["relu"]
        )
    with pytest.raises(
        edgequant.errors.RecipeError, match=r"weight_8bit=\['mm1'\] keeps .* and no block_size="
    ):
        edgequant.quantize(_mlp(), {"x": x}, method="weight-only", weight_8bit=["mm1"])
