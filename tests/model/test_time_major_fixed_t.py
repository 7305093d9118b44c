"""A time-major GRU input with a *fixed* T ([20, B, 4], ONNX's default layout) is refused like the dynamic-T
case (fresh-user review, session 9, defect 7): before, the data layer took the fixed axis 0 as the batch,
so quantize calibrated and checked on "20 samples" (the 20 time steps of 64 sequences) and a list of
batches was cut along time once calibration's sample cap was reached.  Refused now in quantize (file and
list of batches), evaluate and compare: one line, exit 2, nothing written.  The batch-first form of the same
fixed-T network counts its 64 sequences; a fixed T beside a state input [1, B, 8] (every feed dict fed
whole, never cut along time) still passes, as it does with a dynamic T.  Expected counts come from the data as built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from typer.testing import CliRunner

import edgequant
from edgequant.cli import app
from edgequant.errors import DataError

H, IN, STEPS, SEQS = 8, 4, 20, 64


def _gru(batch_first: bool, state: bool = False) -> onnx.ModelProto:
    """x -> (Transpose) -> GRU(hidden 8) -> Y_h -> Reshape [B, 8] -> MatMul [8, 3] -> y; T fixed at 20."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
        for n, s in (("W", (1, 3 * H, IN)), ("R", (1, 3 * H, H)), ("B", (1, 6 * H)), ("Wo", (H, 3)))
    ]
    inits.append(nh.from_array(np.array([-1, H], np.int64), "shp"))
    seq = "xt" if batch_first else "x"
    nodes = (
        [h.make_node("Transpose", ["x"], ["xt"], name="to_time_major", perm=[1, 0, 2])] if batch_first else []
    )
    gru_in = [seq, "W", "R", "B", "", "h0"] if state else [seq, "W", "R", "B"]
    nodes += [
        h.make_node("GRU", gru_in, ["ys", "yh"], name="gru", hidden_size=H),
        h.make_node("Reshape", ["yh", "shp"], ["hs"], name="flat"),
        h.make_node("MatMul", ["hs", "Wo"], ["y"], name="head"),
    ]
    shape = ["B", STEPS, IN] if batch_first else [STEPS, "B", IN]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, shape)]
    if state:
        inputs.append(h.make_tensor_value_info("h0", T.FLOAT, [1, "B", H]))
    g = h.make_graph(nodes, "gru", inputs, [h.make_tensor_value_info("y", T.FLOAT, ["B", 3])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _sequences() -> np.ndarray:
    """64 sequences of 20 steps, [N, T, I]."""
    return np.random.default_rng(1).standard_normal((SEQS, STEPS, IN)).astype(np.float32)


def _one_line(res: object, counted: str) -> str:
    out = res.output  # type: ignore[attr-defined]
    assert res.exit_code == 2, out  # type: ignore[attr-defined]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model input 'x' is time-major"), out
    assert f"so {counted} would count each of its 20 time steps (T is fixed) as a sample" in lines[0]
    assert (
        "GRU 'gru'" in lines[0] and "Fix: re-export the model with a batch-first input [B, T, I]" in lines[0]
    )
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    src, data = tmp_path / "gru.onnx", tmp_path / "x.npy"
    onnx.save(_gru(batch_first=False), str(src))
    np.save(data, _sequences().transpose(1, 0, 2))  # [T, N, I]: the model's own layout
    return src, data


def test_quantize_refuses_fixed_t_file_data(files: tuple[Path, Path], tmp_path: Path) -> None:
    src, data = files
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["quantize", str(src), "--calib-data", str(data), "-o", str(out)])
    _one_line(res, "calibration and the check")
    assert not out.exists()
    stacked = tmp_path / "xs.npy"  # whole sequences stacked on a new axis 0 are refused too
    np.save(stacked, _sequences()[:, :, None, :])
    res = CliRunner().invoke(app, ["quantize", str(src), "--calib-data", str(stacked), "-o", str(out)])
    _one_line(res, "calibration and the check")
    assert not out.exists()


def test_quantize_refuses_a_list_of_fixed_t_batches() -> None:
    x = _sequences().transpose(1, 0, 2)
    batches = [{"x": x[:, i : i + 8]} for i in range(0, SEQS, 8)]
    with pytest.raises(DataError, match=r"would count each of its 20 time steps \(T is fixed\)"):
        edgequant.quantize(_gru(batch_first=False), batches)


def test_evaluate_and_compare_refuse_fixed_t_file_data(files: tuple[Path, Path], tmp_path: Path) -> None:
    src, data = files
    qm, js, out = tmp_path / "q.onnx", tmp_path / "e.json", tmp_path / "cmp"
    onnx.save(edgequant.quantize(_gru(batch_first=False), method="dynamic").model, str(qm))
    args = ["evaluate", str(src), str(qm), "--data", str(data), "--task", "regression", "-o", str(js)]
    _one_line(CliRunner().invoke(app, args), "evaluation")
    assert not js.exists()
    args = ["compare", str(src), "--calib-data", str(data), "--eval-data", str(data), "--task", "regression"]
    res = CliRunner().invoke(app, [*args, "--methods", "dynamic-int8", "-o", str(out)])
    _one_line(res, "calibration and the check")
    assert not out.exists()


def test_the_batch_first_form_counts_sequences() -> None:
    r = edgequant.quantize(_gru(batch_first=True), _sequences())
    calib, check = r.report["calibration"], r.report["check"]
    # 64 sequences (not 20 steps): half calibrate, half are the check's
    assert calib["samples"] + calib["held_out_for_check"] == SEQS, calib
    assert check["samples"] == calib["held_out_for_check"] == 32, check


def test_fixed_t_beside_a_state_input_is_fed_whole() -> None:
    """x [20, B, 4] and h0 [1, B, 8] fix different first axes: each feed dict is fed whole.  The SQNR is
    that of whole sequences, from our own ORT sessions on the check's feed dicts (the first 32: dynamic
    reads no calibration data)."""
    import onnxruntime as ort

    rng = np.random.default_rng(2)
    feeds = [
        {"x": rng.standard_normal((STEPS, 4, IN)).astype(np.float32), "h0": np.zeros((1, 4, H), np.float32)}
        for _ in range(48)
    ]
    m = _gru(batch_first=False, state=True)
    r = edgequant.quantize(m, feeds, method="dynamic")
    ref, got = (
        np.concatenate([s.run(["y"], f)[0] for f in feeds[:32]]).astype(np.float64)
        for s in (
            ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
            for p in (m, r.model)
        )
    )
    expected = 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))
    assert abs(r.report["check"]["output_sqnr_db"]["y"] - expected) < 0.02, (r.report["check"], expected)
