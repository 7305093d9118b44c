"""Float fusions before quantization: exact in float, and they let ORT run each Conv as QLinearConv."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import images, ort_ran_ops

import edgequant
from edgequant.model import fuse
from edgequant.model.repair import prepare
from edgequant.runtime import OrtRuntime


def _const(name: str, value: np.ndarray | float) -> onnx.TensorProto:
    return nh.from_array(np.asarray(value, np.float32), name)


def paddle_like(opset: int = 11, seed: int = 0) -> onnx.ModelProto:
    """What Paddle2ONNX writes for a MobileNetV3 block: Conv -> BatchNormalization -> hard-swish
    written as x * Clip(x + 3, 0, 6) / 6; Conv -> Add(bias) -> Mul/Add affine -> HardSigmoid * x."""
    rng = np.random.default_rng(seed)
    c = 8
    inits = [
        _const("w1", rng.standard_normal((c, 3, 3, 3)) * 0.3),
        _const("bn_s", rng.uniform(0.5, 1.5, c)),
        _const("bn_b", rng.standard_normal(c) * 0.1),
        _const("bn_m", rng.standard_normal(c) * 0.1),
        _const("bn_v", rng.uniform(0.5, 2.0, c)),
        _const("three", 3.0),
        _const("zero", 0.0),
        _const("six", 6.0),
        _const("w2", rng.standard_normal((c, c, 1, 1)) * 0.3),
        _const("b2", rng.standard_normal((1, c, 1, 1)) * 0.1),
        _const("a_mul", rng.uniform(0.5, 1.5, (c, 1, 1))),
        _const("a_add", rng.standard_normal((1, c, 1, 1)) * 0.1),
        _const("wf", rng.standard_normal((c, 4)) * 0.3),
    ]
    clip = (
        h.make_node("Clip", ["s3"], ["clip"], name="clip", min=0.0, max=6.0)
        if opset < 11
        else h.make_node("Clip", ["s3", "zero", "six"], ["clip"], name="clip")
    )
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn1"),
        h.make_node("Add", ["bn", "three"], ["s3"], name="plus3"),
        clip,
        h.make_node("Mul", ["bn", "clip"], ["m"], name="times_x"),
        h.make_node("Div", ["m", "six"], ["hs"], name="div6"),
        h.make_node("Conv", ["hs", "w2"], ["c2"], name="conv2"),
        h.make_node("Add", ["c2", "b2"], ["c2b"], name="bias2"),
        h.make_node("Mul", ["c2b", "a_mul"], ["am"], name="affine_mul"),
        h.make_node("Add", ["am", "a_add"], ["aa"], name="affine_add"),
        h.make_node("HardSigmoid", ["aa"], ["hsig"], name="hsig", alpha=1 / 6, beta=0.5),
        h.make_node("Mul", ["aa", "hsig"], ["hs2"], name="times_x2"),
        h.make_node("GlobalAveragePool", ["hs2"], ["gap"], name="gap"),
        h.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        h.make_node("MatMul", ["flat", "wf"], ["y"], name="fc"),
    ]
    g = h.make_graph(
        nodes,
        "paddle_like",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 16, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def _ops(m: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in m.graph.node)


def _max_diff(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray) -> float:
    rt = OrtRuntime()
    return float(np.abs(rt.run(a, {"x": x})["y"] - rt.run(b, {"x": x})["y"]).max())


def test_batchnorm_affine_and_hardswish_fused_exactly() -> None:
    m = paddle_like(opset=14)
    prepared, notes = prepare(m)
    ops = _ops(prepared)
    assert ops == Counter({"Conv": 2, "HardSwish": 2, "GlobalAveragePool": 1, "Flatten": 1, "MatMul": 1})
    assert any("4 BatchNormalization/per-channel Mul/Add node(s) folded" in n for n in notes)
    assert any("2 written-out hard-swish pattern(s)" in n for n in notes)
    x = images(8)
    y = OrtRuntime().run(m, {"x": x})["y"]
    assert _max_diff(m, prepared, x) <= 1e-5 * float(np.abs(y).max())


def test_old_opset_is_raised_for_hardswish_and_attribute_clip_matches() -> None:
    m = paddle_like(opset=10)  # Clip min/max as attributes; HardSwish needs opset 14
    prepared, notes = prepare(m)
    assert _ops(prepared)["HardSwish"] == 2
    assert "opset raised from 10 to 14: fusing the written-out hard-swish into HardSwish." in notes
    assert _max_diff(m, prepared, images(4, seed=3)) <= 1e-4


def test_no_fusion_when_the_intermediate_has_another_reader() -> None:
    m = paddle_like(opset=14)
    m.graph.output.append(h.make_tensor_value_info("c1", T.FLOAT, None))  # BN input is also an output
    prepared, _ = prepare(m)
    assert _ops(prepared)["BatchNormalization"] == 1
    assert _max_diff(m, prepared, images(4)) <= 1e-5


def test_channel_vector_rejects_non_channel_broadcasts() -> None:
    assert fuse._channel_vector(np.ones((1, 8, 1, 1), np.float32), 4, 8) is not None
    assert fuse._channel_vector(np.float32(2.0), 4, 8) is not None
    assert fuse._channel_vector(np.ones((1, 8, 4, 1), np.float32), 4, 8) is None  # varies along H
    assert fuse._channel_vector(np.ones((2, 8, 1, 1), np.float32), 4, 8) is None  # along the batch
    assert fuse._channel_vector(np.ones(8, np.float32), 4, 8) is None  # [8] broadcasts along W, not C


def test_every_conv_runs_as_qlinearconv_after_fusion(tmp_path: Path) -> None:
    m = paddle_like(opset=11)
    r = edgequant.quantize(m, {"x": images(32)}, calib_samples=32)
    ran = ort_ran_ops(r.model, tmp_path, "ORT_ENABLE_EXTENDED")
    # before the fusions the BN and the bias Add kept both Convs float (DQ -> Conv -> BN)
    assert ran["QLinearConv"] == 2 and ran["Conv"] == 0
    x = images(16, seed=9)
    ref, got = OrtRuntime().run(m, {"x": x})["y"], OrtRuntime().run(r.model, {"x": x})["y"]
    assert 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)) > 25.0


def _layernorm_mlp() -> onnx.ModelProto:
    """MatMul -> written-out LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) -> MatMul."""
    rng = np.random.default_rng(4)
    inits = [
        _const("w1", rng.standard_normal((16, 32)) * 0.3),
        _const("two", 2.0),
        _const("eps", 1e-5),
        _const("gamma", rng.uniform(0.5, 1.5, 32)),
        _const("beta", rng.standard_normal(32) * 0.1),
        _const("w2", rng.standard_normal((32, 4)) * 0.3),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["a"], name="fc1"),
        h.make_node("ReduceMean", ["a"], ["mu"], name="ln_mean", axes=[-1]),
        h.make_node("Sub", ["a", "mu"], ["d"], name="ln_sub"),
        h.make_node("Pow", ["d", "two"], ["d2"], name="ln_pow"),
        h.make_node("ReduceMean", ["d2"], ["var"], name="ln_var", axes=[-1]),
        h.make_node("Add", ["var", "eps"], ["ve"], name="ln_eps"),
        h.make_node("Sqrt", ["ve"], ["sd"], name="ln_sqrt"),
        h.make_node("Div", ["d", "sd"], ["n"], name="ln_div"),
        h.make_node("Mul", ["n", "gamma"], ["ng"], name="ln_gamma"),
        h.make_node("Add", ["ng", "beta"], ["nb"], name="ln_beta"),
        h.make_node("MatMul", ["nb", "w2"], ["y"], name="fc2"),
    ]
    g = h.make_graph(
        nodes,
        "ln",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_written_out_layernorm_stays_float_as_one_unit(tmp_path: Path) -> None:
    m = _layernorm_mlp()
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    r = edgequant.quantize(m, {"x": x})
    ln = [d for d in r.plan.nodes if d.node.startswith("ln_")]
    assert len(ln) == 9 and not any(d.quantized for d in ln)
    assert ln[0].reason.startswith("part of a written-out layer normalization: kept float as one unit")
    assert {d.node for d in r.plan.quantized_nodes} == {"fc1", "fc2"}
    assert "mu" not in r.plan.tensors and "var" not in r.plan.tensors and "n" not in r.plan.tensors
    ran = ort_ran_ops(r.model, tmp_path)
    # ORT fused the float chain into one normalization kernel (Simplified: RMS norm of x - mean)
    assert ran["LayerNormalization"] + ran["SimplifiedLayerNormalization"] == 1, ran
    assert ran["Pow"] == ran["Sqrt"] == ran["Div"] == 0, ran
    xe = np.random.default_rng(5).standard_normal((16, 16)).astype(np.float32)
    ref, got = OrtRuntime().run(m, {"x": xe})["y"], OrtRuntime().run(r.model, {"x": xe})["y"]
    assert 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)) > 30.0
