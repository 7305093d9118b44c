"""weight_8bit auto: the MatMuls kept 8-bit in a blocked 4-bit model are chosen by measured sensitivity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.schemes.qparams import sqnr_db

K0, B = 64, 32
KW = {"method": "weight-only", "weight_bits": 4, "block_size": B, "nbits_accuracy_level": 0, "calib_samples": 32,
      "check_samples": 16}  # fmt: skip


def _weights() -> dict[str, np.ndarray]:
    """w2 has one weight 8x larger in every block of 32 along K of each column: its block scales
    leave the other 31 values few 4-bit steps.  Sizes 16384 / 8192 / 16384 (w2: 20 % of the values)."""
    rng = np.random.default_rng(0)
    w = {
        "w1": rng.standard_normal((K0, 256)) * 0.1,
        "w2": rng.standard_normal((256, 32)) * 0.1,
        "w3": rng.standard_normal((32, 512)) * 0.1,
    }
    rows = rng.integers(0, B, size=(256 // B, 32))
    for b in range(256 // B):
        w["w2"][b * B + rows[b], np.arange(32)] *= 8
    return {k: v.astype(np.float32) for k, v in w.items()}


def _chain() -> onnx.ModelProto:
    w = _weights()
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        h.make_node("Relu", ["m1"], ["r1"], name="relu1"),
        h.make_node("MatMul", ["r1", "w2"], ["m2"], name="mm2"),
        h.make_node("Relu", ["m2"], ["r2"], name="relu2"),
        h.make_node("MatMul", ["r2", "w3"], ["y"], name="mm3"),
    ]
    g = h.make_graph(
        nodes, "chain", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, K0])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 512])], [nh.from_array(v, k) for k, v in w.items()],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def _np_forward(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    return np.maximum(np.maximum(x @ w["w1"], 0) @ w["w2"], 0) @ w["w3"]


def _np_rtn(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric round to nearest in blocks of B along K: scale = max|w| / (2^(bits-1) - 1)."""
    k, n = w.shape
    blk = w.reshape(k // B, B, n).astype(np.float64)
    top = 2 ** (bits - 1) - 1
    s = np.abs(blk).max(axis=1, keepdims=True) / top
    return (np.clip(np.round(blk / s), -top - 1, top) * s).reshape(k, n)


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


def _bits(m: onnx.ModelProto) -> dict[str, int]:
    return {
        n.name: next(a.i for a in n.attribute if a.name == "bits")
        for n in m.graph.node
        if n.op_type == "MatMulNBits"
    }


def test_auto_keeps_the_matmul_whose_4bit_weights_cost_most_8bit() -> None:
    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((96, 4, K0)).astype(np.float32)}
    m = _chain()
    # independent: each MatMul's gain when it alone is 8-bit and the others 4-bit (numpy, own samples)
    w = _weights()
    xs = rng.standard_normal((64, 4, K0)).astype(np.float32)
    ref = _np_forward(xs, w)
    four = {k: _np_rtn(v, 4) for k, v in w.items()}
    base = sqnr_db(ref, _np_forward(xs, four))
    gains = {k: sqnr_db(ref, _np_forward(xs, {**four, k: _np_rtn(w[k], 8)})) - base for k in w}
    expected = max(gains, key=gains.__getitem__)
    assert (
        expected == "w2" and gains["w2"] > max(gains["w1"], gains["w3"]) + 2.0
    )  # measured 3.95 vs 0.91 / 1.01

    auto = edgequant.quantize(m, data, weight_8bit=["auto"], **KW)
    plain = edgequant.quantize(m, data, **KW)
    section = auto.report["weight_8bit"]
    rows = {r["weight"]: r for r in section["matmuls"]}
    assert {k for k, r in rows.items() if r["bits"] == 8} == {expected}
    assert max(rows, key=lambda k: rows[k]["gain_db"]) == expected
    for k in w:  # the pipeline's gains on its 8 judge samples agree with numpy's on 64 others
        assert rows[k]["gain_db"] == pytest.approx(gains[k], abs=2.0)  # measured 5.24 / 0.67 / 0.64 dB
    assert "not met" in section["stopped"] and section["share_8bit"] == pytest.approx(0.2)
    assert all("over the cap" in rows[k]["why"] for k in ("w1", "w3"))  # 60 % of the values with w2
    assert section["samples"] == 8 and "not the check's" in section["measured_on"]
    assert _bits(auto.model) == {"mm1": 4, "mm2": 8, "mm3": 4}
    assert _bits(plain.model) == {"mm1": 4, "mm2": 4, "mm3": 4}
    assert "weight_8bit auto" in auto.plan.tensors["w2"].note
    # end to end, own ORT sessions on fresh samples: the chosen 8-bit MatMul buys what numpy says
    x = rng.standard_normal((32, 4, K0)).astype(np.float32)
    f = _run(m, x)
    gain = sqnr_db(f, _run(auto.model, x)) - sqnr_db(f, _run(plain.model, x))
    assert gain > 2.9  # measured 4.88 dB (17.62 vs 12.73 dB)


def test_auto_without_data_is_refused() -> None:
    with pytest.raises(edgequant.errors.DataError, match="weight_8bit auto"):
        edgequant.quantize(_chain(), None, weight_8bit=["auto"], **KW)


def test_cli_weight_8bit_auto(tmp_path: Path) -> None:
    """``--weight-8bit auto`` on the command line: the same choice, in the report file."""
    from typer.testing import CliRunner

    from edgequant.cli import app

    onnx.save(_chain(), tmp_path / "chain.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).standard_normal((96, 4, K0)).astype(np.float32))
    args = ["quantize", str(tmp_path / "chain.onnx"), "--calib-data", str(tmp_path / "d.npz"), "-o",
            str(tmp_path / "q"), "--method", "weight-only", "--weight-bits", "4", "--block-size", str(B),
            "--calib-samples", "32", "--check-samples", "16", "--weight-8bit", "auto"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(
        next(p for p in (tmp_path / "q").glob("*.json") if ".plan." not in p.name).read_text()
    )
    chosen = [r["nodes"] for r in report["weight_8bit"]["matmuls"] if r["bits"] == 8]
    assert chosen == [["mm2"]]


def test_auto_without_blocked_matmuls_says_so() -> None:
    """A conv net has no MatMulNBits weight: auto chooses nothing and says why (not 'target not met')."""
    from tests.tinymodels import conv_net, images

    res = edgequant.quantize(conv_net(), images(96), weight_8bit=["auto"], **KW)
    section = res.report["weight_8bit"]
    assert section["matmuls"] == [] and "no MatMul has a blocked 4-bit weight" in section["stopped"]
    assert any("weight_8bit auto: no MatMul" in n for n in res.report["notes"])
