"""Sizes are measured against the user's file; a tied embedding/head weight stays tied (quantized once,
stored once); an output larger than the input is warned about."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import conv_net, images

import edgequant
from edgequant.result import build_report

V, D = 512, 64


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _tied(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    e = nh.from_array((rng.standard_normal((V, D)) * 0.1).astype(np.float32), "E")
    nodes = [
        h.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        h.make_node("Relu", ["emb"], ["act"], name="relu"),
        h.make_node("Transpose", ["E"], ["Et"], name="tr", perm=[1, 0]),
        h.make_node("MatMul", ["act", "Et"], ["logits"], name="head"),
    ]
    g = h.make_graph(
        nodes, "tied", [h.make_tensor_value_info("ids", T.INT64, ["N", 8])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["N", 8, V])], [e],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "tied.onnx"
    onnx.save(m, path)
    return path


@pytest.mark.parametrize(
    ("method", "min_db"), [("static", 35.5), ("weight-only", 39.0)]
)  # measured 37.7, 41.2
def test_tied_embedding_is_quantized_once(tmp_path: Path, method: str, min_db: float) -> None:
    path = _tied(tmp_path)
    ids = np.random.default_rng(1).integers(0, V, (48, 8)).astype(np.int64)
    r = edgequant.quantize(str(path), {"ids": ids[:32]}, method=method)
    out = r.save(tmp_path / method).model
    q = onnx.load(str(out))
    big = [t for t in q.graph.initializer if int(np.prod(t.dims)) == V * D]
    assert [t.data_type for t in big] == [T.INT8]  # one copy of E, int8; no float E, no float E^T
    in_bytes, out_bytes = os.path.getsize(path), os.path.getsize(out)
    assert out_bytes < in_bytes / 3  # 4-byte floats -> 1-byte ints (+ 512 scales)
    assert r.report["sizes"]["float_bytes"] == in_bytes
    assert r.report["sizes"]["file_ratio"] == pytest.approx(in_bytes / out_bytes, rel=1e-3)
    assert not [w for w in r.report["warnings"] if "larger than the input" in w]  # (the hold-out note stays)
    feeds = {"ids": ids[32:]}  # held out from calibration
    assert _sqnr(_run(path, feeds), _run(out, feeds)) >= min_db


def test_fp16_weights_behind_casts_are_compared_with_the_fp16_file(tmp_path: Path) -> None:
    m = conv_net()
    for t in list(m.graph.initializer):  # store every weight in fp16 and Cast it back, as exporters do
        if t.name.startswith("w"):
            m.graph.initializer.remove(t)
            m.graph.initializer.append(nh.from_array(nh.to_array(t).astype(np.float16), t.name + "16"))
            m.graph.node.insert(
                0, h.make_node("Cast", [t.name + "16"], [t.name], name="cast_" + t.name, to=T.FLOAT)
            )
    path = tmp_path / "half.onnx"
    onnx.save(m, path)
    r = edgequant.quantize(str(path), images(24), calib_samples=16)
    out = r.save(tmp_path / "o").model
    in_bytes = os.path.getsize(path)
    sizes = r.report["sizes"]
    assert sizes["float_bytes"] == in_bytes and sizes["float_repaired_bytes"] > in_bytes  # fp32 expansion
    assert sizes["compression_ratio"] == pytest.approx(in_bytes / sizes["packed_bytes"], rel=1e-3)
    assert sizes["file_ratio"] == pytest.approx(in_bytes / os.path.getsize(out), rel=1e-3)


def test_output_larger_than_input_is_warned(tmp_path: Path) -> None:
    path = tmp_path / "net.onnx"
    onnx.save(conv_net(), path)
    r = edgequant.quantize(str(path), images(24), calib_samples=16)
    r.input_bytes = 100  # pretend the user's file was 100 bytes
    rep = build_report(r, seconds={}, calibration=None, notes=[], warnings=[], cpu="", check={})
    assert any("larger than the input model" in w for w in rep["warnings"])
    r.input_bytes = 10**9
    rep = build_report(r, seconds={}, calibration=None, notes=[], warnings=[], cpu="", check={})
    assert not any("larger than the input model" in w for w in rep["warnings"])
