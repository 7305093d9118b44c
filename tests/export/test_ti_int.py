"""``--format ti-npu-int``: TI's integer-only NPU form against the QDQ model, in our own ORT sessions.

Each requantized tensor of the integer model is computed from the QDQ model's own input codes (the
test rewires the integer graph to read them), so each layer is compared on its own: equal codes,
or 1 LSB apart where the value before rounding is a tie (the NPU's shift rounds half up, ONNX
Runtime's QuantizeLinear half to even) or, with 4-bit weights, where the 8-bit multiplier moves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as h
from tinymodels import conv_net, images
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.errors import RecipeError, UnsupportedError
from edgequant.export.ti_int import requant_params, to_ti_npu_int
from edgequant.targets import get

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _codes(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [
        n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    ]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(
        onnx.ValueInfoProto(name=n) for n in names if n not in {o.name for o in m.graph.output}
    )
    return list(ort.InferenceSession(m.SerializeToString()).run(names, feeds))


def per_layer(
    qdq: onnx.ModelProto, integer: onnx.ModelProto, x: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """|code difference| per QDQ code tensor, each layer fed the QDQ model's own input codes."""
    names = _codes(qdq)
    ref = dict(zip(names, _run(qdq, x, names), strict=True))
    fed = onnx.ModelProto()
    fed.CopyFrom(integer)
    for node in fed.graph.node:
        node.input[:] = [f"{t}@qdq" if t in ref else t for t in node.input]
    fed.graph.input.extend(h.make_tensor_value_info(f"{t}@qdq", TensorProto.FLOAT, None) for t in names)
    got = _run(fed, {**x, **{f"{t}@qdq": v.astype(np.float32) for t, v in ref.items()}}, names)
    return {t: np.abs(ref[t].astype(np.int64) - g) for t, g in zip(names, got, strict=True)}


def _integer(r: edgequant.QuantResult) -> onnx.ModelProto:
    model, _, _ = to_ti_npu_int(r.model, get("ti-npu"))
    assert not any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    ops = [n.op_type for n in model.graph.node]
    assert {"Floor", "Clip", "Div", "Mul"} <= set(ops) and ops.count("QuantizeLinear") == 1  # the input only
    return model


@pytest.mark.parametrize("bits", [8, 4])
def test_random_data_matches_the_qdq_codes_within_one_lsb(bits: int) -> None:
    r = edgequant.quantize(conv_net(), {"x": images(48)}, target="ti-npu", weight_bits=bits)
    x = {"x": np.random.default_rng(7).standard_normal((16, 3, 16, 16)).astype(np.float32)}
    diff = per_layer(r.model, _integer(r), x)
    assert len(diff) >= 7
    convs = {"r1_q", "rd_q", "cp_q"}  # requantized conv outputs; the rest: Add, Concat, GAP, Flatten, input
    for t, d in diff.items():
        assert d.max() <= (1 if t in convs else 0), t
    total = np.concatenate([d.ravel() for d in diff.values()])
    # measured: 8-bit 0.14 % of all codes differ (ties), 4-bit 0.85 % (ties + the 8-bit multiplier)
    assert total.mean() < 0.03


def test_real_data_the_example_matches_layer_by_layer_and_end_to_end() -> None:
    calib = dict(np.load(EXAMPLES / "shapes_calib.npz"))
    ev = np.load(EXAMPLES / "shapes_eval.npz")
    r = edgequant.quantize(str(EXAMPLES / "shapes_cnn.onnx"), calib, target="ti-npu")
    integer = _integer(r)
    x = {"image": ev["image"][:96].astype(np.float32)}
    diff = per_layer(r.model, integer, x)
    for t, d in diff.items():  # conv outputs: ties only; Add / Concat / pooling / Flatten: exact
        assert d.max() <= (1 if ("Relu_output" in t or "Conv_output" in t) and "relu/" not in t else 0), t
    conv_codes = [d for t, d in diff.items() if "Relu_output" in t or "Conv_output" in t]
    assert np.mean(np.concatenate([d.ravel() for d in conv_codes])) < 0.01  # measured 0.10 %
    # end to end (a difference could grow through the layers): the classes agree
    q = ort.InferenceSession(r.model.SerializeToString()).run(None, x)[0]
    i = ort.InferenceSession(integer.SerializeToString()).run(None, x)[0]
    assert np.mean(q.argmax(1) == i.argmax(1)) >= 0.97  # measured 1.0 on 96 evaluation images
    labels = ev["labels"][:96]
    assert abs(np.mean(i.argmax(1) == labels) - np.mean(q.argmax(1) == labels)) <= 0.02


def test_requant_multiplier_and_shift() -> None:
    m, n = requant_params(np.array([2.0**-9, 2.0**-1, 4.0]), 8)
    assert m.tolist() == [1.0, 1.0, 4.0] and n.tolist() == [9.0, 1.0, 0.0]  # powers of two: exact
    r = np.random.default_rng(0).uniform(1e-4, 0.9, 200)
    m, n = requant_params(r, 8)
    assert np.all((m >= 128) & (m <= 255)) and np.all(m == np.round(m))
    assert np.all(np.abs(m / 2.0**n - r) / r <= 2.0**-8)  # half a step of an 8-bit multiplier at least 128


def test_cli_writes_both_forms_and_refuses_other_targets(tmp_path: Path) -> None:
    import json

    args = ["quantize", str(EXAMPLES / "shapes_cnn.onnx"), "--calib-data", str(EXAMPLES / "shapes_calib.npz")]
    res = CliRunner().invoke(
        app, [*args, "--target", "ti-npu", "--format", "ti-npu-int", "-o", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert (
        "shapes_cnn_int8_ti-npu.onnx" in names and "shapes_cnn_int8_ti-npu_ti-npu-int.onnx" in names
    )  # QDQ stays
    rep = json.loads((tmp_path / "shapes_cnn_int8_ti-npu.json").read_text())["ti_npu_int"]
    assert rep["per_layer_max_lsb"] <= 1 and "half to even" in rep["reason"]
    integer = onnx.load(tmp_path / "shapes_cnn_int8_ti-npu_ti-npu-int.onnx")
    assert not any(n.op_type == "DequantizeLinear" for n in integer.graph.node)
    bad = CliRunner().invoke(
        app, [*args, "--target", "vitis-dpu", "--format", "ti-npu-int", "-o", str(tmp_path / "b")]
    )
    assert bad.exit_code == 2 and "--format ti-npu-int" in bad.output and not (tmp_path / "b").exists()
    with pytest.raises(RecipeError, match="target 'ti-npu' only"):
        edgequant.quantize(conv_net(), {"x": images(8)}, format="ti-npu-int")


def test_a_host_op_has_no_integer_form() -> None:
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w", (4, 1, 3, 1)), ("b", (4,)), ("wf", (3, 4)), ("bf", (3,)))]  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 0, 1, 0]),
        h.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
        h.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    g = h.make_graph(nodes, "sig", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 1])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)  # fmt: skip
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((16, 1, 16, 1)).astype(np.float32)
    r = edgequant.quantize(model, {"x": x}, target="ti-npu")
    with pytest.raises(UnsupportedError, match="'sigmoid' \\(Sigmoid\\) has no integer form"):
        to_ti_npu_int(r.model, get("ti-npu"))
