"""Refusal wording (fresh-user review, session 9, defect 9): each refusal is one line that names the
problem as the user caused it and a fix that applies.  Before: a GRU-only model under dynamic was told
"use --method static for conv nets"; ``--act16-below-db abc`` printed its field name twice and two
messages joined by "; or"; ``accurate`` at 4 bits without data failed inside AdaRound with "drop adaround
from the algorithms", a pass the user never listed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from tinymodels import conv_net, images
from typer.testing import CliRunner

from edgequant.cli import app


def _gru_only() -> onnx.ModelProto:
    """x [B, T, 4] -> Transpose -> GRU (hidden 8) -> Y_h: nothing that dynamic quantization rewrites."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
        for n, s in (("W", (1, 24, 4)), ("R", (1, 24, 8)), ("B", (1, 48)))
    ]
    nodes = [
        h.make_node("Transpose", ["x"], ["xt"], name="to_time_major", perm=[1, 0, 2]),
        h.make_node("GRU", ["xt", "W", "R", "B"], ["ys", "yh"], name="gru", hidden_size=8),
    ]
    g = h.make_graph(
        nodes, "gru", [h.make_tensor_value_info("x", T.FLOAT, ["B", 6, 4])],
        [h.make_tensor_value_info("yh", T.FLOAT, [1, "B", 8])], inits,
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _refusal(args: list[str], out: Path) -> str:
    res = CliRunner().invoke(app, ["quantize", *args, "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert not out.exists()
    return lines[0]


def test_dynamic_on_a_gru_only_model_names_weight_only_not_conv_nets(tmp_path: Path) -> None:
    src = tmp_path / "gru.onnx"
    onnx.save(_gru_only(), src)
    line = _refusal([str(src), "--method", "dynamic"], tmp_path / "out")
    assert "dynamic quantization changes no node" in line and "conv nets" not in line, line
    assert "Fix: use --method weight-only (integer storage of any constant weight, a GRU's too)" in line
    # and the fix is true: weight-only stores the GRU's weights as integers
    res = CliRunner().invoke(
        app, ["quantize", str(src), "--method", "weight-only", "-o", str(tmp_path / "wo")]
    )
    assert res.exit_code == 0, res.output
    q = onnx.load(str(next((tmp_path / "wo").glob("*.onnx"))))
    assert {t.name for t in q.graph.initializer if t.data_type == T.INT8} == {"W_q", "W_zp", "R_q", "R_zp"}


def _example(tmp_path: Path) -> tuple[Path, Path]:
    src, data = tmp_path / "net.onnx", tmp_path / "x.npy"
    onnx.save(conv_net(), src)
    np.save(data, images(16))
    return src, data


def test_a_bad_act16_word_is_named_once(tmp_path: Path) -> None:
    src, data = _example(tmp_path)
    line = _refusal([str(src), "--calib-data", str(data), "--act16-below-db", "abc"], tmp_path / "out")
    assert line == (
        "error: act16_below_db is 'abc', which is neither a number nor one of auto, off. "
        "Fix: write a number or one of auto, off."
    ), line
    line = _refusal([str(src), "--calib-data", str(data), "--act16-below-db", "atuo"], tmp_path / "out")
    assert line.endswith("(did you mean 'auto'?)."), line


def test_accurate_at_4_bits_without_data_names_the_preset_not_a_pass_to_drop(tmp_path: Path) -> None:
    src, _ = _example(tmp_path)
    for extra in ([], ["--allow-synthetic"]):
        line = _refusal([str(src), "--recipe", "accurate", "--weight-bits", "4", *extra], tmp_path / "out")
        assert line.startswith("error: the accurate preset runs adaround at 4 bits and below"), line
        assert "Fix: give --calib-data PATH, or use a preset without adaround" in line
        assert "drop" not in line
    # a pass the user listed is named as theirs
    line = _refusal([str(src), "--algorithm", "adaround", "--allow-synthetic"], tmp_path / "out")
    assert "Fix: give --calib-data PATH, or drop --algorithm adaround." in line, line
