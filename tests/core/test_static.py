"""Static QDQ quantization end to end: outputs in ONNX Runtime within a stated SQNR of float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from tinymodels import conv_net, images, lstm_with_state, mlp, ort_ran_ops

import edgequant
from edgequant.runtime import OrtRuntime


def _sqnr(model: onnx.ModelProto, q: onnx.ModelProto, feeds: dict[str, np.ndarray], out: str = "y") -> float:
    rt = OrtRuntime()
    ref, got = rt.run(model, feeds)[out], rt.run(q, feeds)[out]
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def _op_count(m: onnx.ModelProto, op: str) -> int:
    return sum(n.op_type == op for n in m.graph.node)


def test_conv_net_int8_per_channel_close_to_float() -> None:
    m, x = conv_net(), images(64)
    r = edgequant.quantize(m, {"x": x})
    assert r.tag == "int8"
    # conv, depthwise conv, pointwise conv, residual add, concat, pooling, gemm: all quantized
    assert {d.node for d in r.plan.quantized_nodes} >= {
        "conv1",
        "dwconv",
        "pwconv",
        "residual",
        "concat",
        "fc",
    }
    assert _sqnr(m, r.model, {"x": images(16, seed=7)}) > 39.5  # measured 41.5 dB
    assert r.report["integer_weights"] == r.report["planned_weights"] == 4
    w1 = r.plan.tensors["w1"]
    assert w1.spec.granularity.value == "per_channel" and len(w1.scale or []) == 8
    ints = {t.name: t.data_type for t in r.model.graph.initializer}
    assert ints["w1_q"] == TensorProto.INT8 and "w1" not in ints  # the float weight is gone
    assert ints["b1_q"] == TensorProto.INT32  # bias in the form ORT's QLinearConv fusion needs


def test_depthwise_per_tensor_is_worse_than_per_channel() -> None:
    m, x, ev = conv_net(), images(64), {"x": images(16, seed=7)}
    pc = _sqnr(m, edgequant.quantize(m, {"x": x}).model, ev)
    pt = _sqnr(m, edgequant.quantize(m, {"x": x}, per_channel=False).model, ev)
    assert pc > pt + 2.0  # measured 41.5 vs 37.7 dB


def test_mlp_matmul_w8a8_and_w4a8_and_w8a16() -> None:
    m = mlp()
    # enough calibration samples that held-out data is rarely clipped
    x = np.random.default_rng(3).standard_normal((1024, 32)).astype(np.float32)
    ev = {"x": np.random.default_rng(4).standard_normal((16, 32)).astype(np.float32)}
    assert (
        _sqnr(m, edgequant.quantize(m, x, calib_samples=1024, batch_size=64).model, ev) > 32.5
    )  # measured 34.6 dB
    w4 = edgequant.quantize(m, x, weight_bits=4)
    assert w4.tag == "w4a8"
    assert {t.data_type for t in w4.model.graph.initializer if t.name.endswith("w1_q")} == {TensorProto.INT4}
    assert _sqnr(m, w4.model, ev) > 17.5  # measured 19.6 dB
    a16 = edgequant.quantize(m, x, act_bits=16)
    assert _sqnr(m, a16.model, ev) > 35.5  # measured 37.7 dB
    assert a16.model.opset_import[0].version >= 21


def test_weight_only_int4_blockwise_has_no_activation_qdq() -> None:
    m = mlp()
    r = edgequant.quantize(m, None, method="weight-only", weight_bits=4, block_size=16)
    assert _op_count(r.model, "QuantizeLinear") == 0
    nbits = [n for n in r.model.graph.node if n.op_type == "MatMulNBits"]  # export/nbits.py
    assert nbits and {a.name: a.i for a in nbits[0].attribute}["block_size"] == 16
    ev = {"x": np.random.default_rng(4).standard_normal((16, 32)).astype(np.float32)}
    assert _sqnr(m, r.model, ev) > 19.5  # measured 21.8 dB
    assert r.report["sizes"]["packed_bytes"] < r.report["sizes"]["float_bytes"] / 3


def test_lstm_with_state_weights_per_channel_state_float() -> None:
    m = lstm_with_state()
    rng = np.random.default_rng(0)
    rt = OrtRuntime()
    zeros = np.zeros((1, 16, 16), np.float32)

    def x() -> np.ndarray:
        return rng.standard_normal((5, 16, 8)).astype(np.float32)

    # calibrate on calls with carried state, as recorded from the float model (batches passed whole:
    # the batch axis of x is 1, not 0)
    calib, h, c = [], zeros, zeros
    for _ in range(16):
        batch = {"x": x(), "h0": h, "c0": c}
        calib.append(batch)
        out = rt.run(m, batch)
        h, c = out["h1"], out["c1"]
    r = edgequant.quantize(m, calib)
    assert r.report["calibration"]["samples"] == 8  # of 16: 8 held back for the check
    assert not {"W", "R", "B"} & set(
        r.plan.tensors
    )  # static int8: ORT has no integer LSTM kernel, W/R stay float
    low = edgequant.quantize(m, calib, weight_bits=4)  # below 8 bits they are stored as asked, per output row
    assert low.plan.tensors["W"].spec.granularity.value == "per_channel"
    assert low.plan.tensors["R"].spec.axis == 1
    for state in (
        "h0",
        "c0",
        "c1",
        "Y",
    ):  # state in/out stays float (h1 also feeds the head: its copy is Q/DQ'd)
        assert state not in r.plan.tensors
    producers = {o: n.op_type for n in r.model.graph.node for o in n.output}
    assert producers["h1"] == producers["c1"] == "LSTM"  # the carried state leaves the model unquantized
    assert any("recurrent state" in n for n in r.report["notes"])
    # carry the state over four calls: the error must not grow call after call
    hf, cf, hq, cq = zeros, zeros, zeros, zeros
    for step in range(4):
        xs = x()
        of = rt.run(m, {"x": xs, "h0": hf, "c0": cf})
        oq = rt.run(r.model, {"x": xs, "h0": hq, "c0": cq})
        hf, cf, hq, cq = of["h1"], of["c1"], oq["h1"], oq["c1"]
        sq = 10 * np.log10(np.sum(of["y"] ** 2) / np.sum((of["y"] - oq["y"]) ** 2))
        # the LSTM reads the float input with float weights: its state is the float model's, bit for bit
        assert np.array_equal(hq, hf) and np.array_equal(cq, cf), f"call {step}"
        # measured: output 40.4 / 34.8 / 28.8 / 40.8 dB (calls 0-3; int8 W/R before: 37.4 / 33.7 / 28.6 / 37.9)
        assert sq > 26.5, f"call {step}: output {sq:.1f} dB"


def test_two_bit_activations_are_refused_with_reason() -> None:
    with pytest.raises(
        edgequant.UnsupportedError,
        match=r"2-bit activations cannot run on the CPU runtime \(ONNX Runtime has no 2-bit QuantizeLinear\)\. Fix: use act_bits=8",
    ):
        edgequant.quantize(mlp(), None, act_bits=2)


def test_activation_signedness_auto_is_unsigned_and_settable() -> None:
    x = np.random.default_rng(3).standard_normal((16, 32)).astype(np.float32)
    auto = edgequant.quantize(mlp(), x)
    assert {e.spec.signed for e in auto.plan.tensors.values() if e.role == "activation"} == {False}
    signed = edgequant.quantize(mlp(), x, act_signed="signed", act_symmetric=True)
    acts = [e for e in signed.plan.tensors.values() if e.role == "activation"]
    assert all(e.spec.signed and e.zero_point == [0] for e in acts)


def test_power_of_two_scales() -> None:
    r = edgequant.quantize(conv_net(), {"x": images(32)}, power_of_two=True)
    for e in r.plan.tensors.values():
        if e.role in ("weight", "activation"):
            assert e.scale and all(float(np.log2(s)).is_integer() for s in e.scale), e.name


def test_reduce_range_on_gives_seven_bit_weights() -> None:
    r = edgequant.quantize(conv_net(), {"x": images(32)}, reduce_range="on")
    q = next(t for t in r.model.graph.initializer if t.name == "w1_q")
    vals = onnx.numpy_helper.to_array(q)
    assert vals.min() >= -64 and vals.max() <= 63 and vals.max() == 63
    assert any("reduce_range" in n for n in r.report["notes"])


def test_scales_do_not_depend_on_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Histograms that bin every value are exact whatever the batching.  Updates of more than
    ``SAMPLE_MAX`` values (batches of 7 here, not of 1) bin the tail whole and a subsample of the bulk,
    so their ranges agree within sampling error (measured: at most 0.31 % apart in scale)."""
    from edgequant.observe import observers

    m, x = conv_net(), images(40)

    def scales(batch_size: int) -> dict[str, float]:
        r = edgequant.quantize(m, {"x": x}, batch_size=batch_size, calib_method="percentile")
        return {n: r.plan.tensors[n].scale[0] for n in r.plan.activations()}  # type: ignore[index]

    a, b = scales(1), scales(7)
    assert max(abs(b[n] / a[n] - 1.0) for n in a) < 0.02
    monkeypatch.setattr(observers, "SAMPLE_MAX", 1 << 40)  # every value binned
    a, b = scales(1), scales(7)
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-6)


def test_exclude_by_name_op_type_and_regex_and_first_last() -> None:
    m, x = conv_net(), {"x": images(16)}
    r = edgequant.quantize(m, x, exclude=["dwconv", "Concat", "re:pw.*"], skip_last=True)
    skipped = {d.node: d.reason for d in r.plan.skipped_nodes}
    assert skipped["dwconv"] == "excluded by the user ('dwconv')."
    assert "Concat" in skipped["concat"] and "re:pw.*" in skipped["pwconv"]
    assert skipped["fc"] == "last compute layer kept float (skip_last)."
    with pytest.raises(edgequant.RecipeError, match="exclude 'dwcnv' matches no node name or op type"):
        edgequant.quantize(m, x, exclude=["dwcnv"])


def test_dynamic_on_a_pure_conv_net_is_refused_not_copied() -> None:
    from tinymodels import conv_net as net

    m = net()
    m.graph.node[-1].op_type = "Gemm"  # keep the head; exclude it so nothing is left for dynamic
    with pytest.raises(edgequant.UnsupportedError, match="would be a copy of the float model"):
        edgequant.quantize(m, None, method="dynamic", exclude=["fc"])


def test_relu_after_add_is_folded_so_ort_runs_integer_ops_end_to_end() -> None:
    g = conv_net().graph
    # insert Add -> Relu: residual = relu(cp + r1)
    add = next(n for n in g.node if n.name == "residual")
    add.output[0] = "res_pre"
    idx = list(g.node).index(add)
    g.node.insert(idx + 1, onnx.helper.make_node("Relu", ["res_pre"], ["res"], name="res_relu"))
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    m.ir_version = 8
    r = edgequant.quantize(m, {"x": images(64)})
    assert "res_relu" not in {n.name for n in r.model.graph.node}
    (d,) = [d for d in r.plan.nodes if d.node == "res_relu"]
    assert (
        d.quantized and d.reason == "folded into the quantization of its input (zero point = grid minimum)."
    )
    assert "res_pre" not in r.plan.tensors and r.plan.tensors["res"].lo == 0.0
    assert _op_count(r.model, "Relu") == 2  # after Conv: ORT fuses those into QLinearConv itself
    assert _sqnr(m, r.model, {"x": images(16, seed=7)}) > 41.5  # measured 43.7 dB


def test_dead_weight_channel_keeps_an_int32_bias() -> None:
    """A channel with weights ~1e-20 (BN folded with gamma ~ 0) but a real bias: before the scale floor
    its s_x·s_w was ~1e-24 and the bias stayed float, so ORT could not run the Conv as QLinearConv."""
    m = conv_net()
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    arr = onnx.numpy_helper.to_array(w1).copy()
    arr[3] = 1e-20
    w1.CopyFrom(onnx.numpy_helper.from_array(arr, "w1"))
    r = edgequant.quantize(m, {"x": images(64)})
    assert not any("would overflow int32" in n for n in r.plan.notes)
    ints = {t.name: t.data_type for t in r.model.graph.initializer}
    assert ints["b1_q"] == TensorProto.INT32
    scale = np.asarray(r.plan.tensors["w1"].scale)
    assert scale[3] == pytest.approx(scale.max() * 2.0**-16, rel=1e-3)
    assert _sqnr(m, r.model, {"x": images(16, seed=7)}) > 39.0  # measured 41.1 dB


def _affine_mlp(scale: np.ndarray) -> onnx.ModelProto:
    """MatMul -> Add(bias constant) -> Mul(scale constant) -> Relu -> MatMul."""
    rng = np.random.default_rng(3)
    g = onnx.helper.make_graph(
        [
            onnx.helper.make_node("MatMul", ["x", "w1"], ["a"], name="fc1"),
            onnx.helper.make_node("Add", ["a", "bias"], ["ab"], name="add_bias"),
            onnx.helper.make_node("Mul", ["scale", "ab"], ["am"], name="mul_scale"),
            onnx.helper.make_node("Relu", ["am"], ["r"], name="relu"),
            onnx.helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "affine",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [
            onnx.numpy_helper.from_array((rng.standard_normal((16, 32)) * 0.3).astype(np.float32), "w1"),
            onnx.numpy_helper.from_array((rng.standard_normal(32) * 0.2).astype(np.float32), "bias"),
            onnx.numpy_helper.from_array(scale.astype(np.float32), "scale"),
            onnx.numpy_helper.from_array((rng.standard_normal((32, 4)) * 0.3).astype(np.float32), "w2"),
        ],
    )
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_constant_operands_of_add_and_mul_are_quantized_so_ort_runs_qlinear_ops(tmp_path: Path) -> None:
    m = _affine_mlp(np.random.default_rng(4).uniform(0.5, 2.0, 32))
    x = np.random.default_rng(5).standard_normal((128, 16)).astype(np.float32)
    r = edgequant.quantize(m, {"x": x})
    assert r.plan.tensors["bias"].role == r.plan.tensors["scale"].role == "constant"
    ints = {t.name: t.data_type for t in r.model.graph.initializer}
    assert ints["bias_q"] == ints["scale_q"] == TensorProto.UINT8  # the activations' grid
    assert r.report["integer_weights"] == 2  # w1, w2: constants are counted apart
    ran = set(ort_ran_ops(r.model, tmp_path))
    assert {"QLinearAdd", "QLinearMul"} <= ran and not {"Add", "Mul"} & ran
    assert _sqnr(m, r.model, {"x": x[:32]}) > 28.5  # measured 30.4 dB


def test_constant_with_a_wide_dynamic_range_stays_float_with_the_reason() -> None:
    scale = np.full(32, 1e-3)
    scale[0] = 50.0  # 8 bits over [0, 50] leave the 1e-3 entries at zero
    r = edgequant.quantize(_affine_mlp(scale), {"x": images(1).reshape(-1, 16)[:64]})
    assert "scale" not in r.plan.tensors and r.plan.tensors["bias"].role == "constant"
    assert any(
        n.startswith(
            "constant 'scale' of Mul 'mul_scale' stays float: on the 8-bit grid an element would move by 100 %"
        )
        for n in r.plan.notes
    )


def _silero_like(hidden: int = 16, d_in: int = 8) -> onnx.ModelProto:
    """state [2, N, H] -> Gather/Unsqueeze -> LSTM h0/c0; h1, c1 -> Concat -> state_out; h1 -> head."""
    rng = np.random.default_rng(6)
    nh = onnx.numpy_helper
    hp = onnx.helper
    inits = [
        nh.from_array((rng.standard_normal((1, 4 * hidden, d_in)) * 0.3).astype(np.float32), "W"),
        nh.from_array((rng.standard_normal((1, 4 * hidden, hidden)) * 0.3).astype(np.float32), "R"),
        nh.from_array((rng.standard_normal((hidden, 4)) * 0.3).astype(np.float32), "wo"),
        nh.from_array(np.array(0, np.int64), "i0"),
        nh.from_array(np.array(1, np.int64), "i1"),
        nh.from_array(np.array([0], np.int64), "ax0"),
    ]
    nodes = [
        hp.make_node("Gather", ["state", "i0"], ["hg"], name="gather_h", axis=0),
        hp.make_node("Gather", ["state", "i1"], ["cg"], name="gather_c", axis=0),
        hp.make_node("Unsqueeze", ["hg", "ax0"], ["h0"], name="unsq_h"),
        hp.make_node("Unsqueeze", ["cg", "ax0"], ["c0"], name="unsq_c"),
        hp.make_node(
            "LSTM", ["x", "W", "R", "", "", "h0", "c0"], ["Y", "h1", "c1"], name="lstm", hidden_size=hidden
        ),
        hp.make_node("Concat", ["h1", "c1"], ["state_out"], name="concat_state", axis=0),
        hp.make_node("Squeeze", ["h1", "ax0"], ["hs"], name="squeeze"),
        hp.make_node("Relu", ["hs"], ["hr"], name="relu"),
        hp.make_node("MatMul", ["hr", "wo"], ["y"], name="head"),
    ]
    g = hp.make_graph(
        nodes,
        "silero_like",
        [
            hp.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", d_in]),
            hp.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", hidden]),
        ],
        [
            hp.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
            hp.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "N", hidden]),
        ],
        inits,
    )
    m = hp.make_model(g, opset_imports=[hp.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_recurrent_state_path_through_layout_ops_stays_float() -> None:
    """Silero VAD's pattern: before, Gather/Unsqueeze/Concat on the state got Q/DQ (13 Q / 18 DQ in the
    graph ORT ran, int8 no faster than float); the state path now stays float end to end."""
    m = _silero_like()
    rng = np.random.default_rng(7)
    state = np.zeros((2, 1, 16), np.float32)
    calib = []
    for _ in range(8):
        batch = {"x": rng.standard_normal((5, 1, 8)).astype(np.float32), "state": state}
        calib.append(batch)
        state = OrtRuntime().run(m, batch)["state_out"]
    r = edgequant.quantize(m, calib)
    for t in ("state", "hg", "cg", "h0", "c0", "h1", "c1"):
        assert t not in r.plan.tensors, t
    assert "hr" in r.plan.tensors  # the head's input is quantized as usual
    assert "W" not in r.plan.tensors and "wo" in r.plan.tensors  # LSTM weights float, the head's int8
    feeds = {"x": rng.standard_normal((5, 1, 8)).astype(np.float32), "state": state}
    ref, got = OrtRuntime().run(m, feeds), OrtRuntime().run(r.model, feeds)
    assert np.array_equal(ref["state_out"], got["state_out"])  # float weights, float state: bit for bit
    db = 10 * np.log10(np.sum(ref["y"] ** 2) / np.sum((ref["y"] - got["y"]) ** 2))
    assert db > 35.5  # measured 37.5 dB (38.1 with int8 LSTM weights, whose state_out was 41.6 dB)


def test_float_consumer_of_a_quantized_add_reads_its_dq_so_ort_fuses_qlinearadd(tmp_path: Path) -> None:
    """Silero VAD's STFT magnitude: Add(Pow, Pow) -> Sqrt.  Sqrt has no integer kernel; before, it read
    the float Add output, the Q/DQ after the Add had no reader and ORT ran the Add in float."""
    rng = np.random.default_rng(8)
    hp, nh = onnx.helper, onnx.numpy_helper
    g = hp.make_graph(
        [
            hp.make_node("MatMul", ["x", "w1"], ["a"], name="fc_a"),
            hp.make_node("MatMul", ["x", "w2"], ["b"], name="fc_b"),
            hp.make_node("Relu", ["a"], ["ra"], name="relu_a"),
            hp.make_node("Relu", ["b"], ["rb"], name="relu_b"),
            hp.make_node("Add", ["ra", "rb"], ["s"], name="add"),
            hp.make_node("Sqrt", ["s"], ["r"], name="sqrt"),
            hp.make_node("MatMul", ["r", "w3"], ["y"], name="fc_out"),
        ],
        "mag",
        [hp.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [hp.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [nh.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in
         (("w1", (16, 32)), ("w2", (16, 32)), ("w3", (32, 4)))],
    )  # fmt: skip
    m = hp.make_model(g, opset_imports=[hp.make_opsetid("", 17)])
    m.ir_version = 8
    x = rng.standard_normal((128, 16)).astype(np.float32)
    r = edgequant.quantize(m, {"x": x})
    sqrt = next(n for n in r.model.graph.node if n.name == "sqrt")
    assert sqrt.input[0].endswith("_dq")
    ran = ort_ran_ops(r.model, tmp_path)
    assert "QLinearAdd" in ran and "Add" not in ran
    assert _sqnr(m, r.model, {"x": x[:32]}) > 32.0  # measured 33.9 dB
