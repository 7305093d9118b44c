"""Tiny nets for the algorithm passes, built in a few lines and seeded."""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def bn_folded_net(seed: int = 0, c: int = 8) -> onnx.ModelProto:
    """Conv(3->c, per-channel gains spread over 3 decades, as a folded BN leaves them) -> Relu ->
    depthwise Conv -> Relu -> Conv(c->4) -> Clip(0, 6) -> Conv(4->4): two equalizable pairs and a
    ReLU6 pair that must be skipped."""
    rng = np.random.default_rng(seed)
    gains = np.logspace(-1.5, 1.0, c).astype(np.float32)
    rng.shuffle(gains)
    w1 = (rng.standard_normal((c, 3, 3, 3)) * 0.3 * gains[:, None, None, None]).astype(np.float32)
    b1 = (rng.standard_normal(c) * 0.1 * gains).astype(np.float32)
    wd = (rng.standard_normal((c, 1, 3, 3)) * 0.5 / np.sqrt(gains)[:, None, None, None]).astype(np.float32)
    bd = (rng.standard_normal(c) * 0.1).astype(np.float32)
    wp = (rng.standard_normal((4, c, 1, 1)) * 0.4).astype(np.float32)
    w4 = (rng.standard_normal((4, 4, 1, 1)) * 0.4).astype(np.float32)
    inits = [
        nh.from_array(w1, "w1"), nh.from_array(b1, "b1"), nh.from_array(wd, "wd"), nh.from_array(bd, "bd"),
        nh.from_array(wp, "wp"), nh.from_array(w4, "w4"),
        nh.from_array(np.float32(0.0), "zero"), nh.from_array(np.float32(6.0), "six"),
    ]  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "wd", "bd"], ["cd"], name="dw", pads=[1, 1, 1, 1], group=c),
        h.make_node("Relu", ["cd"], ["rd"], name="relu_dw"),
        h.make_node("Conv", ["rd", "wp"], ["cp"], name="pw"),
        h.make_node("Clip", ["cp", "zero", "six"], ["r6"], name="relu6"),
        h.make_node("Conv", ["r6", "w4"], ["y"], name="last"),
    ]
    g = h.make_graph(
        nodes,
        "bn_folded",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 12, 12])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 4, 12, 12])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def fan_in_weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    """A seeded float32 weight ``name`` of ``shape``: standard normal / sqrt(fan-in) (fan-in: ``shape[1:]``)."""
    fan_in = int(np.prod(shape[1:]))
    return nh.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 12, 12)).astype(np.float32)


def conv3(seed: int = 0) -> onnx.ModelProto:
    """Conv(3->16, 3x3) -> Relu -> Conv(16->16, 3x3) -> Relu -> Conv(16->8, 1x1): 4-bit AdaRound's test net."""
    rng = np.random.default_rng(seed)

    w = partial(fan_in_weight, rng)

    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    b1 = nh.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "b1")
    g = h.make_graph(
        nodes,
        "conv3",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 12, 12])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 8, 12, 12])],
        [w("w1", 16, 3, 3, 3), b1, w("w2", 16, 16, 3, 3), w("w3", 8, 16, 1, 1)],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def relu6_net(seed: int = 0, c: int = 8) -> onnx.ModelProto:
    """``bn_folded_net`` with every activation a ReLU6 (``Clip(0, 6)``), as in MobileNet/EfficientNet-Lite:
    Conv(3->c, gains over 3 decades) -> ReLU6 -> depthwise Conv -> ReLU6 -> Conv(c->4).  The small-gain
    channels never reach 6 on ``images()``; the large ones do."""
    rng = np.random.default_rng(seed)
    gains = np.logspace(-1.5, 1.0, c).astype(np.float32)
    rng.shuffle(gains)
    w1 = (rng.standard_normal((c, 3, 3, 3)) * 0.3 * gains[:, None, None, None]).astype(np.float32)
    b1 = (rng.standard_normal(c) * 0.1 * gains).astype(np.float32)
    wd = (rng.standard_normal((c, 1, 3, 3)) * 0.5 / np.sqrt(gains)[:, None, None, None]).astype(np.float32)
    bd = (rng.standard_normal(c) * 0.1).astype(np.float32)
    wp = (rng.standard_normal((4, c, 1, 1)) * 0.4).astype(np.float32)
    inits = [
        nh.from_array(w1, "w1"), nh.from_array(b1, "b1"), nh.from_array(wd, "wd"), nh.from_array(bd, "bd"),
        nh.from_array(wp, "wp"), nh.from_array(np.float32(0.0), "zero"), nh.from_array(np.float32(6.0), "six"),
    ]  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Clip", ["c1", "zero", "six"], ["r1"], name="relu6_1"),
        h.make_node("Conv", ["r1", "wd", "bd"], ["cd"], name="dw", pads=[1, 1, 1, 1], group=c),
        h.make_node("Clip", ["cd", "zero", "six"], ["rd"], name="relu6_dw"),
        h.make_node("Conv", ["rd", "wp"], ["y"], name="pw"),
    ]
    g = h.make_graph(
        nodes,
        "relu6",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 12, 12])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 4, 12, 12])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def per_tensor_weights(model: onnx.ModelProto, bits: int) -> onnx.ModelProto:
    """Every initializer named ``w*`` fake-quantized symmetric per tensor in numpy (independent of the
    exporter)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    levels = 2 ** (bits - 1) - 1
    for t in out.graph.initializer:
        if t.name.startswith("w"):
            w = nh.to_array(t)
            s = np.abs(w).max() / levels
            t.CopyFrom(
                nh.from_array((np.clip(np.round(w / s), -levels - 1, levels) * s).astype(np.float32), t.name)
            )
    return out
