"""A time-major GRU (x [T, B, 4], ONNX's default layout) with a state input h0 [2, B, 8] (bidirectional):
every feed dict is fed whole, and counts as one sample in every command (the data layer, the check,
the calibration passes, evaluate).  Before: static quantization failed inside float_effect with ORT's
"invalid dimensions for input h0" (the passes' held-out samples were cut along axis 0 of each feed
dict, which is time for x and direction for h0), and the check counted each feed dict's 10 time steps
as 10 samples (320 for 32 feed dicts).  Expected SQNRs come from our own ORT sessions on the feed
dicts the check holds back (``data.select``: positions floor((j + 0.5) * n / h), here the odd ones)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.evaluate.core import evaluate

H, IN, STEPS, FEEDS = 8, 4, 10, 64


def _gru(t: int | str, batch_first: bool = False) -> onnx.ModelProto:
    """x [t, B, 4], h0 [2, B, 8] -> bidirectional GRU -> Y_h [2, B, 8] -> [B, 16] -> MatMul [16, 3] -> y.
    ``batch_first``: inputs h0 then x [B, t, 4], transposed to [t, B, 4] before the GRU."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
        for n, s in (("W", (2, 3 * H, IN)), ("R", (2, 3 * H, H)), ("B", (2, 6 * H)), ("Wo", (2 * H, 3)))
    ]
    pre = [h.make_node("Transpose", ["x"], ["xt"], name="time_major", perm=[1, 0, 2])] if batch_first else []
    seq = "xt" if batch_first else "x"
    nodes = [
        *pre,
        h.make_node("GRU", [seq, "W", "R", "B", "", "h0"], ["ys", "yh"], name="gru", hidden_size=H,
                    direction="bidirectional"),
        h.make_node("Transpose", ["yh"], ["yt"], name="batch_first", perm=[1, 0, 2]),
        h.make_node("Flatten", ["yt"], ["hs"], name="flat", axis=1),
        h.make_node("MatMul", ["hs", "Wo"], ["y"], name="head"),
    ]  # fmt: skip
    inputs = [
        h.make_tensor_value_info("x", T.FLOAT, ["B", t, IN] if batch_first else [t, "B", IN]),
        h.make_tensor_value_info("h0", T.FLOAT, [2, "B", H]),
    ]
    inputs = inputs[::-1] if batch_first else inputs
    g = h.make_graph(nodes, "gru", inputs, [h.make_tensor_value_info("y", T.FLOAT, ["B", 3])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds() -> list[dict[str, np.ndarray]]:
    """64 feed dicts, each one sequence: x [10, 1, 4], h0 [2, 1, 8] (non-zero: not a stream's start)."""
    rng = np.random.default_rng(1)
    return [
        {
            "x": rng.standard_normal((STEPS, 1, IN)).astype(np.float32),
            "h0": (rng.standard_normal((2, 1, H)) * 0.5).astype(np.float32),
        }
        for _ in range(FEEDS)
    ]


def _sqnr(fm: onnx.ModelProto, qm: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref, got = (
        np.concatenate([s.run(["y"], f)[0] for f in feeds]).astype(np.float64)
        for s in (
            ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])
            for p in (fm, qm)
        )
    )
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def test_static_on_whole_feed_dicts() -> None:
    """Dynamic T, a list of feed dicts: calibration reads 16, the passes' held-out part 16, the check 32."""
    m, feeds = _gru("T"), _feeds()
    r = edgequant.quantize(m, feeds, calib_samples=16)
    check, calib, fe = r.report["check"], r.report["calibration"], r.report["float_effect"]
    held = feeds[1::2]  # 32 of 64, evenly spread: positions 2j + 1
    assert check["samples"] == 32 and calib["samples"] == 16 and calib["held_out_for_check"] == 32
    # before: "batch size 2 (fixed by the model; 8 was asked)", h0's directions taken for the batch
    assert "axis 0 is fixed in h0 2 and not in x: batches are used whole" in calib["source"], calib
    assert abs(check["output_sqnr_db"]["y"] - _sqnr(m, r.model, held)) < 0.02, check
    assert fe["measured_on"].startswith("the first 16 of the 16 held-out samples"), fe
    assert fe["baseline_sqnr_db"] is not None and fe["kinds"], fe
    assert evaluate(m, r.model, held, task="regression").samples == 32


def test_two_steps_beside_a_two_direction_state_are_one_feed() -> None:
    """x [2, 1, 4] beside h0 [2, 1, 8] agree on axis 0 by chance: each feed dict is still one sample, never
    cut (before: calibration counted 2 per feed dict and cut the 8th at --calib-samples 15: ORT's
    "invalid dimensions for input: h0")."""
    m = _gru("T")
    feeds = [{"x": f["x"][:2], "h0": f["h0"]} for f in _feeds()]
    r = edgequant.quantize(m, feeds, calib_samples=15)
    check, calib = r.report["check"], r.report["calibration"]
    assert check["samples"] == 32 and calib["samples"] == 15, (check, calib)
    assert abs(check["output_sqnr_db"]["y"] - _sqnr(m, r.model, feeds[1::2])) < 0.02, check
    assert r.report["float_effect"]["measured_on"].startswith("the first 16 of the 17 held-out samples")


def test_check_counts_feed_dicts_not_time_steps() -> None:
    """dynamic reads no calibration data: the check reads the first 32 feed dicts (before: 320 samples)."""
    m, feeds = _gru("T"), _feeds()
    r = edgequant.quantize(m, feeds, method="dynamic")
    check = r.report["check"]
    assert check["samples"] == 32 == evaluate(m, r.model, feeds[:32], task="regression").samples
    assert abs(check["output_sqnr_db"]["y"] - _sqnr(m, r.model, feeds[:32])) < 0.02, check


def test_a_state_first_feed_dict_counts_one() -> None:
    """h0 [2, 1, 8] is the model's first input: before, the check counted its axis 0 (64 for 32 feed dicts)."""
    m = _gru("T", batch_first=True)
    feeds = [{"h0": f["h0"], "x": f["x"].transpose(1, 0, 2)} for f in _feeds()]  # x [1, 10, 4]
    r = edgequant.quantize(m, feeds, method="dynamic")
    check = r.report["check"]
    assert check["samples"] == 32 == evaluate(m, r.model, feeds[:32], task="regression").samples
    assert abs(check["output_sqnr_db"]["y"] - _sqnr(m, r.model, feeds[:32])) < 0.02, check


def test_stacked_file_with_a_fixed_t_quantizes(tmp_path: Path) -> None:
    """Fixed T beside the state, 64 feed dicts stacked in an .npz (CLI): before, exit 1 with ORT's
    "invalid dimensions for input: x"."""
    src, data, out = tmp_path / "gru.onnx", tmp_path / "d.npz", tmp_path / "out"
    m, feeds = _gru(STEPS), _feeds()
    onnx.save(m, str(src))
    np.savez(data, **{k: np.stack([f[k] for f in feeds]) for k in ("x", "h0")})
    args = ["quantize", str(src), "--calib-data", str(data), "--calib-samples", "16", "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = next(p for p in out.glob("*.json") if not p.name.endswith(".plan.json"))
    check = json.loads(report.read_text())["check"]
    qm = onnx.load(str(next(out.glob("*.onnx"))))
    assert check["samples"] == 32
    assert abs(check["output_sqnr_db"]["y"] - _sqnr(m, qm, feeds[1::2])) < 0.02, check
