"""Biases beyond the target's bias width (24 bits next to 8-bit weights on ti-npu): per channel,
re-scaled where exact, clamped where the output saturates anyway, a finding otherwise."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant


def big_bias(seed: int = 0) -> onnx.ModelProto:
    """x[N,1,8,8] -> Conv 1->4 (3x3) -> Relu -> GAP -> Flatten -> Gemm 4->16.

    Channel 0: weights +-0.75 / +-0.5 / 0.25 (integer codes 96, 64, 32 at scale 2^-7) and bias 3000: re-scale exact.
    Channel 2: random weights, bias -3000: the ReLU zeroes it at every input, clamp exact.
    Channels 1, 3: random weights, bias 3000: no exact fix (finding).
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32)
    w[0] = np.array([[0.75, -0.75, 0.5], [-0.5, 0.25, 0.5], [-0.75, 0.25, 0.75]], np.float32)
    w[1:, 0, 0, 0] = 0.7  # the other channels' weight scale 2^-7 as well
    b = np.array([3000, 3000, -3000, 3000], np.float32)
    inits = [nh.from_array(w, "w"), nh.from_array(b, "b"),
             nh.from_array((rng.standard_normal((16, 4)) * 0.01).astype(np.float32), "wf"),
             nh.from_array(np.zeros(16, np.float32), "bf")]  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    g = h.make_graph(nodes, "big_bias", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 16])], inits)  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_overflowing_biases_are_rescaled_clamped_or_reported() -> None:
    x = np.random.default_rng(1).uniform(-1, 1, (64, 1, 8, 8)).astype(np.float32)
    r = edgequant.quantize(big_bias(), {"x": x}, target="ti-npu")
    inits = {t.name: nh.to_array(t) for t in r.model.graph.initializer}
    dq = {n.output[0]: n for n in r.model.graph.node if n.op_type == "DequantizeLinear"}
    conv = next(n for n in r.model.graph.node if n.name == "conv")
    w_q, s_w = (
        inits[dq[conv.input[1]].input[0]].astype(np.int64),
        inits[dq[conv.input[1]].input[1]].astype(np.float64),
    )
    b_q = inits[dq[conv.input[2]].input[0]].astype(np.int64)
    s_x = float(inits[dq[conv.input[0]].input[1]])
    top = 2**23 - 1
    # by hand: the bias on the accumulator grid of each channel's (final) weight scale
    np.testing.assert_allclose(b_q * s_x * s_w, [3000, 3000, -top * s_x * s_w[2], 3000], rtol=1e-6)
    assert abs(b_q[0]) <= top and b_q[2] == -top and abs(b_q[1]) > top and abs(b_q[3]) > top
    assert np.all(np.log2(s_w) == np.round(np.log2(s_w)))  # still powers of two
    notes = [n for n in r.plan.notes if n.startswith("bias of 'conv'")]
    assert len(notes) == 1 and "2 of 4 channel(s) beyond 24 bits" in notes[0] and "2 left" in notes[0]
    found = [f for f in r.report["compliance"]["findings"] if f["rule"] == "bias width"]
    assert [(f["node"], f["found"].split(" beyond")[0]) for f in found] == [("conv", "channel(s) 1, 3")]
    assert found[0]["consequence"] == "cannot deploy"
    # exact: the model with channel 0's original codes and scale and channel 2's unclamped bias (undone by
    # hand) gives the same output codes
    w0 = nh.to_array(big_bias().graph.initializer[0])[0]
    orig = onnx.ModelProto()
    orig.CopyFrom(r.model)
    s_orig = s_w.copy()
    s_orig[0] = 2.0**-7  # max |w0| = 0.75: 2^-7 holds it exactly (codes 96, 64, 32)
    b_orig = np.round(np.array([3000, 3000, -3000, 3000]) / (s_x * s_orig)).astype(np.int32)
    w_orig = w_q.copy()
    w_orig[0] = np.round(w0 / s_orig[0]).astype(np.int64)
    assert np.array_equal(w_q[0] * s_w[0], w_orig[0] * s_orig[0])  # the weights' real values are unchanged
    new = {
        dq[conv.input[1]].input[0]: w_orig.astype(np.int8),
        dq[conv.input[1]].input[1]: s_orig.astype(np.float32),
        dq[conv.input[2]].input[0]: b_orig,
        dq[conv.input[2]].input[1]: (s_x * s_orig).astype(np.float32),
    }
    for t in orig.graph.initializer:
        if t.name in new:
            t.CopyFrom(nh.from_array(new[t.name], t.name))
    names = [n.output[0] for n in r.model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r"]

    def run(m: onnx.ModelProto) -> np.ndarray:
        mm = onnx.ModelProto()
        mm.CopyFrom(m)
        mm.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
        return np.asarray(ort.InferenceSession(mm.SerializeToString()).run(names, {"x": x})[0])

    got, want = run(r.model), run(orig)
    assert np.array_equal(got, want) and not got[:, 2].any()


def test_float_biases_next_to_4bit_weights_are_checked_at_16_bits() -> None:
    x = np.random.default_rng(1).uniform(-1, 1, (64, 1, 8, 8)).astype(np.float32)
    r = edgequant.quantize(big_bias(), {"x": x}, target="ti-npu", weight_bits=4)
    found = [f for f in r.report["compliance"]["findings"] if f["rule"] == "bias width"]
    # by hand: |3000| / (s_x * s_w) with s_w ~ 0.75 / 7 is ~ 3.6e6, far beyond 16 bits on every channel
    assert [(f["node"], f["required"]) for f in found] == [("conv", "16-bit bias")]
    assert found[0]["found"].startswith("channel(s) 0, 1, 2, 3 beyond 16 bits")


def test_vitis_dpu_biases_are_rounded_to_8_bits_with_their_own_power_of_two() -> None:
    """vitis-dpu: each bias is 8 bits times one power of two per tensor (its own fix position), as the
    DPU's quantizer stores it; the rounding costs at most half a step of that grid."""
    x = np.random.default_rng(1).uniform(-1, 1, (64, 1, 8, 8)).astype(np.float32)
    m = big_bias()
    m.graph.initializer[1].CopyFrom(nh.from_array(np.array([3.0, 2.0, -3.0, 0.5], np.float32), "b"))
    r = edgequant.quantize(m, {"x": x}, target="vitis-dpu")
    inits = {t.name: nh.to_array(t) for t in r.model.graph.initializer}
    dq = {n.output[0]: n for n in r.model.graph.node if n.op_type == "DequantizeLinear"}
    conv = next(n for n in r.model.graph.node if n.name == "conv")
    b_q = inits[dq[conv.input[2]].input[0]].astype(np.int64)
    s_b = inits[dq[conv.input[2]].input[1]].astype(np.float64)
    exact = np.array([3.0, 2.0, -3.0, 0.5]) / s_b  # by hand: the bias on the accumulator grid
    assert np.abs(exact).max() > 127  # the test needs a bias beyond 8 bits on that grid
    k = int(np.ceil(np.log2(np.abs(np.round(exact)).max() / 127)))  # one shift for the tensor
    while np.abs(np.round(exact / 2**k)).max() > 127:
        k += 1
    assert np.array_equal(b_q, np.round(np.round(exact) / 2**k).astype(np.int64) * 2**k)
    assert np.all(b_q % 2**k == 0) and np.abs(b_q // 2**k).max() <= 127
    assert not [f for f in r.report["compliance"]["findings"] if f["rule"] == "bias width"]
    assert any(n.startswith("bias of 'conv': rounded to the target's 8-bit bias") for n in r.plan.notes)
