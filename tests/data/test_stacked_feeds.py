"""Stacked feed dicts in one .npz (data.conform.stacked_feeds): a model whose inputs fix different first
axes (Silero VAD's shape: a frame [1, 16] and a recurrent state [2, 1, 8]) is calibrated and evaluated
from the CLI with arrays input [N, 1, 16] and state [N, 2, 1, 8], each slice fed whole.  A mix of layouts
or a count mismatch along axis 0 is one line, exit 2, nothing written.  Expected values: our own ORT
session loop over the same feeds, and the counts of the data as built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.data import open_source
from edgequant.data.base import InputSpec

L, C, H, N = 16, 4, 8, 40  # frame samples, conv channels, LSTM hidden size, feed dicts


def _model() -> onnx.ModelProto:
    """x [1, 16] -> Conv(k=3) -> ReLU -> LSTM(state [2, 1, 8] = h, c) -> sigmoid head p [1, 1]; state out."""
    rng = np.random.default_rng(0)
    b = np.zeros((1, 8 * H), np.float32)
    b[0, 2 * H : 3 * H] = 2.0  # forget gate: the state carries over frames
    inits = [
        nh.from_array((rng.standard_normal((C, 1, 3)) * 0.5).astype(np.float32), "wc"),
        nh.from_array((rng.standard_normal(C) * 0.1).astype(np.float32), "bc"),
        nh.from_array((rng.standard_normal((1, 4 * H, C)) * 0.4).astype(np.float32), "W"),
        nh.from_array((rng.standard_normal((1, 4 * H, H)) * 0.3).astype(np.float32), "R"),
        nh.from_array(b, "B"),
        nh.from_array((rng.standard_normal((H, 1)) * 1.5).astype(np.float32), "wo"),
        nh.from_array(np.array([1, 1, L], np.int64), "shp"),
        nh.from_array(np.array([0], np.int64), "ax0"),
    ]
    nodes = [
        h.make_node("Reshape", ["x", "shp"], ["x3"], name="to_ncl"),
        h.make_node("Conv", ["x3", "wc", "bc"], ["cv"], name="conv"),
        h.make_node("Relu", ["cv"], ["feat"], name="relu"),
        h.make_node("Transpose", ["feat"], ["seq"], name="to_seq", perm=[2, 0, 1]),
        h.make_node("Split", ["state"], ["h0", "c0"], name="split", axis=0, num_outputs=2),
        h.make_node("LSTM", ["seq", "W", "R", "B", "", "h0", "c0"], ["Y", "h1", "c1"], name="lstm", hidden_size=H),
        h.make_node("Concat", ["h1", "c1"], ["state_out"], name="cat", axis=0),
        h.make_node("Squeeze", ["h1", "ax0"], ["hs"], name="sq"),
        h.make_node("MatMul", ["hs", "wo"], ["logit"], name="head"),
        h.make_node("Sigmoid", ["logit"], ["p"], name="prob"),
    ]  # fmt: skip
    g = h.make_graph(
        nodes,
        "stream",
        [
            h.make_tensor_value_info("x", T.FLOAT, [1, L]),
            h.make_tensor_value_info("state", T.FLOAT, [2, 1, H]),
        ],
        [
            h.make_tensor_value_info("p", T.FLOAT, [1, 1]),
            h.make_tensor_value_info("state_out", T.FLOAT, [2, 1, H]),
        ],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _feeds(seed: int, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """n frames [n, 1, 16] and the state the float model carries into each one [n, 2, 1, 8]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, L)) * np.repeat(10 ** -rng.uniform(0, 1, n // 4 + 1), 4)[:n, None, None]
    x = x.astype(np.float32)
    sess = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, H), np.float32)
    states = []
    for frame in x:
        states.append(state)
        _, state = sess.run(None, {"x": frame, "state": state})
    return x, np.stack(states)


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, calib, held = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "eval.npz"
    onnx.save(_model(), str(src))
    x, s = _feeds(1)
    np.savez(calib, x=x, state=s)
    x, s = _feeds(2)
    np.savez(held, x=x, state=s)
    return src, calib, held


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(
        10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
    )


def test_stacked_npz_quantizes_and_evaluates_from_the_cli(tmp_path: Path) -> None:
    src, calib, held = _setup(tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["quantize", str(src), "--calib-data", str(calib), "-o", str(out)])
    assert res.exit_code == 0, res.output
    qmodel = out / "m_int8.onnx"
    report = json.loads((out / "m_int8.json").read_text())
    cal = report["calibration"]  # small data: half of the feed dicts are held back for the run check
    assert (cal["samples"], cal["held_out_for_check"], cal["batches"]) == (N // 2, N // 2, N // 2), cal
    assert f"{N} stacked feed dicts" in cal["source"]

    x, s = _feeds(2)  # own loop: each (frame, state) pair fed whole to both sessions
    fs = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    qs = ort.InferenceSession(str(qmodel), providers=["CPUExecutionProvider"])
    ref = [fs.run(None, {"x": a, "state": b}) for a, b in zip(x, s, strict=True)]
    quant = [qs.run(None, {"x": a, "state": b}) for a, b in zip(x, s, strict=True)]
    for k, name in enumerate(("p", "state_out")):
        js = tmp_path / f"eval_{name}.json"
        args = ["evaluate", str(src), str(qmodel), "--data", str(held), "--output-name", name, "-o", str(js)]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        got = json.loads(js.read_text())
        want = _sqnr_db(np.stack([r[k] for r in ref]), np.stack([q[k] for q in quant]))
        assert got["samples"] == N  # feeds, not output rows (state_out is [2, 1, 8] per feed: 2N rows)
        assert got["agreement"]["sqnr_db"] == pytest.approx(want, abs=0.01), (name, want, got["agreement"])
        assert want > 20.0, (name, want)


def test_stacked_feeds_split_and_hold_out_count_whole_feeds() -> None:
    x, s = _feeds(1)
    specs = [
        InputSpec("x", np.dtype(np.float32), (1, L)),
        InputSpec("state", np.dtype(np.float32), (2, 1, H)),
    ]
    calib = open_source({"x": x, "state": s}, specs, split="calib", eval_fraction=0.25)
    ev = open_source({"x": x, "state": s}, specs, split="eval", eval_fraction=0.25)
    feeds_c, feeds_e = list(calib), list(ev)
    assert len(feeds_c) + len(feeds_e) == N and len(feeds_e) == N // 4
    assert all(f["x"].shape == (1, L) and f["state"].shape == (2, 1, H) for f in feeds_c + feeds_e)
    seen = {f["x"].tobytes() for f in feeds_c + feeds_e}
    assert seen == {a.tobytes() for a in x}  # every frame once, with its own state
    rest = open_source({"x": x, "state": s}, specs, held_out=8, part="rest")
    held = open_source({"x": x, "state": s}, specs, held_out=8, part="held")
    assert (len(list(rest)), len(list(held))) == (N - 8, 8)
    assert rest.stats.samples == N - 8 and held.stats.held_out == 8


@pytest.mark.parametrize(
    ("shapes", "words"),
    [
        ({"x": (N, 1, L), "state": (2, 1, H)}, ["mixes stacked feed dicts", "'state' 2x1x8", "x Nx1x16"]),
        ({"x": (N, 1, L), "state": (N - 1, 2, 1, H)}, ["disagree on the count", "'state' 39x2x1x8"]),
        ({"x": (1, L), "state": (2, 1, H)}, ["fix different first axes", "state Nx2x1x8"]),
    ],
)
def test_mixed_or_mismatched_layouts_exit_2_with_nothing_written(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], words: list[str]
) -> None:
    src, _, held = _setup(tmp_path)
    bad, out = tmp_path / "bad.npz", tmp_path / "out"
    np.savez(bad, **{k: np.zeros(v, np.float32) for k, v in shapes.items()})
    runner = CliRunner()
    res = runner.invoke(app, ["quantize", str(src), "--calib-data", str(bad), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert all(w in res.output for w in words), res.output
    assert not out.exists()
    res = runner.invoke(app, ["evaluate", str(src), str(src), "--data", str(bad)])
    assert res.exit_code == 2, res.output
    cmp_out = tmp_path / "cmp"
    res = runner.invoke(
        app, ["compare", str(src), "--calib-data", str(bad), "--eval-data", str(held), "-o", str(cmp_out)]
    )
    assert res.exit_code == 2, res.output
    assert not cmp_out.exists()


def test_compare_splits_one_stacked_file_into_whole_feed_dicts(tmp_path: Path) -> None:
    src, calib, _ = _setup(tmp_path)
    out = tmp_path / "cmp"
    args = [
        "compare",
        str(src),
        "--calib-data",
        str(calib),
        "--eval-data",
        str(calib),
        "--methods",
        "int8-static",
    ]
    res = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = (out / "report.json").read_text()
    n_eval = N // 5  # the seeded 20 % evaluation part, in feed dicts
    assert f"no overlap between {n_eval} evaluation and {N - n_eval} calibration samples" in text
    cal = json.loads((out / "m_int8.json").read_text())["calibration"]
    assert cal["samples"] + cal["held_out_for_check"] == N - n_eval, cal
    rows = json.loads(text)["methods"]
    assert [r["evaluation"]["samples"] for r in rows] == [n_eval], rows  # feed dicts, not output rows


def test_dynamic_without_data_checks_on_whole_synthetic_feed_dicts(tmp_path: Path) -> None:
    """Dynamic quantization needs no data; its run check then draws synthetic inputs, which refused a model
    whose inputs fix different first axes ('the model inputs fix different batch sizes [1, 2]': Silero VAD
    could not be quantized dynamically from the CLI without data). Each synthetic sample is now one whole
    feed dict, and the check's SQNR (pooled over its draws) equals our own ORT runs on them."""
    src = tmp_path / "m.onnx"
    onnx.save(_model(), str(src))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["quantize", str(src), "--method", "dynamic", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "m_dynamic_int8.json").read_text())
    check = report["check"]
    assert check["kind"] == "synthetic", check
    ops = {n.op_type for n in onnx.load(str(out / "m_dynamic_int8.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in ops, ops
    f32 = np.dtype(np.float32)
    specs = [InputSpec("x", f32, (1, L)), InputSpec("state", f32, (2, 1, H))]
    held = open_source(None, specs, max_samples=check["samples"], split="eval", seed=0)  # the check's draws
    draws = [dict(b) for b in held]
    assert [tuple(b["x"].shape) + tuple(b["state"].shape) for b in draws] == [(1, L, 2, 1, H)] * 32
    fs = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    qs = ort.InferenceSession(str(out / "m_dynamic_int8.onnx"), providers=["CPUExecutionProvider"])
    for k, name in enumerate(("p", "state_out")):
        ref = np.stack([fs.run(None, d)[k] for d in draws])
        got = np.stack([qs.run(None, d)[k] for d in draws])
        assert check["output_sqnr_db"][name] == pytest.approx(_sqnr_db(ref, got), abs=0.02), name
        assert _sqnr_db(ref, got) > 40.0, name  # pooled over the draws: measured 45-51 dB
