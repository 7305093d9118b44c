"""fp16 conversion of a graph holding ORT contrib ops (com.microsoft FastGelu, SkipLayerNormalization):
types are carried through them, they run float32 between Casts, and --exclude works when followed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.export.fp16 import convert_fp16
from edgequant.schemes.qparams import sqnr_db


def _contrib_block() -> onnx.ModelProto:
    """x -> MatMul -> FastGelu -> MatMul -> SkipLayerNormalization(skip=x) -> MatMul -> Add -> y."""
    rng = np.random.default_rng(0)
    d, f = 16, 32

    def w(name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
        return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [w("w1", d, f), w("b1", f, scale=0.1), w("w2", f, d), w("gamma", d, scale=1.0),
             w("beta", d, scale=0.1), w("w3", d, d), w("c", d, scale=0.1)]  # fmt: skip
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        h.make_node("FastGelu", ["m1", "b1"], ["g"], name="gelu", domain="com.microsoft"),
        h.make_node("MatMul", ["g", "w2"], ["m2"], name="mm2"),
        h.make_node(
            "SkipLayerNormalization",
            ["m2", "x", "gamma", "beta"],
            ["ln"],
            name="skipln",
            domain="com.microsoft",
            epsilon=1e-5,
        ),
        h.make_node("MatMul", ["ln", "w3"], ["m3"], name="mm3"),
        h.make_node("Add", ["m3", "c"], ["y"], name="add"),
    ]
    g = h.make_graph(
        nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 8, d])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 8, d])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


@pytest.mark.parametrize("exclude", [(), ("mm3",), ("add",)])
def test_contrib_ops_stay_float32_between_casts_and_the_rest_is_float16(exclude: tuple[str, ...]) -> None:
    m = _contrib_block()
    x = np.random.default_rng(1).standard_normal((1, 8, 16)).astype(np.float32)
    ref = _run(m, x)
    half, plan = convert_fp16(m, exclude_nodes=exclude)
    got = _run(half, x)  # loads: every node has typed inputs
    assert sqnr_db(ref, got) > 45.0  # one fp16 rounding per step is ~66 dB; measured 55-60 dB here
    decided = {d.node: d for d in plan.nodes}
    for name in ("gelu", "skipln", *exclude):
        assert not decided[name].quantized
    for name in {"mm1", "mm2", "mm3", "add"} - set(exclude):
        assert decided[name].quantized
    inits = {t.name: t.data_type for t in half.graph.initializer}
    assert inits["w1"] == T.FLOAT16 and inits["w2"] == T.FLOAT16
    assert inits["b1"] == T.FLOAT and inits["gamma"] == T.FLOAT  # read only by float32 contrib ops
    casts = {n.input[0]: n for n in half.graph.node if n.op_type == "Cast"}
    for contrib in ("gelu", "skipln"):
        node = next(n for n in half.graph.node if n.name == contrib)
        assert node.input[0] in {c.output[0] for c in casts.values()}  # reads a Cast to float32
    assert any("typed from their node's input" in n for n in plan.notes)
