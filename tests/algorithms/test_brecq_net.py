"""Block reconstruction's numpy block (``brecq_net``): the blocks it finds, its forward against ONNX
Runtime and its weight gradients against finite differences of its own loss."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.algorithms.brecq_net import BlockNet, constants, conv, conv_back, find_blocks
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import images, relu6_net

RT = OrtRuntime(allow_spinning=False)


def _conv_model(w: np.ndarray, b: np.ndarray, **attrs: object) -> onnx.ModelProto:
    node = h.make_node("Conv", ["x", "w", "b"], ["y"], name="c", **attrs)
    g = h.make_graph(
        [node],
        "c",
        [h.make_tensor_value_info("x", T.FLOAT, None)],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(w, "w"), nh.from_array(b, "b")],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("cin", "cout", "group", "k", "stride", "pad"),
    [(4, 6, 1, 3, 2, 1), (6, 6, 6, 3, 1, 1), (6, 6, 6, 5, 2, 2), (4, 8, 2, 1, 1, 0), (3, 5, 1, 3, 2, 0)],
)
def test_conv_matches_ort_and_its_gradients_match_finite_differences(
    cin: int, cout: int, group: int, k: int, stride: int, pad: int
) -> None:
    rng = np.random.default_rng(cin * 100 + k)
    x = rng.standard_normal((2, cin, 9, 9)).astype(np.float32)
    w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    attrs = {"group": group, "strides": [stride, stride], "pads": [pad] * 4, "kernel_shape": [k, k]}
    model = _conv_model(w, b, **attrs)
    node = model.graph.node[0]
    want = RT.run(model, {"x": x})["y"]
    got = conv(x, w, b, node)
    assert np.abs(got - want).max() < 1e-4  # measured 2e-6
    gy = rng.standard_normal(got.shape).astype(np.float32)
    gx, gw = conv_back(x, w, gy, node)
    assert gx is not None
    dx, dw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    eps = 1e-2

    def loss(xx: np.ndarray, ww: np.ndarray) -> float:  # linear in each: central differences are exact
        return float(
            np.sum(gy * conv(xx.astype(np.float32), ww.astype(np.float32), None, node), dtype=np.float64)
        )

    num_x = (loss(x + eps * dx, w) - loss(x - eps * dx, w)) / (2 * eps)
    num_w = (loss(x, w + eps * dw) - loss(x, w - eps * dw)) / (2 * eps)
    assert float(np.sum(gx * dx)) == pytest.approx(num_x, rel=1e-3)  # measured 1e-5 relative
    assert float(np.sum(gw * dw)) == pytest.approx(num_w, rel=1e-3)


def test_relu6_net_is_one_block_whose_forward_matches_ort() -> None:
    model = relu6_net(0, 16)
    consts = constants(model)
    blocks = find_blocks(model, {"w1", "wd", "wp"}, consts)
    assert [(b.input, b.output, b.layers) for b in blocks] == [("x", "y", ["w1", "wd", "wp"])]
    x = images(4)
    y, _ = BlockNet(blocks[0], consts).forward(x, {})
    assert np.abs(y - RT.run(model, {"x": x})["y"]).max() < 1e-4


def test_block_weight_gradients_match_finite_differences_through_relu6() -> None:
    """d/dW of the block's squared output error, against central differences of that error (the block's
    tensors are float32 inside, hence float64 weights and a small step)."""
    model = relu6_net(0, 8)
    consts = {k: v.astype(np.float64) for k, v in constants(model).items()}  # differences of float64 losses
    (block,) = find_blocks(model, {"w1", "wd", "wp"}, consts)
    net = BlockNet(block, consts)
    x = images(3).astype(np.float64)
    target = net.forward(x, {})[0] + 0.1
    rng = np.random.default_rng(5)

    def loss(p: dict[str, np.ndarray]) -> float:
        return float(np.square(net.forward(x, p)[0] - target, dtype=np.float64).sum())

    y, env = net.forward(x, {}, keep=True)
    grads = net.grads(env, 2.0 * (y - target), {})
    for name in ("w1", "wd", "wp"):
        d = rng.standard_normal(consts[name].shape).astype(np.float32)
        eps = 1e-5  # small enough that no ReLU6 kink is crossed (at 1e-3 conv1's differs by 45 %)
        num = (loss({name: consts[name] + eps * d}) - loss({name: consts[name] - eps * d})) / (2 * eps)
        assert float(np.sum(grads[name] * d)) == pytest.approx(num, rel=1e-2)  # measured 2e-5 .. 2e-3


def test_a_residual_add_is_inside_the_block_and_the_skip_is_not_a_cut() -> None:
    """x -> Conv -> Relu -> Conv -> Add(x) -> Relu -> Conv: the first block ends after the Add's Relu."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32), n)
        for n in ("a", "b", "c")
    ]
    nodes = [
        h.make_node("Conv", ["x", "a"], ["t1"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["t1"], ["t2"]),
        h.make_node("Conv", ["t2", "b"], ["t3"], pads=[1, 1, 1, 1]),
        h.make_node("Add", ["t3", "x"], ["t4"]),
        h.make_node("Relu", ["t4"], ["t5"]),
        h.make_node("Conv", ["t5", "c"], ["y"], pads=[1, 1, 1, 1]),
    ]
    g = h.make_graph(
        nodes,
        "res",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 4, 6, 6])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 4, 6, 6])],
        inits,
    )
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    (block,) = find_blocks(model, {"a", "b", "c"}, constants(model))
    assert (block.input, block.output, block.layers) == ("x", "t5", ["a", "b"])
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name="t5"))
    y, _ = BlockNet(block, constants(model)).forward(x, {})
    assert np.abs(y - RT.run(probe, {"x": x})["t5"]).max() < 1e-4
