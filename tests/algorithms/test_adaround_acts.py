"""AdaRound's x~ with the activations quantized (``adaround_acts``, AIMET / QDrop style): the input each
4-bit layer's Gram matrices are built from equals that layer's input in our own QDQ ORT session, built
here by hand from numpy min-max ranges (scale = range / 255, zero = round(-lo / scale)) on the weights the
pass wrote, and differs from the float-activation input that plain AdaRound used."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant import planner
from edgequant.algorithms import adaround_acts
from edgequant.algorithms.adaround import AdaRound, Layer
from edgequant.algorithms.base import Stats
from edgequant.export.opset import raise_for_plan
from edgequant.recipe.schema import from_dict
from edgequant.runtime import OrtRuntime, detect
from tests.algorithms.passnets import conv3, images

RT = OrtRuntime(allow_spinning=False)
X = images(64) + 0.5


def _with_qdq(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> onnx.ModelProto:
    """``model`` with a uint8 QuantizeLinear -> DequantizeLinear pair on each tensor of ``ranges``, read
    by its consumers; the conv inputs are exposed as outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    pairs: dict[str, list[onnx.NodeProto]] = {}
    for name, (lo, hi) in ranges.items():
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = np.float32((hi - lo) / 255.0)
        zero = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
        g.initializer.extend(
            [nh.from_array(np.array(scale), f"{name}_s"), nh.from_array(np.array(zero), f"{name}_z")]
        )
        pairs[name] = [
            h.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
            h.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_fq"]),
        ]
    nodes = list(pairs.pop("x", []))
    for node in g.node:
        node.input[:] = [f"{i}_fq" if i in ranges else i for i in node.input]
        nodes.append(node)
        nodes += [p for o in node.output for p in pairs.get(o, [])]
    del g.node[:]
    g.node.extend(nodes)
    g.output.extend(onnx.ValueInfoProto(name=n.input[0]) for n in g.node if n.op_type == "Conv")
    return out


def test_gram_inputs_carry_the_activation_quantization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adaround_acts, "ACT_QUANT_MAX_BITS", 4)
    monkeypatch.setattr(adaround_acts, "DROP_PROB", 0.0)
    seen: dict[str, np.ndarray] = {}  # layer -> its x~ on the first batch
    now = [""]
    mix, round_ = adaround_acts.ActQuant.mix, AdaRound._round

    def spy(self: adaround_acts.ActQuant, xq: np.ndarray, xf: np.ndarray) -> np.ndarray:
        seen.setdefault(now[0], xq.copy())
        return mix(self, xq, xf)

    def layer(self: AdaRound, ly: Layer, *args: Any) -> str:
        now[0] = ly.node.name
        return round_(self, ly, *args)

    monkeypatch.setattr(adaround_acts.ActQuant, "mix", spy)
    monkeypatch.setattr(AdaRound, "_round", layer)
    model = conv3()
    recipe = from_dict({"method": "static", "weight_bits": 4, "calib_method": "minmax"})
    model, plan = raise_for_plan(model, planner.resolve(model, recipe, detect()), [])  # int4: opset 21
    batches = [{"x": X[i : i + 16]} for i in range(0, 64, 16)]
    out, _, _ = AdaRound(recipe).apply(model, plan, Stats(lambda: batches, 64, RT, recipe))
    assert sorted(seen) == ["conv1", "conv2", "conv3"]
    float_acts = RT.run(_with_outputs(model, ["r1", "r2"]), {"x": X})  # min-max over the 64 samples
    ranges = {"x": (float(X.min()), float(X.max()))}
    ranges |= {n: (float(float_acts[n].min()), float(float_acts[n].max())) for n in ("r1", "r2")}
    want = _unoptimised(_with_qdq(out, ranges), {"x": X[:16]})  # the written weights and biases, our Q/DQ
    for node, name in (("conv1", "x"), ("conv2", "r1"), ("conv3", "r2")):
        lo, hi = min(ranges[name][0], 0.0), max(ranges[name][1], 0.0)
        step = (hi - lo) / 255.0
        diff = np.abs(seen[node] - want[f"{name}_fq"])
        # equal up to rare rounding-boundary flips of one step (measured: none)
        assert float(np.mean(diff > 1e-5)) < 1e-3 and float(diff.max()) <= step * 1.01, node
        grid = seen[node] / step  # (q - zero) * scale
        assert float(np.abs(grid - np.round(grid)).max()) < 1e-2, node  # on the 8-bit grid
    # plain AdaRound's x~ (rounded weights, float activations) differs: by 0.19 step on average (measured)
    plain = RT.run(_with_outputs(out, ["r1"]), {"x": X[:16]})["r1"]
    assert float(np.abs(plain - seen["conv2"]).mean()) > 0.12 * ranges["r1"][1] / 255.0


def test_qdrop_takes_each_element_from_the_float_input_with_its_probability() -> None:
    xq, xf = np.zeros((64, 8, 16, 16), np.float32), np.ones((64, 8, 16, 16), np.float32)
    acts = adaround_acts.ActQuant(onnx.ModelProto(), {}, 0.5, np.random.default_rng(0))
    mixed = acts.mix(xq, xf)
    assert set(np.unique(mixed)) == {0.0, 1.0} and abs(float(mixed.mean()) - 0.5) < 0.01  # 131,072 draws
    assert acts.mix(xq, xf).tolist() != mixed.tolist()  # a new draw per batch
    assert adaround_acts.ActQuant(onnx.ModelProto(), {}, 0.0, np.random.default_rng(0)).mix(xq, xf) is xq


def _unoptimised(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our own ORT session without graph optimisations: the arithmetic of each Q/DQ and Conv as written.
    (ORT's basic optimisations rewrite this graph of float constant weights between Q/DQ pairs: its r1
    came out up to 0.039, two steps of r1's grid, off the unoptimised one on these samples.)"""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(h.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return out
