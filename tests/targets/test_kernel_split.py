"""``--fix`` splits a kernel taller than the target allows into partial convs, summed (exact on float)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.model.target_fix import split_tall_kernels
from edgequant.targets import get

SQNR_FIXED = 46.0  # measured 48.9 dB with --fix (48.9 dB without: the partial sums cost < 0.1 dB)


def tall(k: int = 9, pads: int = 4, stride: int = 1, seed: int = 0) -> onnx.ModelProto:
    """x[N,1,40,2] -> Conv 1->4 (3x1) -> Relu -> Conv 4->8 (k x 2, stride s) -> Relu -> GAP -> Flatten -> Gemm 8->16."""
    rng = np.random.default_rng(seed)
    inits = [nh.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in (
        ("w1", (4, 1, 3, 1)), ("b1", (4,)), ("w2", (8, 4, k, 2)), ("b2", (8,)), ("wf", (16, 8)), ("bf", (16,)))]  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 0, 1, 0]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node(
            "Conv", ["r1", "w2", "b2"], ["c2"], name="tall", pads=[pads, 1, pads, 0], strides=[stride, 1]
        ),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    g = h.make_graph(nodes, "tall", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 40, 2])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 16])], inits)  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def data(n: int = 48, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 40, 2)).astype(np.float32)


@pytest.mark.parametrize(
    ("k", "pads", "stride", "rows"),
    [(9, 4, 1, "0-3, 4-8"), (14, 0, 2, "0-6, 7-13"), (15, 3, 3, "0-4, 5-9, 10-14")],
)
def test_split_is_exact_on_float(k: int, pads: int, stride: int, rows: str) -> None:
    model = tall(k, pads, stride)
    fixed, notes = split_tall_kernels(model, get("ti-npu"))
    convs = [n for n in fixed.graph.node if n.op_type == "Conv"]
    inits = {t.name: nh.to_array(t) for t in fixed.graph.initializer}
    heights = [inits[c.input[1]].shape[2] for c in convs]
    assert max(heights) <= 7 and sum(heights) == k + 3  # conv1 (3) + the parts (k rows in all)
    assert any(f"'tall' {k}-tall kernel split into" in n and f"rows {rows}" in n for n in notes), notes
    x = data(16)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(fixed.SerializeToString()).run(None, {"x": x})[0]
    # exact in real arithmetic; float32 sums the rows in another order (a few ulp)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_fix_on_ti_npu_removes_the_kernel_finding_and_is_checked_against_float() -> None:
    calib = {"x": data()}
    plain = edgequant.quantize(tall(), calib, target="ti-npu")
    found = [f for f in plain.report["compliance"]["findings"] if f["rule"] == "kernel_h"]
    assert [(f["node"], f["found"], f["required"]) for f in found] == [("tall", "9", "at most 7")]
    assert "split the 9-tall kernel" in found[0]["fix"]
    fixed = edgequant.quantize(tall(), calib, target="ti-npu", fix=True)
    comp = fixed.report["compliance"]
    assert not [f for f in comp["findings"] if f["rule"] == "kernel_h"]
    assert any("'tall' 9-tall kernel split into 2 convs" in n for n in fixed.plan.notes)
    assert not [f for f in comp["findings"] if f["op"] == "Conv" and f["node"].startswith("tall_rows")]
    host = sorted({f["op"] for f in comp["findings"] if f["node"].startswith("tall_")})
    assert host == ["Add", "Pad", "Slice"]  # the glue between the parts runs on the host, and is reported
    # the tall conv's MACs move to the accelerator (measured 2.0 % -> 99.7 % of the MACs)
    assert plain.report["compliance"]["mac_share_on_target"] < 0.05 < 0.95 < comp["mac_share_on_target"]
    # the output is still checked against the original float model (held-out samples)
    assert fixed.report["check"]["kind"] == "held_out"
    assert fixed.report["check"]["output_sqnr_db"]["y"] > SQNR_FIXED


def test_grouped_tall_kernels_are_left_with_the_reason() -> None:
    model = tall()
    conv = next(n for n in model.graph.node if n.name == "tall")
    conv.attribute.append(h.make_attribute("dilations", [2, 1]))
    fixed, notes = split_tall_kernels(model, get("ti-npu"))
    assert notes == ["--fix: 'tall' keeps its 9-tall kernel: it is dilated."]
    assert [n.name for n in fixed.graph.node] == [n.name for n in model.graph.node]
