"""weight_8bit under static low-bit weights (planning/mixed.py): W4A8 with named layers' weights 8-bit.

Expected values are computed here: the 8-bit grid in numpy from the float weights, the output SQNR from
our own ORT sessions on held-out inputs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import edgequant
from edgequant.errors import RecipeError
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import fan_in_weight, images

RT = OrtRuntime(allow_spinning=False)
X = images(160)
CALIB, HELD = X[:128], X[128:]
KW = {"weight_bits": 4, "calib_samples": 96, "reduce_range": "off"}  # the full 8-bit grid on any CPU


def _net() -> onnx.ModelProto:
    """Conv(3->8, 5x5: 75 weights per channel, heavy-tailed (Student t, 3 dof) as a first layer with a
    folded BatchNorm often is) -> Relu -> Conv(8->16, 3x3) -> Relu -> Conv(16->8, 1x1)."""
    rng = np.random.default_rng(3)
    w = partial(fan_in_weight, rng)
    w1 = (np.random.default_rng(5).standard_t(3, size=(8, 3, 5, 5)) / np.sqrt(75)).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[2, 2, 2, 2]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    b1 = nh.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b1")
    g = h.make_graph(
        nodes,
        "mixed",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 12, 12])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", 8, 12, 12])],
        [nh.from_array(w1, "w1"), b1, w("w2", 16, 8, 3, 3), w("w3", 8, 16, 1, 1)],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _sqnr(float_model: onnx.ModelProto, model: onnx.ModelProto) -> float:
    ref, got = RT.run(float_model, {"x": HELD})["y"], RT.run(model, {"x": HELD})["y"]
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def _ints(model: onnx.ModelProto, w: str) -> tuple[np.ndarray, np.ndarray]:
    """(integer weight, per-channel scale) of ``w`` as the exporter wrote them."""
    q = {t.name: nh.to_array(t) for t in model.graph.initializer}
    return q[f"{w}_q"], q[f"{w}_scale"].reshape(-1)


def _distinct(ints: np.ndarray) -> list[int]:
    return [len(np.unique(c)) for c in ints.reshape(ints.shape[0], -1)]


def test_first_conv_on_the_8bit_grid_the_others_4bit_and_a_higher_sqnr() -> None:
    model = _net()
    w1 = nh.to_array(next(t for t in model.graph.initializer if t.name == "w1"))
    pure = edgequant.quantize(model, CALIB, **KW)
    mixed = edgequant.quantize(model, CALIB, weight_8bit=["first"], **KW)
    q1, s1 = _ints(mixed.model, "w1")
    # numpy's own 8-bit grid: symmetric, narrow [-127, 127], scale max|w| / 127 per output channel
    scale = np.abs(w1).reshape(8, -1).max(axis=1) / 127
    np.testing.assert_allclose(s1, scale, rtol=1e-6)
    expect = np.clip(np.round(w1 / scale[:, None, None, None]), -127, 127)
    np.testing.assert_array_equal(q1.astype(np.int32), expect.astype(np.int32))
    assert min(_distinct(q1)) > 16  # measured 46-57 of 75 per channel
    for w in ("w2", "w3"):
        assert max(_distinct(_ints(mixed.model, w)[0])) <= 16
        np.testing.assert_array_equal(_ints(mixed.model, w)[0], _ints(pure.model, w)[0])  # same 4-bit grid
    assert max(_distinct(_ints(pure.model, "w1")[0])) <= 16
    entry = mixed.plan.tensors["w1"]
    assert entry.spec.bits == 8 and "first compute layer" in entry.note and "conv1" in entry.note
    assert any(n.startswith("mixed 4/8 weights") and "conv1" in n for n in mixed.plan.notes)
    gain = _sqnr(model, mixed.model) - _sqnr(model, pure.model)
    assert gain > 1.5  # measured 13.22 -> 16.73 dB (+3.51)


def test_adaround_rounds_each_layer_on_its_own_grid() -> None:
    """With AdaRound, the first conv's integers stay on the 8-bit grid (each at most one step from
    round-to-nearest, many more than 16 levels), the others on the 4-bit one."""
    model = _net()
    w1 = nh.to_array(next(t for t in model.graph.initializer if t.name == "w1"))
    kw = {**KW, "algorithms": ["adaround"], "keep_worse_passes": True}
    mixed = edgequant.quantize(model, CALIB, weight_8bit=["first", "last"], **kw)
    pure = edgequant.quantize(model, CALIB, **kw)
    q1, s1 = _ints(mixed.model, "w1")
    rtn = np.round(w1 / s1[:, None, None, None])
    assert q1.dtype == np.int8 and np.abs(q1 - rtn).max() <= 1 and min(_distinct(q1)) > 16
    q3 = _ints(mixed.model, "w3")[0]  # 'last': 16 weights per channel, on the 8-bit grid
    assert q3.dtype == np.int8 and np.abs(q3.astype(np.int32)).max() == 127
    q2 = _ints(mixed.model, "w2")[0].astype(np.int32)
    assert max(_distinct(q2)) <= 16 and np.abs(q2).max() <= 8
    rows = {r["pass"]: r for r in mixed.report["algorithms"]}
    assert "adaround" in rows
    assert _sqnr(model, mixed.model) > _sqnr(model, pure.model) + 4.0  # measured 14.99 -> 21.42 dB (+6.43)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"weight_8bit": ["first"], "skip_first": True}, "skip_first"),
        ({"weight_8bit": ["nothing_here"]}, "selects no Conv"),
        ({"weight_8bit": ["first"], "weight_bits": 8}, r"weight_8bit=\['first'\] keeps"),
        ({"weight_8bit": ["auto"], "weight_bits": 8}, r"weight_8bit=\['auto'\] keeps"),
    ],
)
def test_bad_weight_8bit_is_refused(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(RecipeError, match=needle):
        edgequant.quantize(_net(), CALIB, **{**KW, **kw})


def test_cli_weight_8bit_first(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgequant.cli import app

    onnx.save(_net(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X)
    runner = CliRunner()
    base = ["quantize", str(tmp_path / "m.onnx"), "--calib-data", str(tmp_path / "x.npy"), "--weight-bits"]
    ok = runner.invoke(app, [*base, "4", "--weight-8bit", "first", "-o", str(tmp_path / "o")])
    assert ok.exit_code == 0, ok.output
    written = list((tmp_path / "o").glob("*.onnx"))
    assert len(written) == 1
    assert _ints(onnx.load(written[0]), "w1")[0].dtype == np.int8
    reports = [p.read_text() for p in (tmp_path / "o").glob("*.json")]
    assert any("mixed 4/8 weights (weight_8bit)" in r and "conv1" in r for r in reports)
    bad = runner.invoke(app, [*base, "8", "--weight-8bit", "first", "-o", str(tmp_path / "b")])
    assert bad.exit_code == 2 and not (tmp_path / "b").exists()


def test_weight_only_first_and_last_name_the_matmuls() -> None:
    """Weight-only 4-bit in blocks reads the keywords too: 'last' is the last compute node, MatMulNBits bits=8."""
    from tests.export.test_nbits import K, _mlp

    x = np.random.default_rng(2).standard_normal((2, 4, K)).astype(np.float32)
    kw = {"method": "weight-only", "weight_bits": 4, "block_size": 32, "nbits_accuracy_level": 0}
    res = edgequant.quantize(_mlp(), {"x": x}, weight_8bit=["last"], **kw)
    bits = {
        n.name: {a.name: a.i for a in n.attribute}["bits"]
        for n in res.model.graph.node
        if n.op_type == "MatMulNBits"
    }
    assert bits == {"mm1": 4, "mm2": 8}


def test_auto_keeps_the_layer_whose_8bit_weights_buy_most() -> None:
    """``weight_8bit: [auto]`` under static W4A8 measures each layer's cost alone at 4 bits among 8-bit
    layers (float activations, held-out samples) and keeps at most max(1, 20 % of 3) = 1 layer 8-bit: conv1,
    whose heavy-tailed 4-bit weights cost most; the model then equals the one with weight_8bit [conv1]."""
    model = _net()
    kw = {**KW, "calib_samples": 64, "check_samples": 32, "reduce_range": "on"}  # 8-bit weights on 7 bits
    res = edgequant.quantize(model, X, weight_8bit=["auto"], **kw)
    section = res.report["weight_8bit"]
    bits = {r["weight"]: r["bits"] for r in section["matmuls"]}
    assert bits == {"w1": 8, "w2": 4, "w3": 4}
    gains = {r["weight"]: r["cost_db"] for r in section["matmuls"]}
    # each layer's cost alone at 4 bits among 8-bit ones: measured 22.50 dB (conv2 18.91, conv3 16.44)
    assert gains["w1"] > max(gains["w2"], gains["w3"]) + 1.5
    note = res.plan.tensors["w1"].note  # a cost, not a gain (the review read '+22.50 dB ... alone')
    assert note.startswith(f"kept 8-bit (weight_8bit auto): cost {gains['w1']:.2f} dB"), note
    assert "is below" in section["rule"] and "cost is below" in section["rule"], section["rule"]
    named = edgequant.quantize(model, X, weight_8bit=["conv1"], **kw)
    assert np.abs(_ints(res.model, "w1")[0].astype(np.int32)).max() == 63  # the spec static int8 gives it
    for w in ("w1", "w2", "w3"):
        np.testing.assert_array_equal(_ints(res.model, w)[0], _ints(named.model, w)[0])
    assert _sqnr(model, res.model) == pytest.approx(_sqnr(model, named.model), abs=1e-6)
