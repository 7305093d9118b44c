"""Graphs that real exporters produce and that break or silently defeat other tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import conv_net, images, mlp

import edgequant
from edgequant.model import load_model, save_model
from edgequant.runtime import OrtRuntime, detect


def _sqnr(float_model: onnx.ModelProto, quantized: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    """Output SQNR (dB) measured here, with our own ORT sessions, on data the run never saw."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        for m in (float_model, quantized)
    ]
    out = sessions[0].get_outputs()[0].name
    ref, got = (s.run([out], feeds)[0].astype(np.float64) for s in sessions)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def _with_constant_weights(m: onnx.ModelProto) -> onnx.ModelProto:
    """Move every initializer into a Constant node, as Paddle2ONNX does."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    consts = [
        h.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in out.graph.initializer
    ]
    del out.graph.initializer[:]
    nodes = consts + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def test_constant_node_weights_are_quantized() -> None:
    m = _with_constant_weights(conv_net())
    r = edgequant.quantize(m, {"x": images(32)})
    assert r.report["integer_weights"] == 4 and r.report["planned_weights"] == 4
    assert not any(n.op_type == "Constant" for n in r.model.graph.node)
    assert any("Constant node(s) converted to initializers" in n for n in r.report["notes"])


def _wrap_in_if(m: onnx.ModelProto, cond_const: bool) -> onnx.ModelProto:
    g = m.graph
    then_g = h.make_graph(
        list(g.node), "then", [], [h.make_tensor_value_info("y", T.FLOAT, None)], list(g.initializer)
    )
    else_g = h.make_graph(
        [h.make_node("Identity", ["x"], ["y_else"])],
        "else",
        [],
        [h.make_tensor_value_info("y_else", T.FLOAT, None)],
    )
    nodes = [h.make_node("If", ["cond"], ["y"], name="top_if", then_branch=then_g, else_branch=else_g)]
    inputs = list(g.input)
    inits = []
    if cond_const:
        inits.append(nh.from_array(np.array(True), "cond"))
    else:
        inputs.append(h.make_tensor_value_info("cond", T.BOOL, []))
    out = h.make_model(
        h.make_graph(nodes, "wrapped", inputs, list(g.output), inits), opset_imports=m.opset_import
    )
    out.ir_version = 8
    return out


def test_network_inside_constant_if_is_inlined_and_quantized() -> None:
    m = _wrap_in_if(mlp(), cond_const=True)
    x = np.random.default_rng(0).standard_normal((256, 32)).astype(np.float32)
    r = edgequant.quantize(m, x, calib_samples=256)
    assert r.report["integer_weights"] == 2
    assert not any(n.op_type == "If" for n in r.model.graph.node)
    ev = {"x": x[:16]}
    ref, got = OrtRuntime().run(m, ev)["y"], OrtRuntime().run(r.model, ev)["y"]
    assert 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)) > 30


def test_network_inside_runtime_if_is_refused_with_reason() -> None:
    m = _wrap_in_if(mlp(), cond_const=False)
    feeds = [{"x": np.zeros((2, 32), np.float32), "cond": np.array(True)}]
    with pytest.raises(
        edgequant.UnsupportedError, match="all inside the subgraphs of control-flow node 'top_if'"
    ):
        edgequant.quantize(m, feeds)


def test_stale_shapes_are_repaired() -> None:
    m = conv_net()
    # stale intermediate and output shapes, as left by a graph surgery tool
    m.graph.value_info.append(h.make_tensor_value_info("c1", T.FLOAT, [1, 99, 4, 4]))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7
    # what the ORT tool runs into: "[ShapeInferenceError] Inferred shape and existing shape differ"
    with pytest.raises(onnx.shape_inference.InferenceError, match="Inferred shape and existing shape differ"):
        onnx.shape_inference.infer_shapes(m, strict_mode=True)
    r = edgequant.quantize(m, {"x": images(16)})
    assert any("contradicts the graph" in n for n in r.report["notes"])
    assert _sqnr(r.float_model, r.model, {"x": images(16, seed=7)}) > 30


def test_old_opset_is_raised_for_per_axis_qdq() -> None:
    m = conv_net(opset=11)
    r = edgequant.quantize(m, {"x": images(16)})
    assert r.model.opset_import[0].version == 13
    assert any("opset raised from 11 to 13" in n for n in r.report["notes"])
    assert _sqnr(m, r.model, {"x": images(16, seed=7)}) > 30


def test_variable_sequence_lengths_without_padding() -> None:
    rng = np.random.default_rng(0)
    m = mlp()
    m.graph.input[0].type.tensor_type.shape.ClearField("dim")
    for d in ("N", "T", 32):
        dim = m.graph.input[0].type.tensor_type.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    m.graph.output[0].type.tensor_type.ClearField("shape")
    batches = [{"x": rng.standard_normal((2, t, 32)).astype(np.float32)} for t in (3, 9, 5, 12)]
    r = edgequant.quantize(m, batches)
    assert r.report["calibration"]["samples"] == 4  # of 8: 4 held back for the check
    assert (
        _sqnr(m, r.model, {"x": np.random.default_rng(99).standard_normal((2, 7, 32)).astype(np.float32)})
        > 25
    )


def test_attention_mask_sentinels_do_not_poison_ranges() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["s"], name="scores"),
        h.make_node("Add", ["s", "mask"], ["masked"], name="add_mask"),
        h.make_node("Softmax", ["masked"], ["p"], name="softmax", axis=-1),
        h.make_node("MatMul", ["p", "v"], ["y"], name="mix"),
    ]
    g = h.make_graph(
        nodes,
        "attn",
        [
            h.make_tensor_value_info("x", T.FLOAT, ["N", 8]),
            h.make_tensor_value_info("mask", T.FLOAT, ["N", 8]),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])],
        [
            nh.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
            nh.from_array(rng.standard_normal((8, 4)).astype(np.float32), "v"),
        ],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    mask = np.zeros((64, 8), np.float32)
    mask[:, 6:] = np.finfo(np.float32).min
    x = rng.standard_normal((64, 8)).astype(np.float32)
    r = edgequant.quantize(m, {"x": x, "mask": mask})
    assert "mask" not in r.plan.tensors and "masked" not in r.plan.tensors
    s = r.plan.tensors["s"]
    assert s.lo is not None and s.lo > -100 and s.hi is not None and s.hi < 100
    assert any("mask sentinel" in n for n in r.report["notes"])
    assert (
        _sqnr(
            m,
            r.model,
            {"x": np.random.default_rng(99).standard_normal((16, 8)).astype(np.float32), "mask": mask[:16]},
        )
        > 25
    )


def test_external_data_model_loads(tmp_path: Path) -> None:
    m = mlp(d_in=256, hidden=512)
    path = tmp_path / "big.onnx"
    onnx.save_model(m, path, save_as_external_data=True, location="big.onnx.data", size_threshold=0)
    assert (tmp_path / "big.onnx.data").stat().st_size > 256 * 512 * 4
    loaded = load_model(path)
    r = edgequant.quantize(loaded, np.zeros((4, 256), np.float32) + 0.5)
    saved = save_model(r.model, tmp_path / "out" / "q.onnx")
    assert OrtRuntime().run(saved, {"x": np.ones((2, 256), np.float32)})["y"].shape == (2, 8)


def test_cpu_feature_detection_decides_reduce_range(tmp_path: Path) -> None:
    avx2_only = tmp_path / "cpuinfo"
    avx2_only.write_text("processor: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    cpu = detect(avx2_only)
    if cpu.arch == "x86_64":
        assert cpu.needs_reduce_range and not cpu.vnni
    vnni = tmp_path / "cpuinfo2"
    vnni.write_text("flags\t\t: avx2 avx512f avx512_vnni\n")
    assert not detect(vnni).needs_reduce_range


def test_unnamed_nodes_get_unique_names() -> None:
    m = conv_net()
    for n in m.graph.node:
        n.name = ""
    r = edgequant.quantize(m, {"x": images(16)})
    names = [n.name for n in r.model.graph.node]
    assert len(names) == len(set(names)) and all(names)
    assert any("unnamed or duplicate-named node(s)" in n for n in r.report["notes"])
    assert _sqnr(m, r.model, {"x": images(16, seed=7)}) > 30


def test_incomplete_shape_inference_still_quantizes() -> None:
    """A Reshape whose target shape is computed from the data: symbolic inference cannot follow it."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        h.make_node("Shape", ["x"], ["shp"], name="shape"),
        h.make_node("ReduceMax", ["x"], ["mx"], name="rmax", keepdims=0),  # data-dependent value
        h.make_node("Cast", ["mx"], ["mx_i"], name="cast", to=T.INT64),
        h.make_node("Mul", ["mx_i", "zero"], ["z"], name="zero_it"),
        h.make_node("Add", ["z", "minus1"], ["neg1"], name="neg_one"),
        h.make_node("Concat", ["neg1", "sixteen"], ["target"], name="target", axis=0),
        h.make_node("Reshape", ["m1", "target"], ["r"], name="reshape"),
        h.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    inits = [
        nh.from_array(rng.standard_normal((32, 64)).astype(np.float32) * 0.2, "w1"),
        nh.from_array(rng.standard_normal((16, 4)).astype(np.float32) * 0.2, "w2"),
        nh.from_array(np.array(0, np.int64), "zero"),
        nh.from_array(np.array([-1], np.int64), "minus1"),
        nh.from_array(np.array([16], np.int64), "sixteen"),
    ]
    g = h.make_graph(
        nodes,
        "dyn",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 32])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes = {v.name: v for v in inferred.graph.value_info}
    first = shapes["r"].type.tensor_type.shape.dim[0]
    assert first.dim_param.startswith("unk")  # inference cannot tie it to N: incomplete
    x = rng.standard_normal((256, 32)).astype(np.float32)
    r = edgequant.quantize(m, x, calib_samples=256)
    assert {d.node for d in r.plan.quantized_nodes} >= {"mm1", "mm2", "reshape"}
    assert r.report["integer_weights"] == 2
    assert (
        _sqnr(m, r.model, {"x": np.random.default_rng(99).standard_normal((32, 32)).astype(np.float32)}) > 25
    )


def test_opset_conversion_that_adds_unnamed_nodes_still_exports() -> None:
    """onnx's version converter expands an opset-11 Softmax(axis=1) into unnamed nodes."""
    w = nh.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), "w")
    g = h.make_graph(
        [
            h.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
            h.make_node("Softmax", ["mm"], ["sm"], name="sm", axis=1),
            h.make_node("Identity", ["sm"], ["y"], name="id"),
        ],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 4])],
        [w],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 11)])
    x = np.random.default_rng(1).normal(size=(16, 4, 8)).astype(np.float32)
    r = edgequant.quantize(m, x, calib_samples=16)
    names = [n.name for n in r.model.graph.node]
    assert len(names) == len(set(names)) and r.model.opset_import[0].version == 13
    assert (
        _sqnr(m, r.model, {"x": np.random.default_rng(99).normal(size=(8, 4, 8)).astype(np.float32)}) > 28
    )  # held-out: 29.9 dB measured


def test_per_tensor_bias_at_opset_11_has_no_axis() -> None:
    r = edgequant.quantize(conv_net(opset=11), {"x": images(32)}, per_channel=False)
    assert r.model.opset_import[0].version == 11  # per-tensor needs no conversion
    bias_dq = [
        n for n in r.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("b1")
    ]
    assert bias_dq and not bias_dq[0].attribute
    assert _sqnr(conv_net(opset=11), r.model, {"x": images(16, seed=7)}) > 30


def test_state_input_with_a_different_first_axis_calibrates() -> None:
    """Silero-VAD-like: input [1, 576] and state [2, 1, 128], feeds given whole."""
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.normal(size=(576, 128)).astype(np.float32), "w")
    g = h.make_graph(
        [
            h.make_node("MatMul", ["input", "w"], ["hh"], name="mm"),
            h.make_node("ReduceMean", ["state"], ["s"], name="rm", axes=[0], keepdims=0),
            h.make_node("Add", ["hh", "s"], ["out"], name="add"),
        ],
        "g",
        [
            h.make_tensor_value_info("input", T.FLOAT, [1, 576]),
            h.make_tensor_value_info("state", T.FLOAT, [2, 1, 128]),
        ],
        [h.make_tensor_value_info("out", T.FLOAT, [1, 128])],
        [w],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    feeds = [
        {
            "input": rng.normal(size=(1, 576)).astype(np.float32),
            "state": rng.normal(size=(2, 1, 128)).astype(np.float32),
        }
        for _ in range(8)
    ]
    r = edgequant.quantize(m, feeds, calib_samples=8, batch_size=1)
    assert r.report["calibration"]["samples"] == 4  # of 8: 4 held back for the check
    assert (
        _sqnr(
            m,
            r.model,
            {
                "input": np.random.default_rng(99).normal(size=(1, 576)).astype(np.float32),
                "state": np.random.default_rng(99).normal(size=(2, 1, 128)).astype(np.float32),
            },
        )
        > 30
    )


def test_weights_computed_from_constants_are_folded_and_quantized() -> None:
    """Exporters write an LSTM's W as Unsqueeze(stored 2-D weight); folding exposes it (Silero VAD)."""
    from tinymodels import lstm_with_state

    m = lstm_with_state()
    g = m.graph
    w = next(t for t in g.initializer if t.name == "W")
    w2d = nh.from_array(nh.to_array(w)[0], "W2d")
    g.initializer.remove(w)
    g.initializer.extend([w2d, nh.from_array(np.array([0], np.int64), "axis0")])
    g.node.insert(0, h.make_node("Unsqueeze", ["W2d", "axis0"], ["W"], name="unsq_w"))
    r = edgequant.quantize(m, None, method="dynamic")
    assert any("folded into initializers" in n for n in r.report["notes"])
    assert [d.node for d in r.plan.quantized_nodes if d.op_type == "LSTM"] == ["lstm"]
