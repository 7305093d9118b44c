"""Compliance checks: findings on a model that breaks TI-NPU-class rules, the check command, ORT's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.report.render import render_markdown
from edgequant.targets.check import check_model


def six_ten_gelu(seed: int = 0) -> onnx.ModelProto:
    """x[N,1,32,1] -> Conv 1->6 (5x1) -> Relu -> Conv 6->10 (3x1) -> GELU (erf) -> GAP -> Flatten -> Gemm 10->4."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return nh.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [
        w("w1", 6, 1, 5, 1), w("b1", 6), w("w2", 10, 6, 3, 1), w("b2", 10), w("wf", 4, 10), w("bf", 4),
        nh.from_array(np.array(1.4142135, np.float32), "sqrt2"), nh.from_array(np.array(1.0, np.float32), "one"),
        nh.from_array(np.array(0.5, np.float32), "half"),
    ]  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[2, 0, 2, 0]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 0, 1, 0]),
        h.make_node("Div", ["c2", "sqrt2"], ["g1"], name="gelu_div"),
        h.make_node("Erf", ["g1"], ["g2"], name="gelu_erf"),
        h.make_node("Add", ["g2", "one"], ["g3"], name="gelu_add"),
        h.make_node("Mul", ["c2", "g3"], ["g4"], name="gelu_mul"),
        h.make_node("Mul", ["g4", "half"], ["g5"], name="gelu_half"),
        h.make_node("GlobalAveragePool", ["g5"], ["gap"], name="gap"),
        h.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        h.make_node("Gemm", ["flat", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    g = h.make_graph(
        nodes, "six_ten_gelu", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 32, 1])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def signal(n: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 32, 1)).astype(np.float32)


def test_six_ten_channels_and_gelu_get_the_right_findings() -> None:
    r = edgequant.quantize(six_ten_gelu(), {"x": signal()}, target="ti-npu")
    rep = r.report["compliance"]
    got = {(f["node"], f["rule"], f["found"], f["required"]) for f in rep["findings"]}
    expected = {  # by hand from the model: TI NPU guide limits
        ("conv1", "out_channels", "6", "a multiple of 4"),
        ("conv2", "in_channels", "6", "a multiple of 4"),
        ("conv2", "out_channels", "10", "a multiple of 4"),
        ("fc", "in_features", "10", "a multiple of 4 and at least 16 at 8-bit weights"),  # both rules at once
    }
    assert expected <= got
    gelu = {f["node"] for f in rep["findings"] if f["rule"] == "op support" and f["kind"] == "gelu"}
    assert gelu == {"gelu_div", "gelu_erf", "gelu_add", "gelu_mul", "gelu_half"}
    fixes = {f["node"]: f["fix"] for f in rep["findings"] if f["rule"] == "out_channels"}
    assert fixes["conv1"] == "pad output channels 6 -> 8 with zero filters (exact; --fix)"
    fc_fix = next(f["fix"] for f in rep["findings"] if f["rule"] == "in_features")
    assert fc_fix == (  # 16 = the smallest count that is a multiple of 4 and at least 16
        "widen the layer before it so the FC gets 16 inputs (a multiple of 4 and at least 16 at 8-bit weights)"
    )
    assert all(f["fix"] == "replace GELU with ReLU or HardSwish before export" for f in rep["findings"]
               if f["kind"] == "gelu")  # fmt: skip
    assert all(f["consequence"] == "runs on host CPU" for f in rep["findings"])
    # MACs by hand (batch 1): conv1 32·6·5 = 960, conv2 32·10·6·3 = 5760, fc 40; none on the NPU
    assert rep["macs"] == 960 + 5760 + 40 and rep["macs_on_target"] == 0
    assert rep["params"] == 30 + 180 + 40 and rep["param_share_on_target"] == 0.0


def test_the_same_model_is_compliant_on_cpu_and_fewer_rules_break_elsewhere() -> None:
    cpu = edgequant.quantize(six_ten_gelu(), {"x": signal()})
    assert cpu.report["compliance"]["compliant"] and cpu.report["compliance"]["mac_share_on_target"] == 1.0
    cm = edgequant.quantize(six_ten_gelu(), {"x": signal()}, target="cmsis-nn").report["compliance"]
    assert {f["kind"] for f in cm["findings"]} == {"gelu"}
    assert cm["macs_on_target"] == cm["macs"]


def test_check_command_exit_codes_and_json(tmp_path: Path) -> None:
    r = edgequant.quantize(six_ten_gelu(), {"x": signal()}, target="ti-npu")
    q = tmp_path / "q.onnx"
    onnx.save(r.model, q)
    res = CliRunner().invoke(app, ["check", str(q), "--target", "ti-npu", "--json"])
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["target"] == "ti-npu" and len(data["findings"]) == len(r.report["compliance"]["findings"])
    ok = CliRunner().invoke(app, ["check", str(q), "--target", "onnx"])
    assert ok.exit_code == 0 and "cpu: compliant" in ok.output
    f = tmp_path / "float.onnx"
    onnx.save(six_ten_gelu(), f)
    bad = CliRunner().invoke(app, ["check", str(f), "--target", "ti-npu"])
    assert bad.exit_code == 2 and "no QuantizeLinear/DequantizeLinear" in bad.output
    unknown = CliRunner().invoke(app, ["check", str(q), "--target", "tpu"])
    assert unknown.exit_code == 2 and "known targets" in unknown.output
    missing = CliRunner().invoke(app, ["check", str(tmp_path / "nope.onnx"), "--target", "cpu"])
    assert missing.exit_code == 2


def test_ort_quantize_static_output_is_checked(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from tinymodels import conv_net, images

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(conv_net(), src)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": images(4, seed=s)} for s in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    model = onnx.load(dst)
    assert check_model(model, "cpu")["compliant"]
    ti = check_model(model, "ti-npu")
    rules = {f["rule"] for f in ti["findings"]}
    # ORT defaults: asymmetric activations with float scales, float weight scales
    assert {"activation symmetry", "activation scale", "weight scale"} <= rules
    assert not ti["compliant"] and ti["mac_share_on_target"] == 0.0
    vitis = check_model(model, "vitis-dpu")
    assert "weight granularity" in {
        f["rule"] for f in vitis["findings"]
    }  # per-channel where per-tensor is required


def test_compliance_table_in_the_markdown_report() -> None:
    comp = check_model(edgequant.quantize(six_ten_gelu(), {"x": signal()}, target="ti-npu").model, "ti-npu")
    data = {
        "model": "m", "task": "classification", "samples": 1, "labeled": False, "primary_metric": "agreement",
        "recommendation": {"method": "int8-static", "reason": "x"}, "limits": {},
        "methods": [{"method": "int8-static", "status": "ok", "compliance": comp}],
    }  # fmt: skip
    md = render_markdown(data)
    assert "## Target compliance" in md and "| int8-static | ti-npu | no |" in md
    assert "pad output channels 6 -> 8 with zero filters (exact; --fix)" in md


@pytest.mark.parametrize("target", ["vitis-dpu"])
def test_own_power_of_two_biases_are_checked(target: str) -> None:
    rep = check_model(edgequant.quantize(six_ten_gelu(), {"x": signal()}, target=target).model, target)
    assert all(f["rule"] != "weight scale" for f in rep["findings"])


def test_fix_pads_channels_exactly() -> None:
    import onnxruntime as ort

    from edgequant.model.target_fix import pad_channels
    from edgequant.targets import get

    model = six_ten_gelu()
    fixed, notes = pad_channels(model, get("ti-npu"))
    w1 = next(nh.to_array(t) for t in fixed.graph.initializer if t.name == "w1")
    w2 = next(nh.to_array(t) for t in fixed.graph.initializer if t.name == "w2")
    assert w1.shape == (8, 1, 5, 1) and not w1[6:].any() and w2.shape == (10, 8, 3, 1) and not w2[:, 6:].any()
    assert any("'conv1' output channels 6 -> 8" in n for n in notes)
    assert any("'conv2' keeps 10 output channels" in n and "Div 'gelu_div'" in n for n in notes)
    x = signal(8)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(fixed.SerializeToString()).run(None, {"x": x})[0]
    # zero filters: exact in real arithmetic; float32 kernels sum 8 channels in another order (a few ulp)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    r = edgequant.quantize(model, {"x": signal()}, target="ti-npu", fix=True)
    rules = {(f["node"], f["rule"]) for f in r.report["compliance"]["findings"]}
    assert ("conv1", "out_channels") not in rules and ("conv2", "in_channels") not in rules
    assert ("conv2", "out_channels") in rules  # not exact behind the GELU: left, with the reason in the plan
    assert any("output channels 6 -> 8" in n for n in r.plan.notes)
