"""Zero Pad nodes fold into the Conv / AveragePool pads after them (exact), and nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.model.fold_pad import fold_zero_pads
from edgequant.runtime import OrtRuntime
from tests.tinymodels import ort_ran_ops


def padded_net() -> onnx.ModelProto:
    """Pad(TF 'same', zero) -> Conv -> Relu -> Pad(zero) -> AveragePool(count_include_pad) ->
    Pad(zero) -> MaxPool (not foldable: MaxPool pads with -inf) -> Pad(reflect) -> Conv (not foldable)."""
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    w2 = nh.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    same = nh.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "same")
    one = nh.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "one")
    zero = nh.from_array(np.array(0.0, np.float32), "zero")
    nodes = [
        h.make_node("Pad", ["x", "same", "zero"], ["p0"], name="pad0"),
        h.make_node("Conv", ["p0", "w"], ["c"], name="conv", strides=[2, 2], pads=[0, 0, 0, 0]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("Pad", ["r", "one"], ["p1"], name="pad1"),
        h.make_node("AveragePool", ["p1"], ["a"], name="avg", kernel_shape=[3, 3], count_include_pad=1),
        h.make_node("Pad", ["a", "one"], ["p2"], name="pad2"),
        h.make_node("MaxPool", ["p2"], ["m"], name="max", kernel_shape=[3, 3]),
        h.make_node("Pad", ["m", "one"], ["p3"], name="pad3", mode="reflect"),
        h.make_node("Conv", ["p3", "w2"], ["y"], name="conv2"),
    ]
    g = h.make_graph(
        nodes,
        "padded",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 16, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 4, 8, 8])],
        [w, w2, same, one, zero],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_fold_is_exact_and_selective() -> None:
    model = padded_net()
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert fold_zero_pads(folded) == 2
    left = [n.name for n in folded.graph.node if n.op_type == "Pad"]
    assert left == ["pad2", "pad3"]
    conv = next(n for n in folded.graph.node if n.name == "conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [0, 0, 1, 1]
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    rt = OrtRuntime()
    ref, got = rt.run(model, {"x": x})["y"], rt.run(folded, {"x": x})["y"]
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_quantized_graph_runs_the_conv_as_an_integer_kernel(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)
    res = edgequant.quantize(padded_net(), x)
    assert any("zero Pad" in n for n in res.report["notes"])
    ops = ort_ran_ops(res.model, tmp_path)
    assert ops["Pad"] == 2 and ops["QLinearConv"] >= 1


def torch_same_padded_net(path: Path) -> onnx.ModelProto:
    """A TF-"same" padded Conv -> ReLU6 -> Conv exported by torch's legacy exporter, which writes each
    constant ``F.pad`` as Pad(x, Cast(Reshape(Transpose(Slice(Reshape(Concat(pads,
    ConstantOfShape(...)))))))) from Constant nodes (EfficientNet-Lite0's 17 Pads look like this)."""
    import torch
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2)
            self.c2 = torch.nn.Conv2d(8, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu6(self.c1(F.pad(x, [0, 1, 0, 1])))
            return self.c2(F.pad(y, [1, 1, 1, 1]))

    torch.manual_seed(0)
    torch.onnx.export(
        Net().eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )  # fmt: skip
    return onnx.load(str(path))


def test_pads_computed_from_constants_fold_too(tmp_path: Path) -> None:
    model = torch_same_padded_net(tmp_path / "net.onnx")
    ops = {n.op_type for n in model.graph.node}
    assert {"Pad", "ConstantOfShape"} <= ops  # the exporter's form, not a constant pads input
    x = np.random.default_rng(2).standard_normal((32, 3, 16, 16)).astype(np.float32)
    res = edgequant.quantize(model, x)
    assert not any(n.op_type in ("Pad", "ConstantOfShape") for n in res.model.graph.node)
    ran = ort_ran_ops(res.model, tmp_path)
    assert "Pad" not in ran and ran["QLinearConv"] == 1  # the last Conv writes the float output
    ref = OrtRuntime().run(model, {"x": x})["y"]
    got = OrtRuntime().run(res.model, {"x": x})["y"]
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))
    assert sqnr > 36.0  # measured 38.0 dB


def test_large_constant_of_shape_stays_a_node() -> None:
    from edgequant.model.repair import GROWN_MAX_BYTES, fold_constants

    shape = nh.from_array(np.array([64, 1024], np.int64), "shape")  # 256 KiB of zeros if folded
    g = h.make_graph(
        [h.make_node("ConstantOfShape", ["shape"], ["z"], name="zeros"), h.make_node("Add", ["x", "z"], ["y"])],
        "big", [h.make_tensor_value_info("x", T.FLOAT, [64, 1024])],
        [h.make_tensor_value_info("y", T.FLOAT, [64, 1024])], [shape],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    assert 64 * 1024 * 4 > GROWN_MAX_BYTES
    assert fold_constants(m) == 0
    assert [n.op_type for n in m.graph.node] == ["ConstantOfShape", "Add"]
