"""Conv/Gemm biases next to binary, ternary and 2-bit weights (int8 containers) with 8-bit activations: the QDQ
file stores them as int32 with scale ``s_x * s_w`` (as with 8-bit weights), so ONNX Runtime fuses the last Gemm
into QGemm (before: a float bias kept it a float Gemm), at an output SQNR within 0.1 dB of the float-bias file.
Next to 4-bit weights, which ORT 1.32 runs in float Conv/Gemm kernels whatever the bias, the bias stays float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper as nh
from tinymodels import conv_net, images, ort_ran_ops

import edgequant

BITS = [1, "ternary", 2]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0], np.float64)


def _sqnr(ref: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / ((ref - y) ** 2).sum()))


def _quantized(weight_bits: int | str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    float_model = conv_net(seed=3)
    r = edgequant.quantize(float_model, {"x": images(24, seed=5)}, method="static", weight_bits=weight_bits)
    return float_model, r.model


def _array(inits: dict[str, onnx.TensorProto], name: str) -> np.ndarray:
    return nh.to_array(inits[name])


@pytest.mark.parametrize("weight_bits", BITS)
def test_low_bit_biases_are_int32_on_the_accumulator_grid(weight_bits: int | str) -> None:
    float_model, q = _quantized(weight_bits)
    inits = {t.name: t for t in q.graph.initializer}
    float_bias = {t.name: nh.to_array(t).astype(np.float64) for t in float_model.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    checked = []
    for node in q.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        x_dq, w_dq, b_dq = (producer[t] for t in node.input[:3])
        assert b_dq.op_type == "DequantizeLinear", node.name
        codes = _array(inits, b_dq.input[0])
        assert codes.dtype == np.int32
        assert not _array(inits, b_dq.input[2]).any()  # zero point 0
        s_x = _array(inits, x_dq.input[1]).astype(np.float64)
        s_w = _array(inits, w_dq.input[1]).astype(np.float64)
        expected = (s_x * s_w).astype(np.float32)  # per output channel (per-channel weights are the default)
        assert expected.shape == codes.shape
        np.testing.assert_allclose(_array(inits, b_dq.input[1]), expected, rtol=1e-6)
        b = float_bias[{"conv1": "b1", "dwconv": "bd", "pwconv": "bp", "fc": "bf"}[node.name]]
        assert np.all(np.abs(codes * expected.astype(np.float64) - b) <= expected / 2 * (1 + 1e-5))
        checked.append(node.name)
    assert checked == ["conv1", "dwconv", "pwconv", "fc"]


@pytest.mark.parametrize("weight_bits", BITS)
def test_ort_fuses_them_and_the_int32_bias_costs_under_a_tenth_of_a_db(
    tmp_path: Path, weight_bits: int | str
) -> None:
    float_model, q = _quantized(weight_bits)
    ops = ort_ran_ops(q, tmp_path, "ORT_ENABLE_EXTENDED")
    assert (ops["QLinearConv"], ops["QGemm"], ops["Conv"], ops["Gemm"]) == (3, 1, 0, 0)
    # the float-bias form of the same file (what the exporter wrote before): each bias DQ replaced by the float bias
    fb = onnx.ModelProto()
    fb.CopyFrom(q)
    fb.graph.initializer.extend(
        t for t in float_model.graph.initializer if t.name in ("b1", "bd", "bp", "bf")
    )
    bias_of = {"conv1": "b1", "dwconv": "bd", "pwconv": "bp", "fc": "bf"}
    for node in fb.graph.node:
        if node.name in bias_of:
            node.input[2] = bias_of[node.name]
    x = images(64, seed=9)
    ref = _run(float_model, x)
    with_int32, with_float = _sqnr(ref, _run(q, x)), _sqnr(ref, _run(fb, x))
    assert abs(with_int32 - with_float) < 0.1, (with_int32, with_float)


def test_next_to_4_bit_weights_the_bias_stays_float(tmp_path: Path) -> None:
    """ORT's CPU Conv/Gemm selectors take no int4 weight: float kernels whatever the bias, so an int32 bias would
    only add a scale and a zero point per channel to the file."""
    _, q = _quantized(4)
    ops = ort_ran_ops(q, tmp_path, "ORT_ENABLE_EXTENDED")
    assert (ops["Conv"], ops["Gemm"], ops["QLinearConv"], ops["QGemm"]) == (3, 1, 0, 0)
    fc = next(n for n in q.graph.node if n.name == "fc")
    assert fc.input[2] == "bf" and "bf" in {t.name for t in q.graph.initializer}
